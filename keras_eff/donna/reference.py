"""Whole networks of a search space as plain Keras models, and the reference model (the space's largest).

Layer names: ``stem_conv``/``stem_bn``/``stem_act``, the blocks ``b{i}_...`` (ending in ``b{i}_out``), and
``head_conv``/``head_bn``/``head_act``/``gap``/``logits``. Stem and head are the same in every architecture, so an
architecture built from a block library reuses the reference model's stem and head.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import layers

from ..models import compile_classifier
from .backbone import build_part, reference_parts
from .blocks import apply_block
from .space import Architecture, SearchSpace

STEM_HEAD_LAYERS = ("stem_conv", "stem_bn", "head_conv", "head_bn", "logits")


def block_prefix(i: int) -> str:
    return f"b{i}"


def build_model(space: SearchSpace, arch: Architecture | None = None, name: str | None = None) -> keras.Model:
    """An architecture of a space as a plain, freshly initialized Keras model that outputs logits.

    Standard Keras layers only (int8 TFLite exports every architecture). Layers are named ``stem_conv``,
    ``stem_bn``, ``stem_act``, ``b{i}_...`` (block ``i``, ending in ``b{i}_out``), ``head_conv``, ``head_bn``,
    ``head_act``, ``gap`` and ``logits``; a space read from a Keras reference has the reference's stem and head as
    two nested models ``stem`` and ``head`` instead.

    Args:
        space: The `SearchSpace`.
        arch: An architecture of the space; None: the space's reference architecture.
        name: The model's name; default ``"<space name>_arch"``.

    Returns:
        A new functional `keras.Model` (not compiled).

    Raises:
        ValueError: If ``arch`` does not belong to the space.

    Example:
        ```python
        space = tiny_space()
        model = build_model(space, space.sample(1, seed=3)[0])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        ```
    """
    arch = space.reference() if arch is None else arch
    space.check(arch)
    m = space.bn_momentum
    if space.backbone is not None:  # the reference's own stem and head, as nested models "stem" and "head"
        stem, head = build_part(space.backbone["stem"], "stem"), build_part(space.backbone["head"], "head")
        inputs = keras.Input(space.input_shape, name="image")
        x = stem(inputs)
        for i, (block, choice) in enumerate(zip(space.blocks, arch.choices)):
            x = apply_block(x, choice, block.out_channels, block.stride, block_prefix(i), m, block.group_width)
        return keras.Model(inputs, head(x), name=name or f"{space.name}_arch")
    inputs = keras.Input(space.input_shape, name="image")
    x = layers.Conv2D(
        space.stem_channels, 3, strides=space.stem_stride, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = layers.BatchNormalization(momentum=m, name="stem_bn")(x)
    x = layers.ReLU(name="stem_act")(x)
    for i, (block, choice) in enumerate(zip(space.blocks, arch.choices)):
        x = apply_block(x, choice, block.out_channels, block.stride, block_prefix(i), m, block.group_width)
    x = layers.Conv2D(space.head_channels, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(momentum=m, name="head_bn")(x)
    x = layers.ReLU(name="head_act")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(space.num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"{space.name}_arch")


def build_job_model(job: dict) -> keras.Model:
    """The model a training job (``distill_job``, ``finetune_job``) starts from: ``job["arch"]`` of
    ``job["space"]`` (a config), built after seeding with ``job["seed"]``, with ``job["weights"]`` when given."""
    keras.utils.set_random_seed(int(job["seed"]))
    model = build_model(SearchSpace.from_config(job["space"]), Architecture.parse(job["arch"]))
    if job.get("weights") is not None:
        model.set_weights(job["weights"])
    return model


def build_reference(space: SearchSpace) -> keras.Model:
    """The reference model, untrained: the space's reference architecture (the largest, unless the blocks name one).

    Args:
        space: The `SearchSpace`, with the built-in stem and head.

    Returns:
        A new functional `keras.Model` named ``"<space name>_reference"`` that outputs logits (not compiled).

    Raises:
        ValueError: If the space was read from a Keras reference model (that model is its reference).

    Example:
        ```python
        reference = build_reference(tiny_space())
        ```
    """
    if space.backbone is not None:
        raise ValueError(
            f"the space {space.name!r} was read from a Keras reference model: that model is its "
            f"reference (it cannot be rebuilt from the space); pass it as it is"
        )
    return build_model(space, space.reference(), name=f"{space.name}_reference")


def compile_model(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Adam, cross-entropy on logits and accuracy: `keras_eff.models.compile_classifier`."""
    return compile_classifier(model, learning_rate)


