"""Activations that TFLite has no single int8 op for, written as a chain of the int8 ops it has.

The converter splits such an activation into several ops (softplus into EXP, ADD, LOG) and, without a range on each
inner tensor, leaves them in float. Written here as Keras ops with a range after each step, every inner tensor gets a
grid: the simulation rounds where the file rounds, and the file is full int8.

The chains are chosen for int8, not copied from the converter's: an exponential only ever sees ``min(x, 0)`` (its
output lies in (0, 1], where an int8 grid resolves it), and softplus is ``max(x, 0) − log(sigmoid(|x|))`` rather than
``log(1 + exp(x))``, whose EXP output spans up to e^max and rounds the exponential of every negative input to zero
or one step. (The converter's own post-training quantization agrees with the float model on 23 %, 23 % and 71 % of
argmaxes for softplus, mish and selu; these chains, on 98 %: ``benchmarks/results/activation_forms.md``.)

``min(x, 0)`` keeps its input's grid (TFLite's MINIMUM computes on one grid) and takes no range of its own; every
other step does. Measured after a Dense on 4,000 rows: every chain bit-exact on XNNPACK, and on LiteRT's built-in
kernels with the integer kernels set so (mish within 1 LSB); on TFLite Micro those without EXP, LOG or SQRT, which
Micro has in float32 only: ELU, CELU, SELU, softplus, mish, log_sigmoid and squareplus cannot run there
(``tflite_export.unsupported_micro_ops`` names the op).

A step may be marked ``truncates``: int8 SQRT (squareplus's) truncates its output instead of rounding it
(``static_cast<int>(sqrt(x) / scale) + zero_point``, read in LiteRT's ``elementwise.cc``); at inference the
simulation quantizes ``sqrt(x) − scale / 2`` there, which lands on the same code.
"""

from __future__ import annotations

from keras import ops

from ..layers import FIXED_RANGES

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def _hard_sigmoid(x, q):
    """ReLU6(x + 3) × 1/6: ADD with RELU6 fused, then MUL (MobileNetV3's hand-written form)."""
    shifted = q(ops.relu6(ops.add(x, 3.0)), "shifted")
    return q(ops.multiply(shifted, 1.0 / 6.0), "hard_sigmoid")


def _tanh_shrink(x, q):
    """x − tanh(x): TANH on its fixed grid, then SUB."""
    return q(ops.subtract(x, q(ops.tanh(x), "tanh", FIXED_RANGES["tanh"])), "tanh_shrink")


def _softsign(x, q):
    """x / (1 + |x|): ABS, ADD, DIV."""
    denominator = q(ops.add(q(ops.abs(x), "abs"), 1.0), "denominator")
    return q(ops.divide(x, denominator), "softsign")


def _sparse_sigmoid(x, q):
    """clip((x + 1) / 2, 0, 1) = hard_sigmoid(3x): MUL, then ADD with RELU6 fused, then MUL. (A clip to [−1, 1]
    first would be fused by the converter into the op before it, whose output would then skip a rounding.)"""
    shifted = q(ops.relu6(ops.add(q(ops.multiply(x, 3.0), "scaled"), 3.0)), "shifted")
    return q(ops.multiply(shifted, 1.0 / 6.0), "sparse_sigmoid")


def _exponential_linear(x, q, name, alpha=1.0, inner=1.0, outer=1.0):
    """outer · (max(x, 0) + α · (exp(min(x, 0) / inner) − 1)): ELU (inner = outer = 1), CELU (inner = α) and SELU
    (outer = its scale). The EXP only sees min(x, 0): its output lies in (0, 1]."""
    negative = ops.minimum(x, 0.0)
    if inner != 1.0:
        negative = q(ops.multiply(negative, 1.0 / inner), "scaled")
    below = q(ops.subtract(q(ops.exp(negative), "exp"), 1.0), "exp_minus_one")
    if outer * alpha != 1.0:
        below = q(ops.multiply(below, outer * alpha), "negative_part")
    if outer != 1.0:  # MUL with RELU fused
        above = q(ops.maximum(ops.multiply(x, outer), 0.0), "positive_part")
    else:
        above = _positive_part(x, q)
    return q(ops.add(above, below), name)


def _elu(x, q, alpha=1.0):
    return _exponential_linear(x, q, "elu", alpha=alpha)


def _celu(x, q, alpha=1.0):
    return _exponential_linear(x, q, "celu", alpha=alpha, inner=alpha)


def _selu(x, q):
    return _exponential_linear(x, q, "selu", alpha=_SELU_ALPHA, outer=_SELU_SCALE)


def _softplus(x, q, name="softplus"):
    """max(x, 0) − log(sigmoid(|x|)): ABS, LOGISTIC on its fixed grid (its output lies in [0.5, 1)), LOG, SUB."""
    log_sigmoid = q(ops.log(q(ops.sigmoid(q(ops.abs(x), "abs")), "sigmoid", FIXED_RANGES["sigmoid"])), "log")
    return q(ops.subtract(_positive_part(x, q), log_sigmoid), name)


def _positive_part(x, q):
    """max(x, 0) as x − min(x, 0): MINIMUM on x's grid, SUB. (A RELU on x would be fused by the converter into the op
    that computes x, which it then duplicates for x's other readers: one rounding in the file, two in a simulation.)"""
    return q(ops.subtract(x, ops.minimum(x, 0.0)), "positive_part")


