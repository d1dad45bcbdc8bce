"""Range placement: which activation range each quantized layer reads, decided once when the model is made.

int8 TFLite gives every tensor one grid. A wrapper needs, besides its own ranges, the grids of its neighbours: its
input's (the int32 bias is quantized with s_in·s_w, and integer inference reads the input's integers), each input's
of an Add or Multiply, and, where its output lies on a grid another layer owns, that grid (the shared range of the
Concatenate or average pooling it feeds). ``place_ranges`` walks the new model's graph once, right after
``quantize_model`` builds it, and hands each wrapper those quantizers (``QuantizeWrapper.place``); the wrapper keeps
them as references and saves them in its config, so that a loaded model has them too. Nothing walks the graph while
the model runs.

Walking rules: a tensor's grid is the final range of the layer that produced it; layers that keep their input's grid
(``output_range="inherit"`` in the registry: max pooling, reshapes, padding) are walked through; so is a mean over a
1×1 window, which the converter drops; a nested model's input takes the grid of the outer tensor it is called on,
and its output is walked into.
"""

from __future__ import annotations

import keras

from ..graph.rewrite import graph_node_ids
from ..layers import facts_for
from . import integer_inference as integer
from .quantizers import ActivationQuantizer


def _is_wrapper(op) -> bool:
    return callable(getattr(op, "place", None)) and hasattr(op, "output_quantizer")


def _shared(op) -> bool:
    return _is_wrapper(op) and op.facts.output_range == "shared"


def _inherits(op) -> bool:
    """A layer, or a Keras op node (``x[:, 2:10]``, ``ops.reshape``), whose output keeps its input's grid."""
    return isinstance(op, keras.Operation) and not _is_wrapper(op) and facts_for(op).output_range == "inherit"


def _is_average_pool(op) -> bool:
    """A windowed average pooling (TFLite's AVERAGE_POOL_2D has one grid for input and output)."""
    return (
        _is_wrapper(op)
        and op.facts.output_range == "shared"
        and op.facts.channels == "pass"
        and op.facts.int8_kernel != "mean"
    )


def _is_mean(op) -> bool:
    return _is_wrapper(op) and op.facts.int8_kernel == "mean"


