"""The accuracy predictor: a ridge regression from an architecture's block-level BKD losses to its accuracy.

Features (``features=``) are ``+``-joined parts, each giving numbers per block (or per pair of blocks):

- ``losses``: the held-out BKD loss (noise-to-signal ratio) of the block's chosen choice;
- ``log-losses``: its natural logarithm (errors compound from block to block: a product, linear in logs);
- ``loss-products``: the products of every pair of block losses, squares included (the compounding, to second order);
- ``macs``: log10 of the choice's multiply-accumulates at its position (its capacity);
- ``choices``: the choice's kernel, expansion, depth, SE, swish and fused-cell flags, and a grouped-cell flag in a
  space that has grouped cells.

The features are :data:`DEFAULT_FEATURES` (``losses+macs``) unless a config names others: a fixed, documented rule
(docs/donna.md), never a per-run choice. ``alpha`` is the ridge penalty on standardized features, or ``"cv"``:
chosen among :data:`CV_ALPHAS` by leave-one-out cross-validation on the architectures given to
:meth:`~AccuracyPredictor.fit` (deterministic; the chosen value is ``alpha_``). The predictor keeps the library's
loss table, so its JSON file alone predicts any architecture of the space.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.preprocessing import StandardScaler

from tflite_export.files import atomic_write, read_json

from ..reporting import agg_subplots
from .blocks import layer_plan, se_channels
from .space import Architecture, SearchSpace

FORMAT = "keras_eff.donna.AccuracyPredictor"
PARTS = ("losses", "log-losses", "loss-products", "macs", "choices")
DEFAULT_FEATURES = "losses+macs"
"""The features of every run unless a config says otherwise: two numbers per block (its BKD loss, its log10 MACs).
Fixed, never chosen per run: a per-run choice by leave-one-out can pick a set that fails on held-out architectures
(docs/donna.md, "The feature rule")."""
FEATURES = (
    "losses",
    "losses+choices",
    "log-losses",
    "losses+macs",
    "log-losses+macs",
    "losses+loss-products",
    "log-losses+macs+choices",
)  # the combinations documented and benchmarked; any "+"-join of PARTS works
CV_ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 15))
_CHOICE_FIELDS = ("kernel", "expansion", "depth", "se", "swish", "fused")


def check_features(features: str) -> tuple:
    """The parts of a ``features`` string, refusing unknown or repeated ones."""
    parts = tuple(str(features).split("+"))
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts or len(set(parts)) != len(parts):
        raise ValueError(
            f"features: {features!r} is not a '+'-join of distinct parts from {', '.join(PARTS)} "
            f"(e.g. {', '.join(repr(f) for f in FEATURES[:3])})"
        )
    return parts


def choice_macs(space: SearchSpace, i: int, choice) -> int:
    """Multiply-accumulates of one image through ``choice`` at block ``i`` of ``space`` (convolutions and SE)."""
    h, w, cin = space.block_input_shapes()[i]
    block = space.blocks[i]
    macs = 0
    for cin_l, cexp, cout, s, _ in layer_plan(choice, cin, block.out_channels, block.stride, block.group_width):
        ho, wo = -(-h // s), -(-w // s)
        if choice.cell == "dw_ib":
            macs += h * w * cin_l * cexp + ho * wo * choice.kernel**2 * cexp
        elif choice.cell == "gr_ib":
            macs += h * w * cin_l * cexp + ho * wo * choice.kernel**2 * block.group_width * cexp
        else:
            macs += ho * wo * choice.kernel**2 * cin_l * cexp
        if choice.se:
            macs += 2 * cexp * se_channels(cin_l)
        macs += ho * wo * cexp * cout
        h, w = ho, wo
    return int(macs)


class AccuracyPredictor:
    """DONNA's accuracy predictor: a ridge regression from an architecture's block-level BKD losses to its accuracy.

    Build it with :meth:`from_library`, then :meth:`fit` it on measured architectures. It keeps the library's loss
    table, so its JSON file alone (:meth:`save`, :meth:`load`) predicts any architecture of the space. After
    fitting, ``alpha_`` is the penalty used and ``mean_``, ``scale_``, ``coef_``, ``intercept_`` the model.

    Args:
        space: The `SearchSpace`.
        loss_table: Per block, the held-out loss of each choice (``BlockLibrary.loss_table()``).
        features: A ``"+"``-join of distinct parts: ``losses`` (each block's loss), ``log-losses`` (their
            logarithms), ``loss-products`` (products of every pair of block losses, squares included), ``macs``
            (log10 of each block choice's multiply-accumulates) and ``choices`` (each choice's kernel, expansion,
            depth, SE, swish and fused-cell flags, and a grouped-cell flag where the space has grouped cells).
            Default :data:`DEFAULT_FEATURES`, the fixed rule of docs/donna.md.
        alpha: The ridge penalty on standardized features, a number >= 0, or ``"cv"``: chosen among
            :data:`CV_ALPHAS` by leave-one-out cross-validation in :meth:`fit`.

    Raises:
        ValueError: If ``features`` or ``alpha`` is invalid, or the loss table does not match the space, holds
            non-finite values, or (for ``log-losses``) values <= 0.

    Example:
        ```python
        predictor = AccuracyPredictor.from_library(library, features="losses+macs").fit(archs, accuracies)
        predictor.save("predictor.json")
        candidates = space.sample(1000, seed=1)
        best = candidates[AccuracyPredictor.load("predictor.json").predict(candidates).argmax()]
        ```
    """

    def __init__(self, space: SearchSpace, loss_table, features: str = DEFAULT_FEATURES, alpha="cv"):
        self.parts = check_features(features)
        if alpha != "cv" and not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha >= 0):
            raise ValueError(
                f"alpha: {alpha!r} must be a number >= 0 or 'cv' (leave-one-out over {CV_ALPHAS[0]:g}"
                f"..{CV_ALPHAS[-1]:g})"
            )
        self.space, self.features = space, str(features)
        self.alpha = alpha if alpha == "cv" else float(alpha)
        self.loss_table = [np.asarray(t, np.float64) for t in loss_table]
        for i, t in enumerate(self.loss_table):
            n = len(space.block_choices(i))
            if t.shape != (n,):
                raise ValueError(f"loss_table[{i}] has shape {t.shape}; block {i} has {n} choices")
            if not np.all(np.isfinite(t)):
                raise ValueError(f"loss_table[{i}] holds NaN or infinite losses")
            if "log-losses" in self.parts and not np.all(t > 0):
                raise ValueError(f"loss_table[{i}] holds losses <= 0; the 'log-losses' features need positive ones")
        self._index = [{c: j for j, c in enumerate(space.block_choices(i))} for i in range(len(space.blocks))]
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: float | None = None
        self.alpha_: float | None = None

    @classmethod
    def from_library(cls, library, features: str = DEFAULT_FEATURES, alpha="cv") -> AccuracyPredictor:
        """An unfitted predictor on a block library's space and losses.

        Args:
            library: The `BlockLibrary`.
            features: As in the constructor.
            alpha: As in the constructor.

        Returns:
            A new, unfitted `AccuracyPredictor`.

        Raises:
            ValueError: If ``features`` or ``alpha`` is invalid.
        """
        return cls(library.space, library.loss_table(), features, alpha)

    def feature_names(self) -> list:
        """The names of the feature columns, e.g. ``"b0_loss"``, ``"b1_log10_macs"``.

        Returns:
            A list of strings, in column order.
        """
        n, names = len(self.space.blocks), []
        for part in self.parts:
            if part == "losses":
                names += [f"b{i}_loss" for i in range(n)]
            elif part == "log-losses":
                names += [f"b{i}_log_loss" for i in range(n)]
            elif part == "loss-products":
                names += [f"b{i}_loss*b{j}_loss" for i in range(n) for j in range(i, n)]
            elif part == "macs":
                names += [f"b{i}_log10_macs" for i in range(n)]
            else:
                names += [f"b{i}_{f}" for i in range(n) for f in self._choice_fields()]
        return names

    def _choice_fields(self) -> tuple:
        """The ``choices`` columns per block: a grouped-cell flag only in a space with grouped cells (so that the
        files of spaces without them keep their columns)."""
        grouped = any("gr_ib" in b.cells for b in self.space.blocks)
        return _CHOICE_FIELDS + (("grouped",) if grouped else ())

    def featurize(self, archs) -> np.ndarray:
        """The feature matrix of architectures.

        Args:
            archs: Architectures of the space, or their strings.

        Returns:
            A float64 array ``(len(archs), len(feature_names()))``.

        Raises:
            ValueError: If an architecture is not of the space.
        """
        rows = []
        for a in archs:
            a = Architecture.parse(a) if isinstance(a, str) else a
            if len(a.choices) != len(self.space.blocks):
                raise ValueError(
                    f"architecture {a} has {len(a.choices)} blocks; the space has {len(self.space.blocks)}"
                )
            for i, c in enumerate(a.choices):
                if c not in self._index[i]:
                    raise ValueError(f"block {i}: choice {c.name} is not in the space {self.space.name!r}")
            losses = np.array([self.loss_table[i][self._index[i][c]] for i, c in enumerate(a.choices)])
            row = []
            for part in self.parts:
                if part == "losses":
                    row += list(losses)
                elif part == "log-losses":
                    row += list(np.log(losses))
                elif part == "loss-products":
                    row += [losses[i] * losses[j] for i in range(len(losses)) for j in range(i, len(losses))]
                elif part == "macs":
                    row += [np.log10(max(choice_macs(self.space, i, c), 1)) for i, c in enumerate(a.choices)]
                else:
                    grouped = len(self._choice_fields()) > len(_CHOICE_FIELDS)
                    row += [
                        v
                        for c in a.choices
                        for v in (
                            c.kernel,
                            c.expansion,
                            c.depth,
                            float(c.se),
                            float(c.activation == "swish"),
                            float(c.cell == "fused_ib"),
                            *((float(c.cell == "gr_ib"),) if grouped else ()),
                        )
                    ]
            rows.append(row)
        return np.asarray(rows, np.float64).reshape(len(rows), len(self.feature_names()))

    def fit(self, archs, accuracies) -> AccuracyPredictor:
        """Fits scikit-learn's Ridge on standardized features (``alpha="cv"``: RidgeCV's leave-one-out choice).

        Args:
            archs: Measured architectures of the space (or their strings).
            accuracies: Their measured accuracies.

        Returns:
            This predictor, fitted (changed in place).

        Raises:
            ValueError: If the lengths differ, there are fewer than 2 architectures (3 with ``alpha="cv"``), or an
                accuracy is not finite.
        """
        x = self.featurize(archs)
        y = np.asarray(accuracies, np.float64)
        if len(x) != len(y):
            raise ValueError(f"fit: {len(x)} architectures but {len(y)} accuracies")
        if len(x) < 2:
            raise ValueError("fit: give at least 2 measured architectures")
        if not np.all(np.isfinite(y)):
            raise ValueError("fit: accuracies hold NaN or infinite values")
        if self.alpha == "cv" and len(x) < 3:
            raise ValueError("fit: alpha='cv' needs at least 3 measured architectures; give more or a number")
        scaler = StandardScaler().fit(x)
        xs = scaler.transform(x)
        if self.alpha == "cv":
            self.alpha_ = float(RidgeCV(alphas=CV_ALPHAS).fit(xs, y).alpha_)  # efficient leave-one-out
        else:
            self.alpha_ = self.alpha
        ridge = Ridge(alpha=self.alpha_).fit(xs, y)
        self.mean_, self.scale_ = scaler.mean_.copy(), scaler.scale_.copy()
        self.coef_, self.intercept_ = ridge.coef_.copy(), float(ridge.intercept_)
        return self

    def loo_predictions(self, archs, accuracies) -> np.ndarray:
        """Leave-one-out predictions: each architecture predicted by this predictor's settings fitted on the others
        (alpha re-chosen inside each fold when ``"cv"``). Their Kendall tau against ``accuracies`` compares feature
        sets on the training architectures alone.

        Args:
            archs: Measured architectures of the space.
            accuracies: Their measured accuracies.

        Returns:
            A float64 array: each architecture's prediction by a predictor fitted on the others. This predictor
            is not changed.

        Raises:
            ValueError: As :meth:`fit`, for the folds.
        """
        archs, y = list(archs), np.asarray(accuracies, np.float64)
        out = np.empty(len(archs))
        for k in range(len(archs)):
            rest = [a for j, a in enumerate(archs) if j != k]
            p = AccuracyPredictor(self.space, self.loss_table, self.features, self.alpha)
            out[k] = p.fit(rest, np.delete(y, k)).predict([archs[k]])[0]
        return out

    def predict(self, archs) -> np.ndarray:
        """Predicted accuracies.

        Args:
            archs: Architectures of the space, or their strings.

        Returns:
            A float64 array, one prediction per architecture.

        Raises:
            ValueError: If the predictor is not fitted or an architecture is not of the space.
        """
        mean, scale, coef, intercept = self.mean_, self.scale_, self.coef_, self.intercept_
        if mean is None or scale is None or coef is None or intercept is None:
            raise ValueError("predict: the predictor is not fitted; call fit(archs, accuracies) or load a file")
        x = self.featurize(archs)
        return (x - mean) / scale @ coef + intercept

    def get_config(self) -> dict:
        """The predictor as a plain mapping: the space, the loss table, the options and the fitted model.

        Returns:
            A JSON-serializable dict that :meth:`from_config` reads back.
        """

        def listed(a):
            return None if a is None else a.tolist()

        return {
            "format": FORMAT,
            "version": 1,
            "space": self.space.get_config(),
            "features": self.features,
            "alpha": self.alpha,
            "alpha_": self.alpha_,
            "loss_table": [t.tolist() for t in self.loss_table],
            "feature_names": self.feature_names(),
            "mean": listed(self.mean_),
            "scale": listed(self.scale_),
            "coef": listed(self.coef_),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_config(cls, config: dict) -> AccuracyPredictor:
        """The inverse of :meth:`get_config`.

        Args:
            config: The mapping.

        Returns:
            A new `AccuracyPredictor`, fitted when the config was.

        Raises:
            ValueError: If ``config`` is not a predictor's, lacks a field, or its arrays do not match the features.
        """
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"not an accuracy predictor (format {FORMAT!r} expected)")
        try:
            p = cls(SearchSpace.from_config(config["space"]), config["loss_table"], config["features"], config["alpha"])
            if config["coef"] is not None:
                n = len(p.feature_names())
                arrays = [np.asarray(config[k], np.float64) for k in ("mean", "scale", "coef")]
                if any(a.shape != (n,) for a in arrays):
                    raise ValueError(f"mean/scale/coef must each hold {n} numbers")
                p.mean_, p.scale_, p.coef_ = arrays
                p.intercept_ = float(config["intercept"])
                p.alpha_ = float(config.get("alpha_", p.alpha if p.alpha != "cv" else float("nan")))
        except KeyError as err:
            raise ValueError(f"accuracy predictor config lacks the field {err}") from None
        return p

    def save(self, path) -> Path:
        """Writes the predictor as one JSON file, atomically.

        Args:
            path: The file.

        Returns:
            The path written.
        """
        return atomic_write(path, json.dumps(self.get_config(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> AccuracyPredictor:
        """Reads a predictor that :meth:`save` wrote.

        Args:
            path: The JSON file.

        Returns:
            A new `AccuracyPredictor`.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
            ValueError: If the file is corrupt or not a predictor's (the message names the file).
        """
        config = read_json(path, "accuracy predictor file")
        try:
            return cls.from_config(config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"accuracy predictor file {path}: {err}") from None


def plot_predictions(measured, predicted, path, title: str = "DONNA accuracy predictor", extra: str = "") -> Path:
    """A scatter plot of predicted against measured accuracy, with Kendall's tau in the title, saved as PNG.

    Drawn on its own Agg canvas (pyplot's state is left alone); the file is written atomically.

    Args:
        measured: Measured accuracies.
        predicted: Predicted accuracies, in the same order.
        path: The PNG file to write.
        title: The plot's title (tau is added below it).
        extra: Text appended to the tau line.

    Returns:
        The path written.

    Example:
        ```python
        plot_predictions(accuracies, predictor.loo_predictions(archs, accuracies), "predictor_loo.png",
                         extra=" (leave-one-out)")
        ```
    """
    measured, predicted = np.asarray(measured), np.asarray(predicted)
    tau = kendalltau(measured, predicted).statistic
    fig, ax = agg_subplots((4.5, 4.5))
    ax.scatter(measured, predicted, s=18)
    lo, hi = min(measured.min(), predicted.min()), max(measured.max(), predicted.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("measured accuracy")
    ax.set_ylabel("predicted accuracy")
    ax.set_title(f"{title}\nKendall tau = {tau:.3f}{extra}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    return atomic_write(path, buf.getvalue())
