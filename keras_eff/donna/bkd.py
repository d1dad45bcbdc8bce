"""Blockwise knowledge distillation (BKD).

Each supernet block learns to reproduce the reference block's output from the reference block's input, with a
choice sampled at random at every step. The loss is the noise-to-signal ratio: the mean squared error divided by the
variance of the reference output, so that blocks of different scales are comparable. After training, every choice is
scored on held-out data: those scores are what the accuracy predictor reads.

Each block position is an independent job (:func:`train_block_job`), so an executor can run them in parallel.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm.auto import tqdm

from .checks import checked
from .space import BlockSpace
from .supernet import SupernetBlock


@dataclass
class BKDConfig:
    """Options of blockwise knowledge distillation (:func:`train_block_library`, :func:`train_block_job`).

    Each block trains ``steps`` steps of ``batch_size`` reference-block inputs, one random choice per step, with Adam
    and a cosine decay from ``learning_rate`` to zero over the steps.

    Attributes:
        steps: Training steps per block position.
        batch_size: Inputs per step.
        learning_rate: Adam's initial learning rate.
        calibration_samples: How many of the training inputs set each choice's batch-norm statistics before it is
            scored.
        seed: Seed of the initialization, the batches and the choices (block ``i`` uses ``seed + 1000 * i``).
        compile: Whether to run the steps as ``tf.function`` graphs, one traced per choice (slower to start,
            faster per step; docs/donna.md gives figures); None: compiled when there are at least 6 steps per
            choice.
        init_from_reference: Whether to start each supernet block from the reference block's weights (when the
            reference was built from the space; a reference read from a Keras model has other blocks and always
            starts fresh).

    Raises:
        ValueError: If ``steps``, ``batch_size`` or ``calibration_samples`` is not a positive integer, or
            ``learning_rate`` is not positive.
    """

    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 2e-3
    calibration_samples: int = 1000
    seed: int = 0
    compile: bool | None = None
    init_from_reference: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "calibration_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"BKDConfig.{name}: {v!r} must be a positive integer")
        if not self.learning_rate > 0:
            raise ValueError(f"BKDConfig.learning_rate: {self.learning_rate} must be positive")

    def get_config(self) -> dict:
        """The options as a plain mapping.

        Returns:
            A dict of the fields, which :meth:`from_config` reads back.
        """
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict, where: str = "bkd") -> BKDConfig:
        """From a mapping; every key and value checked by name (:func:`keras_eff.donna.checks.checked`).

        Args:
            config: A mapping of field names to values (a `BKDConfig` is returned as it is).
            where: The dotted name of the section, for error messages.

        Returns:
            A new `BKDConfig`.

        Raises:
            ValueError: If a key is unknown or a value has the wrong type or range (the message names it, e.g.
                ``bkd.steps``).
        """
        return checked(cls, config, where)


def nsr_loss(student, teacher):
    """The noise-to-signal ratio of a student block's output against the teacher's: BKD's loss.

    The mean squared error divided by the teacher output's variance around its per-channel mean (over batch,
    height and width), so that blocks of different scales give comparable losses.

    Args:
        student: The student's output tensor ``(batch, height, width, channels)``.
        teacher: The teacher's output tensor, the same shape.

    Returns:
        A scalar tensor: 0 for a perfect copy, about 1 for an output that predicts only the per-channel means.

    Example:
        ```python
        teacher = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype("float32")
        float(nsr_loss(teacher, teacher))                  # 0.0
        float(nsr_loss(np.zeros_like(teacher), teacher))   # about 1: zero is about the channel means here
        ```
    """
    mean = ops.mean(teacher, axis=[0, 1, 2], keepdims=True)
    signal = ops.mean(ops.square(teacher - mean))
    return ops.mean(ops.square(student - teacher)) / (signal + 1e-8)


def evaluate_choice(layer, choice, x_calib, x_val, y_val, batch_size: int = 500):
    """One choice's batch-norm statistics (from ``x_calib``) and its NSR loss on the held-out pair ``(x_val, y_val)``
    computed over the whole set (summed errors over summed signal)."""
    stats = layer.calibrate(x_calib, choice, batch_size=batch_size)
    stats_t = {k: (ops.convert_to_tensor(m), ops.convert_to_tensor(v)) for k, (m, v) in stats.items()}
    mean = y_val.mean(axis=(0, 1, 2), keepdims=True)
    err = sig = 0.0
    for start in range(0, len(x_val), batch_size):
        y, _ = layer.forward(ops.convert_to_tensor(x_val[start : start + batch_size]), choice, stats_t)
        t = y_val[start : start + batch_size]
        err += float(np.sum(np.square(ops.convert_to_numpy(y) - t), dtype=np.float64))
        sig += float(np.sum(np.square(t - mean), dtype=np.float64))
    return stats, err / max(sig, 1e-12)


def pack_stats(layer, per_choice: list) -> dict:
    """Per-choice batch-norm statistics as fixed-shape arrays: ``{bn name: (n_choices, 2, max width)}``, the first
    ``width`` channels used, the rest zero (choices that do not use a batch norm leave its row at zero)."""
    widths = layer.bn_max_widths()
    packed = {key: np.zeros((len(per_choice), 2, w), np.float32) for key, w in widths.items()}
    for c, stats in enumerate(per_choice):
        for key, (mean, var) in stats.items():
            packed[key][c, 0, : len(mean)] = mean
            packed[key][c, 1, : len(var)] = var
    return packed


def unpack_stats(layer, packed: dict, choice) -> dict:
    """The inverse of :func:`pack_stats` for one choice."""
    c = layer.choices.index(layer._as_choice(choice))
    return {key: (packed[key][c, 0, :w], packed[key][c, 1, :w]) for key, w in layer.bn_widths(choice).items()}


def train_block_job(job: dict) -> dict:
    """Distils one block position into a supernet block and scores every choice on held-out data.

    A module-level function of plain data in and out, so that any executor can ship it to another process.
    :func:`train_block_library` makes one job per block position.

    Args:
        job: A mapping: ``block`` (a `BlockSpace` config), ``in_channels``, ``index`` (the block position, for
            seeds and progress bars; default 0), ``x``/``y`` (the reference block's inputs and outputs on the
            training images), ``x_val``/``y_val`` (the same on held-out images), ``config`` (a `BKDConfig`
            config) and optionally ``init`` (the reference block's plain weights, ``{layer suffix: [arrays]}``,
            to start from).

    Returns:
        A dict: ``variables`` (the supernet block's weights), ``stats`` (every choice's batch-norm statistics,
        packed), ``losses`` (each choice's held-out NSR loss, in ``block.choices()`` order), ``history`` (the
        training loss per step), ``seconds`` and ``reference_loss`` (the reference choice's held-out loss).

    Raises:
        ValueError: If the inputs and outputs are empty or of different lengths, or the config or block is
            invalid.
    """
    t0 = time.perf_counter()
    cfg = BKDConfig.from_config(job["config"])
    block = BlockSpace.from_config(dict(job["block"]))
    index = job.get("index", 0)
    x, y, x_val, y_val = (np.asarray(job[k], np.float32) for k in ("x", "y", "x_val", "y_val"))
    if len(x) != len(y) or len(x_val) != len(y_val) or len(x) == 0 or len(x_val) == 0:
        raise ValueError(
            f"block {index}: inputs and outputs must be non-empty and of equal length "
            f"(got {len(x)}/{len(y)} training, {len(x_val)}/{len(y_val)} held-out)"
        )
    keras.utils.set_random_seed(cfg.seed + 1000 * index)
    layer = SupernetBlock(x.shape[-1], block, name=f"supernet_b{index}")
    if job.get("init") is not None and cfg.init_from_reference:
        layer.assign_from(block.reference_choice(), job["init"])
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps))
    optimizer.build(layer.trainable_variables)
    n_choices = len(layer.choices)
    use_graph = cfg.compile if cfg.compile is not None else cfg.steps >= 6 * n_choices

    def step(xb, tb, choice):
        variables = layer.variables_for(choice)
        with tf.GradientTape() as tape:
            out, _ = layer.forward(xb, choice)
            loss = nsr_loss(out, tb)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    graphs = {}
    rng = np.random.default_rng(cfg.seed + 1000 * index)
    history = []
    bar = tqdm(range(cfg.steps), desc=f"BKD block {index}", leave=False, mininterval=2.0)
    for _ in bar:
        idx = rng.integers(0, len(x), cfg.batch_size)
        choice = layer.choices[rng.integers(n_choices)]
        xb, tb = tf.constant(x[idx]), tf.constant(y[idx])
        if use_graph:
            if choice not in graphs:
                graphs[choice] = tf.function(lambda a, b, c=choice: step(a, b, c))
            loss = graphs[choice](xb, tb)
        else:
            loss = step(xb, tb, choice)
        history.append(float(loss))
        if len(history) % 50 == 0:
            bar.set_postfix(nsr=f"{np.mean(history[-50:]):.3f}")
    x_calib = x[: cfg.calibration_samples]
    stats, losses = [], np.zeros(n_choices, np.float64)
    for c, choice in enumerate(tqdm(layer.choices, desc=f"score block {index}", leave=False, mininterval=2.0)):
        s, losses[c] = evaluate_choice(layer, choice, x_calib, x_val, y_val)
        stats.append(s)
    return {
        "variables": layer.get_variables(),
        "stats": pack_stats(layer, stats),
        "losses": losses,
        "history": np.asarray(history, np.float32),
        "seconds": time.perf_counter() - t0,
        "reference_loss": float(losses[layer.choices.index(block.reference_choice())]),
    }
