"""The registry of layer facts: the one place every technique asks what a layer is.

``facts_for(layer)`` answers, in this order:

1. the layer's own declaration: a method ``keras_eff_facts(self) -> LayerFacts`` (the protocol for custom layers;
   the method sees the built layer, so the answer may depend on its settings);
2. a registration, ``register_layer(MyLayer, LayerFacts(...))`` (or a function ``layer -> LayerFacts``), looked up
   along the class's MRO, so subclasses of a registered class share its facts until registered themselves;
3. for the Keras ops of a functional graph (``x + 3.0``, ``ops.sigmoid(x)``), the op's class name;
4. nothing known: ``UNKNOWN`` (stays float, reported).

The built-in entries cover the Keras layers keras-eff quantizes, prunes, clusters, equalizes or compresses.
"""

from __future__ import annotations

import keras
from keras import layers

from .facts import LayerFacts, LayerFactsError

# TFLite's fixed int8 output grids: sigmoid and softmax scale 1/256 zero point −128; tanh scale 1/128 zero point 0.
FIXED_RANGES = {
    "sigmoid": (0.0, 255.0 / 256.0),
    "softmax": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
    "log_softmax": (-255.0 / 16.0, 0.0),  # TFLite's int8 LOG_SOFTMAX: scale 16/256, zero point 127
}
HARD_SWISH = ("hard_swish", "hard_silu")
PROTOCOL = "keras_eff_facts"

UNKNOWN = LayerFacts()
_INHERIT = LayerFacts(output_range="inherit", channels="pass")
_OWN_MERGE = LayerFacts(output_range="own", channels="merge")


def _conv(
    layout="last", *, quantized=True, per_channel=True, folds=True, channels="produce", int8="linear", kernels=None
):
    return LayerFacts(
        kernels=kernels or {"kernel": layout},
        output_range="own" if quantized else "float",
        fuses_activation=quantized,
        folds_batchnorm=folds,
        per_channel=per_channel and quantized,
        prunable=True,
        clusterable=True,
        channels=channels,
        int8_kernel=int8 if quantized else None,
    )


_SEPARABLE = {"depthwise_kernel": "depthwise", "pointwise_kernel": "last"}

_BUILTIN: dict = {
    layers.Dense: _conv(per_channel=False),
    layers.Conv1D: _conv(),
    layers.Conv2D: _conv(),
    layers.Conv3D: _conv(quantized=False),
    layers.DepthwiseConv2D: _conv("depthwise", channels="follow"),
    layers.DepthwiseConv1D: _conv("depthwise", quantized=False, folds=False, channels="follow"),
    layers.SeparableConv2D: _conv(kernels=_SEPARABLE, channels="block"),
    layers.SeparableConv1D: _conv(kernels=_SEPARABLE, quantized=False, folds=False, channels="block"),
    layers.Conv2DTranspose: _conv("transpose", per_channel=False, channels="block", int8=None),
    layers.Conv1DTranspose: _conv("transpose", quantized=False, folds=False, channels="block"),
    layers.Conv3DTranspose: _conv("transpose", quantized=False, folds=False, channels="block"),
    layers.Embedding: LayerFacts(kernels={"embeddings": "last"}, prunable=True),
    layers.BatchNormalization: LayerFacts(output_range="own", channels="follow"),
    layers.Add: _OWN_MERGE.replace(int8_kernel="add"),
    layers.Multiply: _OWN_MERGE.replace(int8_kernel="multiply"),
    layers.Subtract: _OWN_MERGE.replace(int8_kernel="subtract"),
    layers.Average: _OWN_MERGE,
    # int8 MAXIMUM / MINIMUM take inputs and output on one grid (max(clip a, clip b) = clip max(a, b): the range
    # learned from the output serves the inputs too)
    layers.Maximum: LayerFacts(output_range="shared", channels="merge"),
    layers.Minimum: LayerFacts(output_range="shared", channels="merge"),
    layers.LeakyReLU: LayerFacts(output_range="own", channels="pass"),
    layers.ELU: LayerFacts(output_range="own", channels="pass"),  # quantize_model writes it as MINIMUM, EXP, SUB ...
    layers.PReLU: LayerFacts(output_range="own"),
    layers.Softmax: LayerFacts(output_range="fixed", fixed_range=FIXED_RANGES["softmax"]),
    layers.Rescaling: LayerFacts(output_range="own", channels="pass"),
    layers.Normalization: LayerFacts(channels="pass"),  # quantize_model runs a 4-D one as a depthwise conv
    layers.Concatenate: LayerFacts(output_range="shared", channels="concat"),
    layers.AveragePooling1D: LayerFacts(output_range="shared", channels="pass", int8_kernel="average_pool"),
    layers.AveragePooling2D: LayerFacts(output_range="shared", channels="pass", int8_kernel="average_pool"),
    layers.AveragePooling3D: LayerFacts(channels="pass"),  # no 3-D pooling in TFLite, float or int8
    layers.GlobalAveragePooling1D: LayerFacts(output_range="shared", channels="pass", int8_kernel="mean"),
    layers.GlobalAveragePooling2D: LayerFacts(output_range="shared", channels="pass", int8_kernel="mean"),
    layers.GlobalAveragePooling3D: LayerFacts(channels="pass"),
    layers.GlobalMaxPooling3D: LayerFacts(channels="pass"),
    layers.SpatialDropout3D: LayerFacts(channels="pass"),
    layers.ZeroPadding3D: LayerFacts(channels="pass"),
    layers.Cropping3D: LayerFacts(channels="pass"),
    layers.UpSampling1D: LayerFacts(channels="pass"),
    layers.UpSampling3D: LayerFacts(channels="pass"),
    layers.Flatten: LayerFacts(output_range="inherit", channels="flatten"),
    layers.Reshape: LayerFacts(output_range="inherit"),
    layers.Permute: LayerFacts(output_range="inherit"),
    layers.ActivityRegularization: LayerFacts(output_range="inherit"),
}
_BUILTIN[layers.MaxPooling3D] = LayerFacts(channels="pass")  # no 3-D pooling in TFLite
for _cls in (
    layers.MaxPooling1D,
    layers.MaxPooling2D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.ZeroPadding1D,
    layers.ZeroPadding2D,
    layers.Cropping1D,
    layers.Cropping2D,
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.Identity,
):
    _BUILTIN[_cls] = _INHERIT


