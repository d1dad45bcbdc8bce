"""keras-eff: shrink trained Keras 3 models and deploy them as int8 TFLite.

Techniques live one per subpackage (quantization, ptq, pruning, clustering, compression, donna); the everyday names
are re-exported here.
"""

from . import layers  # noqa: I001  (first: the registry every technique reads)
from . import callbacks, clustering, compression, datasets, donna, graph, ptq, pruning, quantization
from .clustering import cluster, cluster_model, clustering_report
from .datasets import fashion_mnist
from .layers import LayerFacts, facts_for, register_layer
from .pruning import ConstantSparsity, PolynomialDecay, prune, prune_model, sparsity_report
from .quantization import QuantConfig, calibrate, quantize, quantize_model
from .reporting import get_report, get_reports
from .strip import strip  # last: keras_eff.strip is the function, not the module

__version__ = "0.1.0"

__all__ = [
    "ConstantSparsity", "LayerFacts", "PolynomialDecay", "QuantConfig", "calibrate", "callbacks", "cluster",
    "cluster_model", "clustering", "clustering_report", "compression", "datasets", "donna", "facts_for",
    "fashion_mnist", "get_report", "get_reports", "graph", "layers", "prune", "prune_model", "ptq", "pruning",
    "quantization", "quantize", "quantize_model", "register_layer", "sparsity_report", "strip",
]
