"""Small Panel components (JSComponent) the built-in views draw with.

Each renders plain HTML with stable CSS classes (lf-token, lf-cell, lf-head, lf-sample) so users
can style them and browser tests can find them; a click sends a message back to Python
(`on_click`), where the view turns it into a focus change.
"""
from __future__ import annotations

import param
from panel.custom import JSComponent
from panel.pane import HTML

_BASE_CSS = """
:host { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 12px; }
.lf-scroll { overflow: auto; max-height: 100%; }
"""


def _atomically(fn, data: dict) -> None:
    """Run a click's focus change with document updates held, so every linked view changes in
    one step (no view shows the new position over the old sample while another computes)."""
    from panel.io import hold

    with hold():
        fn(**data)


class PatchedHTML(HTML):
    """An HTML pane whose text changes are sent alone. Panel's own update re-sends every
    property, stylesheets included, which builds new Bokeh stylesheet models on each change."""

    def _update(self, ref: str, model) -> None:
        props = self._get_properties(model.document)
        model.update(**{k: v for k, v in props.items() if k != "stylesheets" and getattr(model, k, None) != v})


class _Clickable(JSComponent):
    """Routes `model.send_msg({...})` from the browser to the on_click callback. The callback is
    an attribute, not a registration, so a view that updates the component in place (ctx.part)
    swaps it for one that knows the new data."""

    __abstract = True

    def __init__(self, on_click=None, **params):
        super().__init__(**params)
        self.on_click = on_click
        self.on_msg(self._clicked)

    def _clicked(self, event) -> None:
        if self.on_click is not None:
            _atomically(self.on_click, event.data)


