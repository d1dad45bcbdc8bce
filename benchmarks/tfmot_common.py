"""What both sides of the keras-eff vs TF-MOT benchmark share, importable under Keras 3 and under tf_keras alike.

This file imports neither keras_eff nor a Keras (only ``tflite_export.files``, the shared file helpers, which import
neither): the TF-MOT worker runs it in its own environment (tf_keras, Keras 2), the keras-eff worker in the project's
(Keras 3). It holds

- one description of each architecture (a list of layers with kinds and sizes) and ``build(spec, K)``, which makes
  it with whichever Keras module ``K`` is passed (``keras`` or ``tf_keras``), with the same layer names;
- weights saved and loaded by layer name, so that both frameworks start from the same numbers;
- the data file (training and test slices, and the order of the training images for every epoch), the job spec
  and the result, as JSON;
- the pruning schedule's steps, and the interleaved timing of training steps, computed the same way for both.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from tflite_export.files import atomic_write, atomic_write_npz  # no Keras, no TensorFlow
from tflite_export.files import read_json as _read_json

# --- architectures ------------------------------------------------------------------------------------------------


def _conv_block(i, filters, bn_momentum=0.9, pool=True):
    block = [
        {"kind": "conv", "name": f"conv{i}", "filters": filters, "kernel": 3, "strides": 1, "bias": False},
        {"kind": "bn", "name": f"bn{i}", "momentum": bn_momentum},
        {"kind": "relu", "name": f"relu{i}"},
    ]
    return block + ([{"kind": "maxpool", "name": f"pool{i}"}] if pool else [])


def _ds_block(i, filters, stride, bn_momentum=0.9):
    return [
        {"kind": "depthwise", "name": f"dw{i}", "kernel": 3, "strides": stride, "bias": False},
        {"kind": "bn", "name": f"dw{i}_bn", "momentum": bn_momentum},
        {"kind": "relu", "name": f"dw{i}_relu6", "max_value": 6.0},
        {"kind": "conv", "name": f"pw{i}", "filters": filters, "kernel": 1, "strides": 1, "bias": False},
        {"kind": "bn", "name": f"pw{i}_bn", "momentum": bn_momentum},
        {"kind": "relu", "name": f"pw{i}_relu6", "max_value": 6.0},
    ]


def small_cnn_spec(width=16, num_classes=10):
    """conv-BN-ReLU ×3 (two with max pooling), global average pooling, a dense classifier (= models.small_cnn)."""
    layers = []
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        layers += _conv_block(i, filters, pool=i < 2)
    layers += [{"kind": "gap", "name": "gap"}, {"kind": "dense", "name": "logits", "units": num_classes}]
    return {"name": f"small_cnn_w{width}", "input_shape": [28, 28, 1], "layers": layers}


def ds_cnn_spec(width=16, num_classes=10):
    """A MobileNet-style depthwise-separable CNN with BN and ReLU6: keras_eff.models.ds_cnn."""
    layers = [
        {"kind": "conv", "name": "stem", "filters": width, "kernel": 3, "strides": 2, "bias": False},
        {"kind": "bn", "name": "stem_bn", "momentum": 0.9},
        {"kind": "relu", "name": "stem_relu6", "max_value": 6.0},
    ]
    for i, (filters, stride) in enumerate(((2 * width, 1), (4 * width, 2), (4 * width, 1))):
        layers += _ds_block(i, filters, stride)
    layers += [{"kind": "gap", "name": "gap"}, {"kind": "dense", "name": "logits", "units": num_classes}]
    return {"name": f"ds_cnn_w{width}", "input_shape": [28, 28, 1], "layers": layers}


ARCHITECTURES = {"small_cnn": small_cnn_spec, "ds_cnn": ds_cnn_spec}
LAYER_KINDS = ("conv", "depthwise", "bn", "relu", "maxpool", "gap", "dense")


def build(spec: dict, K):
    """The Functional model ``spec`` describes, made with the Keras module ``K`` (``keras`` or ``tf_keras``)."""
    L = K.layers
    inputs = K.Input(tuple(spec["input_shape"]), name="image")
    x = inputs
    for layer in spec["layers"]:
        kind, name = layer["kind"], layer["name"]
        if kind == "conv":
            x = L.Conv2D(
                layer["filters"],
                layer["kernel"],
                strides=layer.get("strides", 1),
                padding="same",
                use_bias=layer.get("bias", True),
                name=name,
            )(x)
        elif kind == "depthwise":
            x = L.DepthwiseConv2D(
                layer["kernel"],
                strides=layer.get("strides", 1),
                padding="same",
                use_bias=layer.get("bias", True),
                name=name,
            )(x)
        elif kind == "bn":
            x = L.BatchNormalization(momentum=layer.get("momentum", 0.9), name=name)(x)
        elif kind == "relu":
            x = L.ReLU(layer.get("max_value"), name=name)(x)
        elif kind == "maxpool":
            x = L.MaxPooling2D(name=name)(x)
        elif kind == "gap":
            x = L.GlobalAveragePooling2D(name=name)(x)
        elif kind == "dense":
            x = L.Dense(layer["units"], name=name)(x)
        else:
            raise ValueError(f"layer {name!r}: unknown kind {kind!r}; the builder knows {', '.join(LAYER_KINDS)}")
    return K.Model(inputs, x, name=spec["name"])


# --- weights ------------------------------------------------------------------------------------------------------


def compile_classifier(model, lr: float, steps: int, K) -> None:
    """The same training recipe on both sides: Adam with cosine decay to 5 % over ``steps``, logits cross-entropy.
    ``K`` is ``keras`` or ``tf_keras``."""
    schedule = K.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    model.compile(
        optimizer=K.optimizers.Adam(schedule),
        loss=K.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def save_weights(model, path) -> None:
    """Every layer's weights as ``name/index`` arrays in one .npz (written atomically)."""
    arrays = {f"{layer.name}/{i}": np.asarray(w) for layer in model.layers for i, w in enumerate(layer.get_weights())}
    atomic_write_npz(path, arrays)


