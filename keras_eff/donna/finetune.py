"""Short finetuning of architectures initialized from the block library, and their measured accuracy.

Each architecture is an independent job (:func:`finetune_job`) so an executor can spread them out.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from .checks import checked
from .executors import InProcessExecutor
from .reference import build_job_model, check_data


@dataclass
class FinetuneConfig:
    """Options of the short finetuning that measures the predictor's training architectures (stage B).

    ``steps`` batches of ``batch_size`` images with Adam and a cosine decay from ``learning_rate`` to zero.

    Attributes:
        steps: Training steps per architecture.
        batch_size: Images per step.
        learning_rate: Adam's initial learning rate.

    Raises:
        ValueError: If ``steps`` or ``batch_size`` is not a positive integer or ``learning_rate`` is not positive.
    """

    steps: int = 300
    batch_size: int = 128
    learning_rate: float = 1e-3

    def __post_init__(self):
        check_training_options(self, ("steps", "batch_size"))

    def get_config(self) -> dict:
        """The options as a plain mapping.

        Returns:
            A dict of the fields, which :meth:`from_config` reads back.
        """
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict, where: str = "finetune") -> FinetuneConfig:
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`).

        Args:
            config: A mapping of field names to values (a `FinetuneConfig` is returned as it is).
            where: The dotted name of the section, for error messages.

        Returns:
            A new `FinetuneConfig`.

        Raises:
            ValueError: If a key is unknown or a value has the wrong type or range (the message names it).
        """
        return checked(cls, config, where)


def check_training_options(config, counts) -> None:
    """Refuses a training config whose ``counts`` (field names) are not positive integers or whose
    ``learning_rate`` is not positive, naming the class and the field."""
    name = type(config).__name__
    for field in counts:
        v = getattr(config, field)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}.{field}: {v!r} must be a positive integer")
    if not config.learning_rate > 0:
        raise ValueError(f"{name}.learning_rate: {config.learning_rate} must be positive")


def finetune_job(job: dict) -> dict:
    """Finetunes one architecture and measures it. ``job``: ``space`` (config), ``arch`` (its string), ``weights``
    (the initial weights, ``model.get_weights()`` order), ``x``/``y`` (training), ``x_eval``/``y_eval``, ``config``
    (FinetuneConfig config) and ``seed``. Returns ``{"arch", "accuracy", "seconds"}``."""
    t0 = time.perf_counter()
    cfg = FinetuneConfig.from_config(job["config"])
    if job.get("weights") is None:
        raise ValueError("finetune_job needs the architecture's initial weights in job['weights']")
    model = build_job_model(job)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = job["x"], job["y"]
    rng = np.random.default_rng(int(job["seed"]))
    n_needed = cfg.steps * cfg.batch_size
    order = np.concatenate([rng.permutation(len(x)) for _ in range(-(-n_needed // len(x)))])[:n_needed]
    xt, yt = tf.constant(x), tf.constant(y)
    data = (
        tf.data.Dataset.from_tensor_slices(order)
        .batch(cfg.batch_size)
        .map(lambda i: (tf.gather(xt, i), tf.gather(yt, i)))
    )
    model.fit(data, epochs=1, verbose=0)
    _, acc = model.evaluate(job["x_eval"], job["y_eval"], batch_size=512, verbose=0)
    return {"arch": job["arch"], "accuracy": float(acc), "seconds": time.perf_counter() - t0, "seed": int(job["seed"])}


def measure_architectures(
    library,
    archs,
    x_train,
    y_train,
    x_eval,
    y_eval,
    config: FinetuneConfig | None = None,
    seed: int = 0,
    executor=None,
    desc: str = "finetune",
) -> list:
    """Finetunes each architecture briefly from the block library's weights and measures its accuracy.

    These measured accuracies are what the accuracy predictor is fitted on. Each architecture is one job on
    ``executor``; the library is not changed.

    Args:
        library: The `BlockLibrary` of the space.
        archs: Architectures of the space.
        x_train: Training images ``(n, *space.input_shape)``.
        y_train: Their integer labels ``(n,)``.
        x_eval: Evaluation images.
        y_eval: Their integer labels.
        config: Finetuning options; None: ``FinetuneConfig()``.
        seed: Seed of each job's initialization and batch order.
        executor: Where the jobs run (an `Executor`); None: in this process.
        desc: Progress-bar label.

    Returns:
        One dict per architecture, in order: ``arch`` (its string), ``accuracy`` (top-1 on ``(x_eval, y_eval)``),
        ``seconds`` and ``seed``.

    Raises:
        ValueError: If the data do not fit the space (image shape, labels) or an architecture is not of the space.

    Example:
        ```python
        archs = library.space.sample(8, seed=1)
        results = measure_architectures(library, archs, x_train, y_train, x_test, y_test, FinetuneConfig(steps=50))
        predictor = AccuracyPredictor.from_library(library).fit(archs, [r["accuracy"] for r in results])
        ```
    """
    config = config or FinetuneConfig()
    executor = executor or InProcessExecutor()
    check_data(x_train, y_train, library.space, "finetuning data")
    check_data(x_eval, y_eval, library.space, "evaluation data")
    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.int32)
    jobs = [
        {
            "space": library.space.get_config(),
            "arch": str(a),
            "weights": library.build(a).get_weights(),
            "x": x_train,
            "y": y_train,
            "x_eval": x_eval,
            "y_eval": y_eval,
            "config": config.get_config(),
            "seed": seed,
        }
        for a in archs
    ]
    return executor.map(finetune_job, jobs, desc=desc)
