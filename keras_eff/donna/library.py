"""The block library: every choice of every block, distilled, with its held-out BKD loss.

On disk it is a folder holding ``library.json`` (the space, the losses, a checksum of the weights, run metadata) and
``weights.npz`` (numpy arrays only, read with ``allow_pickle=False``). Any architecture of the space can be built
from it as a plain Keras model: the reference model's stem and head, and each block's weights extracted from its
supernet block with the choice's own batch-norm statistics.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tflite_export.files import atomic_write, read_json

from .bkd import BKDConfig, train_block_job, unpack_stats
from .executors import InProcessExecutor
from .reference import block_features, block_prefix, build_model, check_data, stem_head_weights
from .space import Architecture, SearchSpace
from .supernet import SupernetBlock, get_block_weights, load_block_weights

FORMAT = "keras_eff.donna.BlockLibrary"
VERSION = 1
JSON_NAME = "library.json"
NPZ_NAME = "weights.npz"


@dataclass
class BlockLibrary:
    """The block library: every choice of every block, distilled, with its held-out BKD loss.

    Made by :func:`train_block_library`; saved as a folder of ``library.json`` and ``weights.npz`` (numpy arrays only,
    no pickle; a checksum ties the two). Any architecture of the space can be built from it as a plain Keras model
    (:meth:`build`): the reference's stem and head, and each block's weights extracted from its supernet block with
    the choice's own batch-norm statistics.

    Attributes:
        space: The `SearchSpace` the library was built for.
        stem_head: The reference's stem and head weights, ``{layer name: [arrays]}`` (for a space read from a Keras
            reference, ``{"stem": [...], "head": [...]}``).
        blocks: Per block position, a dict: ``variables`` (the supernet block's weights, ``{name: array}``),
            ``stats`` (every choice's batch-norm statistics, packed) and ``losses`` (the held-out BKD loss of each
            choice, in ``space.block_choices(i)`` order).
        meta: Run metadata (the BKD config, times, training losses), saved with the library.

    Raises:
        ValueError: If ``blocks`` does not have one entry per block of the space, or a block's losses do not have
            one value per choice.

    Example:
        ```python
        library = train_block_library(space, reference, x_bkd, x_val, BKDConfig(steps=800))
        library.save("artifacts/donna/library")
        library = BlockLibrary.load("artifacts/donna/library", space=space)
        model = library.build(space.sample(1)[0])   # a plain Keras model, initialized from the library
        ```
    """

    space: SearchSpace
    stem_head: dict
    blocks: list
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.blocks) != len(self.space.blocks):
            raise ValueError(
                f"library has {len(self.blocks)} blocks, the space {self.space.name!r} has {len(self.space.blocks)}"
            )
        for i, b in enumerate(self.blocks):
            n = len(self.space.block_choices(i))
            if len(b["losses"]) != n:
                raise ValueError(f"library block {i}: {len(b['losses'])} losses for {n} choices")
        self._supernets = {}

    # ---- losses ------------------------------------------------------------------------------------------------
    def loss_table(self) -> list:
        """Per block, the held-out loss of each of its choices.

        Returns:
            A list of float64 arrays, one per block, in ``space.block_choices(i)`` order.
        """
        return [np.asarray(b["losses"], np.float64) for b in self.blocks]

    def block_losses(self, arch: Architecture) -> np.ndarray:
        """The held-out BKD loss of each block of ``arch``.

        Args:
            arch: An architecture of the space.

        Returns:
            A float64 array with one loss per block.

        Raises:
            ValueError: If ``arch`` does not belong to the space.
        """
        idx = self.space.indices(arch)
        return np.array([self.blocks[i]["losses"][c] for i, c in enumerate(idx)], np.float64)

    # ---- weights -----------------------------------------------------------------------------------------------
    def supernet(self, i: int):
        """The supernet layer of block ``i`` with the library's weights (built once, then cached).

        Args:
            i: The block position.

        Returns:
            A `SupernetBlock`.

        Raises:
            ValueError: If the library's weights do not match the block (names or shapes).
        """
        if i not in self._supernets:
            in_channels = self.space.block_input_shapes()[i][2]
            layer = SupernetBlock(in_channels, self.space.blocks[i], name=f"supernet_b{i}")
            layer.set_variables(self.blocks[i]["variables"])
            self._supernets[i] = layer
        return self._supernets[i]

    def block_weights(self, i: int, choice) -> dict:
        """The plain-block weights of ``choice`` at block ``i``.

        Args:
            i: The block position.
            choice: A `BlockChoice` of that block, its name or its index.

        Returns:
            ``{layer suffix: [arrays]}``, as :meth:`SupernetBlock.extract_weights` returns them.

        Raises:
            ValueError: If ``choice`` is not one of the block's choices.
        """
        layer = self.supernet(i)
        return layer.extract_weights(choice, unpack_stats(layer, self.blocks[i]["stats"], choice))

    def build(self, arch: Architecture, name: str | None = None):
        """``arch`` as a plain Keras model initialized from the library (stem and head from the reference).

        Args:
            arch: An architecture of the space.
            name: The model's name; default ``"<space name>_arch"``.

        Returns:
            A new functional `keras.Model` that outputs logits (not compiled).

        Raises:
            ValueError: If ``arch`` does not belong to the space.
        """
        model = build_model(self.space, arch, name=name)
        for layer_name, arrays in self.stem_head.items():
            model.get_layer(layer_name).set_weights(arrays)
        for i, choice in enumerate(arch.choices):
            load_block_weights(model, block_prefix(i), self.block_weights(i, choice))
        return model

    # ---- files -------------------------------------------------------------------------------------------------
    def _arrays(self) -> dict:
        out = {}
        for name, arrays in self.stem_head.items():
            for j, a in enumerate(arrays):
                out[f"stem_head/{name}/{j}"] = np.asarray(a)
        for i, b in enumerate(self.blocks):
            out[f"b{i}/losses"] = np.asarray(b["losses"], np.float64)
            for key, a in b["variables"].items():
                out[f"b{i}/var/{key}"] = np.asarray(a)
            for key, a in b["stats"].items():
                out[f"b{i}/stats/{key}"] = np.asarray(a)
        return out

    def save(self, path) -> Path:
        """Writes the folder ``path`` (``library.json`` + ``weights.npz``), each file atomically.

        Args:
            path: The folder (created if needed).

        Returns:
            ``path`` as a `pathlib.Path`.
        """
        path = Path(path)
        buf = io.BytesIO()
        np.savez(buf, **self._arrays())
        data = buf.getvalue()
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "space": self.space.get_config(),
            "fingerprint": self.space.fingerprint(),
            "weights_sha256": hashlib.sha256(data).hexdigest(),
            "stem_head": {name: len(arrays) for name, arrays in self.stem_head.items()},
            "blocks": [
                {
                    "choices": [c.name for c in self.space.block_choices(i)],
                    "losses": [float(v) for v in b["losses"]],
                    "variables": sorted(b["variables"]),
                    "stats": sorted(b["stats"]),
                }
                for i, b in enumerate(self.blocks)
            ],
            "meta": self.meta,
        }
        atomic_write(path / NPZ_NAME, data)
        atomic_write(path / JSON_NAME, json.dumps(doc, indent=1, default=_plain) + "\n")
        return path

    @classmethod
    def load(cls, path, space: SearchSpace | None = None) -> BlockLibrary:
        """Reads a library folder that :meth:`save` wrote (no pickle).

        Args:
            path: The folder.
            space: The space the library must have been built for; None accepts the library's own space.

        Returns:
            A new `BlockLibrary`.

        Raises:
            FileNotFoundError: If ``library.json`` or ``weights.npz`` is missing.
            ValueError: If a file is corrupt or of another format version, the weights do not match the JSON
                (checksum, names, shapes), or (with ``space``) the library was built for another space.
        """
        path = Path(path)
        jpath, npath = path / JSON_NAME, path / NPZ_NAME
        for p in (jpath, npath):
            if not p.is_file():
                raise FileNotFoundError(
                    f"block library {path}: {p.name} is missing (a library folder holds "
                    f"{JSON_NAME} and {NPZ_NAME}, written by BlockLibrary.save)"
                )
        doc = read_json(jpath, "block library")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{jpath} is not a block library file (format {FORMAT!r} expected)")
        if doc.get("version") != VERSION:
            raise ValueError(
                f"{jpath} has library format version {doc.get('version')}; this keras-eff reads version {VERSION}"
            )
        try:
            lib_space = SearchSpace.from_config(doc["space"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{jpath}: its search space is invalid ({err})") from None
        if space is not None and space.fingerprint() != lib_space.fingerprint():
            raise ValueError(
                f"block library {path} was built for the space {lib_space.name!r} (fingerprint "
                f"{lib_space.fingerprint()}), not for the given space {space.name!r} (fingerprint "
                f"{space.fingerprint()}); rebuild it with train_block_library"
            )
        data = npath.read_bytes()
        if hashlib.sha256(data).hexdigest() != doc.get("weights_sha256"):
            raise ValueError(
                f"block library {path}: {NPZ_NAME} does not match {JSON_NAME} (checksum differs): the "
                f"file is corrupt or comes from another run; rebuild or restore both files together"
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"block library {npath} is corrupt ({err})") from None

        def get(key):
            if key not in arrays:
                raise ValueError(f"block library {npath} lacks the array {key!r}; the file does not match its JSON")
            return arrays[key]

        try:
            stem_head = {name: [get(f"stem_head/{name}/{j}") for j in range(n)] for name, n in doc["stem_head"].items()}
            blocks = []
            for i, b in enumerate(doc["blocks"]):
                expected = [c.name for c in lib_space.block_choices(i)]
                if b["choices"] != expected:
                    raise ValueError(f"block library {jpath}: block {i} lists choices that differ from its space")
                blocks.append(
                    {
                        "losses": get(f"b{i}/losses"),
                        "variables": {k: get(f"b{i}/var/{k}") for k in b["variables"]},
                        "stats": {k: get(f"b{i}/stats/{k}") for k in b["stats"]},
                    }
                )
        except (KeyError, TypeError) as err:
            raise ValueError(f"block library {jpath} is missing the field {err}") from None
        lib = cls(lib_space, stem_head, blocks, doc.get("meta", {}))
        for i in range(len(blocks)):
            lib.supernet(i)  # checks every weight's name and shape against the space now, not at first use
        return lib


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def train_block_library(
    space: SearchSpace, reference, x_train, x_val, config=None, executor=None, verbose: bool = True
) -> BlockLibrary:
    """DONNA step B1: distils every block of the space from the trained reference into a block library.

    The reference's tensors at the block boundaries on ``x_train`` teach each supernet block (blockwise knowledge
    distillation, :func:`nsr_loss`), those on ``x_val`` score every choice. Block positions are independent jobs
    (:func:`train_block_job`) on ``executor``. The reference is not changed.

    Args:
        space: The `SearchSpace`.
        reference: The trained reference Keras model of the space (:func:`build_reference` /
            :func:`train_reference`, or, for a space read from a Keras model, that model's logits copy).
        x_train: Images ``(n, *space.input_shape)`` that teach the blocks.
        x_val: Held-out images that score the choices (never trained on).
        config: BKD options; None: ``BKDConfig()``.
        executor: Where the jobs run (an `Executor`); None: in this process.
        verbose: Whether to print the time taken.

    Returns:
        A new `BlockLibrary`, not yet saved.

    Raises:
        ValueError: If the images do not have the space's input shape or are empty, or ``reference`` is not built
            from the space (a boundary layer is missing).

    Example:
        ```python
        space = tiny_space()
        reference, _ = train_reference(space, x_train, y_train, epochs=3)
        library = train_block_library(space, reference, x_train[:6000], x_val, BKDConfig(steps=800))
        library.loss_table()   # per block, each choice's held-out loss
        ```
    """
    config = config or BKDConfig()
    executor = executor or InProcessExecutor()
    check_data(x_train, None, space, "x_train")
    check_data(x_val, None, space, "x_val")
    t0 = time.perf_counter()
    feats = block_features(reference, space, x_train)
    feats_val = block_features(reference, space, x_val)
    shapes = space.block_input_shapes()
    jobs = []
    for i, block in enumerate(space.blocks):
        jobs.append(
            {
                "block": block.get_config(),
                "in_channels": shapes[i][2],
                "index": i,
                "x": feats[i],
                "y": feats[i + 1],
                "x_val": feats_val[i],
                "y_val": feats_val[i + 1],
                "config": config.get_config(),
                "init": None if space.backbone is not None else get_block_weights(reference, block_prefix(i)),
            }
        )
    del feats, feats_val
    results = executor.map(train_block_job, jobs, desc="BKD blocks")
    blocks = [{"variables": r["variables"], "stats": r["stats"], "losses": r["losses"]} for r in results]
    seconds = time.perf_counter() - t0
    meta = {
        "bkd": config.get_config(),
        "seconds": seconds,
        "block_seconds": [r["seconds"] for r in results],
        "reference_losses": [r["reference_loss"] for r in results],
        "train_samples": len(x_train),
        "val_samples": len(x_val),
        "final_train_nsr": [float(np.mean(r["history"][-50:])) for r in results],
        "first_train_nsr": [float(np.mean(r["history"][:50])) for r in results],
    }
    if verbose:
        print(
            f"block library: {len(blocks)} blocks distilled in {seconds:.0f} s "
            f"(per block: {', '.join(f'{s:.0f} s' for s in meta['block_seconds'])})"
        )
    return BlockLibrary(space, stem_head_weights(reference, space), blocks, meta)
