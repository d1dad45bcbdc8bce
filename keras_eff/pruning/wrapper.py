"""PruneWrapper: a layer whose weights are multiplied by masks in the forward pass.

The masks are non-trainable variables of the wrapper, saved with it; they change only when ``UpdatePruning``
(``callbacks.py``) asks, at the schedule's update steps. The forward pass reads the masked weights through a
``keras.StatelessScope``, so masked weights get zero gradient; any drift an optimizer gives them (momentum) is
wiped at the next update, before the new mask is chosen, and ``strip_layer`` writes the masked weights out.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from ..graph import call_with_values, clone_layer
from ..layers import channel_shape, facts_for, kernel_layout
from . import masks as masks_lib
from .schedules import as_schedule
from .structured import format_structure, parse_structure, unprunable_reason, weight_names

_MISSING_CALLBACK = (
    "a pruned model is being trained without the keras_eff.callbacks.UpdatePruning() callback; "
    "pass callbacks=[keras_eff.callbacks.UpdatePruning()] to fit, or the masks never follow the "
    "schedule"
)


# Masks, step counter and the armed flag are set only between steps, by UpdatePruning on the host (cross-replica
# context: every replica's copy is written). ONLY_FIRST_REPLICA makes any write from a replica function keep one
# value on every replica too, instead of letting the copies drift apart (docs/distributed.md).
_HOST_SET = "only_first_replica"


def _weights_by_name(layer) -> dict:
    return {w.path.split("/")[-1]: w for w in layer.weights}


def _name(w) -> str:
    return w.path.split("/")[-1]


def follower_weight_names(layer) -> tuple:
    """The weights masked with a pruned channel in a layer that only carries it (registry ``channels="follow"``):
    its kernels and bias (depthwise), or γ and β (a normalization without kernels)."""
    facts = facts_for(layer)
    if facts.channels != "follow":
        return ()
    return tuple(facts.kernels) + ("bias",) if facts.kernels else ("gamma", "beta")


@keras.saving.register_keras_serializable(package="keras_eff")
class PruneWrapper(layers.Wrapper):
    """A Keras layer that multiplies the wrapped layer's kernels by masks, pruned by ``schedule``.

    The masks are non-trainable variables saved with the wrapper; they change only when the
    ``keras_eff.callbacks.UpdatePruning`` callback asks, at the schedule's update steps. Masked weights get zero
    gradient. Training without that callback fails at the first step, saying so. ``keras_eff.strip`` replaces the
    wrapper by a plain copy of the layer holding the masked weights. Made by ``prune_model`` for each pruned layer,
    or by ``keras_eff.prune`` for one layer of any model. Keras-serializable.

    Args:
        layer: The Keras layer to prune: a prunable layer (Conv, DepthwiseConv, SeparableConv, Conv*Transpose, Dense,
            Embedding, or a custom layer declaring prunable kernels); for a follower, a BatchNormalization or a
            depthwise convolution.
        schedule: A `PruningSchedule` (`PolynomialDecay`, `ConstantSparsity`), a sparsity in [0, 1) (constant from
            step 0) or a schedule's saved config; None only for a follower.
        structure: None (unstructured), ``"N:M"`` such as ``"2:4"`` (keep N of every M input channels' weights), or
            ``"channels"`` (whole output channels).
        group: The name of the channel group a channel-pruned layer belongs to (layers joined by a residual Add
            share one); default the layer's own name. A wrapper with ``schedule=None`` and ``structure="channels"``
            is a *follower* that only receives its group's channel mask.
        **kwargs: Passed to ``keras.layers.Wrapper`` (``name``, default ``"prune_<layer name>"``).

    Attributes:
        masks: The mask variables: one per pruned kernel, or one channel mask with ``structure="channels"``.
        pruning_step: The optimizer steps seen by ``UpdatePruning`` (saved, so a later ``fit`` resumes the schedule).

    Raises:
        ValueError: If ``layer`` cannot carry a mask of this structure (not prunable; N:M on a layer without input
            channels, a grouped convolution or input channels not a multiple of M), ``schedule`` is None for a layer
            that is not a follower, a follower is not a BatchNormalization or depthwise layer, or ``structure`` is
            unknown.
        TypeError: If ``schedule`` is of another type.

    Example:
        ```python
        dense = keras_eff.pruning.PruneWrapper(keras.layers.Dense(64), keras_eff.PolynomialDecay(0.0, 0.8, 0, 1000))
        ```
    """

    def __init__(self, layer, schedule=None, structure=None, group=None, **kwargs):
        kwargs.setdefault("name", f"prune_{layer.name}")
        super().__init__(layer, **kwargs)
        self.structure = parse_structure(structure)
        self.schedule = None if schedule is None else as_schedule(schedule)
        self.group = group
        if self.is_follower:
            if not follower_weight_names(layer):
                raise ValueError(
                    f"layer {layer.name!r} ({type(layer).__name__}) cannot follow a pruned channel; "
                    f"followers are BatchNormalization and depthwise convolutions"
                )
        else:
            if self.schedule is None:
                raise ValueError(
                    f"pruning layer {layer.name!r} needs a schedule, e.g. "
                    f"keras_eff.pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)"
                )
            reason = unprunable_reason(layer, self.structure)
            if reason:
                raise ValueError(reason)
        if self.structure == "channels" and group is None:
            self.group = layer.name

    @property
    def is_follower(self) -> bool:
        """Whether this wrapper only follows its group's channel mask (no schedule, ``structure="channels"``)."""
        return self.schedule is None and self.structure == "channels"

    # ---- variables --------------------------------------------------------------------------------------------
    def build(self, input_shape=None):
        super().build(input_shape)
        reason = None if self.is_follower else unprunable_reason(self.layer, self.structure)
        if reason:
            raise ValueError(reason)
        weights = _weights_by_name(self.layer)
        self.masks = []
        if self.structure == "channels":
            names = follower_weight_names(self.layer) if self.is_follower else ("kernel", "bias")
            self._masked = [weights[n] for n in names if n in weights]
            kernel = self._masked[0]
            if len(kernel.shape) == 1:  # γ of a normalization
                channels = kernel.shape[0]
            elif kernel_layout(self.layer, _name(kernel)) == "depthwise":
                if getattr(self.layer, "depth_multiplier", 1) != 1:
                    raise ValueError(
                        f"depthwise layer {self.layer.name!r} has depth_multiplier "
                        f"{self.layer.depth_multiplier}; channel pruning follows only multiplier 1"
                    )
                channels = kernel.shape[-2]
            else:
                channels = kernel.shape[-1]
            self.masks.append(
                self.add_weight(
                    name="channel_mask", shape=(channels,), initializer="ones", trainable=False, aggregation=_HOST_SET
                )
            )
        else:
            self._masked = [weights[n] for n in weight_names(self.layer)]
            for w in self._masked:
                self.masks.append(
                    self.add_weight(
                        name=f"{w.path.split('/')[-1]}_mask",
                        shape=w.shape,
                        initializer="ones",
                        trainable=False,
                        aggregation=_HOST_SET,
                    )
                )
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), dtype="int64", initializer="zeros", trainable=False, aggregation=_HOST_SET
        )
        self.armed = self.add_weight(
            name="armed", shape=(), dtype="int32", initializer="zeros", trainable=False, aggregation=_HOST_SET
        )
        self.built = True

    def load_own_variables(self, store):
        """Loads the wrapper's variables (Keras's saving API) and disarms it until ``UpdatePruning`` drives it again.

        Args:
            store: The variable store Keras hands in.

        Returns:
            None.
        """
        super().load_own_variables(store)
        self.armed.assign(0)  # a model saved during fit must not look as if a callback drove it after loading

    def _broadcast(self, w, mask):
        if self.structure != "channels":
            return mask
        if len(w.shape) == 1:
            return mask
        if kernel_layout(self.layer, _name(w)) == "depthwise":  # (..., c, 1): the mask is on c
            return ops.reshape(mask, (1,) * (len(w.shape) - 2) + (w.shape[-2], 1))
        return ops.reshape(mask, channel_shape(self.layer, _name(w), w.shape))

    def masked_values(self):
        """Computes the masked value of every weight this wrapper masks.

        Returns:
            A list of ``(variable, masked tensor)`` pairs.
        """
        if self.structure == "channels":
            mask = self.masks[0]
            return [(w, w * ops.cast(self._broadcast(w, mask), w.dtype)) for w in self._masked]
        return [(w, w * ops.cast(m, w.dtype)) for w, m in zip(self._masked, self.masks)]

    # ---- forward ------------------------------------------------------------------------------------------------
    def call(self, inputs, training=None, **kwargs):
        if training is True and not self.is_follower:
            tf.debugging.assert_equal(self.armed, 1, message=_MISSING_CALLBACK)
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        return call_with_values(self, self.layer, inputs, self.masked_values(), **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ---- mask updates (host side, called by UpdatePruning) ---------------------------------------------------
    def _wipe_masked(self):
        """Writes the masked values into the variables: optimizer drift on pruned weights is dropped."""
        for w, value in self.masked_values():
            w.assign(value)

    def update_masks(self, sparsity: float):
        """Recomputes unstructured or N:M masks from the current (masked) weights; ``UpdatePruning`` calls it.

        Optimizer drift on pruned weights is wiped first (the masked values are written into the variables).
        Unstructured: zeros at the ``round(sparsity·n)`` smallest magnitudes. N:M: the N largest of every M input
        channels, whatever ``sparsity`` is, once it is above 0.

        Args:
            sparsity: The target sparsity, in [0, 1).

        Returns:
            None. The masks (and masked weights) are assigned.

        Raises:
            ValueError: For a channel-pruned wrapper (its mask is set per group with ``set_channel_mask``).
        """
        if self.structure == "channels":
            raise ValueError("channel masks are set per group: use set_channel_mask")
        self._wipe_masked()
        for w, m in zip(self._masked, self.masks):
            values = np.asarray(w)
            if self.structure is None:
                m.assign(masks_lib.magnitude_mask(values, sparsity))
            elif sparsity > 0:
                m.assign(masks_lib.nm_mask(values, self.structure[1], self.structure[2]))

    def channel_scores(self) -> np.ndarray | None:
        """Scores each output channel's importance, for channel pruning.

        Returns:
            A numpy vector: the L2 norm of each filter of a producer, |γ|/σ of each channel of a BatchNorm follower;
            None for a follower without statistics (a depthwise layer).
        """
        values = {w.path.split("/")[-1]: np.asarray(v) for w, v in self.masked_values()}
        if self.is_follower:  # a normalization scores its channels; a depthwise conv does not
            if "gamma" not in values or not hasattr(self.layer, "moving_variance"):
                return None
            var = np.asarray(self.layer.moving_variance)
            return np.abs(values["gamma"]) / np.sqrt(var + self.layer.epsilon)
        return masks_lib.channel_scores(values["kernel"])

    def set_channel_mask(self, mask):
        """Sets the channel mask of a channel-pruned wrapper (``UpdatePruning`` sets one per group).

        Optimizer drift on pruned weights is wiped first.

        Args:
            mask: 1.0 for each kept output channel, 0.0 for each pruned one.

        Returns:
            None.
        """
        self._wipe_masked()
        self.masks[0].assign(np.asarray(mask, np.float32))

    def set_step(self, step: int):
        """Records the optimizer steps taken (``UpdatePruning`` does at each epoch end).

        Args:
            step: The number of optimizer steps taken.

        Returns:
            None.
        """
        self.pruning_step.assign(int(step))

    def arm(self, on: bool):
        """Marks the wrapper as driven by ``UpdatePruning``; training an unarmed wrapper fails.

        Args:
            on: True while ``UpdatePruning`` drives training, False after it.

        Returns:
            None.
        """
        self.armed.assign(1 if on else 0)

    # ---- strip and report ---------------------------------------------------------------------------------------
    def strip_layer(self):
        """Makes the plain layer ``keras_eff.strip`` puts in the wrapper's place.

        Returns:
            A built copy of the wrapped layer (same name) holding the masked (final) weights.
        """
        new = clone_layer(self.layer, name=self.layer.name)
        new.build_from_config(self.layer.get_build_config())
        masked = {id(v): np.asarray(value) for v, value in self.masked_values()}
        new.set_weights([masked.get(id(v), np.asarray(v)) for v in self.layer.weights])
        return new

    def kept_channels(self):
        """Says which output channels a channel-pruned producer keeps (the hook of ``remove_pruned_channels``).

        Returns:
            A numpy array of the kept channels' indices; None for unstructured, N:M and follower wrappers.
        """
        if self.structure != "channels" or self.is_follower:
            return None
        return np.flatnonzero(np.asarray(self.masks[0]) != 0)

    def pruned_weights(self) -> dict:
        """Reads the masked weights.

        Returns:
            ``{weight name: masked numpy value}`` for every weight this wrapper masks.
        """
        return {w.path.split("/")[-1]: np.asarray(v) for w, v in self.masked_values()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "schedule": None if self.schedule is None else keras.saving.serialize_keras_object(self.schedule),
                "structure": format_structure(self.structure),
                "group": self.group,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        schedule = config.pop("schedule", None)
        if schedule is not None:
            schedule = keras.saving.deserialize_keras_object(schedule, custom_objects=custom_objects)
        return cls(layer, schedule=schedule, **config)


def prune(layer, schedule=0.5, structure=None):
    """Wraps one layer for magnitude pruning, while building any model (subclassed ones included).

    The layer itself is wrapped, not copied. Train with ``keras_eff.callbacks.UpdatePruning()`` and remove the
    wrapper with ``keras_eff.strip``. For a whole Functional or Sequential model, ``prune_model`` also shares a
    sparsity target among layers and prunes channel groups together.

    Args:
        layer: A prunable Keras layer (Conv, DepthwiseConv, SeparableConv, Conv*Transpose, Dense, Embedding, or a
            custom layer declaring prunable kernels).
        schedule: A `PolynomialDecay`/`ConstantSparsity`, or a sparsity in [0, 1) (constant from step 0).
        structure: None (unstructured), ``"N:M"`` such as ``"2:4"``, or ``"channels"`` (the layer's own output
            channels; a following BatchNorm is not masked with them).

    Returns:
        A `PruneWrapper` around ``layer``.

    Raises:
        TypeError: If ``layer`` is not a Keras layer, or ``schedule`` is not a schedule or a number.
        ValueError: If ``layer`` is already wrapped for pruning or cannot carry a mask of this structure, or the
            sparsity or structure is invalid.

    Example:
        ```python
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras_eff.prune(keras.layers.Conv2D(32, 3), keras_eff.PolynomialDecay(0.0, 0.7, 0, 2000))
        ```
    """
    if isinstance(layer, PruneWrapper):
        raise ValueError(f"layer {layer.layer.name!r} is already wrapped for pruning")
    if not isinstance(layer, layers.Layer):
        raise TypeError(f"prune expects a Keras layer, got {type(layer).__name__}")
    return PruneWrapper(layer, schedule=as_schedule(schedule), structure=structure)


__all__ = ["PruneWrapper", "follower_weight_names", "prune"]
