"""Measure normalize_latex against the canonical CROHME captions and group the mismatches into kinds.

    python scripts/measure_normalizer.py [--crohme ../shared/data/crohme] [--examples 3]

Train: normalize_latex(InkML truth) vs train_caption.txt over every parsable train InkML file (default conventions).
Test 2014: the same against 2014/caption.txt with the test-set conventions (sub_before_sup, no \\limits).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hmer_hf.data.inkml import iter_inkml_dir  # noqa: E402
from hmer_hf.data.latex import CANONICAL_SYMBOLS, LatexParseError, normalize_latex  # noqa: E402
from hmer_hf.data.report import SkipReport  # noqa: E402

_NUMBER = re.compile(r"\$?\s*(\d+(?:\.\d+)?)\s*\$?")


def read_captions(path: Path) -> dict[str, str]:
    """NAME<TAB>tokens caption file as a dict."""
    with path.open(encoding="utf-8") as f:
        return dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)


def shortest_number(digits: str) -> str:
    """A decimal number without leading or trailing zeros ("08.40" -> "8.4", "2.0" -> "2", "0.5" -> "0.5")."""
    whole, _, frac = digits.partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def mismatch_kind(raw: str, got: str | None, want: str) -> str:
    """Which kind of disagreement this is; the order of the checks goes from most to least specific."""
    if got is None:
        return "raw LaTeX not parsable (unbalanced braces, missing argument)"
    number = _NUMBER.fullmatch(raw.strip())
    if number and " ".join(shortest_number(number.group(1))) == want:
        return "truth is a number padded with zeros the writer did not write (08.4 -> 8.4, 2.0 -> 2)"
    oov = [t for t in got.split() if t not in CANONICAL_SYMBOLS]
    if oov:
        return "out-of-dictionary tokens left in the output (non-standard markup such as ABOVE, \\Pi)"
    if sorted(got.split()) == sorted(want.split()):
        return "same symbols, different order or grouping"
    return "truth differs from what was written (caption follows the ink)"


def measure(inkml_dir: Path, captions: dict[str, str], examples: int, **options) -> None:
    """Print exact-match rate and mismatch kinds for one InkML folder."""
    report = SkipReport(name="unreadable InkML")
    t0 = time.perf_counter()
    total = exact = 0
    kinds: dict[str, list[tuple[str, str, str | None, str]]] = defaultdict(list)
    for ink in iter_inkml_dir(inkml_dir, report=report):
        want = captions.get(ink.name)
        if want is None:
            report.add(ink.path, "no canonical caption")
            continue
        total += 1
        try:
            got = normalize_latex(ink.truth, **options)
        except LatexParseError:
            got = None
        if got == want:
            exact += 1
        else:
            kinds[mismatch_kind(ink.truth, got, want)].append((ink.name, ink.truth, got, want))
    dt = time.perf_counter() - t0
    print(f"{inkml_dir}  options={options or 'defaults'}")
    print(f"  exact match: {exact}/{total} = {100 * exact / max(total, 1):.2f}%   ({dt:.1f} s incl. reading)")
    print(f"  {report.summary()}")
    for kind, cases in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(cases):4d}  {kind}")
        for name, raw, got, want in cases[:examples]:
            print(f"          {name}: {raw!r}\n            ours: {got}\n            want: {want}")


def main() -> None:
    """Command-line entry point."""
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crohme", type=Path, default=repo.parent / "shared" / "data" / "crohme")
    ap.add_argument("--examples", type=int, default=3, help="examples printed per mismatch kind")
    args = ap.parse_args()
    measure(args.crohme / "train_inkml", read_captions(args.crohme / "train_caption.txt"), args.examples)
    measure(args.crohme / "2014_inkml", read_captions(args.crohme / "2014" / "caption.txt"), args.examples,
            sub_before_sup=True, keep_limits=False)


if __name__ == "__main__":
    main()
