"""tflite_export: Keras 3 models to TFLite files, checked, run, compared and measured.

The bottom layer of keras-eff: it knows Keras and TensorFlow, and nothing of keras_eff.
"""

from .checks import check_int8, find_float_islands
from .compare import Comparison, compare
from .convert import has_fake_quant, to_tflite
from .errors import FloatIslandError, InvalidTFLiteModel, TFLiteExportError
from .files import atomic_write, atomic_write_json
from .macs import MacCount, OpCount, count_macs
from .model_file import Graph, make_interpreter, read_graph, read_model
from .runtime import Latency, TFLiteModel, compare_latency, dequantize, measure_latency, quantize

__all__ = [
    "Comparison", "FloatIslandError", "Graph", "InvalidTFLiteModel", "Latency", "MacCount", "OpCount",
    "TFLiteExportError", "TFLiteModel", "atomic_write", "atomic_write_json", "check_int8", "compare", "compare_latency", "count_macs", "dequantize", "find_float_islands",
    "has_fake_quant", "make_interpreter", "measure_latency", "quantize", "read_graph", "read_model", "to_tflite",
]
