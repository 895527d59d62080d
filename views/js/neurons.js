// The neurons view's port (views/neurons.py render): the caption, both ranked lists at the focused
// layer and position, and the focused neuron's activations over the sample (for the neurons the
// page holds at that layer: those listed at one of its positions).
LF.define('neurons', (api) => {
  const {parts, meta, arrays} = api;
  const n = meta.n, d = meta.d_mlp, layers = meta.layers, NL = layers.length;
  const label = (l, i) => `L${l}/N${i}`;
  const signed = (x, k) => { const s = api.fixed(x, k); return s.startsWith('-') ? s : '+' + s; };
  const start = {}, group = {};
  let cells = 0, g = 0;
  for (const s of meta.samples) {
    const T = api.tokens(s).strings.length;
    start[s] = cells; group[s] = g;
    cells += NL * T; g += NL;
  }
  const depth = () => { const l = api.get('layer'); return Math.min(l !== null && l !== undefined ? l : 0, meta.n_layers - 1); };
  function update() {
    const sample = api.sample(), tok = api.tokens(sample);
    const T = tok.strings.length, pos = api.position(T);
    const layer = depth(), li = layers.indexOf(layer), neuron = api.get('neuron');
    const caption = `<div class='lf-neurons-head'>${api.subject(sample)} · layer <b class='lf-layer'>${layer}</b> · `
      + `position <b class='lf-position'>${pos}</b> <code>${api.esc(tok.reprs[pos])}</code> · ${d} neurons · `;
    if (li < 0) {   // a layer this page does not hold
      api.setHtml(parts.caption, caption + `<span class='lf-export-missing'>layer ${layer} is not in this exported `
        + `page: it holds layers ${meta.layers_text}</span></div>`);
      parts['by-act'].data.items = []; parts['by-size'].data.items = [];
      parts['strip-caption'].visible = false; parts.strip.visible = false;
      return;
    }
    api.setHtml(parts.caption, caption + meta.legend + '</div>');
    const norm = (i) => arrays.norms[li * d + i];
    const row = (start[sample] + li * T + pos) * n;
    const tip = (i, m, size) => `${label(layer, i)} at position ${pos} ${tok.reprs[pos]}: activation m = ${signed(m, 4)}, `
      + `value vector norm \u2016v\u2016 = ${api.fixed(norm(i), 3)}, sub-update norm |m|\u2016v\u2016 = ${api.fixed(size, 3)}`;
    const selected = neuron !== null && neuron !== undefined ? neuron : -1;
    for (const [name, ids, ms, bySize] of [['by-act', arrays.act_ids, arrays.act_m, false],
                                           ['by-size', arrays.size_ids, arrays.size_m, true]]) {
      const rows = [];
      for (let j = 0; j < n; j++) {
        const i = ids[row + j], m = ms[row + j], size = Math.fround(Math.abs(m) * norm(i));
        rows.push({i, m, size, value: bySize ? size : m});
      }
      const top = Math.max(...rows.map((r) => Math.abs(r.value))) || 1.0;
      parts[name].data.items = rows.map((r) => ({
        key: r.i, label: label(layer, r.i), tip: tip(r.i, r.m, r.size),
        note: bySize ? `${api.fixed(r.size, 3)} (m ${signed(r.m, 3)})` : `m ${signed(r.m, 3)}`,
        bar: Math.abs(r.value) / top * Math.sign(r.m || 1)}));
      parts[name].data.selected = selected;
    }
    // the focused neuron over the sample
    const gi = group[sample] + li, lo = arrays.strip_starts[gi], hi = arrays.strip_starts[gi + 1];
    let k = -1;
    if (selected >= 0) for (let j = lo; j < hi; j++) if (arrays.strip_ids[j] === selected) { k = j; break; }
    const shown = selected >= 0 && selected < d;
    const strip = parts.strip.data;
    strip.selected = pos;
    if (!shown || k < 0) {
      api.setHtml(parts['strip-caption'], shown ? `<div class='lf-sub'>neuron <b class='lf-neuron'>${label(layer, selected)}</b>`
        + ` over the sample: <span class='lf-export-missing'>not in this exported page, which holds the activations `
        + `of the neurons listed at one of this layer's positions</span></div>` : '');
      parts['strip-caption'].visible = shown;
      strip.tokens = []; strip.shade = []; strip.tips = [];
      parts.strip.visible = false;
      return;
    }
    // the strip's values: the sample's starts of each (sample, layer) group's strips
    let offset = 0;
    for (const s of meta.samples) {
      const Ts = api.tokens(s).strings.length;
      for (let l = 0; l < NL; l++) {
        const gg = group[s] + l;
        if (gg === gi) break;
        offset += (arrays.strip_starts[gg + 1] - arrays.strip_starts[gg]) * Ts;
      }
      if (s === sample) break;
    }
    const values = Array.from(arrays.strips.subarray(offset + (k - lo) * T, offset + (k - lo + 1) * T));
    const scale = Math.max(...values.map(Math.abs)) || 1.0, name = label(layer, selected);
    api.setHtml(parts['strip-caption'], `<div class='lf-sub'>neuron <b class='lf-neuron'>${name}</b> over the sample: `
      + `m by token, max ${signed(Math.max(...values), 3)} (shade: m / ${api.fixed(scale, 3)}, the largest |m|; m \u2264 0 unshaded)</div>`);
    parts['strip-caption'].visible = true;
    strip.tokens = tok.strings;
    strip.shade = values.map((v) => Math.max(0, v / scale));
    strip.tips = values.map((v, t) => `position ${t}: ${tok.reprs[t]}\n${name} m = ${signed(v, 4)}`);
    parts.strip.visible = true;
  }
  return {
    update,
    click: {
      'by-act': (d) => api.set({neuron: d.key}),
      'by-size': (d) => api.set({neuron: d.key}),
      strip: (d) => api.set({position: d.index}),
    },
  };
});
