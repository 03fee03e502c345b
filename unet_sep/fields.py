"""Dataclasses from JSON objects, every value checked against its field's type annotation.

One parser for every settings file: a model's ``config.json``, a training recipe and its data section. An
unknown key is named with the closest valid one and all the valid keys of its section; a value of the wrong
type is named by its dotted key with the type wanted and the value given (``train.steps must be an integer,
got "abc"``). Lists become tuples where a field says tuple, integers become floats where it says float, and a
boolean is never taken for a number.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeGuard

from unet_sep.errors import ConfigError


class _Mismatch(Exception):
    """A value that does not have the annotated type."""


_NOUNS = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of dataclass ``cls`` (the modules use postponed annotations)."""
    return typing.get_type_hints(cls)


def _describe(annotation: Any, plural: bool = False) -> str:
    """What a JSON value of ``annotation`` looks like, for messages: "an integer or null", "a list of strings"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _NOUNS:
        return _NOUNS[annotation][plural]
    if origin in (typing.Union, types.UnionType):
        options = [_describe(a, plural) for a in args if a is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} {_describe(args[0], plural=True)}"
    if origin in (list, tuple):
        return f"a list of {_describe(args[0], plural=True)}" if args else "a list"
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "objects" if plural else "an object"
    return "values" if plural else "any value"


def _coerce(annotation: Any, value: Any) -> Any:
    """``value`` in the form ``annotation`` declares (lists as tuples, integers as floats where so declared).

    Raises _Mismatch when it does not fit; bool is not taken for an integer or a number.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value)
            except _Mismatch:
                pass
        raise _Mismatch
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation in _NOUNS:
        if isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool)):
            return value
        raise _Mismatch
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
        items = [_coerce(args[0] if args else Any, v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict and isinstance(value, dict):
        return dict(value)
    raise _Mismatch


def show_value(value: Any) -> str:
    """A value as JSON, the way the recipe and ``--set`` spell it (a string in double quotes)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def dotted(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def unknown_key(cls: type, section: str, name: str) -> ConfigError:
    """An error naming the unknown key, the closest valid one and all the valid keys of its section."""
    names = list(field_hints(cls))
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {dotted(section, close[0])}?)" if close else ""
    where = f"section {section}" if section else "the top level"
    return ConfigError(f"unknown key {dotted(section, name)}{hint}; {where} has {', '.join(names)}")


def check_value(annotation: Any, value: Any, key: str) -> Any:
    """``value`` converted to ``annotation``'s form (a dataclass from an object), or a ConfigError naming ``key``,
    the expected type and the value given."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return build_section(annotation, value, key)
    item = _section_list_item(annotation)
    if item is not None and isinstance(value, (list, tuple)):
        return [build_section(item, entry, f"{key}[{number}]") for number, entry in enumerate(value)]
    try:
        return _coerce(annotation, value)
    except _Mismatch:
        raise ConfigError(f"{key} must be {_describe(annotation)}, got {show_value(value)}") from None


def _section_list_item(annotation: Any) -> type | None:
    """The dataclass of a ``list[SomeSection]`` annotation (a list of sections, each an object), else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list and len(args) == 1 and isinstance(args[0], type):
        return args[0] if dataclasses.is_dataclass(args[0]) else None
    return None


def build_section(cls: type, values: Any, section: str) -> Any:
    """The dataclass ``cls`` from the JSON object ``values`` (section ``section`` of a file, "" for the whole),
    with every value checked against its field's annotation; missing keys keep their defaults."""
    hints = field_hints(cls)
    if not isinstance(values, dict):
        where = section or "the top level"
        raise ConfigError(f"{where} must be an object with the keys {', '.join(hints)}, got {show_value(values)}")
    for name in values:
        if name not in hints:
            raise unknown_key(cls, section, name)
    return cls(**{name: check_value(hints[name], value, dotted(section, name)) for name, value in values.items()})


def read_json(path: str | Path, what: str, expected: type = dict, shape: str = "a JSON object") -> Any:
    """The JSON value in the file ``path``, which must be an ``expected`` (dict or list); otherwise a one-line
    :class:`ConfigError` naming the file: ``"<path>: cannot read <what> (...)"``, ``"<path>: not valid JSON
    (...)"`` or ``"<path>: expected <shape>"``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what} ({error.strerror or error})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, expected):
        raise ConfigError(f"{path}: expected {shape}")
    return data


def value_from_text(annotation: Any, raw: str, key: str) -> Any:
    """The value a command-line ``key=raw`` gives a field of type ``annotation``: ``raw`` read as JSON when that
    fits the type, else the text itself (``name=2024`` is the string "2024" for a string field); a
    :class:`ConfigError` naming ``key``, the type and the value when neither fits. Returned in JSON form."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    try:
        check_value(annotation, value, key)
    except ConfigError as error:
        try:
            check_value(annotation, raw, key)  # the text itself fits (a string field): take it
        except ConfigError:
            raise error from None
        value = raw
    return value


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_probability(key: str, value: object) -> None:
    """A :class:`ConfigError` naming ``key`` unless ``value`` is a number in [0, 1]."""
    if not is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{key} must be a probability in [0, 1], got {value!r}")


def check_range(key: str, value: object, lowest: float, highest: float, unit: str = "") -> None:
    """A :class:`ConfigError` naming ``key`` unless ``value`` is ``[low, high]`` (finite numbers, in ``unit``)
    with ``lowest <= low <= high <= highest``."""
    in_unit = f" in {unit}" if unit else ""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(is_number(item) and math.isfinite(item) for item in value)
    ):
        raise ConfigError(f"{key} must be two numbers [low, high]{in_unit}, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ConfigError(f"{key} must be [low, high] with low <= high, got {list(value)}")
    if low < lowest or high > highest:
        bounds = f"+-{highest:g}" if lowest == -highest else f"[{lowest:g}, {highest:g}]"
        raise ConfigError(f"{key} must lie within {bounds}{' ' + unit if unit else ''}, got {list(value)}")
