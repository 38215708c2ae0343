"""Aggregate per-region warnings into one counted line each, instead of one line per region.

A VIA project with 5,000 images can have thousands of clipped coordinates; the user needs
to know *that* it happened, how often, and one example of where, not 5,000 log lines.
"""

from __future__ import annotations

import logging
from collections import Counter


class WarningCounter:
    """Counts warnings by kind and keeps the first example of each.

    ``add("clipped", "img.jpg region 3")`` during conversion; ``log(logger)`` at the end
    writes one line per kind: ``clipped: 12 (first: img.jpg region 3)``.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def add(self, kind: str, example: str = "", count: int = 1) -> None:
        self.counts[kind] += count
        if example and kind not in self.examples:
            self.examples[kind] = example

    def __getitem__(self, kind: str) -> int:
        return self.counts[kind]

    def __bool__(self) -> bool:
        return bool(self.counts)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)

    def lines(self) -> list[str]:
        out = []
        for kind, n in sorted(self.counts.items()):
            example = self.examples.get(kind)
            out.append(f"{kind}: {n}" + (f" (first: {example})" if example else ""))
        return out

    def log(self, logger: logging.Logger, prefix: str = "") -> None:
        """One WARNING line per kind, with its count and first example."""
        for line in self.lines():
            logger.warning("%s%s", prefix, line)
