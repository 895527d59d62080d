"""Small Panel components (JSComponent) the built-in views draw with.

Each renders plain HTML with stable CSS classes (lf-token, lf-cell, lf-head, lf-sample) so users
can style them and browser tests can find them; a click sends a message back to Python
(`on_click`), where the view turns it into a focus change.

Views update these components in place (ctx.part sets their params), and Panel does not run a
JSComponent's render() again when a param changes: each component redraws itself from
`model.on(<params>, ...)` (lfOnChange below), coalescing the several params one focus change sets
into one redraw.

Hover tips are drawn by the page (lfTips: one div.lf-tip per component, shown at the pointer for
the element under it with a data-tip attribute), not native `title` attributes, which show late,
unstyled and cut long text.
"""
from __future__ import annotations

import param
from panel.custom import JSComponent
from panel.pane import HTML

_BASE_CSS = """
:host { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 12px; }
.lf-scroll { overflow: auto; max-height: 100%; }
.lf-tip { position: fixed; z-index: 1000; display: none; pointer-events: none; max-width: 380px;
          padding: 4px 7px; border-radius: 4px; background: rgba(33, 37, 41, 0.94); color: #fff;
          font: 11px/1.35 ui-monospace, monospace; white-space: pre-wrap; overflow-wrap: anywhere;
          box-shadow: 0 2px 6px rgba(0, 0, 0, 0.25); }
"""

# Shared by every component's module (each _esm is compiled on its own, so each gets a copy).
_JS_COMMON = r"""
// The page's hover tip: one div per component, fixed at the pointer (fixed, not absolute: the
// cards clip their overflow, and a tip at a card's edge must not be cut).
function lfTips(el) {
  const tip = document.createElement('div');
  tip.className = 'lf-tip';
  tip.setAttribute('role', 'tooltip');
  el.appendChild(tip);
  const hide = () => { tip.style.display = 'none'; };
  const place = (e) => {
    const pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    let x = e.clientX + pad, y = e.clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, e.clientX - pad - w);
    if (y + h > window.innerHeight - 4) y = Math.max(4, e.clientY - pad - h);
    tip.style.left = x + 'px'; tip.style.top = y + 'px';
  };
  el.addEventListener('mouseover', (e) => {
    const t = e.target.closest ? e.target.closest('[data-tip]') : null;
    if (!t || !t.dataset.tip) { hide(); return; }
    tip.textContent = t.dataset.tip;
    tip.style.display = 'block';
    place(e);
  });
  el.addEventListener('mousemove', (e) => { if (tip.style.display === 'block') place(e); });
  el.addEventListener('mouseleave', hide);
  return tip;
}

// Redraw when any of `names` changes; one focus change sets several params in one message, so
// the redraw waits for the end of it (a microtask) and runs once.
function lfOnChange(model, names, fn) {
  let pending = false;
  model.on(names, () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => { pending = false; fn(); });
  });
}

// A token as shown in a cell: newlines as the return sign, the empty string as the empty set.
function lfShow(t) {
  return String(t).replace(/\n/g, '\u21b5') || '\u2205';
}
"""