class TokenStrip(_Clickable):
    """Tokens of one sample as inline chips; shade in [0, 1] colours them; click -> index."""

    tokens = param.List(default=[])
    shade = param.List(default=[])
    selected = param.Integer(default=-1)

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-tokens';
      model.tokens.forEach((t, i) => {
        const s = document.createElement('span');
        s.className = 'lf-token' + (i === model.selected ? ' lf-selected' : '');
        s.dataset.position = i;
        s.textContent = t.replace(/\\n/g, '\\u21b5').replace(/ /g, '\\u00a0') || '\\u2205';
        const v = model.shade[i];
        if (v !== undefined && v !== null) s.style.background = `rgba(214, 96, 77, ${Math.min(1, Math.max(0, v))})`;
        s.title = `position ${i}: ${JSON.stringify(t)}`;
        s.addEventListener('click', () => model.send_msg({index: i}));
        box.appendChild(s);
      });
      el.appendChild(box);
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-tokens { line-height: 2.0; font-family: ui-monospace, monospace; }
    .lf-token { display: inline-block; line-height: 1.4; margin: 2px 1px; padding: 0 1px; border-radius: 3px; cursor: pointer;
                border: 1px solid #ddd; white-space: pre; }
    .lf-token:hover { border-color: #333; }
    .lf-token.lf-selected { outline: 2px solid #1f6fd1; border-color: #1f6fd1; }
    """]


class SampleList(_Clickable):
    """A scrollable list of dataset samples (label badge + preview); click -> index."""

    items = param.List(default=[])  # [{"index", "label", "text"}]
    selected = param.Integer(default=-1)

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-samples lf-scroll';
      model.items.forEach((it) => {
        const row = document.createElement('div');
        row.className = 'lf-sample' + (it.index === model.selected ? ' lf-selected' : '');
        row.dataset.sample = it.index;
        const idx = document.createElement('span'); idx.className = 'lf-index'; idx.textContent = it.index;
        row.appendChild(idx);
        if (it.label) { const b = document.createElement('span'); b.className = 'lf-label'; b.textContent = it.label; row.appendChild(b); }
        const t = document.createElement('span'); t.className = 'lf-preview'; t.textContent = it.text; row.appendChild(t);
        row.addEventListener('click', () => model.send_msg({index: it.index}));
        box.appendChild(row);
      });
      el.appendChild(box);
      const sel = box.querySelector('.lf-selected');
      if (sel) sel.scrollIntoView({block: 'nearest'});
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-samples { height: 100%; }
    .lf-sample { padding: 3px 6px; cursor: pointer; white-space: nowrap; overflow: hidden;
                 text-overflow: ellipsis; border-bottom: 1px solid #eee; }
    .lf-sample:hover { background: #f2f6fc; }
    .lf-sample.lf-selected { background: #dbe8fb; }
    .lf-index { color: #888; display: inline-block; min-width: 3em; }
    .lf-label { background: #eef; color: #335; border-radius: 8px; padding: 0 6px; margin-right: 6px; }
    """]


class HeatGrid(_Clickable):
    """A rows x cols table of coloured cells (values in [0, 1] or null), optional cell text and
    tooltips, a highlighted row/column/cell; click -> (row, col)."""

    row_labels = param.List(default=[])
    col_labels = param.List(default=[])
    values = param.List(default=[])
    texts = param.List(default=[])
    tips = param.List(default=[])
    selected_row = param.Integer(default=-1)
    selected_col = param.Integer(default=-1)
    kind = param.String(default="grid")  # extra CSS class: lf-<kind>
    cell_width = param.Integer(default=40)
    cell_height = param.Integer(default=18)
    hue = param.String(default="31, 111, 209")
    vertical_cols = param.Boolean(default=False)  # column labels written top to bottom (narrow cells)

    _esm = """
    export function render({ model, el }) {
      const wrap = document.createElement('div');
      wrap.className = 'lf-grid-wrap lf-scroll lf-' + model.kind;
      const table = document.createElement('table');
      table.className = 'lf-grid' + (model.vertical_cols ? ' lf-vertical' : '');
      const head = document.createElement('tr');
      head.appendChild(document.createElement('th'));
      model.col_labels.forEach((c, j) => {
        const th = document.createElement('th');
        th.className = 'lf-col' + (j === model.selected_col ? ' lf-selected' : '');
        th.textContent = c.replace(/\\n/g, '\\u21b5'); th.title = `${j}: ${JSON.stringify(c)}`;
        head.appendChild(th);
      });
      table.appendChild(head);
      model.row_labels.forEach((r, i) => {
        const tr = document.createElement('tr');
        const th = document.createElement('th');
        th.className = 'lf-row' + (i === model.selected_row ? ' lf-selected' : '');
        th.textContent = r; tr.appendChild(th);
        const vals = model.values[i] || [], texts = model.texts[i] || [], tips = model.tips[i] || [];
        model.col_labels.forEach((_, j) => {
          const td = document.createElement('td');
          let cls = 'lf-cell';
          if (j === model.selected_col) cls += ' lf-focus-col';
          if (i === model.selected_row) cls += ' lf-focus-row';
          if (i === model.selected_row && j === model.selected_col) cls += ' lf-selected';
          td.className = cls;
          td.dataset.row = i; td.dataset.col = j;
          const v = vals[j];
          if (v === null || v === undefined) { td.classList.add('lf-empty'); }
          else {
            td.style.background = `rgba(${model.hue}, ${Math.min(1, Math.max(0, v)).toFixed(3)})`;
            if (v > 0.55) td.style.color = 'white';
          }
          td.style.minWidth = model.cell_width + 'px'; td.style.maxWidth = model.cell_width + 'px';
          td.style.height = model.cell_height + 'px';
          if (texts[j] !== undefined) td.textContent = texts[j].replace(/\\n/g, '\\u21b5');
          if (tips[j]) td.title = tips[j];
          td.addEventListener('click', () => model.send_msg({row: i, col: j}));
          tr.appendChild(td);
        });
        table.appendChild(tr);
      });
      wrap.appendChild(table);
      el.appendChild(wrap);
      // a re-render starts scrolled to the top-left: bring the focused cell back into view
      requestAnimationFrame(() => {
        const sel = wrap.querySelector('td.lf-selected') || wrap.querySelector('th.lf-col.lf-selected')
                    || wrap.querySelector('th.lf-row.lf-selected');
        if (!sel) return;
        const w = wrap.getBoundingClientRect(), r = sel.getBoundingClientRect();
        if (r.left < w.left + 60 || r.right > w.right) wrap.scrollLeft += r.left - w.left - (w.width - r.width) / 2;
        if (r.top < w.top + 20 || r.bottom > w.bottom) wrap.scrollTop += r.top - w.top - (w.height - r.height) / 2;
      });
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-grid-wrap { height: 100%; }
    .lf-grid { border-collapse: collapse; font-family: ui-monospace, monospace; font-size: 11px; }
    .lf-grid th { font-weight: normal; color: #555; padding: 0 3px; white-space: pre; max-width: 60px;
                  overflow: hidden; text-overflow: ellipsis; }
    .lf-grid th.lf-selected { color: #1f6fd1; font-weight: bold; }
    .lf-grid.lf-vertical th.lf-col { writing-mode: vertical-rl; max-height: 70px; max-width: none;
                                     vertical-align: bottom; padding: 2px 0; }
    .lf-cell { border: 1px solid #fff; padding: 0 2px; overflow: hidden; white-space: pre;
               text-overflow: ellipsis; cursor: pointer; text-align: center; }
    .lf-cell.lf-empty { background: #f6f6f6; }
    .lf-grid th.lf-col { position: sticky; top: 0; background: #fff; z-index: 1; }
    .lf-grid th.lf-row { position: sticky; left: 0; background: #fff; z-index: 1; text-align: right; }
    .lf-cell.lf-focus-row { box-shadow: inset 0 1px #1f6fd1, inset 0 -1px #1f6fd1; }
    .lf-cell.lf-focus-col { border-left: 1px solid #1f6fd1; border-right: 1px solid #1f6fd1; }
    .lf-cell.lf-selected { outline: 2px solid #e4572e; outline-offset: -2px; }
    .lf-attention .lf-cell { padding: 0; border: 0; }
    """]


class BarList(_Clickable):
    """Rows of (label, bar in [-1, 1], note), e.g. neurons ranked by activation; click -> key."""

    items = param.List(default=[])  # [{"key", "label", "bar", "note"}]
    selected = param.Integer(default=-1)
    kind = param.String(default="list")

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-bars lf-scroll lf-' + model.kind + '-list';
      model.items.forEach((it) => {
        const row = document.createElement('div');
        row.className = 'lf-bar-row lf-' + model.kind + '-item' + (it.key === model.selected ? ' lf-selected' : '');
        row.dataset.key = it.key; row.title = it.label + '  ' + (it.note || '');
        const lab = document.createElement('span'); lab.className = 'lf-bar-label'; lab.textContent = it.label;
        const track = document.createElement('span'); track.className = 'lf-bar-track';
        const bar = document.createElement('span'); bar.className = 'lf-bar' + (it.bar < 0 ? ' lf-neg' : '');
        bar.style.width = (Math.min(1, Math.abs(it.bar)) * 100).toFixed(1) + '%';
        track.appendChild(bar);
        const note = document.createElement('span'); note.className = 'lf-bar-note'; note.textContent = it.note || '';
        row.appendChild(lab); row.appendChild(track); row.appendChild(note);
        row.addEventListener('click', () => model.send_msg({key: it.key}));
        box.appendChild(row);
      });
      el.appendChild(box);
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-bars { height: 100%; font-family: ui-monospace, monospace; font-size: 11px; }
    .lf-bar-row { display: flex; align-items: center; gap: 6px; padding: 1px 4px; cursor: pointer; }
    .lf-bar-row:hover { background: #f2f6fc; }
    .lf-bar-row.lf-selected { background: #dbe8fb; }
    .lf-bar-label { min-width: 4.5em; text-align: right; color: #333; }
    .lf-bar-track { flex: 0 0 90px; height: 9px; background: #f0f0f0; border-radius: 2px; }
    .lf-bar { display: block; height: 100%; background: #1f6fd1; border-radius: 2px; }
    .lf-bar.lf-neg { background: #d6604d; }
    .lf-bar-note { white-space: pre; overflow: hidden; text-overflow: ellipsis; color: #444; }
    """]


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd"]


class ScatterMap(JSComponent):
    """A 2-D map of points coloured by group, with a legend; a click on a point sends
    {"key": ...}, on a legend entry {"group": ...}."""

    points = param.List(default=[])  # [{"key", "x", "y", "group": int, "title"}]
    groups = param.List(default=[])  # legend labels, by group index (None: "untagged" grey)
    selected = param.Integer(default=-1)  # a point key
    selected_group = param.Integer(default=-1)
    kind = param.String(default="map")
    palette = param.List(default=PALETTE)

    _esm = """
    export function render({ model, el }) {
      const W = 360, H = 260, pad = 10, ns = 'http://www.w3.org/2000/svg';
      const box = document.createElement('div'); box.className = 'lf-map lf-' + model.kind;
      const svg = document.createElementNS(ns, 'svg'); svg.setAttribute('width', W); svg.setAttribute('height', H);
      const xs = model.points.map(p => p.x), ys = model.points.map(p => p.y);
      const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
      const sx = v => pad + (W - 2 * pad) * (v - x0) / ((x1 - x0) || 1);
      const sy = v => H - pad - (H - 2 * pad) * (v - y0) / ((y1 - y0) || 1);
      const color = g => (g === null || g < 0) ? '#bbb' : model.palette[g % model.palette.length];
      model.points.forEach(p => {
        const c = document.createElementNS(ns, 'circle');
        const chosen = p.key === model.selected, inGroup = model.selected_group >= 0 && p.group === model.selected_group;
        c.setAttribute('cx', sx(p.x)); c.setAttribute('cy', sy(p.y)); c.setAttribute('r', chosen ? 6 : 3.5);
        c.setAttribute('fill', color(p.group)); c.setAttribute('fill-opacity', model.selected_group >= 0 && !inGroup ? 0.25 : 0.85);
        if (chosen) { c.setAttribute('stroke', '#000'); c.setAttribute('stroke-width', 2); }
        c.setAttribute('class', 'lf-point' + (chosen ? ' lf-selected' : ''));
        c.dataset.key = p.key; c.dataset.group = p.group;
        const t = document.createElementNS(ns, 'title'); t.textContent = p.title; c.appendChild(t);
        c.addEventListener('click', () => model.send_msg({key: p.key}));
        svg.appendChild(c);
      });
      box.appendChild(svg);
      const legend = document.createElement('div'); legend.className = 'lf-legend';
      model.groups.forEach((g, i) => {
        const item = document.createElement('span');
        item.className = 'lf-legend-item' + (i === model.selected_group ? ' lf-selected' : '');
        item.dataset.group = i;
        const dot = document.createElement('span'); dot.className = 'lf-dot'; dot.style.background = color(g === null ? -1 : i);
        item.appendChild(dot); item.appendChild(document.createTextNode(g === null ? 'untagged' : g));
        item.addEventListener('click', () => model.send_msg({group: i}));
        legend.appendChild(item);
      });
      box.appendChild(legend);
      el.appendChild(box);
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-map svg { border: 1px solid #eee; }
    .lf-point { cursor: pointer; }
    .lf-legend { display: flex; flex-wrap: wrap; gap: 4px 10px; margin-top: 4px; }
    .lf-legend-item { cursor: pointer; white-space: nowrap; }
    .lf-legend-item.lf-selected { font-weight: bold; text-decoration: underline; }
    .lf-dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 3px; }
    """]

    def __init__(self, on_point=None, on_group=None, **params):
        super().__init__(**params)

        def route(event):
            data = event.data
            if "key" in data and on_point:
                _atomically(on_point, {"key": data["key"]})
            elif "group" in data and on_group:
                _atomically(on_group, {"group": data["group"]})

        self.on_msg(route)


def histogram_svg(counts, edges, marker: float | None = None, width: int = 260, height: int = 60,
                  probe: float | None = None) -> str:
    """A small inline SVG histogram (log counts), with an optional marker at one value (red) and
    one at a probe's value (green, dashed)."""
    import math

    n = len(counts)
    top = max((math.log1p(c) for c in counts), default=1) or 1
    bw = width / max(n, 1)
    bars = "".join(
        f"<rect x='{i * bw:.1f}' y='{height - height * math.log1p(c) / top:.1f}' width='{max(bw - 1, 1):.1f}' "
        f"height='{height * math.log1p(c) / top:.1f}' fill='#1f6fd1'><title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}</title></rect>"
        for i, c in enumerate(counts))
    mark = ""
    if marker is not None:
        idx = sum(1 for e in edges[1:-1] if marker >= e)
        x = (idx + 0.5) * bw
        mark = f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height}' stroke='#e4572e' stroke-width='2'/>"
    if probe is not None:
        idx = sum(1 for e in edges[1:-1] if probe >= e)
        x = (idx + 0.5) * bw
        mark += (f"<line class='lf-hist-probe' x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{height}' stroke='#2e9e4f' "
                 f"stroke-width='2' stroke-dasharray='4 2'/>")
    return (f"<svg class='lf-hist' width='{width}' height='{height + 14}'>{bars}{mark}"
            f"<text x='0' y='{height + 12}' font-size='10'>{edges[0]:.3g}</text>"
            f"<text x='{width}' y='{height + 12}' font-size='10' text-anchor='end'>{edges[-1]:.3g}</text></svg>")


class HeadPicker(_Clickable):
    """Thumbnails of every head's attention pattern on canvases; click -> head."""

    patterns = param.List(default=[])  # [head][query][key]
    selected = param.Integer(default=0)
    size = param.Integer(default=64)

    _esm = """
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-heads';
      model.patterns.forEach((p, h) => {
        const item = document.createElement('div');
        item.className = 'lf-head' + (h === model.selected ? ' lf-selected' : '');
        item.dataset.head = h;
        const c = document.createElement('canvas');
        const n = p.length; c.width = n; c.height = n;
        c.style.width = model.size + 'px'; c.style.height = model.size + 'px';
        const ctx = c.getContext('2d'); const img = ctx.createImageData(n, n);
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
          const v = Math.sqrt(Math.max(0, Math.min(1, p[i][j]))); const k = 4 * (i * n + j);
          img.data[k] = 255 - 224 * v; img.data[k + 1] = 255 - 144 * v; img.data[k + 2] = 255 - 46 * v; img.data[k + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        const cap = document.createElement('div'); cap.textContent = 'head ' + h;
        item.appendChild(c); item.appendChild(cap);
        item.addEventListener('click', () => model.send_msg({head: h}));
        box.appendChild(item);
      });
      el.appendChild(box);
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-heads { display: flex; flex-wrap: wrap; gap: 6px; }
    .lf-head { cursor: pointer; text-align: center; color: #555; padding: 2px; border: 2px solid transparent; }
    .lf-head canvas { image-rendering: pixelated; border: 1px solid #ccc; }
    .lf-head.lf-selected { border-color: #1f6fd1; color: #1f6fd1; }
    """]
