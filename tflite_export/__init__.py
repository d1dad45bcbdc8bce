"""tflite_export: Keras 3 models to TFLite files, checked, run, compared and measured.

The bottom layer of keras-eff: it knows Keras and TensorFlow, and nothing of keras_eff.
"""

from .arena import ArenaEstimate, find_arena_size, try_arena
from .c_source import CSources, check_c_name, to_c_source
from .checks import check_int8, find_float_islands
from .compare import Comparison, compare
from .convert import has_fake_quant, to_tflite
from .ethos_u import (EthosUCompilation, EthosUError, EthosULayer, EthosUOp, EthosUReport, accelerators,
                      check_ethos_u_options, compile_ethos_u, vela_configurations, vela_version)
from .errors import FloatIslandError, InvalidTFLiteModel, MicroRuntimeError, TFLiteExportError, UncalibratedModelError
from .export_mode import export_view
from .files import atomic_write, atomic_write_json, write_files
from .macs import MacCount, OpCount, count_macs
from .micro import MicroPackage, micro_package
from .micro_check import MicroCheck, check_micro, run_micro
from .micro_ops import micro_supported_ops, probe_micro_ops, resolver_method, unsupported_micro_ops
from .model_file import Graph, make_interpreter, read_graph, read_graph_flatbuffer, read_model
from .ranges import find_unset_ranges
from .onnx_export import OnnxComparison, OnnxExportError, compare_onnx, count_onnx_ops, run_onnx, to_onnx
from .report import ModelReport, model_report
from .samples import check_samples
from .runtime import Latency, TFLiteModel, compare_latency, dequantize, measure_latency, quantize

__all__ = [
    "ArenaEstimate", "CSources", "Comparison", "EthosUCompilation", "EthosUError", "EthosULayer", "EthosUOp",
    "EthosUReport", "FloatIslandError", "Graph", "InvalidTFLiteModel", "Latency",
    "MacCount", "MicroCheck", "MicroPackage", "MicroRuntimeError", "ModelReport", "OnnxComparison",
    "OnnxExportError", "OpCount", "accelerators", "check_ethos_u_options", "compile_ethos_u", "read_graph_flatbuffer", "vela_configurations",
    "vela_version", "TFLiteExportError", "TFLiteModel", "UncalibratedModelError", "atomic_write", "atomic_write_json",
    "check_c_name", "check_int8", "check_samples", "check_micro", "compare", "compare_latency", "compare_onnx", "count_macs",
    "count_onnx_ops", "dequantize", "export_view", "find_arena_size", "find_float_islands", "find_unset_ranges", "has_fake_quant", "make_interpreter",
    "measure_latency", "micro_package", "micro_supported_ops", "model_report", "probe_micro_ops", "quantize",
    "read_graph", "read_model", "resolver_method", "run_micro", "run_onnx", "to_c_source", "to_onnx", "to_tflite",
    "try_arena", "unsupported_micro_ops", "write_files",
]
