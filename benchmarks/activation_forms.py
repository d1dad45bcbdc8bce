"""Activations as users write them: does keras-eff's int8 file compute what its simulation computes, and does it keep
the float model's decisions, beside the converter's own post-training quantization of the float model.

Each Keras activation after a Dense (32 → 48 → activation → Dense 10), written three ways where Keras allows it: a
layer (``Activation(name)``, or ``ELU``/``LeakyReLU``), a Dense's ``activation=`` and a Keras op in the functional
graph (``ops.softplus(h)``). Per row:

- keras-eff: ``quantize_model`` → ``calibrate`` (256 rows) → ``to_tflite`` (full int8, or the refusal it gives) →
  ``compare`` against LiteRT with XNNPACK on 4,000 rows (N(0, 3) inputs): share of outputs bit-exact, max LSB;
  argmax agreement of the int8 file with the float model;
- the converter's own full-int8 PTQ of the float model on the same 256 rows: full int8 or not, and its argmax
  agreement with the float model.

    python -m benchmarks.activation_forms        # about 4 min on 2 cores; results in activation_forms.md/.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import write_run

ACTIVATIONS = (
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "hard_silu", "sigmoid", "hard_sigmoid",
    "tanh", "hard_tanh", "softplus", "softsign", "mish", "exponential", "softmax", "log_softmax", "sparse_sigmoid",
    "tanh_shrink", "squareplus", "log_sigmoid", "sparse_plus", "soft_shrink", "hard_shrink", "linear",
)  # fmt: skip
ROWS, CALIBRATION = 4000, 256


def _op(name):
    """The Keras op computing activation ``name`` on a functional graph's tensor, or None where there is none."""
    from keras import ops

    return getattr(ops, {"exponential": "exp"}.get(name, name), None)


def _model(name, form):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,))
    if form == "argument":
        h = layers.Dense(48, activation=name)(inputs)
    else:
        h = layers.Dense(48)(inputs)
        if form == "layer":
            h = layers.Activation(name, name="act")(h)
        else:
            h = _op(name)(h)
    return keras.Model(inputs, layers.Dense(10)(h))


def _converter_ptq(model, rep):
    """The converter's own full-int8 PTQ of the float model: (full int8?, the file as a TFLiteModel)."""
    import tflite_export as te

    data = te.to_tflite(model, representative_data=rep, allow_float=True)
    return not te.find_float_islands(data), te.TFLiteModel(data)


def measure_model(model, x, calibration=CALIBRATION) -> dict:
    """keras-eff's int8 file of ``model`` against its simulation and the float model, and the converter's own PTQ
    beside it (the columns of this benchmark; ``benchmarks.user_ops`` reuses them)."""
    import keras_eff as ke
    import tflite_export as te

    reference = np.asarray(model.predict(x, verbose=0)).argmax(-1)
    row: dict = {}
    start = time.perf_counter()
    qat = ke.quantize_model(model)
    ke.calibrate(qat, x[:calibration], progress=False)
    try:
        data = te.to_tflite(qat)
    except te.TFLiteExportError as err:
        row.update({"keras-eff int8": f"refused: {type(err).__name__}", "bit-exact %": None, "max LSB": None})
        row["keras-eff argmax vs float %"] = None
    else:
        cmp = te.compare(qat, data, x)
        tfl = te.TFLiteModel(data)
        scale, zp = tfl.outputs[0]["quantization"]
        raw = np.asarray(tfl.predict(x, dequantize_outputs=False)).astype(np.int32)
        sim = te.runtime.quantize(np.asarray(qat.predict(x, verbose=0)), scale, zp).astype(np.int32)
        row.update({"keras-eff int8": "full int8", "bit-exact %": round(100 * float(np.mean(sim == raw)), 3)})
        row["max LSB"] = int(cmp.max_lsb_diff)
        row["keras-eff argmax vs float %"] = round(100 * float(np.mean(raw.argmax(-1) == reference)), 2)
    row["keras-eff s"] = round(time.perf_counter() - start, 2)
    full, converted = _converter_ptq(model, x[:calibration])
    row["converter PTQ int8"] = "full int8" if full else "float islands"
    row["converter argmax vs float %"] = round(
        100 * float(np.mean(np.asarray(converted.predict(x)).argmax(-1) == reference)), 2
    )
    return row


def row_line(r) -> str:
    """A measured row as one line of progress."""
    return (
        f"{r['keras-eff int8']:12s} bit-exact {r['bit-exact %']} max {r['max LSB']} "
        f"argmax {r['keras-eff argmax vs float %']} | converter {r['converter PTQ int8']} "
        f"{r['converter argmax vs float %']}"
    )


def measure(name, form, x) -> dict:
    return {"activation": name, "form": form, **measure_model(_model(name, form), x)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", help="comma-separated (default: all " + str(len(ACTIVATIONS)) + ")")
    args = parser.parse_args(argv)
    names = tuple(a.strip() for a in args.activations.split(",")) if args.activations else ACTIVATIONS
    x = np.random.default_rng(0).normal(0, 3, (ROWS, 32)).astype(np.float32)
    rows = []
    for name in names:
        for form in ("layer", "argument", "op"):
            if form == "op" and _op(name) is None:
                continue
            rows.append(measure(name, form, x))
            print(f"{name:15s} {form:9s} {row_line(rows[-1])}", flush=True)
    exact = [r for r in rows if r["bit-exact %"] is not None]
    notes = (
        f"{len(rows)} forms: {len(exact)} full int8 in keras-eff ({sum(r['max LSB'] == 0 for r in exact)} bit-exact "
        f"on every output, {sum(r['max LSB'] <= 1 for r in exact)} within 1 LSB), "
        f"{sum(r['converter PTQ int8'] == 'full int8' for r in rows)} full int8 by the converter's own PTQ. "
        f"Inputs N(0, 3), {ROWS:,} rows; calibration and the converter's representative data: the first "
        f"{CALIBRATION}. 'argmax vs float': agreement of the int8 file's predictions with the float model's (untrained "
        "Dense layers: a measure of what int8 loses, not an accuracy). Forms without a Keras op (`ops.mish` does not "
        "exist; `keras.activations.mish` cannot take a Keras tensor) are left out."
    )
    title = "Activations as users write them: keras-eff's int8 file vs its simulation"
    write_run("activation_forms", title, rows, notes, "--activations", names if args.activations else None)


if __name__ == "__main__":
    main()
