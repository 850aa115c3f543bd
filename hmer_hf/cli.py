"""`hmer-hf` command line: predict (and the data, training and sharing commands as they are added)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path


def resolve_model(model: str | None) -> str:
    """The model folder to use: the one given, else the shipped default (with a clear error when neither exists)."""
    from . import DEFAULT_MODEL, default_model_available

    if model:
        return model
    if not default_model_available():
        raise SystemExit(
            f"error: no model given and the shipped default model is missing ({DEFAULT_MODEL}); pass --model DIR"
        )
    return DEFAULT_MODEL


def recognise_files(pipe, paths: list[str], batch_size: int, **kwargs) -> dict:
    """Run the pipeline over files in batches; a file that fails is retried alone so it cannot sink its batch.

    Returns {path: result dict or the ValueError that explains why the file could not be recognised}.
    """
    results: dict = {}
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        try:
            results.update(zip(chunk, pipe(chunk, batch_size=batch_size, **kwargs)))
        except ValueError:
            for path in chunk:
                try:
                    results[path] = pipe(path, **kwargs)
                except ValueError as err:
                    results[path] = err
    return results


def cmd_predict(args: argparse.Namespace) -> int:
    """Recognise image files and print their LaTeX (one line each, or JSON lines with --json)."""
    from transformers import pipeline

    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    pipe = pipeline("image-to-latex", model=resolve_model(args.model), device=args.device)
    generate = {"num_beams": args.num_beams}
    if args.max_new_tokens:
        generate["max_new_tokens"] = args.max_new_tokens
    results = recognise_files(pipe, args.images, args.batch_size, compact=args.compact, **generate)
    failed = 0
    for path in args.images:
        result = results[path]
        if isinstance(result, Exception):
            failed += 1
            if args.json:
                print(json.dumps({"file": path, "error": str(result)}, ensure_ascii=False))
            else:
                print(f"error: {path}: {result}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"file": path, "latex": result["generated_text"], "score": result["score"]}, ensure_ascii=False))
        elif len(args.images) == 1:
            print(result["generated_text"])
        else:
            print(f"{path}\t{result['generated_text']}")
    return 1 if failed else 0


SUBCOMMANDS = [
    ("prepare", ".data.prepare", "build and cache datasets (CROHME, caption folders, ...)"),
    ("train", ".training.cli", "train a model from a config file (accelerate; resumable)"),
    ("evaluate", ".evaluation", "score a saved model on a labelled dataset (ExpRate)"),
    ("push", ".hub", "upload a saved model to the Hugging Face Hub with its remote code and model card"),
    ("demo", ".demo", "serve the Gradio demo: draw or upload a formula (needs hmer-hf[demo])"),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="hmer-hf", description="Handwritten math expression recognition -> LaTeX")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="recognise image files")
    p.add_argument("images", nargs="+", help="image files (png, jpg, bmp, ...)")
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--num-beams", type=int, default=1, help="beam width (1 = greedy; >1 = bidirectional beam search)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--compact", action="store_true", help="print x^{2} instead of x ^ { 2 }")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_predict)

    # The other subcommands live with their layers; each module offers add_arguments(parser) and run(args).
    for name, module, help_text in SUBCOMMANDS:
        command = importlib.import_module(module, __package__)
        p = sub.add_parser(name, help=help_text)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hmer-hf` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
