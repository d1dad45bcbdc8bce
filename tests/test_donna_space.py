"""Search space: validation names the bad choice, files round-trip, architectures are hashable and parseable."""

import json

import pytest

from keras_eff.donna import Architecture, BlockChoice, BlockSpace, SearchSpace, default_space, tiny_space


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("kernels", (3, 4), "kernels: 4 is not allowed"),
        ("expansions", (2, 5), "expansions: 5 is not allowed"),
        ("depths", (0,), "depths: 0 is not allowed"),
        ("activations", ("relu", "gelu"), "activations: 'gelu' is not allowed"),
        ("cells", ("dw_ib", "grouped"), "cells: 'grouped' is not allowed"),
        ("se", (False, 1), "se: 1 is not allowed"),
        ("kernels", (), "kernels: empty"),
    ],
)
def test_invalid_choice_is_refused_with_its_name(field, value, needle):
    with pytest.raises(ValueError) as err:
        SearchSpace(blocks=(BlockSpace(8, 2), BlockSpace(8, 1, **{field: value})))
    assert "blocks[1]." + needle in str(err.value)


def test_invalid_choice_in_a_file_is_refused(tmp_path):
    cfg = tiny_space().get_config()
    cfg["blocks"][0]["kernels"] = [3, 9]
    path = tmp_path / "space.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"blocks\[0\]\.kernels: 9 is not allowed; choose from 3, 5, 7"):
        SearchSpace.load(path)
    cfg = tiny_space().get_config()
    cfg["blocks"][1]["colour"] = "red"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="colour"):
        SearchSpace.load(path)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_space_round_trips_through_its_file(tmp_path, suffix):
    space = default_space()
    loaded = SearchSpace.load(space.save(tmp_path / f"space{suffix}"))
    assert loaded == space
    assert loaded.fingerprint() == space.fingerprint()
    assert [b.choices() for b in loaded.blocks] == [b.choices() for b in space.blocks]


def test_subset_spaces_and_reference():
    space = SearchSpace(blocks=(BlockSpace(8, 2, cells=("fused_ib",), kernels=(5,), expansions=(3, 6)),))
    assert space.size() == 2
    ref = space.reference().choices[0]
    assert (ref.cell, ref.kernel, ref.expansion) == ("fused_ib", 5, 6)
    assert default_space().reference().choices[0] == BlockChoice("dw_ib", 5, 4, 3, True, "swish")
    with pytest.raises(ValueError, match="reference"):
        BlockSpace(8, 1, reference=BlockChoice(kernel=5)).validate()


def test_architectures_are_hashable_parseable_and_checked():
    space = tiny_space()
    archs = space.sample(20, seed=3)
    assert len(set(archs)) == 20 and archs == space.sample(20, seed=3)
    for a in archs:
        assert Architecture.parse(str(a)) == a
        idx = space.indices(a)
        assert [space.block_choices(i)[j] for i, j in enumerate(idx)] == list(a.choices)
    alien = Architecture((BlockChoice(kernel=7), BlockChoice()))
    with pytest.raises(ValueError, match="block 0: choice dw_ib-k7-e4-d1-nose-relu is not in the space"):
        space.check(alien)
    with pytest.raises(ValueError, match="not a block choice name"):
        BlockChoice.from_name("dw_ib-k3")
    assert space.block_input_shapes() == [(14, 14, 8), (7, 7, 8), (4, 4, 12)]


def test_missing_files_are_named_by_every_reader(tmp_path):
    from keras_eff.donna import AccuracyPredictor, SearchResult

    missing = tmp_path / "nothing.json"
    for load, what in [
        (SearchSpace.load, "search space file"),
        (SearchResult.load, "search result"),
        (AccuracyPredictor.load, "accuracy predictor file"),
    ]:
        with pytest.raises(FileNotFoundError, match=f"{what} .*nothing.json does not exist"):
            load(missing)


def test_finetune_job_refuses_a_job_without_weights():
    from keras_eff.donna.finetune import FinetuneConfig, finetune_job

    job = {
        "space": tiny_space().get_config(),
        "arch": str(tiny_space().reference()),
        "weights": None,
        "config": FinetuneConfig().get_config(),
        "seed": 0,
    }
    with pytest.raises(ValueError, match="initial weights"):
        finetune_job(job)
