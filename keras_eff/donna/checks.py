"""Config checks shared by every DONNA config section: each field checked by its dotted name, before any work.

``checked(cls, config, where)`` builds the dataclass ``cls`` from the mapping ``config`` after checking that every
key is a field (an unknown key lists the allowed ones) and that every value has the field's annotated type. Numbers
that must be integers are refused when they are not whole (``2.9`` is an error, never ``2``); a whole float such as
``3.0`` (YAML writes them) is read as ``3``. ``True``/``False`` are never numbers.
"""

from __future__ import annotations

import dataclasses
import math


def where_of(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def check_mapping(config, where: str, allowed) -> dict:
    """``config`` as a dict; refuses a non-mapping and keys outside ``allowed`` (listing the allowed ones)."""
    if not isinstance(config, dict):
        raise ValueError(
            f"{where or 'config'}: expected a mapping with the keys {', '.join(sorted(allowed))}, got "
            f"{type(config).__name__} {config!r}"
        )
    unknown = [k for k in config if k not in allowed]
    if unknown:
        raise ValueError(
            f"{where or 'config'}: unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    return dict(config)


def as_int(where: str, value, lo: int | None = None) -> int:
    """``value`` as an int: whole numbers only (``2.9`` and ``'2'`` are refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {value!r} must be an integer (got {type(value).__name__})")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{where}: {value!r} must be a whole number; it is not rounded or truncated")
        value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{where}: {value} must be an integer >= {lo}")
    return int(value)


def as_float(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {value!r} must be a number (got {type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{where}: {value!r} must be a finite number")
    return float(value)


def _check_one(where: str, value, ann: str, nested: dict):
    options = [o.strip() for o in ann.split("|")]
    errors = []
    for opt in options:
        try:
            if opt == "None":
                if value is None:
                    return None
                continue
            if opt == "int":
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return as_int(where, value)
                continue
            if opt == "float":
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    return as_float(where, value)
                continue
            if opt == "bool":
                if isinstance(value, bool):
                    return value
                continue
            if opt == "str":
                if isinstance(value, str):
                    return value
                continue
            if opt in ("dict", "list", "tuple", "object"):
                kinds: dict[str, type | tuple[type, ...]] = {
                    "dict": dict,
                    "list": (list, tuple),
                    "tuple": (list, tuple),
                    "object": object,
                }
                if isinstance(value, kinds[opt]):
                    return value
                continue
            if opt in nested:
                sub = nested[opt]
                if isinstance(value, sub):
                    return value
                if isinstance(value, dict):
                    return checked(sub, value, where)
                continue
        except ValueError as err:
            errors.append(err)
    if errors:
        raise errors[0]
    names = {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "None": "null",
        "dict": "a mapping",
        "list": "a list",
        "tuple": "a list",
    }
    want = " or ".join(names.get(o, f"a mapping of {o} options") for o in options)
    raise ValueError(f"{where}: {value!r} must be {want} (got {type(value).__name__})")


def checked(cls, config, where: str = ""):
    """An instance of the dataclass ``cls`` from ``config``, every key and value checked (see the module doc)."""
    if isinstance(config, cls):
        return config
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    config = check_mapping(config, where or cls.__name__, fields)
    nested = getattr(cls, "_nested", {})
    values = {
        name: _check_one(where_of(where, name), value, str(fields[name].type), nested) for name, value in config.items()
    }
    try:
        return cls(**values)
    except ValueError as err:
        raise ValueError(f"{where}: {err}" if where and not str(err).startswith(where) else str(err)) from None
