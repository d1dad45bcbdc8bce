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

import dataclasses
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras

from tflite_export.files import atomic_write, atomic_write_json, read_yaml_or_json

from .backbone import backbone_config, logits_model
from .checks import as_float, as_int, check_mapping
from .configs import BUILTIN, builtin_config
from .data import check_data_section, load_data
from .distill import DistillConfig, distill_architectures, model_from_result
from .executors import check_gpus_per_job, make_executor
from .library import BlockLibrary
from .measure_cache import MeasurementCache
from .pipeline import (
    LIBRARY_DIR,
    PREDICTOR_FILE,
    REFERENCE_FILE,
    AccuracyModel,
    DonnaConfig,
    build_accuracy_model,
    save_keras,
    split_data,
)
from .predictor import AccuracyPredictor
from .reference import check_data, compile_model
from .scenario import Scenario
from .search import SearchConfig, SearchResult, search, spread_along_front
from .space import SearchSpace, choice_template, default_space, tiny_space

CONFIG_NAME = "config.json"
SECTIONS = ("space", "reference", "data", "accuracy_model", "search", "scenarios", "finetune", "executor", "seed")
REFERENCE_KEYS = ("path", "blocks")
FINETUNE_KEYS = ("top_k", "samples", "distill")
EXECUTOR_KEYS = {
    "inprocess": ("kind",),
    "ray": ("kind", "address", "num_cpus", "cpus_per_job", "gpus_per_job", "env_vars"),
}


def _space_from(spec) -> SearchSpace:
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


def _fields(cls) -> tuple:
    return tuple(f.name for f in dataclasses.fields(cls))


def _check_reference(ref):
    if ref is None:
        return None
    if isinstance(ref, (str, os.PathLike)):
        ref = {"path": str(ref)}
    ref = check_mapping(ref, "reference", REFERENCE_KEYS)
    if not isinstance(ref.get("path"), str) or not ref["path"]:
        raise ValueError(f"reference.path: {ref.get('path')!r} must name a .keras file")
    blocks = ref.get("blocks", "auto")
    if isinstance(blocks, str) and blocks != "auto":
        blocks = [b.strip() for b in blocks.split(",") if b.strip()]
    if blocks != "auto" and (not isinstance(blocks, (list, tuple)) or not all(isinstance(b, str) for b in blocks)):
        raise ValueError(f"reference.blocks: {blocks!r} must be a list of layer names or 'auto'")
    return {"path": ref["path"], "blocks": blocks if blocks == "auto" else list(blocks)}


def _check_executor(ex):
    ex = check_mapping(
        ex if ex is not None else {"kind": "inprocess"},
        "executor",
        sorted({k for keys in EXECUTOR_KEYS.values() for k in keys}),
    )
    kind = ex.get("kind", "inprocess")
    if kind not in EXECUTOR_KEYS:
        raise ValueError(f"executor.kind: {kind!r} is unknown; choose from {', '.join(EXECUTOR_KEYS)}")
    check_mapping(ex, f"executor (kind {kind!r})", EXECUTOR_KEYS[kind])
    if ex.get("address") is not None and not isinstance(ex["address"], str):
        raise ValueError(f"executor.address: {ex['address']!r} must be a string such as 'ray://host:10001'")
    if ex.get("num_cpus") is not None:
        ex["num_cpus"] = as_int("executor.num_cpus", ex["num_cpus"], 1)
    if ex.get("cpus_per_job") is not None and not as_float("executor.cpus_per_job", ex["cpus_per_job"]) > 0:
        raise ValueError(f"executor.cpus_per_job: {ex['cpus_per_job']} must be positive")
    if ex.get("gpus_per_job") is not None:
        ex["gpus_per_job"] = check_gpus_per_job(ex["gpus_per_job"], "executor.gpus_per_job")
    if ex.get("env_vars") is not None and not isinstance(ex["env_vars"], dict):
        raise ValueError("executor.env_vars: must be a mapping of names to values")
    return {"kind": kind, **{k: v for k, v in ex.items() if k != "kind"}}


