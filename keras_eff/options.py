"""How every technique takes its options, and how renamed names stay usable for one release (CONTRIBUTING.md).

A technique's options are one ``…Config`` dataclass, passed as ``config=`` (an instance or a dict of its fields);
any field may also be given as a keyword argument, which overrides the config's. A renamed name keeps working for one
release: it answers with the new object and a ``DeprecationWarning`` that names the new name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_C = TypeVar("_C", bound="DataclassInstance")

# the keywords that carried options before the config= convention; accepted for one release, with a warning
LEGACY_KEYWORDS = ("params", "parameters")


def config_fields(cls) -> list[str]:
    """The names of a config dataclass's constructor fields, in order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def warn_deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Emits the ``DeprecationWarning`` of a name kept for one release.

    Args:
        old: What the caller wrote (``"keras_eff.ptq.AdaRoundParams"``, ``"adaround(params=...)"``).
        new: What to write instead.
        stacklevel: As for ``warnings.warn``, counted from this helper: 3 (the default) points at the line that
            called the public function which calls this helper.

    Returns:
        None.
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release: use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def resolve_config(cls: type[_C], config, overrides: dict, function: str, stacklevel: int = 4) -> _C:
    """Makes the options of a technique from ``config=`` and keyword overrides.

    Args:
        cls: The technique's config dataclass (``AdaRoundConfig``, ...).
        config: None (the defaults), an instance of ``cls`` or a dict of its fields.
        overrides: The keyword arguments the caller gave besides the named ones: fields of ``cls``, each overriding
            ``config``'s; ``params=`` or ``parameters=`` (the names before ``config=``) is taken as ``config`` with a
            ``DeprecationWarning``. Not changed.
        function: The public function's name, for the messages.
        stacklevel: Where the deprecation warning points (the default: the user's call of ``function``, which calls
            this directly).

    Returns:
        An instance of ``cls``: ``config`` itself when it is one and nothing overrides it, else a new one (checked
        by its ``__post_init__``).

    Raises:
        TypeError: If a keyword is not a field of ``cls`` (the message lists the fields), ``config`` is neither an
            instance of ``cls`` nor a dict, or both ``config`` and ``params``/``parameters`` are given.
        ValueError: If a value is out of range (raised by ``cls``).
    """
    overrides = dict(overrides)
    for legacy in LEGACY_KEYWORDS:
        if legacy in overrides:
            if config is not None:
                raise TypeError(f"{function}() got both config= and {legacy}=; give the options once, as config=")
            config = overrides.pop(legacy)
            warn_deprecated(f"{function}({legacy}=...)", f"{function}(config=...)", stacklevel)
    known = config_fields(cls)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(
            f"{function}() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; its options are the fields of {cls.__name__}: {', '.join(known)}"
        )
    if config is None:
        return cls(**overrides)
    if isinstance(config, cls):
        return dataclasses.replace(config, **overrides) if overrides else config
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise TypeError(
                f"{function}(config=...) holds unknown option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; the fields of {cls.__name__} are: {', '.join(known)}"
            )
        return cls(**{**config, **overrides})
    raise TypeError(
        f"{function}(config=...) takes a {cls.__name__} or a dict of its fields, got {type(config).__name__}"
    )


def config_keywords(cls, names):
    """Decorates a technique whose options are named parameters (their defaults shown in its signature) and a
    ``config=`` of ``cls``: the named parameters the caller actually passed override the config's fields, and
    ``config=`` reaches the function as an instance of ``cls`` (or None when not given).

    Args:
        cls: The config dataclass.
        names: The function's parameters that are fields of ``cls`` (same names).

    Returns:
        The decorator.
    """
    names = tuple(names)

    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            given = bound.arguments
            if given.get("config") is not None:
                overrides = {n: given.pop(n) for n in names if n in given}
                given["config"] = resolve_config(cls, given["config"], overrides, fn.__name__)
            return fn(*bound.args, **bound.kwargs)

        return wrapper

    return decorate


def deprecated_aliases(module: str, aliases: dict):
    """Makes a module-level ``__getattr__`` that answers each old name with its new object and a warning.

    Args:
        module: The module's public name (``"keras_eff.ptq"``), for the messages.
        aliases: ``{old name: (new object, new public name)}``.

    Returns:
        The ``__getattr__`` function to assign in the module: it raises AttributeError for any other name.
    """

    def __getattr__(name):
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        obj, new = aliases[name]
        warn_deprecated(f"{module}.{name}", new, stacklevel=3)
        return obj

    return __getattr__


__all__ = [
    "LEGACY_KEYWORDS",
    "config_fields",
    "config_keywords",
    "deprecated_aliases",
    "resolve_config",
    "warn_deprecated",
]
