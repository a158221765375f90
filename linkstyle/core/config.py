"""Typed, validated configuration from params.yaml sections.

Each stage's options are a frozen dataclass in the module that uses them; `from_params`
turns a params section into one, rejecting unknown keys and wrong types with a one-line
error that names `section.key` and says what is expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from linkstyle.core.errors import UserError
from linkstyle.core.io import plain

T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):  # a nested section, e.g. train_segmenter.model
        source, _, key = where.partition(": ")
        return from_params(tp, value, key, source=source)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {value!r}")
        return value
    return value


def from_params(cls: type[T], data: dict | None, section: str, source: str = "params.yaml") -> T:
    """Build the frozen dataclass `cls` from a params mapping."""
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{source}: {section} must be a mapping of keys to values, got {data!r}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{source}: unknown key {section}.{unknown[0]}; known keys are {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{source}: {section}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except UserError as e:
        raise UserError(f"{source}: {section}.{e}") from None


def check(cond: bool, key: str, msg: str) -> None:
    """Validation inside a config's __post_init__: raises 'key msg' as a UserError."""
    if not cond:
        raise UserError(f"{key} {msg}")


def to_dict(cfg: Any) -> dict:
    """A config as plain, JSON-ready values (tuples become lists, nested sections dicts)."""
    return plain(dataclasses.asdict(cfg))
