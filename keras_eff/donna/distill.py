"""DONNA step D: the chosen architectures, initialized from the block library, trained with soft distillation.

The loss is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels, student)``
(Hinton et al.): the reference model's logits, softened by the temperature ``T``, plus cross-entropy on the labels.
``init="scratch"`` trains the same architecture from a fresh initialization with the same loss and epochs, the
baseline that shows what the library's weights are worth. Each architecture is an independent job on an executor.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import keras
import numpy as np

from ..fitting import build_training_state
from .checks import checked
from .executors import InProcessExecutor
from .finetune import check_training_options
from .losses import DistillationLoss, check_distillation_options, pack_targets, teacher_logits_for
from .reference import build_job_model, build_model, check_data, compile_model
from .space import Architecture, SearchSpace

INITS = ("library", "scratch")


@dataclass
class DistillConfig:
    """Options of the soft-distillation training of stage D (:func:`distill_architectures`).

    Adam with a cosine decay from ``learning_rate`` to zero over all the steps, on :class:`DistillationLoss`.

    Attributes:
        epochs: Epochs over the training images.
        batch_size: Images per step.
        learning_rate: Adam's initial learning rate.
        temperature: The distillation temperature, as in :class:`DistillationLoss`.
        alpha: The weight of the distillation term, as in :class:`DistillationLoss`.

    Raises:
        ValueError: If ``epochs`` or ``batch_size`` is not a positive integer, ``learning_rate`` or
            ``temperature`` is not positive, or ``alpha`` is outside [0, 1].
    """

    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.5

    def __post_init__(self):
        check_training_options(self, ("epochs", "batch_size"))
        check_distillation_options(type(self).__name__, self.temperature, self.alpha)

    def get_config(self) -> dict:
        """The options as a plain mapping.

        Returns:
            A dict of the fields, which :meth:`from_config` reads back.
        """
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict, where: str = "distill") -> DistillConfig:
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`).

        Args:
            config: A mapping of field names to values (a `DistillConfig` is returned as it is).
            where: The dotted name of the section, for error messages.

        Returns:
            A new `DistillConfig`.

        Raises:
            ValueError: If a key is unknown or a value has the wrong type or range (the message names it).
        """
        return checked(cls, config, where)


def distill_job(job: dict) -> dict:
    """Trains one architecture with soft distillation and measures its accuracy.

    A module-level function of plain data in and out, so that any executor can ship it to another process.
    :func:`distill_architectures` makes one job per architecture.

    Args:
        job: A mapping: ``space`` (a `SearchSpace` config), ``arch`` (the architecture's string), ``weights``
            (initial weights in ``model.get_weights()`` order; None for a fresh initialization), ``x``/``y``/
            ``teacher`` (training images, labels and the reference's logits on them), ``x_eval``/``y_eval``,
            ``config`` (a `DistillConfig` config), ``seed`` and optionally ``init`` (a label copied to the result;
            default ``"library"``).

    Returns:
        A dict: ``arch``, ``init``, ``accuracy`` (float top-1 on ``(x_eval, y_eval)``), ``seconds``, ``seed`` and
        ``weights`` (the trained weights, for :func:`keras_eff.donna.distill.model_from_result`).

    Raises:
        ValueError: If the config or the space is invalid.
    """
    t0 = time.perf_counter()
    cfg = DistillConfig.from_config(job["config"])
    model = build_job_model(job)
    steps = cfg.epochs * -(-len(job["x"]) // cfg.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=DistillationLoss(cfg.temperature, cfg.alpha))
    targets = pack_targets(job["y"], job["teacher"])
    build_training_state(model, job["x"], targets)
    model.fit(
        job["x"],
        targets,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        shuffle=True,
        verbose=0,
    )
    compile_model(model)  # plain cross-entropy and accuracy: what is evaluated, and what a saved model carries
    _, acc = model.evaluate(job["x_eval"], job["y_eval"], batch_size=512, verbose=0)
    return {
        "arch": job["arch"],
        "init": job.get("init", "library"),
        "accuracy": float(acc),
        "seconds": time.perf_counter() - t0,
        "seed": int(job["seed"]),
        "weights": model.get_weights(),
    }


def distill_architectures(
    library,
    reference,
    archs,
    x_train,
    y_train,
    x_eval,
    y_eval,
    config: DistillConfig | None = None,
    init: str = "library",
    seed: int = 0,
    executor=None,
    teacher_logits=None,
    desc: str = "distill",
) -> list:
    """DONNA step D: trains each architecture with soft distillation from the reference model.

    Each architecture starts from the block library's weights (``init="library"``) or from a fresh initialization
    (``init="scratch"``, the baseline that shows what the library's weights are worth), and trains on
    :class:`DistillationLoss` against the reference's logits. Each architecture is one :func:`distill_job` on
    ``executor``. Neither ``library`` nor ``reference`` is changed.

    Args:
        library: The `BlockLibrary` of the space.
        reference: The trained reference Keras model (logits) of the space: the teacher.
        archs: Architectures of the space (`Architecture` or their strings).
        x_train: Training images ``(n, *space.input_shape)``.
        y_train: Their integer labels ``(n,)``.
        x_eval: Evaluation images.
        y_eval: Their integer labels.
        config: Training options; None: ``DistillConfig()``.
        init: ``"library"`` or ``"scratch"``.
        seed: Seed of each job's initialization and shuffling.
        executor: Where the jobs run (an `Executor`); None: in this process.
        teacher_logits: The reference's logits on ``x_train``, shape ``(n, num_classes)``, to skip computing them.
        desc: Progress-bar label.

    Returns:
        One :func:`distill_job` result per architecture, in order (``arch``, ``init``, ``accuracy``, ``seconds``,
        ``seed``, ``weights``); :func:`keras_eff.donna.distill.model_from_result` builds the trained model.

    Raises:
        ValueError: If ``init`` is unknown, the data do not fit the space (shape, labels), ``teacher_logits`` has
            the wrong shape, or an architecture is not of the space.

    Example:
        ```python
        from keras_eff.donna.distill import model_from_result

        results = distill_architectures(library, reference, result.front_archs()[:2], x_train, y_train, x_test,
                                        y_test, DistillConfig(epochs=2))
        model = model_from_result(library.space, results[0])
        ```
    """
    if init not in INITS:
        raise ValueError(f"init: {init!r} is unknown; choose from {', '.join(INITS)}")
    config = config or DistillConfig()
    executor = executor or InProcessExecutor()
    space = library.space
    check_data(x_train, y_train, space, "distillation data")
    check_data(x_eval, y_eval, space, "evaluation data")
    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.int32)
    teacher_logits = teacher_logits_for(x_train, space.num_classes, reference, teacher_logits)
    archs = [Architecture.parse(a) if isinstance(a, str) else a for a in archs]
    jobs = [
        {
            "space": space.get_config(),
            "arch": str(a),
            "init": init,
            "config": config.get_config(),
            "weights": library.build(a).get_weights() if init == "library" else None,
            "x": x_train,
            "y": y_train,
            "teacher": teacher_logits,
            "x_eval": x_eval,
            "y_eval": y_eval,
            "seed": seed,
        }
        for a in archs
    ]
    return executor.map(distill_job, jobs, desc=f"{desc} ({init})")


def model_from_result(space: SearchSpace, result: dict):
    """The trained Keras model of a :func:`distill_job` result (compiled with cross-entropy and accuracy)."""
    model = build_model(space, Architecture.parse(result["arch"]))
    model.set_weights(result["weights"])
    return compile_model(model)