def read_config_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DONNA config file {path} does not exist (write one with: keras-eff donna config tiny -o {path.name})"
        )
    doc = read_yaml_or_json(path, "DONNA config")
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a DONNA config is a mapping with the sections {', '.join(SECTIONS)}")
    return doc


@dataclass
class PipelineConfig:
    """A DONNA pipeline config: the sections of a config file, each checked field by field when it is made.

    The built-in ones are :func:`builtin_config` ``("tiny")`` and ``("default")``. Making one reads no file but a
    space file: the reference model and the data are read by :meth:`DonnaPipeline.prepare`. The sections are
    normalized in place (the space and scenarios as configs, the executor with its kind); the checked objects are
    the derived attributes below.

    Attributes:
        space: ``"tiny"``, ``"default"``, a space mapping or a space file (YAML/JSON); with a ``reference``, a
            choice template name (``"tiny"``, ``"default"``) or a mapping of choice lists applied to every block.
        reference: None, a ``.keras`` path, or ``{"path": ..., "blocks": [layer names] or "auto"}``: your own
            trained reference, whose blocks between the boundaries the space replaces.
        data: ``{"path", "image_size", "val_split", "n_train", "n_test"}``: a ``.npz`` file (``x_train``,
            ``y_train``, ``x_val``, ``y_val``) or a folder of images; without ``path``, Fashion-MNIST.
        accuracy_model: `DonnaConfig` fields.
        search: `SearchConfig` fields.
        scenarios: `Scenario` configs (or objects), at least one, with distinct names.
        finetune: ``{"top_k", "samples", "distill"}``: how many front architectures are finetuned per scenario
            (default 3), on how many training images, with which `DistillConfig` fields.
        executor: ``{"kind": "inprocess"}`` or ``{"kind": "ray", "address", "num_cpus", "cpus_per_job",
            "gpus_per_job", "env_vars"}``.
        seed: The seed of every stage, >= 0 (also the default ``seed`` of ``accuracy_model`` and ``search``).
        space_obj: Derived: the `SearchSpace` (None until a ``reference`` model is read).
        donna: Derived: ``accuracy_model`` as a `DonnaConfig`.
        search_config: Derived: ``search`` as a `SearchConfig`.
        scenario_objs: Derived: ``scenarios`` as `Scenario` objects.
        top_k: Derived: ``finetune.top_k``.
        distill: Derived: ``finetune.distill`` as a `DistillConfig`.

    Raises:
        ValueError: If a section or field is invalid or unknown (the message names it by its dotted name, e.g.
            ``finetune.top_k``, and lists the allowed keys).

    Example:
        ```python
        cfg = PipelineConfig.load("tiny")
        cfg = PipelineConfig(space="tiny", search={"max_evals": 48}, scenarios=[{"name": "litert_2threads",
                             "measurers": [{"kind": "litert", "num_threads": 2}]}])
        ```
    """

    space: object = "tiny"
    reference: dict | None = None
    data: dict = field(default_factory=lambda: {"n_train": 6000, "n_test": 2000})
    accuracy_model: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    scenarios: list = field(default_factory=lambda: [{"name": "litert_1thread"}])
    finetune: dict = field(default_factory=dict)
    executor: dict = field(default_factory=lambda: {"kind": "inprocess"})
    seed: int = 0
    # derived by __post_init__ from the sections above (not arguments, not compared: they follow from them)
    space_obj: SearchSpace | None = field(init=False, repr=False, compare=False)  # None until a reference is read
    donna: DonnaConfig = field(init=False, repr=False, compare=False)  # accuracy_model, checked
    search_config: SearchConfig = field(init=False, repr=False, compare=False)  # search, checked
    scenario_objs: list = field(init=False, repr=False, compare=False)  # scenarios as Scenario objects
    top_k: int = field(init=False, repr=False, compare=False)  # finetune.top_k (default 3)
    distill: DistillConfig = field(init=False, repr=False, compare=False)  # finetune.distill, checked

    def __post_init__(self):
        """Checks every section and field by name; reads no file but a space file (the reference model and the
        data are read by :meth:`DonnaPipeline.prepare`, still before anything is written)."""
        self.seed = as_int("seed", self.seed, 0)
        self.reference = _check_reference(self.reference)
        if self.reference is not None and not (isinstance(self.space, dict) and "backbone" in self.space):
            choice_template(self.space)  # a template name or a mapping of choice lists; the space needs the model
            self.space_obj = None
        else:
            self.space_obj = _space_from(self.space)
            self.space = self.space_obj.get_config()
        self.data = check_data_section(self.data)
        self.donna = DonnaConfig.from_config(
            {"seed": self.seed, **check_mapping(self.accuracy_model, "accuracy_model", _fields(DonnaConfig))},
            "accuracy_model",
        )
        self.search_config = SearchConfig.from_config(
            {"seed": self.seed, **check_mapping(self.search, "search", _fields(SearchConfig))}, "search"
        )
        if not isinstance(self.scenarios, (list, tuple)) or not self.scenarios:
            raise ValueError("scenarios: give a list of at least one scenario, e.g. [{'name': 'litert_1thread'}]")
        objs = []
        for i, sc in enumerate(self.scenarios):
            try:
                objs.append(sc if isinstance(sc, Scenario) else Scenario.from_config(sc))
            except (TypeError, ValueError) as err:
                raise ValueError(f"scenarios[{i}]: {err}") from None
        self.scenario_objs = objs
        self.scenarios = [s.get_config() for s in self.scenario_objs]
        names = [s.name for s in self.scenario_objs]
        if len(set(names)) != len(names):
            raise ValueError(f"scenarios: names must differ, got {names}")
        self.finetune = check_mapping(self.finetune, "finetune", FINETUNE_KEYS)
        self.top_k = as_int("finetune.top_k", self.finetune.get("top_k", 3), 1)
        if "samples" in self.finetune:
            self.finetune["samples"] = as_int("finetune.samples", self.finetune["samples"], 1)
        self.distill = DistillConfig.from_config(self.finetune.get("distill", {}), "finetune.distill")
        self.executor = _check_executor(self.executor)

    def get_config(self) -> dict:
        """The sections as a plain mapping (what ``config.json`` records).

        Returns:
            A dict of the sections, which :meth:`from_config` reads back.
        """
        return {name: getattr(self, name) for name in SECTIONS}

    @classmethod
    def from_config(cls, config: dict) -> PipelineConfig:
        """From a mapping of sections.

        Args:
            config: A mapping whose keys are sections (``space``, ``reference``, ``data``, ``accuracy_model``,
                ``search``, ``scenarios``, ``finetune``, ``executor``, ``seed``).

        Returns:
            A new, checked `PipelineConfig`.

        Raises:
            ValueError: If ``config`` is not a mapping, a section is unknown or a field is invalid.
        """
        return cls(**check_mapping(config, "DONNA config", SECTIONS))

    @classmethod
    def load(cls, spec) -> PipelineConfig:
        """A config from a built-in name, a YAML/JSON file or a mapping.

        Args:
            spec: ``"tiny"``, ``"default"``, a path to a YAML/JSON file, a mapping of sections, or a
                `PipelineConfig` (returned as it is).

        Returns:
            A checked `PipelineConfig`.

        Raises:
            FileNotFoundError: If ``spec`` names a file that does not exist.
            ValueError: If the file is unreadable or the config invalid (the message names the file and field).
        """
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
    """DONNA A → D as one resumable pipeline over a folder.

    Stages and their files in ``out_dir``: ``reference`` (``reference.keras``), ``library`` (``library/``),
    ``predictor`` (``predictor.json``, ``measured.json``), ``search:<scenario>`` (``search/<scenario>/pareto.json``,
    ``pareto.png``; measurements cached in ``measurements.json``) and ``finetune:<scenario>``
    (``finetune/<scenario>/results.json`` and one ``model_<i>.keras`` per chosen architecture). A stage whose file
    exists is skipped; files are written atomically and last, so an interrupted run resumes. ``config.json``
    records the config; :meth:`run` also writes ``summary.md``. ``ran`` lists the stages this object ran,
    ``skipped`` those found on disk, ``seconds`` their times.

    Making the pipeline checks the config and, for a config with a ``reference``, reads that model and derives the
    space from it; nothing is written until a stage runs.

    Args:
        config: Anything :meth:`PipelineConfig.load` takes: ``"tiny"``, ``"default"``, a YAML/JSON file, a mapping
            or a `PipelineConfig`.
        out_dir: The run's folder.
        executor: The `Executor` of the training jobs; None: the config's ``executor`` section.
        data: ``((x_train, y_train), (x_eval, y_eval))`` arrays to use instead of the config's ``data`` section.
        verbose: 0: print nothing; otherwise each stage's start, end and time.

    Raises:
        FileNotFoundError: If the config file or the reference model does not exist.
        ValueError: If the config is invalid or the reference model cannot be read or cut into blocks.

    Example:
        ```python
        pipe = DonnaPipeline("tiny", "artifacts/donna")
        pipe.run()                                      # A -> D; run again to resume
        pipe.ran, pipe.skipped
        pipe.search_scenario(Scenario("litert_4t", [{"kind": "litert", "num_threads": 4}]))   # no rebuilding
        ```
    """

    def __init__(self, config, out_dir, executor=None, data=None, verbose: int = 1):
        self.config = PipelineConfig.load(config)
        self.out = Path(out_dir)
        self.verbose = verbose
        self._reference_model = None
        if self.config.space_obj is None:
            self._read_reference()
        assert self.config.space_obj is not None  # derived from the reference model by _read_reference
        self.space: SearchSpace = self.config.space_obj
        self._executor = executor
        self._data = data
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.seconds: dict[str, float] = {}
        self._reference: keras.Model | None = None
        self._library: BlockLibrary | None = None
        self._predictor: AccuracyPredictor | None = None
        self.accuracy_model: AccuracyModel | None = None  # once build_accuracy_model has run

    def _read_reference(self):
        """Reads the reference model and derives the space from it (no file written)."""
        ref = self.config.reference
        model = load_reference_model(ref["path"])
        bb, logits = backbone_config(model, ref["blocks"])
        bb["source"] = str(ref["path"])
        space = SearchSpace.from_backbone(bb, self.config.space, name=f"{Path(ref['path']).stem}_donna")
        self.config.space_obj, self.config.space = space, space.get_config()
        self._reference_model = logits

    def prepare(self):
        """Reads and checks the data against the space (shapes, labels, sizes), before anything is written.

        Returns:
            This pipeline.

        Raises:
            FileNotFoundError: If the data file or folder does not exist.
            ValueError: If the data do not fit the space or there are too few training images for the split.
        """
        (x, y), (xe, ye) = self.raw_data()
        check_data(x, y, self.space, "training data (x_train, y_train)")
        check_data(xe, ye, self.space, "validation data (x_val, y_val)")
        self.data()  # enough images for the split
        return self

    # ---- files and helpers -------------------------------------------------------------------------------------
    def path(self, *parts) -> Path:
        """A path in the run's folder.

        Args:
            *parts: Path components under ``out_dir``.

        Returns:
            ``out_dir / parts...``.
        """
        return self.out.joinpath(*parts)

    def _say(self, msg):
        if self.verbose:
            print(msg, flush=True)

    def _check_folder(self):
        self.out.mkdir(parents=True, exist_ok=True)
        cfg_path = self.path(CONFIG_NAME)
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            old_space = SearchSpace.from_config(old["space"]) if "space" in old else None
            if old_space is not None and old_space.fingerprint() != self.space.fingerprint():
                raise ValueError(
                    f"{self.out} holds a DONNA run for the space {old_space.name!r}, not for "
                    f"{self.space.name!r}; use another --out folder"
                )
            if old.get("accuracy_model") != self.config.accuracy_model or old.get("data") != self.config.data:
                self._say(
                    f"note: {cfg_path} was written with other data/accuracy_model settings; the accuracy "
                    f"model on disk is reused as it is (delete its files to rebuild it)"
                )
            merged = {
                **self.config.get_config(),
                "scenarios": _merge_scenarios(old.get("scenarios", []), self.config.scenarios),
            }
        else:
            merged = self.config.get_config()
        atomic_write_json(cfg_path, merged)

    def record_scenario(self, scenario: Scenario) -> None:
        """Adds ``scenario`` to the folder's ``config.json`` (replacing one of the same name).

        Args:
            scenario: The `Scenario`.

        Returns:
            None. ``config.json`` is rewritten.

        Raises:
            ValueError: If the folder holds a run for another space.
        """
        self._check_folder()

        cfg_path = self.path(CONFIG_NAME)
        doc = json.loads(cfg_path.read_text())
        doc["scenarios"] = _merge_scenarios(doc.get("scenarios", []), [scenario.get_config()])
        atomic_write_json(cfg_path, doc)

    def executor(self):
        """The executor of the training jobs: the one given, else one made from the config (once).

        Returns:
            An `Executor`.
        """
        if self._executor is None:
            spec = dict(self.config.executor)
            self._executor = make_executor(spec.pop("kind", "inprocess"), **spec)
        return self._executor

    def raw_data(self):
        """The data as given, or as the config's ``data`` section names them (read once).

        Returns:
            ``((x_train, y_train), (x_eval, y_eval))``.

        Raises:
            FileNotFoundError: If the data file or folder does not exist.
            ValueError: If the data are unreadable or do not fit the model's input.
        """
        if self._data is None:
            self._data = load_data(self.config.data, self.space.input_shape, self.config.seed)
        return self._data

    def data(self):
        """The data split every stage uses.

        Returns:
            ``(x_fit, y_fit, x_val, x_eval, y_eval)``: the split of :func:`keras_eff.donna.pipeline.split_data`,
            the one :func:`build_accuracy_model` makes.

        Raises:
            ValueError: If there are too few training images for the split.
        """
        (x, y), (xe, ye) = self.raw_data()
        return (*split_data(x, y, self.config.donna), xe, ye)

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
        """The trained reference model (read from the folder once, unless built by this object).

        Returns:
            The compiled Keras reference model.
        """
        if self._reference is None:
            self._reference = compile_model(keras.saving.load_model(self.path(REFERENCE_FILE), compile=False))
        return self._reference

    def library(self):
        """The block library (read from the folder once, unless built by this object).

        Returns:
            The `BlockLibrary`.

        Raises:
            FileNotFoundError: If the folder has no library.
            ValueError: If the library is corrupt or was built for another space.
        """
        if self._library is None:
            self._library = BlockLibrary.load(self.path(LIBRARY_DIR), space=self.space)
        return self._library

    def predictor(self):
        """The accuracy predictor (read from the folder once, unless built by this object).

        Returns:
            The fitted `AccuracyPredictor`.

        Raises:
            FileNotFoundError: If the folder has no ``predictor.json`` (run the pipeline first).
            ValueError: If it was fitted for another space.
        """
        if self._predictor is None:
            if not self.path(PREDICTOR_FILE).is_file():
                raise FileNotFoundError(
                    f"{self.out} has no accuracy model ({PREDICTOR_FILE}); run the pipeline "
                    f"first: keras-eff donna run --config CONFIG --out {self.out}"
                )
            self._predictor = AccuracyPredictor.load(self.path(PREDICTOR_FILE))
            if self._predictor.space.fingerprint() != self.space.fingerprint():
                raise ValueError(f"{self.path(PREDICTOR_FILE)} was fitted for another space")
        return self._predictor

    def build_accuracy_model(self) -> AccuracyModel:
        """Stages A and B: :func:`keras_eff.donna.build_accuracy_model` over this folder, each stage skipped when
        its file exists. A reference read from the user's model is used as it is (logits, never retrained).

        Returns:
            The `AccuracyModel` (also kept as ``accuracy_model``).

        Raises:
            ValueError: If the data do not fit, or the folder holds a run for another space.
        """
        self.prepare()
        self._check_folder()
        (x, y), (xe, ye) = self.raw_data()
        reference = None
        if self.space.backbone is not None and not self.path(REFERENCE_FILE).is_file():
            reference = self._reference_model
            if reference is None:
                if self.config.reference is None:
                    raise ValueError(
                        "the space has a backbone (read from a reference model), but the config names no "
                        "reference.path to load it from"
                    )
                reference = logits_model(load_reference_model(self.config.reference["path"]))[0]
        model = build_accuracy_model(
            self.space,
            x,
            y,
            xe,
            ye,
            self.config.donna,
            executor=self.executor(),
            reference=reference,
            verbose=self.verbose,
            folder=self.out,
            stage=self._stage,
        )
        self._reference, self._library, self._predictor = model.reference, model.library, model.predictor
        self.accuracy_model = model
        return model

    # ---- C: search, D: finetune --------------------------------------------------------------------------------
    def cache(self):
        """The folder's measurement cache, ``measurements.json``, shared by every scenario and run.

        Returns:
            A new `MeasurementCache` on that file.
        """
        return MeasurementCache(self.path("measurements.json"))

    def search_scenario(self, scenario, config: SearchConfig | None = None, force: bool = False) -> SearchResult:
        """Stage C for one scenario, with the accuracy model on disk (nothing is rebuilt).

        Args:
            scenario: A `Scenario` or its config.
            config: Search options; None: the config's ``search`` section.
            force: Whether to search again when ``search/<scenario>/pareto.json`` exists.

        Returns:
            The `SearchResult` (read back from the folder when the stage is skipped).

        Raises:
            FileNotFoundError: If the folder has no accuracy model.
            ValueError: If the scenario is invalid.
        """
        scenario = scenario if isinstance(scenario, Scenario) else Scenario.from_config(dict(scenario))
        folder = self.path("search", scenario.name)
        pareto = folder / "pareto.json"

        def run():
            result = search(
                self.space,
                self.predictor(),
                scenario,
                config or self.config.search_config,
                cache=self.cache(),
                verbose=self.verbose,
            )
            result.plot(folder / "pareto.png")
            result.save(pareto)
            return result

        out = self._stage(f"search:{scenario.name}", pareto.is_file() and not force, run)
        return out if out is not None else SearchResult.load(pareto)

    def chosen(self, result: SearchResult, k: int | None = None) -> list:
        """The front architectures that stage D finetunes, spread evenly along the front.

        Args:
            result: A `SearchResult`.
            k: How many; None: the config's ``finetune.top_k``.

        Returns:
            Architecture strings, the cheapest and the most accurate included (all when the front is smaller).
        """
        return spread_along_front(result, k or self.config.top_k)

    def finetune_scenario(self, scenario, result: SearchResult, force: bool = False) -> list:
        """Stage D: the chosen front architectures of ``scenario`` trained with soft distillation from the library.

        Args:
            scenario: A `Scenario` or its config.
            result: The scenario's `SearchResult`.
            force: Whether to train again when ``finetune/<scenario>/results.json`` exists for these architectures.

        Returns:
            One dict per chosen architecture: ``arch``, ``accuracy``, ``predicted_accuracy``, ``metrics``,
            ``model`` (the ``.keras`` file's name in ``finetune/<scenario>/``) and ``seconds``.
        """
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
                results = distill_architectures(
                    self.library(),
                    self.reference(),
                    archs,
                    x[:n],
                    y[:n],
                    xe,
                    ye,
                    self.config.distill,
                    seed=self.config.seed,
                    executor=self.executor(),
                )
            rows = []
            by_arch = {r["arch"]: r for r in result.front}
            for i, r in enumerate(results):
                model_path = folder / f"model_{i}.keras"
                save_keras(model_from_result(self.space, r), model_path)
                front = by_arch[r["arch"]]
                rows.append(
                    {
                        "arch": r["arch"],
                        "accuracy": r["accuracy"],
                        "predicted_accuracy": front["predicted_accuracy"],
                        "metrics": front["metrics"],
                        "model": model_path.name,
                        "seconds": r["seconds"],
                    }
                )
            atomic_write_json(
                done, {"scenario": name, "chosen": archs, "distill": self.config.distill.get_config(), "models": rows}
            )
            return rows

        out = self._stage(f"finetune:{name}", is_done and not force, run)
        return out if out is not None else json.loads(done.read_text())["models"]

    def run(self, scenarios=None, finetune: bool = True) -> DonnaPipeline:
        """A → D: the accuracy model, then per scenario (``scenarios`` or the config's) search and finetuning.

        Args:
            scenarios: The `Scenario` objects to search; None: the config's.
            finetune: Whether to run stage D.

        Returns:
            This pipeline; ``results`` maps each scenario's name to its front size and finetuned models, and
            ``summary.md`` lists them.

        Raises:
            FileNotFoundError: If the data or the reference model does not exist.
            ValueError: If the data do not fit the space, or the folder holds a run for another space.
        """
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
        lines = [
            f"# DONNA run: space {self.space.name!r}",
            "",
            "| scenario | front size | architecture | predicted acc. | finetuned acc. | objective |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in self.results.items():
            sc = next((s for s in self.config.scenario_objs if s.name == name), None)
            obj = sc.objective if sc else "latency_us"
            for m in r["models"] or []:
                lines.append(
                    f"| {name} | {r['front']} | `{m['arch']}` | {m['predicted_accuracy']:.4f} | "
                    f"{m['accuracy']:.4f} | {obj} = {m['metrics'].get(obj, float('nan')):.4g} |"
                )
        lines += [
            "",
            "stages run: " + (", ".join(f"{k} ({self.seconds[k]:.0f} s)" for k in self.ran) or "none"),
            "stages skipped (on disk): " + (", ".join(self.skipped) or "none"),
            "",
        ]
        atomic_write(self.path("summary.md"), "\n".join(lines))


def load_reference_model(path):
    """A ``.keras`` reference model, loaded in Keras's safe mode; errors name ``reference.path``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reference.path: {p} does not exist")
    if p.suffix != ".keras" or not zipfile.is_zipfile(p):
        raise ValueError(f"reference.path: {p} is not a .keras file (save the model with model.save('model.keras'))")
    try:
        model = keras.saving.load_model(p, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - Keras raises many types for one meaning
        raise ValueError(
            f"reference.path: cannot load {p}: {type(err).__name__}: {err} (custom layers must be "
            f"registered; Lambda layers are refused in safe mode)"
        ) from None
    return model


def _merge_scenarios(old: list, new: list) -> list:
    names = {s["name"] for s in new}
    return [s for s in old if s.get("name") not in names] + list(new)


def run_pipeline(
    config="tiny", out_dir="artifacts/donna", executor=None, data=None, verbose: int = 1, finetune: bool = True
) -> DonnaPipeline:
    """Runs (or resumes) DONNA A → D over a folder; see `DonnaPipeline` for the stages and files.

    Args:
        config: ``"tiny"``, ``"default"``, a YAML/JSON file, a mapping of sections or a `PipelineConfig`.
        out_dir: The run's folder.
        executor: The `Executor` of the training jobs; None: the config's ``executor`` section.
        data: ``((x_train, y_train), (x_eval, y_eval))`` arrays to use instead of the config's ``data`` section.
        verbose: 0: print nothing; otherwise each stage's start, end and time.
        finetune: Whether to run stage D.

    Returns:
        The `DonnaPipeline`, run: ``ran``, ``skipped``, ``seconds`` and ``results``.

    Raises:
        FileNotFoundError: If the config file, the reference model or the data does not exist.
        ValueError: If the config is invalid, the data do not fit the space, or ``out_dir`` holds a run for another
            space.

    Example:
        ```python
        pipe = run_pipeline("tiny", "artifacts/donna")   # a built-in name, a YAML/JSON file or a dict
        pipe.ran                                          # the stages this call ran (a resumed run skips the rest)
        ```
    """
    return DonnaPipeline(config, out_dir, executor=executor, data=data, verbose=verbose).run(finetune=finetune)
