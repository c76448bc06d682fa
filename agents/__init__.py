"""Agent programs on mirage-gym's public API: scripted explorers, evaluation, SB3 PPO.

Run them from the repository root, e.g. ``python -m agents.evaluate --help``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import typing


def parse_args(cls, argv: list[str] | None = None):
    """An instance of the dataclass ``cls`` from command-line flags (CleanRL/tyro style).

    One ``--flag-name`` per field; its help is the docstring written under the field.
    ``bool`` fields are switches (``--x`` / ``--no-x`` when on by default), ``list[str]`` fields take one or more values (and may
    be repeated), ``X | None`` fields take an ``X``.
    """
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=inspect.getdoc(cls), formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        kind = hints[f.name]
        help_text = docs.get(f.name, "")
        if kind is bool:
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, action=action, default=default, help=help_text)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            parser.add_argument(flag, type=item, nargs="+", action="extend", default=default, help=help_text)
        else:
            types = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
            parser.add_argument(flag, type=types[0], default=default, help=help_text)
    return cls(**vars(parser.parse_args(argv)))


def _field_docs(cls) -> dict[str, str]:
    """The string literal under each annotated field of a class body."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
