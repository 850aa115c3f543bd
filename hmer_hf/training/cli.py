"""`hmer-hf train`: train from a config file with command-line overrides (shared with scripts/train.py).

`add_arguments` fills an argparse (sub)parser and `run` executes it, so the two entry points cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `train` arguments to a parser (or subparser); returns it."""
    parser.description = (
        "Train an HMER model from a YAML/JSON config (see configs/ and docs/training.md). Runs as one process or "
        "under `accelerate launch --multi_gpu --num_processes N` unchanged."
    )
    parser.add_argument("config", nargs="?", default=None, help="YAML or JSON config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="override config keys, e.g. --set optim.lr=0.1 train.max_epochs=3 (values are YAML)",
    )
    parser.add_argument("--output-dir", default=None, help="shorthand for --set train.output_dir=DIR")
    parser.add_argument(
        "--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
        help="continue from the newest checkpoint in the output dir, or from the checkpoint folder given",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Train as described by parsed `args`; returns the exit code."""
    from .config import load_config
    from .trainer import Trainer

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    try:  # configuration and data problems are reported in one line; errors while training keep their traceback
        trainer = Trainer(load_config(args.config, overrides))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer.train(resume=args.resume)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (scripts/train.py)."""
    return run(add_arguments(argparse.ArgumentParser(prog="train")).parse_args(argv))
