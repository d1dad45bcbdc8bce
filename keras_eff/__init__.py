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
import sys
import threading
import types

from ._import_hooks import LoaderWrappingFinder, WrappingLoader

__version__ = "0.1.0"

# Each public name and the submodule that defines it.
_NAMES = {
    "clustering": ("cluster", "cluster_model", "clustering_report"),
    "datasets": ("fashion_mnist",),
    "layers": ("LayerFacts", "facts_for", "register_layer"),
    "pruning": ("ConstantSparsity", "PolynomialDecay", "prune", "prune_model", "sparsity_report"),
    "quantization": ("QuantConfig", "calibrate", "quantize", "quantize_model"),
    "reporting": ("get_report", "get_reports"),
    "strip": ("strip",),  # keras_eff.strip is the function, not the module
}
_SUBPACKAGES = (
    "callbacks",
    "clustering",
    "compression",
    "datasets",
    "donna",
    "graph",
    "layers",
    "ptq",
    "pruning",
    "quantization",
)
_WHERE = {name: module for module, names in _NAMES.items() for name in names}

# The modules that register classes with keras.saving (tests/test_lazy_import.py checks that the list is complete),
# layers first: the registry every technique reads.
REGISTERING_MODULES = (
    "layers",
    "quantization",
    "pruning",
    "clustering",
    "callbacks",
    "donna.losses",
    "donna.blocks",
    "donna.supernet",
)

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
        _hook.remove()
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


class _WatchingLoader(WrappingLoader):
    """The real loader, with the end of its module's execution reported to :func:`_after_import`."""

    def run(self, module):
        _local.n = getattr(_local, "n", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _local.n -= 1
        _after_import()


class _KerasImportHook(LoaderWrappingFinder):
    """Wraps the loaders of keras, tensorflow, tflite_export and keras_eff's submodules, so that keras-eff's
    registering modules load right after Keras finishes importing."""

    loader_class = _WatchingLoader

    def wants(self, name):
        return name in _WATCHED or name.startswith(f"{__name__}.") or name.split(".")[0] == "tflite_export"


_hook = _KerasImportHook()


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _WHERE and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule (keras_eff.strip): the name stays the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if "keras" in sys.modules:
    _load_registering_modules()
else:
    _hook.install()
