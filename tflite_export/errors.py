"""Errors raised by tflite_export, each naming what is wrong and what to do."""


class TFLiteExportError(RuntimeError):
    """A model could not be converted to the TFLite file that was asked for."""


class FloatIslandError(TFLiteExportError):
    """An int8 conversion left float tensors or QUANTIZE/DEQUANTIZE ops inside the graph.

    Attributes:
        problems: Every place where the model leaves int8, in graph order (as ``find_float_islands`` lists them).
        float_ops: The ops that compute in float, in graph order, as ``tflite_export.checks.FloatOp`` records (op
            name, index, tensor name, Keras layer where known, and whether int8 ranges surround it).
    """

    def __init__(self, message, problems=(), float_ops=()):
        super().__init__(message)
        self.problems = list(problems)
        self.float_ops = list(float_ops)


class InvalidTFLiteModel(ValueError):
    """Bytes or a file that are not a loadable TFLite flatbuffer."""


class MicroRuntimeError(TFLiteExportError):
    """TFLite Micro cannot run a model: an op it lacks, a tensor type its kernels refuse, or a crash."""


class UncalibratedModelError(TFLiteExportError):
    """A quantized model whose activation ranges were never set (by calibration or training) was to be exported.

    Attributes:
        layers: ``[(layer name, [range names never set]), ...]`` in model order (as ``find_unset_ranges`` lists
            them).
    """

    def __init__(self, message, layers=()):
        super().__init__(message)
        self.layers = list(layers)  # [(layer name, [range names]), ...] in model order
