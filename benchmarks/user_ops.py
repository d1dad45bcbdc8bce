"""Code as users write it around convolutions: Lambda layers, a custom layer without weights, the arithmetic on
constants they put at a model's input (``x * 2.0 - 1.0``, ``(x - mean) / std``) and constant bounds. Does
keras-eff's int8 file compute what its simulation computes, and does it keep the float model's decisions, beside the
converter's own post-training quantization of the float model?

Each form sits in a small CNN (16×16×3 input → [form] → Conv 8 ReLU → [form] → Conv 4 → Dense 10): "input" rows
put it on the model's input, "middle" rows between the two convolutions. The columns are those of
``benchmarks.activation_forms`` (``measure_model``): keras-eff's ``quantize_model`` → ``calibrate`` (256 rows) →
``to_tflite`` compared with LiteRT's XNNPACK on 2,000 rows; the converter's own full-int8 PTQ on the same 256 rows.
Inputs are uniform in [0, 1], or whole pixel values in [0, 255] for the forms that scale pixels.

    python -m benchmarks.user_ops        # about 1 min on 2 cores; results in user_ops.md/.json
"""

from __future__ import annotations

import argparse

import numpy as np

from . import write_run
from .activation_forms import measure_model, row_line

ROWS = 2000
MEAN = [123.7, 116.8, 103.9]
STD = [58.4, 57.1, 57.4]


def _forms():
    """name -> (where, pixels in [0, 255]?, a function of the tensor building the form)."""
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class Swish(layers.Layer):  # a user's layer without weights
        def call(self, x):
            return x * ops.sigmoid(x)

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class ChannelAffine(layers.Layer):  # a user's layer whose weights are operands: x * gamma + beta
        def build(self, input_shape):
            init = keras.initializers
            self.gamma = self.add_weight(name="gamma", shape=input_shape[-1:], initializer=init.RandomUniform(0.5, 2.0))
            self.beta = self.add_weight(name="beta", shape=input_shape[-1:], initializer=init.RandomNormal(0.0, 0.3))

        def call(self, x):
            return x * self.gamma + self.beta

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class LeftScale(layers.Layer):  # the weight on the left of the operator
        def build(self, input_shape):
            self.scale = self.add_weight(
                name="scale", shape=input_shape[-1:], initializer=keras.initializers.RandomUniform(0.5, 2.0)
            )

        def call(self, x):
            return self.scale * x

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class Gate(layers.Layer):  # ops on the weight: the converter folds sigmoid(gate) into a constant
        def build(self, input_shape):
            self.gate = self.add_weight(
                name="gate", shape=input_shape[-1:], initializer=keras.initializers.RandomNormal(0.0, 1.0)
            )

        def call(self, x):
            return x * ops.sigmoid(self.gate)

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class ChannelMix(layers.Layer):  # a user's layer whose weight is a matmul's kernel: traced into a Dense
        def build(self, input_shape):
            c = input_shape[-1]
            self.mix = self.add_weight(name="mix", shape=(c, c), initializer=keras.initializers.Orthogonal(seed=0))

        def call(self, x):
            return ops.matmul(x, self.mix)

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class LearnedClip(layers.Layer):  # a PACT-style learned clipping level: the bound of MINIMUM
        def build(self, input_shape):
            self.log_alpha = self.add_weight(
                name="log_alpha", shape=input_shape[-1:], initializer=keras.initializers.Constant(-0.7)
            )

        def call(self, x):
            return ops.minimum(x, ops.exp(self.log_alpha))

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class ResidualBlock(layers.Layer):  # a user's block of Keras layers
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = layers.Conv2D(8, 3, padding="same", name="conv")
            self.bn = layers.BatchNormalization(name="bn")

        def call(self, x, training=None):
            return ops.relu(self.bn(self.conv(x), training=training)) + x

    @keras.saving.register_keras_serializable(package="benchmarks_user_ops")
    class SqueezeExcite(layers.Layer):  # pooling, two Dense layers, a sigmoid gate on the input
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.pool = layers.GlobalAveragePooling2D(keepdims=True)
            self.squeeze = layers.Dense(4, activation="relu")
            self.excite = layers.Dense(8, activation="sigmoid")

        def call(self, x):
            return x * self.excite(self.squeeze(self.pool(x)))

    mean, std = np.array(MEAN, np.float32), np.array(STD, np.float32)
    lam = layers.Lambda
    return {
        "x / 255": ("input", True, lambda t: t / 255.0),
        "x / 127.5 - 1": ("input", True, lambda t: t / 127.5 - 1.0),
        "x * 2 - 1": ("input", False, lambda t: t * 2.0 - 1.0),
        "(x - 0.5) / 0.25": ("input", False, lambda t: (t - 0.5) / 0.25),
        "(x - mean) / std, per channel": ("input", True, lambda t: (t - mean) / std),
        "Lambda(x / 255)": ("input", True, lambda t: lam(lambda v: v / 255.0)(t)),
        "ops.minimum(x, 0.5)": ("middle", False, lambda t: ops.minimum(t, 0.5)),
        "ops.clip(x, 0.1, 0.9)": ("middle", False, lambda t: ops.clip(t, 0.1, 0.9)),
        "Lambda(x * 2)": ("middle", False, lambda t: lam(lambda v: v * 2.0)(t)),
        "Lambda(x + 1)": ("middle", False, lambda t: lam(lambda v: v + 1.0)(t)),
        "Lambda(tanh)": ("middle", False, lambda t: lam(lambda v: ops.tanh(v))(t)),
        "Lambda(|x - 0.5|)": ("middle", False, lambda t: lam(lambda v: ops.abs(v - 0.5))(t)),
        "Lambda(x - mean over channels)": (
            "middle",
            False,
            lambda t: lam(lambda v: v - ops.mean(v, axis=-1, keepdims=True))(t),
        ),
        "Lambda(sqrt(x + 0.1))": ("middle", False, lambda t: lam(lambda v: ops.sqrt(v + 0.1))(t)),
        "Lambda(x * x)": ("middle", False, lambda t: lam(lambda v: v * v)(t)),
        "Lambda(sin)": ("middle", False, lambda t: lam(lambda v: ops.sin(v))(t)),
        "custom layer x * sigmoid(x)": ("middle", False, lambda t: Swish()(t)),
        "custom layer x * gamma + beta (weights)": ("middle", False, lambda t: ChannelAffine()(t)),
        "custom layer scale * x (weights)": ("middle", False, lambda t: LeftScale()(t)),
        "custom layer x @ w (weights)": ("middle", False, lambda t: ChannelMix()(t)),
        "custom layer x * sigmoid(gate) (weights)": ("middle", False, lambda t: Gate()(t)),
        "custom layer min(x, exp(log_alpha)) (weights)": ("middle", False, lambda t: LearnedClip()(t)),
        "custom residual block (Conv2D + BatchNormalization)": ("middle", False, lambda t: ResidualBlock()(t)),
        "custom squeeze-excite block (Dense layers)": ("middle", False, lambda t: SqueezeExcite()(t)),
        "a Conv2D called twice (shared weights)": ("middle", False, _twice(layers.Conv2D, 8, 3, padding="same")),
        "a Dense called twice (shared weights)": ("middle", False, _twice(layers.Dense, 8)),
    }


