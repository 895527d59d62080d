// lensframe export: the page's shared focus and the helpers every view's JS port uses.
//
// An exported page is the served page's first render (Bokeh models, inline), plus this runtime
// and one small port per exportable view (views/js/<type>.js). A click in a component reaches
// LF.click (a Bokeh CustomJS on the component's data_event); the port turns it into focus fields
// exactly as the view's Python on_click does; LF.set updates the focus and calls update() of each
// view that reads a changed field (its pins left out), which sets its components' props and HTML
// exactly as the view's Python render() would. Data: <script type="application/json"> blocks,
// arrays as base64 of little-endian typed arrays (decoded on first use).
window.LF = (() => {
  const ports = {};      // view type -> setup(api)
  const views = [];      // {id, reads, pin, update}
  let page = null;       // the export's header: focus, views, samples
  const focus = {};

  function define(type, setup) { ports[type] = setup; }

  function json(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  const TYPES = {uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int8: Int8Array,
                 int16: Int16Array, int32: Int32Array, float32: Float32Array, float64: Float64Array};
  function bytes(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64);
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  // {dtype, shape, b64} -> a typed array (decoded once, when first read)
  function arrays(packed) {
    const out = {};
    for (const [name, a] of Object.entries(packed || {})) {
      let value = null;
      Object.defineProperty(out, name, {enumerable: true, get() {
        if (value === null) {
          const raw = bytes(a.b64);
          value = new TYPES[a.dtype](raw.buffer, raw.byteOffset, raw.byteLength / TYPES[a.dtype].BYTES_PER_ELEMENT);
        }
        return value;
      }});
    }
    return out;
  }

  // --- Python's formatting, so the page shows the served page's text ------------------------
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
                              .replace(/"/g, '&quot;').replace(/'/g, '&#x27;');   // html.escape
  // Panel's HTML pane model holds its text escaped (Panel escapes it in Python)
  const setHtml = (model, html) => { if (model.text !== esc(html)) model.text = esc(html); };
  // code points, as Python slices a str (JS slices UTF-16 units)
  const cut = (s, n) => Array.from(String(s)).slice(0, n).join('');

  // The digits of |x| rounded half to even at `frac` decimals (frac may be negative), as Python's
  // float formatting rounds the exact binary value: {digits, point} with value = digits / 10^frac.
  function rounded(x, frac) {
    const t = Math.abs(x).toFixed(100), dot = t.indexOf('.');
    const all = t.slice(0, dot) + t.slice(dot + 1), point = dot;   // all digits; point digits before the point
    const keep = point + frac;                                      // how many leading digits stay
    if (keep < 0) return '0';
    let head = all.slice(0, keep) || '0';
    const rest = all.slice(keep);
    const first = rest.length ? rest.charCodeAt(0) - 48 : 0;
    const tail = /[1-9]/.test(rest.slice(1));
    const last = head.charCodeAt(head.length - 1) - 48;
    if (first > 5 || (first === 5 && (tail || last % 2 === 1))) {   // up, with the carry
      const d = head.split('').map(Number);
      let i = d.length - 1;
      while (i >= 0 && d[i] === 9) { d[i] = 0; i--; }
      if (i < 0) d.unshift(1); else d[i] += 1;
      head = d.join('');
    }
    return head.replace(/^0+(?=\d)/, '');
  }
  // f"{x:.{n}f}"
  function fixed(x, n) {
    if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : (x < 0 ? '-inf' : 'inf');
    const digits = rounded(x, n).padStart(n + 1, '0');
    const s = n ? digits.slice(0, digits.length - n) + '.' + digits.slice(digits.length - n) : digits;
    return (x < 0 || Object.is(x, -0) ? '-' : '') + s;
  }
  // f"{x:.{p}g}"
  function general(x, p) {
    if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : (x < 0 ? '-inf' : 'inf');
    p = Math.max(1, p);
    const sign = (x < 0 || Object.is(x, -0)) ? '-' : '';
    if (x === 0) return sign + '0';
    let e = Math.floor(Math.log10(Math.abs(x)));
    // the exponent of the rounded value: correct log10's edge, then a carry (9.9995 -> 10.00)
    if (Math.abs(x) < 10 ** e) e -= 1; else if (Math.abs(x) >= 10 ** (e + 1)) e += 1;
    let d = rounded(x, p - 1 - e);
    if (d.length > p) { e += 1; d = rounded(x, p - 1 - e); }
    if (e < -4 || e >= p) {
      const m = (d[0] + '.' + d.slice(1)).replace(/\.?0+$/, '');
      return sign + m + 'e' + (e < 0 ? '-' : '+') + String(Math.abs(e)).padStart(2, '0');
    }
    const n = p - 1 - e;   // decimals
    const padded = d.padStart(n + 1, '0');
    let s = n > 0 ? padded.slice(0, padded.length - n) + '.' + padded.slice(padded.length - n) : padded;
    if (s.includes('.')) s = s.replace(/\.?0+$/, '');
    return sign + s;
  }
  // an integer q shown as q / 10^n with n decimals (a value Python formatted before export)
  function scaled(q, n) {
    const s = String(q).padStart(n + 1, '0');
    return n ? s.slice(0, s.length - n) + '.' + s.slice(s.length - n) : s;
  }

  // --- a cluster map (views/cluster_map.py ClusterMap) ------------------------------------------
  // The figure's points are its source with a `row` column; the marks (the focused cluster's
  // outlines, the selection's rings, the focused point's frame) are the other three sources, in
  // that order, which the served map's pipes fill with the marked points' x and y.
  function clusterMap(fig, radius) {
    const base = fig.renderers.find((r) => 'row' in r.data_source.data).data_source.data;
    const marks = fig.renderers.filter((r) => !('row' in r.data_source.data)).map((r) => r.data_source);
    const xs = base.x, ys = base.y;
    // cluster_map.nearest: the nearest point within `radius` of the visible range on each axis
    function nearest(px, py) {
      if (px === null || px === undefined || py === null || py === undefined || !xs.length) return null;
      const wx = Math.max(fig.x_range.end - fig.x_range.start, 1e-12), wy = Math.max(fig.y_range.end - fig.y_range.start, 1e-12);
      let best = 0, bd = Infinity;
      for (let j = 0; j < xs.length; j++) {
        const d = Math.hypot((xs[j] - px) / wx, (ys[j] - py) / wy);
        if (d < bd) { bd = d; best = j; }
      }
      return bd <= radius ? best : null;
    }
    function show(group, selected, focused) {
      [group, selected, focused === null ? [] : [focused]].forEach((rows, i) => {
        const ok = rows.filter((r) => r >= 0 && r < xs.length);
        marks[i].data = {x: ok.map((r) => xs[r]), y: ok.map((r) => ys[r])};
      });
    }
    return {nearest, show};
  }

  // --- the focus ----------------------------------------------------------------------------
  function tokens(model, sample) {
    const t = page.tokens[model];
    const i = t.index[String(sample)];
    return i === undefined ? null : {strings: t.strings[i], reprs: t.reprs[i]};
  }

  function start(models) {
    page = json('lf-export');
    Object.assign(focus, page.focus);
    for (const v of page.views) {
      const parts = {};
      for (const [name, key] of Object.entries(v.parts)) parts[name] = models[key];
      const data = json('lf-data-' + v.id) || {};
      const get = (name) => (v.pin[name] !== undefined && v.pin[name] !== null) ? v.pin[name] : focus[name];
      const api = {
        id: v.id, model: v.model, parts, meta: data.meta || {}, arrays: arrays(data.arrays), get,
        // the focused sample (the exported samples only: the page offers no other)
        sample: () => get('sample'),
        position: (n) => { const p = get('position'); return p === null || p === undefined ? n - 1 : Math.max(0, Math.min(p, n - 1)); },
        tokens: (sample) => tokens(v.model, sample),
        subject: (sample) => `sample <b class='lf-sample-index'>${sample}</b>`,
        set, esc, setHtml, cut, fixed, general, scaled, clusterMap,
      };
      const port = ports[v.type](api);
      views.push({id: v.id, reads: v.reads, pin: v.pin, port});
    }
  }

  // A focus change: the fields that differ, then every view that follows one of them, in page order.
  function set(fields) {
    const changed = Object.keys(fields).filter((k) => focus[k] !== fields[k]);
    if (!changed.length) return;
    for (const k of changed) focus[k] = fields[k];
    for (const v of views) {
      const follows = v.reads.filter((f) => v.pin[f] === undefined || v.pin[f] === null);
      if (follows.some((f) => changed.includes(f))) v.port.update();
    }
  }

  function click(id, part, data) {
    const v = views.find((x) => x.id === id);
    const handler = v && v.port.click && v.port.click[part];
    if (handler) handler(data);
  }

  return {define, start, set, click, focus, fixed, general, rounded, scaled};
})();
