"""`hmer-hf prepare`: build a dataset once and cache it on disk (`hmer-hf prepare crohme --out DIR`); with
`--push REPO_ID` (or `--dry-run --output DIR`) also export it for the Hub (hmer_hf/data/export.py).

`add_arguments` fills an argparse (sub)parser and `run` executes it; hmer_hf/cli.py and scripts/prepare_data.py both
use them, so the two entry points cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import datasets

from ..hub import add_hub_arguments, check_repo_id, exit_code_of
from .builders import LAYOUTS, SKIP_REPORT_FILE, detect_layout, prepare_dataset
from .export import CROHME_LICENSE, export_dataset, push_dataset
from .report import SkipReport

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
    hub = parser.add_argument_group(
        "sharing", "export the prepared dataset as Parquet + dataset card (the layout of datasets' push_to_hub)")
    hub.add_argument("--push", metavar="REPO_ID", default=None, help="upload it as this Hub dataset repository")
    add_hub_arguments(hub)
    hub.add_argument("--license", default=None,
                     help=f"licence for the dataset card (default: {CROHME_LICENSE} for CROHME, else unknown)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Prepare the dataset named by parsed `args`; prints a summary and returns the exit code."""
    source = args.crohme_dir if args.source == "crohme" else Path(args.source)
    if args.dry_run and args.output is None:  # checked before the (possibly long) build
        print("error: --dry-run needs --output DIR (the folder to write the export to)", file=sys.stderr)
        return 2
    if args.push:
        try:
            check_repo_id(args.push)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
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
    if args.push or args.dry_run:
        return share(args, dataset, report, source, layout)
    return 0


def share(
    args: argparse.Namespace, dataset: datasets.Dataset | datasets.DatasetDict, report: SkipReport, source: Path,
    layout: str,
) -> int:
    """`--dry-run --output DIR`: write the Hub export there; `--push REPO_ID`: upload it (keeping a copy in
    `--output` when given). Returns the exit code."""
    card = {"source": source, "layout": layout, "license": args.license, "skipped": report,
            "progress": not args.no_progress}

    def export_or_push() -> int:
        if args.dry_run:
            files = export_dataset(dataset, args.output, repo_id=args.push, **card)
            print(f"wrote {args.output}: {len(files)} files ({', '.join(files)})")
            return 0
        url = push_dataset(dataset, args.push, private=args.private, token=args.token, output_dir=args.output,
                           **card)
        print(f"pushed {args.out} to {args.push}: {url}")
        return 0

    return exit_code_of(export_or_push, args.push)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (scripts/prepare_data.py)."""
    parser = add_arguments(argparse.ArgumentParser(prog="prepare_data"))
    return run(parser.parse_args(argv))
