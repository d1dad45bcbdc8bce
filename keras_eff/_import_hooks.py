"""A sys.meta_path finder that finds nothing itself: it wraps the loader another finder found for chosen modules, to
run code around their execution (keras_eff/__init__ registers Keras classes after Keras loads; the command line
filters TensorFlow's start-up log lines)."""

from __future__ import annotations

import abc
import importlib.abc
import sys
import threading


class WrappingLoader:
    """The real loader; subclasses override :meth:`run` (which must call ``self._loader.exec_module(module)``)."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader  # the module sees its own loader
        self.run(module)

    def run(self, module):
        self._loader.exec_module(module)


class LoaderWrappingFinder(importlib.abc.MetaPathFinder):
    """Wraps, in ``loader_class``, the loader of each module for which :meth:`wants` is true."""

    loader_class = WrappingLoader

    def __init__(self):
        self._busy = threading.local()  # asking the other finders: skip ourselves (and each other's recursion)

    @abc.abstractmethod
    def wants(self, name: str) -> bool:
        """Whether the loader of module ``name`` is to be wrapped."""

    def find_spec(self, name, path=None, target=None):
        if not self.wants(name) or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = self.loader_class(spec.loader)
                    return spec
            return None
        finally:
            self._busy.on = False

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
