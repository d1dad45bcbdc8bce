"""Running TFLite models with the LiteRT interpreter: (de)quantization for the caller, batches, latency."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .model_file import make_interpreter, read_model, resolve_kernels


def quantize(x, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Puts float values on the integer grid of a tensor: round half away from zero, as TFLite does, then clip.

    Args:
        x: Float values (array-like).
        scale: The tensor's quantization scale.
        zero_point: The tensor's zero point.
        dtype: The integer type (int8, uint8, int16, ...); values are clipped to its range.

    Returns:
        ``round(x / scale) + zero_point``, clipped, as an array of ``dtype``.

    Example:
        ```python
        q = tflite_export.quantize(x, 0.0039, -128)  # int8
        ```
    """
    info = np.iinfo(dtype)
    v = np.asarray(x, np.float64) / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """Integer values of a tensor back to the real values they stand for.

    Args:
        q: Integer values (array-like).
        scale: The tensor's quantization scale.
        zero_point: The tensor's zero point.

    Returns:
        ``(q - zero_point) * scale`` as a float32 array.

    Example:
        ```python
        y = tflite_export.dequantize(raw, 0.00390625, -128)
        ```
    """
    return ((np.asarray(q, np.float32) - zero_point) * scale).astype(np.float32)


@dataclass
class Latency:
    """Batch-1 inference latency of a TFLite model on LiteRT, as measured by ``TFLiteModel.latency``.

    Attributes:
        median_us: The median wall time of one inference, in microseconds.
        p10_us: Its 10th percentile.
        p90_us: Its 90th percentile.
        runs: The number of timed inferences.
        num_threads: The interpreter's thread count.
    """

    median_us: float
    p10_us: float
    p90_us: float
    runs: int
    num_threads: int

    def as_dict(self):
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field.
        """
        return asdict(self)


def _natural_key(name: str) -> list:
    """Sort key that puts ``output_2`` before ``output_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _signature_names(interpreter) -> tuple[dict, dict]:
    """Tensor index -> name in the file's signature, for inputs and outputs; empty without exactly one signature.

    A file from ``to_tflite`` names its inputs as the Keras inputs and its outputs ``output_0``, ``output_1``, ...
    in the Keras model's order (dict outputs by their keys); the subgraph lists them in an order of its own (a model
    with twelve outputs came back as output_9, output_4, output_1, ...), which is why ``TFLiteModel`` reads the
    signature."""
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return {}, {}
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    return (
        {d["index"]: name for name, d in runner.get_input_details().items()},
        {d["index"]: name for name, d in runner.get_output_details().items()},
    )


