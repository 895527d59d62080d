"""text: browse the dataset's samples (with labels) and the focused sample's (or probe's) tokens.

Clicking a sample sets focus.sample (and leaves a probe); clicking a token sets focus.position.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from .base import View, ViewParams, esc, html_part, layout_part

PREVIEW_CHARS = 90


class TextView(View):
    type = "text"
    default_title = "Text"
    description = "dataset samples and the focused sample's tokens (click to focus)"
    reads = ("sample", "text", "position")
    sets = ("sample", "text", "position")
    export_script = "js/text.js"

    class Params(ViewParams):
        show_samples: bool = Field(True, description="show the list of samples beside the tokens")
        max_samples: Optional[int] = Field(None, ge=1, description="list at most this many samples")

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens)]

    def render(self, ctx):
        from .widgets import SampleList, TokenStrip

        ds = ctx.board.dataset
        sample, probe = ctx.sample, ctx.probe
        tokens = ctx.tokens()
        pos = ctx.position(len(tokens))
        label = ds.labels[sample] if ds.labels and probe is None else None
        cut = ctx.board.executor.probe_tokens(self.model, probe) if probe is not None else None
        cut_note = (f" · <span class='lf-cut-note'>cut to the first {cut['limit']} tokens "
                    f"({cut['cut']} more not shown)</span>" if cut and cut["cut"] else "")
        header = html_part(
            ctx, "header",
            f"<div class='lf-sample-head'>{ctx.subject_label()}"
            + (f" · <span class='lf-label'>{esc(label)}</span>" if label else "")
            + f" · {len(tokens)} tokens · position <b class='lf-position'>{pos}</b>"
            + f" <code>{esc(repr(tokens[pos]))}</code>{cut_note}</div>",
            css_classes=["lf-text-head"], sizing_mode="stretch_width")
        strip = ctx.part("strip", TokenStrip, tokens=tokens, selected=pos, init={"sizing_mode": "stretch_width"},
                         on_click=lambda index: ctx.set(position=index))
        parts = [header, strip]
        if self.p.show_samples:
            n = min(len(ds), self.p.max_samples or len(ds))
            items = ctx.keep("items", lambda: [
                {"index": i, "label": ds.labels[i] if ds.labels else "",
                 "text": " ".join(ds.texts[i].split())[:PREVIEW_CHARS]} for i in range(n)])
            samples = ctx.part("samples", SampleList, items=items, selected=-1 if probe is not None else sample,
                               init={"min_height": 120, "sizing_mode": "stretch_both"},
                               on_click=lambda index: ctx.set(sample=index, text=None, position=None))
            parts.append(samples)
        return layout_part(ctx, "layout", *parts, sizing_mode="stretch_both", css_classes=["lf-view-text"])

    # --- export (views/js/text.js): the labels of the exported samples; the tokens are the page's
    def export_data(self, ex):
        from lensframe.export_pack import ExportData

        ds = ex.board.dataset
        samples = ex.rendered._parts.get("samples")
        if samples is not None:  # the list offers the exported samples only: the page holds no other
            keep = set(ex.samples)
            samples.items = [it for it in samples.items if it["index"] in keep]
        labels = {str(s): ds.labels[s] for s in ex.samples} if ds.labels else None
        return ExportData(meta={"labels": labels})

    def export_size(self, shapes):
        n = len(shapes.options.samples)
        ds = shapes.board.dataset
        label = max((len(str(x)) for x in ds.labels), default=0) if ds.labels else 0
        listed = min(n, self.p.max_samples or n) if self.p.show_samples else 0
        return {"labels": n * (label + 10), "first render": 6_000 + 12 * int(shapes.lengths(self.model).max(initial=0))
                + listed * (PREVIEW_CHARS + 50)}
