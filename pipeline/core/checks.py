"""Checks of settings dataclasses: a value of the wrong type (a text where a number belongs, as a damaged
config.json may hold) is refused by name before anything computes with it."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from .errors import PipelineError


def _is_bool(value: Any) -> bool:
    return type(value).__name__ in ("bool", "bool_")  # Python's and numpy's


_SIMPLE_TYPES: dict[str, tuple[str, Any]] = {
    "int": ("a whole number", lambda value: isinstance(value, numbers.Integral) and not _is_bool(value)),
    "float": ("a number", lambda value: isinstance(value, numbers.Real) and not _is_bool(value)),
    "bool": ("true or false", _is_bool),
    "str": ("text", lambda value: isinstance(value, str)),
}


def check_types(settings: Any) -> None:
    """Refuse a setting of the wrong type, naming it."""
    for item in dataclasses.fields(settings):
        kind, accepts = _SIMPLE_TYPES.get(str(item.type), ("", None))
        value = getattr(settings, item.name)
        if accepts and not accepts(value):
            raise PipelineError(f"The setting {item.name} is {value!r}, not {kind}.")
