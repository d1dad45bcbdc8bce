"""Does TFLite Micro compute what LiteRT computes? The same int8 inputs through both, compared in output LSBs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .arena import find_arena_size
from .errors import MicroRuntimeError
from .micro_process import MicroProcess
from .model_file import read_model, resolve_kernels
from .runtime import TFLiteModel, quantize


@dataclass
class MicroCheck:
    """TFLite Micro vs LiteRT on the same inputs, as measured by ``check_micro``.

    The raw outputs are compared: all outputs of a sample flattened together. ``str()`` gives a one-line summary.

    Attributes:
        n: The number of samples.
        bit_exact_samples: The share of samples whose every output value is identical.
        exact_values: The share of output values that are identical.
        max_lsb_diff: The largest difference in output quantization steps; None for float outputs.
        within_1_lsb: The share of output values at most one step apart; None for float outputs.
        max_abs_diff: The largest difference in the raw output values (integers for int8 outputs).
        argmax_agreement: The share of samples whose first output has the same argmax in both.
        arena_bytes: The tensor arena TFLite Micro ran with.
        reference: Which LiteRT kernels were compared with, in words.
        kernels: The same as a ``kernels`` name: ``"builtin"``, ``"reference"`` or ``"xnnpack"``.
    """

    n: int
    bit_exact_samples: float  # share of samples whose every output value is identical
    exact_values: float  # share of output values that are identical
    max_lsb_diff: int | None  # largest difference in output quantization steps; None for float outputs
    within_1_lsb: float | None
    max_abs_diff: float  # in the raw output values (integers for int8 outputs)
    argmax_agreement: float
    arena_bytes: int
    reference: str = "LiteRT built-in kernels"
    kernels: str = "builtin"

    def as_dict(self):
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field.
        """
        return asdict(self)

    def passed(self, max_lsb: int = 1, float_tolerance: float = 1e-4) -> bool:
        """Whether TFLite Micro and LiteRT agree within a tolerance.

        Args:
            max_lsb: For integer outputs, the most quantization steps any value may differ by.
            float_tolerance: For float outputs, the largest absolute difference allowed.

        Returns:
            True when every output value is within the tolerance.
        """
        if self.max_lsb_diff is None:
            return self.max_abs_diff <= float_tolerance
        return self.max_lsb_diff <= max_lsb

    def __str__(self):
        diff = (
            f"max {self.max_lsb_diff} LSB, {self.within_1_lsb:.2%} of values within 1 LSB"
            if self.max_lsb_diff is not None
            else f"max |diff| {self.max_abs_diff:.3g}"
        )
        return (
            f"TFLite Micro vs {self.reference} on {self.n} samples: {self.bit_exact_samples:.1%} bit-exact, "
            f"{diff}, argmax agreement {self.argmax_agreement:.1%}"
        )


