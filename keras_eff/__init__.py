"""keras-eff: shrink trained Keras 3 models and deploy them as int8 TFLite.

Techniques live one per subpackage (quantization, ptq, pruning, clustering, compression, donna); the everyday names
are re-exported here and load on first use (PEP 562), so that ``import keras_eff`` and ``keras-eff --help`` do not
import TensorFlow.

Loading a ``.keras`` file needs keras-eff's layers registered with Keras. Importing keras_eff guarantees that, in
either order: if Keras is already imported, the registering modules load now; otherwise they load as soon as Keras
(or TensorFlow, which imports Keras) has finished importing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import types

__version__ = "0.1.0"

# Each public name and the submodule that defines it.
_NAMES = {
    "clustering": ("cluster", "cluster_model", "clustering_report"),
    "datasets": ("fashion_mnist",),
    "layers": ("LayerFacts", "facts_for", "register_layer"),
    "pruning": ("ConstantSparsity", "PolynomialDecay", "prune", "prune_model", "sparsity_report"),
    "quantization": ("QuantConfig", "calibrate", "quantize", "quantize_model"),
    "strip": ("strip",),  # keras_eff.strip is the function, not the module
}
_SUBPACKAGES = ("callbacks", "clustering", "compression", "datasets", "donna", "graph", "layers", "ptq", "pruning",
                "quantization")
_WHERE = {name: module for module, names in _NAMES.items() for name in names}

# The modules that register classes with keras.saving (tests/test_lazy_import.py checks that the list is complete),
# layers first: the registry every technique reads.
REGISTERING_MODULES = ("layers", "quantization", "pruning", "clustering", "callbacks", "donna.distill",
                       "donna.supernet")

__all__ = sorted([*_WHERE, *_SUBPACKAGES], key=str.lower)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


# --- registering keras-eff's Keras classes whatever the import order ------------------------------------------------

_registered = False
_local = threading.local()  # per thread: watched imports in progress (n), registering modules being loaded (loading)
_WATCHED = ("keras", "tensorflow")  # whose import may end with Keras loaded, with tflite_export's and our modules


def _load_registering_modules() -> None:
    """Imports the modules that register classes with keras.saving (once; concurrent threads are serialized by the
    import system's own module locks)."""
    global _registered
    if _registered or getattr(_local, "loading", False):
        return
    _local.loading = True
    try:
        _remove_hook()
        for module in REGISTERING_MODULES:
            importlib.import_module(f".{module}", __name__)
        _registered = True
    finally:
        _local.loading = False


def _after_import() -> None:
    """Called when a watched import ends: once Keras is loaded and no watched import is still running in this thread
    (keras inside tensorflow, tensorflow inside tflite_export or keras_eff), the registering modules load."""
    if not _registered and getattr(_local, "n", 0) == 0 and "keras" in sys.modules:
        _load_registering_modules()


class _WatchingLoader:
    """The real loader, with the end of its module's execution reported to :func:`_after_import`."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader  # the module sees its own loader
        _local.n = getattr(_local, "n", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _local.n -= 1
        _after_import()


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of keras, tensorflow, tflite_export and keras_eff's submodules that
    another finder found, so that keras-eff's registering modules load right after Keras finishes importing."""

    def find_spec(self, name, path=None, target=None):
        if not (name in _WATCHED or name.startswith(f"{__name__}.") or name.split(".")[0] == "tflite_export"):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchingLoader(spec.loader)
                return spec
        return None


_hook = _KerasImportHook()


def _remove_hook() -> None:
    try:
        sys.meta_path.remove(_hook)
    except ValueError:
        pass


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _WHERE and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule (keras_eff.strip): the name stays the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if "keras" in sys.modules:
    _load_registering_modules()
else:
    sys.meta_path.insert(0, _hook)
