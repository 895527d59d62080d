// The logit_lens view's port (views/logit_lens.py render): the grid's cells, tips and selection
// and the caption, for the focused sample, position and layer; a cell click sets them.
LF.define('logit_lens', (api) => {
  const {parts, meta, arrays} = api;
  const L = meta.layers.length, k = meta.k;
  const order = [...Array(L).keys()].reverse();   // final layer on top
  // each exported sample's start in the flat arrays ([L][T][k] and [L][T])
  const start = {};
  let cells = 0;
  for (const s of meta.samples) { start[s] = cells; cells += L * api.tokens(s).strings.length; }
  // Python's str.format for the tip templates: {name}, {name!r}, {name:.Nf}, {name:.Ng}
  const format = (template, values) => template.replace(/\{(\w+)(!r)?(?::\.(\d+)([fg]))?\}/g, (_, name, r, n, kind) => {
    const v = values[name];
    if (r) return v.repr;
    if (kind === 'f') return api.fixed(v, Number(n));
    if (kind === 'g') return api.general(v, Number(n));
    return String(v);
  });
  function shade(values) {   // _shade: the metric mapped to [0, 1]
    const clip = (x) => Math.min(1, Math.max(0, x));
    const top = Math.max(...values);
    if (meta.metric === 'prob') return values.map(clip);
    if (meta.metric === 'rank') return values.map((v) => 1 - Math.log1p(v) / Math.log1p(meta.vocab_size));
    if (meta.metric === 'kl') return values.map((v) => clip(Math.log1p(Math.max(v, 0)) / Math.max(Math.log1p(top), 1e-9)));
    return values.map((v) => clip(v / Math.max(top, 1e-9)));
  }
  function update() {
    const sample = api.sample(), tok = api.tokens(sample);
    const T = tok.strings.length, pos = api.position(T), s0 = start[sample];
    const id = (l, t, j) => arrays.ids[(s0 + l * T + t) * k + j];
    const metric = arrays.metric.subarray(s0, s0 + L * T);
    const sh = shade(Array.from(metric));
    const finals = [...Array(T).keys()].map((t) => id(L - 1, t, 0));
    const texts = [], tips = [], vals = [];
    for (const l of order) {
      const tx = [], tp = [], vl = [];
      for (let t = 0; t < T; t++) {
        tx.push(api.cut(meta.vocab[id(l, t, 0)], 6));
        vl.push(sh[l * T + t]);
        const top = [];
        for (let j = 0; j < k; j++) top.push(`${api.scaled(arrays.probs[(s0 + l * T + t) * k + j], 3)}  ${meta.reprs[id(l, t, j)]}`);
        tp.push(`${meta.row_names[l]}, position ${t} ${tok.reprs[t]}\n`
          + format(meta.tip, {final: {repr: meta.reprs[finals[t]]}, value: metric[l * T + t]})
          + `\ntop ${k} at this layer:\n` + top.join('\n'));
      }
      texts.push(tx); tips.push(tp); vals.push(vl);
    }
    const layer = api.get('layer');
    const selRow = (layer === null || layer === undefined) ? -1 : order.findIndex((l) => meta.blocks[l] === layer);
    const grid = parts.grid.data;
    grid.col_labels = tok.strings; grid.values = vals; grid.texts = texts; grid.tips = tips;
    grid.selected_row = selRow; grid.selected_col = pos;
    api.setHtml(parts.caption, `<div class='lf-lens-head'>${api.subject(sample)} · position <b class='lf-position'>${pos}</b> `
      + `<code>${api.esc(tok.reprs[pos])}</code> → final prediction <code>${api.esc(meta.reprs[finals[pos]])}</code>`
      + meta.tails[String(sample)]);
  }
  return {
    update,
    click: {
      grid: (d) => {   // the "embed" row is no block: it moves the position only
        const layer = meta.blocks[order[d.row]];
        api.set(layer >= 0 ? {position: d.col, layer} : {position: d.col});
      },
    },
  };
});
