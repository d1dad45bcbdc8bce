"""Callbacks that drive pruning during ``fit`` and record what it did."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from ..distribute import check_same_scope
from . import masks as masks_lib
from .wrapper import PruneWrapper


def pruning_wrappers(model) -> list:
    """Every PruneWrapper inside ``model`` (nested models included), in layer order."""
    return [
        layer for layer in model._flatten_layers(include_self=False, recursive=True) if isinstance(layer, PruneWrapper)
    ]


def update_group(members, step, due=None):
    """Sets one channel mask on a group at ``step`` if its schedule has an update due at ``step`` (or at any step
    of ``due``): channels scored by the members' filter norms and BatchNorm |γ|/σ, each normalized to mean 1 and
    summed."""
    leader = next(w for w in members if w.schedule is not None)
    if not any(leader.schedule.should_update(s) for s in (due or (step,))):
        return False
    total = None
    for w in members:
        scores = w.channel_scores()
        if scores is None:
            continue
        scores = scores / (scores.mean() + 1e-12)
        total = scores if total is None else total + scores
    mask = masks_lib.channel_mask(total, leader.schedule.sparsity_at(step))
    for w in members:
        w.set_channel_mask(mask)
    return True


@keras.saving.register_keras_serializable(package="keras_eff")
class UpdatePruning(keras.callbacks.Callback):
    """Advances each pruned layer's step counter and updates its masks at the schedule's update steps.

    Required when fitting a model with `PruneWrapper` layers: without it the first training step fails, saying so.
    Unstructured and N:M masks are recomputed per layer; channel masks once per channel group, from the members'
    filter norms and BatchNorm |γ|/σ. The step counter lives in the wrappers (saved with the model), so a later
    ``fit`` resumes the schedule. With ``steps_per_execution > 1`` an update due inside an execution happens at the
    start of the next one. Warns when the model has no pruned layers, and when training stops before a schedule's
    ``end_step`` (the final sparsity was not reached). Takes no arguments.

    Example:
        ```python
        pruned.fit(x, y, epochs=4, callbacks=[keras_eff.callbacks.UpdatePruning()])
        ```
    """

    def on_train_begin(self, logs=None):
        check_same_scope(self.model)  # a model and optimizer from different tf.distribute scopes cannot train
        self._wrappers = pruning_wrappers(self.model)
        if not self._wrappers:
            warnings.warn(f"UpdatePruning: model {self.model.name!r} has no pruned layers", stacklevel=2)
        self._step = max((int(w.pruning_step.numpy()) for w in self._wrappers), default=0)
        self._single = [w for w in self._wrappers if w.structure != "channels"]
        groups = {}
        for w in self._wrappers:
            if w.structure == "channels":
                groups.setdefault(w.group, []).append(w)
        self._groups = [g for g in groups.values() if any(w.schedule is not None for w in g)]
        self._base, self._checked = self._step, self._step - 1
        for w in self._wrappers:
            w.arm(True)

    def on_epoch_begin(self, epoch, logs=None):
        self._base = self._step

    def on_train_batch_begin(self, batch, logs=None):
        step = self._base + batch
        due = range(self._checked + 1, step + 1)  # more than one step with steps_per_execution > 1
        for w in self._single:
            if any(w.schedule.should_update(s) for s in due):
                w.update_masks(w.schedule.sparsity_at(step))
        for members in self._groups:
            update_group(members, step, due)
        self._checked = step

    def on_train_batch_end(self, batch, logs=None):
        self._step = self._base + batch + 1

    def _save_step(self):
        for w in self._wrappers:
            w.set_step(self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._save_step()

    def on_train_end(self, logs=None):
        self._save_step()
        for w in self._wrappers:
            w.arm(False)
        late = {
            w.layer.name: w.schedule.end_step
            for w in self._wrappers
            if w.schedule is not None and w.schedule.end_step is not None and self._step < w.schedule.end_step
        }
        if late:
            first = next(iter(late.items()))
            warnings.warn(
                f"training stopped at step {self._step}, before the pruning schedule's end_step "
                f"({first[1]} for layer {first[0]!r}): the final sparsity was not reached; train longer "
                f"or lower end_step",
                stacklevel=2,
            )

    def get_config(self):
        return {}


def layer_sparsities(model) -> dict:
    """Measures the sparsity of each pruned layer of a model.

    Args:
        model: A model holding `PruneWrapper` layers (nested models included). Not changed.

    Returns:
        ``{layer name: fraction of zeros in its masked weights}`` for every wrapper that is not a follower (for
        channel pruning, of its kernel only); empty for a model without wrappers.

    Example:
        ```python
        print(keras_eff.pruning.layer_sparsities(pruned))  # {'conv1': 0.5, 'dense': 0.8}
        ```
    """
    out = {}
    for w in pruning_wrappers(model):
        if w.is_follower:
            continue
        values = list(w.pruned_weights().values())
        if w.structure == "channels":
            values = values[:1]  # the kernel: bias zeros are not weight sparsity
        n = sum(v.size for v in values)
        out[w.layer.name] = float(sum(np.count_nonzero(v == 0) for v in values) / n) if n else 0.0
    return out


@keras.saving.register_keras_serializable(package="keras_eff")
class PruningSummary(keras.callbacks.Callback):
    """Records each pruned layer's sparsity and the total at every epoch end.

    The values go into the epoch's logs, so the ``History`` holds them (keys ``sparsity/<layer>`` and
    ``sparsity/total``, the total weighted by the layers' weight counts), and, with ``log_dir``, into TensorBoard
    scalars (event files written with TensorFlow's own summary ops: the TensorBoard package is needed only to view
    them).

    Args:
        log_dir: A folder for TensorBoard event files; None: the ``History`` only.

    Example:
        ```python
        history = pruned.fit(x, y, epochs=4, callbacks=[keras_eff.callbacks.UpdatePruning(),
                                                        keras_eff.callbacks.PruningSummary("logs/pruning")])
        history.history["sparsity/total"]
        ```
    """

    def __init__(self, log_dir=None):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        sparsity = layer_sparsities(self.model)
        sizes = {}
        for w in pruning_wrappers(self.model):
            if not w.is_follower:
                values = list(w.pruned_weights().values())
                sizes[w.layer.name] = values[0].size if w.structure == "channels" else sum(v.size for v in values)
        total = sum(sizes.values())
        entries = {f"sparsity/{name}": s for name, s in sparsity.items()}
        entries["sparsity/total"] = sum(sparsity[n] * sizes[n] for n in sizes) / total if total else 0.0
        if logs is not None:
            logs.update(entries)
        if self.log_dir:
            self._write(entries, epoch)

    def _write(self, entries, epoch):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        metadata = summary_pb2.SummaryMetadata(data_class=summary_pb2.DATA_CLASS_SCALAR)
        metadata.plugin_data.plugin_name = "scalars"
        with self._writer.as_default():
            for key, value in entries.items():
                tf.summary.write(key, tf.constant(value, tf.float32), step=epoch, metadata=metadata.SerializeToString())
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def get_config(self):
        return {"log_dir": None if self.log_dir is None else str(self.log_dir)}