class TFLiteModel:
    """A loaded TFLite model. ``predict`` takes and returns float arrays; int8 I/O is (de)quantized here.

    Several inputs are given as one dict keyed by ``input_names`` (for a file from ``to_tflite``, the Keras input
    names), or as arrays in the order of ``input_names``. Several outputs come back as a list in the order of
    ``output_names``: the order of the file's signature, which for a file from ``to_tflite`` is the Keras model's
    (``output_0``, ``output_1``, ...).

    Args:
        model: A TFLite model, as bytes or a path.
        num_threads: The LiteRT interpreter's thread count.
        use_xnnpack: Run with LiteRT's default XNNPACK delegate; False runs its built-in kernels.
        kernels: ``"xnnpack"``, ``"builtin"`` or ``"reference"`` (LiteRT's reference kernels, whose ADD rounds as
            TFLite Micro's); overrides ``use_xnnpack`` (see ``make_interpreter``).

    Attributes:
        model_bytes: The model's bytes.
        num_threads: The interpreter's thread count.
        kernels: The LiteRT kernels that run the model: ``"xnnpack"``, ``"builtin"`` or ``"reference"``.
        input_names: The inputs' names (the signature's, else the tensors'), in the order positional arrays are taken.
        output_names: The outputs' names, in the order outputs are returned.
        output_positions: For each output as returned, its position among the subgraph's outputs (the order
            TFLite Micro returns them in).

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.
        ValueError: If ``kernels`` is not one of the three names.

    Example:
        ```python
        tfl = tflite_export.TFLiteModel("model.tflite")
        probs = tfl.predict(x_test)  # float in, float out
        print(tfl.latency())
        both = tfl.predict({"image": images, "extra": features})  # several inputs, by name
        ```
    """

    def __init__(self, model, num_threads: int = 1, use_xnnpack: bool = True, kernels: str | None = None):
        self.kernels = resolve_kernels(kernels, use_xnnpack)
        self.model_bytes = read_model(model)
        self.num_threads = num_threads
        self._interpreter = make_interpreter(self.model_bytes, num_threads=num_threads, kernels=self.kernels)
        self._batch: int | None = None
        in_names, out_names = _signature_names(self._interpreter)
        self.input_names = [in_names.get(d["index"], d["name"]) for d in self.inputs]
        subgraph_outputs = self._interpreter.get_output_details()
        names = [out_names.get(d["index"], d["name"]) for d in subgraph_outputs]
        order = sorted(range(len(names)), key=lambda k: _natural_key(names[k])) if out_names else range(len(names))
        self.output_positions = list(order)
        self.output_names = [names[k] for k in self.output_positions]

    @property
    def inputs(self):
        """LiteRT's input details: one dict per input (``name``, ``shape``, ``dtype``, ``quantization``, ...), in the
        order of ``input_names``."""
        return self._interpreter.get_input_details()

    @property
    def outputs(self):
        """LiteRT's output details: one dict per output, as for ``inputs``, in the order of ``output_names``."""
        details = self._interpreter.get_output_details()
        return [details[k] for k in self.output_positions]

    def arrange_inputs(self, x) -> list:
        """The model's inputs as a list in the order of ``input_names``.

        Args:
            x: One array (a one-input model), a list or tuple of arrays in the order of ``input_names``, or a dict
                keyed by the input names. For a one-input model, a list of more than one element is one array.

        Returns:
            A list with one array per input.

        Raises:
            ValueError: If the number of arrays or the dict's keys do not match the model's inputs.
        """
        if isinstance(x, Mapping):
            missing = [n for n in self.input_names if n not in x]
            unknown = sorted(set(x) - set(self.input_names))
            if missing or unknown:
                raise ValueError(
                    f"the inputs are keyed by name: the model takes {self.input_names}"
                    + (f"; missing {missing}" if missing else "")
                    + (f"; unknown {unknown}" if unknown else "")
                )
            return [x[n] for n in self.input_names]
        several = isinstance(x, (list, tuple)) and (len(self.input_names) > 1 or len(x) == 1)
        xs = list(x) if several else [x]  # one input: a list is its samples, unless it holds one array
        if len(xs) != len(self.input_names):
            raise ValueError(
                f"the model takes {len(self.input_names)} inputs {self.input_names}, got {len(xs)} arrays; give one "
                f"array per input in that order, or a dict keyed by those names"
            )
        return xs

    @property
    def is_int8(self) -> bool:
        """Whether the (first) input is int8."""
        return self.inputs[0]["dtype"] == np.int8

    @property
    def fixed_batch(self) -> int | None:
        """The batch size a static-shape file is made for (1 for device files), or None for a dynamic batch."""
        b = int(self.inputs[0]["shape_signature"][0])
        return b if b > 0 else None

    def _resize(self, batch: int):
        if self._batch == batch:
            return
        for d in self.inputs:
            shape = list(d["shape_signature"])
            shape[0] = batch
            shape = [s if s > 0 else d["shape"][i] for i, s in enumerate(shape)]
            self._interpreter.resize_tensor_input(d["index"], shape)
        self._interpreter.allocate_tensors()
        self._batch = batch

    def _set_inputs(self, xs, raw: bool):
        for d, x in zip(self.inputs, xs):
            scale, zp = d["quantization"]
            if not raw and d["dtype"] in (np.int8, np.uint8, np.int16):
                x = quantize(x, scale, zp, d["dtype"])
            self._interpreter.set_tensor(d["index"], np.ascontiguousarray(x, dtype=d["dtype"]))

    def run(self, *xs, raw_inputs: bool = False, dequantize_outputs: bool = True):
        """Runs one batch (a file with a static batch runs any multiple of it, batch by batch).

        Args:
            *xs: One array per model input, each of shape ``(n, *input_shape)``, in the order of ``input_names``;
                or one dict keyed by the input names.
            raw_inputs: The arrays are already of the input dtype (on the integer grid); otherwise float inputs of
                an integer tensor are quantized here.
            dequantize_outputs: Dequantize integer outputs to float; False returns them raw.

        Returns:
            The output array, or a list of arrays where the model has several outputs.

        Raises:
            ValueError: If the number of arrays or their per-sample shape does not match the model's inputs, or
                (static batch) ``n`` is not a multiple of the file's batch.
        """
        arrays = [np.asarray(x) for x in self.arrange_inputs(xs[0] if len(xs) == 1 else xs)]
        for d, x in zip(self.inputs, arrays):
            expected = tuple(d["shape_signature"][1:])
            if x.shape[1:] != expected:
                raise ValueError(
                    f"input {d['name']!r} expects shape (n, {', '.join(map(str, expected))}), got {x.shape}"
                )
        fixed = self.fixed_batch
        if fixed is not None and len(arrays[0]) != fixed:  # a static-shape file runs its own batch size at a time
            if len(arrays[0]) % fixed:
                raise ValueError(
                    f"this file has a static batch of {fixed}: give a multiple of {fixed} samples, got {len(arrays[0])}"
                )
            return self.predict(*arrays, batch_size=fixed, raw_inputs=raw_inputs, dequantize_outputs=dequantize_outputs)
        self._resize(len(arrays[0]))
        self._set_inputs(arrays, raw_inputs)
        self._interpreter.invoke()
        outs = []
        for d in self.outputs:
            y = self._interpreter.get_tensor(d["index"]).copy()
            if dequantize_outputs and d["dtype"] in (np.int8, np.uint8, np.int16):
                y = dequantize(y, *d["quantization"])
            outs.append(y)
        return outs[0] if len(outs) == 1 else outs

    def predict(self, *xs, batch_size: int = 256, raw_inputs=False, dequantize_outputs=True):
        """Runs any number of samples, in batches.

        Args:
            *xs: One array per model input, each of shape ``(n, *input_shape)``, in the order of ``input_names``;
                or one dict keyed by the input names.
            batch_size: Samples per interpreter call; a file with a static batch uses its own.
            raw_inputs: The arrays are already of the input dtype (see ``run``).
            dequantize_outputs: Dequantize integer outputs to float; False returns them raw.

        Returns:
            The output array, or a list of arrays where the model has several outputs, concatenated along the batch
            axis.

        Raises:
            ValueError: If there are no samples, or the arrays do not match the model's inputs (see ``run``).
        """
        xs = tuple(self.arrange_inputs(xs[0] if len(xs) == 1 else xs))
        n = len(xs[0])
        if n == 0:
            raise ValueError("predict got no samples")
        batch_size = self.fixed_batch or batch_size
        parts = [
            self.run(*[x[i : i + batch_size] for x in xs], raw_inputs=raw_inputs, dequantize_outputs=dequantize_outputs)
            for i in range(0, n, batch_size)
        ]
        if isinstance(parts[0], list):
            return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        return np.concatenate(parts)

    def latency(self, runs: int = 200, warmup: int = 20, seed: int = 0) -> Latency:
        """Times batch-1 inferences on random inputs, after a warm-up, with this model's thread count.

        Args:
            runs: The number of timed inferences.
            warmup: Untimed inferences first.
            seed: Seed of the random inputs.

        Returns:
            A `Latency` (median and 10th and 90th percentiles, in microseconds).
        """
        rng = np.random.default_rng(seed)
        self._resize(1)
        for d in self.inputs:
            shape = d["shape"]
            if np.issubdtype(d["dtype"], np.integer):
                info = np.iinfo(d["dtype"])
                x = rng.integers(info.min, info.max + 1, size=shape).astype(d["dtype"])
            else:
                x = rng.standard_normal(shape).astype(d["dtype"])
            self._interpreter.set_tensor(d["index"], x)
        invoke = self._interpreter.invoke
        for _ in range(warmup):
            invoke()
        times = np.empty(runs)
        for i in range(runs):
            t0 = time.perf_counter()
            invoke()
            times[i] = time.perf_counter() - t0
        times *= 1e6
        return Latency(
            float(np.median(times)),
            float(np.percentile(times, 10)),
            float(np.percentile(times, 90)),
            runs,
            self.num_threads,
        )


