"""The `minimind-v train` flags, generated from TrainConfig's fields.

Why generated: a hand-written copy of the dataclass drifts, and a field missing from it is out of reach
of the command line. Here each field becomes `--kebab-case-name` on its own: the type comes from the annotation
(`int | None` -> int, default None; `list[str]` -> one or more values; `bool` -> `--x/--no-x`), the
default from the field, and the rest (group in `--help`, help text, other spellings such as `--from`,
choices, metavar) from the field's metadata (train/config.py), so a new field needs no edit here.

One field is not a plain value: `model_overrides` (a dict of ModelConfig fields) is set by the named
shortcuts `--hidden-size`, `--num-layers`, `--use-moe` and, for any other field, `--model-override
FIELD=VALUE` (repeatable; VALUE read as JSON when it parses, else as a string).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

from ..flagtypes import bounded
from .config import GROUPS, TrainConfig

# model_overrides shortcuts: flag -> (ModelConfig field, argparse type or None for a switch, help)
MODEL_SHORTCUTS = {"--hidden-size": ("hidden_size", bounded(int, 8, 65536), "LLM width of a new model"),
                   "--num-layers": ("num_hidden_layers", bounded(int, 1, 1024), "LLM layers of a new model"),
                   "--use-moe": ("use_moe", None, "MoE feed-forward (4 experts, top-1)")}


@dataclasses.dataclass
class _Spec:
    """The metadata keys the command line reads (train/config.py `setting`)."""
    help: str = ""
    group: str = "what"
    spellings: tuple = ()
    choices: tuple | None = None
    metavar: str | None = None


_SPEC_KEYS = [f.name for f in dataclasses.fields(_Spec)]


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def shortcut_dest(opt: str) -> str:
    return "model_" + opt[2:].replace("-", "_")


def value_type(annotation) -> tuple[type, bool]:
    """(element type, is a list) of a field annotation such as `int`, `str | None`, `list[str]`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return value_type(args[0])
    if typing.get_origin(annotation) is list:
        return (args[0] if args else str), True
    return annotation, False


def field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_train_arguments(p: argparse.ArgumentParser, config_class=TrainConfig) -> None:
    """One flag per TrainConfig field (plus the model_overrides shortcuts), in the fields' groups."""
    hints = typing.get_type_hints(config_class)
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(config_class):
        spec = _Spec(**{k: f.metadata[k] for k in _SPEC_KEYS})
        g = groups[spec.group]
        if f.name == "model_overrides":
            g.add_argument(*spec.spellings, dest="model_override", action="append", default=[],
                           metavar=spec.metavar, help=spec.help)
            for opt, (_, kind, text) in MODEL_SHORTCUTS.items():
                if kind is None:
                    g.add_argument(opt, dest=shortcut_dest(opt), action="store_true", help=text)
                else:
                    g.add_argument(opt, dest=shortcut_dest(opt), type=kind, metavar="N", help=text)
            continue
        kind, is_list = value_type(hints[f.name])
        default = field_default(f)
        kw = dict(dest=f.name, help=spec.help)
        if default is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
            if default is True:
                kw["help"] = f"{spec.help} (on by default)"
        else:
            kw["type"] = kind
            if is_list:
                kw["nargs"] = "+"
            if spec.choices is not None:
                kw["choices"] = list(spec.choices)
            if spec.metavar or kind is int:
                kw["metavar"] = spec.metavar or "N"
            if default not in (None, dataclasses.MISSING) and "default" not in spec.help:
                kw["help"] = f"{spec.help} (default: {default})".lstrip()
        g.add_argument(*spec.spellings, flag_name(f.name), **kw)


def parse_override(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--model-override {item!r}: use FIELD=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def config_from_args(a: argparse.Namespace, config_class=TrainConfig) -> TrainConfig:
    """The TrainConfig the parsed `train` arguments describe, its bounds checked."""
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(config_class) if f.name != "model_overrides"}
    over = dict(parse_override(item) for item in a.model_override)
    for opt, (field_name, _, _) in MODEL_SHORTCUTS.items():
        v = getattr(a, shortcut_dest(opt))
        if v:                                    # unset (None / False) leaves the preset's value
            over[field_name] = v
    cfg = config_class(model_overrides=over, **values)
    cfg.check()
    return cfg
