"""Does the TFLite file compute what the Keras model computes? Agreement measured in output LSBs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from .runtime import TFLiteModel, quantize


@dataclass
class Comparison:
    """Keras vs TFLite on the same inputs (one output), as measured by ``compare``.

    ``str()`` gives a one-line summary.

    Attributes:
        n: The number of samples.
        argmax_agreement: The share of samples with the same argmax.
        max_abs_diff: The largest absolute difference between the outputs, in real (dequantized) values.
        within_1_lsb: The share of output values at most one output step apart; None for a float TFLite output.
        max_lsb_diff: The largest difference in output steps; None for a float TFLite output.
        output_scale: The output's quantization scale; None for a float TFLite output.
        disagreements: The number of samples whose argmax differs.
        near_tie_disagreements: How many of those the file's rounding alone explains (see ``compare``).
        disagreement_gaps_lsb: Per disagreement, the Keras model's gap between the two classes, in output steps;
            None for a float TFLite output.
        disagreement_max_lsb: Per disagreement, that sample's largest difference in output steps; None for a float
            TFLite output.
    """

    n: int
    argmax_agreement: float
    max_abs_diff: float
    within_1_lsb: float | None
    max_lsb_diff: int | None
    output_scale: float | None
    disagreements: int
    near_tie_disagreements: int
    disagreement_gaps_lsb: list | None = None  # per disagreement: Keras's gap between the two classes, in LSBs
    disagreement_max_lsb: list | None = None  # per disagreement: that sample's largest LSB difference

    @property
    def all_disagreements_near_ties(self) -> bool:
        """Whether every argmax disagreement is a near-tie (True when there are none)."""
        return self.disagreements == self.near_tie_disagreements

    def as_dict(self):
        """The fields as a JSON-ready dict.

        Returns:
            A dict with one entry per field, and ``all_disagreements_near_ties``.
        """
        d = asdict(self)
        d["all_disagreements_near_ties"] = self.all_disagreements_near_ties
        return d

    def __str__(self):
        lsb = (
            f", {self.within_1_lsb:.2%} of outputs within 1 LSB, max {self.max_lsb_diff} LSB"
            if self.max_lsb_diff is not None
            else ""
        )
        return (
            f"{self.n} samples: argmax agreement {self.argmax_agreement:.2%}{lsb}, max |diff| "
            f"{self.max_abs_diff:.3g}, {self.disagreements} disagreements "
            f"({self.near_tie_disagreements} near-ties)"
        )


def _first_array(x):
    """The first input array of ``x`` (one array, a list of them, or a dict by input name)."""
    if isinstance(x, Mapping):
        return np.asarray(next(iter(x.values()))) if x else np.empty(0)
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], np.ndarray):
        return x[0]
    return np.asarray(x)


def _file_inputs(keras_model, tfl: TFLiteModel, x):
    """``x`` as the file takes it: arrays in the Keras model's input order become a dict keyed by the Keras input
    names where the file's inputs carry those names (the file lists its inputs in an order of its own)."""
    names = [str(getattr(t, "name", "")) for t in getattr(keras_model, "inputs", None) or []]
    if isinstance(x, (list, tuple)) and len(names) == len(x) > 1 and sorted(names) == sorted(tfl.input_names):
        return dict(zip(names, x))
    return x


def _select_output(ref, output, file_names: list) -> tuple:
    """The Keras output that ``output`` (a position, or a key of dict outputs) selects, and the position of the same
    output among the file's (``output_<i>`` in a file from ``to_tflite``)."""
    if isinstance(ref, Mapping):
        name = file_names[output] if isinstance(output, int) else output
        if name not in ref or name not in file_names:
            raise ValueError(f"output {output!r} is not one of the model's outputs {sorted(ref)}")
        return np.asarray(ref[name], np.float64), file_names.index(name)
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    if not isinstance(output, int) or not -len(refs) <= output < len(refs):
        raise ValueError(f"output must be a position among the model's {len(refs)} outputs, got {output!r}")
    key = f"output_{output % len(refs)}"
    return np.asarray(refs[output], np.float64), file_names.index(key) if key in file_names else output


