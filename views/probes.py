"""probes: the session's probe set compared across the spec's models, one row per probe.

Each row: the probe, every model's top next token and its probability and, with two models, the KL
between their next-token distributions and the change in a chosen token's probability. Sortable by
any column; clicking a row focuses that probe in every view. The numbers come from one batched
forward per model (lensframe.probes.compare_probes); this view only draws them.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from .base import LIVE_MODEL_NOTE, View, ViewParams, esc, html_part, layout_part


class ProbesView(View):
    export_note = LIVE_MODEL_NOTE
    type = "probes"
    default_title = "Probes"
    description = "the probe set: each probe's next token per model, KL between two models, a chosen token's change"
    reads = ("probes", "text")
    sets = ("text", "position")

    class Params(ViewParams):
        token: Optional[str] = Field(None, description="a token (as text, e.g. ' Paris') whose probability is "
                                     "shown per model, and its change between two models")
        models: Optional[list[str]] = Field(None, description="models compared, at most two (default: the "
                                            "spec's models, the first two)")

    def compared(self) -> list[str]:
        return list(self.p.models or list(self.infos)[:2] or [self.model])

    def check(self, info):
        issues = super().check(info)
        names = list(self.infos)
        for i, name in enumerate(self.p.models or []):
            if name not in names:
                issues.append((("models", i), f"unknown model {name!r}", f"models: {', '.join(names)}"))
        if self.p.models is not None and not 1 <= len(self.p.models) <= 2:
            issues.append((("models",), f"compares one or two models (got {len(self.p.models)})", None))
        return issues

    def needs(self, max_tokens):
        return []  # probes are asked live (one batched forward per model); nothing is stored

    def render(self, ctx):
        import pandas as pd
        import panel as pn

        from lensframe.probes import compare_probes

        probes = list(ctx.focus.probes)
        token = ctx.state.get("token", self.p.token)
        box = ctx.part("token", pn.widgets.TextInput, init={
            "label": "token whose probability is compared", "value": token or "", "width": 260,
            "placeholder": "e.g.  Paris (with its leading space)", "css_classes": ["lf-probes-token"]})

        def on_token(event):
            ctx.state["token"] = event.new or None
            ctx.focus.param.trigger("probes")  # redraw with the new column

        if ctx.state.get("watched") is not box:  # once per component, not per render
            box.param.watch(on_token, "value")
            ctx.state["watched"] = box
        empty = html_part(  # a hidden part keeps no text: the page (and its tests) find nothing stale in it
            ctx, "empty", "" if probes else
            "<div class='lf-hint lf-probes-empty'>no probe set yet: type prompts in the probe box above, one per "
            "line, or a template with <code>{}</code> and fillers, and press Ask; or keep them in the spec "
            "under <code>probes:</code></div>", visible=not probes, sizing_mode="stretch_width")
        # The table exists from the first render, hidden while there is no probe set: a Tabulator
        # first made after the page loaded finds no Tabulator script in the page ("Tabulator is not
        # defined"), since Panel sends a widget's scripts with the page that first holds one.
        models = self.compared()
        rows = compare_probes(ctx.board.executor, models, probes, token) if probes else []
        table, columns = _table(rows, models, token)
        frame = pd.DataFrame(table, columns=list(columns))
        focused = ctx.focus.text
        selected = [i for i, r in enumerate(rows) if r["probe"] == focused]
        grid = ctx.part(
            "grid", pn.widgets.Tabulator, value=frame, titles=columns, visible=bool(probes),
            formatters={c: {"type": "money", "precision": 4} for c in frame.columns if frame[c].dtype.kind == "f"},
            on_click=lambda event: rows and ctx.set(text=rows[event.row]["probe"], position=None),
            init={"show_index": False, "disabled": True, "selectable": 1, "sizing_mode": "stretch_both",
                  "layout": "fit_data_fill", "css_classes": ["lf-probes-table"], "min_height": 120})
        # The selection is set after the rows, not in the same update: Panel checks a selection
        # against the table's old rows, so [0] in one update with the first row raised IndexError.
        if list(grid.selection) != selected:
            grid.selection = selected
        note = html_part(ctx, "note", _caption(models, rows, token) if probes else "", visible=bool(probes),
                         sizing_mode="stretch_width")
        box.visible = bool(probes)
        return layout_part(ctx, "layout", empty, note, box, grid, sizing_mode="stretch_both",
                           css_classes=["lf-view-probes"])


def _table(rows: list[dict], models: list[str], token: str | None) -> tuple[list[list], dict]:
    """Rows and {column key: title} of the probe table; keys are plain names so sorting works."""
    columns = {"probe": "probe", "tokens": "tokens"}
    for i, m in enumerate(models):
        columns[f"top{i}"] = f"{m}: next"
        columns[f"p{i}"] = f"{m}: p"
        if token:
            columns[f"t{i}"] = f"{m}: p({token!r})"
    if len(models) == 2:
        columns["kl"] = f"KL({models[0]}‖{models[1]}), nats"
        if token:
            columns["dt"] = f"Δp({token!r})"
    table = []
    for r in rows:
        line = [r["probe"] + (f"  [cut: {r['cut']} tokens]" if r["cut"] else ""), r["tokens"]]
        for m in models:
            line += [repr(r[f"top:{m}"]), r[f"p:{m}"]] + ([r[f"p_token:{m}"]] if token else [])
        if len(models) == 2:
            line += [r["kl"]] + ([r["delta_token"]] if token else [])
        table.append(line)
    return table, columns


def _caption(models: list[str], rows: list[dict], token: str | None) -> str:
    what = (f"KL({esc(models[0])} ‖ {esc(models[1])}) of the next-token distributions"
            + (f" and Δp = p<sub>{esc(models[1])}</sub> − p<sub>{esc(models[0])}</sub> of {esc(repr(token))}" if token else "")
            if len(models) == 2 else "the model's next token")
    return (f"<div class='lf-probes-head'><b class='lf-probes-count'>{len(rows)}</b> probe(s) · next token after each "
            f"probe's last token, one batched forward per model · {what} · click a row to focus it; "
            f"click a header to sort</div>")
