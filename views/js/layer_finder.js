// The layer_finder view's port (views/layer_finder.py render): its layer list and head do not
// depend on the focus; the focused layer's selection and detail (Python's, one per layer) do.
LF.define('layer_finder', (api) => {
  const {parts, meta} = api;
  function update() {
    const layer = api.get('layer');
    const focused = layer === null || layer === undefined ? null : layer;
    parts.layers.data.selected = focused === null ? -1 : focused;
    api.setHtml(parts.detail, meta.details[focused === null ? meta.default : focused]);
  }
  return {update, click: {layers: (d) => api.set({layer: d.key})}};
});
