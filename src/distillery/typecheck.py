"""Settings dataclasses filled from YAML: every value must have its field's annotated type, checked before any other
check compares it (a bare TypeError from `'ten' > 0` would name no field)."""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing

# What a YAML value of each annotated type must be, and how the error says it. int is a number; bool is not.
_KINDS = {bool: ("true or false", lambda v: isinstance(v, bool)),
          int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
          float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
          str: ("a string", lambda v: isinstance(v, str))}


@functools.cache
def _field_kinds(cls: type) -> dict[str, tuple[tuple[type, ...], bool]]:
    """Field name -> (the allowed types among bool/int/float/str, whether None is allowed)."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        kinds[name] = (tuple(a for a in args if a in _KINDS), type(None) in args)
    return kinds


class SettingError(ValueError):
    """One setting's value is wrong: '<who>: <field>=<value> <why>'. `field` and `why` let a caller that knows where
    the value came from (a config's overrides) name that place instead of `who`."""

    def __init__(self, who: str, field: str, value: object, why: str):
        super().__init__(f"{who}: {field}={value!r} {why}")
        self.field, self.value, self.why = field, value, why


# A number PyYAML (YAML 1.1) reads as text: an exponent without a decimal point (1e-5) or without a sign (1.0e12).
_TEXT_NUMBER = re.compile(r"([-+]?)([0-9]+)(?:\.([0-9]*))?[eE]([-+]?)([0-9]+)")


def number_hint(text: str) -> str:
    """For text that was meant as a number, how to write it so that YAML reads a number: 1e-5 -> 1.0e-5, 1.0e12 ->
    1.0e+12 (YAML 1.1 wants both a decimal point and a signed exponent), '0.5' -> without the quotes; else ''."""
    match = _TEXT_NUMBER.fullmatch(text.strip())
    if match is not None:
        sign, whole, fraction, exp_sign, exponent = match.groups()
        written = f"{sign}{whole}.{fraction or 0}e{exp_sign or '+'}{exponent}"
        if written != text.strip():
            return f" (YAML reads {text} as text; write {written})"
    try:
        if not math.isfinite(float(text)):
            return ""
    except ValueError:
        return ""
    return f" (a number in quotes is text; write {text.strip()} without them)"


def check_types(settings: object, who: str) -> None:
    """Raise a SettingError naming `who`, the field, its value and the expected type for the first field of the
    dataclass instance `settings` whose value has the wrong type."""
    for field in dataclasses.fields(settings):
        allowed, nullable = _field_kinds(type(settings))[field.name]
        value = getattr(settings, field.name)
        if not allowed or (value is None and nullable) or any(_KINDS[t][1](value) for t in allowed):
            continue
        expected = " or ".join([_KINDS[t][0] for t in allowed] + (["null"] if nullable else []))
        hint = number_hint(value) if isinstance(value, str) and float in allowed else ""
        raise SettingError(who, field.name, value, f"must be {expected}{hint}")