def check_data(x, y, space: SearchSpace, what: str = "training data") -> None:
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(space.input_shape):
        raise ValueError(
            f"{what}: images have shape {x.shape[1:]}, the space {space.name!r} takes {tuple(space.input_shape)}"
        )
    if len(x) == 0:
        raise ValueError(f"{what}: no images")
    if y is not None and len(y) != len(x):
        raise ValueError(f"{what}: {len(x)} images but {len(y)} labels")
    if y is not None and len(y):
        y = np.asarray(y)
        whole = np.issubdtype(y.dtype, np.integer) or (
            np.issubdtype(y.dtype, np.floating) and y.ndim == 1 and np.all(np.mod(y, 1) == 0)
        )
        if y.ndim != 1 or not whole:
            raise ValueError(
                f"{what}: labels must be integer class indices of shape (n,), got dtype {y.dtype} and shape {y.shape}"
            )
        if y.min() < 0 or y.max() >= space.num_classes:
            raise ValueError(
                f"{what}: labels range over {int(y.min())}..{int(y.max())}, but the model has "
                f"{space.num_classes} classes (0..{space.num_classes - 1})"
            )


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)


def train_reference(
    space: SearchSpace,
    x_train,
    y_train,
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int = 1,
):
    """DONNA step A: builds and trains the reference model of a space.

    Adam with sparse categorical cross-entropy on logits; Keras's global random seed is set to ``seed`` first.

    Args:
        space: The `SearchSpace`, with the built-in stem and head.
        x_train: Training images ``(n, *space.input_shape)``.
        y_train: Their integer labels ``(n,)``.
        epochs: Training epochs.
        batch_size: Images per step.
        learning_rate: Adam's learning rate.
        seed: Seed of the initialization and the shuffling.
        verbose: Keras's ``fit`` verbosity.

    Returns:
        ``(model, epoch_seconds)``: the trained, compiled model (accuracy as its metric), and the seconds per epoch
        that DONNA counts costs in: the median of the epochs after the first, so that the first epoch's one-off
        graph tracing does not inflate the unit; with a single epoch, that epoch's time, tracing included.

    Raises:
        ValueError: If the data do not fit the space (image shape, labels out of range) or the space was read from
            a Keras reference model.

    Example:
        ```python
        reference, epoch_s = train_reference(tiny_space(), x_train, y_train, epochs=3)
        ```
    """
    check_data(x_train, y_train, space)
    keras.utils.set_random_seed(seed)
    model = compile_model(build_reference(space), learning_rate)
    timer = _EpochTimer()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=[timer])
    later = timer.seconds[1:] or timer.seconds
    return model, float(np.median(later))


def boundary_layers(space: SearchSpace) -> list:
    """The layers whose outputs are the block boundaries: stem output, then each block's output."""
    if space.backbone is not None:
        return list(space.backbone["boundaries"])
    return ["stem_act"] + [f"{block_prefix(i)}_out" for i in range(len(space.blocks))]


def block_features(model: keras.Model, space: SearchSpace, x, batch_size: int = 512) -> list:
    """The reference model's tensors at the block boundaries for images ``x``: ``len(blocks) + 1`` arrays, where
    block ``i`` maps entry ``i`` to entry ``i + 1``."""
    try:
        outputs = [model.get_layer(name).output for name in boundary_layers(space)]
    except ValueError as err:
        raise ValueError(f"model {model.name!r} is not built from the space {space.name!r}: {err}") from None
    probe = keras.Model(model.inputs, outputs)
    return [np.asarray(a, dtype=np.float32) for a in probe.predict(x, batch_size=batch_size, verbose=0)]


def stem_head_weights(model: keras.Model, space: SearchSpace | None = None) -> dict:
    """The weights of the stem and head layers (shared by every architecture), ``{layer name: [arrays]}``; for a
    space read from a Keras reference, ``{"stem": [...], "head": [...]}`` (its nested stem and head models)."""
    if space is not None and space.backbone is not None:
        return reference_parts(model, space.backbone)
    return {name: model.get_layer(name).get_weights() for name in STEM_HEAD_LAYERS}
