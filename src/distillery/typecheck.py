"""Settings dataclasses filled from YAML: every value must have its field's annotated type, checked before any other
check compares it (a bare TypeError from `'ten' > 0` would name no field)."""
from __future__ import annotations

import dataclasses
import functools
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


def check_types(settings: object, who: str) -> None:
    """Raise a ValueError naming `who`, the field, its value and the expected type for the first field of the
    dataclass instance `settings` whose value has the wrong type."""
    for field in dataclasses.fields(settings):
        allowed, nullable = _field_kinds(type(settings))[field.name]
        value = getattr(settings, field.name)
        if not allowed or (value is None and nullable) or any(_KINDS[t][1](value) for t in allowed):
            continue
        expected = " or ".join([_KINDS[t][0] for t in allowed] + (["null"] if nullable else []))
        hint = ""
        if isinstance(value, str) and float in allowed:
            try:
                float(value)
                hint = f" (YAML reads {value} as text; write it with a decimal point, e.g. 1.0e-5)"
            except ValueError:
                pass
        raise ValueError(f"{who}: {field.name}={value!r} must be {expected}{hint}")