def _resample_facts(layer) -> LayerFacts:
    """UpSampling2D, Resizing (and the ``ops.image.resize`` op): nearest neighbour copies values (the input's grid);
    bilinear interpolates them onto that one grid (int8 RESIZE_BILINEAR has one scale for input and output, like
    AVERAGE_POOL_2D: a range shared by input and output); other interpolations have no TFLite op."""
    mode = getattr(layer, "interpolation", "nearest")
    if mode == "nearest":
        return _INHERIT
    if mode == "bilinear":
        return LayerFacts(output_range="shared", channels="pass")
    return LayerFacts(channels="pass")


_BUILTIN[layers.UpSampling2D] = _resample_facts
_BUILTIN[layers.Resizing] = _resample_facts


def activation_name(fn) -> str:
    """Names an activation function as Keras serializes it.

    Args:
        fn: An activation function (``keras.activations.relu``, a callable with a ``__name__``) or None.

    Returns:
        Its serialized name (``"relu"``, ``"hard_silu"`` ...); ``"linear"`` for None; the function's ``__name__``
        where Keras serializes it to something other than a name.
    """
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else getattr(fn, "__name__", str(name))


def _activation_facts(layer) -> LayerFacts:
    name = activation_name(layer.activation)
    if name in FIXED_RANGES:
        return LayerFacts(output_range="fixed", fixed_range=FIXED_RANGES[name], channels="pass")
    return LayerFacts(output_range="own", channels="pass", int8_kernel="hard_swish" if name in HARD_SWISH else None)


_BUILTIN[layers.Activation] = _activation_facts


def _relu_facts(layer) -> LayerFacts:
    """A ReLU with both a negative slope and a cap or threshold becomes several ops in the converter (NEG, MUL,
    MINIMUM ...), whose inner tensors no single output range covers: it stays float."""
    slope = float(layer.negative_slope)
    if slope != 0.0 and (layer.max_value is not None or float(layer.threshold) != 0.0):
        return LayerFacts(channels="pass")
    return LayerFacts(output_range="own", channels="pass")


_BUILTIN[layers.ReLU] = _relu_facts

try:  # keras.applications' ConvNeXt LayerScale (x · γ per channel; quantize_model runs it as a 1×1 depthwise conv)
    from keras.src.applications.convnext import LayerScale as _LayerScale

    _BUILTIN[_LayerScale] = LayerFacts(kernels={"gamma": "last"}, output_range="own", channels="follow")
except ImportError:  # pragma: no cover - another Keras layout
    pass

