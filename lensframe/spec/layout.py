"""`layout:` as CSS grid-template-areas: rows of view ids ('.' for an empty cell)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional


@dataclass(frozen=True)
class Layout:
    rows: int
    cols: int
    areas: dict  # view id -> (row0, col0, row1, col1), end-exclusive
    template: str  # normalized grid-template-areas text, one row per line


class LayoutProblem(NamedTuple):
    row: int  # 0-based index among the layout's non-empty rows
    cell: Optional[int]  # 0-based cell index in that row, or None for the whole row
    message: str
    hint: Optional[str]


def default_layout(view_ids) -> str:
    return "\n".join(str(v) for v in view_ids)


def parse_layout(text: str, view_ids) -> tuple[Layout | None, list[LayoutProblem]]:
    """Returns (layout, problems), all problems of the layout at once."""
    from ..errors import did_you_mean

    view_ids = [str(v) for v in view_ids]
    grid = [line.split() for line in text.strip().splitlines() if line.strip()]
    problems: list[LayoutProblem] = []
    if not grid:
        return None, [LayoutProblem(0, None, "the layout is empty", "name each view id at least once")]
    width = len(grid[0])
    for r, row in enumerate(grid):
        if len(row) != width:
            problems.append(LayoutProblem(
                r, min(len(row), width) if len(row) > width else None,
                f"row {r + 1} has {len(row)} cell{'s' * (len(row) != 1)} but row 1 has {width}",
                "every row of a grid-template-areas layout has the same number of cells"))
    cells: dict[str, list[tuple[int, int]]] = {}
    for r, row in enumerate(grid):
        for c, name in enumerate(row):
            if name == ".":
                continue
            if name not in view_ids:
                problems.append(LayoutProblem(r, c, f"unknown view {name!r} in layout",
                                              did_you_mean(name, view_ids) or f"views: {', '.join(view_ids)}"))
                continue
            cells.setdefault(name, []).append((r, c))
    areas = {}
    for name, where in cells.items():
        r0, r1 = min(r for r, _ in where), max(r for r, _ in where) + 1
        c0, c1 = min(c for _, c in where), max(c for _, c in where) + 1
        if len(set(where)) != (r1 - r0) * (c1 - c0):
            # point at the first cell of the bounding box that is not this view
            gap = next(((r, c) for r in range(r0, r1) for c in range(c0, c1) if (r, c) not in where), where[0])
            problems.append(LayoutProblem(
                gap[0], gap[1] if gap[1] < len(grid[gap[0]]) else None,
                f"view {name!r} does not form a rectangle in the layout",
                "each view's cells must fill one rectangle, as in CSS grid-template-areas"))
        areas[name] = (r0, c0, r1, c1)
    for name in view_ids:
        if name not in cells:
            problems.append(LayoutProblem(0, None, f"view {name!r} is not placed in the layout",
                                          f"add {name!r} to a row of `layout`"))
    if problems:
        return None, problems
    template = "\n".join(" ".join(row) for row in grid)
    return Layout(len(grid), width, areas, template), []
