"""grid-template-areas -> a Panel GridSpec, each view's card placed on its rectangle."""
from __future__ import annotations

import panel as pn

ROW_HEIGHT = 330


def build_grid(layout, cards: dict) -> pn.GridSpec:
    grid = pn.GridSpec(sizing_mode="stretch_width", height=ROW_HEIGHT * layout.rows, css_classes=["lf-grid-layout"])
    for vid, (r0, c0, r1, c1) in layout.areas.items():
        grid[r0:r1, c0:c1] = cards[vid]
    return grid