def _log_sigmoid(x, q):
    """min(x, 0) + log(sigmoid(|x|)) (= −softplus(−x)): MINIMUM on x's grid, ABS, LOGISTIC, LOG, ADD."""
    log_sigmoid = q(ops.log(q(ops.sigmoid(q(ops.abs(x), "abs")), "sigmoid", FIXED_RANGES["sigmoid"])), "log")
    return q(ops.add(ops.minimum(x, 0.0), log_sigmoid), "log_sigmoid")


def _soft_shrink(x, q, threshold=0.5):
    """relu(x − t) + min(x + t, 0): ADD with RELU fused, ADD, MINIMUM on that grid, ADD."""
    above = q(ops.relu(ops.subtract(x, float(threshold))), "above")
    below = ops.minimum(q(ops.add(x, float(threshold)), "shifted"), 0.0)
    return q(ops.add(above, below), "soft_shrink")


def _sparse_plus(x, q):
    """(clip(x, −1, 1) + 1)² / 4 + relu(x − 1), the clip as ReLU6(3x + 3) (= 3·(clip + 1)) so that no clip is fused
    into the op before: MUL, ADD with RELU6, MUL (u·u), MUL (1/36), ADD with RELU, ADD."""
    u = q(ops.relu6(ops.add(q(ops.multiply(x, 3.0), "scaled"), 3.0)), "shifted")
    square = q(ops.multiply(q(ops.multiply(u, u), "square"), 1.0 / 36.0), "quadratic")
    return q(ops.add(square, q(ops.relu(ops.subtract(x, 1.0)), "linear_part")), "sparse_plus")


def _squareplus(x, q, b=4.0):
    """(x + sqrt(x² + b)) / 2: MUL (x · x), ADD, SQRT (which truncates), ADD, MUL."""
    shifted = q(ops.add(q(ops.multiply(x, x), "square"), float(b)), "shifted")
    root = q(ops.sqrt(shifted), "sqrt", truncates=True)
    return q(ops.multiply(q(ops.add(x, root), "sum"), 0.5), "squareplus")


def _hard_shrink(x, q, threshold=0.5):
    """x where |x| > t, else 0: ABS, GREATER (ABS's integers against the threshold), SELECT_V2."""
    return q(ops.where(ops.greater(q(ops.abs(x), "abs"), float(threshold)), x, 0.0), "hard_shrink")


def _sqrt(x, q):
    """SQRT, which truncates onto its output grid (an ``ops.sqrt`` in a functional graph or a traced Lambda)."""
    return q(ops.sqrt(x), "sqrt", truncates=True)


def _mish(x, q):
    """x · tanh(softplus(x)): softplus's chain, TANH on its fixed grid, MUL."""
    gate = q(ops.tanh(_softplus(x, q, "softplus")), "tanh", FIXED_RANGES["tanh"])
    return q(ops.multiply(x, gate), "mish")


CHAINS = {
    "hard_sigmoid": _hard_sigmoid,
    "tanh_shrink": _tanh_shrink,
    "softsign": _softsign,
    "sparse_sigmoid": _sparse_sigmoid,
    "elu": _elu,
    "celu": _celu,
    "selu": _selu,
    "softplus": _softplus,
    "mish": _mish,
    "squareplus": _squareplus,
    "log_sigmoid": _log_sigmoid,
    "soft_shrink": _soft_shrink,
    "sparse_plus": _sparse_plus,
    "hard_shrink": _hard_shrink,
    "sqrt": _sqrt,
}

# the Keras ops of a functional graph (``ops.celu(x)``) by class name -> (activation, its parameters from the op)
OP_CHAINS = {
    "HardSigmoid": ("hard_sigmoid", ()),
    "TanhShrink": ("tanh_shrink", ()),
    "Softsign": ("softsign", ()),
    "SparseSigmoid": ("sparse_sigmoid", ()),
    "Elu": ("elu", ("alpha",)),
    "Celu": ("celu", ("alpha",)),
    "Selu": ("selu", ()),
    "Softplus": ("softplus", ()),
    "Mish": ("mish", ()),
    "Squareplus": ("squareplus", ("b",)),
    "LogSigmoid": ("log_sigmoid", ()),
    "SoftShrink": ("soft_shrink", ("threshold",)),
    "SparsePlus": ("sparse_plus", ()),
    "HardShrink": ("hard_shrink", ("threshold",)),
    "Sqrt": ("sqrt", ()),
}


def chain(name, x, q, **params):
    """The activation ``name`` on ``x`` as its chain of int8 ops.

    Args:
        name: An activation in `CHAINS`.
        x: Its input (a Keras tensor on an int8 grid).
        q: ``q(tensor, step, fixed_range=None, truncates=False) -> tensor``: puts ``tensor`` on the grid of the step
            ``step`` (a range learned or calibrated, or TFLite's fixed one; ``truncates``: the int8 op truncates
            onto it instead of rounding).
        **params: The activation's parameters (ELU's and CELU's ``alpha``, squareplus's ``b``, soft_shrink's and
            hard_shrink's ``threshold``).

    Returns:
        The activation's output, on the last step's grid (the step named after the activation).
    """
    return CHAINS[name](x, q, **params)


def op_params(op) -> tuple[str, dict]:
    """The activation a Keras op node computes and its parameters: ``("celu", {"alpha": 0.5})``."""
    name, fields = OP_CHAINS[type(op).__name__]
    return name, {field: float(getattr(op, field)) for field in fields}
