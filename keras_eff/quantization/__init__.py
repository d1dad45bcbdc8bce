"""Quantization simulation and quantization-aware training whose int8 TFLite export computes the same thing."""

from .calibration import activation_quantizers, calibrate
from .callbacks import FreezeBatchNorm, FreezeRanges
from .config import LayerQuantSpec, QuantConfig
from .mixed_precision import MixedPrecisionParams, MixedPrecisionResult, layer_sensitivity, mixed_precision
from .model import QuantizationReport, quantize, quantize_model, set_integer_kernels
from .placement import place_ranges
from .quantizers import FIXED_RANGES, ActivationQuantizer, WeightQuantizer, fake_quant, fake_quant_per_channel
from .wrapper import QuantizeWrapper

__all__ = ["FIXED_RANGES", "ActivationQuantizer", "FreezeBatchNorm", "FreezeRanges", "LayerQuantSpec",
           "MixedPrecisionParams", "MixedPrecisionResult", "QuantConfig", "QuantizationReport", "QuantizeWrapper",
           "WeightQuantizer", "activation_quantizers", "calibrate", "fake_quant", "fake_quant_per_channel",
           "layer_sensitivity", "mixed_precision", "place_ranges", "quantize", "quantize_model", "set_integer_kernels"]
