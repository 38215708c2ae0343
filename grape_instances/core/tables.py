"""Markdown tables: the one renderer behind every table the project prints, logs or writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tabulate import tabulate


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]],
                   align: Sequence[str] | None = None) -> str:
    """A Markdown (pipe) table, padded so that it also reads well in a terminal or a log.

    Cells are written as given (``str``), so format numbers first: that keeps each column's
    precision ("1.00" stays "1.00"). ``align``: "left" / "right" per column (default left).
    """
    return tabulate([[str(c) for c in r] for r in rows], headers=list(headers),
                    tablefmt="pipe", colalign=tuple(align) if align is not None else None,
                    disable_numparse=True)
