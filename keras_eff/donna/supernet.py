"""Supernet blocks: one Keras layer per block position that runs any choice of that block.

Choices share weights where they nest: a smaller kernel is the centre crop of the largest, a smaller expansion uses
the first channels, a shallower block uses the first layers, ReLU and swish use the same weights and SE adds its own.
The three cell types (depthwise, grouped and fused inverted bottlenecks) have separate weights. A grouped cell's
kxk kernel is ``(k, k, group_width, expanded)``: a smaller expansion or width uses its first groups.

Batch normalization shares its scale and offset; its statistics differ from choice to choice, so the layer always
normalizes with the batch's statistics, and :meth:`SupernetBlock.calibrate` measures a choice's own statistics
(averaged over batches) for evaluation and for extraction into a plain block.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .blocks import grouped_channels, grouped_conv, layer_plan, se_channels
from .space import BlockChoice, BlockSpace

BN_EPSILON = 1e-3  # Keras BatchNormalization's default


def bn_names(cell: str) -> tuple:
    """The batch-norm parts of one stacked layer of ``cell``."""
    return {"dw_ib": ("expand", "dw", "project"), "gr_ib": ("expand", "gr", "project")}.get(cell, ("fused", "project"))


@keras.saving.register_keras_serializable(package="keras_eff")
class SupernetBlock(keras.layers.Layer):
    """A Keras layer that runs any choice of one block position, sharing weights where the choices nest.

    A smaller kernel is the centre crop of the largest, a smaller expansion or width uses the first channels (the
    first groups of a grouped cell), a shallower choice the first layers; the cell types have separate weights. Batch
    norm always normalizes with the batch's statistics (they differ from choice to choice); :meth:`calibrate`
    measures a choice's own statistics for evaluation and for :meth:`extract_weights`. The weights are created in
    the constructor. Registered as a Keras serializable (``keras_eff>SupernetBlock``).

    Args:
        in_channels: The block's input channels.
        block: The `BlockSpace` of the position (or its config).
        active: The choice that :meth:`call` runs: a `BlockChoice`, its name or its index in
            ``block.choices()``; None: the block's reference choice. :meth:`forward` runs any choice.
        **kwargs: Passed to `keras.layers.Layer` (``name``, ``dtype``, ...).

    Raises:
        ValueError: If ``block`` is invalid or ``active`` is not one of its choices.

    Example:
        ```python
        block = tiny_space().blocks[0]
        layer = SupernetBlock(8, block)
        choice = block.choices()[3]
        y, _ = layer.forward(x, choice)           # x: (n, 14, 14, 8) -> y: (n, 7, 7, 8)
        stats = layer.calibrate(x, choice)        # the choice's own batch-norm statistics
        weights = layer.extract_weights(choice, stats)
        ```
    """

    def __init__(self, in_channels: int, block, active=None, **kwargs):
        super().__init__(**kwargs)
        self.block = block if isinstance(block, BlockSpace) else BlockSpace.from_config(dict(block))
        self.block.validate()
        self.in_channels = int(in_channels)
        self.choices = self.block.choices()
        self.active = self._as_choice(active if active is not None else self.block.reference_choice())
        self.kmax = max(self.block.kernels)
        self.emax = max(self.block.expansions)
        self.dmax = max(self.block.depths)
        self._vars: dict[str, keras.Variable] = {}
        cout = self.block.out_channels
        for cell in self.block.cells:
            for layer in range(self.dmax):
                cin = self.in_channels if layer == 0 else cout
                cexp = cin * self.emax
                p = f"{cell}/l{layer}"
                if cell == "dw_ib":
                    self._add(p, "expand", (cin, cexp), "he_normal")
                    self._add(p, "dw", (self.kmax, self.kmax, cexp, 1), "he_normal")
                elif cell == "gr_ib":
                    g = self.block.group_width
                    cexp = grouped_channels(cexp, g)
                    self._add(p, "expand", (cin, cexp), "he_normal")
                    self._add(p, "gr", (self.kmax, self.kmax, g, cexp), "he_normal")
                else:
                    self._add(p, "fused", (self.kmax, self.kmax, cin, cexp), "he_normal")
                for part in bn_names(cell):
                    width = cout if part == "project" else cexp
                    self._add(p, f"{part}_bn_gamma", (width,), "ones")
                    self._add(p, f"{part}_bn_beta", (width,), "zeros")
                if True in self.block.se:
                    r = se_channels(cin)
                    self._add(p, "se_reduce", (cexp, r), "glorot_uniform")
                    self._add(p, "se_reduce_bias", (r,), "zeros")
                    self._add(p, "se_expand", (r, cexp), "glorot_uniform")
                    self._add(p, "se_expand_bias", (cexp,), "zeros")
                self._add(p, "project", (cexp, cout), "glorot_uniform")
        self.built = True

    def _add(self, prefix, part, shape, init):
        key = f"{prefix}/{part}"
        self._vars[key] = self.add_weight(name=key.replace("/", "_"), shape=shape, initializer=init)

    def _as_choice(self, choice) -> BlockChoice:
        if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
            if not 0 <= choice < len(self.choices):
                raise ValueError(f"choice index {choice} is out of range 0..{len(self.choices) - 1}")
            return self.choices[int(choice)]
        if isinstance(choice, str):
            choice = BlockChoice.from_name(choice)
        if choice not in self.choices:
            raise ValueError(f"choice {getattr(choice, 'name', choice)} is not one of this block's choices")
        return choice

    # ---- which weights a choice uses -----------------------------------------------------------------------------
    def variable_names(self) -> list:
        """The names of the layer's weights.

        Returns:
            A list of names such as ``"dw_ib/l0/expand"``.
        """
        return list(self._vars)

    def variables_for(self, choice) -> list:
        """The variables that ``choice`` reads (so that an optimizer step touches only those).

        Args:
            choice: A `BlockChoice`, its name or its index.

        Returns:
            A list of the layer's variables (whole variables: the choice may use only a slice of each).

        Raises:
            ValueError: If ``choice`` is not one of the block's choices.
        """
        choice = self._as_choice(choice)
        out = []
        for layer in range(choice.depth):
            p = f"{choice.cell}/l{layer}/"
            for key, var in self._vars.items():
                if key.startswith(p) and (choice.se or "/se_" not in key):
                    out.append(var)
        return out

    def bn_widths(self, choice) -> dict:
        """The batch norms that ``choice`` uses and their widths.

        Args:
            choice: A `BlockChoice`, its name or its index.

        Returns:
            ``{batch-norm name: channels}``, names such as ``"dw_ib/l0/expand_bn"``.

        Raises:
            ValueError: If ``choice`` is not one of the block's choices.
        """
        choice = self._as_choice(choice)
        out = {}
        for p, _cin, cexp, cout, _s, _residual, _off in self._slices(choice):
            for part in bn_names(choice.cell):
                out[f"{p}/{part}_bn"] = cout if part == "project" else cexp
        return out

    def bn_max_widths(self) -> dict:
        """Every batch norm of the layer and its full width.

        Returns:
            ``{batch-norm name: channels}``.
        """
        return {
            key[: -len("_gamma")]: int(var.shape[0]) for key, var in self._vars.items() if key.endswith("_bn_gamma")
        }

    def _slices(self, choice: BlockChoice):
        """Per stacked layer: (prefix, cin, cexp, cout, stride, residual, kernel crop offset). A width below 1 uses
        the first channels of each weight (inputs, expansion, and the outputs of all but the last layer)."""
        off = (self.kmax - choice.kernel) // 2
        for layer, (cin, cexp, cout, s, residual) in enumerate(
            layer_plan(choice, self.in_channels, self.block.out_channels, self.block.stride, self.block.group_width)
        ):
            yield f"{choice.cell}/l{layer}", cin, cexp, cout, s, residual, off

    # ---- running a choice ----------------------------------------------------------------------------------------
    def forward(self, x, choice, stats: dict | None = None):
        """Runs ``choice`` on ``x``.

        Args:
            x: A tensor ``(batch, height, width, in_channels)``.
            choice: A `BlockChoice`, its name or its index.
            stats: ``{batch-norm name: (mean, variance)}`` (from :meth:`calibrate`) to normalize with; None: the
                batch's own statistics.

        Returns:
            ``(output, moments)``: the output tensor, and the batch's ``{batch-norm name: (mean, variance)}``
            (empty when ``stats`` is given).

        Raises:
            ValueError: If ``choice`` is not one of the block's choices.
        """
        choice = self._as_choice(choice)
        v = self._vars
        act = ops.relu if choice.activation == "relu" else ops.silu
        k = choice.kernel
        moments = {}

        def bn(y, name, width):
            key = f"{name}_bn"
            if stats is None:
                mean, var = ops.moments(y, axes=[0, 1, 2])
                moments[key] = (mean, var)
            else:
                mean, var = stats[key]
            gamma, beta = v[f"{key}_gamma"][:width], v[f"{key}_beta"][:width]
            return (y - mean) * (gamma / ops.sqrt(var + BN_EPSILON)) + beta

        for p, cin, cexp, cout, s, residual, off in self._slices(choice):
            inp = x
            r = se_channels(cin)
            if choice.cell in ("dw_ib", "gr_ib"):
                y = ops.matmul(x, v[f"{p}/expand"][:cin, :cexp])
                y = act(bn(y, f"{p}/expand", cexp))
                if choice.cell == "dw_ib":
                    kern = v[f"{p}/dw"][off : off + k, off : off + k, :cexp, :]
                    y = ops.depthwise_conv(y, kern, strides=s, padding="same")
                    y = act(bn(y, f"{p}/dw", cexp))
                else:  # (k, k, group_width, cexp): the groups are read from the kernel's input axis
                    kern = v[f"{p}/gr"][off : off + k, off : off + k, :, :cexp]
                    y = grouped_conv(y, kern, strides=s, padding="same")
                    y = act(bn(y, f"{p}/gr", cexp))
            else:
                kern = v[f"{p}/fused"][off : off + k, off : off + k, :cin, :cexp]
                y = ops.conv(x, kern, strides=s, padding="same")
                y = act(bn(y, f"{p}/fused", cexp))
            if choice.se:
                z = ops.mean(y, axis=[1, 2])
                z = act(ops.matmul(z, v[f"{p}/se_reduce"][:cexp, :r]) + v[f"{p}/se_reduce_bias"][:r])
                z = ops.sigmoid(ops.matmul(z, v[f"{p}/se_expand"][:r, :cexp]) + v[f"{p}/se_expand_bias"][:cexp])
                y = y * z[:, None, None, :]
            y = ops.matmul(y, v[f"{p}/project"][:cexp, :cout])
            y = bn(y, f"{p}/project", cout)
            x = inp + y if residual else y
        return x, moments

    def call(self, inputs):
        """Runs the active choice with batch statistics."""
        return self.forward(inputs, self.active)[0]

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        s = self.block.stride
        return (n, None if h is None else -(-h // s), None if w is None else -(-w // s), self.block.out_channels)

    def calibrate(self, x, choice, batch_size: int = 256) -> dict:
        """A choice's own batch-norm statistics on ``x``.

        Args:
            x: Block inputs ``(n, height, width, in_channels)`` (numpy array or tensor).
            choice: A `BlockChoice`, its name or its index.
            batch_size: The batch size the statistics are measured at.

        Returns:
            ``{batch-norm name: (mean, variance)}`` as numpy arrays: the batches' means and variances, averaged
            over the batches weighted by their sizes.

        Raises:
            ValueError: If ``x`` is empty or ``choice`` is not one of the block's choices.
        """
        sums: dict[str, tuple] = {}
        n = 0
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            _, moments = self.forward(ops.convert_to_tensor(xb), choice)
            w = len(xb)
            for key, (mean, var) in moments.items():
                m, s = sums.get(key, (0.0, 0.0))
                sums[key] = (m + w * ops.convert_to_numpy(mean), s + w * ops.convert_to_numpy(var))
            n += w
        if n == 0:
            raise ValueError("calibrate: x is empty; give at least one input")
        return {key: (m / n, s / n) for key, (m, s) in sums.items()}

    # ---- plain blocks --------------------------------------------------------------------------------------------
    def extract_weights(self, choice, stats: dict) -> dict:
        """The weights of ``choice`` laid out for the plain block of :func:`keras_eff.donna.blocks.apply_block`.

        Args:
            choice: A `BlockChoice`, its name or its index.
            stats: ``{batch-norm name: (mean, variance)}`` (from :meth:`calibrate`): the plain batch norms' moving
                statistics.

        Returns:
            ``{layer suffix: [numpy arrays]}`` (suffixes like ``"l0_expand"``), for ``layer.set_weights`` on the
            layers ``{prefix}_{suffix}``.

        Raises:
            ValueError: If ``choice`` is not one of the block's choices.
            KeyError: If ``stats`` lacks one of the choice's batch norms.
        """
        choice = self._as_choice(choice)
        v = {key: ops.convert_to_numpy(var) for key, var in self._vars.items()}
        k, out = choice.kernel, {}
        for p, cin, cexp, cout, _s, _residual, off in self._slices(choice):
            name = p.split("/")[1]
            if choice.cell in ("dw_ib", "gr_ib"):
                out[f"{name}_expand"] = [v[f"{p}/expand"][:cin, :cexp].reshape(1, 1, cin, cexp)]
            if choice.cell == "dw_ib":
                out[f"{name}_dw"] = [v[f"{p}/dw"][off : off + k, off : off + k, :cexp, :]]
            elif choice.cell == "gr_ib":
                out[f"{name}_gr"] = [v[f"{p}/gr"][off : off + k, off : off + k, :, :cexp]]
            else:
                out[f"{name}_fused"] = [v[f"{p}/fused"][off : off + k, off : off + k, :cin, :cexp]]
            for part in bn_names(choice.cell):
                width = cout if part == "project" else cexp
                mean, var = stats[f"{p}/{part}_bn"]
                out[f"{name}_{part}_bn"] = [
                    v[f"{p}/{part}_bn_gamma"][:width],
                    v[f"{p}/{part}_bn_beta"][:width],
                    np.asarray(mean),
                    np.asarray(var),
                ]
            if choice.se:
                r = se_channels(cin)
                out[f"{name}_se_reduce"] = [
                    v[f"{p}/se_reduce"][:cexp, :r].reshape(1, 1, cexp, r),
                    v[f"{p}/se_reduce_bias"][:r],
                ]
                out[f"{name}_se_expand"] = [
                    v[f"{p}/se_expand"][:r, :cexp].reshape(1, 1, r, cexp),
                    v[f"{p}/se_expand_bias"][:cexp],
                ]
            out[f"{name}_project"] = [v[f"{p}/project"][:cexp, :cout].reshape(1, 1, cexp, cout)]
        return out

    def assign_from(self, choice, weights: dict) -> None:
        """The inverse of :meth:`extract_weights`: writes a plain block's weights into this choice's slices.

        Used to start the supernet from the reference block. Moving statistics are ignored.

        Args:
            choice: A `BlockChoice`, its name or its index.
            weights: ``{layer suffix: [arrays]}`` as :meth:`extract_weights` returns them.

        Returns:
            None. The layer's variables are changed in place.

        Raises:
            ValueError: If ``choice`` is not one of the block's choices.
            KeyError: If ``weights`` lacks one of the choice's layers.
        """
        choice = self._as_choice(choice)
        k = choice.kernel

        def put(key, index, value):
            var = self._vars[key]
            full = ops.convert_to_numpy(var).copy()
            full[index] = value
            var.assign(full)

        for p, cin, cexp, cout, _s, _residual, off in self._slices(choice):
            name = p.split("/")[1]
            if choice.cell in ("dw_ib", "gr_ib"):
                put(f"{p}/expand", np.s_[:cin, :cexp], weights[f"{name}_expand"][0].reshape(cin, cexp))
            if choice.cell == "dw_ib":
                put(f"{p}/dw", np.s_[off : off + k, off : off + k, :cexp, :], weights[f"{name}_dw"][0])
            elif choice.cell == "gr_ib":
                put(f"{p}/gr", np.s_[off : off + k, off : off + k, :, :cexp], weights[f"{name}_gr"][0])
            else:
                put(f"{p}/fused", np.s_[off : off + k, off : off + k, :cin, :cexp], weights[f"{name}_fused"][0])
            for part in bn_names(choice.cell):
                width = cout if part == "project" else cexp
                gamma, beta = weights[f"{name}_{part}_bn"][:2]
                put(f"{p}/{part}_bn_gamma", np.s_[:width], gamma)
                put(f"{p}/{part}_bn_beta", np.s_[:width], beta)
            if choice.se:
                r = se_channels(cin)
                put(f"{p}/se_reduce", np.s_[:cexp, :r], weights[f"{name}_se_reduce"][0].reshape(cexp, r))
                put(f"{p}/se_reduce_bias", np.s_[:r], weights[f"{name}_se_reduce"][1])
                put(f"{p}/se_expand", np.s_[:r, :cexp], weights[f"{name}_se_expand"][0].reshape(r, cexp))
                put(f"{p}/se_expand_bias", np.s_[:cexp], weights[f"{name}_se_expand"][1])
            put(f"{p}/project", np.s_[:cexp, :cout], weights[f"{name}_project"][0].reshape(cexp, cout))

    def get_variables(self) -> dict:
        """All weights, for saving.

        Returns:
            ``{name: numpy array}`` (names like ``"dw_ib/l0/expand"``).
        """
        return {key: ops.convert_to_numpy(var) for key, var in self._vars.items()}

    def set_variables(self, arrays: dict) -> None:
        """Sets every weight from :meth:`get_variables`'s output.

        Args:
            arrays: ``{name: array}`` for every name of :meth:`variable_names` (other keys are ignored).

        Returns:
            None. The layer's variables are changed in place.

        Raises:
            ValueError: If a weight is missing or its shape differs from the layer's.
        """
        missing = sorted(set(self._vars) - set(arrays))
        if missing:
            raise ValueError(f"supernet weights missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for key, var in self._vars.items():
            a = np.asarray(arrays[key])
            if tuple(a.shape) != tuple(var.shape):
                raise ValueError(
                    f"supernet weight {key}: shape {a.shape} does not match the block's {tuple(var.shape)}"
                )
            var.assign(a)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update({"in_channels": self.in_channels, "block": self.block.get_config(), "active": self.active.name})
        return cfg


def load_block_weights(model: keras.Model, prefix: str, weights: dict) -> None:
    """Sets the weights of the plain block ``prefix`` in ``model`` from ``{layer suffix: [arrays]}``."""
    for suffix, arrays in weights.items():
        name = f"{prefix}_{suffix}"
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise ValueError(
                f"model {model.name!r} has no layer {name!r}: the weights belong to another block choice"
            ) from None
        layer.set_weights(arrays)


def get_block_weights(model: keras.Model, prefix: str) -> dict:
    """The weights of the plain block ``prefix`` in ``model`` as ``{layer suffix: [arrays]}``."""
    start = f"{prefix}_"
    return {
        layer.name[len(start) :]: layer.get_weights()
        for layer in model.layers
        if layer.name.startswith(start) and layer.get_weights()
    }
