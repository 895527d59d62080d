// The difference view's port (views/difference.py render): the description of the focused text
// cluster against the rest (or of label a against label b), each computed in Python for the page,
// and the representative texts with the focused sample selected. A click on a text focuses it.
LF.define('difference', (api) => {
  const {parts, meta} = api;
  const has = (v) => v !== null && v !== undefined;
  function entry() {
    if (meta.labels) return 0;
    const c = api.get('text_cluster');
    return has(c) && c < meta.heads.length ? c : null;
  }
  function update(note) {
    const e = entry(), waiting = e === null;
    api.setHtml(parts.hint, note || (waiting ? meta.hint : ''));
    parts.hint.visible = Boolean(note) || waiting;
    api.setHtml(parts.head, waiting ? '' : meta.heads[e]);
    parts.head.visible = !waiting;
    for (const side of ['a', 'b']) {
      const list = parts[`reps_${side}`].data;
      list.items = waiting ? [] : meta.items[e][side];
      list.selected = api.sample();
    }
    parts.lists.visible = !waiting;
  }
  const pick = (d) => (api.tokens(d.index) === null ? update(meta.missing.replace('{index}', d.index))
    : api.set({sample: d.index, text: null, position: null}));
  return {update: () => update(''), click: {reps_a: pick, reps_b: pick}};
});
