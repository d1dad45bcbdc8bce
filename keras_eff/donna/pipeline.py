"""DONNA steps A and B end to end: reference model -> block library (BKD) -> measured architectures -> predictor.

Costs are counted in wall time and in epochs of the reference model (wall time over the reference's time per epoch),
and printed at the end as a time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bkd import BKDConfig
from .finetune import FinetuneConfig
from .space import Architecture, SearchSpace

SAMPLINGS = ("balanced", "uniform")


@dataclass
class DonnaConfig:
    """Options of :func:`build_accuracy_model`. ``bkd_samples`` training images teach the blocks and
    ``val_samples`` held-out ones score them; ``n_archs`` architectures are finetuned on ``finetune_samples`` images
    and measured on the evaluation set to fit the predictor."""

    reference_epochs: int = 4
    reference_batch_size: int = 128
    bkd: BKDConfig = field(default_factory=BKDConfig)
    bkd_samples: int = 15000
    val_samples: int = 2000
    n_archs: int = 24
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_samples: int = 20000
    features: str = "losses+macs"
    alpha: float | str = "cv"
    sampling: str = "balanced"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.bkd, dict):
            self.bkd = BKDConfig.from_config(self.bkd)
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig.from_config(self.finetune)
        for name in ("reference_epochs", "reference_batch_size", "bkd_samples", "val_samples", "n_archs",
                     "finetune_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DonnaConfig.{name}: {v!r} must be a positive integer")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"DonnaConfig.sampling: {self.sampling!r} is unknown; choose from {', '.join(SAMPLINGS)}")
        from .predictor import check_features

        check_features(self.features)
        if self.n_archs < 3:
            raise ValueError(f"DonnaConfig.n_archs: {self.n_archs} is too few to fit a predictor; use 3 or more")

    def get_config(self) -> dict:
        cfg = dict(self.__dict__)
        cfg["bkd"], cfg["finetune"] = self.bkd.get_config(), self.finetune.get_config()
        return cfg

    @classmethod
    def from_config(cls, config: dict, where: str = "accuracy_model") -> "DonnaConfig":
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`)."""
        from .checks import checked

        return checked(cls, config, where)

    @classmethod
    def quick(cls) -> "DonnaConfig":
        """Minutes instead of an hour: for the tiny space, tests and notebooks. The reference trains 6 epochs (on
        the full Fashion-MNIST training set in the benchmark: near its plateau, so that "5 reference trainings" is a
        fair unit of cost); BKD gets 800 steps per block (at 150 the blocks barely learn and their losses rank
        architectures poorly); 24 architectures, balanced over the choices, fit a ridge on each block's loss and
        log-MACs with a leave-one-out penalty ("losses+macs": the best mean leave-one-out tau on the training
        architectures over two benchmark runs, see benchmarks/results/donna_predictor_quick.md)."""
        return cls(reference_epochs=6, bkd=BKDConfig(steps=800, calibration_samples=256), bkd_samples=6000,
                   val_samples=500, n_archs=24, finetune=FinetuneConfig(steps=30), finetune_samples=3000,
                   features="losses+macs", alpha="cv", sampling="balanced")


DonnaConfig._nested = {"BKDConfig": BKDConfig, "FinetuneConfig": FinetuneConfig}


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
    """What :func:`build_accuracy_model` returns: the predictor and everything it was built from."""

    predictor: object
    library: object
    reference: object
    archs: list
    accuracies: np.ndarray
    reference_accuracy: float
    seconds: dict
    reference_epoch_seconds: float

    @property
    def cost_reference_epochs(self) -> float:
        """The whole build (reference training included) in epochs of the reference model."""
        return self.seconds["total"] / self.reference_epoch_seconds

    def save(self, folder) -> Path:
        """Writes ``predictor.json``, the block library folder ``library/`` and ``reference.keras``."""
        from tflite_export import atomic_write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.predictor.save(folder / "predictor.json")
        self.library.save(folder / "library")
        self.reference.save(folder / "reference.keras")
        atomic_write_json(folder / "measured.json", {"archs": [str(a) for a in self.archs],
                                                     "accuracies": self.accuracies, "seconds": self.seconds,
                                                     "reference_accuracy": self.reference_accuracy,
                                                     "reference_epoch_seconds": self.reference_epoch_seconds})
        return folder