def load_weights(model, path) -> None:
    """Sets the weights saved by ``save_weights`` by layer name; every weighted layer must be found, with its shapes."""
    with np.load(path, allow_pickle=False) as data:
        saved = {k: data[k] for k in data.files}
    used = set()
    for layer in model.layers:
        n = len(layer.get_weights())
        if not n:
            continue
        keys = [f"{layer.name}/{i}" for i in range(n)]
        missing = [k for k in keys if k not in saved]
        if missing:
            raise ValueError(
                f"{path} holds no weights for layer {layer.name!r} ({missing[0]}): was it saved from "
                f"the same architecture description?"
            )
        layer.set_weights([saved[k] for k in keys])
        used.update(keys)
    unused = sorted(set(saved) - used)
    if unused:
        raise ValueError(f"{path} holds weights no layer of {model.name!r} took: {', '.join(unused[:3])}")


# --- data, jobs and results ---------------------------------------------------------------------------------------


def write_data(path, x_train, y_train, x_test, y_test, orders: dict) -> None:
    """The slices and, per seed, the training-image order of every epoch (``orders[seed]``: epochs × n)."""
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    arrays.update({f"order_{seed}": np.asarray(o, np.int32) for seed, o in orders.items()})
    atomic_write_npz(path, arrays)


def read_data(path, seed: int) -> dict:
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        out["order"] = data[f"order_{seed}"]
    return out


def epochs_of(data: dict, first: int, count: int):
    """The training images of epochs ``first`` .. ``first + count - 1`` in the harness's order, concatenated: both
    sides fit once over them with ``shuffle=False``."""
    if first + count > len(data["order"]):
        raise ValueError(
            f"the data file orders {len(data['order'])} epochs; epochs {first}..{first + count - 1} were asked for"
        )
    idx = np.concatenate(list(data["order"][first : first + count]))
    return data["x_train"][idx], data["y_train"][idx]


JOB_KEYS = ("framework", "seed", "arch", "techniques", "hparams", "data", "weights", "out_dir")


def write_json(path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))


def read_job(path) -> dict:
    job = _read_json(path, "job spec")
    missing = [k for k in JOB_KEYS if k not in job]
    if missing:
        raise ValueError(f"job spec {path} lacks {', '.join(missing)}")
    return job


def read_json(path) -> dict:
    return _read_json(path, "result file")


# --- training schedule and timing ---------------------------------------------------------------------------------


def steps_per_epoch(hp: dict, n_train: int) -> int:
    return int(np.ceil(n_train / hp["batch_size"]))


