"""Counted, reported skips: bad input never disappears silently and never crashes a batch job."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SkipReport:
    """Collects (item, reason) pairs for inputs that a batch job skipped, and summarises them."""

    name: str = "skipped"
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: str | Path, reason: str) -> None:
        """Record one skipped input and why."""
        self.items.append((str(item), str(reason)))

    def extend(self, other: "SkipReport") -> None:
        """Merge another report into this one."""
        self.items.extend(other.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:  # an empty report is still a report object, but falsy for "anything skipped?"
        return bool(self.items)

    def counts(self) -> Counter:
        """Number of skips per reason category (the text before the first ':')."""
        return Counter(reason.split(":", 1)[0] for _, reason in self.items)

    def summary(self) -> str:
        """One human-readable paragraph: total and per-category counts."""
        if not self.items:
            return f"{self.name}: none"
        parts = ", ".join(f"{k}: {v}" for k, v in self.counts().most_common())
        return f"{self.name}: {len(self.items)} ({parts})"

    def write(self, path: str | Path) -> Path:
        """Write the report as TSV (item<TAB>reason) or JSON lines when the path ends in .jsonl."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            if path.suffix == ".jsonl":
                for item, reason in self.items:
                    f.write(json.dumps({"item": item, "reason": reason}, ensure_ascii=False) + "\n")
            else:
                for item, reason in self.items:
                    f.write(f"{item}\t{reason}\n")
        return path
