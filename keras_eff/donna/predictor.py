"""The accuracy predictor: a ridge regression from an architecture's block-level BKD losses to its accuracy.

Features (``features=``): ``"losses"`` is one number per block, the held-out BKD loss of the block's chosen choice;
``"losses+choices"`` adds per block the choice's kernel, expansion, depth, SE, swish and fused-cell flags. The
predictor keeps the library's loss table, so its JSON file alone predicts any architecture of the space.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .space import Architecture, SearchSpace

FORMAT = "keras_eff.donna.AccuracyPredictor"
FEATURES = ("losses", "losses+choices")


class AccuracyPredictor:
    """Predicts accuracy from block losses. Build it with :meth:`from_library`, then :meth:`fit`."""

    def __init__(self, space: SearchSpace, loss_table, features: str = "losses", alpha: float = 1e-3):
        if features not in FEATURES:
            raise ValueError(f"features: {features!r} is unknown; choose from {', '.join(FEATURES)}")
        if not alpha >= 0:
            raise ValueError(f"alpha: {alpha} must be >= 0")
        self.space, self.features, self.alpha = space, features, float(alpha)
        self.loss_table = [np.asarray(t, np.float64) for t in loss_table]
        for i, t in enumerate(self.loss_table):
            n = len(space.block_choices(i))
            if t.shape != (n,):
                raise ValueError(f"loss_table[{i}] has shape {t.shape}; block {i} has {n} choices")
            if not np.all(np.isfinite(t)):
                raise ValueError(f"loss_table[{i}] holds NaN or infinite losses")
        self._index = [{c: j for j, c in enumerate(space.block_choices(i))} for i in range(len(space.blocks))]
        self.mean_ = self.scale_ = self.coef_ = None
        self.intercept_ = None

    @classmethod
    def from_library(cls, library, features: str = "losses", alpha: float = 1e-3) -> "AccuracyPredictor":
        return cls(library.space, library.loss_table(), features, alpha)

    def feature_names(self) -> list:
        names = []
        for i in range(len(self.space.blocks)):
            names.append(f"b{i}_loss")
            if self.features == "losses+choices":
                names += [f"b{i}_{n}" for n in ("kernel", "expansion", "depth", "se", "swish", "fused")]
        return names

    def featurize(self, archs) -> np.ndarray:
        """The feature matrix of ``archs`` (architectures or their strings)."""
        rows = []
        for a in archs:
            a = Architecture.parse(a) if isinstance(a, str) else a
            if len(a.choices) != len(self.space.blocks):
                raise ValueError(f"architecture {a} has {len(a.choices)} blocks; the space has "
                                 f"{len(self.space.blocks)}")
            row = []
            for i, c in enumerate(a.choices):
                if c not in self._index[i]:
                    raise ValueError(f"block {i}: choice {c.name} is not in the space {self.space.name!r}")
                row.append(self.loss_table[i][self._index[i][c]])
                if self.features == "losses+choices":
                    row += [c.kernel, c.expansion, c.depth, float(c.se), float(c.activation == "swish"),
                            float(c.cell == "fused_ib")]
            rows.append(row)
        return np.asarray(rows, np.float64).reshape(len(rows), len(self.feature_names()))

    def fit(self, archs, accuracies) -> "AccuracyPredictor":
        """Fits scikit-learn's Ridge on standardized features."""
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        x = self.featurize(archs)
        y = np.asarray(accuracies, np.float64)
        if len(x) != len(y):
            raise ValueError(f"fit: {len(x)} architectures but {len(y)} accuracies")
        if len(x) < 2:
            raise ValueError("fit: give at least 2 measured architectures")
        if not np.all(np.isfinite(y)):
            raise ValueError("fit: accuracies hold NaN or infinite values")
        scaler = StandardScaler().fit(x)
        ridge = Ridge(alpha=self.alpha).fit(scaler.transform(x), y)
        self.mean_, self.scale_ = scaler.mean_.copy(), scaler.scale_.copy()
        self.coef_, self.intercept_ = ridge.coef_.copy(), float(ridge.intercept_)
        return self

    def predict(self, archs) -> np.ndarray:
        if self.coef_ is None:
            raise ValueError("predict: the predictor is not fitted; call fit(archs, accuracies) or load a file")
        x = self.featurize(archs)
        return (x - self.mean_) / self.scale_ @ self.coef_ + self.intercept_

    def get_config(self) -> dict:
        fitted = self.coef_ is not None
        return {"format": FORMAT, "version": 1, "space": self.space.get_config(), "features": self.features,
                "alpha": self.alpha, "loss_table": [t.tolist() for t in self.loss_table],
                "feature_names": self.feature_names(),
                "mean": self.mean_.tolist() if fitted else None, "scale": self.scale_.tolist() if fitted else None,
                "coef": self.coef_.tolist() if fitted else None, "intercept": self.intercept_}

    @classmethod
    def from_config(cls, config: dict) -> "AccuracyPredictor":
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"not an accuracy predictor (format {FORMAT!r} expected)")
        try:
            p = cls(SearchSpace.from_config(config["space"]), config["loss_table"], config["features"],
                    config["alpha"])
            if config["coef"] is not None:
                n = len(p.feature_names())
                arrays = [np.asarray(config[k], np.float64) for k in ("mean", "scale", "coef")]
                if any(a.shape != (n,) for a in arrays):
                    raise ValueError(f"mean/scale/coef must each hold {n} numbers")
                p.mean_, p.scale_, p.coef_ = arrays
                p.intercept_ = float(config["intercept"])
        except KeyError as err:
            raise ValueError(f"accuracy predictor config lacks the field {err}") from None
        return p

    def save(self, path) -> Path:
        from tflite_export import atomic_write

        return atomic_write(path, json.dumps(self.get_config(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> "AccuracyPredictor":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"accuracy predictor file {path} does not exist")
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"accuracy predictor file {path} is corrupt (not JSON: {err})") from None
        try:
            return cls.from_config(config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"accuracy predictor file {path}: {err}") from None


def plot_predictions(measured, predicted, path, title: str = "DONNA accuracy predictor", extra: str = "") -> Path:
    """Scatter of predicted vs measured accuracy with Kendall's tau, saved to ``path`` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import kendalltau

    measured, predicted = np.asarray(measured), np.asarray(predicted)
    tau = kendalltau(measured, predicted).statistic
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(measured, predicted, s=18)
    lo, hi = min(measured.min(), predicted.min()), max(measured.max(), predicted.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("measured accuracy")
    ax.set_ylabel("predicted accuracy")
    ax.set_title(f"{title}\nKendall tau = {tau:.3f}{extra}", fontsize=9)
    fig.tight_layout()
    import io

    from tflite_export import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())
