"""Files with several inputs and outputs: each input gets its own data and each output comes back where Keras puts
it, matched by name (the converter lists a file's inputs and outputs in an order of its own)."""

import keras
import numpy as np
import pytest
from keras import layers

import tflite_export as te

SCALES = {"zeta": 100.0, "alpha": 1.0, "mid": 0.01}  # Keras order; neither sorted nor the file's order


@pytest.fixture(scope="module")
def three_inputs():
    """Three same-shape inputs of very different ranges, and two same-shape outputs that differ everywhere."""
    keras.utils.set_random_seed(0)
    ins = [keras.Input((4,), name=n) for n in SCALES]
    h = layers.Concatenate()([layers.Dense(4)(x) for x in ins])
    logits = layers.Dense(5, name="logits")(h)
    flipped = layers.Dense(5, name="flipped")(layers.Activation("tanh")(h))
    model = keras.Model(ins, [logits, flipped])
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, (300, 4)).astype(np.float32) * s for s in SCALES.values()]
    return model, xs


def test_post_training_calibration_gives_each_input_its_own_data(three_inputs):
    """The converter feeds a list of representative arrays in its subgraph's order: fed by name instead, each input's
    scale comes from its own data (before, ``alpha`` got ``mid``'s range: a scale 100× too small)."""
    model, xs = three_inputs
    tfl = te.TFLiteModel(te.to_tflite(model, representative_data=xs))
    scales = {n: d["quantization"][0] for n, d in zip(tfl.input_names, tfl.inputs)}
    for name, x in zip(SCALES, xs):
        assert scales[name] == pytest.approx(np.abs(x).max() / 127.5, rel=0.05), name


def test_inputs_by_name_and_outputs_in_keras_order(three_inputs, rng):
    model, xs = three_inputs
    tfl = te.TFLiteModel(te.to_tflite(model, quantize=False))
    assert sorted(tfl.input_names) == sorted(SCALES) and tfl.output_names == ["output_0", "output_1"]
    want = model.predict(xs, verbose=0)
    got = tfl.predict(dict(zip(SCALES, xs)))
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    positional = tfl.predict(*[dict(zip(SCALES, xs))[n] for n in tfl.input_names])
    np.testing.assert_array_equal(positional[1], got[1])
    with pytest.raises(ValueError, match=r"missing \['mid'\]; unknown \['middle'\]"):
        tfl.predict({"zeta": xs[0], "alpha": xs[1], "middle": xs[2]})
    with pytest.raises(ValueError, match="takes 3 inputs"):
        tfl.predict(xs[0], xs[1])


def test_many_outputs_come_back_in_keras_order():
    """Twelve outputs of twelve widths: the subgraph lists them in no useful order, ``output_10`` sorts after
    ``output_9``."""
    x = keras.Input((3,), name="x")
    model = keras.Model(x, [layers.Dense(i + 1)(x) for i in range(12)])
    tfl = te.TFLiteModel(te.to_tflite(model, quantize=False))
    assert [o["shape"][-1] for o in tfl.outputs] == list(range(1, 13))
    assert tfl.output_names == [f"output_{i}" for i in range(12)]
    got = tfl.predict(np.ones((2, 3), np.float32))
    for w, g in zip(model.predict(np.ones((2, 3), np.float32), verbose=0), got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_compare_matches_inputs_and_outputs_by_name(three_inputs):
    """Each output compared with its own file output (the two differ by far more than one step), whether the inputs
    come as a list in Keras order or as a dict."""
    model, xs = three_inputs
    xs = [x / s for x, s in zip(xs, SCALES.values())]  # one range for all: the int8 error stays small
    blob = te.to_tflite(model, representative_data=xs)
    for output in (0, 1):
        by_list = te.compare(model, blob, xs, output=output)
        by_dict = te.compare(model, blob, dict(zip(SCALES, xs)), output=output)
        assert by_list.within_1_lsb >= 0.95 and by_list.argmax_agreement >= 0.95, (output, str(by_list))
        assert by_dict.as_dict() == by_list.as_dict()
    swapped = te.TFLiteModel(blob).predict(dict(zip(SCALES, xs)), dequantize_outputs=False)[1]
    assert te.compare(model, blob, xs, output=0, tflite_outputs=swapped).within_1_lsb < 0.5  # the test can fail
    with pytest.raises(ValueError, match="position among the model's 2 outputs"):
        te.compare(model, blob, xs, output=2)


def test_micro_answers_in_the_same_order(three_inputs):
    model, xs = three_inputs
    blob = te.to_tflite(model, representative_data=xs)
    tfl = te.TFLiteModel(blob, kernels="reference")
    feed = {n: x[:8] for n, x in zip(SCALES, xs)}
    micro = te.run_micro(blob, feed)
    lite = tfl.predict(feed, dequantize_outputs=False)
    for m, r in zip(micro, lite):
        assert np.abs(m.astype(int) - r.astype(int)).max() <= 1
    check = te.check_micro(blob, feed, kernels="reference")
    assert check.max_lsb_diff <= 1
