"""DONNA (Moons et al., "Distilling Optimal Neural Networks"), steps A and B: a search space of Keras blocks, the
reference model, blockwise knowledge distillation into supernet blocks, the block library, and an accuracy predictor
fitted on the architectures' block losses.

    from keras_eff.donna import tiny_space, build_accuracy_model, DonnaConfig
    result = build_accuracy_model(tiny_space(), x_train, y_train, x_test, y_test, DonnaConfig.quick())
    result.predictor.predict(tiny_space().sample(5))
"""

from .bkd import BKDConfig, nsr_loss, train_block_job
from .blocks import apply_block, build_block
from .executors import Executor, InProcessExecutor, RayExecutor, make_executor
from .finetune import FinetuneConfig, measure_architectures
from .library import BlockLibrary, train_block_library
from .pipeline import AccuracyModel, DonnaConfig, build_accuracy_model
from .predictor import AccuracyPredictor, plot_predictions
from .reference import build_model, build_reference, train_reference
from .space import Architecture, BlockChoice, BlockSpace, SearchSpace, default_space, tiny_space
from .supernet import SupernetBlock

__all__ = [
    "AccuracyModel", "AccuracyPredictor", "Architecture", "BKDConfig", "BlockChoice", "BlockLibrary", "BlockSpace",
    "DonnaConfig", "Executor", "FinetuneConfig", "InProcessExecutor", "RayExecutor", "SearchSpace", "SupernetBlock",
    "apply_block", "build_accuracy_model", "build_block", "build_model", "build_reference", "default_space",
    "make_executor", "measure_architectures", "nsr_loss", "plot_predictions", "tiny_space", "train_block_job",
    "train_block_library", "train_reference",
]
