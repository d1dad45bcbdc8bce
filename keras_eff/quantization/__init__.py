"""Quantization simulation and quantization-aware training whose int8 TFLite export computes the same thing."""

from ..options import deprecated_aliases as _deprecated_aliases
from .calibration import activation_quantizers, calibrate
from .callbacks import FreezeBatchNorm, FreezeRanges
from .config import LayerQuantSpec, QuantConfig
from .constant_op import ClipOnInputGrid, QuantizedConstantOp
from .mixed_precision import MixedPrecisionConfig, MixedPrecisionResult, layer_sensitivity, mixed_precision
from .model import quantize, quantize_model, set_integer_kernels
from .placement import place_ranges
from .quantized_activation import QuantizedActivation
from .quantizers import FIXED_RANGES, ActivationQuantizer, WeightQuantizer, fake_quant, fake_quant_per_channel
from .report import QuantizationReport, quantization_report
from .wrapper import QuantizeWrapper

__all__ = [
    "FIXED_RANGES",
    "ActivationQuantizer",
    "ClipOnInputGrid",
    "FreezeBatchNorm",
    "FreezeRanges",
    "LayerQuantSpec",
    "MixedPrecisionConfig",
    "MixedPrecisionResult",
    "QuantConfig",
    "QuantizationReport",
    "QuantizedActivation",
    "QuantizedConstantOp",
    "QuantizeWrapper",
    "WeightQuantizer",
    "activation_quantizers",
    "calibrate",
    "fake_quant",
    "fake_quant_per_channel",
    "layer_sensitivity",
    "mixed_precision",
    "place_ranges",
    "quantization_report",
    "quantize",
    "quantize_model",
    "set_integer_kernels",
]

# the name before the …Config convention: for one release, with a DeprecationWarning
__getattr__ = _deprecated_aliases(
    __name__, {"MixedPrecisionParams": (MixedPrecisionConfig, "keras_eff.quantization.MixedPrecisionConfig")}
)
