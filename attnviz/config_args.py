"""A config dataclass drives its command: one flag per field, help from the field's docstring.

`add_config_args(parser, Config)` adds `--field-name` for every field (booleans as
--x / --no-x, tuples as several values, `str | None` fields default to None); a field whose
metadata says {"required": True} must be given. `config_from_args(Config, args)` builds the
config back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

from attnviz.docstrings import field_docs

C = TypeVar("C")


def add_config_args(parser: argparse.ArgumentParser, config_cls: type) -> None:
    docs = field_docs(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = docs.get(f.name)
        if f.metadata.get("required"):
            parser.add_argument(flag, type=type(f.default), required=True, help=help_text)
            continue
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)  # fmt: skip
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=type(default[0]), nargs=len(default), default=default,
                                help=help_text)  # fmt: skip
        elif default is None:
            parser.add_argument(flag, type=str, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def config_from_args(config_cls: type[C], args: argparse.Namespace, **overrides: Any) -> C:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    values.update(overrides)
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        if isinstance(f.default, tuple):
            values[f.name] = tuple(values[f.name])
    return config_cls(**values)
