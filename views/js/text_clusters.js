// The text_clusters view's port (views/text_clusters.py render): the map's marks (the focused
// text, its cluster's texts), the caption and the legend's selection. A click on the map focuses
// the nearest text and its cluster, as the served map's tap does; a click in the legend focuses a
// cluster. A lasso (or a label's texts) selects texts, whose description only a server computes:
// the caption says so, as it does for a text the page does not hold.
LF.define('text_clusters', (api) => {
  const {parts, meta, arrays} = api;
  const map = api.clusterMap(parts.map, meta.radius);
  const has = (v) => v !== null && v !== undefined;
  const n = arrays.cluster.length;
  let note = '';
  function update() {
    const cluster = api.get('text_cluster'), focused = Math.min(api.sample(), n - 1);
    const members = [];
    if (has(cluster)) for (let i = 0; i < n; i++) if (arrays.cluster[i] === cluster) members.push(i);
    map.show(members, [], focused);
    parts.legend.data.selected = meta.by_label || !has(cluster) ? -1 : cluster;
    api.setHtml(parts.caption, meta.head + (has(cluster) ? ` · focused cluster <b class='lf-cluster'>${cluster}</b>` : '')
      + "</div><div class='lf-map-key'>" + `framed: text <b class='lf-focused-text'>#${focused}</b> · `
      + (has(cluster) ? `outlined: cluster ${cluster} · ` : '') + meta.key + note);
    note = '';
  }
  const say = (html) => { note = html; update(); };
  return {
    update,
    click: {
      'map.tap': (d) => {
        const row = map.nearest(d.x, d.y);
        if (row === null) return;
        if (api.tokens(row) === null) {   // a text this page does not hold: its cluster only
          note = meta.missing.replace('{row}', row);
          api.set({text_cluster: arrays.cluster[row]});
          if (note) update();
          return;
        }
        api.set({sample: row, text: null, position: null, text_cluster: arrays.cluster[row]});
      },
      'map.selectiongeometry': (d) => { if (d.final) say(meta.lasso); },
      legend: (d) => (meta.by_label ? say(meta.label_note) : api.set({text_cluster: d.group})),
    },
  };
});
