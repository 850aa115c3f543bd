"""`hmer-hf prepare`: build a dataset once and cache it on disk (`hmer-hf prepare crohme --out DIR`).

`add_arguments` fills an argparse (sub)parser and `run` executes it; hmer_hf/cli.py and scripts/prepare_data.py both
use them, so the two entry points cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .builders import LAYOUTS, SKIP_REPORT_FILE, detect_layout, prepare_dataset

RENDERING_LAYOUTS = ("crohme", "inkml")  # layouts whose builder renders ink and takes num_proc

# The CROHME folder of this project's development setup (../shared/data/crohme beside the checkout); override with
# --crohme-dir or the HMER_CROHME_DIR environment variable.
DEFAULT_CROHME_DIR = os.environ.get("HMER_CROHME_DIR", str(Path("..") / "shared" / "data" / "crohme"))


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `prepare` arguments to a parser (or subparser); returns it."""
    parser.description = (
        "Build a dataset (image, latex, id, height, width) and save it with save_to_disk; a second run with the "
        "same source and settings loads the saved copy instead. A skip report (skipped.tsv) is written beside it."
    )
    parser.add_argument(
        "source",
        help="'crohme' (the CROHME root given by --crohme-dir) or a dataset folder of any supported layout: CoMER/"
        "BTTR/WAP caption folder, HME100K root, image folder with metadata.jsonl, InkML folder",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the prepared dataset to")
    parser.add_argument(
        "--crohme-dir", type=Path, default=Path(DEFAULT_CROHME_DIR),
        help=f"CROHME root for source 'crohme' (default: {DEFAULT_CROHME_DIR})",
    )
    parser.add_argument("--layout", choices=[x for x in LAYOUTS if x != "saved"], default=None,
                        help="skip auto-detection and use this layout")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out already holds a prepared copy")
    parser.add_argument("--num-proc", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes for rendering InkML (default: CPU count, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> int:
    """Prepare the dataset named by parsed `args`; prints a summary and returns the exit code."""
    source = args.crohme_dir if args.source == "crohme" else Path(args.source)
    start = time.perf_counter()
    try:
        layout = "crohme" if args.source == "crohme" else (args.layout or detect_layout(source))
        kwargs = {"progress": not args.no_progress}
        if layout in RENDERING_LAYOUTS:  # the other builders have no process pool
            kwargs["num_proc"] = args.num_proc
        dataset, report = prepare_dataset(source, args.out, layout=layout, force=args.force, **kwargs)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    splits = dataset.items() if hasattr(dataset, "items") else [("all", dataset)]
    print(f"prepared {source} ({layout}) -> {args.out} in {seconds:.1f} s")
    for name, ds in splits:
        print(f"  {name}: {ds.num_rows} samples")
    print(f"  {report.summary()}")
    if report:
        print(f"  details: {Path(args.out) / SKIP_REPORT_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (scripts/prepare_data.py)."""
    parser = add_arguments(argparse.ArgumentParser(prog="prepare_data"))
    return run(parser.parse_args(argv))
