"""The built-in pipeline configs: ``tiny`` (the tiny space, small budgets: for trying it and for tests) and
``default`` (the default space on Fashion-MNIST). ``keras-eff donna config NAME`` writes one to a file to edit.
How long each takes: docs/donna.md."""

from __future__ import annotations

import copy

TINY = {
    "space": "tiny",
    "data": {"n_train": 4000, "n_test": 1000},
    "accuracy_model": {
        "reference_epochs": 2,
        "reference_batch_size": 128,
        "bkd": {"steps": 60, "batch_size": 64, "calibration_samples": 128, "compile": False},
        "bkd_samples": 1500,
        "val_samples": 300,
        "n_archs": 5,
        "finetune": {"steps": 20},
        "finetune_samples": 2000,
    },
    "search": {"pop_size": 8, "max_evals": 24, "max_time_s": 120.0, "timeout_s": 60.0},
    "scenarios": [
        {
            "name": "litert_1thread",
            "measurers": [{"kind": "litert", "num_threads": 1, "runs": 50, "rounds": 1}],
            "objective": "latency_us",
        },
    ],
    "finetune": {"top_k": 2, "samples": 3000, "distill": {"epochs": 2, "batch_size": 128}},
    "executor": {"kind": "inprocess"},
    "seed": 0,
}

DEFAULT = {
    "space": "default",
    "data": {"n_train": 60000, "n_test": 10000},
    "accuracy_model": {},  # DonnaConfig's defaults
    "search": {},  # SearchConfig's defaults: about 15 minutes of measuring on 2 cores
    "scenarios": [
        {"name": "litert_1thread", "measurers": [{"kind": "litert", "num_threads": 1}], "objective": "latency_us"},
        {"name": "litert_2threads", "measurers": [{"kind": "litert", "num_threads": 2}], "objective": "latency_us"},
        {
            "name": "mcu_256k_flash",
            "measurers": [{"kind": "litert", "num_threads": 1}, {"kind": "micro"}],
            "objective": "latency_us",
            "limits": {"flash_bytes": 262144, "ram_bytes": 131072},
        },
    ],
    "finetune": {"top_k": 4, "samples": 20000, "distill": {"epochs": 3}},
    "executor": {"kind": "inprocess"},
    "seed": 0,
}

BUILTIN = {"tiny": TINY, "default": DEFAULT}


def builtin_config(name: str) -> dict:
    """A copy of a built-in pipeline config, to run or edit.

    Args:
        name: ``"tiny"`` (the tiny space and small budgets, for trying it and for tests) or ``"default"`` (the
            default space on the full Fashion-MNIST).

    Returns:
        A new dict with the sections of `PipelineConfig` (changing it leaves the built-in one alone).

    Raises:
        ValueError: If ``name`` is not a built-in config.

    Example:
        ```python
        cfg = builtin_config("tiny")
        cfg["search"]["max_evals"] = 48
        pipe = run_pipeline(cfg, "artifacts/donna")
        ```
    """
    if name not in BUILTIN:
        raise ValueError(
            f"no built-in DONNA config {name!r}; choose from {', '.join(BUILTIN)} or give a YAML/JSON file"
        )
    return copy.deepcopy(BUILTIN[name])
