// The ffn_vocab view's port (views/ffn_vocab.py render): the caption, the focused neuron's value
// vector in the vocabulary (for the neurons the page holds at that layer: those a click in it can
// focus), the sub-updates at the focused token and layer with the tokens each promotes, and the
// residual's tokens before and after the MLP. The editor runs the model: a note takes its place.
LF.define('ffn_vocab', (api) => {
  const {parts, meta, arrays} = api;
  const n = meta.n, k = meta.k, K = meta.K, SK = meta.sub_k, LK = meta.lens_k, d = meta.d_mlp;
  const layers = meta.layers, NL = layers.length, vocab = meta.vocab;
  const label = (l, i) => `L${l}/N${i}`;
  const signed = (x, p) => { const s = api.fixed(x, p); return s.startsWith('-') ? s : '+' + s; };
  const start = {};
  let cells = 0;
  for (const s of meta.samples) { start[s] = cells; cells += NL * api.tokens(s).strings.length; }
  const index = [];   // per exported layer: neuron -> its row in the static arrays
  for (let li = 0; li < NL; li++) {
    const m = new Map();
    for (let j = arrays.static_starts[li]; j < arrays.static_starts[li + 1]; j++) m.set(arrays.static_ids[j], j);
    index.push(m);
  }
  // render's chips(ids, vals): a token's repr, and the value with 2 decimals
  const chip = (v, value) => `<span class='lf-chip'>${api.esc(vocab[v])}`
    + `${value === undefined ? '' : ` <small>${api.fixed(value, 2)}</small>`}</span>`;
  const chips = (ids, values) => Array.from(ids, (v, j) => chip(v, values ? values[j] : undefined)).join(' ');
  const scaled = (ids, q) => Array.from(ids, (v, j) => `<span class='lf-chip'>${api.esc(vocab[v])} `
    + `<small>${api.scaled(q[j], 2)}</small></span>`).join(' ');
  const depth = () => { const l = api.get('layer'); return Math.min(l !== null && l !== undefined ? l : 0, meta.n_layers - 1); };

  // the editor needs a live model: its note, and its widgets and result hidden
  api.setHtml(parts['edit-note'], meta.edit_note);
  parts['edit-row'].visible = false;
  parts.result.visible = false;

  function update() {
    const sample = api.sample(), tok = api.tokens(sample);
    const T = tok.strings.length, pos = api.position(T);
    const layer = depth(), li = layers.indexOf(layer), neuron = api.get('neuron');
    const head = `<div class='lf-ffn-head'>${api.subject(sample)} · layer <b class='lf-layer'>${layer}</b> · position `
      + `<b class='lf-position'>${pos}</b> <code>${api.esc(tok.reprs[pos])}</code>`;
    const hasNeuron = neuron !== null && neuron !== undefined && neuron < d;
    if (li < 0) {   // a layer this page does not hold
      api.setHtml(parts.head, head + ` <span class='lf-export-missing'>layer ${layer} is not in this exported page: `
        + `it holds layers ${meta.layers_text}</span></div>`);
      api.setHtml(parts.static, ''); parts.static.visible = false;
      parts.bars.data.items = []; parts.bars.data.selected = hasNeuron ? neuron : -1;
      api.setHtml(parts.resid, '');
      return;
    }
    api.setHtml(parts.head, head + '</div>');
    // the focused neuron's value vector
    let stat = '';
    if (hasNeuron) {
      const j = index[li].get(neuron);
      stat = j === undefined
        ? `<div class='lf-ffn-static'>value vector <b class='lf-neuron'>${label(layer, neuron)}</b>: <span `
          + `class='lf-export-missing'>not in this exported page, which holds the value vectors of the neurons a `
          + `click in it can focus at this layer</span></div>`
        : `<div class='lf-ffn-static'>value vector <b class='lf-neuron'>${label(layer, neuron)}</b> `
          + `(\u2016v\u2016 = ${api.fixed(arrays.static_norm[j], 3)}), ${meta.projection}<br>`
          + `promotes: <span class='lf-promoted'>${chips(arrays.prom_ids.subarray(j * K, j * K + k), arrays.prom.subarray(j * k, (j + 1) * k))}</span><br>`
          + `suppresses: <span class='lf-suppressed'>${chips(arrays.supp_ids.subarray(j * K, j * K + k), arrays.supp.subarray(j * k, (j + 1) * k))}</span></div>`;
    }
    api.setHtml(parts.static, stat);
    parts.static.visible = hasNeuron;
    // the sub-updates, ranked by |m| ||v||
    const cell = start[sample] + li * T + pos;
    const rows = [];
    for (let r = 0; r < n; r++) {
      const i = arrays.sub_ids[cell * n + r], m = arrays.sub_m[cell * n + r], norm = arrays.norms[li * d + i];
      let ids;
      if (arrays.sub_tok) ids = arrays.sub_tok.subarray((cell * n + r) * SK, (cell * n + r + 1) * SK);
      else {   // E(m v): the static projection's promoted tokens for m > 0, its suppressed ones for m < 0
        const j = index[li].get(i);
        ids = (m > 0 ? arrays.prom_ids : arrays.supp_ids).subarray(j * K, j * K + SK);
      }
      rows.push({i, m, norm, size: Math.fround(Math.abs(m) * norm), ids});
    }
    const top = Math.max(...rows.map((r) => r.size)) || 1.0;
    parts.bars.data.items = rows.map((r) => ({
      key: r.i, label: label(layer, r.i), bar: r.size / top * (r.m >= 0 ? 1 : -1),
      note: `m=${signed(r.m, 3)} |v|=${api.fixed(r.norm, 2)} \u2192 ` + Array.from(r.ids, (v) => vocab[v]).join(' ')}));
    parts.bars.data.selected = neuron !== null && neuron !== undefined ? neuron : -1;
    // the residual before and after the MLP, decoded as the logit lens
    const lo = cell * LK, hi = lo + LK;
    api.setHtml(parts.resid, `<div class='lf-ffn-resid'>before the MLP: <span class='lf-before'>`
      + `${scaled(arrays.before_ids.subarray(lo, hi), arrays.before_p.subarray(lo, hi))}</span><br>`
      + `after the MLP: <span class='lf-after'>${scaled(arrays.after_ids.subarray(lo, hi), arrays.after_p.subarray(lo, hi))}</span></div>`);
  }
  return {update, click: {bars: (data) => api.set({neuron: data.key})}};
});
