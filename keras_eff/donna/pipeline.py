"""DONNA steps A and B end to end: reference model -> block library (BKD) -> measured architectures -> predictor.

:func:`build_accuracy_model` is the one implementation of these stages: called directly on arrays, or by
:class:`keras_eff.donna.DonnaPipeline` over its folder (resumable, one stage at a time). Costs are counted in wall
time and in epochs of the reference model (wall time over the reference's time per epoch), and printed at the end as
a time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np

from tflite_export.files import atomic_write_json, staged_path

from .bkd import BKDConfig
from .checks import checked
from .finetune import FinetuneConfig, measure_architectures
from .library import BlockLibrary, train_block_library
from .predictor import DEFAULT_FEATURES, AccuracyPredictor, check_features
from .reference import check_data, compile_model, train_reference
from .space import Architecture, SearchSpace, read_json

SAMPLINGS = ("balanced", "uniform")
# the files of a build folder (build_accuracy_model(folder=...), AccuracyModel.save, DonnaPipeline)
REFERENCE_FILE, LIBRARY_DIR, PREDICTOR_FILE, MEASURED_FILE = (
    "reference.keras",
    "library",
    "predictor.json",
    "measured.json",
)


@dataclass
class DonnaConfig:
    """Options of :func:`build_accuracy_model` (DONNA stages A and B); the ``accuracy_model`` section of a pipeline
    config.

    ``val_samples`` training images, drawn with ``seed``, are held out to score the blocks; the reference trains on
    the rest, the blocks distil on its first ``bkd_samples`` and ``n_archs`` sampled architectures finetune on its
    first ``finetune_samples`` (soft distillation from the reference, as in stage D), then are measured on the
    evaluation set to fit the predictor. The defaults are sized for the default space; :meth:`quick` is for the
    tiny space, tests and notebooks.

    Attributes:
        reference_epochs: Epochs of the reference's training.
        reference_batch_size: Batch size of the reference's training.
        bkd: Blockwise-distillation options (a `BKDConfig` or its mapping).
        bkd_samples: Training images that teach the blocks.
        val_samples: Held-out training images that score the blocks.
        n_archs: Architectures finetuned and measured to fit the predictor; at least 3.
        finetune: Their finetuning options (a `FinetuneConfig` or its mapping).
        finetune_samples: Training images they finetune on (fewer when there are fewer).
        features: The predictor's features, a ``"+"``-join of ``losses``, ``log-losses``, ``loss-products``,
            ``macs`` and ``choices`` (see `AccuracyPredictor`).
        alpha: The predictor's ridge penalty, a number >= 0 or ``"cv"`` (leave-one-out).
        sampling: How the training architectures are drawn: ``"balanced"`` (every block's choices equally often)
            or ``"uniform"``.
        seed: Seed of the split, the reference, the sampling and the finetuning.

    Raises:
        ValueError: If a count is not a positive integer, ``n_archs`` is below 3, or ``sampling`` or ``features``
            is unknown.

    Example:
        ```python
        config = DonnaConfig(reference_epochs=6, bkd=BKDConfig(steps=800), n_archs=24, features="losses+macs")
        same = DonnaConfig.from_config({"reference_epochs": 6, "bkd": {"steps": 800}, "n_archs": 24,
                                        "features": "losses+macs"})   # config == same
        ```
    """

    reference_epochs: int = 4
    reference_batch_size: int = 128
    bkd: BKDConfig = field(default_factory=BKDConfig)
    bkd_samples: int = 15000
    val_samples: int = 2000
    n_archs: int = 24
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_samples: int = 20000
    features: str = DEFAULT_FEATURES
    alpha: float | str = "cv"
    sampling: str = "balanced"
    seed: int = 0
    _nested: ClassVar[dict] = {"BKDConfig": BKDConfig, "FinetuneConfig": FinetuneConfig}  # for checks.checked

    def __post_init__(self):
        if isinstance(self.bkd, dict):
            self.bkd = BKDConfig.from_config(self.bkd)
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig.from_config(self.finetune)
        for name in (
            "reference_epochs",
            "reference_batch_size",
            "bkd_samples",
            "val_samples",
            "n_archs",
            "finetune_samples",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"DonnaConfig.{name}: {v!r} must be a positive integer")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"DonnaConfig.sampling: {self.sampling!r} is unknown; choose from {', '.join(SAMPLINGS)}")

        check_features(self.features)
        if self.n_archs < 3:
            raise ValueError(f"DonnaConfig.n_archs: {self.n_archs} is too few to fit a predictor; use 3 or more")

    def get_config(self) -> dict:
        """The options as a plain mapping (nested configs as mappings).

        Returns:
            A dict that :meth:`from_config` reads back.
        """
        cfg = dict(self.__dict__)
        cfg["bkd"], cfg["finetune"] = self.bkd.get_config(), self.finetune.get_config()
        return cfg

    @classmethod
    def from_config(cls, config: dict, where: str = "accuracy_model") -> DonnaConfig:
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`).

        Args:
            config: A mapping of field names to values, ``bkd`` and ``finetune`` as mappings (a `DonnaConfig` is
                returned as it is).
            where: The dotted name of the section, for error messages.

        Returns:
            A new `DonnaConfig`.

        Raises:
            ValueError: If a key is unknown or a value has the wrong type or range (the message names it, e.g.
                ``accuracy_model.bkd.steps``).
        """
        return checked(cls, config, where)

    @classmethod
    def quick(cls) -> DonnaConfig:
        """Small budgets for the tiny space, tests and notebooks: the settings of the ``--quick`` benchmarks.

        The reference trains 6 epochs; BKD runs 800 steps per block on 6,000 images (256 calibration images per
        choice), scored on 500; 24 architectures, balanced over the choices, finetune 30 steps on 3,000 images and
        fit a ridge on each block's loss and log-MACs (``"losses+macs"``) with a leave-one-out penalty. Why these
        values, and what they measured: docs/donna.md, "Benchmark" of part 1.

        Returns:
            A new `DonnaConfig`.
        """
        return cls(
            reference_epochs=6,
            bkd=BKDConfig(steps=800, calibration_samples=256),
            bkd_samples=6000,
            val_samples=500,
            n_archs=24,
            finetune=FinetuneConfig(steps=30),
            finetune_samples=3000,
            features=DEFAULT_FEATURES,
            alpha="cv",
            sampling="balanced",
        )


def sample_balanced(space: SearchSpace, n: int, seed=0) -> list:
    """``n`` distinct architectures in which every block's choices appear equally often (within one): per block, the
    choices in shuffled rounds, so that a few dozen architectures still cover every choice's loss, unlike uniform
    draws that repeat some choices and miss others. Reproducible from ``seed``."""
    if n > space.size():
        raise ValueError(f"n: asked for {n} distinct architectures, the space holds only {space.size()}")
    rng = np.random.default_rng(seed)
    choices = [b.choices() for b in space.blocks]
    columns = [np.concatenate([rng.permutation(len(c)) for _ in range(-(-n // len(c)))])[:n] for c in choices]
    out, seen = [], set()
    for k in range(n):
        arch = Architecture(tuple(c[col[k]] for c, col in zip(choices, columns)))
        while arch in seen:  # rare: redraw uniformly
            arch = Architecture(tuple(c[rng.integers(len(c))] for c in choices))
        seen.add(arch)
        out.append(arch)
    return out


def sample_archs(space: SearchSpace, n: int, sampling: str = "balanced", seed=0) -> list:
    """The training architectures of the predictor: :func:`sample_balanced` or ``space.sample`` (uniform)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: {sampling!r} is unknown; choose from {', '.join(SAMPLINGS)}")
    return sample_balanced(space, n, seed) if sampling == "balanced" else space.sample(n, seed=seed)


@dataclass
class AccuracyModel:
    """What :func:`build_accuracy_model` returns: the predictor and everything it was built from.

    Attributes:
        predictor: The fitted `AccuracyPredictor`.
        library: The `BlockLibrary`.
        reference: The trained reference Keras model (logits).
        archs: The architectures the predictor was fitted on.
        accuracies: Their measured accuracies (an array, in ``archs`` order).
        reference_accuracy: The reference's accuracy on the evaluation set.
        seconds: Wall time per stage (``"reference"``, ``"block library (BKD)"``, ``"finetune + measure"``,
            ``"fit predictor"`` where run) and ``"total"``.
        reference_epoch_seconds: Seconds per epoch of the reference's training, the unit costs are counted in;
            None when unknown (a resumed build whose reference was neither trained nor timed in this call, in a
            folder without ``measured.json``).

    Example:
        ```python
        result = build_accuracy_model(tiny_space(), x_train, y_train, x_test, y_test, DonnaConfig.quick())
        result.save("artifacts/donna")
        result.cost_reference_epochs    # the whole build in epochs of the reference
        ```
    """

    predictor: AccuracyPredictor
    library: BlockLibrary
    reference: keras.Model
    archs: list
    accuracies: np.ndarray
    reference_accuracy: float
    seconds: dict
    reference_epoch_seconds: float | None

    @property
    def cost_reference_epochs(self) -> float:
        """The whole build (reference training included) in epochs of the reference model.

        Returns:
            ``seconds["total"] / reference_epoch_seconds``; NaN when the epoch time is unknown.
        """
        if not self.reference_epoch_seconds:
            return float("nan")
        return self.seconds["total"] / self.reference_epoch_seconds

    def save(self, folder) -> Path:
        """Writes ``predictor.json``, the block library folder ``library/``, ``reference.keras`` and
        ``measured.json``: the layout :func:`build_accuracy_model` resumes from (``folder=``).

        Args:
            folder: The folder (created if needed); files already there are replaced.

        Returns:
            ``folder`` as a `pathlib.Path`.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_keras(self.reference, folder / REFERENCE_FILE)
        self.library.save(folder / LIBRARY_DIR)
        _write_measured(
            folder, self.archs, self.accuracies, self.seconds, self.reference_accuracy, self.reference_epoch_seconds
        )
        self.predictor.save(folder / PREDICTOR_FILE)
        return folder


def _write_measured(folder: Path, archs, accuracies, seconds, reference_accuracy, reference_epoch_seconds):
    atomic_write_json(
        folder / MEASURED_FILE,
        {
            "archs": [str(a) for a in archs],
            "accuracies": np.asarray(accuracies).tolist(),
            "seconds": seconds,
            "reference_accuracy": reference_accuracy,
            "reference_epoch_seconds": reference_epoch_seconds,
        },
    )


def print_budget(title: str, seconds: dict, epoch_seconds: float | None = None, budget_s: float | None = None):
    """Prints where the time went, in seconds and (when known) reference-model epochs."""
    print(f"--- time budget: {title} ---")
    for k, v in seconds.items():
        ep = f"  = {v / epoch_seconds:5.1f} reference epochs" if epoch_seconds else ""
        print(f"  {k:<22} {v:8.1f} s{ep}")
    if budget_s is not None:
        total = seconds.get("total", sum(seconds.values()))
        print(f"  budget {budget_s:.0f} s: {'within' if total <= budget_s else 'OVER'} ({total / budget_s:.0%})")


def split_data(x_train, y_train, config: DonnaConfig):
    """``(x_fit, y_fit, x_val)``: the one split of the training data that every stage uses. ``val_samples``
    images, drawn with ``config.seed``, score the blocks (BKD) and are never trained on; the reference trains on
    the rest, the blocks distil on its first ``bkd_samples`` and the sampled architectures finetune on its first
    ``finetune_samples`` (fewer when there are fewer). Refuses data with fewer than ``bkd_samples + val_samples``
    images."""
    need = config.bkd_samples + config.val_samples
    if len(x_train) < need:
        raise ValueError(
            f"training data: {len(x_train)} images, but accuracy_model.bkd_samples + val_samples = "
            f"{config.bkd_samples} + {config.val_samples} = {need}; lower them or give more data"
        )
    perm = np.random.default_rng(config.seed).permutation(len(x_train))
    fit_idx, val_idx = perm[: len(x_train) - config.val_samples], perm[len(x_train) - config.val_samples :]
    return x_train[fit_idx], y_train[fit_idx], x_train[val_idx]


def _run_stage(name: str, done: bool, fn):
    """The default stage runner of :func:`build_accuracy_model`: ``fn()`` unless the stage is done."""
    return None if done else fn()


def build_accuracy_model(
    space: SearchSpace,
    x_train,
    y_train,
    x_eval,
    y_eval,
    config: DonnaConfig | None = None,
    executor=None,
    reference=None,
    budget_s: float | None = None,
    verbose: int = 1,
    folder=None,
    stage=None,
) -> AccuracyModel:
    """DONNA's accuracy model for ``space`` (stages A and B), the one implementation behind both this function and
    :meth:`keras_eff.donna.DonnaPipeline.build_accuracy_model`.

    The stages, on the split of :func:`split_data`:

    - ``reference``: trains the reference (unless ``reference``, a trained logits model, is given: it is used as
      it is, never retrained, and one epoch is timed on a copy so that costs can be counted in its epochs);
    - ``library``: distils every block with held-out-scored BKD;
    - ``predictor``: finetunes ``n_archs`` sampled architectures with the soft distillation from the reference that
      stage D uses, measures them on ``(x_eval, y_eval)`` and fits the predictor.

    Jobs run on ``executor`` (in this process when None). With ``folder``, every stage writes its result there as
    soon as it ends (``reference.keras``, ``library/``, ``measured.json`` + ``predictor.json``; the layout of
    :meth:`AccuracyModel.save`) and a stage whose file is already there is read back instead of run, so that an
    interrupted build resumes; the folder's files win over a ``reference`` given again. ``stage(name, done, fn)``,
    when given, runs each stage instead of the default (which calls ``fn()`` unless ``done``): the pipeline's log
    and timing. ``verbose`` 0 prints nothing; otherwise the time budget (against ``budget_s``) is printed.

    Args:
        space: The `SearchSpace`.
        x_train: Training images ``(n, *space.input_shape)``; at least ``bkd_samples + val_samples`` of them.
        y_train: Their integer labels ``(n,)``.
        x_eval: Evaluation images: the sampled architectures' and the reference's accuracy.
        y_eval: Their integer labels.
        config: The options; None: ``DonnaConfig()``.
        executor: Where the jobs run (an `Executor`); None: in this process.
        reference: A trained reference Keras model of the space (logits) to use instead of training one; not
            changed.
        budget_s: A time budget in seconds, printed against the time taken (nothing is stopped).
        verbose: 0: print nothing; otherwise progress and the time budget.
        folder: A folder to write each stage's result to and to resume from; None: nothing is written.
        stage: ``stage(name, done, fn)`` to run each stage instead of the default.

    Returns:
        An `AccuracyModel`: the fitted predictor, the block library, the reference, the measured architectures and
        the time taken.

    Raises:
        ValueError: If the data do not fit the space (image shape, labels) or there are fewer than
            ``bkd_samples + val_samples`` training images, or a file in ``folder`` is corrupt or was built for
            another space.

    Example:
        ```python
        from keras_eff.datasets import fashion_mnist_float

        (x_train, y_train), (x_test, y_test) = fashion_mnist_float(n_test=2000)
        result = build_accuracy_model(tiny_space(), x_train, y_train, x_test, y_test, DonnaConfig.quick(),
                                      folder="artifacts/donna")   # run again to resume
        result.predictor.predict(tiny_space().sample(5))
        ```
    """
    config = config or DonnaConfig()
    stage = stage or _run_stage
    folder = None if folder is None else Path(folder)
    check_data(x_train, y_train, space, "x_train")
    check_data(x_eval, y_eval, space, "x_eval")
    x_fit, y_fit, x_val = split_data(x_train, y_train, config)
    measured = _read_measured(folder)
    seconds, t_all = {}, time.perf_counter()

    def is_done(name):
        return folder is not None and (folder / name).is_file()

    # A: the reference
    t0 = time.perf_counter()
    state = {"epoch_s": measured.get("reference_epoch_seconds")}

    def reference_stage():
        nonlocal reference
        if reference is None:
            reference, state["epoch_s"] = train_reference(
                space,
                x_fit,
                y_fit,
                config.reference_epochs,
                config.reference_batch_size,
                seed=config.seed,
                verbose=verbose,
            )
        else:  # costs nothing here; one epoch's worth of steps is timed on a copy to express costs in epochs
            state["epoch_s"] = _time_reference_epoch(reference, x_fit, y_fit, config.reference_batch_size)
        if folder is not None:
            save_keras(reference, folder / REFERENCE_FILE)
        return reference

    ran = stage("reference", is_done(REFERENCE_FILE), reference_stage) is not None
    if not ran:
        reference = compile_model(keras.saving.load_model(folder / REFERENCE_FILE, compile=False))
    epoch_s = state["epoch_s"]
    ref_acc = None if ran else measured.get("reference_accuracy")
    if ref_acc is None:
        ref_acc = _accuracy(reference, x_eval, y_eval)
    seconds["reference"] = time.perf_counter() - t0
    if verbose:
        print(f"reference model: accuracy {ref_acc:.4f}" + (f", {epoch_s:.1f} s per epoch" if epoch_s else ""))

    # B: the block library
    t0 = time.perf_counter()

    def library_stage():
        lib = train_block_library(
            space, reference, x_fit[: config.bkd_samples], x_val, config.bkd, executor, verbose=bool(verbose)
        )
        if folder is not None:
            lib.save(folder / LIBRARY_DIR)
        return lib

    library = stage("library", is_done(f"{LIBRARY_DIR}/library.json"), library_stage)
    ran = ran or library is not None
    if library is None:
        library = BlockLibrary.load(folder / LIBRARY_DIR, space=space)
    seconds["block library (BKD)"] = time.perf_counter() - t0

    # B: the sampled architectures, finetuned and measured, and the predictor fitted on them
    def predictor_stage():
        t1 = time.perf_counter()
        archs = sample_archs(space, config.n_archs, config.sampling, seed=config.seed + 1)
        results = measure_architectures(
            library,
            archs,
            x_fit[: config.finetune_samples],
            y_fit[: config.finetune_samples],
            x_eval,
            y_eval,
            config.finetune,
            seed=config.seed,
            executor=executor,
            reference=reference,  # the same soft distillation as stage D
        )
        accuracies = np.array([r["accuracy"] for r in results])
        seconds["finetune + measure"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        predictor = AccuracyPredictor.from_library(library, config.features, config.alpha).fit(archs, accuracies)
        seconds["fit predictor"] = time.perf_counter() - t1
        if folder is not None:  # measured.json first: predictor.json marks the stage done
            _write_measured(
                folder, archs, accuracies, {**seconds, "total": time.perf_counter() - t_all}, ref_acc, epoch_s
            )
            predictor.save(folder / PREDICTOR_FILE)
        return predictor, archs, accuracies

    out = stage("predictor", is_done(PREDICTOR_FILE), predictor_stage)
    ran = ran or out is not None
    if out is None:
        predictor = AccuracyPredictor.load(folder / PREDICTOR_FILE)
        if predictor.space.fingerprint() != space.fingerprint():
            raise ValueError(
                f"{folder / PREDICTOR_FILE} was fitted for another space than {space.name!r}; use "
                f"another folder or delete its files"
            )
        measured = _read_measured(folder)
        archs = [Architecture.parse(a) for a in measured.get("archs", [])]
        accuracies = np.asarray(measured.get("accuracies", []), np.float64)
    else:
        predictor, archs, accuracies = out
    seconds["total"] = time.perf_counter() - t_all
    if verbose and ran:  # a build read back whole from its folder has no budget to show
        print_budget(f"accuracy model of {space.name!r}", seconds, epoch_s, budget_s)
    return AccuracyModel(predictor, library, reference, archs, accuracies, ref_acc, seconds, epoch_s)


def _read_measured(folder) -> dict:
    """``measured.json`` of ``folder`` (an empty mapping when there is none)."""
    if folder is None or not (Path(folder) / MEASURED_FILE).is_file():
        return {}

    doc = read_json(Path(folder) / MEASURED_FILE, "measured architectures")
    return doc if isinstance(doc, dict) else {}


def _accuracy(model, x, y, batch_size: int = 512) -> float:
    """Top-1 accuracy of the logits model ``model`` on ``(x, y)``, without compiling (or otherwise changing) it."""
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)))


def _time_reference_epoch(reference, x, y, batch_size, steps: int = 20) -> float:
    """Seconds per epoch over ``x`` of training a copy of ``reference`` (``steps`` timed steps, scaled): the unit
    costs are counted in when the reference was not trained here. The given model is not changed."""
    model = compile_model(keras.models.clone_model(reference))
    n = min(len(x), steps * batch_size)
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # trace once
    t0 = time.perf_counter()
    model.fit(x[:n], y[:n], batch_size=batch_size, epochs=1, verbose=0)
    return (time.perf_counter() - t0) * len(x) / n


def save_keras(model, path) -> Path:
    """``model.save`` to a temporary name in the same folder, then renamed: no half-written ``.keras`` file."""
    path = Path(path)
    opt = getattr(model, "optimizer", None)
    if opt is not None and not opt.built:  # saved with its slots, so that loading it back does not warn
        opt.build(model.trainable_variables)
    with staged_path(path) as tmp:
        model.save(tmp)
    return path
