"""DONNA A → D as one resumable pipeline over a folder.

    from keras_eff.donna import run_pipeline
    pipe = run_pipeline("tiny", "artifacts/donna")        # a built-in name, a YAML/JSON file or a dict
    pipe.ran                                               # the stages this call ran (a resumed run skips the rest)

Stages and what each leaves in the folder (a stage whose file is there is skipped; every file is written atomically,
last, so an interrupted stage is simply run again):

- ``reference``: ``reference.keras``, the trained reference model;
- ``library``: ``library/`` (block library, BKD);
- ``predictor``: ``predictor.json`` and ``measured.json`` (finetuned sampled architectures, ridge fit);
- ``search:<scenario>``: ``search/<scenario>/pareto.json`` and ``pareto.png``; measurements are cached across
  scenarios and runs in ``measurements.json``;
- ``finetune:<scenario>``: ``finetune/<scenario>/results.json`` and one ``.keras`` model per chosen architecture
  (soft distillation from the reference, initialized from the library).

A new scenario reuses the accuracy model (reference, library, predictor): :meth:`DonnaPipeline.search_scenario`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .scenario import Scenario
from .search import SearchConfig, SearchResult
from .space import SearchSpace, read_yaml_or_json

CONFIG_NAME = "config.json"
SECTIONS = ("space", "data", "accuracy_model", "search", "scenarios", "finetune", "executor", "seed")


def _space_from(spec) -> SearchSpace:
    from .space import default_space, tiny_space

    if isinstance(spec, SearchSpace):
        return spec
    if isinstance(spec, dict):
        return SearchSpace.from_config(spec)
    if spec == "tiny":
        return tiny_space()
    if spec == "default":
        return default_space()
    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_file():
        return SearchSpace.load(spec)
    raise ValueError(f"space: {spec!r} is neither 'tiny', 'default', a space mapping nor an existing YAML/JSON file")


def read_config_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DONNA config file {path} does not exist (write one with: keras-eff donna config "
                                f"tiny -o {path.name})")
    doc = read_yaml_or_json(path, "DONNA config")
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a DONNA config is a mapping with the sections {', '.join(SECTIONS)}")
    return doc


@dataclass
class PipelineConfig:
    """The sections of a pipeline config file (see :mod:`keras_eff.donna.configs` for the built-in ones)."""

    space: object = "tiny"
    data: dict = field(default_factory=lambda: {"n_train": 6000, "n_test": 2000})
    accuracy_model: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    scenarios: list = field(default_factory=lambda: [{"name": "litert_1thread"}])
    finetune: dict = field(default_factory=dict)
    executor: dict = field(default_factory=lambda: {"kind": "inprocess"})
    seed: int = 0

    def __post_init__(self):
        from .distill import DistillConfig
        from .pipeline import DonnaConfig

        self.space_obj = _space_from(self.space)
        self.space = self.space_obj.get_config()
        for k in self.data:
            if k not in ("n_train", "n_test"):
                raise ValueError(f"data: unknown field {k!r}; allowed: n_train, n_test")
        self.donna = DonnaConfig.from_config({"seed": self.seed, **self.accuracy_model})
        self.search_config = SearchConfig.from_config({"seed": self.seed, **self.search})
        if not self.scenarios:
            raise ValueError("scenarios: give at least one scenario, e.g. [{'name': 'litert_1thread'}]")
        self.scenario_objs = [s if isinstance(s, Scenario) else Scenario.from_config(dict(s)) for s in self.scenarios]
        self.scenarios = [s.get_config() for s in self.scenario_objs]
        names = [s.name for s in self.scenario_objs]
        if len(set(names)) != len(names):
            raise ValueError(f"scenarios: names must differ, got {names}")
        unknown = set(self.finetune) - {"top_k", "samples", "distill"}
        if unknown:
            raise ValueError(f"finetune: unknown field(s) {sorted(unknown)}; allowed: top_k, samples, distill")
        self.top_k = int(self.finetune.get("top_k", 3))
        if self.top_k < 1:
            raise ValueError(f"finetune.top_k: {self.top_k} must be a positive integer")
        self.distill = DistillConfig.from_config(self.finetune.get("distill", {}))

    def get_config(self) -> dict:
        return {name: getattr(self, name) for name in SECTIONS}

    @classmethod
    def from_config(cls, config: dict) -> "PipelineConfig":
        unknown = set(config) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown DONNA config section(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
        return cls(**config)

    @classmethod
    def load(cls, spec) -> "PipelineConfig":
        """From a built-in name (``tiny``, ``default``), a YAML/JSON file or a mapping."""
        from .configs import BUILTIN, builtin_config

        if isinstance(spec, PipelineConfig):
            return spec
        if isinstance(spec, dict):
            return cls.from_config(spec)
        if isinstance(spec, str) and spec in BUILTIN:
            return cls.from_config(builtin_config(spec))
        try:
            return cls.from_config(read_config_file(spec))
        except (TypeError, ValueError) as err:
            raise ValueError(f"DONNA config {spec}: {err}") from None


class DonnaPipeline:
    """The pipeline over ``out_dir`` for ``config`` (anything :meth:`PipelineConfig.load` takes). ``ran`` lists
    the stages run by this object (those skipped because their files exist are in ``skipped``)."""

    def __init__(self, config, out_dir, executor=None, data=None, verbose: int = 1):
        self.config = PipelineConfig.load(config)
        self.out = Path(out_dir)
        self.space = self.config.space_obj
        self.verbose = verbose
        self._executor = executor
        self._data = data
        self.ran, self.skipped, self.seconds = [], [], {}
        self._reference = self._library = self._predictor = None

    # ---- files and helpers -------------------------------------------------------------------------------------
    def path(self, *parts) -> Path:
        return self.out.joinpath(*parts)

    def _say(self, msg):
        if self.verbose:
            print(msg, flush=True)

    def _check_folder(self):
        from tflite_export import atomic_write_json

        self.out.mkdir(parents=True, exist_ok=True)
        cfg_path = self.path(CONFIG_NAME)
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            old_space = SearchSpace.from_config(old["space"]) if "space" in old else None
            if old_space is not None and old_space.fingerprint() != self.space.fingerprint():
                raise ValueError(f"{self.out} holds a DONNA run for the space {old_space.name!r}, not for "
                                 f"{self.space.name!r}; use another --out folder")
            if old.get("accuracy_model") != self.config.accuracy_model or old.get("data") != self.config.data:
                self._say(f"note: {cfg_path} was written with other data/accuracy_model settings; the accuracy "
                          f"model on disk is reused as it is (delete its files to rebuild it)")
            merged = {**self.config.get_config(),
                      "scenarios": _merge_scenarios(old.get("scenarios", []), self.config.scenarios)}
        else:
            merged = self.config.get_config()
        atomic_write_json(cfg_path, merged)

    def record_scenario(self, scenario: Scenario) -> None:
        """Adds ``scenario`` to the folder's ``config.json`` (replacing one of the same name)."""
        self._check_folder()
        from tflite_export import atomic_write_json

        cfg_path = self.path(CONFIG_NAME)
        doc = json.loads(cfg_path.read_text())
        doc["scenarios"] = _merge_scenarios(doc.get("scenarios", []), [scenario.get_config()])
        atomic_write_json(cfg_path, doc)

    def executor(self):
        if self._executor is None:
            from .executors import make_executor

            spec = dict(self.config.executor)
            self._executor = make_executor(spec.pop("kind", "inprocess"), **spec)
        return self._executor

    def data(self):
        """``(x_fit, y_fit, x_val, x_eval, y_eval)``: the same split as :func:`build_accuracy_model`."""
        if self._data is None:
            from keras_eff.datasets import fashion_mnist_float

            if tuple(self.space.input_shape) != (28, 28, 1):
                raise ValueError(f"the space {self.space.name!r} takes {self.space.input_shape} images; the built-in "
                                 f"data is Fashion-MNIST (28, 28, 1): pass data=((x, y), (x_eval, y_eval))")
            self._data = fashion_mnist_float(n_train=self.config.data.get("n_train"),
                                             n_test=self.config.data.get("n_test"))
        (x, y), (xe, ye) = self._data
        cfg = self.config.donna
        perm = np.random.default_rng(cfg.seed).permutation(len(x))
        fit_idx, val_idx = perm[:len(x) - cfg.val_samples], perm[len(x) - cfg.val_samples:]
        return x[fit_idx], y[fit_idx], x[val_idx], xe, ye

    def _stage(self, name, done: bool, fn):
        if done:
            self.skipped.append(name)
            self._say(f"[donna] {name}: done already, skipped")
            return None
        self._say(f"[donna] {name} ...")
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = time.perf_counter() - t0
        self.ran.append(name)
        self._say(f"[donna] {name}: {self.seconds[name]:.0f} s")
        return out

    # ---- A, B: the accuracy model ------------------------------------------------------------------------------
    def reference(self):
        if self._reference is None:
            import keras

            from .reference import compile_model

            self._reference = compile_model(keras.saving.load_model(self.path("reference.keras"), compile=False))
        return self._reference

    def library(self):
        if self._library is None:
            from .library import BlockLibrary

            self._library = BlockLibrary.load(self.path("library"), space=self.space)
        return self._library

    def predictor(self):
        if self._predictor is None:
            from .predictor import AccuracyPredictor

            if not self.path("predictor.json").is_file():
                raise FileNotFoundError(f"{self.out} has no accuracy model (predictor.json); run the pipeline "
                                        f"first: keras-eff donna run --config CONFIG --out {self.out}")
            self._predictor = AccuracyPredictor.load(self.path("predictor.json"))
            if self._predictor.space.fingerprint() != self.space.fingerprint():
                raise ValueError(f"{self.path('predictor.json')} was fitted for another space")
        return self._predictor

    def _train_reference(self):
        from .reference import train_reference

        x, y, _, _, _ = self.data()
        cfg = self.config.donna
        model, epoch_s = train_reference(self.space, x, y, cfg.reference_epochs, cfg.reference_batch_size,
                                         seed=cfg.seed, verbose=0)
        _save_keras(model, self.path("reference.keras"))
        self._reference = None
        return epoch_s

    def _train_library(self):
        from .library import train_block_library

        x, _, xv, _, _ = self.data()
        cfg = self.config.donna
        lib = train_block_library(self.space, self.reference(), x[:cfg.bkd_samples], xv, cfg.bkd, self.executor(),
                                  verbose=bool(self.verbose))
        lib.save(self.path("library"))
        self._library = lib

    def _fit_predictor(self):
        from tflite_export import atomic_write_json

        from .finetune import measure_architectures
        from .pipeline import sample_archs
        from .predictor import AccuracyPredictor

        x, y, _, xe, ye = self.data()
        cfg = self.config.donna
        archs = sample_archs(self.space, cfg.n_archs, cfg.sampling, seed=cfg.seed + 1)
        results = measure_architectures(self.library(), archs, x[:cfg.finetune_samples], y[:cfg.finetune_samples],
                                        xe, ye, cfg.finetune, seed=cfg.seed, executor=self.executor())
        acc = np.array([r["accuracy"] for r in results])
        predictor = AccuracyPredictor.from_library(self.library(), cfg.features, cfg.alpha).fit(archs, acc)
        atomic_write_json(self.path("measured.json"), {"archs": [str(a) for a in archs], "accuracies": acc.tolist()})
        predictor.save(self.path("predictor.json"))
        self._predictor = predictor

    def build_accuracy_model(self):
        """Stages A and B, each skipped when its file exists."""
        self._check_folder()
        self._stage("reference", self.path("reference.keras").is_file(), self._train_reference)
        self._stage("library", (self.path("library") / "library.json").is_file(), self._train_library)
        self._stage("predictor", self.path("predictor.json").is_file(), self._fit_predictor)

    # ---- C: search, D: finetune --------------------------------------------------------------------------------
    def cache(self):
        from .measure_cache import MeasurementCache

        return MeasurementCache(self.path("measurements.json"))

    def search_scenario(self, scenario, config: SearchConfig | None = None, force: bool = False) -> SearchResult:
        """Stage C for ``scenario`` (a :class:`Scenario` or its config) with the accuracy model on disk."""
        from .search import search

        scenario = scenario if isinstance(scenario, Scenario) else Scenario.from_config(dict(scenario))
        folder = self.path("search", scenario.name)
        pareto = folder / "pareto.json"

        def run():
            result = search(self.space, self.predictor(), scenario, config or self.config.search_config,
                            cache=self.cache(), verbose=self.verbose)
            result.plot(folder / "pareto.png")
            result.save(pareto)
            return result

        out = self._stage(f"search:{scenario.name}", pareto.is_file() and not force, run)
        return out if out is not None else SearchResult.load(pareto)

    def chosen(self, result: SearchResult, k: int | None = None) -> list:
        """``k`` (the config's ``top_k``) front architectures spread evenly along the front."""
        from .search import spread_along_front

        return spread_along_front(result, k or self.config.top_k)

    def finetune_scenario(self, scenario, result: SearchResult, force: bool = False) -> list:
        """Stage D: the chosen front architectures of ``scenario`` trained with soft distillation from the library."""
        from tflite_export import atomic_write_json

        from .distill import distill_architectures, model_from_result

        name = scenario.name if isinstance(scenario, Scenario) else scenario["name"]
        folder = self.path("finetune", name)
        done = folder / "results.json"
        archs = self.chosen(result)
        # done when the results are there for these very architectures (a new search may choose others)
        is_done = done.is_file() and json.loads(done.read_text()).get("chosen") == archs

        def run():
            x, y, _, xe, ye = self.data()
            n = int(self.config.finetune.get("samples", len(x)))
            if not archs:
                self._say(f"[donna] finetune:{name}: the search found no architecture within the limits")
                results = []
            else:
                results = distill_architectures(self.library(), self.reference(), archs, x[:n], y[:n], xe, ye,
                                                self.config.distill, seed=self.config.seed,
                                                executor=self.executor())
            rows = []
            by_arch = {r["arch"]: r for r in result.front}
            for i, r in enumerate(results):
                model_path = folder / f"model_{i}.keras"
                _save_keras(model_from_result(self.space, r), model_path)
                front = by_arch[r["arch"]]
                rows.append({"arch": r["arch"], "accuracy": r["accuracy"],
                             "predicted_accuracy": front["predicted_accuracy"], "metrics": front["metrics"],
                             "model": model_path.name, "seconds": r["seconds"]})
            atomic_write_json(done, {"scenario": name, "chosen": archs, "distill": self.config.distill.get_config(),
                                     "models": rows})
            return rows

        out = self._stage(f"finetune:{name}", is_done and not force, run)
        return out if out is not None else json.loads(done.read_text())["models"]

    def run(self, scenarios=None, finetune: bool = True) -> "DonnaPipeline":
        """A → D: the accuracy model, then per scenario (``scenarios`` or the config's) search and finetuning."""
        t0 = time.perf_counter()
        self.build_accuracy_model()
        self.results = {}
        for sc in scenarios or self.config.scenario_objs:
            result = self.search_scenario(sc)
            models = self.finetune_scenario(sc, result) if finetune else None
            self.results[sc.name] = {"front": len(result.front), "models": models}
        self.seconds["total"] = time.perf_counter() - t0
        self._write_summary()
        return self

    def _write_summary(self):
        from tflite_export import atomic_write

        lines = [f"# DONNA run: space {self.space.name!r}", "",
                 "| scenario | front size | architecture | predicted acc. | finetuned acc. | objective |",
                 "|---|---|---|---|---|---|"]
        for name, r in self.results.items():
            sc = next((s for s in self.config.scenario_objs if s.name == name), None)
            obj = sc.objective if sc else "latency_us"
            for m in r["models"] or []:
                lines.append(f"| {name} | {r['front']} | `{m['arch']}` | {m['predicted_accuracy']:.4f} | "
                             f"{m['accuracy']:.4f} | {obj} = {m['metrics'].get(obj, float('nan')):.4g} |")
        lines += ["", "stages run: " + (", ".join(f"{k} ({self.seconds[k]:.0f} s)" for k in self.ran) or "none"),
                  "stages skipped (on disk): " + (", ".join(self.skipped) or "none"), ""]
        atomic_write(self.path("summary.md"), "\n".join(lines))


def _merge_scenarios(old: list, new: list) -> list:
    names = {s["name"] for s in new}
    return [s for s in old if s.get("name") not in names] + list(new)


def _save_keras(model, path: Path) -> Path:
    """``model.save`` to a temporary name in the same folder, then renamed: no half-written ``.keras`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    opt = getattr(model, "optimizer", None)
    if opt is not None and not opt.built:  # saved with its slots, so that loading it back does not warn
        opt.build(model.trainable_variables)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def run_pipeline(config="tiny", out_dir="artifacts/donna", executor=None, data=None, verbose: int = 1,
                 finetune: bool = True) -> DonnaPipeline:
    """Runs (or resumes) DONNA A → D over ``out_dir``; see :class:`DonnaPipeline`."""
    return DonnaPipeline(config, out_dir, executor=executor, data=data, verbose=verbose).run(finetune=finetune)
