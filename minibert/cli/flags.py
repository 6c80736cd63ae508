"""Flags made from dataclass fields: one field, one flag, its help text next to the field. train.py's
come from TrainConfig and each task's options, predict.py's from each task's PredictOptions."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(hint) -> type:
    """int, float or str, from a field's type (`int | None` -> int)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _show_default(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_fields(group, cls: type, added: set[str], prefixes: dict[str, str] | None = None,
               defaults: dict[str, tuple] | None = None) -> None:
    """One flag per field of dataclass `cls`, from its type, default and metadata (help, and choices,
    type or metavar where the type says too little); fields in `added` already have a flag.

    A bool field that is off by default is a switch (--compile); one that is on, a --no- switch
    (--no-progress). prefixes: field -> words put before its help (the task a flag is for).
    defaults: field -> (flag default, the default the help states), for defaults that depend on the job.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in added:
            continue
        added.add(f.name)
        meta = dict(f.metadata)
        text = ((prefixes or {}).get(f.name, "") + meta.pop("help")).replace("%", "%%")  # argparse formats help
        if hints[f.name] is bool:
            if f.default:
                group.add_argument(flag("no_" + f.name), dest=f.name, action="store_false", help=f"do not {text}")
            else:
                group.add_argument(flag(f.name), action="store_true", help=text)
            continue
        default, shown = (defaults or {}).get(f.name, (f.default, f.default))
        if shown is not None:
            text += f" (default: {_show_default(shown)})"
        meta["type"] = _argparse_type(meta["type"]) if "type" in meta else _scalar_type(hints[f.name])
        group.add_argument(flag(f.name), default=default, help=text, **meta)


def _argparse_type(parse):
    """A field's parser as an argparse type: its ValueError message becomes the flag's error."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def from_flags(cls: type, args: argparse.Namespace, **resolved):
    """An instance of dataclass `cls` from the flags made of its fields, with `resolved` values in place
    of some flags'."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init}
    return cls(**{**values, **resolved})


def given_elsewhere(args: argparse.Namespace, chosen: type, other: type) -> str | None:
    """The flag of the first option that dataclass `other` keeps to itself (its `exclusive`) and
    `chosen` lacks, given a value other than its default; None when there is none."""
    mine = {f.name for f in dataclasses.fields(chosen)}
    defaults = {f.name: f.default for f in dataclasses.fields(other)}
    return next((flag(name) for name in other.exclusive if name not in mine and getattr(args, name) != defaults[name]),
                None)


def with_flags(message: str, cls: type) -> str:
    """`message` with the names of dataclass `cls`'s fields written as their flags (mask_prob -> --mask-prob)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: flag(m.group(1)), message)


def either(words: list[str]) -> str:
    """"a", "a or b", "a, b or c"."""
    return " or ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else words[0]
