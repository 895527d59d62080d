"""grid-template-areas -> a Panel GridSpec, each view's card placed on its rectangle."""
from __future__ import annotations

import panel as pn

ROW_HEIGHT = 330  # px per layout row where the grid has no area to fill (build_app: notebooks, tests)
MIN_ROW_HEIGHT = 280  # px: a filling grid's rows shrink to this, then the main area scrolls


def build_grid(layout, cards: dict, fill: bool = False) -> pn.GridSpec:
    """fill: the grid takes the height of the area it is in (the served template's main area, less
    the banner of a spec edit that did not check): a 3-row layout fits a 1000 px high window, and
    more rows than fit at MIN_ROW_HEIGHT make the main area scroll rather than squash the views.
    Otherwise each layout row is ROW_HEIGHT high."""
    if fill:
        grid = pn.GridSpec(sizing_mode="stretch_both", styles={"min-height": f"{MIN_ROW_HEIGHT * layout.rows}px"},
                           css_classes=["lf-grid-layout"])
    else:
        grid = pn.GridSpec(sizing_mode="stretch_width", height=ROW_HEIGHT * layout.rows, css_classes=["lf-grid-layout"])
    for vid, (r0, c0, r1, c1) in layout.areas.items():
        grid[r0:r1, c0:c1] = cards[vid]
    return grid
