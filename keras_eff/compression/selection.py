"""Per-layer compression sensitivity, and the greedy choice of per-layer ratios that meets a cost target.

Sensitivity: every candidate layer is compressed alone at each candidate ratio and the model scored (by the user's
``eval_fn``, or a proxy). The predicted loss of a layer at a ratio is the drop from the uncompressed score, made
monotone (a layer never looks better compressed harder) and summed over layers. The greedy choice starts from the
uncompressed model and repeatedly takes the step (one layer to a lower ratio) that buys the most cost reduction per
unit of predicted loss, until the target is met; it then walks layers back up while the target still holds and the
predicted loss does not grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from tflite_export.files import atomic_savefig

from .inputs import NothingToCompressError


@dataclass
class SensitivityTable:
    """Scores of a model with one layer compressed at a time: what per-layer ratios are chosen from.

    Made by `measure_sensitivity`; a `CompressionResult` holds it as ``.sensitivity``.

    Attributes:
        metric: What was measured (``"eval_fn score"``, ``"relative output error"``, ``"relative weight error"``).
        higher_is_better: Whether a higher score is better (True for an ``eval_fn`` score, False for errors).
        baseline: The uncompressed model's score.
        ratios: The candidate ratios, highest first.
        scores: ``{layer: {ratio: score}}``: the model's score with only that layer compressed to that fraction of
            its cost.
        settings: ``{layer: {ratio: setting}}``: the layer setting each ratio became (an SVD rank, a number of kept
            channels).
    """

    metric: str
    higher_is_better: bool
    baseline: float
    ratios: list
    scores: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def layers(self) -> list:
        """The measured layers' names, in the order measured."""
        return list(self.scores)

    def raw_loss(self, layer, ratio) -> float:
        """Gives the measured loss of compressing one layer to one ratio.

        Args:
            layer: A measured layer's name.
            ratio: One of its measured ratios, or 1.0 or more (uncompressed).

        Returns:
            How much worse the score is than the baseline (may be negative); 0.0 for a ratio of 1.0 or more.
        """
        if ratio >= 1.0:
            return 0.0
        score = self.scores[layer][ratio]
        return self.baseline - score if self.higher_is_better else score - self.baseline

    def loss(self, layer, ratio) -> float:
        """Gives the predicted loss of compressing one layer to one ratio.

        Never below zero, and never below the loss at any higher ratio of that layer: measurement noise must not reward
        harder compression.

        Args:
            layer: A measured layer's name.
            ratio: A ratio (fraction of the layer's cost kept).

        Returns:
            The predicted loss.
        """
        worst = 0.0
        for r in self.scores[layer]:
            if r >= ratio:
                worst = max(worst, self.raw_loss(layer, r))
        return worst

    def as_rows(self) -> list:
        """Lists the scores as table rows.

        Returns:
            ``[{"layer", "ratio", "setting", "score"}, ...]``, for each layer from the highest ratio down.
        """
        return [
            {"layer": name, "ratio": r, "setting": self.settings[name][r], "score": s}
            for name, by_ratio in self.scores.items()
            for r, s in sorted(by_ratio.items(), reverse=True)
        ]

    def get_config(self) -> dict:
        """Serializes the table.

        Returns:
            A JSON-compatible dict, for ``from_config``.
        """
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "ratios": list(self.ratios),
            "rows": self.as_rows(),
        }

    @classmethod
    def from_config(cls, config):
        """Makes a table from a dict written by ``get_config``.

        Args:
            config: The dict.

        Returns:
            A new `SensitivityTable`.
        """
        table = cls(config["metric"], config["higher_is_better"], config["baseline"], list(config["ratios"]))
        for row in config["rows"]:
            table.scores.setdefault(row["layer"], {})[row["ratio"]] = row["score"]
            table.settings.setdefault(row["layer"], {})[row["ratio"]] = row["setting"]
        return table

    def plot(self, path, title: str | None = None):
        """Saves the table as a figure: score against kept cost ratio, one line per layer, the baseline dashed.

        Drawn with matplotlib's Agg canvas; the global pyplot backend is left alone. The file is written atomically.

        Args:
            path: The file to write; its suffix picks the format (``.png``, ``.svg``, ``.pdf``; png without one).
            title: The figure's title (default: "Per-layer compression sensitivity").

        Returns:
            ``path``.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - start-up: matplotlib (~0.4 s)
        from matplotlib.figure import Figure  # noqa: PLC0415 - start-up: matplotlib (~0.4 s) only for plots

        fig = Figure(figsize=(7, 4.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, by_ratio in self.scores.items():
            rs = sorted(by_ratio)
            ax.plot(rs + [1.0], [by_ratio[r] for r in rs] + [self.baseline], marker="o", ms=3, label=name)
        ax.axhline(self.baseline, color="0.5", ls="--", lw=1, label="uncompressed")
        ax.set_xlabel("fraction of the layer's cost kept")
        ax.set_ylabel(self.metric)
        ax.set_title(title or "Per-layer compression sensitivity")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        return atomic_savefig(fig, path)


def measure_sensitivity(
    layers, ratios, setting_of, score_of, baseline, metric, higher_is_better=True, verbose=True
) -> SensitivityTable:
    """Scores every (layer, ratio) pair with only that layer compressed: the first step of every compression method.

    Args:
        layers: Names of the layers to measure.
        ratios: The candidate ratios (fractions of a layer's cost kept).
        setting_of: ``setting_of(layer, ratio)``: the layer setting (a rank, a number of kept channels) that ratio
            gives, or None where it cannot be reached or changes nothing. A setting is measured once per layer, at
            the highest ratio that gives it.
        score_of: ``score_of(layer, setting) -> float``: the model's score with only that layer compressed.
        baseline: The uncompressed model's score.
        metric: The name of what the scores measure.
        higher_is_better: Whether a higher score is better.
        verbose: Show a progress bar.

    Returns:
        A new `SensitivityTable`.
    """
    table = SensitivityTable(metric, higher_is_better, float(baseline), sorted(ratios, reverse=True))
    jobs = []
    for name in layers:
        table.scores[name], table.settings[name] = {}, {}
        seen = set()
        for r in table.ratios:
            setting = setting_of(name, r)
            if setting is not None and setting not in seen:
                seen.add(setting)
                jobs.append((name, r, setting))
    for name, r, setting in tqdm(jobs, desc="compression sensitivity", unit="eval", disable=not verbose, leave=False):
        table.scores[name][r] = float(score_of(name, setting))
        table.settings[name][r] = setting
    return table


def select_ratios(table: SensitivityTable, cost_of, target: float) -> dict:
    """Chooses per-layer ratios that meet a cost target with the least predicted loss.

    Greedy: from the uncompressed model, it repeatedly takes the step (one layer to a lower ratio) that buys the most
    cost reduction per unit of predicted loss (`SensitivityTable.loss`) until the target is met, then walks layers
    back up while the target still holds and the predicted loss does not grow.

    Args:
        table: The `SensitivityTable` of the candidate layers.
        cost_of: ``cost_of(settings) -> float``: the model's cost with ``{layer: setting}`` applied (layers not
            listed uncompressed).
        target: The cost to reach.

    Returns:
        ``{layer: ratio}`` for the layers to compress (those left uncompressed are not listed).

    Raises:
        NothingToCompressError: If the target cannot be reached even with every layer at its lowest measured ratio.
    """
    ratios = dict.fromkeys(table.layers, 1.0)

    def settings(rs):
        return {n: table.settings[n][r] for n, r in rs.items() if r < 1.0}

    cost = cost_of(settings(ratios))
    while cost > target:
        best = None
        for name in table.layers:
            here = table.loss(name, ratios[name])
            for r in table.scores[name]:
                if r >= ratios[name]:
                    continue
                trial = cost_of(settings({**ratios, name: r}))
                saved = cost - trial
                if saved <= 0:
                    continue
                key = (max(table.loss(name, r) - here, 0.0) / saved, -saved)
                if best is None or key < best[0]:
                    best = (key, name, r, trial)
        if best is None:
            floor = cost_of(settings({n: min(table.scores[n], default=1.0) for n in table.layers}))
            raise NothingToCompressError(
                f"the target cost {target:,.0f} cannot be reached: compressing every candidate layer as far as the "
                f"candidate ratios allow leaves {floor:,.0f}. Raise target_ratio, add layers, or allow lower "
                f"ratios (candidate_ratios)"
            )
        _, name, r, cost = best
        ratios[name] = r
    # Walk back up: the greedy steps may have overshot; undo what the target does not need, the most predicted loss
    # first, then (at equal loss) the step that lands closest to the target.
    improved = True
    while improved:
        improved = False
        options = []
        for name in table.layers:
            higher = sorted(r for r in list(table.scores[name]) + [1.0] if r > ratios[name])
            for r in higher:
                trial = cost_of(settings({**ratios, name: r}))
                gain = table.loss(name, ratios[name]) - table.loss(name, r)
                if trial <= target and gain >= 0:
                    options.append((gain, trial, r, name))
        if options:
            _, _, r, name = max(options)
            ratios[name] = r
            improved = True
    return {n: r for n, r in ratios.items() if r < 1.0}


__all__ = ["SensitivityTable", "measure_sensitivity", "select_ratios"]