def measure_latency(model, num_threads: int = 1, runs: int = 200, warmup: int = 20) -> Latency:
    """Measures the batch-1 latency of a TFLite model on LiteRT with its default XNNPACK delegate.

    Args:
        model: A TFLite model, as bytes or a path.
        num_threads: The interpreter's thread count.
        runs: The number of timed inferences.
        warmup: Untimed inferences first.

    Returns:
        A `Latency`.

    Raises:
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.

    Example:
        ```python
        print(tflite_export.measure_latency("model.tflite").median_us)
        ```
    """
    return TFLiteModel(model, num_threads=num_threads).latency(runs=runs, warmup=warmup)


def compare_latency(
    models: dict, rounds: int = 7, runs: int = 100, warmup: int | None = None, num_threads: int = 1
) -> dict:
    """Latency of several TFLite models measured interleaved: each round times every model in turn, so that a
    machine's drifting load falls on all of them alike.

    Args:
        models: Name -> TFLite model (bytes or a path).
        rounds: The number of rounds.
        runs: Timed batch-1 inferences per model and round.
        warmup: Untimed inferences before each model's runs in a round; None uses ``max(5, runs // 10)``.
        num_threads: The interpreters' thread count.

    Returns:
        Name -> ``{"median_us", "spread_us", "min_us", "max_us", "per_round_us", "rounds", "runs_per_round",
        "num_threads"}``: the median of the per-round medians, their spread (max − min) as the run-to-run
        variation, their extremes and the list of them, in microseconds.

    Raises:
        InvalidTFLiteModel: If a model is not a loadable TFLite file.

    Example:
        ```python
        lat = tflite_export.compare_latency({"int8": int8_bytes, "float": float_bytes})
        print(lat["float"]["median_us"] / lat["int8"]["median_us"])
        ```
    """
    loaded = {name: TFLiteModel(m, num_threads=num_threads) for name, m in models.items()}
    per_round: dict[str, list[float]] = {name: [] for name in loaded}
    warmup = max(5, runs // 10) if warmup is None else warmup
    for _ in range(rounds):
        for name, model in loaded.items():
            per_round[name].append(model.latency(runs=runs, warmup=warmup).median_us)
    return {
        name: {
            "median_us": float(np.median(v)),
            "spread_us": float(np.max(v) - np.min(v)),
            "min_us": float(np.min(v)),
            "max_us": float(np.max(v)),
            "per_round_us": v,
            "rounds": rounds,
            "runs_per_round": runs,
            "num_threads": num_threads,
        }
        for name, v in per_round.items()
    }