def _twice(cls, *args, **kwargs):
    """A form that calls one new layer twice, a ReLU between: weights shared by the two calls."""
    from keras import ops

    def form(t):
        layer = cls(*args, **kwargs)
        return layer(ops.relu(layer(t)))

    return form


def _model(where, form):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    h = form(inputs) if where == "input" else inputs
    h = layers.Conv2D(8, 3, activation="relu")(h)
    h = form(h) if where == "middle" else h
    h = layers.Conv2D(4, 3)(h)
    return keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    forms = _forms()
    names = [n.strip() for n in args.forms.split(",")] if args.forms else list(forms)
    unknown = [n for n in names if n not in forms]
    if unknown:
        parser.error(f"unknown forms {unknown}; the forms: {list(forms)}")
    uniform = np.random.default_rng(0).random((ROWS, 16, 16, 3))
    rows = []
    for name in names:
        where, pixels, form = forms[name]
        x = (np.round(uniform * 255.0) if pixels else uniform).astype(np.float32)
        rows.append({"form": name, "where": where, **measure_model(_model(where, form), x)})
        print(f"{name:32s} {where:6s} {row_line(rows[-1])}", flush=True)
    exact = [r for r in rows if r["bit-exact %"] is not None]
    notes = (
        f"{len(rows)} forms: {len(exact)} exported by keras-eff ({sum(r['max LSB'] == 0 for r in exact)} bit-exact "
        f"on every output), {sum(r['converter PTQ int8'] == 'full int8' for r in rows)} full int8 by the "
        "converter's own PTQ. keras-eff traces a Lambda, a custom layer built from Keras layers, or one whose weights "
        "(or Keras ops on them) are operands of ADD, SUB, MUL, a division, bounds of MINIMUM / MAXIMUM or a matmul's "
        "kernel (they stay trainable), "
        "into the layers and ops it computes, computes an op "
        "with a constant operand as the file's integer ADD, SUB or MUL, and keeps a constant "
        "minimum, maximum or clip on its input's grid. `Lambda(sin)` is refused "
        "without `allow_float` (TFLite has no int8 SIN). 'argmax vs float': agreement of the int8 file's "
        f"predictions with the float model's (untrained layers: what int8 loses, not an accuracy). {ROWS:,} rows; "
        "calibration and the converter's representative data: the first 256."
    )
    title = "Code as users write it: keras-eff's int8 file vs its simulation"
    write_run("user_ops", title, rows, notes, "--forms", names if args.forms else None)


if __name__ == "__main__":
    main()
