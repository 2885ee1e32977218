"""Markdown tables: what commands and benchmarks print, pasteable into a README."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with the first column left-aligned and the others right-aligned.

    Floats are shown with 3 significant digits below 10 and one decimal above; strings as given.
    """

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    text = [[cell(value) for value in row] for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]

    def render(cells: Sequence[str]) -> str:
        padded = [str(cells[0]).ljust(widths[0])]
        padded += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (widths[0] + 2)] + ["-" * (width + 1) + ":" for width in widths[1:]]
    return "\n".join([render(headers), "|" + "|".join(rule) + "|", *map(render, text)])
