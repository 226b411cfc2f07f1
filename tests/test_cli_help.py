"""Every CLI's --help shows each option's default."""

import argparse
import importlib

import pytest

CLIS = [("navgym.rollouts.cli", "rollouts_main"), ("navgym.rollouts.cli", "video_main"), ("navgym.subjects.cli", "main"),
        ("agents.train", "main"), ("agents.play", "main"), ("agents.benchmark", "main"), ("world_model.train", "main"),
        ("world_model.evaluation.cli", "main")]


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("module,function", CLIS)
def test_help_shows_every_default(module, function, monkeypatch):
    parsers = []

    parse_known_args = argparse.ArgumentParser.parse_known_args

    def capture(self, args=None, namespace=None):
        if not self.add_help:  # a pre-parse of one option (e.g. --config, --quick): not the CLI's parser
            return parse_known_args(self, args, namespace)
        parsers.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_Parsed):
        getattr(importlib.import_module(module), function)(["--help"])
    p = parsers[0]
    formatter = p._get_formatter()
    shown = [a for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS
             and not (a.default is None or a.default is False or a.default is argparse.SUPPRESS
                      or (isinstance(a.default, (list, dict)) and not a.default))]
    missing = [a.option_strings[-1] for a in shown if not a.help or "default" not in formatter._expand_help(a)]
    assert not missing, f"{module}.{function}: options whose --help hides the default: {missing}"
