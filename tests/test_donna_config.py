"""Every DONNA config field is checked by its name before any work starts or any file is written."""

import json

import pytest

from keras_eff import cli
from keras_eff.donna import PipelineConfig, builtin_config


def with_(path, value):
    cfg = builtin_config("tiny")
    *head, last = path
    d = cfg
    for k in head:
        d = d[k] if not isinstance(d, list) else d[int(k)]
    d[last] = value
    return cfg


@pytest.mark.parametrize(
    "path,value,needle",
    [
        (("data", "n_train"), "lots", "data.n_train: 'lots' must be an integer"),
        (("seed",), "zero", "seed: 'zero' must be an integer"),
        (("finetune", "top_k"), 2.9, "finetune.top_k: 2.9 must be a whole number"),
        (("finetune", "samples"), 10.5, "finetune.samples: 10.5 must be a whole number"),
        (("search", "pop_size"), 4.5, "search.pop_size: 4.5 must be a whole number"),
        (("search", "max_time_s"), "long", "search.max_time_s: 'long' must be a number or null"),
        (("accuracy_model", "n_archs"), True, "accuracy_model.n_archs: True must be an integer"),
        (("accuracy_model", "bkd", "steps"), 60.2, "accuracy_model.bkd.steps: 60.2 must be a whole number"),
        (("accuracy_model", "bkd", "compile"), "yes", "accuracy_model.bkd.compile: 'yes' must be true or false"),
        (("accuracy_model", "finetune", "steps"), "20", "accuracy_model.finetune.steps: '20' must be an integer"),
        (("finetune", "distill", "epochs"), 1.5, "finetune.distill.epochs: 1.5 must be a whole number"),
        (("executor", "num_cpus"), 2, "executor (kind 'inprocess'): unknown key(s) 'num_cpus'; allowed: kind"),
        (("data", "image_size"), 32, "data.image_size: only applies to data.path"),
    ],
)
def test_bad_field_is_named(path, value, needle):
    with pytest.raises(ValueError) as err:
        PipelineConfig.load(with_(path, value))
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "section,allowed",
    [
        ("search", "isolation, max_evals, max_time_s, pop_size"),
        ("accuracy_model", "alpha, bkd, bkd_samples"),
        ("finetune", "distill, samples, top_k"),
        ("data", "image_size, n_test, n_train, path, val_split"),
    ],
)
def test_unknown_key_lists_the_allowed_ones(section, allowed):
    cfg = builtin_config("tiny")
    cfg[section] = {**cfg[section], "colour": "red"}
    with pytest.raises(ValueError, match=rf"{section}: unknown key\(s\) 'colour'; allowed: {allowed}"):
        PipelineConfig.load(cfg)


def test_nested_unknown_keys_and_sections():
    with pytest.raises(ValueError, match=r"accuracy_model.bkd: unknown key\(s\) 'stepz'; allowed: batch_size"):
        PipelineConfig.load(with_(("accuracy_model", "bkd", "stepz"), 3))
    with pytest.raises(ValueError, match=r"DONNA config: unknown key\(s\) 'serach'; allowed: accuracy_model"):
        PipelineConfig.load({**builtin_config("tiny"), "serach": {}})
    with pytest.raises(ValueError, match=r"scenarios\[0\]: .*unknown"):
        PipelineConfig.load(with_(("scenarios", "0", "colour"), "red"))
    with pytest.raises(ValueError, match=r"reference: unknown key\(s\) 'layers'; allowed: blocks, path"):
        PipelineConfig.load({**builtin_config("tiny"), "reference": {"path": "m.keras", "layers": []}})


def test_whole_floats_are_integers_not_truncated():
    cfg = PipelineConfig.load(with_(("finetune", "top_k"), 2.0))
    assert cfg.top_k == 2 and isinstance(cfg.top_k, int)
    cfg = PipelineConfig.load(with_(("accuracy_model", "bkd", "steps"), 60.0))
    assert cfg.donna.bkd.steps == 60 and isinstance(cfg.donna.bkd.steps, int)


def test_cli_refuses_a_bad_config_before_writing_anything(tmp_path, capsys):
    for path, value, needle in [
        (("finetune", "top_k"), 2.9, "finetune.top_k"),
        (("data", "n_train"), "lots", "data.n_train"),
        (("search", "colour"), 1, "search: unknown key"),
    ]:
        cfg_path, out = tmp_path / "c.json", tmp_path / "out"
        cfg_path.write_text(json.dumps(with_(path, value)))
        assert cli.main(["donna", "run", "--config", str(cfg_path), "--out", str(out)]) == cli.EXIT_BAD_INPUT
        assert needle in capsys.readouterr().err
        assert not out.exists()


def test_dataclass_counts_refuse_booleans():
    from keras_eff.donna.bkd import BKDConfig
    from keras_eff.donna.pipeline import DonnaConfig

    with pytest.raises(ValueError, match="BKDConfig.steps"):
        BKDConfig(steps=True)
    with pytest.raises(ValueError, match="DonnaConfig.n_archs"):
        DonnaConfig(n_archs=True)