def head_of_inputs(x, n: int):
    """The first ``n`` samples of a model's inputs: one array, a list or tuple of arrays, or a dict of them keyed by
    input name (the same kind back)."""
    if isinstance(x, Mapping):
        return {k: v[:n] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [a[:n] for a in x]
    return x[:n]


def _as_model_inputs(tfl: TFLiteModel, x) -> list:
    """Float samples quantized onto the model's input grid (integer arrays of the input dtype pass unchanged)."""
    xs = tfl.arrange_inputs(x)
    out = []
    for d, a in zip(tfl.inputs, xs):
        a = np.asarray(a)
        expected = tuple(int(s) for s in d["shape"][1:])
        if a.ndim != len(expected) + 1 or tuple(a.shape[1:]) != expected:
            raise ValueError(
                f"inputs for {d['name']!r} have shape {a.shape}; the model expects (n, {', '.join(map(str, expected))})"
            )
        if len(a) == 0:
            raise ValueError("check_micro needs at least one input sample")
        if a.dtype == d["dtype"]:
            out.append(a)
        elif np.issubdtype(d["dtype"], np.integer):
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(
                    f"inputs for {d['name']!r} are {a.dtype}; give float samples (they are quantized "
                    f"here) or {np.dtype(d['dtype']).name} samples already on the input grid"
                )
            scale, zero_point = d["quantization"]
            out.append(quantize(a, scale, zero_point, dtype=d["dtype"]))
        else:
            out.append(a.astype(d["dtype"]))
    return out


def run_micro(model, x, arena_size: int | None = None) -> list:
    """Runs a model in the TFLite Micro interpreter, sample by sample, in a child process.

    Args:
        model: A TFLite model, as bytes or a path (LiteRT must load it too: its input details are read there).
        x: The inputs: float samples (quantized onto the input grid here) or samples already of the input dtype;
            one array, or for several inputs a list of arrays (in the order of ``TFLiteModel.input_names``) or a dict
            keyed by input name, each of shape ``(n, *input_shape)``.
        arena_size: The tensor arena in bytes; None (or 0) searches for it first with ``find_arena_size`` and uses
            the recommended size.

    Returns:
        One raw output array per model output (integers for an int8 output), each with ``n`` rows, in the order of
        ``TFLiteModel.output_names`` (the Keras model's, for a file from ``to_tflite``).

    Raises:
        ValueError: If ``x`` does not match the model's inputs (count, shape, dtype) or is empty.
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.
        MicroRuntimeError: If TFLite Micro cannot run the model (with its message).

    Example:
        ```python
        raw = tflite_export.run_micro("model.tflite", x_test[:100])[0]
        ```
    """
    data = read_model(model)
    tfl = TFLiteModel(data)
    xs = _as_model_inputs(tfl, x)
    arena = arena_size or find_arena_size(data).recommended_bytes
    with MicroProcess(data) as proc:
        inputs = proc.workdir / "inputs.npz"
        outputs = proc.workdir / "outputs.npz"
        np.savez(inputs, **{f"x{i}": a for i, a in enumerate(xs)})
        reply = proc.request(op="run", arena=int(arena), inputs=str(inputs), outputs=str(outputs))
        if not reply.ok:
            raise MicroRuntimeError(f"TFLite Micro failed to run the model with a {arena:,}-byte arena: {reply.error}")
        with np.load(outputs, allow_pickle=False) as f:
            return [f[f"y{k}"] for k in tfl.output_positions]  # Micro answers in the subgraph's order


_KERNEL_WORDS = {
    "builtin": "LiteRT built-in kernels",
    "reference": "LiteRT reference kernels",
    "xnnpack": "LiteRT + XNNPACK",
}


def check_micro(
    model, x, arena_size: int | None = None, use_xnnpack: bool = False, kernels: str | None = None
) -> MicroCheck:
    """Runs the same inputs through TFLite Micro and through LiteRT and compares their raw outputs.

    LiteRT runs its optimized built-in kernels by default; ``kernels="reference"`` runs its reference kernels
    (``OpResolverType.BUILTIN_REF``), whose ADD rounds ties as TFLite Micro's does, so that on residual networks
    they agree with Micro far more often (a ResNet-8: 98–99 % of images bit-exact against 41–49 %);
    ``kernels="xnnpack"`` (or ``use_xnnpack=True``) the XNNPACK delegate, LiteRT's default on a PC, which differs by
    one step most often. No choice is the closest on every model: the measurements are in docs/export.md.

    Args:
        model: A TFLite model, as bytes or a path.
        x: The inputs: float samples (quantized onto the input grid here) or samples already of the input dtype;
            one array, or for several inputs a list of arrays (in the order of ``TFLiteModel.input_names``) or a dict
            keyed by input name, each of shape ``(n, *input_shape)``.
        arena_size: The tensor arena in bytes; None (or 0) searches for it first with ``find_arena_size`` and uses
            the recommended size.
        use_xnnpack: Compare with LiteRT's XNNPACK delegate instead of its built-in kernels.
        kernels: ``"builtin"``, ``"reference"`` or ``"xnnpack"``: the LiteRT kernels compared with; overrides
            ``use_xnnpack``.

    Returns:
        A `MicroCheck`; ``passed()`` says whether the outputs agree within a tolerance.

    Raises:
        ValueError: If ``x`` does not match the model's inputs (count, shape, dtype) or is empty, or ``kernels``
            is not one of the three names.
        InvalidTFLiteModel: If ``model`` is not a loadable TFLite file.
        MicroRuntimeError: If TFLite Micro cannot run the model (with its message).

    Example:
        ```python
        check = tflite_export.check_micro("model.tflite", x_test[:200])
        print(check)
        assert check.passed(max_lsb=1)
        ```
    """
    kernels = resolve_kernels(kernels, use_xnnpack)
    data = read_model(model)
    tfl = TFLiteModel(data, kernels=kernels)
    xs = _as_model_inputs(tfl, x)
    arena = arena_size or find_arena_size(data).recommended_bytes
    micro = run_micro(data, xs, arena)
    lite = tfl.predict(*xs, raw_inputs=True, dequantize_outputs=False)
    lite = lite if isinstance(lite, list) else [lite]
    n = len(xs[0])
    m = np.concatenate([np.asarray(a).reshape(n, -1) for a in micro], axis=1)
    r = np.concatenate([np.asarray(a).reshape(n, -1) for a in lite], axis=1)
    diff = np.abs(m.astype(np.float64) - r.astype(np.float64))
    max_lsb: int | None = None
    within: float | None = None
    if np.issubdtype(m.dtype, np.integer):
        max_lsb, within = int(diff.max()), float(np.mean(diff <= 1))
    first_m, first_r = micro[0].reshape(n, -1), np.asarray(lite[0]).reshape(n, -1)
    return MicroCheck(
        n=n,
        bit_exact_samples=float(np.mean(np.all(diff == 0, axis=1))),
        exact_values=float(np.mean(diff == 0)),
        max_lsb_diff=max_lsb,
        within_1_lsb=within,
        max_abs_diff=float(diff.max()),
        argmax_agreement=float(np.mean(first_m.argmax(1) == first_r.argmax(1))),
        arena_bytes=int(arena),
        reference=_KERNEL_WORDS[kernels],
        kernels=kernels,
    )
