"""The map of a cluster view (text_clusters, neuron_clusters): a HoloViews scatter of the points
coloured by cluster, and an HTML legend of the clusters beside it.

Why HoloViews here, where the token strips and the lens grid are HTML: a map is a plot of
hundreds of points with axes, hover, wheel zoom, pan and lasso, which Bokeh draws on a canvas
and an HTML table cannot; nothing in it needs text in every mark. The legend stays HTML: cluster
tags and p-values wrap there, and a click on an entry focuses that cluster (a Bokeh legend
would hide the series instead, and cuts nothing but cannot wrap).

What a gesture does (the views decide what it means):
- a click (hv.streams.Tap) picks the nearest point within a few percent of the visible range;
- a lasso (hv.streams.Lasso: the polygon in data coordinates, final only) picks the points inside
  it (even-odd rule, as Bokeh's own hit test), every time: a second lasso of the same points
  after the selection was cleared elsewhere still arrives, which Bokeh's selection indices
  (Selection1D) would not send, as they would not have changed.
Bokeh's own selection highlight is switched off: what is focused and selected is drawn from the
session's focus (a square frame on the focused point, rings on the selected ones, outlines on the
focused cluster), so the map shows the same state as every other view whoever changed it.

Built once per session (ctx.keep): the points never change within a session, and a focus change
sends the marked points through hv.streams.Pipe to three overlay layers, so the page gets
ColumnDataSource patches and no new Bokeh models.

The view range: one far outlier squashes every other point into a corner, so the initial range is
the data's range clipped to Tukey's far-out fences (quartiles -/+ 3 IQR) on each axis; points
beyond them are left outside the first view (the caption says how many; wheel-zoom out or pan to
see them).
"""
from __future__ import annotations

import numpy as np
import param

from .widgets import _Clickable

# Tableau 10 then its darker half: distinct for up to 20 clusters, then repeated
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f4e79", "#b35806", "#2d6a2d", "#a11d21", "#3b7c78", "#8c6d1f",
           "#6b3f6b", "#c2185b", "#5d4037", "#616161"]
UNTAGGED = "#b9b9b9"  # neuron clusters without a tag: grey, so the tagged ones stand out
FENCE = 3.0  # Tukey's far-out fence, in IQRs beyond the quartiles
TOOLS = ["pan", "wheel_zoom", "reset"]  # with the hover and lasso: no save or box zoom, a short toolbar
TAP_RADIUS = 0.03  # a click picks the nearest point within this share of the visible range


# the caption above a map: the figures, then a smaller key to the marks and gestures
MAP_CSS = """
.lf-clusters-head, .lf-nclusters-head { line-height: 1.35; }
.lf-map-key { color: #555; font-size: 11px; margin-top: 2px; line-height: 1.35; }
.lf-outside { color: #8a5a00; }
.lf-lasso-note { color: #8a5a00; margin-top: 4px; }
"""


def colour(group: int) -> str:
    return PALETTE[int(group) % len(PALETTE)]


def robust_limits(values, fence: float = FENCE, pad: float = 0.05) -> tuple[float, float, int]:
    """(lo, hi, outside): the range of `values` clipped to [Q1 - fence IQR, Q3 + fence IQR],
    padded by `pad` of its width on each side, and how many values lie beyond the clipped range.
    With no spread (IQR 0) the whole range is kept; a single value gets a unit-wide range."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -1.0, 1.0, 0
    q1, q3 = np.percentile(v, [25, 75])
    iqr = q3 - q1
    lo, hi = float(v.min()), float(v.max())
    if iqr > 0:
        lo, hi = max(lo, q1 - fence * iqr), min(hi, q3 + fence * iqr)
    outside = int(np.sum((v < lo) | (v > hi)))
    width = hi - lo
    if width <= 0:
        return lo - 0.5, hi + 0.5, outside
    return lo - pad * width, hi + pad * width, outside


def inside_polygon(x, y, px, py) -> np.ndarray:
    """Which points (x, y) lie inside the polygon (px, py), by the even-odd rule (a ray cast to
    the right crosses its edges an odd number of times), the rule Bokeh's lasso uses."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    inside = np.zeros(x.shape, dtype=bool)
    if px.size < 3:
        return inside
    qx, qy = np.roll(px, 1), np.roll(py, 1)
    for x0, y0, x1, y1 in zip(px, py, qx, qy):
        spans = (y0 > y) != (y1 > y)  # the edge crosses the horizontal line through the point
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans & (x < at)
    return inside