# Keras ops met as nodes of functional graphs, by the op's class name.
_OPS: dict = {
    name: LayerFacts(output_range="fixed", fixed_range=FIXED_RANGES[key])
    for name, key in (("Sigmoid", "sigmoid"), ("Tanh", "tanh"), ("Softmax", "softmax"), ("LogSoftmax", "log_softmax"))
}
# ops whose TFLite int8 kernel keeps its input's grid (the converter gives input and output one scale): slicing
# (``x[:, 2:10]``), reductions to the max or min, reshapes, transposes, padding, tiling, splitting, reversing
for _name in (
    "GetItem", "Max", "Min", "Reshape", "Transpose", "Squeeze", "ExpandDims", "Pad", "Tile", "Split", "Flip", "MaxPool"
):  # fmt: skip
    _OPS[_name] = _INHERIT
_OPS["Concatenate"] = LayerFacts(output_range="shared", channels="concat")  # quantize_model runs it as the layer
_OPS["Stack"] = _OPS["Concatenate"]  # PACK: as a Concatenate of the inputs each given the new axis
_OPS["Resize"] = _resample_facts
_OPS["AveragePool"] = _BUILTIN[layers.AveragePooling2D]
_OP_DEFAULT = LayerFacts(output_range="own")

_REGISTERED: dict = {}


