"""Short finetuning of architectures initialized from the block library, and their measured accuracy.

The finetuning uses the same soft distillation from the reference's logits as stage D (:mod:`.distill`), so that
the accuracies the predictor learns from rank architectures the way the training users get ranks them. Each
architecture is an independent job (:func:`finetune_job`) so an executor can spread them out.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from ..fitting import build_training_state
from .checks import checked
from .executors import InProcessExecutor
from .losses import DistillationLoss, check_distillation_options, pack_targets, teacher_logits_for
from .reference import build_job_model, check_data, compile_model
from .space import Architecture


@dataclass
class FinetuneConfig:
    """Options of the short finetuning that measures the predictor's training architectures (stage B).

    ``steps`` batches of ``batch_size`` images with Adam and a cosine decay from ``learning_rate`` to zero, on the
    loss of stage D (:class:`~keras_eff.donna.DistillationLoss`: soft distillation from the reference's logits at
    ``temperature``, weight ``alpha``, plus cross-entropy) when the reference is given, else on cross-entropy.

    Attributes:
        steps: Training steps per architecture.
        batch_size: Images per step.
        learning_rate: Adam's initial learning rate.
        temperature: The distillation temperature (as `DistillConfig`'s).
        alpha: The weight of the distillation term, in [0, 1] (as `DistillConfig`'s; 0: cross-entropy only).

    Raises:
        ValueError: If ``steps`` or ``batch_size`` is not a positive integer, ``learning_rate`` or ``temperature``
            is not positive, or ``alpha`` is outside [0, 1].
    """

    steps: int = 300
    batch_size: int = 128
    learning_rate: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.5

    def __post_init__(self):
        check_training_options(self, ("steps", "batch_size"))
        check_distillation_options(type(self).__name__, self.temperature, self.alpha)

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
    (the initial weights, ``model.get_weights()`` order), ``x``/``y`` (training), optionally ``teacher`` (the
    reference's logits on ``x``: soft distillation; absent or None: cross-entropy), ``x_eval``/``y_eval``,
    ``config`` (FinetuneConfig config) and ``seed``. Returns ``{"arch", "accuracy", "seconds", "seed"}``."""
    t0 = time.perf_counter()
    cfg = FinetuneConfig.from_config(job["config"])
    if job.get("weights") is None:
        raise ValueError("finetune_job needs the architecture's initial weights in job['weights']")
    model = build_job_model(job)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps)
    x, y, teacher = job["x"], job["y"], job.get("teacher")
    if teacher is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss, y = DistillationLoss(cfg.temperature, cfg.alpha), pack_targets(y, teacher)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    build_training_state(model, x, y)
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
    compile_model(model)  # plain cross-entropy and accuracy: what is evaluated
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
    reference=None,
    teacher_logits=None,
) -> list:
    """Finetunes each architecture briefly from the block library's weights and measures its accuracy.

    These measured accuracies are what the accuracy predictor is fitted on. With ``reference`` (or its
    ``teacher_logits``), the loss is stage D's soft distillation from it (:class:`DistillationLoss`, at
    ``config.temperature`` and ``config.alpha``): the same training the chosen architectures get. Without, plain
    cross-entropy. Each architecture is one job on ``executor``; neither the library nor the reference is changed.

    Args:
        library: The `BlockLibrary` of the space.
        archs: Architectures of the space (`Architecture` or their strings).
        x_train: Training images ``(n, *space.input_shape)``.
        y_train: Their integer labels ``(n,)``.
        x_eval: Evaluation images.
        y_eval: Their integer labels.
        config: Finetuning options; None: ``FinetuneConfig()``.
        seed: Seed of each job's initialization and batch order.
        executor: Where the jobs run (an `Executor`); None: in this process.
        desc: Progress-bar label.
        reference: The trained reference Keras model (logits): the teacher. None: no distillation (unless
            ``teacher_logits``).
        teacher_logits: The reference's logits on ``x_train``, ``(n, num_classes)``, instead of ``reference``.

    Returns:
        One dict per architecture, in order: ``arch`` (its string), ``accuracy`` (top-1 on ``(x_eval, y_eval)``),
        ``seconds`` and ``seed``.

    Raises:
        ValueError: If the data do not fit the space (image shape, labels), ``teacher_logits`` has the wrong shape,
            or an architecture is not of the space.

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
    teacher_logits = teacher_logits_for(x_train, library.space.num_classes, reference, teacher_logits)
    archs = [Architecture.parse(a) if isinstance(a, str) else a for a in archs]
    jobs = [
        {
            "space": library.space.get_config(),
            "arch": str(a),
            "weights": library.build(a).get_weights(),
            "x": x_train,
            "y": y_train,
            "teacher": teacher_logits,
            "x_eval": x_eval,
            "y_eval": y_eval,
            "config": config.get_config(),
            "seed": seed,
        }
        for a in archs
    ]
    return executor.map(finetune_job, jobs, desc=desc)
