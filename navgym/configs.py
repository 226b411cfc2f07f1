"""Config dataclasses: fields with their ``--help``, one argparse builder, one serialisation.

Every CLI of the project (``navgym-rollouts``, ``python -m world_model.train``, ``agents.train``,
``world_model.evaluation``, ``world_model.comparison``) declares its options as a dataclass whose fields are
made by :func:`config_field` and builds its parser with :func:`add_options`: one ``--name-with-dashes`` option
per field, typed from the field's annotation, its help text from the field and its default shown.
:func:`options_config` turns the parsed options back into the dataclass.  Configs are stored as JSON-ready
dicts by :func:`to_dict` and read back by :func:`from_dict`.

A CLI reports a bad option or a refusal (a run folder holding other settings, an unreadable ``--config``,
nothing to do) with ``parser.error(message)``: the usage and ``PROG: error: MESSAGE`` on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import MISSING, asdict, field, fields, is_dataclass
from typing import Any, Callable
from .deprecation import warn_deprecated

__all__ = ["config_field", "parse_bool", "parse_json_dict", "add_options", "add_deprecated_alias", "options_config",
           "to_dict", "from_dict"]

_PLAIN = {"int": int, "float": float, "str": str, "bool": None}  # bool: parse_bool


def config_field(default=MISSING, help: str = "", *, choices=None, parse: Callable | None = None,
                 metavar: str | None = None, show: str | None = None, flag: str | None = None, nargs: str | None = None):
    """A config dataclass field with its ``--help`` text (``default`` left out: a required option; dict and list
    defaults are copied per instance).

    choices: the values the option accepts; parse: the argparse ``type`` of one value (default: from the
    annotation); metavar: the value's name in the usage; show: the default as ``--help`` shows it (default: the
    value); flag: the option (default: ``--field-name``; the field's name without dashes: a positional argument);
    nargs: argparse's, e.g. ``"*"`` for a dict field given as ``KEY=VALUE`` pairs (``parse`` returning (key, value))."""
    meta = {"help": help, "choices": choices, "parse": parse, "metavar": metavar, "show": show, "flag": flag,
            "nargs": nargs}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def parse_bool(s: str) -> bool:
    """argparse type for boolean options: 1/true/yes/on or 0/false/no/off (any case)."""
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def parse_json_dict(text: str) -> dict:
    """argparse type for a JSON object option, e.g. ``'{"fov": 150}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"fov\": 150}'")
    return value


def _field_default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _kind(annotation) -> tuple[str, bool]:
    """(value type name, whether the option takes several values) of a field annotation: ``tuple[int, ...] | None``
    -> ``("int", True)``, ``float | None`` -> ``("float", False)``."""
    text = annotation.__name__ if type(annotation) is type else str(annotation)  # str: postponed annotations
    text = " | ".join(t.strip() for t in text.split("|") if t.strip() != "None")
    many = re.fullmatch(r"(?:list|List)\[(\w+)\]|(?:tuple|Tuple)\[(\w+), \.\.\.\]", text)
    return ((many[1] or many[2]), True) if many else (text, False)


def _is_tuple(f) -> bool:
    return str(f.type).startswith(("tuple", "Tuple"))


def _shown(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "none"
    return "none" if value is None else "''" if value == "" else str(value)


def add_options(parser, cls, *, defaults=None, skip=(), unset: bool = False,
                shown: Callable[[Any], str | None] | None = None) -> None:
    """One ``--name`` option per field of the dataclass ``cls`` (``parser``: a parser or an argument group).

    The value type comes from the annotation (``int``, ``float``, ``str``, ``bool`` -- ``--flag`` alone is true,
    or ``--flag false`` --, ``X | None``, ``tuple[X, ...]`` / ``list[X]`` taking several values) unless the field
    names a ``parse``; a field without a default is a required option.  Defaults come from ``defaults`` (an
    instance of ``cls`` or a mapping, e.g. a saved run's settings), else the field.  With ``unset``, an omitted
    option parses to None (the caller fills it in) and ``shown(field)`` gives the default ``--help`` states.
    ``--help`` shows each option's default."""
    base = defaults if isinstance(defaults, dict) or defaults is None else to_dict(defaults)
    for f in fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        kind, many = _kind(f.type)
        default = base[f.name] if base is not None and f.name in base else _field_default(f)
        parse = meta.get("parse") or (parse_bool if kind == "bool" else _PLAIN.get(kind))
        if parse is None:
            raise TypeError(f"{cls.__name__}.{f.name}: no option type for {f.type!r}; give the field a parse")
        kw: dict[str, Any] = {"dest": f.name, "type": parse}
        if many or meta.get("nargs"):
            kw["nargs"] = meta.get("nargs") or "*"
        elif kind == "bool" and not meta.get("parse"):
            kw.update(nargs="?", const=True, metavar="BOOL")
        if meta.get("choices") is not None:
            kw["choices"] = meta["choices"]
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if default is MISSING:
            kw["required"] = True
            text = meta["help"]
        else:
            kw["default"] = None if unset else (list(default) if isinstance(default, tuple) else default)
            said = meta.get("show") or (shown(f) if shown is not None else None) or _shown(default)
            text = f"{meta['help']} (default: {said})"
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        if not flag.startswith("-"):  # a positional argument, named as the field (argparse's dest)
            del kw["dest"]
            if not kw.pop("required", False):
                kw.setdefault("nargs", "?")
            flag = f.name
        parser.add_argument(flag, help=text.replace("%", "%%"), **kw)


class _DeprecatedOption(argparse.Action):
    def __init__(self, option_strings, dest, new: str = "", **kw):
        super().__init__(option_strings, dest, **kw)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(option_string, self.new)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser, old: str, new: str) -> None:
    """``old``, the previous name of the option ``new``, works as it (same value type) with a
    ``DeprecationWarning`` naming ``new``; ``--help`` lists only ``new``."""
    action = parser._option_string_actions[new]
    parser.add_argument(old, action=_DeprecatedOption, new=new, dest=action.dest, type=action.type,
                        choices=action.choices, nargs=action.nargs, metavar=action.metavar, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def options_config(cls, namespace: argparse.Namespace, base=None):
    """The ``cls`` instance of options parsed by :func:`add_options`: each field from the namespace where it is
    there and not None, else from ``base`` (an instance or a mapping), else the field's default.  A dict field
    given as ``KEY=VALUE`` pairs (a list of (key, value)) updates the base's dict; a tuple field gets a tuple."""
    base = {} if base is None else (dict(base) if isinstance(base, dict) else to_dict(base))
    values = {}
    for f in fields(cls):
        value = getattr(namespace, f.name, None)
        if value is None:
            if f.name in base:
                values[f.name] = base[f.name]
            continue
        kind, many = _kind(f.type)
        if isinstance(value, list) and kind == "dict":
            value = {**(base.get(f.name) or _field_default(f)), **dict(value)}
        elif many and _is_tuple(f):
            value = tuple(value)
        values[f.name] = value
    return from_dict(cls, values)


def to_dict(cfg) -> dict:
    """A config dataclass as a JSON-ready dict (tuples become lists, nested dataclasses dicts)."""
    if not is_dataclass(cfg):
        raise TypeError(f"expected a config dataclass, got {type(cfg).__name__}")
    return json.loads(json.dumps(asdict(cfg)))


def from_dict(cls, d: dict):
    """The ``cls`` config of a dict written by :func:`to_dict` (list values of tuple fields become tuples again;
    fields it lacks take their defaults).  Raises ``ValueError`` naming unknown fields."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    values = {}
    for k, v in d.items():
        if isinstance(v, list) and _is_tuple(names[k]):
            v = tuple(v)
        values[k] = v
    return cls(**values)

