"""causal_trace: which hidden states carry the prediction (Meng et al. 2022, causal tracing).

On the focused sample or probe: the clean run's prediction at the last token, a span of tokens
corrupted with noise on their embeddings, and for each layer and position the probability of the
clean prediction when one state is restored to its clean value: three heatmaps (the residual, the
MLP output, the attention output), layers as rows (the last on top, as the logit lens), positions
as columns, the corrupted tokens marked. A click on a cell focuses that layer and position.

A trace is thousands of forwards, so it runs in a background thread (lensframe.ops.causal.TraceJob)
started when a text is focused; the grids fill as batches finish and a progress line follows it.
Finished traces are memoized, so coming back to a text shows its trace at once. The computation is
lensframe/causal_trace.py; this view only draws it.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

import numpy as np
from pydantic import Field, field_validator

from lensframe.graph import Node

from .base import LIVE_MODEL_NOTE, VIEW_CSS, View, ViewParams, esc, html_part, html_slot, layout_part

POLL_MS = 1000  # a batch of restored runs takes a second or more on a CPU
TITLES = {"resid": "residual restored", "mlp": "MLP output restored", "attn": "attention output restored"}
WHAT = {"resid": "residual (the output)", "mlp": "MLP output", "attn": "attention output"}  # in a cell's tip
ROW_TITLE = "layer (block) →"
COL_TITLE = "position → (* corrupted)"
SPAN_CHARS = 40  # the corrupted text shown in the head; all of it is in the tip
TRACE_CSS = """
.lf-trace-head { line-height: 1.4; cursor: help; }
.lf-trace-progress { color: #555; }
.lf-trace-progress[data-state='running'] { color: #1f6fd1; }
.lf-trace-bar { display: inline-block; width: 120px; height: 8px; margin: 0 6px; vertical-align: middle;
                border: 1px solid #bcd; background: #fff; }
.lf-trace-bar > span { display: block; height: 100%; background: #1f6fd1; }
.lf-trace-title { font-weight: 600; color: #333; margin: 2px 0 0; }
.lf-trace-scale { font-weight: normal; color: #555; font-size: 11px; white-space: normal; }
.lf-trace-scale .lf-scale-bar { width: 40px; }
.lf-scale { white-space: nowrap; }
.lf-scale-bar { display: inline-block; width: 60px; height: 9px; margin: 0 4px; vertical-align: middle;
                border: 1px solid #ccc;
                background: linear-gradient(to right, rgba(31, 111, 209, 0), rgba(31, 111, 209, 1)); }
.lf-trace-auto { color: #8a5a00; font-size: 11px; }
.lf-trace-span-label { line-height: 32px; color: #333; font-weight: 600; cursor: help; }
.lf-corrupted { background: #fbe9e7; border-radius: 3px; padding: 0 2px; }
"""


class CausalTraceView(View):
    export_note = LIVE_MODEL_NOTE
    type = "causal_trace"
    default_title = "Causal trace"
    description = ("causal tracing (Meng et al. 2022) of the focused text: corrupt a span of tokens, restore each "
                   "layer's residual, MLP and attention output at each position, and show how much of the clean "
                   "prediction's probability each restoration recovers")
    reads = ("sample", "text", "position", "layer")
    sets = ("layer", "position")

    class Params(ViewParams):
        span: Union[Literal["auto"], list[int], str] = Field(
            "auto", description="tokens corrupted: auto (every token but the last, less a leading BOS), a list of "
            "positions, or a piece of the text (e.g. ' Sydney Opera House'); editable in the view")
        noise: float = Field(3.0, gt=0, le=100, description="noise std on the corrupted embeddings, in units of the "
                             "std of the embedding matrix's entries (Meng et al.: 3)")
        samples: int = Field(5, ge=1, le=100, description="noise samples per restoration (averaged; seeded)")
        window: int = Field(1, ge=1, le=64, description="layers restored together for mlp and attn, centred on the "
                            "row's layer (Meng et al.: 10)")
        target: Optional[str] = Field(None, description="the token traced, as text (its first token); default: the "
                                      "clean run's top-1 prediction")
        kinds: list[Literal["resid", "mlp", "attn"]] = Field(
            ["resid", "mlp", "attn"], min_length=1, description="what is restored: resid (the block's output), mlp "
            "(the MLP output), attn (the attention output); one heatmap each")
        seed: int = Field(0, ge=0, description="seed of the noise")

        @field_validator("kinds")
        @classmethod
        def _unique(cls, kinds):
            if len(set(kinds)) != len(kinds):
                raise ValueError("each kind at most once")
            return kinds

    def trace_node(self, max_tokens: int) -> Node:
        return Node.make("causal_trace", self.model, inputs=(self.tokens_node(max_tokens),), noise=self.p.noise,
                         samples=self.p.samples, window=self.p.window, kinds=tuple(self.p.kinds), seed=self.p.seed)

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), self.trace_node(max_tokens)]

    def check(self, info):
        issues = super().check(info)
        if self.p.window > info.n_layers:
            issues.append((("window",), f"window {self.p.window} is wider than the model ({info.n_layers} layers)",
                           f"at most {info.n_layers}"))
        return issues

    def span_arg(self, text: str | None = None):
        """The span as the lookup takes it: from the view's input box when one was typed, else the spec."""
        from lensframe.causal_trace import parse_span

        if text is not None:
            return parse_span(text)
        return tuple(self.p.span) if isinstance(self.p.span, list) else self.p.span

    # --- drawing -----------------------------------------------------------------------------
    def render(self, ctx):
        import panel as pn
        from panel.io import hold

        from lensframe.errors import LensframeError
        from lensframe.ops.causal import TraceJob, finished, trace_key

        from .widgets import HeatGrid

        ex, state, subject = ctx.board.executor, ctx.state, ctx.subject
        node = self.trace_node(ctx.board.spec.dataset.max_tokens)
        tokens = ctx.tokens()
        T, L = len(tokens), ctx.board.infos[self.model].n_layers
        streaming = pn.state.curdoc is not None  # a served page polls the job; else compute here, now
        span = self.span_arg(state.get("span_text"))
        message, res, job = None, None, state.get("job")
        try:
            key = trace_key(ex, node, subject, span, self.p.target)
        except LensframeError as err:  # a span or target that does not apply to this text
            message = f"<div class='lf-error lf-trace-error'>{esc(getattr(err, 'message', err))}{_hint(err)}</div>"
            key = None
        if job is not None and job.key != key:
            job.stop()  # nobody would see it, and each batch takes the model's lock from other views
            job = state["job"] = None
        if key is not None:
            res = finished(ex, key)
            if res is None and job is None:  # a new text (or span): its trace starts now
                job = state["job"] = TraceJob(ex, node, subject, span, self.p.target)
                job.start() if streaming else job.run()
            if res is None:
                res = job.result
        if streaming and not state.get("cleanup"):  # a closed tab stops its trace too
            state["cleanup"] = True
            pn.state.on_session_destroyed(lambda _ctx: state.get("job") and state["job"].stop())

        def on_span(event):
            state["span_text"] = event.new
            with hold():  # see poll()
                state["render"]()

        box = ctx.part("span", pn.widgets.TextInput, init={  # a label above the box would cost the maps a line
            "value": _span_text(self.p.span), "placeholder": "auto · positions 0-3 · a piece of the text",
            "width": 230, "css_classes": ["lf-trace-span"]})
        label = html_part(ctx, "span-label", "<span class='lf-trace-span-label' title='the tokens corrupted: auto "
                          "(every token before the last), positions (0-3, 5), or a piece of the text (its subject)'>"
                          "corrupt</span>", stylesheets=[VIEW_CSS, TRACE_CSS])
        if not state.get("watching"):
            state["watching"] = True
            box.param.watch(lambda e: state["on_span"](e), "value")
        state["on_span"] = on_span
        state["render"] = lambda: self.render(ctx)
        head = html_slot(ctx, "head", visible=True, stylesheets=[VIEW_CSS, TRACE_CSS])
        progress = html_slot(ctx, "progress", visible=True, stylesheets=[VIEW_CSS, TRACE_CSS])
        controls = layout_part(ctx, "controls", label, box, progress, cls=pn.Row, sizing_mode="stretch_width")
        pos, layer = ctx.position(T), ctx.get("layer")
        sel_row = L - 1 - min(layer, L - 1) if layer is not None else -1
        columns, grids, titles = [], {}, {}
        for kind in self.p.kinds:
            titles[kind] = html_slot(ctx, f"title-{kind}", visible=True,
                                     stylesheets=[VIEW_CSS, TRACE_CSS])
            grids[kind] = ctx.part(
                f"grid-{kind}", HeatGrid, selected_row=sel_row, selected_col=pos,
                init=dict(kind=f"trace-grid-{kind}", fit="both", cell_width=40, min_cell_width=8, cell_height=20,
                          min_cell_height=4, vertical_cols=True, row_title=ROW_TITLE, sizing_mode="stretch_both",
                          min_height=220,  # in a short card the head takes the room: the card scrolls instead
                          css_classes=[f"lf-trace-grid-{kind}", "lf-trace-grid"]),
                on_click=lambda row, col: ctx.set(layer=L - 1 - row, position=col))
            columns.append(layout_part(ctx, f"column-{kind}", titles[kind], grids[kind], sizing_mode="stretch_both",
                                       styles={"flex": "1 1 0", "min-width": "0"}))
        row = layout_part(ctx, "grids", *columns, cls=pn.Row, sizing_mode="stretch_both")

        def draw():
            """Everything that follows the trace, from the latest render's data (the poll calls the
            latest render's draw, so a focus change needs no new poll). Returns whether it runs."""
            mine = job is not None and state.get("job") is job
            numbers = _numbers(res if res is not None else (job.partial() if mine else None), ctx.decode)
            running = mine and not job.done and res is None
            if message is not None:
                head.object, progress.object = message, ""
            else:
                head.object = self._head(ctx, numbers, tokens, auto=span == "auto")
                progress.object = _progress(job if mine else None, numbers, running)
            row.visible = message is None
            for kind in self.p.kinds:
                titles[kind].object = self._title(kind, numbers)
                grids[kind].param.update(**self._grid(ctx, kind, numbers, tokens, L))
            return running

        def poll():
            # Under hold(), so the grids' changes are sent when it ends: outside it, a JSComponent's
            # data changes made in a periodic callback stayed queued until the next document event
            # (measured: each poll showed the previous poll's grids, and the last never arrived).
            with hold():
                running = state["draw"]()
            if not running and state.get("poll") is not None:
                state["poll"].stop()
                state["poll"] = None

        state["draw"] = draw
        if draw() and streaming and state.get("poll") is None:
            state["poll"] = pn.state.add_periodic_callback(poll, period=POLL_MS)
        return layout_part(ctx, "layout", head, controls, row, sizing_mode="stretch_both", scroll=True,
                           css_classes=["lf-view-causal-trace"])

    def _title(self, kind: str, n: dict | None) -> str:
        """A map's title: what was restored, and its colour scale (white at p corrupted, full at the
        map's highest p: each map has its own, as in Meng et al.'s figures, so a small MLP peak shows)."""
        w = self.p.window
        text = TITLES[kind] + (f" ({w} layers around each)" if kind != "resid" and w > 1 else "")
        scale = ""
        if n is not None and kind in n["high"]:
            scale = (f" <span class='lf-scale lf-trace-scale'>{n['low']:.3f} <span class='lf-scale-bar'></span> "
                     f"<b>{n['high'][kind]:.3f}</b></span>")
        return f"<div class='lf-trace-title lf-trace-title-{kind}'>{esc(text)}{scale}</div>"

    def _head(self, ctx, n: dict | None, tokens: list[str], auto: bool = False) -> str:
        """Two short lines of figures; how to read the maps is in the head's tip (hover), so in a
        short card the maps keep the room."""
        if n is None:
            return (f"<div class='lf-trace-head'>{ctx.subject_label()} · the clean and corrupted runs…</div>")
        span = n["span"]
        words = "".join(tokens[i] for i in span)
        shown = words if len(words) <= SPAN_CHARS else words[:SPAN_CHARS - 1] + "…"
        token = esc(repr(n["token"]))
        tip = (f"p({n['token']!r}) with one state restored: colour from the corrupted run's p (white) to each map's "
               f"highest (full); cell text: p in %. Corrupted: {words!r} (positions {_ranges(span)}), noise "
               f"{self.p.noise:g} × σ(W_E), mean of {self.p.samples} noise sample(s). Click a cell to focus its "
               "layer and position.")
        return (
            f"<div class='lf-trace-head' title='{esc(tip)}'>{ctx.subject_label()} · traced "
            f"<code class='lf-trace-target'>{token}</code> ({'given' if self.p.target else 'clean top-1'}): "
            f"p <b class='lf-trace-clean'>{n['p_clean']:.3f}</b> clean → <b class='lf-trace-corrupt'>"
            f"{n['p_corrupt']:.3f}</b> corrupted<br>corrupted <span class='lf-corrupted'>{esc(repr(shown))}</span> "
            f"(positions {_ranges(span)}, marked *)"
            + (" · <span class='lf-trace-auto'>auto: all but the last token; type a subject to trace a "
               "fact</span>" if auto else "")
            + "</div>")

    def _grid(self, ctx, kind: str, n: dict | None, tokens: list[str], L: int) -> dict:
        T = len(tokens)
        span = set(n["span"]) if n else set()
        cols = [f"{i} {t}{' *' if i in span else ''}" for i, t in enumerate(tokens)]
        rows = [str(l) for l in range(L - 1, -1, -1)]
        if n is None:
            return dict(row_labels=rows, col_labels=cols, values=[[None] * T for _ in rows], texts=[], tips=[],
                        col_title=COL_TITLE)
        p = n["kinds"][kind]
        low = n["low"]
        scale = max(n["high"][kind] - low, 1e-12)
        values, texts, tips = [], [], []
        what = WHAT[kind]
        for l in range(L - 1, -1, -1):
            blocks = "" if kind == "resid" or self.p.window == 1 else _window_note(l, self.p.window, L)
            vrow, trow, tiprow = [], [], []
            for i in range(T):
                v = p[l, i]
                if np.isnan(v):
                    vrow.append(None)
                    trow.append("")
                    tiprow.append(f"block {l}, position {i} {tokens[i]!r}: not computed yet")
                    continue
                vrow.append(float(min(1.0, max(0.0, (v - low) / scale))))
                trow.append(f"{100 * v:.0f}")
                tiprow.append(f"{what} of block {l}{blocks} restored at position {i} {tokens[i]!r}"
                              f"{' (corrupted)' if i in span else ''}\np({n['token']!r}) = {v:.4f}\n"
                              f"indirect effect {v - n['p_corrupt']:+.4f} (corrupted {n['p_corrupt']:.4f}, clean "
                              f"{n['p_clean']:.4f})")
            values.append(vrow)
            texts.append(trow)
            tips.append(tiprow)
        return dict(row_labels=rows, col_labels=cols, values=values, texts=texts, tips=tips, col_title=COL_TITLE)


def _numbers(obj, decode) -> dict | None:
    """What the drawing needs from a finished Result or a running TraceResult (None: not started)."""
    if obj is None:
        return None
    from lensframe.ops.base import Result

    if isinstance(obj, Result):
        kinds = {k: obj[k] for k in obj.meta["kinds"]}
        n = dict(kinds=kinds, p_clean=float(obj["p_clean"]), p_corrupt=float(obj["p_corrupt"]),
                 span=[int(i) for i in obj["span"]], token=obj.meta["target_token"])
    else:
        kinds = {k: obj.mean(k) for k in obj.scores}
        n = dict(kinds=kinds, p_clean=obj.p_clean, p_corrupt=obj.p_corrupt, span=list(obj.span),
                 token=decode([obj.target])[0])
    # each map's colour runs from p corrupted to its own highest cell (at least a little above)
    high = {}
    for k, v in kinds.items():
        seen = v[~np.isnan(v)]
        high[k] = max(float(seen.max()) if seen.size else n["p_corrupt"], n["p_corrupt"] + 1e-3)
    n.update(low=n["p_corrupt"], high=high)
    return n


def _progress(job, n: dict | None, running: bool) -> str:
    if job is not None and job.error:
        return f"<div class='lf-error lf-trace-progress' data-state='error'>trace failed: {esc(job.error)}</div>"
    if not running:
        return "<div class='lf-trace-progress' data-state='done'></div>"
    part = job.partial()
    done, total = (part.rows_done, part.rows_total) if part is not None else (0, 0)
    pct = 100.0 * done / total if total else 0.0
    return (f"<div class='lf-trace-progress' data-state='running'>tracing <span class='lf-trace-bar'><span "
            f"style='width:{pct:.0f}%'></span></span> {pct:.0f}% ({done:,} of {total:,} restored runs)</div>")


def _span_text(span) -> str:
    if isinstance(span, list):
        return ",".join(str(i) for i in span)
    return span


def _ranges(positions) -> str:
    """[0, 1, 2, 5] as '0–2, 5'."""
    out, run = [], []
    for p in list(positions) + [None]:
        if run and (p is None or p != run[-1] + 1):
            out.append(f"{run[0]}–{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        if p is not None:
            run.append(p)
    return ", ".join(out)


def _window_note(layer: int, window: int, L: int) -> str:
    from lensframe.causal_trace import window_layers

    r = window_layers(layer, window, L)
    return f" (blocks {r[0]}–{r[-1]})" if len(r) > 1 else ""


def _hint(err) -> str:
    hint = getattr(err, "hint", None)
    return f"<br><small>{esc(hint)}</small>" if hint else ""