def nearest(x, y, px: float, py: float, x_range, y_range, radius: float = TAP_RADIUS) -> int | None:
    """The index of the point nearest to a click at (px, py), distances measured in shares of the
    visible range of each axis (what the eye sees, whatever the units), or None when none lies
    within `radius` of it."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0 or px is None or py is None:
        return None
    wx = max(float(x_range[1]) - float(x_range[0]), 1e-12)
    wy = max(float(y_range[1]) - float(y_range[0]), 1e-12)
    d = np.hypot((x - px) / wx, (y - py) / wy)
    j = int(np.argmin(d))
    return j if d[j] <= radius else None


class ClusterLegend(_Clickable):
    """The clusters of a map, one row each: a colour swatch (the map's), a name and a note that
    wraps (tags, effect sizes and p-values are never cut); click -> {"group": g}."""

    items = param.List(default=[])  # [{"group", "color", "label", "note", "tip"}]
    selected = param.Integer(default=-1)
    kind = param.String(default="cluster")

    _esm = r"""
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-legend';
      box.addEventListener('click', (e) => {
        const row = e.target.closest('.lf-legend-item');
        if (row) model.send_msg({group: Number(row.dataset.group)});
      });
      el.appendChild(box);
      function draw() {
        box.replaceChildren(...model.items.map((it) => {
          const row = document.createElement('div');
          row.className = 'lf-legend-item lf-' + model.kind + '-item' + (it.group === model.selected ? ' lf-selected' : '');
          row.dataset.group = it.group;
          row.dataset.key = it.group;
          const sw = document.createElement('span'); sw.className = 'lf-swatch'; sw.style.background = it.color;
          const name = document.createElement('span'); name.className = 'lf-legend-label'; name.textContent = it.label;
          const note = document.createElement('span'); note.className = 'lf-legend-note'; note.textContent = it.note || '';
          row.append(sw, name, note);
          return row;
        }));
        const sel = box.querySelector('.lf-selected');
        if (sel) sel.scrollIntoView({block: 'nearest'});
      }
      draw();
      // Panel does not run render() again when a param changes: redraw once per message
      let pending = false;
      model.on(['items', 'selected', 'kind'], () => {
        if (pending) return;
        pending = true;
        queueMicrotask(() => { pending = false; draw(); });
      });
    }
    """
    _stylesheets = ["""
    :host { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 12px; }
    .lf-legend { height: 100%; overflow-y: auto; overflow-x: hidden; }
    .lf-legend-item { display: grid; grid-template-columns: 12px auto 1fr; column-gap: 6px; align-items: baseline;
                      padding: 2px 4px; cursor: pointer; border-radius: 3px; }
    .lf-legend-item:hover { background: #f2f6fc; }
    .lf-legend-item.lf-selected { background: #dbe8fb; }
    .lf-swatch { width: 10px; height: 10px; border-radius: 50%; align-self: center; }
    .lf-legend-label { font-weight: 600; white-space: nowrap; }
    .lf-legend-note { color: #444; font-size: 11px; white-space: normal; overflow-wrap: anywhere; }
    """]


class ClusterMap:
    """One session's map: the points (columns x, y, group, head, tip) drawn once, the marks fed
    by pipes. `on_tap(row)` and `on_lasso(rows)` are the current render's callbacks (swapped on
    every render, like ctx.part's on_click), called with focus updates held."""

    def __init__(self, x, y, group, head, tip, *, xlabel: str, ylabel: str, kind: str, colours=None):
        import panel as pn
        from bokeh.models import HoverTool

        from .widgets import hv_bokeh

        hv = hv_bokeh()
        self.x, self.y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.xlim, self.ylim = robust_limits(self.x)[:2], robust_limits(self.y)[:2]
        inside = (self.x >= self.xlim[0]) & (self.x <= self.xlim[1]) & (self.y >= self.ylim[0]) & (self.y <= self.ylim[1])
        self.outside = int(np.sum(~inside))  # points beyond the first view's range, on either axis
        colours = colours or [colour(g) for g in group]
        table = {"x": self.x, "y": self.y, "row": np.arange(len(self.x)), "group": np.asarray(group),
                 "colour": list(colours), "head": list(head), "tip": list(tip)}
        hover = HoverTool(tooltips="<div style='max-width: 340px; white-space: normal; font-size: 12px'>"
                                   "<b>@head</b><div>@tip</div></div>")
        # the same look selected or not: the focus layers below show what is selected
        same = dict(selection_fill_alpha=0.85, nonselection_fill_alpha=0.85, selection_line_alpha=0,
                    nonselection_line_alpha=0, selection_fill_color="colour", nonselection_fill_color="colour")
        kdims = [hv.Dimension("x", label=xlabel), hv.Dimension("y", label=ylabel)]
        self.base = hv.Points(table, kdims, ["row", "group", "colour", "head", "tip"]).opts(
            color="colour", size=8, fill_alpha=0.85, line_alpha=0, tools=[hover, "lasso_select"],
            default_tools=TOOLS, **same)
        self.pipes = {name: hv.streams.Pipe(data=self._rows([])) for name in ("group", "selected", "focused")}
        style = {"group": dict(size=11, line_color="#333333", line_width=1.2),
                 "selected": dict(size=15, line_color="#111111", line_width=2.2),
                 # a square frame: distinct from the selection's rings, and the point's colour shows inside
                 "focused": dict(size=20, marker="square", line_color="#000000", line_width=2.6)}
        layers = [hv.DynamicMap(lambda data, s=style[name]: hv.Points(data, kdims).opts(
            fill_alpha=0, default_tools=TOOLS, **{"marker": "circle", **s}), streams=[self.pipes[name]]) for name in ("group", "selected", "focused")]
        self.tap = hv.streams.Tap(source=self.base, x=None, y=None)
        self.lasso = hv.streams.Lasso(source=self.base)
        self.ranges = hv.streams.RangeXY(source=self.base)
        self.tap.add_subscriber(self._tapped)
        self.lasso.add_subscriber(self._lassoed)
        self.on_tap = self.on_lasso = None
        self.shown: dict = {}
        plot = (self.base * layers[0] * layers[1] * layers[2]).opts(
            hv.opts.Overlay(responsive=True, xlim=self.xlim, ylim=self.ylim, xlabel=xlabel, ylabel=ylabel,
                            show_legend=False, toolbar="right", active_tools=["pan", "wheel_zoom"],
                            xticks=4, yticks=5,  # a narrow card: labels like -0.15 must not run into each other
                            hooks=[lambda plot, element: _name(plot, f"lf-{kind}-map")],
                            default_tools=TOOLS, min_height=200, min_width=200))
        # linked_axes off: Panel would otherwise share the ranges of every plot in the page whose
        # axes have the same names, and squash the neuron map into the text map's range
        self.pane = pn.pane.HoloViews(plot, sizing_mode="stretch_both", min_height=220, min_width=200,
                                      linked_axes=False, css_classes=["lf-map-plot", f"lf-{kind}-map"])

    def _rows(self, rows) -> dict:
        rows = [int(r) for r in rows if 0 <= int(r) < len(self.x)]
        return {"x": self.x[rows], "y": self.y[rows]}

    def show(self, group=(), selected=(), focused=None) -> None:
        """Mark the focused cluster's rows, the selected rows and the focused row (None: none);
        only what changed is sent."""
        want = {"group": tuple(group), "selected": tuple(selected), "focused": () if focused is None else (focused,)}
        for name, rows in want.items():
            if self.shown.get(name) != rows:
                self.shown[name] = rows
                self.pipes[name].send(self._rows(rows))

    def _tapped(self, x=None, y=None) -> None:
        x_range = self.ranges.x_range or self.xlim
        y_range = self.ranges.y_range or self.ylim
        row = nearest(self.x, self.y, x, y, x_range, y_range)
        if row is not None and self.on_tap is not None:
            _held(self.on_tap, row)

    def _lassoed(self, geometry=None) -> None:
        if geometry is None or len(geometry) < 3 or self.on_lasso is None:
            return
        g = np.asarray(geometry, dtype=np.float64)
        rows = np.flatnonzero(inside_polygon(self.x, self.y, g[:, 0], g[:, 1]))
        _held(self.on_lasso, [int(r) for r in rows])


def _name(plot, name: str) -> None:
    """Name the Bokeh figure (lf-texts-map, lf-neurons-map): a stable handle for browser tests,
    which find the figure in the page's Bokeh document, not by pixels."""
    if plot.state.name != name:
        plot.state.name = name


def _held(fn, arg) -> None:
    """A gesture's focus change with document updates held: every linked view changes in one step."""
    from panel.io import hold

    with hold():
        fn(arg)


def axis_title(name: str, number: int, share) -> str:
    """'PC 2 (7.1% of variance)': an axis of a map, with what share of the variance it shows (two
    significant digits: the kept components of a residual stream can hold well under 1%)."""
    return f"{name} {number}" + (f" ({100 * share:.2g}% of variance)" if share else "")


def map_key(noun: str, framed: str | None, outlined: str | None, ringed: str | None, outside: int) -> str:
    """The line under a map's caption saying what its marks mean (HTML; the parts are HTML too):
    the framed (focused) point, the outlined (focused) cluster, the ringed (selected) points and
    how many points lie beyond the first view."""
    plural = lambda n: f"{noun}{'s' if n != 1 else ''}"  # noqa: E731
    return ("<div class='lf-map-key'>"
            + (f"framed: {framed} · " if framed else "")
            + (f"outlined: {outlined} · " if outlined else "")
            + (f"ringed: {ringed} · " if ringed else "")
            + (f"<span class='lf-outside'>{outside} outlying {plural(outside)} beyond the view (Tukey's far-out "
               "fences): zoom out to see</span> · " if outside else "")
            + f"<span class='lf-hint-inline'>click a {noun} to focus it; lasso (toolbar) to select {noun}s</span></div>")


def clear_button(ctx, shown: bool, on_clear):
    """The map's "clear selection" button, shown while a selection is."""
    import panel as pn

    return ctx.part("clear", pn.widgets.Button, visible=shown, on_click=on_clear, init={
        "label": "clear selection", "color": "light", "width": 120, "css_classes": ["lf-clear-selection"]})


# --- lensframe export (views/js/runtime.js clusterMap; the ports of the map views) ------------------
KEY_OPEN = "<div class='lf-map-key'>"


def export_map_parts(ctx) -> dict:
    """The map's figure for an exported page's port, with its tap and lasso gestures."""
    cmap = ctx.keep("map", lambda: None)
    return {"map": (cmap.pane, ("tap", "selectiongeometry"))}


def key_tail(noun: str, outside: int) -> str:
    """map_key's HTML after its framed, outlined and ringed entries (a port writes those)."""
    return map_key(noun, None, None, None, outside)[len(KEY_OPEN):]


def map_export_bytes(n_points: int, heads: int, tips: int) -> int:
    """Planned bytes of a map's first render: the figure, its tools and mark layers, and per point
    x and y (float64), row and group (int64) as base64, four colour strings, and the hover's head
    and tip strings (`heads`, `tips`: their characters in all)."""
    return 19_500 + n_points * (2 * 11 + 2 * 11 + 4 * 10 + 2 * 3) + heads + tips
