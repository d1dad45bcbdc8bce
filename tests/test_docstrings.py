"""Every public name has a Google-style docstring (issue 21 item 6).

Public names are the ``__all__`` of ``keras_eff``, of each public subpackage or module ``keras_eff.<x>`` listed in
``keras_eff.__all__`` that defines ``__all__``, and of ``tflite_export``. Modules and non-callables (constants) are
exempt. A function needs an ``Args:`` section naming every parameter (when it takes any besides self/cls) and a
``Returns:`` (or, for a generator, ``Yields:``) section. A class whose constructor takes parameters needs ``Args:`` or
``Attributes:`` naming each of them; exceptions and enums need only a docstring. Sections are read at the docstring's
top indentation, as Google style writes them.
"""

from __future__ import annotations

import enum
import inspect
import re
import types

import pytest

import keras_eff
import tflite_export

_SECTION = re.compile(r"^([A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^\s*(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(?:\(|:)")


def public_packages() -> list[tuple[str, types.ModuleType]]:
    """The packages whose ``__all__`` is public API: keras_eff, its submodules with ``__all__``, tflite_export."""
    packages = [("keras_eff", keras_eff)]
    for name in keras_eff.__all__:
        sub = getattr(keras_eff, name)
        if isinstance(sub, types.ModuleType) and hasattr(sub, "__all__"):
            packages.append((sub.__name__, sub))
    packages.append(("tflite_export", tflite_export))
    return packages


def public_names() -> list[tuple[str, str]]:
    """``(package, name)`` for every callable, non-module name in a public ``__all__``."""
    out = []
    for package, module in public_packages():
        for name in module.__all__:
            obj = getattr(module, name, None)
            if obj is None and not hasattr(module, name):
                out.append((package, name))  # listed but missing: reported by the test
                continue
            if isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            out.append((package, name))
    return out


def own_docstring(obj) -> str:
    """The object's own docstring, cleaned; empty when it has none (inherited or generated ones do not count)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        # dataclasses and NamedTuples generate "Name(field, ...)" when the class has no docstring of its own
        if doc and re.fullmatch(rf"{re.escape(obj.__name__)}\(.*\)", doc.strip(), re.S):
            doc = None
    elif inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj):
        doc = obj.__doc__
    else:  # another callable (a partial, an instance with __call__)
        doc = inspect.getdoc(obj)
    return inspect.cleandoc(doc) if doc and doc.strip() else ""


def sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections (``Args:`` ...) found at the docstring's top indentation, with their indented lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in doc.splitlines():
        if line and not line[0].isspace():
            match = _SECTION.match(line)
            current = match.group(1) if match else None
            if current is not None:
                out.setdefault(current, [])
        elif current is not None:
            out[current].append(line)
    return out


def entry_names(lines: list[str]) -> set[str]:
    """Names of the entries of a section: its lines at the section's first indentation, ``name:`` or ``name (``."""
    body = [line for line in lines if line.strip()]
    if not body:
        return set()
    indent = min(len(line) - len(line.lstrip()) for line in body)
    names = set()
    for line in body:
        if len(line) - len(line.lstrip()) == indent:
            match = _ENTRY.match(line)
            if match:
                names.add(match.group(1))
    return names


def _signature(obj):
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _parameters(sig) -> list[inspect.Parameter]:
    if sig is None:
        return []
    return [p for p in sig.parameters.values() if p.name not in ("self", "cls")]


def _accepted(param: inspect.Parameter) -> set[str]:
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return {f"*{param.name}", param.name}
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return {f"**{param.name}", param.name}
    return {param.name}


def _undocumented(params, documented: set[str]) -> list[str]:
    return [p.name for p in params if not (_accepted(p) & documented)]