class _Placer:
    def __init__(self, model):
        self.outer = {}  # id(input layer of a nested model) -> the range of the outer tensor it is called on
        # the nodes of this model's graph: a stateless layer (a MaxPooling2D) is shared with the user's model and with
        # every model quantized from it, and its ``_outbound_nodes`` list their calls too (a second quantize_model of
        # InceptionV3 found two Concatenates after a pooling, placed no range, and its file had float CONV_2Ds)
        self.nodes = graph_node_ids(model)

    def outbound(self, op) -> list:
        """``op``'s calls' readers in this model's graph."""
        return [n for n in getattr(op, "_outbound_nodes", None) or [] if id(n) in self.nodes]

    def inbound(self, op) -> list:
        """``op``'s calls in this model's graph."""
        return [n for n in getattr(op, "_inbound_nodes", None) or [] if id(n) in self.nodes]

    # -- graph questions -----------------------------------------------------------------------------------------

    def read_by_others(self, w) -> bool:
        """Whether a wrapper without an output range of its own has readers other than one shared-range consumer
        (which quantizes it): it lies on a Concatenate's grid that others read, or it is an average pooling on its
        input's grid."""
        nodes = self.outbound(w)
        if len(nodes) == 1 and _shared(nodes[0].operation):
            return False
        return bool(nodes) or _is_average_pool(w)

    def concat_consumers(self, w) -> list:
        """The Concatenate wrappers that read ``w``'s output directly or through range-inheriting layers."""
        found, stack, seen = [], [w], set()
        while stack:
            for node in self.outbound(stack.pop()):
                op = node.operation
                if id(op) in seen:
                    continue
                seen.add(id(op))
                if _is_wrapper(op) and op.facts.channels == "concat" and op.facts.output_range == "shared":
                    found.append(op)
                elif _inherits(op):
                    stack.append(op)
        return found

    def consumer_range(self, w):
        """The shared range of the sole consumer that quantizes ``w``'s output, or of the one Concatenate that reads
        it beside other layers (``quantize_model`` left the output to it)."""
        nodes = self.outbound(w)
        if not nodes:
            return None
        consumer = nodes[0].operation
        if len(nodes) == 1 and _shared(consumer):
            return self.output_grid(consumer)
        concats = self.concat_consumers(w)
        return self.output_grid(concats[0]) if len(concats) == 1 else None

    def output_grid(self, w):
        """The quantizer of a wrapper's output grid: its own, the shared range of the layer it feeds, or (an average
        pooling that keeps its input's grid) its input's."""
        if w.output_quantizer is not None:
            return w.output_quantizer
        found = self.consumer_range(w)
        if found is None and _is_average_pool(w):
            return self.producer_range(w)
        return found

    def final_range(self, op):
        """The quantizer that puts a layer's output on its grid, or None."""
        if isinstance(op, ActivationQuantizer):
            return op
        if getattr(op, "final_quantizer", None) is not None:  # a composite layer (layer_norm.QuantizedNormalization)
            return op.final_quantizer
        if _is_wrapper(op):
            own = op.post_quantizer or op.output_quantizer
            if own is None and self.read_by_others(op):
                return self.output_grid(op)
            return own
        return None

    def producer_range(self, w, through_dropped: bool = True):
        nodes = self.inbound(w)
        if not nodes or not nodes[0].input_tensors:
            return None
        return self.tensor_range(nodes[0].input_tensors[0], through_dropped=through_dropped)

    def tensor_range(self, tensor, max_hops: int = 64, through_dropped: bool = True):
        """The quantizer whose grid a symbolic tensor lies on, or None where unknown."""
        for _ in range(max_hops):
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                return None
            producer = history.operation
            found = self.final_range(producer)
            nodes = getattr(producer, "_inbound_nodes", [])
            before = nodes[history.node_index].input_tensors if nodes else []
            if through_dropped and _is_mean(producer) and before and integer.is_identity_mean(before[0].shape):
                # a mean over a 1×1 window is no op in the file: its output keeps the input's grid (or, where the
                # producer left its output to this layer's shared range, that range)
                return self.tensor_range(before[0], max_hops) or found
            if found is not None:
                return found
            if id(producer) in self.outer:  # the input of a nested model
                return self.outer[id(producer)]
            if isinstance(producer, keras.Model) and getattr(producer, "outputs", None):
                tensor = producer.outputs[history.tensor_index]  # the output of a nested model: walk on inside
                continue
            if not _inherits(producer):
                return None
            tensor = before[0]
        return None

    # -- the pass ------------------------------------------------------------------------------------------------

    def place(self, model):
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                for node in self.inbound(layer):
                    for t_in, t_out in zip(layer.inputs, node.input_tensors):
                        found = self.tensor_range(t_out)
                        if found is not None:
                            self.outer[id(t_in._keras_history.operation)] = found
                self.place(layer)
        for layer in model.layers:
            if not _is_wrapper(layer) and callable(getattr(layer, "place", None)):
                # a composite layer that emulates LiteRT, a clip on its input's grid: each input's range, in order
                nodes = self.inbound(layer)
                layer.place(*([self.tensor_range(t) for t in nodes[0].input_tensors] if nodes else []))
                continue
            if not _is_wrapper(layer):
                continue
            nodes = self.inbound(layer)
            inputs = [self.tensor_range(t) for t in nodes[0].input_tensors] if nodes else []
            layer.place(
                input_range=layer.input_quantizer or self.producer_range(layer),
                bias_range=(
                    layer.between_quantizer
                    or layer.input_quantizer
                    or self.producer_range(layer, through_dropped=False)
                ),
                output_range=self.output_grid(layer),
                input_ranges=inputs,
                onto_output_grid=(
                    layer.output_quantizer is None
                    and layer.facts.output_range != "shared"
                    and self.read_by_others(layer)
                ),
            )


def place_ranges(model) -> None:
    """Hands every QuantizeWrapper of a quantized model the ranges of its neighbours, in place.

    Walks the graph once (see the module docstring) and calls each wrapper's ``place``: its input's range, the one
    its int32 bias is quantized with, its output's where another layer owns it, each input's range of an Add or
    Multiply. ``quantize_model`` calls it, and a loaded model has the placement from its config; call it yourself
    only after rewiring a quantized model's graph by hand.

    Args:
        model: A quantized Keras model (nested models included). Its wrappers are changed in place.

    Returns:
        None. ``model``'s wrappers are changed in place.

    Example:
        ```python
        keras_eff.quantization.place_ranges(rewired_qat_model)
        ```
    """
    _Placer(model).place(model)
