"""DONNA (Moons et al., "Distilling Optimal Neural Networks"). Steps A and B: a search space of Keras blocks, the
reference model, blockwise knowledge distillation into supernet blocks, the block library, and an accuracy predictor
fitted on the architectures' block losses. Steps C and D: NSGA-II over the block choices with latency measured on the
target (LiteRT here, a microcontroller budget, a remote Ray worker), a Pareto front per deployment scenario, and the
chosen architectures finetuned from the library with soft distillation; ``run_pipeline`` runs A → D resumably.

    from keras_eff.donna import tiny_space, build_accuracy_model, DonnaConfig
    result = build_accuracy_model(tiny_space(), x_train, y_train, x_test, y_test, DonnaConfig.quick())
    result.predictor.predict(tiny_space().sample(5))
"""

from .bkd import BKDConfig, nsr_loss, train_block_job
from .blocks import apply_block, build_block
from .configs import builtin_config
from .cost import CostEvaluator
from .distill import DistillationLoss, DistillConfig, distill_architectures, distill_job
from .executors import Executor, InProcessExecutor, RayExecutor, make_executor
from .finetune import FinetuneConfig, measure_architectures
from .guard import Guard
from .library import BlockLibrary, train_block_library
from .measure_cache import MeasurementCache
from .measurers import (
    EthosUMeasurer,
    LiteRTLatency,
    Measurer,
    MicroBudget,
    RayRemoteMeasurer,
    int8_model,
    measurer_from_config,
)
from .pipeline import AccuracyModel, DonnaConfig, build_accuracy_model
from .predictor import AccuracyPredictor, plot_predictions
from .reference import build_model, build_reference, train_reference
from .run import DonnaPipeline, PipelineConfig, run_pipeline
from .scenario import Scenario
from .search import SearchConfig, SearchResult, hypervolume, non_dominated, search
from .space import Architecture, BlockChoice, BlockSpace, SearchSpace, default_space, rgb_space, tiny_space
from .supernet import SupernetBlock

__all__ = [
    "CostEvaluator",
    "DistillConfig",
    "DistillationLoss",
    "DonnaPipeline",
    "EthosUMeasurer",
    "Guard",
    "LiteRTLatency",
    "MeasurementCache",
    "Measurer",
    "MicroBudget",
    "PipelineConfig",
    "RayRemoteMeasurer",
    "Scenario",
    "SearchConfig",
    "SearchResult",
    "builtin_config",
    "distill_architectures",
    "distill_job",
    "hypervolume",
    "int8_model",
    "measurer_from_config",
    "non_dominated",
    "run_pipeline",
    "search",
    "AccuracyModel",
    "AccuracyPredictor",
    "Architecture",
    "BKDConfig",
    "BlockChoice",
    "BlockLibrary",
    "BlockSpace",
    "DonnaConfig",
    "Executor",
    "FinetuneConfig",
    "InProcessExecutor",
    "RayExecutor",
    "SearchSpace",
    "SupernetBlock",
    "apply_block",
    "build_accuracy_model",
    "build_block",
    "build_model",
    "build_reference",
    "default_space",
    "make_executor",
    "measure_architectures",
    "nsr_loss",
    "plot_predictions",
    "rgb_space",
    "tiny_space",
    "train_block_job",
    "train_block_library",
    "train_reference",
]
