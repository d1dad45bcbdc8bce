"""Does TFLite Micro compute what LiteRT computes? The same int8 inputs through both, compared in output LSBs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .arena import find_arena_size
from .errors import MicroRuntimeError
from .micro_process import MicroProcess
from .model_file import read_model
from .runtime import TFLiteModel, quantize


@dataclass
class MicroCheck:
    """TFLite Micro vs LiteRT on ``n`` samples (all outputs of each sample flattened together)."""

    n: int
    bit_exact_samples: float  # share of samples whose every output value is identical
    exact_values: float  # share of output values that are identical
    max_lsb_diff: int | None  # largest difference in output quantization steps; None for float outputs
    within_1_lsb: float | None
    max_abs_diff: float  # in the raw output values (integers for int8 outputs)
    argmax_agreement: float
    arena_bytes: int
    reference: str = "LiteRT built-in kernels"

    def as_dict(self):
        return asdict(self)

    def passed(self, max_lsb: int = 1, float_tolerance: float = 1e-4) -> bool:
        """int8 outputs: no value more than ``max_lsb`` steps apart; float outputs: within ``float_tolerance``."""
        if self.max_lsb_diff is None:
            return self.max_abs_diff <= float_tolerance
        return self.max_lsb_diff <= max_lsb

    def __str__(self):
        diff = (f"max {self.max_lsb_diff} LSB, {self.within_1_lsb:.2%} of values within 1 LSB"
                if self.max_lsb_diff is not None else f"max |diff| {self.max_abs_diff:.3g}")
        return (f"TFLite Micro vs LiteRT on {self.n} samples: {self.bit_exact_samples:.1%} bit-exact, {diff}, "
                f"argmax agreement {self.argmax_agreement:.1%}")


def _as_model_inputs(tfl: TFLiteModel, x) -> list:
    """Float samples quantized onto the model's input grid (integer arrays of the input dtype pass unchanged)."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(tfl.inputs):
        raise ValueError(f"the model takes {len(tfl.inputs)} inputs, got {len(xs)} arrays")
    out = []
    for d, a in zip(tfl.inputs, xs):
        a = np.asarray(a)
        expected = tuple(int(s) for s in d["shape"][1:])
        if a.ndim != len(expected) + 1 or tuple(a.shape[1:]) != expected:
            raise ValueError(f"inputs for {d['name']!r} have shape {a.shape}; the model expects "
                             f"(n, {', '.join(map(str, expected))})")
        if len(a) == 0:
            raise ValueError("check_micro needs at least one input sample")
        if a.dtype == d["dtype"]:
            out.append(a)
        elif np.issubdtype(d["dtype"], np.integer):
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"inputs for {d['name']!r} are {a.dtype}; give float samples (they are quantized "
                                 f"here) or {np.dtype(d['dtype']).name} samples already on the input grid")
            out.append(quantize(a, *d["quantization"], dtype=d["dtype"]))
        else:
            out.append(a.astype(d["dtype"]))
    return out


def run_micro(model, x, arena_size: int | None = None) -> list:
    """Runs TFLite Micro sample by sample in a child process; returns one raw output array per model output."""
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
            raise MicroRuntimeError(f"TFLite Micro failed to run the model with a {arena:,}-byte arena: "
                                    f"{reply.error}")
        with np.load(outputs, allow_pickle=False) as f:
            return [f[f"y{k}"] for k in range(len(f.files))]


def check_micro(model, x, arena_size: int | None = None, use_xnnpack: bool = False) -> MicroCheck:
    """Runs ``x`` (float samples, quantized here, or samples already on the int8 input grid) through TFLite Micro
    and through LiteRT, and compares their raw outputs. ``arena_size`` defaults to the recommended estimate.

    The LiteRT reference uses its built-in kernels by default, the closest to TFLite Micro's reference kernels;
    ``use_xnnpack=True`` compares with the XNNPACK delegate instead (LiteRT's default on a PC), whose int8 rounding
    differs more often by one step.
    """
    data = read_model(model)
    tfl = TFLiteModel(data, use_xnnpack=use_xnnpack)
    xs = _as_model_inputs(tfl, x)
    arena = arena_size or find_arena_size(data).recommended_bytes
    micro = run_micro(data, xs, arena)
    lite = tfl.predict(*xs, raw_inputs=True, dequantize_outputs=False)
    lite = lite if isinstance(lite, list) else [lite]
    n = len(xs[0])
    m = np.concatenate([np.asarray(a).reshape(n, -1) for a in micro], axis=1)
    r = np.concatenate([np.asarray(a).reshape(n, -1) for a in lite], axis=1)
    diff = np.abs(m.astype(np.float64) - r.astype(np.float64))
    if np.issubdtype(m.dtype, np.integer):
        max_lsb, within = int(diff.max()), float(np.mean(diff <= 1))
    else:
        max_lsb = within = None
    first_m, first_r = micro[0].reshape(n, -1), np.asarray(lite[0]).reshape(n, -1)
    return MicroCheck(n=n, bit_exact_samples=float(np.mean(np.all(diff == 0, axis=1))),
                      exact_values=float(np.mean(diff == 0)), max_lsb_diff=max_lsb, within_1_lsb=within,
                      max_abs_diff=float(diff.max()),
                      argmax_agreement=float(np.mean(first_m.argmax(1) == first_r.argmax(1))), arena_bytes=int(arena),
                      reference="LiteRT + XNNPACK" if use_xnnpack else "LiteRT built-in kernels")
