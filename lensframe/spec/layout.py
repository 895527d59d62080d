"""`layout:` as CSS grid-template-areas: rows of view ids ('.' for an empty cell)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    rows: int
    cols: int
    areas: dict  # view id -> (row0, col0, row1, col1), end-exclusive
    template: str  # normalized grid-template-areas text, one row per line


def default_layout(view_ids) -> str:
    return "\n".join(view_ids)


def parse_layout(text: str, view_ids) -> tuple[Layout | None, list[tuple[int, str, str | None]]]:
    """Returns (layout, problems); each problem is (row index, message, hint)."""
    from ..errors import did_you_mean

    grid = [line.split() for line in text.strip().splitlines() if line.strip()]
    problems: list[tuple[int, str, str | None]] = []
    if not grid:
        return None, [(0, "the layout is empty", "name each view id at least once")]
    width = len(grid[0])
    for r, row in enumerate(grid):
        if len(row) != width:
            problems.append((r, f"row {r + 1} has {len(row)} cells but row 1 has {width}",
                             "every row of a grid-template-areas layout has the same number of cells"))
    cells: dict[str, list[tuple[int, int]]] = {}
    for r, row in enumerate(grid):
        for c, name in enumerate(row):
            if name == ".":
                continue
            if name not in view_ids:
                problems.append((r, f"unknown view {name!r} in layout",
                                 did_you_mean(name, view_ids) or f"views: {', '.join(view_ids)}"))
                continue
            cells.setdefault(name, []).append((r, c))
    areas = {}
    for name, where in cells.items():
        r0, r1 = min(r for r, _ in where), max(r for r, _ in where) + 1
        c0, c1 = min(c for _, c in where), max(c for _, c in where) + 1
        if len(where) != (r1 - r0) * (c1 - c0):
            problems.append((r0, f"view {name!r} does not form a rectangle in the layout",
                             "each view's cells must fill one rectangle, as in CSS grid-template-areas"))
        areas[name] = (r0, c0, r1, c1)
    for name in view_ids:
        if name not in cells and not any(name == n for row in grid for n in row):
            problems.append((0, f"view {name!r} is not placed in the layout", f"add {name!r} to a row of `layout`"))
    if problems:
        return None, problems
    template = "\n".join(" ".join(row) for row in grid)
    return Layout(len(grid), width, areas, template), []
