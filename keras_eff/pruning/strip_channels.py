"""Physical removal of pruned channels: filters go, and with them the matching channels of the BatchNorm and
depthwise layers after them and the matching inputs of the next Conv/Dense (through pooling, Add, Flatten and
Concatenate). The stripped model computes the same outputs as the masked one, with fewer parameters."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ..graph import clone_layer, rebuild
from ..strip import strip
from .callbacks import pruning_wrappers
from .channels import kind


def kept_channels(model) -> dict:
    """{producer layer name: indices of the output channels kept} from the channel masks of a pruned model."""
    return {w.layer.name: np.flatnonzero(np.asarray(w.masks[0]) != 0)
            for w in pruning_wrappers(model) if w.structure == "channels" and not w.is_follower}


def _slice(values: dict, in_keep, out_keep, op) -> dict:
    out = {}
    for name, v in values.items():
        if isinstance(op, layers.BatchNormalization) or name == "bias":
            keep = in_keep if isinstance(op, (layers.BatchNormalization, layers.DepthwiseConv1D,
                                               layers.DepthwiseConv2D)) else out_keep
            out[name] = v if keep is None else v[keep]
            continue
        if in_keep is not None:
            v = np.take(v, in_keep, axis=-2)
        if out_keep is not None and not isinstance(op, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
            v = np.take(v, out_keep, axis=-1)
        out[name] = v
    return out


def remove_channels(model, keep: dict) -> keras.Model:
    """A copy of a plain model without the output channels that ``keep`` ({producer name: kept indices}) drops."""
    keeps = {}  # id(tensor of the old graph) -> kept channel indices (None: all)

    def transform(rb, node, args, kwargs):
        op = node.operation
        ins = [keeps.get(id(t)) for t in node.input_tensors]
        k = kind(op) if isinstance(op, layers.Layer) else "block"
        out_keep, new = None, None
        if k == "producer":
            out_keep = keep.get(op.name)
            if out_keep is not None or ins[0] is not None:
                size = {} if out_keep is None else (
                    {"units": len(out_keep)} if isinstance(op, layers.Dense) else {"filters": len(out_keep)})
                new = clone_layer(op, **size)
        elif k == "follower":
            out_keep = ins[0]
            if out_keep is not None:
                new = clone_layer(op)
        elif k == "pass" or k == "merge":
            out_keep = ins[0]
            if k == "merge" and any((a is None) != (out_keep is None) or (a is not None and not np.array_equal(
                    a, out_keep)) for a in ins):
                raise ValueError(f"layer {op.name!r} merges inputs whose kept channels differ; prune the layers "
                                 f"before it as one group (prune_model does)")
        elif k == "concat" and any(a is not None for a in ins):
            parts, offset = [], 0
            for a, t in zip(ins, node.input_tensors):
                c = t.shape[-1]
                parts.append(offset + (np.arange(c) if a is None else a))
                offset += c
            out_keep = np.concatenate(parts)
        elif k == "flatten" and ins[0] is not None:
            shape = node.input_tensors[0].shape[1:]
            positions = int(np.prod(shape[:-1]))
            out_keep = (np.arange(positions)[:, None] * shape[-1] + ins[0][None, :]).ravel()
        elif any(a is not None for a in ins):
            raise ValueError(f"pruned channels reach layer {getattr(op, 'name', op)!r} ({type(op).__name__}), "
                             f"which cannot drop them")
        for t in node.outputs:
            keeps[id(t)] = out_keep
        if new is None:
            return None
        result = new(*args, **kwargs)
        values = {w.path.split("/")[-1]: np.asarray(w) for w in op.weights}
        sliced = _slice(values, ins[0], out_keep if k == "producer" else None, op)
        new.set_weights([sliced[w.path.split("/")[-1]] for w in new.weights])
        return result

    return rebuild(model, transform)


def strip_channels(model) -> keras.Model:
    """``keras_eff.strip(model)`` and then the pruned channels removed physically (``remove_channels``)."""
    keep = kept_channels(model)
    return remove_channels(strip(model), keep)
