"""The `keras-eff` command line."""

from __future__ import annotations

import argparse
import os
import sys


def _demo(args) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(out_dir=args.out, epochs=args.epochs, qat_epochs=args.qat_epochs,
                        n_train=args.train_samples, n_test=args.test_samples, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-eff", description="Shrink Keras 3 models and deploy them as int8 "
                                                                    "TFLite.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="train a small CNN on Fashion-MNIST, quantize and export it, print a table")
    demo.add_argument("--out", default="artifacts/demo", help="folder for the artifacts (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=3, help="training epochs (default: %(default)s)")
    demo.add_argument("--qat-epochs", type=int, default=1, help="quantization-aware training epochs (default: "
                                                                  "%(default)s)")
    demo.add_argument("--train-samples", type=int, default=None, help="use only the first N training images")
    demo.add_argument("--test-samples", type=int, default=None, help="use only the first N test images")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"keras-eff {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
