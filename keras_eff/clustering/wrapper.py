"""ClusterWrapper: a layer whose kernels are ``gather(centroids, indices)``, trained through the shared centroids.

For each kernel the wrapper holds a trainable centroid vector (``(k,)``, or ``(channels, k)`` per output channel),
the integer index of every weight's centroid (non-trainable), and with ``preserve_sparsity`` a fixed 0/1 vector that
pins centroid 0 at zero for kernels that have zeros (their weights keep pointing at it, so zeros stay zero). The
forward pass reads the gathered kernel through a ``keras.StatelessScope``, so the gradient of every weight flows to
its centroid and the inner layer's own kernel is left unused (non-trainable).

With ``reassign_every=N`` (default 1, what TF-MOT does) the inner float kernel is trained too (straight-through:
the forward value stays the clustered one) and every N training steps each weight moves to the centroid nearest its
float value; zeros kept by ``preserve_sparsity`` stay on the pinned centroid. Re-assigning every step trained better
than fixed assignments (``reassign_every=None``), and rarer re-assignment worse, since each one changes the function
abruptly: docs/clustering.md gives the measured figures. ``strip_layer()`` gives the plain layer with the gathered
kernels, for ``keras_eff.strip``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from ..graph import call_with_values, clone_layer
from ..layers import channel_shape, facts_for, kernel_names
from .centroids import channel_ids, check_init, cluster_values


def is_clusterable(layer) -> bool:
    """Tells whether weight clustering acts on a layer.

    Args:
        layer: Any object; only Keras layers can be clusterable.

    Returns:
        True if ``layer`` is a Keras layer whose registry facts say ``clusterable`` (built in for Dense and the
        convolutions; a custom layer declares it with ``keras_eff_facts()`` or ``keras_eff.layers.register_layer``).

    Raises:
        LayerFactsError: If the layer's declared facts are invalid (see ``keras_eff.facts_for``).
    """
    return isinstance(layer, layers.Layer) and facts_for(layer).clusterable


def check_n_clusters(n_clusters, where: str = "") -> int:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
        raise ValueError(
            f"{where}n_clusters={n_clusters!r} is out of range: it must be an integer ≥ 2 (the number "
            f"of shared values per kernel, e.g. 16)"
        )
    return int(n_clusters)


def check_clusterable(layer):
    if isinstance(layer, ClusterWrapper):
        raise ValueError(f"layer {layer.layer.name!r} is already wrapped for clustering")
    if not isinstance(layer, layers.Layer) or isinstance(layer, keras.Model):
        raise TypeError(f"cluster expects a Keras layer, got {type(layer).__name__}")
    if not is_clusterable(layer):
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) has no kernel to cluster; clusterable "
            f"layers are Dense, Conv, DepthwiseConv, SeparableConv and Conv*Transpose, and custom layers "
            f"that declare clusterable kernels (keras_eff_facts() or keras_eff.layers.register_layer)"
        )


@keras.saving.register_keras_serializable(package="keras_eff")
class ClusterWrapper(layers.Wrapper):
    """Weight clustering of one layer: its kernels become ``gather(centroids, indices)``, trained through the shared
    centroids (see the module docstring).

    Made by `cluster` or `cluster_model`; `strip` replaces it by a plain layer holding the clustered kernels. The
    centroids are computed when the wrapper is built, from the inner layer's weights at that time (call
    ``initialize_clusters()`` to recompute them).

    Args:
        layer: A clusterable layer (Dense, a convolution, a custom layer with clusterable kernels); when it is
            already built its current weights are clustered. It becomes the wrapper's ``layer``.
        n_clusters: Shared values per kernel (per output channel with ``per_channel``), at least 2 and at most the
            number of weights clustered together.
        init: ``"kmeans++"``, ``"linear"``, ``"density"`` or ``"random"`` (see `fit_centroids`).
        per_channel: One set of centroids per output channel.
        preserve_sparsity: Weights that are exactly zero stay zero (a pinned zero centroid).
        reassign_every: Re-assign weights to their nearest centroid every N training steps, training the float kernel
            straight-through (default 1, every step); None: fixed assignments, only the centroids learn.
        seed: The k-means seed.
        **kwargs: Passed to ``keras.layers.Wrapper`` (``name`` defaults to ``"cluster_<layer name>"``).

    Raises:
        ValueError: If ``layer`` is already wrapped or has no kernel to cluster, a setting is out of range, or (when
            built) a kernel has fewer weights than ``n_clusters`` or holds NaN or infinite values.
        TypeError: If ``layer`` is not a Keras layer, or is a model.
    """

    def __init__(
        self,
        layer,
        n_clusters=16,
        init="kmeans++",
        per_channel=False,
        preserve_sparsity=False,
        reassign_every=1,
        seed=0,
        **kwargs,
    ):
        check_clusterable(layer)
        kwargs.setdefault("name", f"cluster_{layer.name}")
        super().__init__(layer, **kwargs)
        where = f"layer {layer.name!r}: "
        self.n_clusters = check_n_clusters(n_clusters, where)
        self.init = check_init(init, where)
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        if reassign_every is not None and (
            isinstance(reassign_every, bool) or not isinstance(reassign_every, int) or reassign_every < 1
        ):
            raise ValueError(f"{where}reassign_every={reassign_every!r} must be a positive number of steps or None")
        self.reassign_every = reassign_every
        self.seed = int(seed)
        self._restoring = False

    # ---- variables ----------------------------------------------------------------------------------------------
    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        weights = {w.path.split("/")[-1]: w for w in self.layer.weights}
        self._kernels, self._centroids, self._free, self._indices, self._channels = {}, {}, {}, {}, {}
        for name in kernel_names(self.layer):
            w = weights[name]
            size = int(np.prod(w.shape))
            ch_shape = channel_shape(self.layer, name, w.shape)
            n_ch = int(np.prod(ch_shape))
            per_group = size // n_ch if self.per_channel else size
            if self.n_clusters > per_group:
                raise ValueError(
                    f"layer {self.layer.name!r}: n_clusters={self.n_clusters} is larger than the {per_group} weights "
                    f"of its {name}{' per output channel' if self.per_channel else ''}; lower n_clusters or leave "
                    f"this layer out of clustering"
                )
            c_shape = (n_ch, self.n_clusters) if self.per_channel else (self.n_clusters,)
            self._kernels[name] = w
            w.trainable = self.reassign_every is not None  # only re-assignment trains the float kernel
            # centroids: trainable, the optimizer applies the all-reduced gradient as for any weight. indices and
            # cluster_step: written inside the training step (in a tf.cond, where no cross-replica call may sit), so
            # aggregation NONE: each replica re-assigns from the same mirrored kernel and centroids and gets the same
            # indices, with no communication (tests/test_distribute.py checks they stay identical). _free: set once.
            self._centroids[name] = self.add_weight(
                name=f"{name}_centroids", shape=c_shape, initializer="zeros", dtype="float32"
            )
            self._indices[name] = self.add_weight(
                name=f"{name}_indices",
                shape=w.shape,
                dtype="int32",
                initializer="zeros",
                trainable=False,
                aggregation="none",
            )
            if self.preserve_sparsity:
                self._free[name] = self.add_weight(
                    name=f"{name}_free",
                    shape=c_shape,
                    initializer="ones",
                    trainable=False,
                    dtype="float32",
                    aggregation="only_first_replica",
                )
            if self.per_channel:
                self._channels[name] = channel_ids(tuple(w.shape), ch_shape) * self.n_clusters
        self.cluster_step = self.add_weight(
            name="cluster_step", shape=(), dtype="int64", initializer="zeros", trainable=False, aggregation="none"
        )
        self.built = True
        if not self._restoring:
            with tf.init_scope():  # eager even when a model first builds inside fit's graph
                self.initialize_clusters()

    def initialize_clusters(self):
        """Recomputes the centroids and assignments from the inner layer's current kernels.

        Call it after loading trained weights into ``wrapper.layer`` of a wrapper that was built before.

        Returns:
            None. The centroid, index (and with ``preserve_sparsity`` pinning) variables are changed in place.

        Raises:
            ValueError: If a kernel holds NaN or infinite values.
        """
        for name, w in self._kernels.items():
            values = np.asarray(w)
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"layer {self.layer.name!r} has NaN or infinite values in its {name}: fix or "
                    f"retrain the model before clustering it"
                )
            if self.per_channel:
                ch = self._channels[name] // self.n_clusters
                centroids = np.zeros(self._centroids[name].shape, np.float32)
                indices = np.zeros(values.shape, np.int32)
                for c in range(centroids.shape[0]):
                    sel = ch == c
                    centroids[c], indices[sel] = cluster_values(
                        values[sel], self.n_clusters, self.init, self.preserve_sparsity, self.seed
                    )
            else:
                centroids, indices = cluster_values(
                    values, self.n_clusters, self.init, self.preserve_sparsity, self.seed
                )
            self._centroids[name].assign(centroids)
            self._indices[name].assign(indices)
            if self.preserve_sparsity:
                free = np.ones(centroids.shape, np.float32)
                # cluster_values pins centroid 0 exactly where the kernel (or the channel) has zeros
                pinned = self._pinned_channels(values, name) if self.per_channel else np.any(values == 0)
                free[..., 0] = np.where(pinned, 0.0, 1.0)
                self._free[name].assign(free)

    def _pinned_channels(self, values, name):
        ch = self._channels[name] // self.n_clusters
        n = self._centroids[name].shape[0]
        has_zero = np.zeros(n, bool)
        np.logical_or.at(has_zero, ch[values == 0].reshape(-1), True)
        return has_zero

    # ---- forward ------------------------------------------------------------------------------------------------
    def effective_centroids(self, name):
        """Gives a kernel's centroids as the layer uses them (the pinned zero centroid held at 0).

        Args:
            name: The kernel's weight name.

        Returns:
            The centroids: ``(n_clusters,)``, or ``(channels, n_clusters)`` per channel.
        """
        c = self._centroids[name]
        return c * self._free[name] if self.preserve_sparsity else c

    def _flat_indices(self, name, indices=None):
        idx = self._indices[name] if indices is None else indices
        return idx + self._channels[name] if self.per_channel else idx

    def clustered_kernel(self, name):
        """Gives the kernel the layer computes with: every weight replaced by its centroid.

        Args:
            name: The kernel's weight name (``"kernel"``, ``"depthwise_kernel"`` ...).

        Returns:
            A tensor shaped like the kernel.
        """
        c = ops.reshape(self.effective_centroids(name), (-1,))
        return ops.take(c, self._flat_indices(name))

    def _reassign(self, name):
        w = self._kernels[name]
        c = self.effective_centroids(name)
        if self.per_channel:
            cands = ops.take(c, ops.convert_to_tensor(self._channels[name] // self.n_clusters), axis=0)
        else:
            cands = ops.broadcast_to(c, tuple(w.shape) + (self.n_clusters,))
        dist = ops.abs(ops.expand_dims(ops.convert_to_tensor(w), -1) - cands)
        if self.preserve_sparsity:
            free = self._free[name]
            free = (
                ops.take(free, ops.convert_to_tensor(self._channels[name] // self.n_clusters), axis=0)
                if self.per_channel
                else ops.broadcast_to(free, dist.shape)
            )
            pinned = ops.equal(free[..., 0], 0.0)
            kept = ops.logical_and(pinned, ops.equal(self._indices[name], 0))  # zeros stay on the zero centroid
            blocked = ops.concatenate(
                [ops.expand_dims(pinned, -1), ops.zeros_like(dist[..., 1:], dtype="bool")], axis=-1
            )
            dist = ops.where(blocked, np.inf, dist)
            new = ops.where(kept, 0, ops.cast(ops.argmin(dist, axis=-1), "int32"))
        else:
            new = ops.cast(ops.argmin(dist, axis=-1), "int32")
        self._indices[name].assign(new)

    def call(self, inputs, training=None, **kwargs):
        if training and self.reassign_every is not None:
            self.cluster_step.assign_add(1)
            every = self.reassign_every

            def reassign():
                for name in self._kernels:
                    self._reassign(name)
                return tf.constant(True)

            tf.cond(ops.equal(self.cluster_step % every, 0), reassign, lambda: tf.constant(False))
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        mapping = []
        for name, w in self._kernels.items():
            value = self.clustered_kernel(name)
            if self.reassign_every is not None:  # straight-through: the float kernel learns too
                value = value + (w - ops.stop_gradient(w))
            mapping.append((w, value))
        return call_with_values(self, self.layer, inputs, mapping, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    # ---- strip and serialization ------------------------------------------------------------------------------
    def clustered_weights(self) -> dict:
        """Gives the clustered kernels as numpy arrays.

        Returns:
            ``{kernel name: numpy kernel with every weight replaced by its centroid}``.
        """
        return {name: np.asarray(self.clustered_kernel(name)) for name in self._kernels}

    def strip_layer(self):
        """Makes the plain layer that `strip` puts in the wrapper's place.

        Returns:
            A new, built copy of the wrapped layer holding the clustered kernels (its other weights copied).
        """
        new = clone_layer(self.layer, name=self.layer.name)
        new.build_from_config(self.layer.get_build_config())
        clustered = {id(self._kernels[n]): v for n, v in self.clustered_weights().items()}
        new.set_weights([clustered.get(id(v), np.asarray(v)) for v in self.layer.weights])
        return new

    def get_config(self):
        config = super().get_config()
        config.update(
            n_clusters=self.n_clusters,
            init=self.init,
            per_channel=self.per_channel,
            preserve_sparsity=self.preserve_sparsity,
            reassign_every=self.reassign_every,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        wrapper = cls(layer, **config)
        wrapper._restoring = True  # the saved centroids and indices are loaded next: no k-means on fresh weights
        return wrapper


def cluster(
    layer, n_clusters=16, init="kmeans++", per_channel=False, preserve_sparsity=False, reassign_every=1, seed=0
) -> ClusterWrapper:
    """Wraps one layer for weight clustering: the way to cluster layers of any model, subclassed ones included.

    A built layer is clustered from its current weights; an unbuilt one from its initial weights when the model
    builds (call ``wrapper.initialize_clusters()`` after loading trained weights into ``wrapper.layer``). Remove the
    wrapper with `strip`.

    Args:
        layer: A clusterable Keras layer (Dense, a convolution, a custom layer with clusterable kernels).
        n_clusters: Shared values per kernel (per output channel with ``per_channel``), at least 2.
        init: ``"kmeans++"`` (default), ``"linear"``, ``"density"`` or ``"random"`` (see `fit_centroids`).
        per_channel: One set of centroids per output channel.
        preserve_sparsity: Weights that are exactly zero stay zero.
        reassign_every: Re-assign weights to their nearest centroid every N training steps (default 1); None: fixed
            assignments.
        seed: The k-means seed.

    Returns:
        A new `ClusterWrapper` holding ``layer``.

    Raises:
        ValueError: If ``layer`` has no kernel to cluster or is already wrapped, or a setting is out of range.
        TypeError: If ``layer`` is not a Keras layer.

    Example:
        ```python
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras_eff.cluster(keras.layers.Conv2D(16, 3), 16)
                self.head = keras.layers.Dense(10)
        ```
    """
    return ClusterWrapper(
        layer,
        n_clusters=n_clusters,
        init=init,
        per_channel=per_channel,
        preserve_sparsity=preserve_sparsity,
        reassign_every=reassign_every,
        seed=seed,
    )
