"""Does the TFLite file compute what the Keras model computes? Agreement measured in output LSBs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .runtime import TFLiteModel, quantize


@dataclass
class Comparison:
    """Keras vs TFLite on the same inputs (first output), as measured by ``compare``.

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


def compare(
    keras_model,
    tflite_model,
    x,
    batch_size: int = 256,
    tflite_outputs=None,
    use_xnnpack: bool = True,
    kernels: str | None = None,
) -> Comparison:
    """Runs both models on ``x`` and compares their (first) outputs.

    The file runs on LiteRT's default XNNPACK delegate, or its built-in kernels with ``use_xnnpack=False``; pass
    ``tflite_outputs`` (raw outputs) for another runtime, e.g. ``tflite_export.run_micro(file, x)[0]``.

    For an int8 output, the Keras output is put on the file's output grid and compared in LSBs. An argmax
    disagreement is a near-tie when the Keras model's own gap between the two classes, in LSBs, is no larger than the
    LSB differences of those two outputs together (or one LSB: classes closer than that tie on the int8 grid): the
    file's rounding alone explains the flip.

    Args:
        keras_model: The Keras model the file was made from (one input).
        tflite_model: The TFLite file, as bytes or a path.
        x: Float inputs, an array of shape ``(n, *input_shape)``.
        batch_size: The batch size for both runtimes.
        tflite_outputs: The file's raw first output on ``x`` from another runtime; None runs the file on LiteRT.
        use_xnnpack: Run the file with LiteRT's XNNPACK delegate; False uses its built-in kernels.
        kernels: ``"xnnpack"``, ``"builtin"`` or ``"reference"`` (LiteRT's reference kernels); overrides
            ``use_xnnpack``.

    Returns:
        A `Comparison`.

    Raises:
        ValueError: If ``x`` is empty or the output shapes differ.
        InvalidTFLiteModel: If ``tflite_model`` is not a loadable TFLite file.

    Example:
        ```python
        result = tflite_export.compare(model, tflite_bytes, x_test[:500])
        print(result)
        ```
    """
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("compare needs at least one input sample")
    ref = np.asarray(keras_model.predict(x, batch_size=batch_size, verbose=0), np.float64)
    tfl = TFLiteModel(tflite_model, use_xnnpack=use_xnnpack, kernels=kernels)
    out = tfl.outputs[0]
    raw = tfl.predict(x, batch_size=batch_size, dequantize_outputs=False) if tflite_outputs is None else tflite_outputs
    raw = np.asarray(raw)
    if raw.shape != ref.shape:
        raise ValueError(f"Keras output shape {ref.shape} differs from the TFLite output shape {raw.shape}")
    ref2, raw2 = ref.reshape(len(x), -1), raw.reshape(len(x), -1)
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
            len(x),
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
        len(x), float(np.mean(k_arg == t_arg)), float(np.max(np.abs(raw2 - ref2))), None, None, None, len(disagree), 0
    )
