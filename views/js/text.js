// The text view's port (views/text.py render): the header, the token strip, the sample list.
LF.define('text', (api) => {
  const {parts, meta} = api;
  function update() {
    const sample = api.sample(), tok = api.tokens(sample);
    const T = tok.strings.length, pos = api.position(T);
    const label = meta.labels ? meta.labels[String(sample)] : null;
    api.setHtml(parts.header, `<div class='lf-sample-head'>${api.subject(sample)}`
      + (label ? ` · <span class='lf-label'>${api.esc(label)}</span>` : '')
      + ` · ${T} tokens · position <b class='lf-position'>${pos}</b>`
      + ` <code>${api.esc(tok.reprs[pos])}</code></div>`);
    parts.strip.data.tokens = tok.strings;
    parts.strip.data.selected = pos;
    if (parts.samples) parts.samples.data.selected = sample;
  }
  return {
    update,
    click: {
      strip: (d) => api.set({position: d.index}),
      samples: (d) => api.set({sample: d.index, text: null, position: null}),
    },
  };
});
