"""tflite_export: Keras 3 models to TFLite files, checked, run, compared and measured.

The bottom layer of keras-eff: it knows Keras and TensorFlow, and nothing of keras_eff. Its names load on first use
(PEP 562): ``import tflite_export`` is instant, and ``tflite_export.files`` (the file and IO helpers every package
uses) does not import TensorFlow.
"""

from __future__ import annotations

import importlib

# Each public name and the submodule that defines it. Start-up: loading them on first use keeps TensorFlow (about
# 3 s) out of `keras-eff --help` and of anything that only reads or writes files.
_SUBMODULE_NAMES = {
    "arena": ("ArenaEstimate", "find_arena_size", "try_arena"),
    "c_source": ("check_c_name", "CSources", "to_c_source"),
    "checks": ("check_int8", "find_float_islands"),
    "compare": ("compare", "Comparison"),
    "convert": ("has_fake_quant", "to_tflite"),
    "errors": (
        "FloatIslandError",
        "InvalidTFLiteModel",
        "MicroRuntimeError",
        "TFLiteExportError",
        "UncalibratedModelError",
    ),
    "ethos_u": (
        "accelerators",
        "check_ethos_u_options",
        "compile_ethos_u",
        "EthosUCompilation",
        "EthosUError",
        "EthosULayer",
        "EthosUOp",
        "EthosUReport",
        "vela_configurations",
        "vela_version",
    ),
    "export_mode": ("export_view",),
    "files": (
        "atomic_savefig",
        "atomic_write",
        "atomic_write_json",
        "atomic_write_npy",
        "atomic_write_npz",
        "read_json",
        "read_yaml_or_json",
        "staged_path",
        "write_files",
    ),
    "macs": ("count_macs", "MacCount", "OpCount"),
    "micro": ("micro_package", "MicroPackage"),
    "micro_check": ("check_micro", "MicroCheck", "run_micro"),
    "micro_ops": ("micro_supported_ops", "probe_micro_ops", "resolver_method", "unsupported_micro_ops"),
    "model_file": ("Graph", "make_interpreter", "read_graph", "read_graph_flatbuffer", "read_model"),
    "onnx_export": ("compare_onnx", "count_onnx_ops", "OnnxComparison", "OnnxExportError", "run_onnx", "to_onnx"),
    "ranges": ("find_unset_ranges",),
    "report": ("model_report", "ModelReport"),
    "runtime": ("compare_latency", "dequantize", "Latency", "measure_latency", "quantize", "TFLiteModel"),
    "samples": ("check_samples",),
}
_WHERE = {name: module for module, names in _SUBMODULE_NAMES.items() for name in names}

__all__ = sorted(_WHERE, key=str.lower)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        try:
            return importlib.import_module(f".{name}", __name__)  # a submodule: tflite_export.files
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