def docstring_problems(obj) -> list[str]:
    """What the object's docstring lacks under the convention; empty when it complies."""
    doc = own_docstring(obj)
    if not doc:
        return ["no docstring"]
    found = sections(doc)
    problems = []
    if inspect.isclass(obj):
        if issubclass(obj, (BaseException, enum.Enum)):
            return []
        params = _parameters(_signature(obj))
        if params:
            if "Args" not in found and "Attributes" not in found:
                problems.append("constructor takes parameters but there is no Args: or Attributes: section")
            else:
                documented = entry_names(found.get("Args", [])) | entry_names(found.get("Attributes", []))
                missing = _undocumented(params, documented)
                if missing:
                    problems.append(f"parameters not in Args:/Attributes: {', '.join(missing)}")
        return problems
    params = _parameters(_signature(obj))
    if params:
        if "Args" not in found:
            problems.append("takes parameters but there is no Args: section")
        else:
            missing = _undocumented(params, entry_names(found["Args"]))
            if missing:
                problems.append(f"parameters not in Args: {', '.join(missing)}")
    generator = inspect.isgeneratorfunction(inspect.unwrap(obj)) if inspect.isfunction(obj) else False
    if "Returns" not in found and not (generator and "Yields" in found):
        problems.append("no Returns: section" + (" (or Yields:)" if generator else ""))
    return problems


NAMES = public_names()


@pytest.mark.parametrize(("package", "name"), NAMES, ids=[f"{p}:{n}" for p, n in NAMES])
def test_public_name_has_google_docstring(package, name):
    module = dict(public_packages())[package]
    assert hasattr(module, name), f"{package}.__all__ lists {name!r}, which {package} does not define"
    problems = docstring_problems(getattr(module, name))
    assert not problems, f"{package}.{name}: " + "; ".join(problems)


def test_collects_the_public_subpackages():
    packages = {package for package, _ in public_packages()}
    assert {
        "keras_eff",
        "keras_eff.graph",
        "keras_eff.layers",
        "keras_eff.compression",
        "keras_eff.clustering",
        "keras_eff.datasets",
        "tflite_export",
    } <= packages
    names = set(NAMES)
    assert ("keras_eff.graph", "fold_batchnorm") in names and ("tflite_export", "to_tflite") in names
    assert ("keras_eff.layers", "UNKNOWN") not in names  # a constant: exempt


# The checker itself: it must refuse what the convention refuses.


def _good(model, steps=1, *args, **kwargs):
    """Does something.

    Args:
        model: A model.
        steps (int): How many.
        *args: Passed on.
        **kwargs: Passed on.

    Returns:
        None.
    """


def _no_args(model):
    """Does something.

    Returns:
        None.
    """


def _missing_param(model, steps):
    """Does something.

    Args:
        model: A model. Mentions steps: in its text, which is not an entry.
            steps: indented further, so not an entry either.

    Returns:
        None.
    """


def _no_returns(model):
    """Does something.

    Args:
        model: A model.
    """


def _nested_section(model):
    """Does something.

    Args:
        model: A model.
        Returns:
            not at the top indentation.
    """


class _GoodClass:
    """A thing.

    Args:
        size: How big.
    """

    def __init__(self, size):
        self.size = size


class _BareClass:
    """A thing with no sections."""

    def __init__(self, size):
        self.size = size


class _Error(ValueError):
    """Raised when it goes wrong."""

    def __init__(self, what):
        super().__init__(what)


class _Undocumented:
    def __init__(self, size):
        self.size = size


def test_checker_accepts_a_complete_docstring():
    assert docstring_problems(_good) == []
    assert docstring_problems(_GoodClass) == []
    assert docstring_problems(_Error) == []


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_no_args, "no Args: section"),
        (_missing_param, "parameters not in Args: steps"),
        (_no_returns, "no Returns: section"),
        (_nested_section, "no Returns: section"),
        (_BareClass, "no Args: or Attributes: section"),
        (_Undocumented, "no docstring"),
    ],
)
def test_checker_refuses(obj, expected):
    assert any(expected in problem for problem in docstring_problems(obj)), docstring_problems(obj)


def test_checker_ignores_generated_dataclass_docstrings():
    import dataclasses

    @dataclasses.dataclass
    class Config:
        size: int = 1

    assert docstring_problems(Config) == ["no docstring"]