def print_budget(title: str, seconds: dict, epoch_seconds: float | None = None, budget_s: float | None = None):
    """Prints where the time went, in seconds and (when known) reference-model epochs."""
    print(f"--- time budget: {title} ---")
    for k, v in seconds.items():
        ep = f"  = {v / epoch_seconds:5.1f} reference epochs" if epoch_seconds else ""
        print(f"  {k:<22} {v:8.1f} s{ep}")
    if budget_s is not None:
        total = seconds.get("total", sum(seconds.values()))
        print(f"  budget {budget_s:.0f} s: {'within' if total <= budget_s else 'OVER'} ({total / budget_s:.0%})")


def build_accuracy_model(space: SearchSpace, x_train, y_train, x_eval, y_eval, config: DonnaConfig | None = None,
                         executor=None, reference=None, budget_s: float | None = None,
                         verbose: int = 1) -> AccuracyModel:
    """DONNA's accuracy model for ``space``: trains the reference (unless ``reference``, a trained model built by
    ``build_reference``, is given), distils every block on held-out-scored BKD, finetunes ``n_archs`` sampled
    architectures, measures them on ``(x_eval, y_eval)`` and fits the predictor. Jobs run on ``executor``."""
    from .library import train_block_library
    from .predictor import AccuracyPredictor
    from .finetune import measure_architectures
    from .reference import check_data, compile_model, train_reference

    config = config or DonnaConfig()
    check_data(x_train, y_train, space, "x_train")
    check_data(x_eval, y_eval, space, "x_eval")
    need = config.bkd_samples + config.val_samples
    if len(x_train) < need:
        raise ValueError(f"x_train: {len(x_train)} images, but bkd_samples + val_samples = {need}; lower them")
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(len(x_train))
    fit_idx, val_idx = perm[:len(x_train) - config.val_samples], perm[len(x_train) - config.val_samples:]
    seconds, t_all = {}, time.perf_counter()

    t0 = time.perf_counter()
    if reference is None:
        reference, epoch_s = train_reference(space, x_train[fit_idx], y_train[fit_idx], config.reference_epochs,
                                             config.reference_batch_size, seed=config.seed, verbose=verbose)
    else:
        # a given reference costs nothing here; time one epoch's worth of steps on a copy to express costs in epochs
        epoch_s = _time_reference_epoch(space, x_train[fit_idx], y_train[fit_idx], config.reference_batch_size)
    compile_model(reference)
    ref_acc = float(reference.evaluate(x_eval, y_eval, batch_size=512, verbose=0)[1])
    seconds["reference"] = time.perf_counter() - t0
    if verbose:
        print(f"reference model: accuracy {ref_acc:.4f}, {epoch_s:.1f} s per epoch")

    t0 = time.perf_counter()
    bkd_idx = fit_idx[:config.bkd_samples]
    library = train_block_library(space, reference, x_train[bkd_idx], x_train[val_idx], config.bkd, executor,
                                  verbose=bool(verbose))
    seconds["block library (BKD)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    archs = sample_archs(space, config.n_archs, config.sampling, seed=config.seed + 1)
    ft_idx = fit_idx[:config.finetune_samples]
    results = measure_architectures(library, archs, x_train[ft_idx], y_train[ft_idx], x_eval, y_eval,
                                    config.finetune, seed=config.seed, executor=executor)
    accuracies = np.array([r["accuracy"] for r in results])
    seconds["finetune + measure"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    predictor = AccuracyPredictor.from_library(library, config.features, config.alpha).fit(archs, accuracies)
    seconds["fit predictor"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all
    if verbose:
        print_budget(f"accuracy model of {space.name!r}", seconds, epoch_s, budget_s)
    return AccuracyModel(predictor, library, reference, archs, accuracies, ref_acc, seconds, epoch_s)


def _time_reference_epoch(space, x, y, batch_size, steps: int = 20) -> float:
    from .reference import build_reference, compile_model

    model = compile_model(build_reference(space))
    n = min(len(x), steps * batch_size)
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)  # trace once
    t0 = time.perf_counter()
    model.fit(x[:n], y[:n], batch_size=batch_size, epochs=1, verbose=0)
    return (time.perf_counter() - t0) * len(x) / n
