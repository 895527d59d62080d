// The attention view's port (views/attention.py render): the focused layer and head's pattern,
// the caption's strongest keys, the thumbnails of the layer's heads. Weights travel as the 3- and
// 2-decimal digits Python shows (code = q3 * 2 + (q2 - floor(q3 / 10))), with each query row's
// keys in Python's order (sorted by weight, stable), so ties between shown digits order the same.
LF.define('attention', (api) => {
  const {parts, meta, arrays} = api;
  const H = meta.n_heads, NL = meta.n_layers, layers = meta.layers;
  const start = {}, ranks = {};
  let w = 0, r = 0;
  for (const s of meta.samples) {
    const T = api.tokens(s).strings.length;
    start[s] = w; ranks[s] = r;
    w += layers.length * H * T * (T + 1) / 2; r += layers.length * H * T * 3;
  }
  const tri = (q, k) => q * (q + 1) / 2 + k;
  function update() {
    const sample = api.sample(), tok = api.tokens(sample);
    const T = tok.strings.length, pos = api.position(T);
    const layer = Math.min(api.get('layer') !== null && api.get('layer') !== undefined ? api.get('layer') : 0, NL - 1);
    const head = Math.min(api.get('head') || 0, H - 1);
    const li = layers.indexOf(layer);
    const grid = parts.grid.data;
    const rowLabels = tok.reprs.map((_, q) => api.cut(`${q} ${tok.strings[q]}`, 12));
    grid.row_labels = rowLabels;
    grid.row_tips = tok.reprs.map((t, q) => `query position ${q}: ${t}`);
    grid.col_labels = tok.strings;
    grid.selected_row = pos;
    const head_html = `<div class='lf-attn-head'>${api.subject(sample)} · layer <b class='lf-layer'>${layer}</b> · head `
      + `<b class='lf-head-index'>${head}</b> · query position <b class='lf-position'>${pos}</b> <code>${api.esc(tok.reprs[pos])}</code>`;
    if (li < 0) {   // a layer this page does not hold
      grid.values = tok.strings.map(() => tok.strings.map(() => null)); grid.tips = [];
      api.setHtml(parts.caption, head_html + ` <span class='lf-export-missing'>(layer ${layer} is not in this `
        + `exported page: it holds layers ${meta.layers_text})</span></div>`);
      if (parts.heads) { parts.heads.data.patterns = '[]'; parts.heads.data.tips = []; }
      if (parts['heads-label']) api.setHtml(parts['heads-label'], `<div class='lf-sub'>heads of layer ${layer}</div>`);
      return;
    }
    const base = (h) => start[sample] + (li * H + h) * T * (T + 1) / 2;
    const code = (h, q, k) => arrays.weights[base(h) + tri(q, k)];
    const q3 = (h, q, k) => code(h, q, k) >> 1;
    const w3 = (h, q, k) => api.scaled(q3(h, q, k), 3);
    const w2 = (h, q, k) => { const c = code(h, q, k); return api.scaled(Math.floor((c >> 1) / 10) + (c & 1), 2); };
    const order = (h, q) => { const o = ranks[sample] + ((li * H + h) * T + q) * 3; return Array.from(arrays.order.subarray(o, o + Math.min(3, q + 1))); };
    const vals = [], tips = [];
    for (let q = 0; q < T; q++) {
      let top = 0;
      for (let k = 0; k <= q; k++) top = Math.max(top, q3(head, q, k) / 1000);
      const v = [], t = [];
      for (let k = 0; k < T; k++) {
        if (k <= q) {
          v.push(Math.sqrt((q3(head, q, k) / 1000) / Math.max(top, 1e-12)));
          t.push(`query ${q} ${tok.reprs[q]} \u2192 key ${k} ${tok.reprs[k]}\nattention weight ${w3(head, q, k)}`);
        } else { v.push(null); t.push(`key ${k} comes after query ${q}: masked`); }
      }
      vals.push(v); tips.push(t);
    }
    grid.values = vals; grid.tips = tips;
    api.setHtml(parts.caption, head_html + ' attends to '
      + order(head, pos).map((k) => `<code>${api.esc(tok.reprs[k])}</code> ${w2(head, pos, k)}`).join(', ') + '</div>');
    if (parts.heads) {
      const pats = [], htips = [];
      for (let h = 0; h < H; h++) {
        pats.push([...Array(T).keys()].map((q) => [...Array(T).keys()].map((k) => (k <= q ? q3(h, q, k) / 1000 : 0))));
        const k = order(h, pos)[0];
        htips.push(`layer ${layer} head ${h}: query ${pos} ${tok.reprs[pos]} attends most to key ${k} ${tok.reprs[k]} (${w2(h, pos, k)})`);
      }
      parts.heads.data.patterns = JSON.stringify(pats);
      parts.heads.data.tips = htips;
      parts.heads.data.selected = head;
      api.setHtml(parts['heads-label'], `<div class='lf-sub'>heads of layer ${layer}</div>`);
    }
  }
  return {
    update,
    click: {
      grid: (d) => api.set({position: d.row}),
      heads: (d) => api.set({head: d.head}),
    },
  };
});
