"""The config builder (navgym.configs): every field an option with its default in --help, typed values, round
trips through to_dict/from_dict; the model-size label; the device; the provenance and the intervals."""

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, fields

import numpy as np
import pytest

from navgym.configs import (add_deprecated_alias, add_options, config_field, from_dict, options_config,
                            parse_json_dict, to_dict)
from navgym.deprecation import renamed_keyword


@dataclass(frozen=True)
class Example:
    out: str = config_field(help="where")
    n: int = config_field(3, "how many")
    rate: float = config_field(0.5, "a rate")
    flag: bool = config_field(False, "a switch")
    on: bool = config_field(True, "another switch")
    name: str | None = config_field(None, "a name", show="the run's")
    mode: str = config_field("a", "a mode", choices=("a", "b"))
    seeds: tuple[int, ...] = config_field((0, 1), "seeds")
    opts: dict = config_field({}, "JSON options", parse=parse_json_dict)


def _parser(**kw):
    p = argparse.ArgumentParser(prog="example")
    add_options(p, Example, **kw)
    return p


def test_every_field_is_an_option_with_its_default_in_help():
    p = _parser()
    text = " ".join(p.format_help().split())
    for f in fields(Example):
        assert "--" + f.name.replace("_", "-") in text
    for shown in ("how many (default: 3)", "a rate (default: 0.5)", "a switch (default: False)",
                  "a name (default: the run's)", "a mode (default: a)", "seeds (default: 0 1)",
                  "JSON options (default: none)"):
        assert shown in text
    assert "where (default" not in text  # a field without a default is a required option
    with pytest.raises(SystemExit):
        p.parse_args([])


def test_options_are_typed_and_round_trip():
    p = _parser()
    cfg = options_config(Example, p.parse_args(["--out", "x"]))
    assert cfg == Example(out="x")
    a = p.parse_args(["--out", "x", "--n", "7", "--rate", "2", "--flag", "--on", "no", "--name", "r",
                      "--mode", "b", "--seeds", "4", "5", "6", "--opts", '{"fov": 150}'])
    cfg = options_config(Example, a)
    assert cfg == Example("x", 7, 2.0, True, False, "r", "b", (4, 5, 6), {"fov": 150})
    d = to_dict(cfg)
    assert d["seeds"] == [4, 5, 6] and json.loads(json.dumps(d)) == d  # JSON-ready
    assert from_dict(Example, json.loads(json.dumps(d))) == cfg  # tuples come back as tuples
    assert from_dict(Example, {"out": "y"}) == Example(out="y")  # missing fields take their defaults
    with pytest.raises(ValueError, match=r"Example: unknown fields \['nn'\]"):
        from_dict(Example, {"out": "y", "nn": 1})
    for bad in (["--n", "x"], ["--mode", "c"], ["--flag", "maybe"], ["--opts", "[1]"]):
        with pytest.raises(SystemExit):
            p.parse_args(["--out", "x", *bad])


def test_defaults_from_a_base_and_unset_options():
    base = Example(out="saved", n=9, seeds=(2,))
    p = _parser(defaults=base)
    assert options_config(Example, p.parse_args([]), base) == base  # --out's default is the saved one
    assert "how many (default: 9)" in " ".join(p.format_help().split())
    u = _parser(unset=True).parse_args(["--out", "x", "--n", "4"])
    assert u.rate is None and u.n == 4  # the caller sees what was given
    assert options_config(Example, u, {"rate": 0.1}) == Example(out="x", n=4, rate=0.1)


def test_deprecated_alias_warns_and_sets_the_new_option():
    p = _parser()
    add_deprecated_alias(p, "--count", "--n")
    with pytest.deprecated_call(match="--count is deprecated; use --n"):
        assert p.parse_args(["--out", "x", "--count", "5"]).n == 5
    assert "--count" not in p.format_help()


@dataclass(frozen=True)
class WithPositional:
    model: str = config_field(help="the model file", flag="model")
    n: int = config_field(2, "how many")


def test_a_field_named_without_dashes_is_a_positional_argument():
    p = argparse.ArgumentParser(prog="example")
    add_options(p, WithPositional)
    assert options_config(WithPositional, p.parse_args(["m.zip", "--n", "3"])) == WithPositional("m.zip", 3)
    assert "--model" not in p.format_help() and "the model file" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["--n", "3"])  # required


def test_renamed_keyword_warns_and_passes_the_new_one():
    @renamed_keyword("task", "preset")
    def play(model, preset=None):
        return model, preset

    with pytest.deprecated_call(match=r"play\(task=...\) is deprecated; use preset="):
        assert play("m", task="AC-far") == ("m", "AC-far")
    assert play("m", preset="AC-far") == ("m", "AC-far") and play.__name__ == "play"
    with pytest.raises(TypeError, match="preset= alone"):
        play("m", task="a", preset="b")


