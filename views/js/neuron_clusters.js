// The neuron_clusters view's port (views/neuron_clusters.py render): the map's marks, the caption,
// the legend's selection and the focused cluster's member list (every cluster's, computed in Python).
// A click on the map focuses the nearest neuron and its cluster, as the served map's tap does; a
// lasso's topic enrichment is a lookup of the neurons picked, so the caption says it needs a server.
LF.define('neuron_clusters', (api) => {
  const {parts, meta, arrays} = api;
  const map = api.clusterMap(parts.map, meta.radius);
  const label = (l, i) => `L${l}/N${i}`;
  const has = (v) => v !== null && v !== undefined;
  const rows = new Map();   // "layer/neuron" -> the neuron's row on the map
  for (let j = 0; j < arrays.layer.length; j++) rows.set(`${arrays.layer[j]}/${arrays.neuron[j]}`, j);
  let lasso = false;
  function update() {
    const layer = api.get('layer'), neuron = api.get('neuron'), cluster = api.get('cluster');
    const key = `${layer}/${neuron}`;
    const focused = has(layer) && has(neuron) && rows.has(key) ? rows.get(key) : null;
    const group = [];
    if (has(cluster)) for (let j = 0; j < arrays.cluster.length; j++) if (arrays.cluster[j] === cluster) group.push(j);
    map.show(group, [], focused);
    const shown = has(cluster) && cluster < meta.k;
    api.setHtml(parts.caption, meta.head + "<div class='lf-map-key'>"
      + (focused !== null ? `framed: <b class='lf-focused-neuron'>${label(layer, neuron)}</b> · ` : '')
      + (shown ? `outlined: cluster c${cluster} · ` : '') + meta.key + (lasso ? meta.lasso : ''));
    lasso = false;
    parts.legend.data.selected = has(cluster) ? cluster : -1;
    api.setHtml(parts.members_head, shown ? meta.members_head[cluster] : '');
    parts.members_head.visible = shown;
    const members = shown ? meta.members[cluster] : [];
    parts.members.data.items = shown ? meta.member_items[cluster] : [];
    parts.members.data.selected = members.findIndex(([l, n]) => l === layer && n === neuron);
    parts.members.visible = shown;
  }
  return {
    update,
    click: {
      'map.tap': (d) => {
        const j = map.nearest(d.x, d.y);
        if (j !== null) api.set({layer: arrays.layer[j], neuron: arrays.neuron[j], cluster: arrays.cluster[j]});
      },
      'map.selectiongeometry': (d) => { if (d.final) { lasso = true; update(); } },
      legend: (d) => api.set({cluster: d.group}),
      members: (d) => {
        const m = meta.members[api.get('cluster')][d.key];
        api.set({layer: m[0], neuron: m[1]});
      },
    },
  };
});
