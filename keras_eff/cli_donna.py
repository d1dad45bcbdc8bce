"""`keras-eff donna ...`: the DONNA pipeline from a config file, a search for a new scenario, the built-in configs.

Start-up: keras_eff.donna imports TensorFlow, so each command imports it inside its function (``# noqa: PLC0415 -
start-up``) and ``keras-eff --help`` stays free of it (benchmarks/results/startup.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from tflite_export import files

from .cli_inputs import CliError, check_output_files, check_output_folder, float_range, int_range
from .cli_inputs import positive_int as _positive_int

EXIT_OK = 0

DESCRIPTION = textwrap.fill(
    "DONNA neural architecture search. 'run' builds the accuracy model (reference, block library, predictor), searches "
    "each scenario of the config with NSGA-II on measured int8 latency and finetunes the chosen architectures; it "
    "resumes from what the --out folder holds. 'search' searches a new scenario with the accuracy model of an "
    "existing --out folder. 'config' writes a built-in config to edit.",
    width=100,
)


_positive_float = float_range(0, low_inclusive=False)


def _input_size(v):
    parts = v.lower().replace("x", ",").split(",")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H, HxW or HxWxC, got {v!r}") from None
    if len(dims) not in (1, 2, 3) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected H, HxW or HxWxC with positive sizes, got {v!r}")
    return dims


def add_donna_parser(sub, fmt, epilog):
    donna = sub.add_parser(
        "donna",
        help="DONNA architecture search: accuracy model, measured-latency search, finetune",
        description=DESCRIPTION,
        epilog=epilog,
        formatter_class=fmt,
    )
    dsub = donna.add_subparsers(dest="donna_command", metavar="ACTION")

    run = dsub.add_parser("run", help="run (or resume) A -> D from a config", epilog=epilog, formatter_class=fmt)
    run.add_argument(
        "--config",
        default="tiny",
        help="a built-in config name (tiny, default) or a YAML/JSON file (default: %(default)s)",
    )
    run.add_argument("--out", required=True, metavar="DIR", help="the run's folder; what it holds is reused")
    run.add_argument(
        "--reference",
        metavar="MODEL.keras",
        help="your trained Keras model as the reference (its stem, "
        "head and weights are used as they are); replaces the config's 'reference'",
    )
    run.add_argument(
        "--blocks",
        metavar="L1,L2,...",
        help="with --reference: the layer names that end the stem and "
        "each block (default: auto, boundaries proposed at the stage changes)",
    )
    run.add_argument(
        "--data",
        metavar="PATH",
        help="a .npz file (x_train, y_train, x_val, y_val) or a folder of "
        "class sub-folders of images; replaces the config's data.path (default: Fashion-MNIST)",
    )
    run.add_argument(
        "--image-size",
        type=_input_size,
        metavar="HxW",
        help="with an image folder: resize to this (default: the model's input size)",
    )
    run.add_argument("--no-finetune", action="store_true", help="stop after the search")
    run.set_defaults(func=_run)

    search = dsub.add_parser(
        "search",
        help="search a new scenario with the accuracy model in --out (no rebuilding)",
        description=textwrap.fill(
            "Searches one scenario with the accuracy model already in --out: either a scenario "
            "file (--scenario, YAML/JSON) or one described by the options below.",
            width=100,
        ),
        epilog=epilog,
        formatter_class=fmt,
    )
    search.add_argument("--out", required=True, metavar="DIR", help="a folder written by 'keras-eff donna run'")
    search.add_argument(
        "--scenario", metavar="FILE", help="a scenario as YAML/JSON (name, measurers, input_shape, objective, limits)"
    )
    search.add_argument("--name", help="scenario name (default: from the options)")
    search.add_argument(
        "--measurer",
        default="litert",
        choices=("litert", "micro", "litert+micro", "ethos_u"),
        help="what measures each candidate: LiteRT latency here, the microcontroller budget, or an "
        "Arm Ethos-U NPU as Vela compiles for it (--accelerator) (default: %(default)s)",
    )
    search.add_argument(
        "--accelerator",
        default="ethos-u55-128",
        metavar="NAME",
        help="the Ethos-U configuration for --measurer ethos_u (default: %(default)s)",
    )
    search.add_argument(
        "--threads", type=_positive_int, default=1, metavar="N", help="LiteRT threads, 1 or more (default: %(default)s)"
    )
    search.add_argument(
        "--input-size", type=_input_size, metavar="HxW", help="input size of the deployed model (default: the space's)"
    )
    search.add_argument("--max-latency-us", type=_positive_float, metavar="US", help="latency target")
    search.add_argument("--max-flash-bytes", type=_positive_int, metavar="B", help="flash budget (micro measurer)")
    search.add_argument("--max-ram-bytes", type=_positive_int, metavar="B", help="RAM budget (micro measurer)")
    search.add_argument(
        "--max-evals", type=int_range(2), metavar="N", help="evaluation cap, 2 or more (default: the config's)"
    )
    search.add_argument("--no-finetune", action="store_true", help="do not finetune the chosen architectures")
    search.add_argument("--force", action="store_true", help="search again even if the scenario's front exists")
    search.set_defaults(func=_search)

    config = dsub.add_parser(
        "config", help="write a built-in config (tiny, default) to edit", epilog=epilog, formatter_class=fmt
    )
    config.add_argument("name", choices=("tiny", "default"))
    config.add_argument(
        "-o", "--out", metavar="FILE", help="write YAML (.yaml/.yml) or JSON here (default: print YAML)"
    )
    config.add_argument("--force", action="store_true", help="replace an existing file")
    config.set_defaults(func=_config)
    donna.set_defaults(func=lambda args: _no_action(donna))
    return donna


def _no_action(parser) -> int:
    parser.print_help(sys.stderr)
    return 1


def _summary(pipe) -> None:
    print(files.read_text(pipe.out / "summary.md", "DONNA summary"))


def _run_config(args) -> dict:
    """The config named by --config, with --reference / --blocks / --data / --image-size applied."""
    from .donna.configs import BUILTIN, builtin_config  # noqa: PLC0415 - start-up: keras_eff.donna imports TensorFlow
    from .donna.run import read_config_file  # noqa: PLC0415 - start-up: imports TensorFlow

    cfg = builtin_config(args.config) if args.config in BUILTIN else read_config_file(args.config)
    if args.blocks and not args.reference:
        raise CliError("--blocks names layers of the reference model: give --reference MODEL.keras too")
    if args.image_size and not args.data:
        raise CliError("--image-size resizes the images of an image folder: give --data FOLDER too")
    if args.reference:
        cfg["reference"] = {"path": args.reference, "blocks": args.blocks or "auto"}
    if args.data:
        data = {k: v for k, v in dict(cfg.get("data") or {}).items() if k in ("n_train", "n_test")}
        data["path"] = args.data
        if args.image_size:
            d = args.image_size
            data["image_size"] = [d[0], d[1] if len(d) > 1 else d[0]]
        cfg["data"] = data
    return cfg


def _run(args) -> int:
    check_output_folder(args.out)
    from .donna import DonnaPipeline  # noqa: PLC0415 - start-up: imports TensorFlow

    pipe = DonnaPipeline(_run_config(args), args.out).run(finetune=not args.no_finetune)
    _summary(pipe)
    return EXIT_OK


def _scenario_from_args(args, space):
    from .donna import Scenario  # noqa: PLC0415 - start-up: imports TensorFlow
    from .donna.run import read_config_file  # noqa: PLC0415 - start-up: imports TensorFlow

    if args.scenario:
        return Scenario.from_config(read_config_file(args.scenario))
    measurers = []
    if "litert" in args.measurer:
        measurers.append({"kind": "litert", "num_threads": args.threads})
    if "micro" in args.measurer:
        measurers.append({"kind": "micro"})
    if args.measurer == "ethos_u":
        measurers.append({"kind": "ethos_u", "accelerator": args.accelerator})
    limits = {}
    for key, value in (
        ("latency_us", args.max_latency_us),
        ("flash_bytes", args.max_flash_bytes),
        ("ram_bytes", args.max_ram_bytes),
    ):
        if value is not None:
            limits[key] = value
    shape = None
    if args.input_size:
        d = args.input_size
        shape = (d[0], d[1] if len(d) > 1 else d[0], d[2] if len(d) > 2 else space.input_shape[2])
    npu = args.measurer == "ethos_u"
    name = args.name or "_".join(
        [args.accelerator if npu else args.measurer.replace("+", "_")]
        + ([f"{args.threads}t"] if "litert" in args.measurer else [])
        + ([f"{shape[0]}x{shape[1]}"] if shape else [])
    )
    objective = "latency_us" if "litert" in args.measurer or npu else "flash_bytes"
    return Scenario(name=name, measurers=measurers, input_shape=shape, objective=objective, limits=limits)


def _search(args) -> int:
    out = check_output_folder(args.out)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise CliError(
            f"{out} holds no DONNA run ({cfg_path.name} is missing); run 'keras-eff donna run --config "
            f"... --out {out}' first"
        )
    config = files.read_json(cfg_path, "DONNA run config")
    from .donna import DonnaPipeline, SearchConfig  # noqa: PLC0415 - start-up: imports TensorFlow

    pipe = DonnaPipeline(config, out)
    pipe.predictor()  # refuses a folder without an accuracy model, before any measuring
    scenario = _scenario_from_args(args, pipe.space)
    search_cfg = pipe.config.search_config
    if args.max_evals:
        search_cfg = SearchConfig.from_config({**search_cfg.get_config(), "max_evals": args.max_evals})
    pipe.record_scenario(scenario)
    result = pipe.search_scenario(scenario, search_cfg, force=args.force)
    print(
        f"scenario {scenario.name!r}: {len(result.front)} architectures on the Pareto front "
        f"({out / 'search' / scenario.name / 'pareto.json'})"
    )
    for r in result.front:
        print(
            f"  {r['predicted_accuracy']:.4f}  {scenario.objective}={r['metrics'][scenario.objective]:.4g}  {r['arch']}"
        )
    if not args.no_finetune:
        for m in pipe.finetune_scenario(scenario, result, force=args.force):
            path = out / "finetune" / scenario.name / m["model"]
            print(f"finetuned {m['arch']}: accuracy {m['accuracy']:.4f} -> {path}")
    return EXIT_OK


def _config(args) -> int:
    import yaml  # noqa: PLC0415 - start-up: PyYAML (12-30 ms, -X importtime) only for this action

    from .donna import builtin_config  # noqa: PLC0415 - start-up: imports TensorFlow (keras_eff.donna does)

    if args.out is not None:
        check_output_files([args.out], args.force, "-o/--out")
    cfg = builtin_config(args.name)
    if args.out is None:
        print(yaml.safe_dump(cfg, sort_keys=False))
        return EXIT_OK
    path = Path(args.out)
    text = yaml.safe_dump(cfg, sort_keys=False) if path.suffix in (".yaml", ".yml") else json.dumps(cfg, indent=2)
    files.atomic_write(path, text + "\n", overwrite=args.force)
    print(f"wrote the {args.name!r} DONNA config to {path}", file=sys.stderr)
    return EXIT_OK
