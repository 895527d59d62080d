"""dream: text deep dream (Bäuerle and Wexler 2020) of the focused neuron, run from the dashboard.

A Run button optimises a span of soft tokens to excite the target (lensframe.ops.dream) in a
background thread; a HoloViews chart follows every step (the soft input's value, and the snapped
text's against the best dataset example's: DreamChart says why in two panels), with the evolving
snapped text, a Stop button, and at the end the best snapped text and the top tokens per position.
A finished dream is stored: running it again with the same target and settings shows it at once.
The optimiser runs in lensframe/; this view only draws it.

Targets that compare the model with another (`other`, the audit game's base): logit_diff raises
log p(model) − log p(other) of a token, kl the KL divergence of their next-token distributions,
edit_direction the focused layer's neurons along the top input direction of the change to its MLP
output matrix (lensframe.weight_directions).
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lensframe.graph import Node
from lensframe.dream_spec import DreamSettings, DreamTarget, check_dream

from .base import LIVE_MODEL_NOTE, View, ViewParams, esc, html_part, html_slot, layout_part, neuron_label
from .top_examples import examples_node, layer_issues


class Anneal(BaseModel):
    """Temperature schedule (docs/METHODS.md defaults): T = max(floor, start · decay^(step − warmup))."""

    model_config = ConfigDict(extra="forbid")
    start: float = Field(DreamSettings.temp_start, gt=0, description="temperature at the start")
    warmup: int = Field(DreamSettings.warmup, ge=0, description="steps before the temperature decays")
    decay: float = Field(DreamSettings.decay, gt=0, le=1, description="factor per step after the warm-up")
    floor: float = Field(DreamSettings.temp_floor, gt=0, description="lowest temperature")


class DreamView(View):
    export_note = LIVE_MODEL_NOTE
    type = "dream"
    default_title = "Deep dream"
    description = "optimise an input to excite the focused neuron (text deep dream), live, against its best example"
    reads = ("layer", "neuron", "text")
    sets = ("sample", "text", "position")
    model_params: ClassVar[tuple[str, ...]] = ("other",)

    class Params(ViewParams):
        target: Literal["neuron", "direction", "logit", "logit_diff", "kl", "edit_direction"] = Field(
            "neuron", description="neuron: the focused neuron's activation; direction: the residual after the "
            "focused layer along that neuron's value vector; logit: the log-probability of `token`; logit_diff: "
            "log p(model) − log p(other) of `token`; kl: KL(model ‖ other) of the next token; edit_direction: the "
            "focused layer's neurons along the top input direction of the change to its MLP output matrix")
        token: Optional[str] = Field(None, description="target: logit or logit_diff: the token, as text (e.g. ' Paris')")
        other: Optional[str] = Field(None, description="logit_diff, kl, edit_direction: the model compared with "
                                     "`model`, e.g. the base (default: the spec's other model)")
        flip: bool = Field(False, description="edit_direction: raise the opposite side of the direction")
        start: Literal["example", "text", "random"] = Field(
            "example", description="the span starts as the neuron's best dataset example, a text, or random tokens")
        text: Optional[str] = Field(None, description="start: text: the starting text")
        span: int = Field(8, ge=1, description="input positions optimised")
        position: int = Field(-1, description="where the target is read, in the input (-1: the last token)")
        steps: int = Field(DreamSettings.steps, ge=1, description="optimisation steps per run")
        lr: float = Field(DreamSettings.lr, gt=0, description="Adam learning rate")
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

    @property
    def compares(self) -> bool:
        """Whether the target compares the model with another."""
        return self.p.target in TWO_MODEL_TARGETS

    @property
    def other(self) -> str | None:
        """The reference model of a comparing target: `other`, else the spec's other model."""
        if not self.compares:
            return None
        return self.p.other or next((name for name in self.infos if name != self.model), None)

    def target(self, layer: int | None, neuron: int | None, token_id: int | None = None, value_vector=None) -> DreamTarget:
        at = self.p.position
        if self.p.target == "logit":
            return DreamTarget("logit", index=token_id, position=at)
        if self.p.target == "logit_diff":
            return DreamTarget("logit_diff", index=token_id, position=at, other=self.other)
        if self.p.target == "kl":
            return DreamTarget("kl", position=at, other=self.other)
        if self.p.target == "direction":
            return DreamTarget("direction", layer=layer, direction=tuple(float(x) for x in value_vector), position=at)
        return DreamTarget("neuron", layer=layer, index=neuron, position=at)

    def resolve_target(self, board, layer: int | None, neuron: int | None, direction=None) -> DreamTarget:
        """The target on the loaded model: the token's id for a logit target, the neuron's value vector
        for a direction target, ΔW's top input direction at `layer` for edit_direction (or
        `direction` when given: no base needed). Raises DreamError for a token that is not one token,
        or a layer whose MLP output matrix did not change."""
        from lensframe import dreams

        loaded = board.executor.model(self.model)
        if self.p.target == "edit_direction":
            return dreams.edit_target(board, self.model, self.other, layer, self.p.position, self.p.flip, direction)
        token_id, value_vector = None, None
        if self.p.target in ("logit", "logit_diff"):
            ids = loaded.tokenizer(self.p.token, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                pieces = " + ".join(repr(t) for t in loaded.tokenizer.batch_decode([[i] for i in ids]))
                raise dreams.DreamError([(f"token {self.p.token!r} is {len(ids)} tokens for this tokenizer"
                                          f"{f' ({pieces})' if ids else ''}; a {self.p.target} target needs exactly one",
                                          "use one of its pieces, e.g. the first" if len(ids) > 1 else None)])
            token_id = ids[0]
        if self.p.target == "direction":
            value_vector = loaded.adapter.value_vectors(layer)[neuron].detach().float().cpu().numpy()
        return self.target(layer, neuron, token_id, value_vector)

    def label(self, target: DreamTarget) -> str:
        return target_label(target, self.model, self.p.token)

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
        if self.p.target in ("logit", "logit_diff") and not self.p.token:
            issues.append((("token",), f"target: {self.p.target} needs a token",
                           "set `token:` to the token's text, e.g. ' Paris'"))
        if self.compares:
            issues += self._other_issues(info)
        elif self.p.other is not None:
            issues.append((("other",), f"`other` is for the targets that compare models (target is {self.p.target})",
                           "set target: logit_diff, kl or edit_direction, or remove it"))
        if self.p.flip and self.p.target != "edit_direction":
            issues.append((("flip",), f"`flip` is for target: edit_direction (target is {self.p.target})", None))
        if self.p.start == "text" and not self.p.text:
            issues.append((("text",), "start: text needs a text", "set `text:` to the starting text"))
        if self.p.start == "example" and self.p.target != "neuron":
            issues.append((("start",), f"start: example needs target: neuron (target is {self.p.target})",
                           "start from a text or from random tokens"))
        # the span against the context, the logit target against the head (targets come from the focus later)
        probe = DreamTarget("logit", index=0, position=self.p.position) if self.p.target in ("logit", "logit_diff", "kl") \
            else DreamTarget("neuron", layer=0, index=0, position=self.p.position)
        for msg, hint in check_dream(info, probe, self.settings(), self.p.span):
            key = "span" if "span" in msg or "context" in msg else "position" if "position" in msg else "target"
            issues.append(((key,), msg.replace("a logit target", f"a {self.p.target} target"), hint))
        return issues

    def _other_issues(self, info) -> list:
        """The reference model: present, not the model itself, same vocabulary (edit_direction: same shape)."""
        other = self.other
        if other is None:
            return [(("other",), f"target: {self.p.target} compares two models, and the spec has one",
                     "add the base model under `models:` and name it with `other:`")]
        if other == self.model:
            return [(("other",), f"compares model {self.model!r} with itself", "name the other model (e.g. the base)")]
        theirs = self.infos.get(other)
        if theirs is None:
            return []  # an unknown name is the spec validator's message
        if theirs.vocab_size != info.vocab_size:
            return [(("other",), f"models {self.model!r} and {other!r} have different vocabularies "
                     f"({info.vocab_size} and {theirs.vocab_size} tokens): both must read the same soft tokens", None)]
        shape = lambda i: (i.family, i.n_layers, i.d_model, i.d_mlp)  # noqa: E731
        if self.p.target == "edit_direction" and shape(info) != shape(theirs):
            return [(("other",), f"models {self.model!r} and {other!r} differ in shape ({shape(info)} vs "
                     f"{shape(theirs)}): edit_direction needs two versions of one model", None)]
        if self.p.target != "edit_direction" and not theirs.has_lm_head:
            return [(("other",), f"model {other!r} has no LM head", None)]
        return []

    # --- drawing -----------------------------------------------------------------------------
    def render(self, ctx):
        import panel as pn

        from lensframe import dreams

        board, model = ctx.board, self.model
        ctx.result(self.examples_node(board.spec.dataset.max_tokens))  # NotReady until the dataset pass is done
        layer, neuron = ctx.layer(), ctx.get("neuron")  # the layer the neurons view shows (default 0)
        settings = self.settings()
        state = ctx.state
        target = best = message = None
        if self.p.target in ("neuron", "direction") and neuron is None:
            message = "<div class='lf-hint'>click a neuron (in the neurons or ffn_vocab view) to dream of it</div>"
        else:
            try:
                target = self.resolve_target(board, layer, neuron)
            except dreams.DreamError as err:
                message = f"<div class='lf-error'>{esc(err)}</div>"
        if target is not None and self.p.target == "neuron":
            best = dreams.best_example(board, model, layer, neuron)
            if best is None and self.p.start == "example":
                indexed = "all" if self.p.layers == "all" else ", ".join(map(str, self.p.layers))
                message = (f"<div class='lf-hint lf-dream-unindexed'>layer {layer} has no top examples to start from "
                           f"(indexed layers: {indexed}): focus a neuron of one of those layers, or set "
                           f"<code>start: text</code> or <code>random</code></div>")
        old = state.get("job")
        if old is not None and not old.done and (old.target != target or old.settings != settings):
            old.stop()  # nobody would see it, and each step takes the model's lock from the other views
        if not state.get("cleanup"):  # a closed tab stops its dream too
            state["cleanup"] = True
            pn.state.on_session_destroyed(lambda _ctx: state.get("job") and state["job"].stop())
        ready = message is None
        probe = ctx.probe

        # Every part exists from the first render on; a focus change sets their data and
        # visibility, and the chart is fed through streams (no new Bokeh models).
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

        notice = html_part(ctx, "message", message or "", visible=not ready, sizing_mode="stretch_width")
        head = html_part(ctx, "head", self._head(target, best, settings) if ready else "", visible=ready,
                         sizing_mode="stretch_width")
        run = ctx.part("run", pn.widgets.Button, on_click=on_run, init={
            "label": "Run", "color": "primary", "width": 80, "css_classes": ["lf-dream-run"]})
        stop = ctx.part("stop", pn.widgets.Button, on_click=on_stop, init={
            "label": "Stop", "width": 80, "disabled": True, "css_classes": ["lf-dream-stop"]})
        show = ctx.part("show", pn.widgets.Button, visible=best is not None, on_click=lambda _: best and ctx.set(
            sample=best.sample, text=None, position=best.position), init={
            "label": "Show best example", "width": 150, "css_classes": ["lf-dream-example"]})
        # the focused probe's last `span` tokens as the start
        from_probe = ctx.part("from-probe", pn.widgets.Button, visible=probe is not None,
                              on_click=lambda _: probe and on_run(_, "text", probe.text), init={
            "label": "Run from the probe", "width": 150, "css_classes": ["lf-dream-from-probe"]})
        # a FlexBox wraps the buttons onto a second line in a narrow card rather than cutting them
        controls = layout_part(ctx, "controls", run, stop, show, from_probe, cls=pn.FlexBox, gap="4px",
                               sizing_mode="stretch_width")
        controls.visible = ready
        status = html_slot(ctx, "status")
        chart = DreamChart(ctx, self.p.steps)
        live = html_slot(ctx, "live")
        final = html_slot(ctx, "final")

        def draw():
            """Everything that follows the job, from the latest render's data (the poll calls the
            latest render's draw, so a focus change needs no new poll)."""
            job = state.get("job")
            mine = ready and job is not None and job.target == target and job.settings == settings
            running = mine and not job.done
            run.disabled, stop.disabled = running or not ready, not running
            chart.feed(job if mine else None, best.value if best else None, target, model)
            if not mine:
                # a hidden part keeps no text: the page (and its tests) find nothing stale in it
                status.param.update(visible=ready, object="<div class='lf-hint lf-dream-status'>press Run to dream</div>"
                                    if ready else "")
                live.param.update(visible=False, object="")
                final.param.update(visible=False, object="")
                return
            steps = list(job.steps)
            if steps:
                live.param.update(visible=True, object=self._live(ctx, steps[-1]))
            began = job.start_at
            origin = (f"<div class='lf-hint lf-dream-start'>start: {esc(began.note)} · span {len(began.ids)}"
                      + (f" of {self.p.span} (the peak is at position {len(began.ids) - 1} of its text)"
                         if len(began.ids) < self.p.span else "") + "</div>")
            if job.error:
                text = f"<div class='lf-error lf-dream-status'>dream failed: {esc(job.error)}</div>"
            elif running:
                text = (f"<div class='lf-dream-status' data-state='running'>running: step "
                        f"{max(0, len(steps) - 1)} of {settings.steps}</div>{origin}")
            else:
                how = "from the store (same target and settings)" if job.from_store else \
                      ("stopped" if job.trace.stopped else "done") + f" in {job.trace.seconds:.1f}s"
                text = f"<div class='lf-dream-status' data-state='done'>{esc(how)}</div>{origin}"
            status.param.update(visible=True, object=text)
            if job.done and job.trace is not None:
                final.param.update(visible=True, object=self._final(ctx, job.trace, best))
            else:
                final.param.update(visible=False, object="")

        def poll():
            job = state.get("job")
            finished = job is None or job.done  # read before drawing, so the last draw shows the end
            state["draw"]()
            if finished and state.get("poll") is not None:
                state["poll"].stop()
                state["poll"] = None

        def start_polling():
            if state.get("poll") is None:
                state["poll"] = pn.state.add_periodic_callback(poll, period=250)

        state["draw"] = draw
        draw()
        job = state.get("job")
        if job is not None and not job.done:
            start_polling()
        return layout_part(ctx, "layout", notice, head, controls, status, chart.pane, live, final,
                           sizing_mode="stretch_both", scroll=True, css_classes=["lf-view-dream"])

    def _head(self, target: DreamTarget, best, settings: DreamSettings) -> str:
        against = (f" · best dataset example <b class='lf-dream-best'>{best.value:+.3f}</b> (sample {best.sample}, "
                   f"position {best.position})") if best else ""
        return (f"<div class='lf-dream-head'>dream of <b class='lf-dream-target'>{esc(self.label(target))}</b>{against}<br>"
                f"<small>start: {esc(self.p.start)} · span {self.p.span} · {settings.steps} steps · Adam lr {settings.lr} · "
                f"T {settings.temp_start}→{settings.temp_floor} (×{settings.decay} after {settings.warmup})"
                f"{' · Gumbel' if settings.gumbel else ''}</small></div>")

    def _live(self, ctx, step) -> str:
        chips = "".join(f"<span class='lf-chip lf-dream-token'>{chip(t)}</span>" for t in ctx.decode(step.ids))
        soft = "–" if math.isnan(step.soft) else f"{step.soft:+.3f}"
        return (f"<div class='lf-dream-text' data-step='{step.step}'><div class='lf-sub'>snapped text at step {step.step} "
                f"(T={step.temperature:.3f}): soft {soft}, snapped {step.snapped:+.3f}</div>{chips}</div>")

    def _final(self, ctx, trace, best) -> str:
        b = trace.best
        ratio = f" = <b class='lf-dream-ratio'>{b.snapped / best.value:.2f}×</b> the best dataset example" \
            if best and best.value > 0 else ""
        chips = "".join(f"<span class='lf-chip'>{chip(t)}</span>" for t in ctx.decode(b.ids))
        # one line per position whose chips wrap: a table of top_k columns is wider than the card
        rows = []
        for i, (ids, probs) in enumerate(zip(trace.top_ids[:, : self.p.top_k], trace.top_probs[:, : self.p.top_k])):
            cells = "".join(f"<span class='lf-chip'>{chip(t)} <small>{p:.2f}</small></span>"
                            for t, p in zip(ctx.decode(ids), probs))
            rows.append(f"<div class='lf-dream-top-row'><span class='lf-dream-pos'>{i}</span>{cells}</div>")
        return (f"<div class='lf-dream-result'><div class='lf-sub'>best snapped text (step {b.step}): "
                f"<b class='lf-dream-best-snapped'>{b.snapped:+.3f}</b>{ratio}</div>{chips}"
                f"<div class='lf-sub'>top tokens per position at the end (probability)</div>{''.join(rows)}</div>")


def chip(token: str) -> str:
    """A token as a chip shows it: a newline as ↵ (a chip keeps white space, so a raw newline
    would make it a tall blank), escaped."""
    return esc(token.replace("\n", "↵")) or "∅"


TWO_MODEL_TARGETS = ("logit_diff", "kl", "edit_direction")  # the view's targets that read `other`


def target_label(target: DreamTarget, model: str | None = None, token: str | None = None) -> str:
    """The dream's target as the views write it (neuron ids as L7/N808; the models by name, the
    token as its text), e.g. "log p(suspect) − log p(base) of ' banana'"."""
    if target.kind != "neuron":
        return target.label(model, token)
    at = "" if target.position == -1 else f" at position {target.position}"
    return f"neuron {neuron_label(target.layer, target.index)}{at}"


def value_label(target: DreamTarget | None, model: str | None = None) -> str:
    """The chart's y-axis title: what the dream maximises."""
    if target is None:
        return "target"
    if target.kind == "neuron":
        return f"activation of {neuron_label(target.layer, target.index)}"
    if target.kind == "logit":
        return f"log p(token {target.index})"
    if target.kind == "logit_diff":
        return f"log p({model or 'model'}) − log p({target.other}) (nats)"
    if target.kind == "kl":
        return f"KL({model or 'model'} ‖ {target.other}) (nats)"
    if target.kind == "edit_direction":
        return f"L{target.layer} neurons · {'−' if target.sign < 0 else ''}v"
    return f"residual · v after layer {target.layer}"


CHART_HEIGHT = 170  # px per panel (the lower one 20 more, for its step axis title)


class DreamChart:
    """The optimisation trace as two panels sharing the step axis: the soft input's value above,
    the snapped text's below with the best dataset example dashed.

    Why two panels rather than two y-axes or normalised values: the soft input is a mixture of
    embeddings, not a text, and its value runs far from the others (≈200 against ≈3 for a SmolLM2
    neuron), so on one axis the snapped curve is a flat line at the bottom. The comparison that
    matters, the dream's text against the best dataset example, is between two real texts on one
    scale, so those two share a panel; the soft curve shows how the optimisation is going, on its
    own scale. A second y-axis on one panel would let the curves cross where the values do not,
    and normalising would hide the values the head and the result quote.

    Built once per session (ctx.keep); each poll streams only the steps the chart has not seen
    (HoloViews Buffers: Bokeh appends the rows to the same source), and a new job or target clears
    the buffers rather than building a new plot. The panels are two single-figure panes over the
    same fixed step range, not one hv.Layout: a Bokeh GridPlot hidden when the page loads (before
    a neuron is focused) never finishes rendering, so the document never goes idle, Panel never
    marks the session connected, and every later stream update is rescheduled forever."""

    def __init__(self, ctx, budget: int):
        import panel as pn

        from .widgets import hv_bokeh

        hv = hv_bokeh()
        self.budget = budget
        # what the y axes name, read by the plot callbacks on each update
        self.labels = ctx.keep("chart-labels", lambda: {"y": "target"})
        self.fed = ctx.keep("chart-fed", lambda: {"job": None, "rows": 0})  # which job's steps the buffers hold
        self.soft = ctx.keep("chart-soft", lambda: hv.streams.Buffer(_frame([], "soft"), length=budget + 1, index=False))
        self.snapped = ctx.keep("chart-snapped", lambda: hv.streams.Buffer(_frame([], "snapped"), length=budget + 1,
                                                                           index=False))
        self.reference = ctx.keep("chart-reference", lambda: hv.streams.Pipe(data=[]))
        soft = ctx.keep("chart-soft-plot", lambda: hv.DynamicMap(
            lambda data: self._panel(data, "soft", "soft input", "#1f6fd1", xlabel=""), streams=[self.soft]))
        snapped = ctx.keep("chart-snapped-plot", lambda: hv.DynamicMap(
            lambda data: self._panel(data, "snapped", "snapped text", "#e4572e", xlabel="step"),
            streams=[self.snapped]) * hv.DynamicMap(
            lambda data: hv.HLines(list(data)).opts(color="#2a9d3a", line_width=1.5, line_dash="dashed"),
            streams=[self.reference]))
        # the panes' own params are never set after this (the Column around them is shown and
        # hidden): see top_examples.histogram_part for why
        panes = [ctx.part(f"chart-{name}", pn.pane.HoloViews, init={
            "object": plot, "backend": "bokeh", "sizing_mode": "stretch_width", "height": height})
            for name, plot, height in (("soft", soft, CHART_HEIGHT), ("snapped", snapped, CHART_HEIGHT + 20))]
        # what the colours mean, in HTML so that it wraps in a narrow card (a Bokeh title does not)
        self.key = html_slot(ctx, "chart-key")
        self.pane = layout_part(ctx, "chart", *panes, self.key, sizing_mode="stretch_width", visible=False,
                                css_classes=["lf-dream-plot"])

    def _panel(self, data, column: str, title: str, color: str, xlabel: str):
        from .widgets import hv_bokeh

        return hv_bokeh().Curve(data, "step", [column, "temperature"]).opts(
            title=title, xlabel=xlabel, ylabel=self.labels["y"], xlim=(0, self.budget), framewise=True,
            responsive=True, height=CHART_HEIGHT + (20 if xlabel else 0), hooks=[_align_left], color=color,
            line_width=2, tools=["hover"], default_tools=[], toolbar=None, show_grid=True,
            fontsize={"title": "10pt", "labels": "9pt", "ticks": "8pt"},
            hover_tooltips=[("step", "@step"), (column, f"@{column}{{+0.000}}"), ("temperature", "@temperature{0.000}")])

    def feed(self, job, reference: float | None, target, model: str | None = None) -> None:
        """Show `job`'s steps (None: nothing), sending only those not sent yet."""
        label = value_label(target, model)
        if self.fed.get("job") is not job or self.labels["y"] != label:
            self.labels["y"] = label
            if self.fed.get("rows"):
                self.soft.clear()
                self.snapped.clear()
            self.fed.update(job=job, rows=0)
        refs = [] if reference is None or job is None else [float(reference)]
        if self.reference.data != refs:
            self.reference.send(refs)
        steps = list(job.steps) if job is not None else []
        new = steps[self.fed["rows"]:]
        if new:
            self.soft.send(_frame(new, "soft"))
            self.snapped.send(_frame(new, "snapped"))
            self.fed["rows"] = len(steps)
        self.pane.visible = bool(steps)
        best = "" if not refs else (f" · <span style='color:#2a9d3a'>- - best dataset example</span> "
                                    f"{refs[0]:+.3f}")
        self.key.param.update(visible=bool(steps), object="" if not steps else (
            "<div class='lf-hint lf-dream-key'><span style='color:#1f6fd1'>soft input</span>: the relaxed input, a "
            "mixture of token embeddings (its value runs far from a real text's, hence its own panel) · "
            f"<span style='color:#e4572e'>snapped text</span>: its most probable tokens{best}</div>"))


def _align_left(plot, element) -> None:
    """A fixed left border (the y axis's room) in both panels, so that their step axes line up
    whatever width their tick labels take (HoloViews has no option for one side's border)."""
    plot.state.min_border_left = 64


def _frame(steps, column: str):
    """Steps as the rows a chart buffer takes."""
    import pandas as pd

    return pd.DataFrame({"step": np.array([s.step for s in steps], dtype=np.int64),
                         column: np.array([getattr(s, column) for s in steps], dtype=np.float64),
                         "temperature": np.array([s.temperature for s in steps], dtype=np.float64)})
