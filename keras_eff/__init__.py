"""keras-eff: shrink trained Keras 3 models and deploy them as int8 TFLite."""

from . import callbacks, datasets, graph, quantization
from .datasets import fashion_mnist
from .quantization import QuantConfig, calibrate, quantize, quantize_model

__version__ = "0.1.0"

__all__ = ["QuantConfig", "calibrate", "callbacks", "datasets", "fashion_mnist", "graph", "quantization",
           "quantize", "quantize_model"]
