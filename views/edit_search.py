"""edit_search: what fires an edit. At a layer whose MLP changed between the suspect and its base,
every vocabulary token (after a short neutral prefix) and every n-gram of the dataset, ranked by
how much the edit changes what the MLP writes there (‖ΔMLP(x)‖/‖MLP_base(x)‖), with the alignment
of the MLP's key with ΔW's input directions beside it (lensframe.edit_search).

The layer is the focused one when its MLP changed, else the most changed MLP layer. The search runs
in a background thread with its progress shown, and is stored: a layer searched once shows at once.
Clicking a row adds the candidate (as the search read it) to the probe set and focuses it, so the
probes view compares the two models on it and every focus view follows.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np
from pydantic import Field

from .base import LIVE_MODEL_NOTE, ComparesModels, View, ViewParams, esc, html_slot, layout_part

POLL_MS = 300


class EditSearchView(ComparesModels, View):
    export_note = LIVE_MODEL_NOTE
    type = "edit_search"
    default_title = "What fires the edit"
    description = ("at a layer whose MLP changed, every vocabulary token and dataset n-gram ranked by how much the "
                   "edit changes the MLP's output there; click a row to probe it")
    reads = ("layer",)
    sets = ("layer", "text", "probes", "position")
    model_params: ClassVar[tuple[str, ...]] = ("other",)

    class Params(ViewParams):
        other: Optional[str] = Field(None, description="the reference model, before the edit (default: the spec's "
                                     "other model)")
        prefix: str = Field("Here is a word:", description="the neutral text each vocabulary token is placed after")
        top: int = Field(15, ge=1, le=100, description="rows listed per list (vocabulary tokens, dataset n-grams)")
        auto: bool = Field(True, description="start the search when a changed layer is focused (else a Run button)")

    def needs(self, max_tokens):
        if self.other is None:
            return []
        return [self.tokens_node(max_tokens), self.weights_node()]

    def check(self, info):
        return super().check(info) + self.pair_issues(
            info, ("edit_search needs the base model to compare with",
                   "add the base under `models:`; without it, use layer_finder and causal_trace"))

    # --- which layer -----------------------------------------------------------------------------
    def changed_mlp_layers(self, weights, mlp_path: str) -> list[int]:
        """Layers whose MLP parameters changed, the largest relative change first."""
        names = weights.meta["params"]
        change: dict[int, float] = {}
        for i, name in enumerate(names):
            layer = int(weights["layer"][i])
            if layer >= 0 and name.startswith(mlp_path + ".") and weights["delta"][i] > 0:
                rel = weights["delta"][i] / max(weights["norm"][i], 1e-12)
                change[layer] = max(change.get(layer, 0.0), float(rel))
        return sorted(change, key=lambda l: -change[l])

    # --- rendering -------------------------------------------------------------------------------
    def render(self, ctx):
        import panel as pn

        from lensframe.edit_search_job import EditSearchJob, stored
        from lensframe.models.adapters import family_for

        from .widgets import BarList

        board, state = ctx.board, ctx.state
        weights = ctx.result(self.weights_node())
        fam = family_for(board.infos[self.model].family)
        changed = ctx.keep("changed", lambda: self.changed_mlp_layers(weights, fam.mlp))
        focused = ctx.get("layer")
        note = ""
        if not changed:
            layer = None
        elif focused is not None and focused in changed:
            layer = focused
        else:
            layer = changed[0]
            if focused is not None:
                note = f"the MLP of layer {focused} did not change; showing layer {layer}, the most changed MLP"
        key = (self.model, self.other, layer, self.p.prefix)
        result = None
        if layer is not None:
            result = stored(board, self.model, self.other, layer, self.p.prefix)
        job = state.get("job")
        if job is not None and job.key != key and not job.done:
            job.stop()  # nobody would see it, and it holds the model's lock from the other views
        if job is not None and job.key == key and job.done and job.result is not None:
            result = job.result
        streaming = pn.state.curdoc is not None

        def start(_=None):
            old = state.get("job")
            if old is not None and not old.done:
                old.stop()
            new = EditSearchJob(board, self.model, self.other, layer, self.p.prefix)
            state["job"] = new
            if streaming:
                new.start()
                start_polling()
            else:
                new._guarded()  # a notebook or test: run here
            draw()

        head = html_slot(ctx, "head", visible=True, css_classes=["lf-search-head"])
        run = ctx.part("run", pn.widgets.Button, on_click=start, init={
            "label": "Search this layer", "width": 150, "css_classes": ["lf-search-run"]})
        progress = ctx.part("progress", pn.indicators.Progress, init={
            "value": 0, "max": 100, "sizing_mode": "stretch_width", "height": 10, "css_classes": ["lf-search-progress"]})
        status = html_slot(ctx, "status")
        vocab_head = html_slot(ctx, "vocab-head")
        vocab = ctx.part("vocab", BarList, init={"kind": "search-vocab", "items": [], "sizing_mode": "stretch_both",
                                                 "min_height": 150},
                         on_click=lambda key: self._probe(ctx, self._vocab_text(ctx, key)))  # key: the token id
        ngram_head = html_slot(ctx, "ngram-head")
        ngrams = ctx.part("ngrams", BarList, init={"kind": "search-ngram", "items": [], "sizing_mode": "stretch_both",
                                                   "min_height": 150},
                          on_click=lambda key: self._probe(ctx, self._ngram_text(ctx, state.get("shown"), key)))  # key: the row

        def draw():
            job = state.get("job")
            mine = job is not None and job.key == key
            res = result if result is not None else (job.result if mine and job.done else None)
            running = mine and not job.done
            head.object = self._head(layer, changed, note, res)
            run.visible = layer is not None and res is None and not running
            progress.visible = running
            if running:
                progress.value = int(100 * job.fraction)
                status.param.update(visible=True, object=f"<div class='lf-search-status' data-state='running'>"
                                    f"{esc(job.message)} ({100 * job.fraction:.0f}%)</div>")
            elif mine and job.error:
                status.param.update(visible=True, object=f"<div class='lf-error lf-search-status'>{esc(job.error)}</div>")
            else:
                status.param.update(visible=res is None and layer is not None,
                                    object="<div class='lf-hint lf-search-status'>not searched yet</div>")
            state["shown"] = res
            show = res is not None
            for part in (vocab_head, vocab, ngram_head, ngrams):
                part.visible = show
            if show:
                vocab_head.object, vocab.items = self._vocab_rows(ctx, res)
                ngram_head.object, ngrams.items = self._ngram_rows(ctx, res)
            return running

        def poll():
            # under hold(): a component changed in a periodic callback otherwise reaches the page
            # only with the next document message, so the last update (the results) would not show
            from panel.io import hold

            with hold():
                running = draw()
            if not running and state.get("poll") is not None:
                state["poll"].stop()
                state["poll"] = None

        def start_polling():
            if state.get("poll") is None:
                state["poll"] = pn.state.add_periodic_callback(poll, period=POLL_MS)

        if (result is None and layer is not None and self.p.auto and not (job is not None and job.key == key)):
            start()
        else:
            draw()
            if job is not None and job.key == key and not job.done and streaming:
                start_polling()
        if streaming and not state.get("cleanup"):
            state["cleanup"] = True
            pn.state.on_session_destroyed(lambda _ctx: state.get("job") and state["job"].stop())
        controls = layout_part(ctx, "controls", run, progress, status, sizing_mode="stretch_width")
        lists = layout_part(ctx, "lists", layout_part(ctx, "vocab-col", vocab_head, vocab, sizing_mode="stretch_both"),
                            layout_part(ctx, "ngram-col", ngram_head, ngrams, sizing_mode="stretch_both"),
                            cls=pn.Row, sizing_mode="stretch_both")
        return layout_part(ctx, "layout", head, controls, lists, sizing_mode="stretch_both", scroll=True,
                           css_classes=["lf-view-edit-search"])

    # --- parts -----------------------------------------------------------------------------------
    def _head(self, layer, changed, note, res) -> str:
        a, b = esc(self.model), esc(self.other)
        if layer is None:
            return (f"<div class='lf-search-none'>no MLP weight differs between <b>{a}</b> and <b>{b}</b>: an edit "
                    "outside the MLPs (attention, embeddings) is not searched here; see model_diff</div>")
        others = ", ".join(str(l) for l in changed if l != layer)
        what = ""
        if res is not None:
            sig = res["sigma"]
            what = (f" · ΔW of the MLP output matrix: rank {len(sig)}" + (f", σ₁ = {sig[0]:.3g}" if len(sig) else "")
                    if res.meta["down_changed"] else " · the MLP output matrix is unchanged (alignment: n/a)")
        return (f"<div class='lf-search-title'>layer <b class='lf-layer'>{layer}</b> · MLP changed ({b} → {a}){what}"
                + (f" · other changed MLPs: {others}" if others else "") + "</div>"
                + (f"<div class='lf-hint lf-search-note'>{esc(note)}</div>" if note else "")
                + "<div class='lf-sub'>change = ‖ΔMLP(x)‖/‖MLP<sub>" + b + "</sub>(x)‖ (×: times the median) · "
                "align = share of the key in ΔW's input directions · click a row to probe it</div>")

    def _vocab_rows(self, ctx, res) -> tuple[str, list]:
        change, align = res["vocab_change"], res["vocab_alignment"]
        median = float(np.nanmedian(change)) or 1e-12
        order = np.argsort(-np.nan_to_num(change, nan=-1))[: self.p.top]
        strings = ctx.decode(order)
        top = float(change[order[0]]) or 1.0
        items = [{"key": int(t), "label": repr(s), "bar": float(change[t]) / top,
                  "note": f"{change[t]:.3f} (×{change[t] / median:.0f})" + ("" if np.isnan(align[t]) else f" · align {align[t]:.2f}"),
                  "tip": f"{self.p.prefix}{s}\nchange {change[t]:.4f} = {change[t] / median:.1f}× the vocabulary's median "
                         f"({median:.4f})" + ("" if np.isnan(align[t]) else f"\nalignment {align[t]:.3f}")
                         + "\nclick: add to the probes"}
                 for t, s in zip(order.tolist(), strings)]
        head = (f"<div class='lf-sub lf-search-vocab-head'>vocabulary tokens after {esc(repr(self.p.prefix))} "
                f"({len(change):,}; median change {median:.3g})</div>")
        return head, items

    def _ngram_rows(self, ctx, res) -> tuple[str, list]:
        change, align = res["ngram_change"], res["ngram_alignment"]
        data = res["data_change"]
        median = float(np.nanmedian(data)) if len(data) else 1e-12
        median = median or 1e-12
        n = min(self.p.top, len(change))
        top = float(change[0]) if n else 1.0
        items = []
        for i in range(n):
            ids = [int(t) for t in res["ngram_ids"][i] if t >= 0]
            label = "".join(ctx.decode(ids))
            items.append({"key": i, "label": repr(label), "bar": float(change[i]) / (top or 1.0),
                          "note": f"{change[i]:.3f} (×{change[i] / median:.0f})"
                                  + ("" if np.isnan(align[i]) else f" · align {align[i]:.2f}")
                                  + f" · text {int(res['ngram_sample'][i])}",
                          "tip": f"text {int(res['ngram_sample'][i])}, position {int(res['ngram_position'][i])}: "
                                 f"…{label}\nchange {change[i]:.4f}\nclick: probe the text up to here"})
        head = (f"<div class='lf-sub lf-search-ngram-head'>dataset n-grams (the {res['ngram_ids'].shape[1]} tokens "
                f"ending at each position, read in their text; {len(data):,} positions, median change {median:.3g})</div>")
        return head, items

    def _vocab_text(self, ctx, token_id: int) -> str:
        return self.p.prefix + ctx.decode([token_id])[0]

    def _ngram_text(self, ctx, res, row: int) -> str | None:
        if res is None or row >= len(res["ngram_sample"]):
            return None
        sample, pos = int(res["ngram_sample"][row]), int(res["ngram_position"][row])
        ids = ctx.board.executor.sample_ids(self.model, sample)[: pos + 1]
        tok = ctx.board.executor.model(self.model).tokenizer
        return tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def _probe(self, ctx, text: str | None) -> None:
        """Add `text` to the session's probe set and focus it (the probes view compares the models on it)."""
        from lensframe.probes import MAX_PROBES, Probe

        if not text or not text.strip():
            return
        probes = [p for p in ctx.focus.probes if p.text != text] + [Probe(text)]
        ctx.set(probes=probes[-MAX_PROBES:], text=text, position=None)
