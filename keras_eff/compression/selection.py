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
    """Scores of the model with one layer compressed at a time.

    ``scores[layer][ratio]`` is the model's score with only ``layer`` compressed to ``ratio`` of its cost;
    ``settings[layer][ratio]`` the layer setting that ratio became (an SVD rank, a number of kept channels).
    ``baseline`` is the uncompressed model's score; ``metric`` names what was measured.
    """

    metric: str
    higher_is_better: bool
    baseline: float
    ratios: list
    scores: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def layers(self) -> list:
        return list(self.scores)

    def raw_loss(self, layer, ratio) -> float:
        if ratio >= 1.0:
            return 0.0
        score = self.scores[layer][ratio]
        return self.baseline - score if self.higher_is_better else score - self.baseline

    def loss(self, layer, ratio) -> float:
        """Predicted loss of compressing ``layer`` to ``ratio``: never below zero, never below the loss at any
        higher ratio of that layer (measurement noise must not reward harder compression)."""
        worst = 0.0
        for r in self.scores[layer]:
            if r >= ratio:
                worst = max(worst, self.raw_loss(layer, r))
        return worst

    def as_rows(self) -> list:
        return [{"layer": name, "ratio": r, "setting": self.settings[name][r], "score": s}
                for name, by_ratio in self.scores.items() for r, s in sorted(by_ratio.items(), reverse=True)]

    def get_config(self) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "baseline": self.baseline,
                "ratios": list(self.ratios), "rows": self.as_rows()}

    @classmethod
    def from_config(cls, config):
        table = cls(config["metric"], config["higher_is_better"], config["baseline"], list(config["ratios"]))
        for row in config["rows"]:
            table.scores.setdefault(row["layer"], {})[row["ratio"]] = row["score"]
            table.settings.setdefault(row["layer"], {})[row["ratio"]] = row["setting"]
        return table

    def plot(self, path, title: str | None = None):
        """Saves the table as a figure (score against kept cost ratio, one line a layer) to ``path`` (.png, .svg,
        .pdf). Drawn with matplotlib's Agg canvas; the global pyplot backend is left alone."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

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


def measure_sensitivity(layers, ratios, setting_of, score_of, baseline, metric, higher_is_better=True,
                        verbose=True) -> SensitivityTable:
    """Scores every (layer, ratio) pair: ``setting_of(layer, ratio)`` gives the layer setting (None where the ratio
    cannot be reached or changes nothing) and ``score_of(layer, setting)`` the model's score with only that layer
    compressed."""
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
    for name, r, setting in tqdm(jobs, desc="compression sensitivity", unit="eval", disable=not verbose,
                                 leave=False):
        table.scores[name][r] = float(score_of(name, setting))
        table.settings[name][r] = setting
    return table


def select_ratios(table: SensitivityTable, cost_of, target: float) -> dict:
    """Per-layer ratios (``{layer: ratio}``, only compressed layers listed) whose ``cost_of(settings)`` is at most
    ``target``, chosen greedily for the least predicted loss. Raises NothingToCompressError where even the harshest
    candidate of every layer stays above the target."""
    ratios = {name: 1.0 for name in table.layers}

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
                f"ratios (min_ratio)")
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
