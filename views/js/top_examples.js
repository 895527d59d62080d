// The top_examples view's port (views/top_examples.py render and _fill): the focused neuron's
// header, histogram (the Bokeh figure's bars, lines, ranges and axis label, as histogram_bars
// computes them), caption and example strips; a click on an example's token focuses that sample.
// The page holds the neurons of meta.neurons (--neurons) or, when it is null, every neuron.
LF.define('top_examples', (api) => {
  const {parts, meta, arrays} = api;
  const rowOf = meta.neurons ? new Map(meta.neurons.map((i, r) => [i, r])) : null;   // neuron -> its row
  const nHeld = meta.neurons ? meta.neurons.length : meta.d_mlp;   // rows a layer holds
  const k = meta.k, d = meta.d_mlp, W = meta.window[0] + meta.window[1] + 1, before = meta.window[0];
  const bins = meta.edges.length - 1;
  const signed = (x, n) => { const s = api.fixed(x, n); return s.startsWith('-') ? s : '+' + s; };
  const thousands = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const label = (l, i) => `L${l}/N${i}`;
  const slots = [];   // what each example strip shows: {sample, start}
  const fig = parts.hist;
  const renderer = (test) => fig.renderers.find(test);
  const quad = renderer((r) => 'left' in r.data_source.data);
  // HoloViews' overlay order: the bars, the red line at the #1 example, the probe's dashed line
  const topLine = fig.renderers.filter((r) => !('left' in r.data_source.data))[0];
  const setHidden = (name, html) => { api.setHtml(parts[name], html); parts[name].visible = false; };
  function hide(hint) {   // render's parts when no neuron is shown: emptied and hidden, the plot with no data
    api.setHtml(parts.hint, `<div class='lf-hint'>${api.esc(hint)}</div>`); parts.hint.visible = true;
    for (const name of ['head', 'caption']) setHidden(name, '');
    draw(null, NaN, 'activation');
    parts['hist-box'].visible = false;
    for (let i = 0; i < k; i++) { setHidden(`example-head${i}`, ''); parts[`example${i}`].visible = false; }
  }
  // histogram_plot: the bars on a log count axis from 0.7, the red line at the #1 example
  function draw(b, top, xlabel) {
    const count = b ? b.count : [], base = count.map(() => 0.7);
    const left = b ? b.left : [], right = b ? b.right : [];
    quad.data_source.data = {left, right, bottom: base, top: count, lo: left, base, hi: right, count};
    topLine.data_source.data = {x: Number.isFinite(top) ? [top] : []};
    const xlim = b ? b.xlim : [0.0, 1.0];
    fig.x_range.start = xlim[0]; fig.x_range.end = xlim[1];
    fig.y_range.start = 0.7; fig.y_range.end = 2.0 * (count.length ? Math.max(...count) : 1);
    fig.below[0].axis_label = xlabel;
  }
  // histogram_bars: the bins from the first to the last holding a token; the last ends at the max
  function bars(hist, top) {
    let lo = -1, hi = -1;
    for (let b = 0; b < bins; b++) if (hist[b]) { if (lo < 0) lo = b; hi = b + 1; }
    if (lo < 0) return null;
    const left = meta.edges.slice(lo, hi), right = meta.edges.slice(lo + 1, hi + 1);
    if (Number.isFinite(top)) right[right.length - 1] = Math.max(left[left.length - 1], Math.min(right[right.length - 1], top));
    const count = Array.from(hist.subarray(lo, hi));
    const x0 = left[0], x1 = right[right.length - 1], pad = 0.015 * (x1 - x0);
    return {left, right, count, xlim: [x0 - pad, x1 + pad]};
  }
  function update() {
    const neuron = api.get('neuron'), raw = api.get('layer');
    const layer = Math.min(raw !== null && raw !== undefined ? raw : meta.indexed[0], meta.n_layers - 1);
    if (neuron === null || neuron === undefined) { hide('click a neuron (in the neurons or ffn_vocab view) to see the examples that excite it'); return; }
    if (!meta.indexed.includes(layer)) { hide(`layer ${layer} is not indexed by this view (layers: ${meta.indexed_text})`); return; }
    const li = meta.layers.indexOf(layer);
    if (li < 0 || neuron >= d) { hide(`layer ${layer} is not in this exported page (it holds layers ${meta.exported_text})`); return; }
    const row = rowOf ? rowOf.get(neuron) : neuron;
    if (row === undefined) { hide(`neuron ${neuron} is not in this exported page (it holds neurons ${meta.neurons_text})`); return; }
    const at = (li * nHeld + row) * k, name = label(layer, neuron);
    const hist = arrays.hist.subarray((li * nHeld + row) * bins, (li * nHeld + row + 1) * bins);
    const best = arrays.values[at];
    const total = hist.reduce((a, b) => a + b, 0);
    setHidden('hint', '');
    api.setHtml(parts.head, `<div class='lf-top-head'>neuron <b class='lf-neuron'>${name}</b> · max activation `
      + `<b class='lf-top-max'>${signed(best, 3)}</b> · ${thousands(total)} tokens of the dataset</div>`);
    parts.head.visible = true;
    let shown = 0;
    for (let i = 0; i < k; i++) {
      const s = arrays.samples[at + i], head = parts[`example-head${i}`], strip = parts[`example${i}`];
      if (shown < i || !(String(s) in meta.strings)) {   // a neuron with fewer examples than k
        setHidden(`example-head${i}`, ''); strip.visible = false; continue;
      }
      shown += 1;
      const value = arrays.values[at + i], p = arrays.positions[at + i];
      const start = Math.max(0, p - before), off = start - (p - before);
      const toks = meta.strings[String(s)].slice(start, start + W - off);
      const shade = Array.from(arrays.shade.subarray((at + i) * W + off, (at + i) * W + off + toks.length)).map((q) => q / 255);
      const lab = meta.labels ? ` · <span class='lf-label'>${api.esc(meta.labels[String(s)])}</span>` : '';
      api.setHtml(head, `<div class='lf-example-head'>#${i + 1} · sample ${s}${lab} · <b>${signed(value, 3)}</b> at position ${p}</div>`);
      head.visible = true;
      strip.data.tokens = toks; strip.data.shade = shade; strip.data.selected = p - start;
      strip.visible = true;
      slots[i] = {sample: s, start};
    }
    draw(bars(hist, best), best, `activation of ${name}`);
    parts['hist-box'].visible = true;
    api.setHtml(parts.caption, `<div class='lf-hist-legend'><span class='lf-hist-key-max'>red line: the #1 example, `
      + `${signed(best, 3)}</span></div><div class='lf-sub lf-top-examples-head'>the ${shown} dataset examples where ${name} `
      + `fires most (tokens shaded by its activation; click one to focus it)</div>`);
    parts.caption.visible = true;
  }
  const click = {};
  for (let i = 0; i < k; i++) {
    click[`example${i}`] = (m) => {   // a sample this page does not hold stays where it is
      const slot = slots[i];
      if (slot && meta.exported.includes(slot.sample)) api.set({sample: slot.sample, text: null, position: slot.start + m.index});
    };
  }
  return {update, click};
});
