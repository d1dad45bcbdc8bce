"""Helpers for training keras-eff's wrappers under ``tf.distribute`` (docs/distributed.md)."""

from __future__ import annotations

import tensorflow as tf


def replicas_in_sync() -> int:
    """How many replicas train in lockstep here: > 1 only inside a ``tf.distribute`` replica function (``fit`` under
    ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy``), 1 in cross-replica context and without a strategy."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)