def compare(
    keras_model,
    tflite_model,
    x,
    batch_size: int = 256,
    tflite_outputs=None,
    use_xnnpack: bool = True,
    kernels: str | None = None,
    output: int | str = 0,
) -> Comparison:
    """Runs both models on ``x`` and compares one of their outputs (the first by default).

    The file runs on LiteRT's default XNNPACK delegate, or its built-in kernels with ``use_xnnpack=False``; pass
    ``tflite_outputs`` (raw outputs) for another runtime, e.g. ``tflite_export.run_micro(file, x)[0]``.

    Several inputs and outputs are matched by name, not by their order in the file (a file from ``to_tflite`` names
    its inputs as the Keras inputs, and its outputs ``output_0``, ``output_1``, ... in the Keras model's order).

    For an int8 output, the Keras output is put on the file's output grid and compared in LSBs. An argmax
    disagreement is a near-tie when the Keras model's own gap between the two classes, in LSBs, is no larger than the
    LSB differences of those two outputs together (or one LSB: classes closer than that tie on the int8 grid): the
    file's rounding alone explains the flip.

    Args:
        keras_model: The Keras model the file was made from.
        tflite_model: The TFLite file, as bytes or a path.
        x: Float inputs: an array of shape ``(n, *input_shape)``; for several inputs a list of arrays in the Keras
            model's input order, or a dict keyed by the Keras input names.
        batch_size: The batch size for both runtimes.
        tflite_outputs: The file's raw output on ``x`` (the one ``output`` selects) from another runtime; None runs
            the file on LiteRT.
        use_xnnpack: Run the file with LiteRT's XNNPACK delegate; False uses its built-in kernels.
        kernels: ``"xnnpack"``, ``"builtin"`` or ``"reference"`` (LiteRT's reference kernels); overrides
            ``use_xnnpack``.
        output: Which output to compare: its position in the Keras model's outputs, or its key where the model
            returns a dict.

    Returns:
        A `Comparison`.

    Raises:
        ValueError: If ``x`` is empty, ``output`` names no output, or the output shapes differ.
        InvalidTFLiteModel: If ``tflite_model`` is not a loadable TFLite file.

    Example:
        ```python
        result = tflite_export.compare(model, tflite_bytes, x_test[:500])
        print(result)
        ```
    """
    n = len(_first_array(x))
    if n == 0:
        raise ValueError("compare needs at least one input sample")
    tfl = TFLiteModel(tflite_model, use_xnnpack=use_xnnpack, kernels=kernels)
    ref, position = _select_output(keras_model.predict(x, batch_size=batch_size, verbose=0), output, tfl.output_names)
    out = tfl.outputs[position]
    if tflite_outputs is None:
        raw = tfl.predict(_file_inputs(keras_model, tfl, x), batch_size=batch_size, dequantize_outputs=False)
        raw = raw[position] if isinstance(raw, list) else raw
    else:
        raw = tflite_outputs
    raw = np.asarray(raw)
    if raw.shape != ref.shape:
        raise ValueError(f"Keras output shape {ref.shape} differs from the TFLite output shape {raw.shape}")
    ref2, raw2 = ref.reshape(n, -1), raw.reshape(n, -1)
    k_arg, t_arg = ref2.argmax(1), raw2.argmax(1)
    disagree = np.flatnonzero(k_arg != t_arg)
    if out["dtype"] == np.int8:
        scale, zp = out["quantization"]
        kq = quantize(ref2, scale, zp).astype(np.int32)
        lsb = np.abs(kq - raw2.astype(np.int32))
        gaps = (ref2[disagree, k_arg[disagree]] - ref2[disagree, t_arg[disagree]]) / scale
        explained = lsb[disagree, k_arg[disagree]] + lsb[disagree, t_arg[disagree]]
        near = int(np.sum(gaps <= np.maximum(explained, 1) + 1e-3))
        max_abs = float(np.max(np.abs((raw2.astype(np.float64) - zp) * scale - ref2)))
        return Comparison(
            n,
            float(np.mean(k_arg == t_arg)),
            max_abs,
            float(np.mean(lsb <= 1)),
            int(lsb.max()),
            float(scale),
            len(disagree),
            near,
            [round(float(g), 3) for g in gaps],
            [int(v) for v in lsb[disagree].max(axis=1)],
        )
    return Comparison(
        n, float(np.mean(k_arg == t_arg)), float(np.max(np.abs(raw2 - ref2))), None, None, None, len(disagree), 0
    )