def hv_bokeh():
    """HoloViews with its Bokeh backend loaded and current (loaded once per process, not once per
    plot: every view that draws with HoloViews asks here)."""
    import holoviews as hv

    if hv.Store.current_backend != "bokeh" or "bokeh" not in hv.Store.renderers:
        hv.extension("bokeh", logo=False)
    return hv


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
    """Tokens of one sample as inline chips; shade in [0, 1] colours them; tips (one per token,
    optional) replace the default hover text 'position i: "token"'; click -> index."""

    tokens = param.List(default=[])
    shade = param.List(default=[])
    tips = param.List(default=[])
    selected = param.Integer(default=-1)

    _esm = _JS_COMMON + r"""
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-tokens';
      box.addEventListener('click', (e) => {
        const s = e.target.closest('.lf-token');
        if (s) model.send_msg({index: Number(s.dataset.position)});
      });
      el.appendChild(box);
      lfTips(el);
      function draw() {
        box.replaceChildren(...model.tokens.map((t, i) => {
          const s = document.createElement('span');
          s.className = 'lf-token' + (i === model.selected ? ' lf-selected' : '');
          s.dataset.position = i;
          s.textContent = lfShow(t).replace(/ /g, '\u00a0');
          const v = model.shade[i];
          if (v !== undefined && v !== null) s.style.background = `rgba(214, 96, 77, ${Math.min(1, Math.max(0, v))})`;
          s.dataset.tip = model.tips[i] || `position ${i}: ${JSON.stringify(t)}`;
          return s;
        }));
      }
      draw();
      lfOnChange(model, ['tokens', 'shade', 'tips', 'selected'], draw);
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

    _esm = _JS_COMMON + r"""
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-samples lf-scroll';
      box.addEventListener('click', (e) => {
        const row = e.target.closest('.lf-sample');
        if (row) model.send_msg({index: Number(row.dataset.sample)});
      });
      el.appendChild(box);
      lfTips(el);
      function draw() {
        box.replaceChildren(...model.items.map((it) => {
          const row = document.createElement('div');
          row.className = 'lf-sample';
          row.dataset.sample = it.index;
          const idx = document.createElement('span'); idx.className = 'lf-index'; idx.textContent = it.index;
          row.appendChild(idx);
          if (it.label) { const b = document.createElement('span'); b.className = 'lf-label'; b.textContent = it.label; row.appendChild(b); }
          const t = document.createElement('span'); t.className = 'lf-preview'; t.textContent = it.text; row.appendChild(t);
          return row;
        }));
        // the tip gives the whole preview where the row cuts it
        for (const row of box.children) {
          if (row.scrollWidth > row.clientWidth) row.dataset.tip = row.querySelector('.lf-preview').textContent;
        }
        select();
      }
      // a new selection only moves the highlight: the list and its scroll position stay
      function select() {
        for (const row of box.querySelectorAll('.lf-sample.lf-selected')) row.classList.remove('lf-selected');
        const sel = box.querySelector(`.lf-sample[data-sample="${model.selected}"]`);
        if (!sel) return;
        sel.classList.add('lf-selected');
        const b = box.getBoundingClientRect(), r = sel.getBoundingClientRect();
        if (r.top < b.top || r.bottom > b.bottom) box.scrollTop += r.top - b.top - (b.height - r.height) / 2;
      }
      draw();
      lfOnChange(model, ['items'], draw);
      lfOnChange(model, ['selected'], select);
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-samples { height: 100%; }
    .lf-sample { padding: 3px 6px; cursor: pointer; white-space: nowrap; overflow: hidden;
                 text-overflow: ellipsis; border-bottom: 1px solid #eee; }
    .lf-sample:hover { background: #f2f6fc; color: #1d2330; }  /* dark text on a light row, in the dark theme too */
    .lf-sample.lf-selected { background: #dbe8fb; color: #1d2330; }
    .lf-index { color: #888; display: inline-block; min-width: 3em; }
    .lf-label { background: #eef; color: #335; border-radius: 8px; padding: 0 6px; margin-right: 6px; }
    """]


class HeatGrid(_Clickable):
    """A rows x cols table of coloured cells (values in [0, 1] or null), optional cell text and
    hover tips, a highlighted row/column/cell, axis titles; click -> (row, col).

    fit: "none" draws cells at cell_width x cell_height; "both" scales rows to the height and
    columns to the width the component is given, between the min_ and the plain sizes; "square"
    does the same with square cells. Sizes are px and count the line to the next cell. Where even
    the minimum does not fit, the grid scrolls with its header row and label column pinned, and
    the focused cell is brought into view (also when it first opens)."""

    row_labels = param.List(default=[])
    col_labels = param.List(default=[])
    row_tips = param.List(default=[])  # hover text of the row labels (default: the label)
    values = param.List(default=[])
    texts = param.List(default=[])
    tips = param.List(default=[])
    selected_row = param.Integer(default=-1)
    selected_col = param.Integer(default=-1)
    row_title = param.String(default="")  # axis titles
    col_title = param.String(default="")
    kind = param.String(default="grid")  # extra CSS class: lf-<kind>
    cell_width = param.Integer(default=40)
    cell_height = param.Integer(default=18)
    min_cell_width = param.Integer(default=40)
    min_cell_height = param.Integer(default=18)
    fit = param.Selector(default="none", objects=["none", "both", "square"])
    hue = param.String(default="31, 111, 209")
    vertical_cols = param.Boolean(default=False)  # column labels written top to bottom (narrow cells)

    _esm = _JS_COMMON + r"""
    export function render({ model, el }) {
      const part = (tag, cls) => { const e = document.createElement(tag); e.className = cls; return e; };
      const root = part('div', 'lf-grid-box');
      const xTitle = part('div', 'lf-axis lf-axis-x'), yTitle = part('div', 'lf-axis lf-axis-y');
      const body = part('div', 'lf-grid-body'), wrap = part('div', 'lf-grid-wrap');
      body.append(yTitle, wrap);
      root.append(xTitle, body);
      el.appendChild(root);
      lfTips(el);
      wrap.addEventListener('click', (e) => {
        const td = e.target.closest('td.lf-cell');
        if (td) model.send_msg({row: Number(td.dataset.row), col: Number(td.dataset.col)});
      });
      let table = null;

      function draw() {
        root.className = 'lf-grid-box lf-' + model.kind;
        xTitle.textContent = model.col_title; xTitle.hidden = !model.col_title;
        yTitle.textContent = model.row_title; yTitle.hidden = !model.row_title;
        const t = document.createElement('table');
        t.className = 'lf-grid' + (model.vertical_cols ? ' lf-vertical' : '');
        const head = document.createElement('tr');
        head.appendChild(part('th', 'lf-corner'));
        model.col_labels.forEach((c, j) => {
          const th = part('th', 'lf-col' + (j === model.selected_col ? ' lf-selected' : ''));
          th.textContent = lfShow(c); th.dataset.col = j; th.dataset.tip = `${j}: ${JSON.stringify(c)}`;
          head.appendChild(th);
        });
        t.appendChild(head);
        model.row_labels.forEach((r, i) => {
          const tr = document.createElement('tr');
          const th = part('th', 'lf-row' + (i === model.selected_row ? ' lf-selected' : ''));
          th.textContent = r; th.dataset.row = i; th.dataset.tip = model.row_tips[i] || String(r);
          tr.appendChild(th);
          const vals = model.values[i] || [], texts = model.texts[i] || [], tips = model.tips[i] || [];
          model.col_labels.forEach((_, j) => {
            let cls = 'lf-cell';
            if (j === model.selected_col) cls += ' lf-focus-col';
            if (i === model.selected_row) cls += ' lf-focus-row';
            if (i === model.selected_row && j === model.selected_col) cls += ' lf-selected';
            const td = part('td', cls);
            td.dataset.row = i; td.dataset.col = j;
            const v = vals[j];
            if (v === null || v === undefined) { td.classList.add('lf-empty'); }
            else {
              td.style.background = `rgba(${model.hue}, ${Math.min(1, Math.max(0, v)).toFixed(3)})`;
              if (v > 0.55) td.style.color = 'white';
            }
            if (texts[j] !== undefined) td.textContent = String(texts[j]).replace(/\n/g, '\u21b5');
            if (tips[j]) td.dataset.tip = tips[j];
            tr.appendChild(td);
          });
          t.appendChild(tr);
        });
        wrap.replaceChildren(t);
        table = t;
        size(t, model.cell_width, model.cell_height);
        fit();
      }

      // Cells of cw x ch px, of which the last bw (bh) px are a white line to the next cell, when
      // cells are large enough to spare it. Row labels scale with the rows down to 8 px type; rows thinner than
      // that label every k-th row (and the focused one), the others keep their hover tip.
      function size(t, cw, ch, bw = 1, bh = 1, bare = false) {
        t.classList.toggle('lf-bare-cols', bare);
        t.style.setProperty('--lf-cw', cw + 'px');
        t.style.setProperty('--lf-ch', ch + 'px');
        t.style.setProperty('--lf-bw', bw + 'px');
        t.style.setProperty('--lf-bh', bh + 'px');
        t.style.setProperty('--lf-fs', Math.max(7, Math.min(11, ch - 3)) + 'px');
        t.style.setProperty('--lf-ls', Math.max(8, Math.min(11, ch - 1)) + 'px');
        t.classList.toggle('lf-tiny', ch < 10 || cw < 10);  // no text in cells this small: the tips have it
        const sparse = ch < 9;
        t.classList.toggle('lf-sparse', sparse);
        const k = sparse ? Math.ceil(10 / ch) : 1, n = t.rows.length - 1;
        const sel = model.selected_row;
        for (let i = 0; i < n; i++) {
          // counted from the last row, so the first rows (lens: embed, block 1, ...) keep theirs
          const crowded = (sel >= 0 && Math.abs(i - sel) < k) || (n - 1 - i) % k !== 0;
          const quiet = sparse && i !== sel && crowded;
          t.rows[i + 1].cells[0].classList.toggle('lf-quiet', quiet);
        }
      }

      // Rows sized to the height the card gives, columns to its width, within the min/max sizes.
      // Measured, not assumed: the header and label sizes depend on the font, so fit twice.
      function fit() {
        if (!table) return;
        const nR = model.row_labels.length, nC = model.col_labels.length;
        const W = wrap.clientWidth, H = wrap.clientHeight;
        if (model.fit !== 'none' && nR && nC && W > 0 && H > 0) {
          const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
          // Columns too narrow for their (vertical) labels go bare: the labels would overlap,
          // and the header they need would take the rows' height. Once bare within a fit, bare.
          table.classList.remove('lf-bare-cols');
          let bare = false;
          for (let pass = 0; pass < 3; pass++) {
            const headH = table.rows[0].offsetHeight, labelW = table.rows[0].cells[0].offsetWidth;
            // a cell's size counts the line after it (the cells are border-box)
            let ch = Math.floor((H - headH) / nR), cw = Math.floor((W - labelW) / nC);
            if (model.fit === 'square') ch = cw = Math.min(ch, cw);
            ch = clamp(ch, model.min_cell_height, model.cell_height);
            cw = clamp(cw, model.min_cell_width, model.cell_width);
            if (model.fit === 'square') ch = cw = Math.min(ch, cw);
            bare = bare || (model.vertical_cols && cw < 9);
            size(table, cw, ch, cw < 8 ? 0 : 1, ch < 8 ? 0 : 1, bare);
          }
        }
        reveal();
      }

      // Bring the focused cell (or column, or row) into view, clear of the pinned header and labels.
      function reveal() {
        const sel = table.querySelector('td.lf-selected') || table.querySelector('th.lf-col.lf-selected')
                    || table.querySelector('th.lf-row.lf-selected');
        if (!sel) return;
        const w = wrap.getBoundingClientRect(), r = sel.getBoundingClientRect();
        const headH = table.rows[0].offsetHeight, labelW = table.rows[0].cells[0].offsetWidth;
        if (!sel.classList.contains('lf-row')) {
          const lo = w.left + labelW, hi = w.left + wrap.clientWidth;
          if (r.left < lo || r.right > hi) wrap.scrollLeft += (r.left + r.right) / 2 - (lo + hi) / 2;
        }
        if (!sel.classList.contains('lf-col')) {
          const lo = w.top + headH, hi = w.top + wrap.clientHeight;
          if (r.top < lo || r.bottom > hi) wrap.scrollTop += (r.top + r.bottom) / 2 - (lo + hi) / 2;
        }
      }

      draw();
      lfOnChange(model, ['row_labels', 'col_labels', 'row_tips', 'values', 'texts', 'tips', 'selected_row',
                         'selected_col', 'row_title', 'col_title', 'kind', 'cell_width', 'cell_height',
                         'min_cell_width', 'min_cell_height', 'fit', 'hue', 'vertical_cols'], draw);
      let queued = false;
      const observer = new ResizeObserver(() => {
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; fit(); });
      });
      observer.observe(wrap);
      model.on('remove', () => observer.disconnect());
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-grid-box { display: flex; flex-direction: column; width: 100%; height: 100%; min-height: 0; }
    .lf-axis { flex: none; color: #666; font-size: 11px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
    .lf-axis[hidden] { display: none; }
    .lf-axis-x { padding: 0 0 1px 16px; }
    .lf-axis-y { writing-mode: vertical-rl; transform: rotate(180deg); text-align: center; padding-left: 1px; }
    .lf-grid-body { display: flex; flex: 1 1 auto; min-height: 0; min-width: 0; }
    .lf-grid-wrap { flex: 1 1 auto; min-width: 0; min-height: 0; overflow: auto; }
    .lf-grid { border-collapse: separate; border-spacing: 0; font-family: ui-monospace, monospace; font-size: 11px; }
    .lf-grid th { font-weight: normal; color: #555; padding: 0 3px; white-space: pre; overflow: hidden;
                  text-overflow: ellipsis; background: #fff; font-size: 10px; line-height: 1; }
    .lf-grid th.lf-selected { color: #1f6fd1; font-weight: bold; }
    /* the header row and the label column stay in view when the grid scrolls; the corner above both */
    .lf-grid th.lf-col { position: sticky; top: 0; z-index: 3; max-width: var(--lf-cw); min-width: var(--lf-cw);
                         width: var(--lf-cw); box-sizing: border-box; padding: 1px 0 2px; border-bottom: 1px solid #ddd;
                         border-right: var(--lf-bw) solid #fff; }
    .lf-grid th.lf-row { position: sticky; left: 0; z-index: 1; text-align: right; max-width: 90px;
                         height: var(--lf-ch); border-bottom: var(--lf-bh) solid #fff; box-shadow: inset -1px 0 #ddd;
                         font-size: var(--lf-ls); }
    .lf-grid.lf-sparse th.lf-row { line-height: var(--lf-ch); overflow: visible; }
    .lf-grid.lf-sparse th.lf-row:not(.lf-quiet) { z-index: 2; }  /* above the blank labels around it */
    .lf-grid th.lf-row.lf-quiet { color: transparent; }
    .lf-grid.lf-bare-cols th.lf-col { font-size: 0; height: 3px; padding: 0; }
    .lf-grid th.lf-corner { position: sticky; top: 0; left: 0; z-index: 4; border-bottom: 1px solid #ddd;
                            box-shadow: inset -1px 0 #ddd; }
    .lf-grid.lf-vertical th.lf-col { writing-mode: vertical-rl; max-height: 64px; vertical-align: bottom;
                                     text-align: left; }
    .lf-cell { box-sizing: border-box; width: var(--lf-cw); min-width: var(--lf-cw); max-width: var(--lf-cw);
               height: var(--lf-ch); padding: 0 1px; border-right: var(--lf-bw) solid #fff;
               border-bottom: var(--lf-bh) solid #fff; overflow: hidden; white-space: pre; text-overflow: ellipsis;
               cursor: pointer; text-align: center; font-size: var(--lf-fs); line-height: 1; }
    .lf-grid.lf-tiny .lf-cell { font-size: 0; }
    .lf-cell.lf-empty { background: #f6f6f6; }
    .lf-cell.lf-focus-row { box-shadow: inset 0 1px #1f6fd1, inset 0 -1px #1f6fd1; }
    .lf-cell.lf-focus-col { box-shadow: inset 1px 0 #1f6fd1, inset -1px 0 #1f6fd1; }
    .lf-cell.lf-focus-row.lf-focus-col { box-shadow: inset 0 1px #1f6fd1, inset 0 -1px #1f6fd1, inset 1px 0 #1f6fd1,
                                                     inset -1px 0 #1f6fd1; }
    .lf-cell.lf-selected { outline: 2px solid #e4572e; outline-offset: -2px; }
    .lf-attention .lf-cell { padding: 0; border-color: transparent; }
    """]


class BarList(_Clickable):
    """Rows of (label, bar in [-1, 1], note), e.g. neurons ranked by activation; click -> key.
    A note that does not fit beside its bar wraps under it rather than being cut."""

    items = param.List(default=[])  # [{"key", "label", "bar", "note", "tip" (optional hover text)}]
    selected = param.Integer(default=-1)
    kind = param.String(default="list")

    _esm = _JS_COMMON + r"""
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.addEventListener('click', (e) => {
        const row = e.target.closest('.lf-bar-row');
        if (row) model.send_msg({key: Number(row.dataset.key)});
      });
      el.appendChild(box);
      lfTips(el);
      function draw() {
        box.className = 'lf-bars lf-scroll lf-' + model.kind + '-list';
        box.replaceChildren(...model.items.map((it) => {
          const row = document.createElement('div');
          row.className = 'lf-bar-row lf-' + model.kind + '-item' + (it.key === model.selected ? ' lf-selected' : '');
          row.dataset.key = it.key;
          row.dataset.tip = it.tip || (it.label + '  ' + (it.note || ''));
          const lab = document.createElement('span'); lab.className = 'lf-bar-label'; lab.textContent = it.label;
          const track = document.createElement('span'); track.className = 'lf-bar-track';
          const bar = document.createElement('span'); bar.className = 'lf-bar' + (it.bar < 0 ? ' lf-neg' : '');
          bar.style.width = (Math.min(1, Math.abs(it.bar)) * 100).toFixed(1) + '%';
          track.appendChild(bar);
          const note = document.createElement('span'); note.className = 'lf-bar-note'; note.textContent = it.note || '';
          row.append(lab, track, note);
          return row;
        }));
      }
      draw();
      lfOnChange(model, ['items', 'selected', 'kind'], draw);
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-bars { height: 100%; font-family: ui-monospace, monospace; font-size: 11px; }
    .lf-bar-row { display: flex; flex-wrap: wrap; align-items: center; gap: 0 6px; padding: 1px 4px; cursor: pointer; }
    .lf-bar-row:hover { background: #f2f6fc; color: #1d2330; }
    .lf-bar-row.lf-selected { background: #dbe8fb; color: #1d2330; }
    .lf-bar-label { flex: none; min-width: 4.5em; text-align: right; color: #333; white-space: pre; }
    .lf-bar-track { flex: 1 1 40px; min-width: 30px; max-width: 90px; height: 9px; background: #f0f0f0; border-radius: 2px; }
    .lf-bar { display: block; height: 100%; background: #1f6fd1; border-radius: 2px; }
    .lf-bar.lf-neg { background: #d6604d; }
    .lf-bar-note { flex: none; white-space: pre; color: #444; }
    """]


class HeadPicker(_Clickable):
    """Thumbnails of every head's attention pattern on canvases, as large as the box they are
    given allows (up to `size` px) in as many columns as suit it; tips (one per head, optional)
    are their hover text; click -> head."""

    # JSON of [head][query][key]: one string, which Bokeh sends as it is, where a nested list has
    # each of its thousands of numbers visited for model references on every change (half of an
    # attention view's update time, profiled)
    patterns = param.String(default="[]")
    tips = param.List(default=[])
    selected = param.Integer(default=0)
    size = param.Integer(default=64)

    _esm = _JS_COMMON + r"""
    export function render({ model, el }) {
      const box = document.createElement('div');
      box.className = 'lf-heads';
      box.addEventListener('click', (e) => {
        const item = e.target.closest('.lf-head');
        if (item) model.send_msg({head: Number(item.dataset.head)});
      });
      el.appendChild(box);
      lfTips(el);
      function draw() {
        box.replaceChildren(...JSON.parse(model.patterns || '[]').map((p, h) => {
          const item = document.createElement('div');
          item.className = 'lf-head' + (h === model.selected ? ' lf-selected' : '');
          item.dataset.head = h;
          item.dataset.tip = model.tips[h] || `head ${h}`;
          const c = document.createElement('canvas');
          const n = p.length; c.width = n; c.height = n;
          const ctx = c.getContext('2d'); const img = ctx.createImageData(n, n);
          for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
            const v = Math.sqrt(Math.max(0, Math.min(1, p[i][j]))); const k = 4 * (i * n + j);
            img.data[k] = 255 - 224 * v; img.data[k + 1] = 255 - 144 * v; img.data[k + 2] = 255 - 46 * v; img.data[k + 3] = 255;
          }
          ctx.putImageData(img, 0, 0);
          const cap = document.createElement('div'); cap.textContent = 'head ' + h;
          item.append(c, cap);
          return item;
        }));
        fit();
      }
      // the largest thumbnail (up to model.size) for which every head fits the box: try each
      // number of columns; with no height to fit (a box sized by its content) the width decides
      function fit() {
        const n = box.children.length, W = el.clientWidth, H = el.clientHeight;
        const cap = 16, extra = 10;  // caption line; padding, border and gap around each thumbnail
        let s = model.size;
        if (n && W > 0) {
          let best = 0;
          for (let cols = 1; cols <= n; cols++) {
            const rows = Math.ceil(n / cols);
            const w = Math.floor(W / cols) - extra, h = H > 0 ? Math.floor(H / rows) - extra - cap : w;
            best = Math.max(best, Math.min(w, h));
          }
          s = Math.max(20, Math.min(model.size, best));
        }
        for (const c of box.querySelectorAll('canvas')) { c.style.width = s + 'px'; c.style.height = s + 'px'; }
      }
      draw();
      lfOnChange(model, ['patterns', 'tips', 'selected', 'size'], draw);
      let queued = false;
      const observer = new ResizeObserver(() => {
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => { queued = false; fit(); });
      });
      observer.observe(el);
      model.on('remove', () => observer.disconnect());
    }
    """
    _stylesheets = [_BASE_CSS + """
    .lf-heads { display: flex; flex-wrap: wrap; gap: 2px; align-content: flex-start; }
    .lf-head { cursor: pointer; text-align: center; color: #555; padding: 1px; border: 2px solid transparent;
               font-size: 11px; line-height: 14px; }
    .lf-head canvas { display: block; image-rendering: pixelated; border: 1px solid #ccc; }
    .lf-head.lf-selected { border-color: #1f6fd1; color: #1f6fd1; }
    """]
