"""The TF-MOT side of the keras-eff vs TF-MOT benchmark: one job (JSON spec in, JSON result and int8 files out).

Runs in its own environment (``.venv-tfmot/``, from ``benchmarks/requirements-tfmot.txt``): TF-MOT 0.8.1 works only
under tf_keras (Keras 2), and importing it switches the whole process to the legacy Keras. It imports nothing from
keras_eff. Each technique is used as TF-MOT's guides show it: ``quantize_model``; ``prune_low_magnitude`` with
``PolynomialDecay`` and ``UpdatePruningStep``, then ``strip_pruning``; ``cluster_weights`` (k-means++), then
``strip_clustering``; prune- and cluster-preserving QAT through ``quantize_annotate_model`` + ``quantize_apply`` with
the ``Default8BitPrunePreserveQuantizeScheme`` / ``Default8BitClusterPreserveQuantizeScheme``.

    .venv-tfmot/bin/python -m benchmarks.tfmot_worker JOB.json
"""

from __future__ import annotations

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from benchmarks import tfmot_common as common


def to_int8(model, representative=None) -> bytes:
    """Full int8 with int8 input and output, the converter settings keras-eff's ``to_tflite`` uses."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative is not None:
        converter.representative_dataset = lambda: ([representative[i : i + 1]] for i in range(len(representative)))
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


class TFMOTSide:
    K = tf_keras

    def __init__(self, hp):
        self.hp = hp

    @staticmethod
    def seed(n):
        tf_keras.utils.set_random_seed(n)

    @staticmethod
    def versions():
        from importlib.metadata import version

        return {
            "tensorflow": tf.__version__,
            "tf-keras": tf_keras.__version__,
            "tensorflow-model-optimization": version("tensorflow-model-optimization"),
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        }

    @staticmethod
    def compile(model, lr, steps):
        common.compile_classifier(model, lr, steps, tf_keras)

    def plan(self, technique, base, cache, data, steps):
        hp = self.hp
        rep = data["x_train"][: hp["representative"]]
        ptq = lambda m: (m, to_int8(m, rep))  # noqa: E731
        qat = lambda m: (m, to_int8(m))  # noqa: E731
        q = tfmot.quantization.keras
        if technique == "float":
            return {"model": base, "lr": hp["lr_tune"], "callbacks": [], "finish": ptq}
        if technique == "qat":
            return {"model": q.quantize_model(base), "lr": hp["lr_qat"], "callbacks": [], "finish": qat}
        if technique in ("prune50", "prune80"):
            end_step, frequency = common.pruning_steps(hp, len(data["x_train"]))
            schedule = tfmot.sparsity.keras.PolynomialDecay(
                0.0, int(technique[5:]) / 100, begin_step=0, end_step=end_step, frequency=frequency
            )
            model = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
            return {
                "model": model,
                "lr": hp["lr_tune"],
                "callbacks": [tfmot.sparsity.keras.UpdatePruningStep()],
                "finish": lambda m: ptq(tfmot.sparsity.keras.strip_pruning(m)),
            }
        if technique == "cluster16":
            init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
            model = tfmot.clustering.keras.cluster_weights(base, number_of_clusters=16, cluster_centroids_init=init)
            if model is None:
                raise RuntimeError("cluster_weights returned None (a Keras 3 model reached TF-MOT?)")
            return {
                "model": model,
                "lr": hp["lr_tune"],
                "callbacks": [],
                "finish": lambda m: ptq(tfmot.clustering.keras.strip_clustering(m)),
            }
        if technique in ("pqat", "cqat"):
            source = cache["prune50" if technique == "pqat" else "cluster16"]
            start = tf_keras.models.clone_model(source)
            start.set_weights(source.get_weights())
            combine = tfmot.experimental.combine
            scheme = (
                combine.Default8BitPrunePreserveQuantizeScheme()
                if technique == "pqat"
                else combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
            )
            model = q.quantize_apply(q.quantize_annotate_model(start), scheme)
            return {"model": model, "lr": hp["lr_qat"], "callbacks": [], "finish": qat}
        raise ValueError(f"TF-MOT side: unknown technique {technique!r} (keras-eff only: the log distribution)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.tfmot_worker JOB.json")
    job = common.read_job(argv[0])
    common.run_job(job, TFMOTSide(job["hparams"]))


if __name__ == "__main__":
    main()