def register_layer(cls, facts):
    """Declares the facts of a layer class you do not own (for your own class, a ``keras_eff_facts`` method is simpler).

    Subclasses share the facts unless registered themselves; a layer's own ``keras_eff_facts`` method wins over a
    registration. A registration lives in the process; a model saved with quantized layers of the class keeps their
    facts in its file.

    Args:
        cls: A Keras layer class.
        facts: A `LayerFacts`, or a function ``layer -> LayerFacts`` where the facts depend on the layer's settings.

    Returns:
        ``cls``.

    Raises:
        LayerFactsError: If ``cls`` is not a Keras layer class or ``facts`` is neither ``LayerFacts`` nor callable.

    Example:
        ```python
        keras_eff.register_layer(TheirLayer, keras_eff.LayerFacts(output_range="own", channels="pass"))
        keras_eff.register_layer(TheirConv, lambda layer: keras_eff.LayerFacts(
            kernels={"kernel": "last"}, output_range="own" if layer.simple else "float"))
        ```
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise LayerFactsError(f"register_layer expects a Keras layer class, got {cls!r}")
    if not (isinstance(facts, LayerFacts) or callable(facts)):
        raise LayerFactsError(
            f"register_layer({cls.__name__}, ...) expects LayerFacts or a function layer -> "
            f"LayerFacts, got {type(facts).__name__}"
        )
    _REGISTERED[cls] = facts
    return cls


def unregister_layer(cls) -> None:
    """Removes a registration made with `register_layer`; the built-in entries stay.

    Args:
        cls: The registered layer class; a class that is not registered is ignored.

    Returns:
        None. The registry no longer holds ``cls``.
    """
    _REGISTERED.pop(cls, None)


def _declared(layer):
    method = getattr(layer, PROTOCOL, None)
    if method is None:
        return None
    where = f"{type(layer).__name__}.{PROTOCOL}() of layer {getattr(layer, 'name', '?')!r}"
    if not callable(method):
        raise LayerFactsError(f"{where}: {PROTOCOL} must be a method returning keras_eff.LayerFacts")
    try:
        facts = method()
    except LayerFactsError as err:
        raise LayerFactsError(f"{where}: {err}") from err
    if not isinstance(facts, LayerFacts):
        raise LayerFactsError(f"{where} must return keras_eff.LayerFacts, got {type(facts).__name__}")
    return _checked(layer, facts, where)


def _checked(layer, facts, where):
    """Kernels named in the facts must be weights of the (built) layer."""
    if facts.kernels and getattr(layer, "built", False):
        have = {w.path.split("/")[-1] for w in layer.weights} | {n for n in facts.kernels if hasattr(layer, n)}
        missing = [n for n in facts.kernels if n not in have]
        if missing:
            raise LayerFactsError(
                f"{where} names kernels {missing} that layer {layer.name!r} does not have (its weights: {sorted(have)})"
            )
    return facts


def facts_for(op) -> LayerFacts:
    """Looks up what keras-eff knows about a layer or a Keras op: the question every technique asks.

    In this order: the layer's own ``keras_eff_facts()`` method; a registration or built-in entry for its class or
    the nearest base class; for a Keras op in a functional graph, its class name (sigmoid, tanh and softmax get their
    fixed ranges, other ops a range of their own); else `UNKNOWN`.

    Args:
        op: A Keras layer, or a Keras operation met as a node of a functional graph.

    Returns:
        The `LayerFacts` of ``op``; ``UNKNOWN`` (stays float, not pruned or clustered) for a layer nothing is known
        about.

    Raises:
        LayerFactsError: If the layer's ``keras_eff_facts`` is not a method returning ``LayerFacts``, a registered
            function returns something else, or the facts name kernels the built layer does not have.

    Example:
        ```python
        keras_eff.facts_for(keras.layers.Conv2D(8, 3)).prunable   # True
        keras_eff.facts_for(keras.layers.Softmax()).fixed_range  # (0.0, 0.99609375)
        ```
    """
    declared = _declared(op)
    if declared is not None:
        return declared
    if not isinstance(op, keras.layers.Layer):
        entry = _OPS.get(type(op).__name__, _OP_DEFAULT)
        return entry if isinstance(entry, LayerFacts) else entry(op)
    for cls in type(op).__mro__:
        entry = _REGISTERED.get(cls, _BUILTIN.get(cls))
        if entry is None:
            continue
        if isinstance(entry, LayerFacts):
            return entry
        facts = entry(op)
        if not isinstance(facts, LayerFacts):
            raise LayerFactsError(
                f"the facts function registered for {cls.__name__} returned "
                f"{type(facts).__name__} for layer {op.name!r}, not LayerFacts"
            )
        return _checked(op, facts, f"the facts registered for {cls.__name__}")
    return UNKNOWN


def is_known(op) -> bool:
    """Tells whether keras-eff knows a layer or op.

    Args:
        op: A Keras layer or operation.

    Returns:
        True if ``op`` has facts of its own (declared, registered or built in); False where `facts_for` gives
        ``UNKNOWN``.

    Raises:
        LayerFactsError: As `facts_for`.
    """
    return facts_for(op) is not UNKNOWN


def kernel_names(layer) -> tuple:
    """Lists the weights of a layer that are kernels (quantized, pruned, clustered).

    Args:
        layer: A Keras layer.

    Returns:
        A tuple of weight names from the layer's facts, the main kernel last; empty for layers without kernels.
    """
    return tuple(facts_for(layer).kernels)


def main_kernel(layer) -> str:
    """Names the kernel that maps a layer's inputs to its output channels (a BatchNorm after the layer folds into it).

    Args:
        layer: A Keras layer.

    Returns:
        The last kernel of the layer's facts; ``"kernel"`` where the facts list none.
    """
    return facts_for(layer).main_kernel or "kernel"


def kernel_layout(layer, name) -> str:
    """Gives the channel layout of one of a layer's kernels.

    Args:
        layer: A Keras layer.
        name: The kernel's weight name (``"kernel"``, ``"depthwise_kernel"`` ...).

    Returns:
        ``"last"``, ``"depthwise"`` or ``"transpose"`` (see `LayerFacts`); ``"last"`` for a weight the facts do not
        list.
    """
    return facts_for(layer).kernels.get(name, "last")


def channel_shape(layer, name, shape) -> tuple:
    """Gives the shape in which a per-output-channel vector broadcasts against one of a layer's kernels.

    Args:
        layer: A Keras layer.
        name: The kernel's weight name; its layout comes from the layer's facts (see `kernel_layout`).
        shape: The kernel's shape.

    Returns:
        A tuple of the kernel's rank: ``(1, ..., 1, c_out)`` for layout ``"last"``, ``(1, ..., c_in, multiplier)``
        for ``"depthwise"`` (output channel c·m + j), ``(1, ..., c_out, 1)`` for ``"transpose"``.
    """
    layout = kernel_layout(layer, name)
    rank = len(shape)
    if layout == "depthwise":  # (..., c_in, multiplier): output channel c·m + j
        return (1,) * (rank - 2) + tuple(shape[-2:])
    if layout == "transpose":  # (..., c_out, c_in)
        return (1,) * (rank - 2) + (shape[-2], 1)
    return (1,) * (rank - 1) + (shape[-1],)


def registered_classes() -> list:
    """Lists the layer classes the registry has facts for (for tests and reports).

    Returns:
        The classes with built-in facts, then those added by `register_layer`.
    """
    return list(_BUILTIN) + [c for c in _REGISTERED if c not in _BUILTIN]
