import keras
import numpy as np
import pytest
from keras import layers

from keras_eff.compression import (
    ChannelPruningConfig,
    NothingToCompressError,
    SensitivityTable,
    SpatialSvdConfig,
    channel_pruning,
    measure_sensitivity,
    select_ratios,
    spatial_svd,
)

RATIOS = (0.75, 0.5, 0.25)
COST = {"a": 100.0, "b": 100.0, "c": 10.0}


def _table(losses):
    """A table where layer n at ratio r lost losses[n][r] (score = 1 - loss); settings are the ratios."""

    def score_of(name, setting):
        return 1.0 - losses[name][setting]

    return measure_sensitivity(
        list(losses), RATIOS, lambda n, r: r if r in losses[n] else None, score_of, 1.0, "accuracy", verbose=False
    )


def _cost(settings):
    return sum(COST[n] * settings.get(n, 1.0) for n in COST)


def test_greedy_compresses_the_insensitive_layer_first():
    losses = {
        "a": {0.75: 0.0, 0.5: 0.01, 0.25: 0.02},
        "b": {0.75: 0.2, 0.5: 0.4, 0.25: 0.6},
        "c": {0.75: 0.0, 0.5: 0.0, 0.25: 0.0},
    }
    table = _table(losses)
    ratios = select_ratios(table, _cost, target=0.75 * 210)
    assert ratios == {"a": 0.5, "c": 0.75}  # least predicted loss (0.01), as close to the target (157.5) as it gets
    # a tighter target must touch b too, and still meets the target
    ratios = select_ratios(table, _cost, target=0.4 * 210)
    assert "b" in ratios and _cost(ratios) <= 0.4 * 210


def test_walk_back_undoes_an_overshoot():
    losses = {
        "a": {0.75: 0.1, 0.5: 0.1, 0.25: 0.1},
        "b": {0.75: 0.05, 0.5: 0.3, 0.25: 0.5},
        "c": {0.75: 0.5, 0.5: 0.5, 0.25: 0.5},
    }
    # the best loss per saved cost is a at 0.25 (saves 75), but a at 0.75 already meets a target of 190
    ratios = select_ratios(_table(losses), _cost, target=190)
    assert _cost(ratios) <= 190 and ratios["a"] == 0.75


def test_noisy_losses_are_made_monotone():
    table = _table({"a": {0.75: 0.3, 0.5: 0.1, 0.25: 0.2}, "b": {0.75: 0, 0.5: 0, 0.25: 0}, "c": {}})
    assert table.loss("a", 0.5) == pytest.approx(0.3) and table.loss("a", 0.25) == pytest.approx(0.3)
    assert table.loss("a", 1.0) == 0.0


def test_unreachable_target_names_the_floor():
    table = _table({"a": {0.75: 0, 0.5: 0, 0.25: 0}, "b": {0.75: 0, 0.5: 0, 0.25: 0}, "c": {}})
    with pytest.raises(NothingToCompressError, match="cannot be reached.*leaves 60"):
        select_ratios(table, _cost, target=50)


def test_table_round_trips_and_plots(tmp_path):
    table = _table({"a": {0.75: 0.0, 0.5: 0.1, 0.25: 0.3}, "b": {0.75: 0, 0.5: 0, 0.25: 0.5}, "c": {}})
    again = SensitivityTable.from_config(table.get_config())
    assert again.as_rows() == table.as_rows() and again.baseline == table.baseline
    table.plot(tmp_path / "sens.svg")
    assert b"<svg" in (tmp_path / "sens.svg").read_bytes()[:400]


def test_config_serializes_and_validates():
    params = ChannelPruningConfig(candidate_ratios=(0.5, 0.25), exclude=["x"], multiple=8, reconstruct=False)
    config = params.get_config()
    assert ChannelPruningConfig.from_config(config) == params and config["exclude"] == ["x"]
    assert SpatialSvdConfig.from_config(SpatialSvdConfig().get_config()) == SpatialSvdConfig()
    with pytest.raises(ValueError, match="candidate_ratios"):
        SpatialSvdConfig(candidate_ratios=(0.5, 1.0))
    with pytest.raises(ValueError, match="cost_metric"):
        SpatialSvdConfig(cost_metric="flops")
    with pytest.raises(ValueError, match="multiple"):
        ChannelPruningConfig(multiple=0)


def _tiny():
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, activation="relu", name="c0")(inputs)
    x = layers.Conv2D(8, 3, name="c1")(x)
    return keras.Model(inputs, layers.Dense(3, name="fc")(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2, float("nan")])
def test_ratio_out_of_range(ratio):
    data = np.zeros((4, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match=r"target_ratio must lie strictly between 0 and 1"):
        spatial_svd(_tiny(), ratio)
    with pytest.raises(ValueError, match=r"target_ratio must lie strictly between 0 and 1"):
        channel_pruning(_tiny(), ratio, data)


def test_bad_arguments_are_named():
    model = _tiny()
    with pytest.raises(TypeError, match="target_ratio must be a number"):
        spatial_svd(model, "half")
    with pytest.raises(ValueError, match="'nope', not layers of model"):
        spatial_svd(model, 0.5, config=SpatialSvdConfig(layers=["nope"]), verbose=False)
    with pytest.raises(ValueError, match="data is empty"):
        spatial_svd(model, 0.5, data=np.zeros((0, 8, 8, 1), "float32"), verbose=False)
    with pytest.raises(ValueError, match="NaN"):
        spatial_svd(model, 0.5, data=np.full((2, 8, 8, 1), np.nan, "float32"), verbose=False)
    with pytest.raises(TypeError, match="SpatialSvdConfig"):
        spatial_svd(model, 0.5, config=ChannelPruningConfig())
    model.get_layer("c1").kernel.assign(np.full((3, 3, 4, 8), np.nan, "float32"))
    with pytest.raises(ValueError, match="layer 'c1' has NaN"):
        spatial_svd(model, 0.5, verbose=False)
    subclassed = type("Sub", (keras.Model,), {"call": lambda self, x: x})()
    with pytest.raises(TypeError, match="subclassed"):
        spatial_svd(subclassed, 0.5)