def test_world_model_cli_shows_every_field_and_the_size_of_each_model_field():
    from world_model.config import ModelConfig, TrainConfig
    from world_model.train import parser

    text = " ".join(parser().format_help().split())
    for cls in (TrainConfig, ModelConfig):
        for f in fields(cls):
            assert f.name == "model_size" or "--" + f.name.replace("_", "-") + " " in text
    assert "(default: the model size's: tiny 64, small 64, base 128, capable 64)" in text
    assert "(default: navwm)" in text and "(default: 300)" in text


def test_model_size_records_what_the_model_is():
    from world_model.config import CUSTOM_SIZE, MODEL_SIZES, as_dict, config_from_dict, make_config
    from world_model.train import parse_args

    assert make_config("small")[1].model_size == "small"
    m, t = make_config("tiny", size=128)
    assert m.size == 128 and t.model_size == CUSTOM_SIZE
    assert make_config("tiny", **{k: v for k, v in to_dict(MODEL_SIZES["small"]).items()})[1].model_size == "small"
    assert parse_args(["--model-size", "tiny", "--size", "128"])[1].model_size == CUSTOM_SIZE
    # a checkpoint that recorded its starting size beside overridden fields reads as what it is
    d = as_dict(m, t)
    d["train"]["model_size"] = "tiny"
    assert config_from_dict(d) == (m, t)
    with pytest.raises(ValueError, match="model_size"):
        t.validate(MODEL_SIZES["tiny"])  # a label that is not the model is refused


def test_world_model_config_round_trips_and_resumes_from_its_file(tmp_path):
    from world_model.config import as_dict, config_from_dict, make_config
    from world_model.train import parse_args

    m, t = make_config("tiny", size=32, window=4, steps=5, mixed_strides=True)
    assert config_from_dict(json.loads(json.dumps(as_dict(m, t)))) == (m, t)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(as_dict(m, t)))
    assert parse_args(["--config", str(path)]) == (m, t)
    m2, t2 = parse_args(["--config", str(path), "--steps", "9", "--mixed-strides", "false"])
    assert (m2, t2.steps, t2.mixed_strides) == (m, 9, False)


def test_resolve_device_names_the_argument(monkeypatch):
    import torch

    from world_model.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    with pytest.raises(ValueError, match=r"^--device must be auto, cpu, cuda or cuda:N, got 'tpu'$"):
        resolve_device("tpu", "--device")


def test_versions_and_load_average(monkeypatch):
    from navgym.provenance import load_average, versions

    monkeypatch.setenv("GIT_COMMIT", "0123abc")
    v = versions(("numpy", "no-such-package-here"))
    assert v["numpy"] == np.__version__ and v["no-such-package-here"] is None and v["git_commit"] == "0123abc"
    assert {"python", "platform", "machine", "node"} <= set(v)
    avg = load_average()
    assert avg == "n/a" or len(eval(avg)) == 3


def test_intervals():
    from navgym.stats import bootstrap_median, mean_ci, wilson

    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(2.4841, abs=1e-3)  # t(0.975, 2) * 1 / sqrt(3)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    med, lo, hi = bootstrap_median([1.0, 2.0, 3.0, 4.0, 100.0])
    assert med == 3.0 and lo <= med <= hi


def test_import_navgym_configs_stats_provenance_without_torch():
    code = ("import sys, navgym, navgym.configs, navgym.stats, navgym.provenance, navgym.rollouts.cli, "
            "navgym.subjects.cli; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_renamed_names_keep_a_deprecated_alias():
    from agents.benchmark import summarise, summarise_runs
    from navgym.rollouts import RolloutConfig
    from world_model.evaluation.stats import mean_ci_by_method, summarize

    rows = [dict(method="m", seed=s, task="pose", probe="linear", n_labels=None, metric="center_err_mm", value=v)
            for s, v in ((0, 1.0), (1, 3.0))]
    with pytest.deprecated_call(match="mean_ci_by_method"):
        assert summarize(rows) == mean_ci_by_method(rows)
    eps = [{"final": {"success_rate": 0.5, "episodes": 2}, "curve": [], "final_errors": np.array([1.0, 2.0])}]
    with pytest.deprecated_call(match="summarise_runs"):
        assert summarise(eps) == summarise_runs(eps)
    with pytest.deprecated_call(match="to_dict"):
        assert RolloutConfig(seed=3).to_json() == to_dict(RolloutConfig(seed=3))
