"""The search space, declared as data: a fixed stem and head, and per block position the allowed choices.

Every choice of a block maps the same input shape to the same output shape (the block's stride and output channels
are fixed), so any combination of choices, one per block, is a valid network: an :class:`Architecture`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# read_json is re-exported for code that still imports it from here; both live in the shared file helpers.
from tflite_export.files import atomic_write, read_json, read_yaml_or_json  # noqa: F401

from .backbone import backbone_config

KERNELS = (3, 5, 7)
EXPANSIONS = (2, 3, 4, 6)
DEPTHS = (1, 2, 3, 4)
ACTIVATIONS = ("relu", "swish")
CELLS = ("dw_ib", "fused_ib", "gr_ib")
SE_OPTIONS = (False, True)
WIDTHS = (0.5, 0.75, 1.0)
GROUP_WIDTHS = (4, 8, 16, 32)
GROUP_WIDTH = 8  # channels per group of a gr_ib cell's kxk convolution, unless a block sets its own
_FIELDS = ("cells", "kernels", "expansions", "depths", "se", "activations", "widths")


@dataclass(frozen=True)
class BlockChoice:
    """One way to fill a block position: a cell type, its kernel, expansion, depth, SE, activation and width.

    Frozen and hashable. Every value is checked against the values a block may allow (:data:`KERNELS`,
    :data:`EXPANSIONS`, ...); whether a given block allows it is checked by :class:`BlockSpace` and
    :class:`SearchSpace`.

    Attributes:
        cell: ``"dw_ib"`` (1x1 expand, depthwise kxk, 1x1 project), ``"fused_ib"`` (a full kxk convolution that
            expands, then 1x1 project) or ``"gr_ib"`` (1x1 expand, grouped kxk, 1x1 project: the block's
            ``group_width`` channels per group, the expanded channels rounded up to a multiple of it).
        kernel: The kxk kernel size: 3, 5 or 7.
        expansion: How many times the layer's input channels the expanded channels are: 2, 3, 4 or 6.
        depth: How many layers of the cell are stacked (1 to 4); the first carries the block's stride.
        se: Whether each layer has squeeze-and-excitation.
        activation: ``"relu"`` or ``"swish"``.
        width: Width multiplier, 0.5, 0.75 or 1.0: scales the expanded channels and the channels between stacked
            layers (the block's output keeps its channels). An int such as ``1`` is read as ``1.0``.

    Raises:
        ValueError: If a value is not one of the allowed ones (the message lists them). ``True`` is not ``1``.

    Example:
        ```python
        choice = BlockChoice(cell="fused_ib", kernel=5, expansion=4, depth=2, se=True)
        choice.name                                 # 'fused_ib-k5-e4-d2-se-relu'
        BlockChoice.from_name(choice.name) == choice  # True
        ```
    """

    cell: str = "dw_ib"
    kernel: int = 3
    expansion: int = 4
    depth: int = 1
    se: bool = False
    activation: str = "relu"
    width: float = 1.0

    def __post_init__(self):
        if isinstance(self.width, int) and not isinstance(self.width, bool):
            object.__setattr__(self, "width", float(self.width))
        _check_value("width", self.width, WIDTHS)
        _check_value("cell", self.cell, CELLS)
        _check_value("kernel", self.kernel, KERNELS)
        _check_value("expansion", self.expansion, EXPANSIONS)
        _check_value("depth", self.depth, DEPTHS)
        _check_value("se", self.se, SE_OPTIONS)
        _check_value("activation", self.activation, ACTIVATIONS)

    @property
    def name(self) -> str:
        """Readable and parseable: ``dw_ib-k5-e4-d2-se-swish`` (``nose`` without squeeze-and-excitation), with
        ``-w0.5`` appended when the width multiplier is not 1."""
        return (
            f"{self.cell}-k{self.kernel}-e{self.expansion}-d{self.depth}-{'se' if self.se else 'nose'}-"
            f"{self.activation}" + ("" if self.width == 1.0 else f"-w{self.width:g}")
        )

    @classmethod
    def from_name(cls, name: str) -> BlockChoice:
        """The choice that :attr:`name` wrote.

        Args:
            name: A name such as ``"dw_ib-k5-e4-d2-se-swish"`` or ``"fused_ib-k3-e2-d1-nose-relu-w0.5"``.

        Returns:
            The `BlockChoice` of that name.

        Raises:
            ValueError: If ``name`` is not in that form or names a value that is not allowed.
        """
        parts = str(name).split("-")
        width = 1.0
        if len(parts) == 7 and parts[6][:1] == "w":
            try:
                width = float(parts.pop()[1:])
            except ValueError:
                parts.append("?")
        ok = (
            len(parts) == 6
            and parts[1][:1] == "k"
            and parts[2][:1] == "e"
            and parts[3][:1] == "d"
            and parts[4] in ("se", "nose")
            and all(p[1:].isdigit() for p in parts[1:4])
        )
        if not ok:
            raise ValueError(f"{name!r} is not a block choice name; expected e.g. 'dw_ib-k5-e4-d2-se-swish'")
        cell, k, e, d, se, act = parts
        return cls(
            cell=cell,
            kernel=int(k[1:]),
            expansion=int(e[1:]),
            depth=int(d[1:]),
            se=se == "se",
            activation=act,
            width=width,
        )

    def get_config(self) -> dict:
        """The choice as a plain mapping (``width`` only when it is not 1).

        Returns:
            A dict that :meth:`from_config` reads back.
        """
        cfg = {
            "cell": self.cell,
            "kernel": self.kernel,
            "expansion": self.expansion,
            "depth": self.depth,
            "se": self.se,
            "activation": self.activation,
        }
        return cfg if self.width == 1.0 else {**cfg, "width": self.width}

    @classmethod
    def from_config(cls, config: dict) -> BlockChoice:
        """The inverse of :meth:`get_config`.

        Args:
            config: A mapping of the constructor's fields.

        Returns:
            A new `BlockChoice`.

        Raises:
            ValueError: If a value is not allowed.
            TypeError: If ``config`` holds a key that is not a field.
        """
        return cls(**config)


def check_group_width(group_width, where: str = "") -> None:
    """Refuses a group width of gr_ib cells that is not one of :data:`GROUP_WIDTHS` (the message lists them)."""
    if not any(type(group_width) is int and group_width == g for g in GROUP_WIDTHS):
        raise ValueError(
            f"{where}group_width: {group_width!r} is not allowed; a gr_ib cell's grouped convolution has "
            f"{', '.join(map(str, GROUP_WIDTHS))} channels per group (the expanded channels are rounded "
            f"up to a multiple of it)"
        )


def _check_value(what, value, allowed, where=""):
    ok = any(type(value) is type(a) and value == a for a in allowed)
    if not ok:
        allowed_txt = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{where}{what}: {value!r} is not allowed; choose from {allowed_txt}")


@dataclass(frozen=True)
class BlockSpace:
    """One block position: its output channels and stride (fixed) and the allowed values of each choice.

    Every combination of the listed values is a choice of the block (:meth:`choices`). The lists are kept as tuples
    and checked by :meth:`validate`, which :class:`SearchSpace` calls for each of its blocks.

    Attributes:
        out_channels: The block's output channels, the same for every choice.
        stride: 1 or 2, carried by the first stacked layer of every choice.
        cells: The allowed cell types (``"dw_ib"``, ``"fused_ib"``, ``"gr_ib"``).
        kernels: The allowed kernel sizes (3, 5, 7).
        expansions: The allowed expansions (2, 3, 4, 6).
        depths: The allowed depths (1 to 4).
        se: The allowed squeeze-and-excitation settings (``False``, ``True``).
        activations: The allowed activations (``"relu"``, ``"swish"``).
        widths: The allowed width multipliers (0.5, 0.75, 1.0).
        reference: The block's choice in the reference model (a `BlockChoice` or its config); None: the largest
            (:meth:`reference_choice`).
        group_width: Channels per group of the grouped kxk convolution of ``"gr_ib"`` cells: 4, 8, 16 or 32 (fixed
            per block, not searched). A gr_ib layer rounds its expanded channels up to a multiple of it, so that
            they split into whole groups; every expansion and width then shares the same groups (the supernet's
            smaller choices use the first groups). Ignored by the other cells.

    Example:
        ```python
        block = BlockSpace(24, stride=2, cells=("dw_ib", "fused_ib"), kernels=(3, 5), expansions=(2, 4))
        len(block.choices())   # 8
        ```
    """

    out_channels: int
    stride: int = 1
    cells: tuple = ("dw_ib",)
    kernels: tuple = (3,)
    expansions: tuple = (4,)
    depths: tuple = (1,)
    se: tuple = (False,)
    activations: tuple = ("relu",)
    widths: tuple = (1.0,)
    reference: BlockChoice | None = None
    group_width: int = GROUP_WIDTH

    def __post_init__(self):
        for name in _FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(
            self,
            "widths",
            tuple(float(w) if isinstance(w, int) and not isinstance(w, bool) else w for w in self.widths),
        )
        if isinstance(self.reference, dict):
            object.__setattr__(self, "reference", BlockChoice.from_config(self.reference))

    def validate(self, where: str = "") -> None:
        """Checks the block's values.

        Args:
            where: Prefix of the error messages, e.g. ``"blocks[1]."``.

        Returns:
            None.

        Raises:
            ValueError: If ``out_channels`` is not a positive integer, ``stride`` is not 1 or 2, a list is empty,
                repeats a value or holds one that is not allowed, ``group_width`` is not one of
                :data:`GROUP_WIDTHS`, or ``reference`` is not one of the choices.
        """
        if not isinstance(self.out_channels, int) or isinstance(self.out_channels, bool) or self.out_channels < 1:
            raise ValueError(f"{where}out_channels: {self.out_channels!r} must be a positive integer")
        _check_value("stride", self.stride, (1, 2), where)
        check_group_width(self.group_width, where)
        allowed = dict(zip(_FIELDS, (CELLS, KERNELS, EXPANSIONS, DEPTHS, SE_OPTIONS, ACTIVATIONS, WIDTHS)))
        for name in _FIELDS:
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{where}{name}: empty; give at least one of {allowed[name]}")
            if len(set(values)) != len(values):
                raise ValueError(f"{where}{name}: {values} lists a value twice")
            for v in values:
                _check_value(name, v, allowed[name], where)
        if self.reference is not None and self.reference not in self.choices():
            raise ValueError(f"{where}reference: {self.reference.name} is not one of this block's choices")

    def choices(self) -> list:
        """Every choice of this block, in a fixed order (the index of a choice is its position here).

        Returns:
            A list of `BlockChoice`, the product of the allowed values.
        """
        return [
            BlockChoice(c, k, e, d, s, a, w)
            for c, k, e, d, s, a, w in itertools.product(
                self.cells, self.kernels, self.expansions, self.depths, self.se, self.activations, self.widths
            )
        ]

    def reference_choice(self) -> BlockChoice:
        """The block's choice in the reference model.

        Returns:
            ``reference`` when given, else the largest choice: biggest kernel, expansion, depth and width, SE and
            swish when allowed, the depthwise cell when allowed (the canonical MobileNet block).
        """
        if self.reference is not None:
            return self.reference
        return BlockChoice(
            cell="dw_ib" if "dw_ib" in self.cells else self.cells[0],
            kernel=max(self.kernels),
            expansion=max(self.expansions),
            depth=max(self.depths),
            se=True in self.se,
            activation="swish" if "swish" in self.activations else self.activations[0],
            width=max(self.widths),
        )

    def get_config(self) -> dict:
        """The block as a plain mapping (``widths`` only when it is not ``(1.0,)``, ``group_width`` only when it is
        not :data:`GROUP_WIDTH`).

        Returns:
            A dict that :meth:`from_config` reads back.
        """
        cfg: dict[str, Any] = {"out_channels": self.out_channels, "stride": self.stride}
        cfg.update({name: list(getattr(self, name)) for name in _FIELDS if name != "widths" or self.widths != (1.0,)})
        cfg["reference"] = None if self.reference is None else self.reference.get_config()
        if self.group_width != GROUP_WIDTH:
            cfg["group_width"] = self.group_width
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> BlockSpace:
        """The inverse of :meth:`get_config`.

        Args:
            config: A mapping of the constructor's fields (lists for the allowed values).

        Returns:
            A new `BlockSpace` (not yet validated: :meth:`validate` checks its values).

        Raises:
            ValueError: If ``config`` holds an unknown key (the message lists the allowed ones).
        """
        unknown = set(config) - {"out_channels", "stride", "reference", "group_width", *_FIELDS}
        if unknown:
            raise ValueError(
                f"unknown block field(s) {sorted(unknown)}; allowed: out_channels, stride, "
                f"{', '.join(_FIELDS)}, reference, group_width"
            )
        return cls(**config)


@dataclass(frozen=True)
class Architecture:
    """One choice per block position: a network of a search space.

    Frozen and hashable; ``str(arch)`` joins the choices' names with ``" | "`` and :meth:`parse` reads it back.
    Whether it belongs to a given space is checked by :meth:`SearchSpace.check`.

    Attributes:
        choices: One `BlockChoice` per block position, in order (any sequence; kept as a tuple).

    Example:
        ```python
        arch = tiny_space().sample(1)[0]
        Architecture.parse(str(arch)) == arch   # True
        ```
    """

    choices: tuple

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))

    def __str__(self) -> str:
        return " | ".join(c.name for c in self.choices)

    @classmethod
    def parse(cls, text: str) -> Architecture:
        """The architecture that ``str(arch)`` wrote.

        Args:
            text: Block choice names joined by ``"|"``, e.g. ``"dw_ib-k3-e2-d1-nose-relu | fused_ib-k5-e2-d1-se-relu"``.

        Returns:
            A new `Architecture`.

        Raises:
            ValueError: If a part is not a block choice name.
        """
        return cls(tuple(BlockChoice.from_name(part.strip()) for part in str(text).split("|")))


@dataclass(frozen=True)
class SearchSpace:
    """A DONNA search space: a fixed stem and head, and per block position the allowed choices.

    Networks are stem (a 3x3 convolution with ``stem_stride``, batch norm, ReLU) -> blocks -> head (a 1x1
    convolution to ``head_channels``, batch norm, ReLU, global average pooling, dense logits). A space read from a
    Keras reference (:meth:`from_reference`) keeps that model's own stem and head instead (``backbone``). The space
    is checked when it is made; it is frozen, and it saves to and loads from YAML or JSON (:meth:`save`,
    :meth:`load`).

    Attributes:
        blocks: One `BlockSpace` (or its config) per block position.
        input_shape: ``(height, width, channels)`` of the input images.
        num_classes: How many classes the logits have.
        stem_channels: Output channels of the stem.
        stem_stride: Stride of the stem, 1 or 2.
        head_channels: Channels of the head's 1x1 convolution.
        bn_momentum: Momentum of every batch norm, in (0, 1).
        name: A name for messages and model names.
        backbone: The stem, head and block boundaries of a Keras reference model (made by :meth:`from_reference`);
            None for the built-in stem and head.

    Raises:
        ValueError: If a field or a block is invalid (the message names it, e.g. ``blocks[1].kernels``).

    Example:
        ```python
        space = SearchSpace(blocks=(BlockSpace(16, 2, kernels=(3, 5), expansions=(2, 4)),
                                    BlockSpace(32, 2, cells=("dw_ib", "fused_ib"))),
                            input_shape=(32, 32, 3), num_classes=10)
        space.size()                 # 4 * 2 = 8 architectures
        space.save("space.yaml")
        SearchSpace.load("space.yaml") == space   # True
        ```
    """

    blocks: tuple
    input_shape: tuple = (28, 28, 1)
    num_classes: int = 10
    stem_channels: int = 16
    stem_stride: int = 2
    head_channels: int = 64
    bn_momentum: float = 0.9
    name: str = "space"
    backbone: dict | None = field(default=None, hash=False)  # stem, head and boundaries of a Keras reference

    def __post_init__(self):
        blocks = tuple(b if isinstance(b, BlockSpace) else BlockSpace.from_config(b) for b in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        self.validate()

    def validate(self) -> None:
        """Checks every field and every block (called when the space is made).

        Returns:
            None.

        Raises:
            ValueError: If there is no block, a field is out of range, a block is invalid, or the blocks do not
                match the ``backbone``'s boundaries.
        """
        if not self.blocks:
            raise ValueError("blocks: a search space needs at least one block")
        if len(self.input_shape) != 3 or any(not isinstance(s, int) or s < 1 for s in self.input_shape):
            raise ValueError(f"input_shape: {self.input_shape} must be (height, width, channels), positive ints")
        for name in ("num_classes", "stem_channels", "head_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: {v!r} must be a positive integer")
        if self.backbone is None:
            _check_value("stem_stride", self.stem_stride, (1, 2))
        else:
            self._check_backbone()
        if not 0.0 < float(self.bn_momentum) < 1.0:
            raise ValueError(f"bn_momentum: {self.bn_momentum} must lie in (0, 1)")
        for i, block in enumerate(self.blocks):
            block.validate(where=f"blocks[{i}].")

    def _check_backbone(self) -> None:
        bb = self.backbone
        if not isinstance(bb, dict) or not {"boundaries", "shapes", "stem", "head"} <= set(bb):
            raise ValueError(
                "backbone: expected a mapping with boundaries, shapes, stem and head (made by "
                "SearchSpace.from_reference)"
            )
        shapes = [tuple(s) for s in bb["shapes"]]
        if len(shapes) != len(self.blocks) + 1:
            raise ValueError(
                f"backbone: {len(shapes)} boundaries for {len(self.blocks)} blocks; a space read from a "
                f"reference has one block between each two boundaries"
            )
        for i, (a, b) in enumerate(zip(shapes, shapes[1:])):
            blk = self.blocks[i]
            if (
                b[2] != blk.out_channels
                or blk.stride not in (1, 2)
                or tuple(-(-x // blk.stride) for x in a[:2]) != tuple(b[:2])
            ):
                raise ValueError(
                    f"blocks[{i}]: out_channels {blk.out_channels}, stride {blk.stride} do not map the "
                    f"reference's {bb['boundaries'][i]!r} {a} to {bb['boundaries'][i + 1]!r} {b}"
                )

    @classmethod
    def from_reference(cls, model, blocks=None, choices="default", name: str | None = None) -> SearchSpace:
        """A space whose blocks replace a Keras reference model's blocks between chosen boundary layers.

        Each block keeps the reference's input and output shapes; the stem and head are the reference's own (a
        final softmax dropped), kept in ``backbone``. ``model`` is not changed.

        Args:
            model: A Functional or Sequential Keras model with one image input and one class-score output.
            blocks: The names of the boundary layers; None or ``"auto"``: the proposed boundaries (see
                :func:`keras_eff.donna.backbone.propose_boundaries`).
            choices: The choice lists of every block: a name of :data:`CHOICE_TEMPLATES` (``"default"``,
                ``"tiny"``) or a mapping of ``cells``, ``kernels``, ``expansions``, ``depths``, ``se``,
                ``activations``, ``widths`` lists (and optionally ``group_width``, an int).
            name: The space's name; default ``"<model name>_donna"``.

        Returns:
            A new `SearchSpace` with a ``backbone``.

        Raises:
            ValueError: If ``model`` is subclassed or has other than one fixed-shape image input and one
                class-score output; if a boundary is not in the model, a skip connection crosses it, its output is
                not an image tensor, or consecutive boundaries do not chain with stride 1 or 2 (the message lists
                the candidate boundaries); or if ``choices`` is invalid.

        Example:
            ```python
            model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=10)
            space = SearchSpace.from_reference(model, ["block_2_add", "block_5_add", "block_9_add"])
            ```
        """
        bb, _ = backbone_config(model, blocks)
        return cls.from_backbone(bb, choices, name or f"{bb['source']}_donna")

    @classmethod
    def from_backbone(cls, bb: dict, choices="default", name: str = "reference_space") -> SearchSpace:
        """The space of :meth:`from_reference`, from an already extracted backbone.

        Args:
            bb: The backbone mapping (``boundaries``, ``shapes``, ``stem``, ``head``, ``input_shape``,
                ``num_classes``) of :func:`keras_eff.donna.backbone.backbone_config`.
            choices: A :data:`CHOICE_TEMPLATES` name or a mapping of choice lists, as in :meth:`from_reference`.
            name: The space's name.

        Returns:
            A new `SearchSpace` with ``backbone=bb``.

        Raises:
            ValueError: If ``choices`` is invalid or the backbone's shapes do not chain.
        """
        template = choice_template(choices)
        shapes = [tuple(s) for s in bb["shapes"]]
        blocks = tuple(
            BlockSpace(b[2], -(-a[0] // b[0]) if a[0] != b[0] else 1, **template) for a, b in zip(shapes, shapes[1:])
        )
        stem_in = tuple(bb["input_shape"])
        return cls(
            blocks=blocks,
            input_shape=stem_in,
            num_classes=int(bb["num_classes"]),
            stem_channels=shapes[0][2],
            stem_stride=max(1, round(stem_in[0] / shapes[0][0])),
            head_channels=shapes[-1][2],
            name=name,
            backbone=bb,
        )

    # ---- architectures ----------------------------------------------------------------------------------------
    def block_choices(self, i: int) -> list:
        """The choices of block ``i``.

        Args:
            i: The block position.

        Returns:
            ``blocks[i].choices()``: a list of `BlockChoice` whose order gives the choice indices.
        """
        return self.blocks[i].choices()

    def reference(self) -> Architecture:
        """The reference architecture.

        Returns:
            Each block's :meth:`BlockSpace.reference_choice`: the largest choices unless the blocks name one.
        """
        return Architecture(tuple(b.reference_choice() for b in self.blocks))

    def size(self) -> int:
        """How many architectures the space holds.

        Returns:
            The product of the blocks' choice counts.
        """
        return int(np.prod([len(b.choices()) for b in self.blocks], dtype=np.float64))

    def sample(self, n: int, seed=0, unique: bool = True) -> list:
        """Architectures drawn uniformly at random.

        Args:
            n: How many.
            seed: Seed of the draw (anything ``numpy.random.default_rng`` takes); the same seed gives the same list.
            unique: Whether the architectures must differ.

        Returns:
            A list of ``n`` `Architecture`.

        Raises:
            ValueError: If ``unique`` and ``n`` exceeds :meth:`size`.
        """
        rng = np.random.default_rng(seed)
        choices = [b.choices() for b in self.blocks]
        if unique and n > self.size():
            raise ValueError(f"n: asked for {n} distinct architectures, the space holds only {self.size()}")
        out: list[Architecture] = []
        seen: set[Architecture] = set()
        while len(out) < n:
            arch = Architecture(tuple(c[rng.integers(len(c))] for c in choices))
            if unique and arch in seen:
                continue
            seen.add(arch)
            out.append(arch)
        return out

    def indices(self, arch: Architecture) -> tuple:
        """The choice index of each block of ``arch``.

        Args:
            arch: An architecture of this space.

        Returns:
            A tuple with one index per block, into :meth:`block_choices`.

        Raises:
            ValueError: If ``arch`` does not belong to this space.
        """
        self.check(arch)
        return tuple(b.choices().index(c) for b, c in zip(self.blocks, arch.choices))

    def check(self, arch: Architecture) -> None:
        """Refuses an architecture that does not belong to this space.

        Args:
            arch: The architecture.

        Returns:
            None.

        Raises:
            ValueError: If ``arch`` has another number of blocks or a choice a block does not allow.
        """
        if len(arch.choices) != len(self.blocks):
            raise ValueError(
                f"architecture has {len(arch.choices)} blocks, the space {self.name!r} has {len(self.blocks)}"
            )
        for i, (b, c) in enumerate(zip(self.blocks, arch.choices)):
            if c not in b.choices():
                raise ValueError(f"block {i}: choice {c.name} is not in the space {self.name!r}")

    def block_input_shapes(self) -> list:
        """The tensor shape at each block boundary.

        Returns:
            ``len(blocks) + 1`` tuples ``(height, width, channels)``: the input of each block, then the last
            block's output.
        """
        if self.backbone is not None:
            return [tuple(s) for s in self.backbone["shapes"]]
        h, w, _ = self.input_shape
        h, w = -(-h // self.stem_stride), -(-w // self.stem_stride)
        shapes = [(h, w, self.stem_channels)]
        for b in self.blocks:
            h, w = -(-h // b.stride), -(-w // b.stride)
            shapes.append((h, w, b.out_channels))
        return shapes

    # ---- serialization ----------------------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The space as a plain mapping (what :meth:`save` writes).

        Returns:
            A dict that :meth:`from_config` reads back.
        """
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "stem_channels": self.stem_channels,
            "stem_stride": self.stem_stride,
            "head_channels": self.head_channels,
            "bn_momentum": self.bn_momentum,
            "blocks": [b.get_config() for b in self.blocks],
            **({} if self.backbone is None else {"backbone": self.backbone}),
        }

    @classmethod
    def from_config(cls, config: dict) -> SearchSpace:
        """The inverse of :meth:`get_config`.

        Args:
            config: A mapping with a ``blocks`` list and optionally the other fields.

        Returns:
            A new, checked `SearchSpace`.

        Raises:
            ValueError: If ``config`` is not a mapping with ``blocks``, holds an unknown key, or a value is invalid
                (the message names the field).
        """
        if not isinstance(config, dict) or "blocks" not in config:
            raise ValueError("a search space config is a mapping with a 'blocks' list")
        allowed = {
            "name",
            "input_shape",
            "num_classes",
            "stem_channels",
            "stem_stride",
            "head_channels",
            "bn_momentum",
            "blocks",
            "backbone",
        }
        unknown = set(config) - allowed
        if unknown:
            raise ValueError(f"unknown search space field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        blocks = []
        for i, b in enumerate(config["blocks"]):
            try:
                blocks.append(BlockSpace.from_config(dict(b)))
            except (TypeError, ValueError) as err:
                raise ValueError(f"blocks[{i}]: {err}") from None
        return cls(**{**config, "blocks": tuple(blocks)})

    def fingerprint(self) -> str:
        """A short hash of the config: files built for one space refuse to load into another.

        Returns:
            16 hex digits of the SHA-256 of :meth:`get_config`.
        """
        text = json.dumps(self.get_config(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(self, path) -> Path:
        """Writes the space as YAML (``.yaml``/``.yml``) or JSON (any other suffix), atomically.

        Args:
            path: The file to write.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            return atomic_write(path, yaml.safe_dump(self.get_config(), sort_keys=False))
        return atomic_write(path, json.dumps(self.get_config(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> SearchSpace:
        """Reads a space that :meth:`save` wrote.

        Args:
            path: A ``.yaml``/``.yml`` file (read with the safe loader) or a JSON file.

        Returns:
            A new, checked `SearchSpace`.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is unreadable or its space is invalid.
        """
        return cls.from_config(read_yaml_or_json(path, "search space file"))


CHOICE_TEMPLATES: dict[str, dict[str, Any]] = {
    "default": dict(
        cells=CELLS,
        kernels=(3, 5),
        expansions=(2, 4),
        depths=(1, 2),
        se=SE_OPTIONS,
        activations=("relu",),
        widths=(0.5, 0.75, 1.0),
    ),
    "tiny": dict(
        cells=("dw_ib", "fused_ib"), kernels=(3, 5), expansions=(2,), depths=(1,), se=(False,), activations=("relu",)
    ),
}


def choice_template(choices) -> dict:
    """The per-block choice lists of a space read from a reference: a :data:`CHOICE_TEMPLATES` name or a mapping
    (lists, and optionally ``group_width``: the channels per group of gr_ib cells)."""
    if isinstance(choices, str):
        if choices not in CHOICE_TEMPLATES:
            raise ValueError(
                f"space: {choices!r} is not a choice template for a reference; choose from "
                f"{', '.join(CHOICE_TEMPLATES)} or give a mapping of {', '.join(_FIELDS)}"
            )
        return dict(CHOICE_TEMPLATES[choices])
    if not isinstance(choices, dict):
        raise ValueError(
            f"space: with a reference model, give a choice template name ({', '.join(CHOICE_TEMPLATES)}) "
            f"or a mapping of {', '.join(_FIELDS)}; got {choices!r}"
        )
    unknown = set(choices) - set(_FIELDS) - {"group_width"}
    if unknown:
        raise ValueError(
            f"space: unknown key(s) {sorted(unknown)} for a reference's choices; allowed: "
            f"{', '.join(_FIELDS)}, group_width"
        )
    out = dict(CHOICE_TEMPLATES["default"])
    for k, v in choices.items():
        if k == "group_width":
            check_group_width(v, "space.")
            out[k] = v
            continue
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"space.{k}: {v!r} must be a list")
        out[k] = tuple(v)
    BlockSpace(8, 1, **out).validate("space.")
    return out


def default_space() -> SearchSpace:
    """The default space, sized for Fashion-MNIST (28x28x1 images, 10 classes) on a few CPU cores.

    A stride-2 stem of 16 channels, 3 blocks (24, 24, 40 channels; strides 2, 1, 2: 14x14 -> 7x7 -> 4x4) and a
    96-channel head. Each block: depthwise or fused cells, kernels 3/5, expansions 2/4, depths 1-3, SE or not, ReLU or
    swish (96 choices per block). Kernel 7, expansion 6, depth 4 and grouped cells are left out to keep the accuracy
    model's cost down (docs/donna.md says why); add them back with your own ``BlockSpace`` lists.

    Returns:
        A new `SearchSpace` named ``"fmnist_default"``.

    Example:
        ```python
        space = default_space()
        space.size()   # 96 ** 3
        ```
    """
    common: dict[str, Any] = dict(
        cells=("dw_ib", "fused_ib"),
        kernels=(3, 5),
        expansions=(2, 4),
        depths=(1, 2, 3),
        se=SE_OPTIONS,
        activations=ACTIVATIONS,
    )
    return SearchSpace(
        blocks=(BlockSpace(24, 2, **common), BlockSpace(24, 1, **common), BlockSpace(40, 2, **common)),
        stem_channels=16,
        stem_stride=2,
        head_channels=96,
        name="fmnist_default",
    )


def rgb_space(size: int = 64, channels: int = 3, num_classes: int = 10) -> SearchSpace:
    """The 5-block space for square RGB (or other) images of 32 to 96 pixels.

    A stride-2 stem of 48 channels, 5 blocks (24, 32, 48, 64, 96 channels; strides 1, 2, 2, 1, 2), a 256-channel
    head; each block with depthwise, fused or grouped cells (8 channels per group), kernels 3/5, expansions 2/3/4,
    depths 1-2, SE or not, ReLU and a width multiplier of 0.5/0.75/1.0 (216 choices per block). Kernel 7 and swish
    are left out; the latencies it was sized for, and why those are left out, are in docs/donna.md ("The 5-block
    space for 32-96 px inputs"). Add them back with your own ``BlockSpace`` lists.

    Args:
        size: Height and width of the input images, an integer from 32 to 96.
        channels: Channels of the input images.
        num_classes: How many classes the logits have.

    Returns:
        A new `SearchSpace` named ``"rgb<size>"``.

    Raises:
        ValueError: If ``size`` is not an integer from 32 to 96, or ``channels`` or ``num_classes`` is not a
            positive integer.

    Example:
        ```python
        space = rgb_space(64)
        model = build_model(space, space.sample(1)[0])   # input (64, 64, 3), 10 logits
        ```
    """
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 96:
        raise ValueError(f"size: {size!r} must be an integer from 32 to 96")
    common: dict[str, Any] = dict(
        cells=CELLS,
        kernels=(3, 5),
        expansions=(2, 3, 4),
        depths=(1, 2),
        se=SE_OPTIONS,
        activations=("relu",),
        widths=WIDTHS,
    )
    blocks = tuple(BlockSpace(c, s, **common) for c, s in ((24, 1), (32, 2), (48, 2), (64, 1), (96, 2)))
    return SearchSpace(
        blocks=blocks,
        input_shape=(size, size, channels),
        num_classes=num_classes,
        stem_channels=48,
        stem_stride=2,
        head_channels=256,
        name=f"rgb{size}",
    )


def tiny_space() -> SearchSpace:
    """Two small blocks of 32 choices each (1,024 architectures) on 28x28x1 images, for tests and notebooks.

    A stride-2 stem of 8 channels, blocks of 8 and 12 channels (both stride 2), a 24-channel head; each block with
    depthwise or fused cells, kernels 3/5, expansions 2/3, depths 1-2, SE or not, ReLU.

    Returns:
        A new `SearchSpace` named ``"tiny"``.

    Example:
        ```python
        space = tiny_space()
        archs = space.sample(5, seed=0)
        ```
    """
    common: dict[str, Any] = dict(
        cells=("dw_ib", "fused_ib"),
        kernels=(3, 5),
        expansions=(2, 3),
        depths=(1, 2),
        se=SE_OPTIONS,
        activations=("relu",),
    )
    return SearchSpace(
        blocks=(BlockSpace(8, 2, **common), BlockSpace(12, 2, **common)),
        stem_channels=8,
        stem_stride=2,
        head_channels=24,
        name="tiny",
    )
