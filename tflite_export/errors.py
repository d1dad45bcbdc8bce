"""Errors raised by tflite_export, each naming what is wrong and what to do."""


class TFLiteExportError(RuntimeError):
    """A model could not be converted to the TFLite file that was asked for."""


class FloatIslandError(TFLiteExportError):
    """An int8 conversion left float tensors or QUANTIZE/DEQUANTIZE ops inside the graph.

    Attributes:
        problems: Every place where the model leaves int8, in graph order (as ``find_float_islands`` lists them).
    """

    def __init__(self, message, problems=()):
        super().__init__(message)
        self.problems = list(problems)


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