def pruning_steps(hp: dict, n_train: int) -> tuple[int, int]:
    """``(end_step, frequency)`` of the PolynomialDecay both sides use: the ramp over the first half of the
    fine-tuning steps, masks updated 8 times per epoch, and ``end_step`` on the update grid, so that TF-MOT (which
    updates only on multiples of ``frequency``) reaches the target too."""
    steps = steps_per_epoch(hp, n_train) * hp["tune_epochs"]
    frequency = max(1, steps_per_epoch(hp, n_train) // 8)
    end_step = max(frequency, frequency * int(round(steps / 2 / frequency)))
    return end_step, frequency


def interleaved_ratio(fit_float, fit_technique, repeats: int) -> dict:
    """Median time ratio technique/float of equal training blocks, alternating ABBA after one warm-up of each."""
    fit_float()
    fit_technique()
    ratios, tf, tt = [], [], []
    for r in range(repeats):
        order = (("f", fit_float), ("t", fit_technique)) if r % 2 == 0 else (("t", fit_technique), ("f", fit_float))
        block = {}
        for key, fn in order:
            t0 = time.perf_counter()
            fn()
            block[key] = time.perf_counter() - t0
        tf.append(block["f"])
        tt.append(block["t"])
        ratios.append(block["t"] / block["f"])
    return {
        "ratio": float(np.median(ratios)),
        "ratio_min": float(np.min(ratios)),
        "ratio_max": float(np.max(ratios)),
        "float_block_s": tf,
        "technique_block_s": tt,
    }


def accuracy(logits, y) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def kernel_sparsity(model) -> float:
    """Share of exact zeros over every conv/depthwise/dense kernel of a plain (stripped) model."""
    zeros = total = 0
    for layer in model.layers:
        for w in layer.weights:
            name = w.name.split("/")[-1].split(":")[0]
            if name in ("kernel", "depthwise_kernel"):
                a = np.asarray(w)
                zeros += int(np.sum(a == 0))
                total += a.size
    return zeros / total if total else 0.0


# --- the job driver both workers run ------------------------------------------------------------------------------

TECHNIQUES = ("float", "qat", "prune50", "prune80", "prune50_log", "prune80_log", "cluster16", "pqat", "cqat")
DEPENDS = {"pqat": "prune50", "cqat": "cluster16"}


def run_job(job: dict, side) -> dict:
    """Trains, strips and exports every technique of ``job`` with ``side`` (the framework's adapter), the same way
    for both frameworks, and writes the result JSON next to the int8 files.

    ``side`` provides ``K`` (the Keras module), ``seed(n)``, ``versions()``, ``compile(model, lr, steps)`` and
    ``plan(technique, base, cache, data, steps)`` → ``{"model", "lr", "phase", "callbacks", "finish"}``: the model to
    train, its peak learning rate, ``"tune"`` or ``"qat"`` (which epochs of the order it trains on), the fit
    callbacks, and ``finish(model) -> (plain model for Keras accuracy, int8 TFLite bytes)``.
    """
    hp, seed = job["hparams"], job["seed"]
    data = read_data(job["data"], seed)
    x_train, xt, yt = data["x_train"], data["x_test"], data["y_test"]
    phases = {
        "tune": (hp["pre_epochs"], hp["tune_epochs"]),
        "qat": (hp["pre_epochs"] + hp["tune_epochs"], hp["qat_epochs"]),
    }
    bs = hp["batch_size"]

    def base():
        model = build(job["arch"], side.K)
        load_weights(model, job["weights"])
        return model

    cache, rows = {}, []
    timing_float = None
    xb = x_train[: hp["timing_steps"] * bs]
    yb = data["y_train"][: hp["timing_steps"] * bs]
    for k, technique in enumerate(job["techniques"]):
        if technique in DEPENDS and DEPENDS[technique] not in cache:
            raise ValueError(f"{technique} starts from {DEPENDS[technique]}'s model: list that technique before it")
        side.seed(1000 * seed + k)
        x, y = epochs_of(data, *phases["qat" if technique in ("pqat", "cqat") else "tune"])
        steps = int(np.ceil(len(x) / bs))
        plan = side.plan(technique, base(), cache, data, steps)
        side.compile(plan["model"], plan["lr"], steps)
        print(f"[{job['framework']} seed {seed}] {technique}: {len(x):,} images, {steps} steps", flush=True)
        t0 = time.perf_counter()
        plan["model"].fit(x, y, batch_size=bs, epochs=1, shuffle=False, verbose=2, callbacks=plan["callbacks"])
        train_s = time.perf_counter() - t0
        final, int8 = plan["finish"](plan["model"])
        cache[technique] = final
        keras_acc = accuracy(final.predict(xt, batch_size=500, verbose=0), yt)
        name = f"{job['framework']}_{job['arch']['name']}_{technique}_s{seed}.tflite"
        path = os.path.join(job["out_dir"], name)
        atomic_write(path, int8)

        # training cost against float training in this framework: fresh models, interleaved equal blocks
        if timing_float is None:
            timing_float = base()
            side.compile(timing_float, hp["lr_tune"], hp["timing_steps"])
        timed = side.plan(technique, base(), cache, data, hp["timing_steps"])
        side.compile(timed["model"], timed["lr"], hp["timing_steps"])
        timing = interleaved_ratio(  # both are called here, in this iteration: bound by default for clarity
            lambda m=timing_float: m.fit(xb, yb, batch_size=bs, epochs=1, shuffle=False, verbose=0),
            lambda t=timed: t["model"].fit(
                xb, yb, batch_size=bs, epochs=1, shuffle=False, verbose=0, callbacks=t["callbacks"]
            ),
            hp["timing_repeats"],
        )
        rows.append(
            {
                "technique": technique,
                "keras_acc": keras_acc,
                "tflite": name,
                "train_s": train_s,
                "train_steps": steps,
                "sparsity": kernel_sparsity(final),
                "timing": timing,
            }
        )
        print(
            f"[{job['framework']} seed {seed}] {technique}: keras acc {keras_acc:.4f}, "
            f"sparsity {rows[-1]['sparsity']:.3f}, step ×float {timing['ratio']:.2f}, fit {train_s:.0f} s",
            flush=True,
        )
    result = {
        "framework": job["framework"],
        "seed": seed,
        "arch": job["arch"]["name"],
        "rows": rows,
        "versions": side.versions(),
    }
    write_json(os.path.join(job["out_dir"], f"result_{job['framework']}_{job['arch']['name']}_s{seed}.json"), result)
    return result
