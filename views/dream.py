"""dream: text deep dream (Bäuerle and Wexler 2020) of the focused neuron, run from the dashboard.

A Run button optimises a span of soft tokens to excite the target (lensframe.ops.dream) in a
background thread; the plot follows every step (soft and snapped activation against the best
dataset example's), with the evolving snapped text, a Stop button, and at the end the best snapped
text and the top tokens per position. A finished dream is stored: running it again with the same
target and settings shows it at once. The optimiser runs in lensframe/; this view only draws it.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from lensframe.graph import Node
from lensframe.ops.dream import DreamSettings, DreamTarget, check_dream

from .base import View, ViewParams, esc, html_pane
from .top_examples import examples_node, layer_issues


class Anneal(BaseModel):
    """Temperature schedule (docs/METHODS.md defaults): T = max(floor, start · decay^(step − warmup))."""

    model_config = ConfigDict(extra="forbid")
    start: float = Field(2.0, gt=0, description="temperature at the start")
    warmup: int = Field(200, ge=0, description="steps before the temperature decays")
    decay: float = Field(0.9995, gt=0, le=1, description="factor per step after the warm-up")
    floor: float = Field(0.1, gt=0, description="lowest temperature")


class DreamView(View):
    type = "dream"
    default_title = "Deep dream"
    description = "optimise an input to excite the focused neuron (text deep dream), live, against its best example"
    reads = ("layer", "neuron", "text")
    sets = ("sample", "text", "position")

    class Params(ViewParams):
        target: Literal["neuron", "direction", "logit"] = Field(
            "neuron", description="neuron: the focused neuron's activation; direction: the residual after the "
            "focused layer along that neuron's value vector; logit: the log-probability of `token`")
        token: Optional[str] = Field(None, description="target: logit: the token, as text (e.g. ' Paris')")
        start: Literal["example", "text", "random"] = Field(
            "example", description="the span starts as the neuron's best dataset example, a text, or random tokens")
        text: Optional[str] = Field(None, description="start: text: the starting text")
        span: int = Field(8, ge=1, description="input positions optimised")
        position: int = Field(-1, description="where the target is read, in the input (-1: the last token)")
        steps: int = Field(500, ge=1, description="optimisation steps per run")
        lr: float = Field(0.1, gt=0, description="Adam learning rate")
        temperature: Anneal = Field(default_factory=Anneal, description="temperature schedule")
        gumbel: bool = Field(False, description="add Gumbel noise before the softmax")
        seed: int = Field(0, ge=0, description="seed of the random start and the Gumbel noise")
        top_k: int = Field(5, ge=1, le=20, description="tokens shown per position in the result")
        layers: Union[Literal["all"], list[int]] = Field(
            "all", description="layers whose top examples are indexed (the start and the comparison)")
        k: int = Field(10, ge=1, le=100, description="examples kept per neuron (shared with top_examples)")

    # --- what the dream is -------------------------------------------------------------------
    def settings(self) -> DreamSettings:
        t = self.p.temperature
        return DreamSettings(steps=self.p.steps, lr=self.p.lr, temp_start=t.start, warmup=t.warmup, decay=t.decay,
                             temp_floor=t.floor, gumbel=self.p.gumbel, seed=self.p.seed)

    def target(self, layer: int | None, neuron: int | None, token_id: int | None = None, value_vector=None) -> DreamTarget:
        at = self.p.position
        if self.p.target == "logit":
            return DreamTarget("logit", index=token_id, position=at)
        if self.p.target == "direction":
            return DreamTarget("direction", layer=layer, direction=tuple(float(x) for x in value_vector), position=at)
        return DreamTarget("neuron", layer=layer, index=neuron, position=at)

    def resolve_target(self, loaded, layer: int | None, neuron: int | None) -> DreamTarget:
        """The target on a loaded model: the token's id for a logit target, the neuron's value vector
        for a direction target (raises DreamError for a token that is not one token)."""
        from lensframe.dreams import DreamError

        token_id, value_vector = None, None
        if self.p.target == "logit":
            ids = loaded.tokenizer(self.p.token, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise DreamError([(f"token {self.p.token!r} is {len(ids)} tokens for this tokenizer; a logit target "
                                   "needs exactly one", None)])
            token_id = ids[0]
        if self.p.target == "direction":
            value_vector = loaded.adapter.value_vectors(layer)[neuron].detach().float().cpu().numpy()
        return self.target(layer, neuron, token_id, value_vector)

    def examples_node(self, max_tokens: int) -> Node:
        """The same node as a top_examples view with the same layers and k: shared, not recomputed."""
        return examples_node(self, max_tokens)

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), self.examples_node(max_tokens)]

    def check(self, info):
        issues = super().check(info) + layer_issues(self.p.layers, info)
        if self.p.pin.neuron is not None and self.p.pin.neuron >= info.d_mlp:
            issues.append((("pin", "neuron"), f"neuron {self.p.pin.neuron} is out of range ({info.d_mlp} neurons "
                           f"per layer: 0..{info.d_mlp - 1})", None))
        if self.p.target == "logit" and not self.p.token:
            issues.append((("token",), "target: logit needs a token", "set `token:` to the token's text, e.g. ' Paris'"))
        if self.p.start == "text" and not self.p.text:
            issues.append((("text",), "start: text needs a text", "set `text:` to the starting text"))
        if self.p.start == "example" and self.p.target != "neuron":
            issues.append((("start",), f"start: example needs target: neuron (target is {self.p.target})",
                           "start from a text or from random tokens"))
        # the span against the context, the logit target against the head (targets come from the focus later)
        probe = DreamTarget("logit", index=0, position=self.p.position) if self.p.target == "logit" else \
            DreamTarget("neuron", layer=0, index=0, position=self.p.position)
        for msg, hint in check_dream(info, probe, self.settings(), self.p.span):
            key = "span" if "span" in msg or "context" in msg else "position" if "position" in msg else "target"
            issues.append(((key,), msg, hint))
        return issues

    # --- drawing -----------------------------------------------------------------------------
    def render(self, ctx):
        import panel as pn

        from lensframe import dreams

        board, model = ctx.board, self.model
        ctx.result(self.examples_node(board.spec.dataset.max_tokens))  # NotReady until the dataset pass is done
        layer, neuron = ctx.layer(), ctx.get("neuron")  # the layer the neurons view shows (default 0)
        if self.p.target != "logit" and neuron is None:
            return html_pane("<div class='lf-hint'>click a neuron (in the neurons or ffn_vocab view) to dream of it</div>",
                             sizing_mode="stretch_width")
        try:
            target = self.resolve_target(board.executor.model(model), layer, neuron)
        except dreams.DreamError as err:
            return html_pane(f"<div class='lf-error'>{esc(err)}</div>", sizing_mode="stretch_width")
        settings = self.settings()
        best = dreams.best_example(board, model, layer, neuron) if self.p.target == "neuron" else None
        state = ctx.state
        if state.get("poll") is not None:  # a re-render (focus change): the old panes are gone
            state["poll"].stop()
            state["poll"] = None
        old = state.get("job")
        if old is not None and not old.done and (old.target != target or old.settings != settings):
            old.stop()  # nobody would see it, and each step takes the model's lock from the other views
        if not state.get("cleanup"):  # a closed tab stops its dream too
            state["cleanup"] = True
            pn.state.on_session_destroyed(lambda _ctx: state.get("job") and state["job"].stop())
        if self.p.start == "example" and self.p.target == "neuron" and best is None:
            indexed = "all" if self.p.layers == "all" else ", ".join(map(str, self.p.layers))
            return html_pane(f"<div class='lf-hint lf-dream-unindexed'>layer {layer} has no top examples to start from "
                             f"(indexed layers: {indexed}): focus a neuron of one of those layers, or set "
                             f"<code>start: text</code> or <code>random</code></div>", sizing_mode="stretch_width")

        head = html_pane(self._head(target, best, settings), sizing_mode="stretch_width")
        run = pn.widgets.Button(name="Run", button_type="primary", width=80, css_classes=["lf-dream-run"])
        stop = pn.widgets.Button(name="Stop", width=80, disabled=True, css_classes=["lf-dream-stop"])
        status = html_pane("", sizing_mode="stretch_width")
        plot = html_pane("", sizing_mode="stretch_width")
        live = html_pane("", sizing_mode="stretch_width")
        final = html_pane("", sizing_mode="stretch_width")
        controls = [run, stop]
        if best is not None:
            show = pn.widgets.Button(name="Show best example", width=150, css_classes=["lf-dream-example"])
            show.on_click(lambda _: ctx.set(sample=best.sample, text=None, position=best.position))
            controls.append(show)
        probe = ctx.probe
        if probe is not None:  # the focused probe's last `span` tokens as the start
            from_probe = pn.widgets.Button(label="Run from the probe", width=150, css_classes=["lf-dream-from-probe"])
            from_probe.on_click(lambda _: on_run(_, "text", probe.text))
            controls.append(from_probe)

        def draw():
            job = state.get("job")
            mine = job is not None and job.target == target and job.settings == settings
            running = mine and not job.done
            run.disabled, stop.disabled = running, not running
            if not mine:
                status.object = "<div class='lf-hint lf-dream-status'>press Run to dream</div>"
                plot.object = live.object = final.object = ""
                return
            steps = list(job.steps)
            plot.object = chart_svg(steps, best.value if best else None, settings.steps)
            if steps:
                live.object = self._live(ctx, steps[-1])
            began = job.start_at
            origin = (f"<div class='lf-hint lf-dream-start'>start: {esc(began.note)} · span {len(began.ids)}"
                      + (f" of {self.p.span} (the peak is at position {len(began.ids) - 1} of its text)"
                         if len(began.ids) < self.p.span else "") + "</div>")
            if job.error:
                status.object = f"<div class='lf-error lf-dream-status'>dream failed: {esc(job.error)}</div>"
            elif running:
                status.object = (f"<div class='lf-dream-status' data-state='running'>running: step "
                                 f"{max(0, len(steps) - 1)} of {settings.steps}</div>{origin}")
            else:
                how = "from the store (same target and settings)" if job.from_store else \
                      ("stopped" if job.trace.stopped else "done") + f" in {job.trace.seconds:.1f}s"
                status.object = f"<div class='lf-dream-status' data-state='done'>{esc(how)}</div>{origin}"
                final.object = self._final(ctx, job.trace, best)

        def poll():
            job = state.get("job")
            finished = job is None or job.done  # read before drawing, so the last draw shows the end
            draw()
            if finished and state.get("poll") is not None:
                state["poll"].stop()
                state["poll"] = None

        def start_polling():
            if state.get("poll") is None:
                state["poll"] = pn.state.add_periodic_callback(poll, period=250)

        def on_run(_, start_kind=self.p.start, text=self.p.text):
            old = state.get("job")
            if old is not None and not old.done:
                old.stop()
            try:
                start = dreams.resolve_start(board, model, target, self.p.span, start_kind, text, self.p.seed)
                dreams.check(board, model, target, settings, len(start.ids), len(start.prefix))
            except dreams.DreamError as err:
                status.object = f"<div class='lf-error lf-dream-status'>{esc(err)}</div>"
                return
            state["job"] = dreams.DreamJob(board, model, target, settings, start).start()
            draw()
            start_polling()

        def on_stop(_):
            job = state.get("job")
            if job is not None:
                job.stop()

        run.on_click(on_run)
        stop.on_click(on_stop)
        draw()
        job = state.get("job")
        if job is not None and not job.done:
            start_polling()
        return pn.Column(head, pn.Row(*controls), status, plot, live, final, sizing_mode="stretch_both",
                         scroll=True, css_classes=["lf-view-dream"])

    def _head(self, target: DreamTarget, best, settings: DreamSettings) -> str:
        against = (f" · best dataset example <b class='lf-dream-best'>{best.value:+.3f}</b> (sample {best.sample}, "
                   f"position {best.position})") if best else ""
        return (f"<div class='lf-dream-head'>dream of <b class='lf-dream-target'>{esc(target.label())}</b>{against}<br>"
                f"<small>start: {esc(self.p.start)} · span {self.p.span} · {settings.steps} steps · Adam lr {settings.lr} · "
                f"T {settings.temp_start}→{settings.temp_floor} (×{settings.decay} after {settings.warmup})"
                f"{' · Gumbel' if settings.gumbel else ''}</small></div>")

    def _live(self, ctx, step) -> str:
        chips = "".join(f"<span class='lf-chip lf-dream-token'>{esc(t)}</span>" for t in ctx.decode(step.ids))
        soft = "–" if math.isnan(step.soft) else f"{step.soft:+.3f}"
        return (f"<div class='lf-dream-text' data-step='{step.step}'><div class='lf-sub'>snapped text at step {step.step} "
                f"(T={step.temperature:.3f}): soft {soft}, snapped {step.snapped:+.3f}</div>{chips}</div>")

    def _final(self, ctx, trace, best) -> str:
        b = trace.best
        ratio = f" = <b class='lf-dream-ratio'>{b.snapped / best.value:.2f}×</b> the best dataset example" \
            if best and best.value > 0 else ""
        chips = "".join(f"<span class='lf-chip'>{esc(t)}</span>" for t in ctx.decode(b.ids))
        rows = []
        for i, (ids, probs) in enumerate(zip(trace.top_ids[:, : self.p.top_k], trace.top_probs[:, : self.p.top_k])):
            cells = "".join(f"<td><span class='lf-chip'>{esc(t)}</span> <small>{p:.2f}</small></td>"
                            for t, p in zip(ctx.decode(ids), probs))
            rows.append(f"<tr><td>{i}</td>{cells}</tr>")
        return (f"<div class='lf-dream-result lf-edit-result'><div class='lf-sub'>best snapped text (step {b.step}): "
                f"<b class='lf-dream-best-snapped'>{b.snapped:+.3f}</b>{ratio}</div>{chips}"
                f"<div class='lf-sub'>top tokens per position at the end</div><table>{''.join(rows)}</table></div>")


def chart_svg(steps, reference: float | None, budget: int, width: int = 420, height: int = 150) -> str:
    """Soft (blue) and snapped (orange) target per step, the best dataset example dashed."""
    pad = 34
    values = [s.snapped for s in steps] + [s.soft for s in steps if not math.isnan(s.soft)]
    if reference is not None:
        values.append(reference)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.12 * (hi - lo)  # room for the labels above the top line
    plot_h = height - 30  # the axis labels and the legend go below
    x = lambda i: pad + (width - pad - 4) * i / max(1, budget)  # noqa: E731
    y = lambda v: 4 + plot_h * (hi - v) / (hi - lo)  # noqa: E731

    def line(points, color, cls):
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in points if not math.isnan(v))
        return f"<polyline class='{cls}' points='{pts}' fill='none' stroke='{color}' stroke-width='1.5'/>"

    ref = ""
    if reference is not None:
        ry = y(reference)
        ref = (f"<line class='lf-dream-ref' x1='{pad}' x2='{width - 4}' y1='{ry:.1f}' y2='{ry:.1f}' "
               f"stroke='#2a9d3a' stroke-dasharray='4 3'/><text x='{width - 4}' y='{ry - 3 if ry > 14 else ry + 11:.1f}' "
               f"font-size='10' text-anchor='end' fill='#2a9d3a'>best example {reference:+.2f}</text>")
    last = steps[-1].step if steps else 0
    return (f"<svg class='lf-dream-plot' data-steps='{len(steps)}' data-last-step='{last}' width='{width}' height='{height}'>"
            f"<line x1='{pad}' x2='{pad}' y1='4' y2='{plot_h + 4}' stroke='#999'/>"
            f"<text x='{pad - 3}' y='12' font-size='10' text-anchor='end'>{hi:.3g}</text>"
            f"<text x='{pad - 3}' y='{plot_h + 4}' font-size='10' text-anchor='end'>{lo:.3g}</text>"
            f"<text x='{pad}' y='{plot_h + 16}' font-size='10'>step 0</text>"
            f"<text x='{width - 4}' y='{plot_h + 16}' font-size='10' text-anchor='end'>{budget}</text>{ref}"
            + line([(s.step, s.soft) for s in steps], "#1f6fd1", "lf-dream-soft")
            + line([(s.step, s.snapped) for s in steps], "#e4572e", "lf-dream-snapped")
            + f"<text x='{pad}' y='{height - 2}' font-size='10' fill='#1f6fd1'>— soft input</text>"
            + f"<text x='{pad + 80}' y='{height - 2}' font-size='10' fill='#e4572e'>— snapped text</text>"
            + f"<text x='{pad + 170}' y='{height - 2}' font-size='10' fill='#2a9d3a'>- - best dataset example</text></svg>")
