"""Weight clustering: k-means centroids shared by the weights of each kernel, fine-tuned, sparsity kept.

clustered = keras_eff.cluster_model(model, 16, init="kmeans++", preserve_sparsity=True)
clustered.compile(...); clustered.fit(x, y)
final = keras_eff.strip(clustered)          # plain Keras model, ≤ 16 distinct values per kernel
qat = keras_eff.quantize_model(final, preserve=("sparsity", "clusters"))
"""

from ..strip import strip
from .centroids import INITS, cluster_values, fit_centroids
from .model import ClusterConfig, cluster_model
from .report import ClusteringReport, KernelStats, clustering_report
from .wrapper import ClusterWrapper, cluster, is_clusterable

__all__ = [
    "INITS",
    "ClusterConfig",
    "ClusterWrapper",
    "ClusteringReport",
    "KernelStats",
    "cluster",
    "cluster_model",
    "cluster_values",
    "clustering_report",
    "fit_centroids",
    "is_clusterable",
    "strip",
]
