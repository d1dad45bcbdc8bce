"""BKD, the block library and its files, architectures built from it, the predictor and the executors."""

import json
import shutil

import numpy as np
import pytest

from keras_eff.donna import (
    AccuracyPredictor,
    BKDConfig,
    BlockLibrary,
    InProcessExecutor,
    tiny_space,
    train_block_job,
    train_block_library,
    train_reference,
)
from keras_eff.donna.reference import block_features, block_prefix
from keras_eff.donna.supernet import get_block_weights

FAST_BKD = BKDConfig(steps=40, batch_size=64, calibration_samples=128, compile=False)


@pytest.fixture(scope="module")
def reference(fmnist):
    (x, y), _ = fmnist
    model, _ = train_reference(tiny_space(), x[:4000], y[:4000], epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def library(reference, fmnist):
    (x, _), _ = fmnist
    return train_block_library(tiny_space(), reference, x[:1500], x[4000:4400], FAST_BKD, verbose=False)


def _job(reference, x, index, steps, **cfg):
    space = tiny_space()
    f = block_features(reference, space, x)
    # a subset of the block's choices (the depthwise cell at kernel 3 and 5): any subset is a valid block
    block = dict(space.blocks[index].get_config(), cells=["dw_ib"], se=[False])
    return {
        "block": block,
        "in_channels": f[index].shape[-1],
        "index": index,
        "x": f[index][:600],
        "y": f[index + 1][:600],
        "x_val": f[index][600:],
        "y_val": f[index + 1][600:],
        "config": BKDConfig(steps=steps, batch_size=32, calibration_samples=64, compile=False, **cfg).get_config(),
        "init": get_block_weights(reference, block_prefix(index)),
    }


def test_bkd_loss_falls(reference, fmnist):
    (x, _), _ = fmnist
    # from scratch, so the fall is not hidden by the reference's head start
    out = train_block_job(_job(reference, x[:800], 1, 50, init_from_reference=False, learning_rate=5e-3))
    h = out["history"]
    assert h[-15:].mean() < 0.7 * h[:10].mean()
    assert np.all(np.isfinite(out["losses"])) and out["losses"].shape == (8,)


def test_library_scores_choices_and_reference_is_best(library):
    for i, losses in enumerate(library.loss_table()):
        ref = tiny_space().block_choices(i).index(tiny_space().blocks[i].reference_choice())
        assert losses.min() >= 0 and losses[ref] <= np.median(losses)
    assert library.meta["final_train_nsr"][0] < library.meta["first_train_nsr"][0] * 1.5


def test_architecture_built_from_library_matches_the_supernet_blocks(library, fmnist):
    from keras import ops

    from keras_eff.donna.bkd import unpack_stats

    (x, _), _ = fmnist
    space = tiny_space()
    arch = space.sample(1, seed=7)[0]
    model = library.build(arch)
    feats = block_features(model, space, x[:64])
    for i, choice in enumerate(arch.choices):
        layer = library.supernet(i)
        stats = {
            k: (ops.convert_to_tensor(m), ops.convert_to_tensor(v))
            for k, (m, v) in unpack_stats(layer, library.blocks[i]["stats"], choice).items()
        }
        y, _ = layer.forward(feats[i], choice, stats)
        np.testing.assert_allclose(y, feats[i + 1], atol=2e-4)


def test_library_round_trips(library, tmp_path, fmnist):
    (x, _), _ = fmnist
    loaded = BlockLibrary.load(library.save(tmp_path / "lib"), space=tiny_space())
    for a, b in zip(loaded.loss_table(), library.loss_table()):
        np.testing.assert_array_equal(a, b)
    arch = tiny_space().sample(1, seed=2)[0]
    np.testing.assert_allclose(
        loaded.build(arch)(x[:8], training=False), library.build(arch)(x[:8], training=False), atol=1e-6
    )


def test_corrupt_or_mismatched_library_files_give_clear_errors(library, tmp_path):
    from keras_eff.donna import BlockSpace, SearchSpace

    good = library.save(tmp_path / "good")

    def copy(name):
        return shutil.copytree(good, tmp_path / name)

    bad = copy("truncated")
    data = (bad / "weights.npz").read_bytes()
    (bad / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="does not match library.json"):
        BlockLibrary.load(bad)

    bad = copy("notjson")
    (bad / "library.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        BlockLibrary.load(bad)

    bad = copy("missing")
    (bad / "weights.npz").unlink()
    with pytest.raises(FileNotFoundError, match="weights.npz is missing"):
        BlockLibrary.load(bad)

    other = SearchSpace(blocks=(BlockSpace(8, 2), BlockSpace(12, 2)), stem_channels=8, head_channels=24)
    with pytest.raises(ValueError, match="was built for the space 'tiny'"):
        BlockLibrary.load(good, space=other)

    # a consistent checksum over garbage: the npz itself is unreadable
    bad = copy("garbage")
    (bad / "weights.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    doc = json.loads((bad / "library.json").read_text())
    import hashlib

    doc["weights_sha256"] = hashlib.sha256(b"PK\x03\x04 not a zip at all").hexdigest()
    (bad / "library.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="corrupt"):
        BlockLibrary.load(bad)

    # weights of another shape under the right names
    bad = copy("shapes")
    with np.load(bad / "weights.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = next(k for k in arrays if k.startswith("b0/var/") and k.endswith("/project"))
    arrays[key] = np.zeros((3, 3), np.float32)
    np.savez(bad / "weights.npz", **arrays)
    doc = json.loads((bad / "library.json").read_text())
    doc["weights_sha256"] = hashlib.sha256((bad / "weights.npz").read_bytes()).hexdigest()
    (bad / "library.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"shape \(3, 3\) does not match"):
        BlockLibrary.load(bad)


def test_predictor_fits_round_trips_and_refuses_bad_files(library, tmp_path):
    space = tiny_space()
    archs = space.sample(12, seed=4)
    losses = np.array([library.block_losses(a) for a in archs])
    acc = 0.9 - 0.05 * losses[:, 0] - 0.02 * losses[:, 1]  # a known linear truth
    for features in ("losses", "losses+choices"):
        p = AccuracyPredictor.from_library(library, features=features, alpha=1e-6).fit(archs, acc)
        if features == "losses":
            np.testing.assert_allclose(p.predict(archs), acc, atol=1e-4)
        loaded = AccuracyPredictor.load(p.save(tmp_path / f"{features}.json"))
        others = space.sample(10, seed=9)
        np.testing.assert_allclose(loaded.predict(others), p.predict(others), rtol=1e-12)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an accuracy predictor"):
        AccuracyPredictor.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not fitted"):
        AccuracyPredictor.from_library(library).predict(archs)


def test_executors_give_the_same_results(reference, fmnist):
    ray = pytest.importorskip("ray")
    from keras_eff.donna import RayExecutor

    (x, _), _ = fmnist
    jobs = [_job(reference, x[:700], i, 4) for i in range(2)]
    local = InProcessExecutor().map(train_block_job, jobs)
    executor = RayExecutor(num_cpus=2)
    try:
        remote = executor.map(train_block_job, jobs)
    finally:
        executor.shutdown()
    assert not ray.is_initialized()
    for a, b in zip(local, remote):
        np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(a["history"], b["history"], rtol=1e-3, atol=1e-5)


def test_compiled_and_eager_bkd_steps_agree(reference, fmnist):
    (x, _), _ = fmnist
    job = _job(reference, x[:700], 0, 6)
    job["block"] = dict(job["block"], kernels=[3], expansions=[2], se=[False])  # two choices: depth 1 and 2
    job["init"] = None
    eager = train_block_job({**job, "config": {**job["config"], "compile": False}})
    graph = train_block_job({**job, "config": {**job["config"], "compile": True}})
    np.testing.assert_allclose(graph["history"], eager["history"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(graph["losses"], eager["losses"], rtol=1e-4, atol=1e-6)


def _synthetic_predictor(features, alpha="cv"):
    """A predictor on the tiny space with a made-up loss table (no training): block i, choice j has loss
    0.1 + 0.02 * j + 0.1 * i."""
    space = tiny_space()
    table = [0.1 + 0.02 * np.arange(len(space.block_choices(i))) + 0.1 * i for i in range(len(space.blocks))]
    return space, table, AccuracyPredictor(space, table, features, alpha)


def test_the_feature_rule_is_one_default_everywhere():
    """docs/donna.md's rule: losses+macs unless a config says otherwise, in the class, the config and the quick one."""
    from keras_eff.donna import DonnaConfig
    from keras_eff.donna.predictor import DEFAULT_FEATURES

    space, table, _ = _synthetic_predictor("losses")
    assert DEFAULT_FEATURES == "losses+macs"
    assert AccuracyPredictor(space, table).features == DonnaConfig().features == DonnaConfig.quick().features
    assert AccuracyPredictor(space, table).features == DEFAULT_FEATURES
    assert DonnaConfig.from_config({"features": "losses"}).features == "losses"


def test_predictor_features_have_the_documented_values():
    from keras_eff.donna.predictor import FEATURES, choice_macs

    space, table, _ = _synthetic_predictor("losses")
    arch = space.sample(1, seed=3)[0]
    idx = space.indices(arch)
    losses = np.array([table[i][j] for i, j in enumerate(idx)])
    for features in FEATURES:
        p = AccuracyPredictor(space, table, features)
        x = p.featurize([arch, str(arch)])
        assert x.shape == (2, len(p.feature_names())) and np.array_equal(x[0], x[1])
    row = dict(
        zip(
            *[(p := AccuracyPredictor(space, table, "log-losses+macs+choices")).feature_names(), p.featurize([arch])[0]]
        )
    )
    np.testing.assert_allclose([row["b0_log_loss"], row["b1_log_loss"]], np.log(losses))
    assert row["b1_depth"] == arch.choices[1].depth and row["b0_fused"] == float(arch.choices[0].cell == "fused_ib")
    prods = AccuracyPredictor(space, table, "losses+loss-products").featurize([arch])[0]
    np.testing.assert_allclose(prods, [losses[0], losses[1], losses[0] ** 2, losses[0] * losses[1], losses[1] ** 2])
    # MACs by hand: block 0 of the tiny space maps 14x14x8 to 7x7x8 (stride 2)
    c = arch.choices[0]
    from keras_eff.donna import BlockChoice

    one = BlockChoice(cell="dw_ib", kernel=3, expansion=2, depth=1)
    assert choice_macs(space, 0, one) == 14 * 14 * 8 * 16 + 7 * 7 * 9 * 16 + 7 * 7 * 16 * 8
    fused = BlockChoice(cell="fused_ib", kernel=5, expansion=3, depth=2)  # layer 2: 7x7x8 -> 24 -> 8, stride 1
    assert choice_macs(space, 0, fused) == (7 * 7 * 25 * 8 * 24 + 7 * 7 * 24 * 8) * 2
    assert row["b0_log10_macs"] == pytest.approx(np.log10(choice_macs(space, 0, c)))
    with pytest.raises(ValueError, match=r"'\+'-join of distinct parts"):
        AccuracyPredictor(space, table, "losses+flops")
    with pytest.raises(ValueError, match="'cv'"):
        AccuracyPredictor(space, table, "losses", alpha="auto")


def test_cv_alpha_is_deterministic_and_round_trips(tmp_path):
    space, table, p = _synthetic_predictor("log-losses+macs")
    archs = space.sample(16, seed=5)
    rng = np.random.default_rng(0)
    x = p.featurize(archs)
    acc = 0.8 - 0.05 * x[:, 0] - 0.03 * x[:, 1] + 0.02 * x[:, 2] + rng.normal(0, 0.002, len(archs))
    p.fit(archs, acc)
    again = AccuracyPredictor(space, table, "log-losses+macs", "cv").fit(archs, acc)
    assert p.alpha_ == again.alpha_ and np.array_equal(p.coef_, again.coef_)
    assert p.alpha_ < 1  # little noise: a small penalty wins the leave-one-out
    noisy = rng.normal(0, 0.05, len(archs)) + 0.7  # pure noise: the largest penalties win
    assert AccuracyPredictor(space, table, "log-losses+macs", "cv").fit(archs, noisy).alpha_ >= 10
    loaded = AccuracyPredictor.load(p.save(tmp_path / "p.json"))
    assert loaded.alpha == "cv" and loaded.alpha_ == p.alpha_ and loaded.features == "log-losses+macs"
    others = space.sample(8, seed=11)
    np.testing.assert_allclose(loaded.predict(others), p.predict(others), rtol=1e-12)
    loo = p.loo_predictions(archs, acc)
    assert loo.shape == (16,) and np.corrcoef(loo, acc)[0, 1] > 0.9  # the truth is linear in these features


def test_balanced_sampling_covers_every_choice():
    from keras_eff.donna.pipeline import sample_archs

    space = tiny_space()
    archs = sample_archs(space, 40, "balanced", seed=2)
    assert len(set(archs)) == 40 and archs == sample_archs(space, 40, "balanced", seed=2)
    for i in range(len(space.blocks)):
        counts = np.bincount([space.indices(a)[i] for a in archs], minlength=32)
        assert counts.min() >= 1 and counts.max() <= 2  # 40 over 32 choices: each once or twice
    uniform = sample_archs(space, 40, "uniform", seed=2)
    assert uniform == space.sample(40, seed=2)
    with pytest.raises(ValueError, match="sampling"):
        sample_archs(space, 4, "stratified")


def test_finetuning_distils_from_the_reference(library, reference, fmnist):
    """Stage B's finetuning learns from the teacher's logits: a teacher that always says class 0, at alpha=1,
    drives the architecture towards class 0; without a teacher the same job learns the labels."""
    from keras_eff.donna import FinetuneConfig, measure_architectures

    (x, y), (xe, ye) = fmnist
    x, y, xe, ye = x[:1024], y[:1024], xe[:400], ye[:400]
    arch = tiny_space().reference()
    cfg = FinetuneConfig(steps=20, batch_size=64, learning_rate=3e-3, temperature=1.0, alpha=1.0)
    plain = measure_architectures(library, [str(arch)], x, y, xe, ye, cfg)[0]["accuracy"]  # strings work too
    wrong = np.zeros((len(x), 10), np.float32)
    wrong[:, 0] = 20.0
    misled = measure_architectures(library, [arch], x, y, xe, ye, cfg, teacher_logits=wrong)[0]["accuracy"]
    assert plain > 0.5 and misled < 0.3 and misled >= 0.9 * np.mean(ye == 0)
    # reference= distils from its logits: the same as passing them
    kw = dict(config=FinetuneConfig(steps=5, batch_size=64), seed=3)
    a = measure_architectures(library, [arch], x, y, xe, ye, reference=reference, **kw)[0]["accuracy"]
    logits = reference.predict(x, verbose=0)
    b = measure_architectures(library, [arch], x, y, xe, ye, teacher_logits=logits, **kw)[0]["accuracy"]
    assert a == pytest.approx(b, abs=0.01)
    with pytest.raises(ValueError, match=r"teacher_logits: shape \(1024, 3\)"):
        measure_architectures(library, [arch], x, y, xe, ye, cfg, teacher_logits=wrong[:, :3])
    with pytest.raises(ValueError, match="FinetuneConfig.alpha"):
        FinetuneConfig(alpha=2.0)
