"""Helpers for training keras-eff's wrappers under ``tf.distribute`` (docs/distributed.md)."""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf
from keras.src import tree  # private Keras modules, for patch_keras_multi_worker_fit (Keras 3.15)
from keras.src.backend.tensorflow import trainer as tf_trainer


def replicas_in_sync() -> int:
    """How many replicas train in lockstep here: > 1 only inside a ``tf.distribute`` replica function (``fit`` under
    ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy``), 1 in cross-replica context and without a strategy."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def _strategy_of(variable):
    """The ``tf.distribute`` strategy whose scope created ``variable``, None for a plain (one-device) variable."""
    inner = getattr(variable, "value", variable)  # a Keras variable holds the TensorFlow one
    if isinstance(inner, tf.distribute.DistributedValues):
        return inner.distribute_strategy
    return None


def _where(strategy) -> str:
    if strategy is None:
        return "outside any tf.distribute scope"
    return f"in the scope of a {type(strategy).__name__} (id {id(strategy):#x})"


def check_same_scope(model) -> None:
    """Raises ValueError unless ``model``, its variables and its optimizer's variables (when compiled) all come
    from the same ``tf.distribute`` strategy's scope, or all from outside any scope; and, when this is called inside
    a strategy's scope (``fit`` inside ``with strategy.scope():``), unless that is the same strategy.

    Keras trains a model with the strategy it was created under, and its optimizer updates variables only of its
    own strategy: a model quantized, pruned or clustered outside the scope and compiled inside it (or the reverse)
    fails at the first step, with a bare ``AssertionError`` or a message about scopes that does not say which part
    is where. keras-eff's training callbacks (``FreezeBatchNorm``, ``FreezeRanges``, ``UpdatePruning``) call this at
    ``on_train_begin``; call it yourself before ``fit`` otherwise (``cluster_model`` has no callback).
    """
    parts = [("the model", getattr(model, "_distribute_strategy", None), None)]
    seen: dict = {}  # strategy (None: no strategy) -> the path of its first variable
    for v in model.variables:
        seen.setdefault(_strategy_of(v), v.path)
    parts += [("its variables", strategy, path) for strategy, path in seen.items()]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        seen = {}
        for v in optimizer.variables:
            seen.setdefault(_strategy_of(v), v.path)
        parts += [("its optimizer's variables", strategy, path) for strategy, path in seen.items()]
    groups: dict[int | None, list] = {}  # id(strategy) -> the parts made under it, in order
    for part in parts:
        groups.setdefault(id(part[1]) if part[1] is not None else None, []).append(part)
    # fit called inside a scope runs there unless the model has its own strategy (then the two must agree)
    current = (
        tf.distribute.get_strategy()
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context()
        else None
    )
    if len(set(groups) | ({id(current)} if current is not None else set())) <= 1:
        return
    clauses = []
    for members in groups.values():
        names = [name if path is None else f"{name} (e.g. {path!r})" for name, _, path in members]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        clauses.append(
            f"{joined} {'was' if len(names) == 1 and members[0][2] is None else 'were'} created {_where(members[0][1])}"
        )
    if current is not None:
        clauses.append(f"and fit is called {_where(current)}")
    raise ValueError(
        f"model {model.name!r} mixes tf.distribute scopes: {'; '.join(clauses)}. Keras trains a model only with the "
        f"strategy that it, its variables and its optimizer all come from: build (or load) the float model, apply "
        f"quantize_model / prune_model / cluster_model / strip, calibrate and compile inside the same "
        f"`with strategy.scope():` (or do all of it outside any scope), then call fit (docs/distributed.md, Scope)"
    )


def _multi_worker(strategy) -> bool:
    """True for a ``MultiWorkerMirroredStrategy`` that spans more than one worker (TF_CONFIG with several tasks)."""
    extended = getattr(strategy, "extended", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        getattr(extended, "_in_multi_worker_mode", lambda: False)()
    )


def _local_value(value):
    """This worker's first replica's tensor of a per-replica value; anything else as it is."""
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _rank(value):
    return _local_value(value).shape.rank


_PATCHED = False


def patch_keras_multi_worker_fit() -> bool:
    """Lets Keras 3's ``fit`` / ``evaluate`` run under a multi-worker ``tf.distribute.MultiWorkerMirroredStrategy``.

    Keras 3.15 on TensorFlow 2.21 fails there before training anything, for any model, keras-eff's or not
    (keras-team/keras#20585, tensorflow/tensorflow#72388):

    - ``fit`` first reduces the whole ``(x, y)`` batch with one ``strategy.reduce``, which does not take nested values
      across workers (``ValueError: Attempt to convert a value (PerReplica ...) ... to a Tensor``). It only needs the
      batch's shapes: patched to take this worker's own per-replica batch, with no communication.
    - the step's scalar logs (the loss) are averaged with ``strategy.reduce("MEAN", v, axis=0)``
      (``ValueError: Invalid reduction dimension 0 for input with 0 dimensions``): patched to ``axis=None`` for
      scalars, the mean over replicas, which is what the single-worker path computes.

    Both patches act only under a multi-worker strategy (everything else runs Keras's own code unchanged); they
    change no variable, aggregation or gradient. Call it once per worker process, before ``fit``. Returns True when it
    patched (False when it had already). This changes Keras for the whole process; it is the only keras-eff function
    that does.
    """
    global _PATCHED
    if _PATCHED:
        return False
    trainer_cls = tf_trainer.TensorFlowTrainer
    build = getattr(trainer_cls, "_maybe_symbolic_build", None)
    reduce_per_replica = getattr(tf_trainer, "reduce_per_replica", None)
    if build is None or reduce_per_replica is None:
        warnings.warn(
            f"patch_keras_multi_worker_fit: Keras {keras.__version__} has no "
            f"TensorFlowTrainer._maybe_symbolic_build / reduce_per_replica (written for Keras 3.15); "
            f"nothing patched: check that fit runs under MultiWorkerMirroredStrategy",
            stacklevel=2,
        )
        return False

    def _maybe_symbolic_build(self, *args, **kwargs):
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or not _multi_worker(strategy):
            return build(self, *args, **kwargs)

        def local_batch(reduce_op, value, axis=None):  # the signature Keras calls reduce with
            return tree.map_structure(_local_value, value)

        strategy.reduce = local_batch  # on this instance, for this call only
        try:
            return build(self, *args, **kwargs)
        finally:
            del strategy.reduce

    def _reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not _multi_worker(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def one(value):
            if _rank(value) == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return reduce_per_replica(value, strategy, reduction)

        return tree.map_structure(one, values)

    trainer_cls._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = _reduce_per_replica
    _PATCHED = True
    return True
