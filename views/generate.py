"""generate: the continuation of the focused sample or probe, per model, streamed as it is generated.

Greedy by default (sampling with a temperature and a seed as options); each new token with the
probability the model gave it. With several models, side by side, the first position where their
continuations diverge marked in each. Clicking a generated token extends the focused text up to it
(a probe), so every other view shows that position. The decoding runs in lensframe.generate; this
view only draws it.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

from pydantic import Field

from lensframe.graph import Node

from .base import LIVE_MODEL_NOTE, View, ViewParams, esc, html_part, layout_part

PROMPT_TAIL = 6  # prompt tokens shown (greyed) before the continuation: enough to read where it starts
POLL_MS = 150


class GenerateView(View):
    export_note = LIVE_MODEL_NOTE
    type = "generate"
    default_title = "Generate"
    description = ("the focused sample's or probe's continuation per model (greedy or sampled), each token with its "
                   "probability, the first divergence between models marked; click a token to extend the text to it")
    reads = ("sample", "text")
    sets = ("text", "position")

    class Params(ViewParams):
        tokens: int = Field(16, ge=1, le=256, description="new tokens generated (fewer if the model ends the text "
                            "or its context is full)")
        temperature: float = Field(0.0, ge=0, description="0: greedy (the most probable token each step); above 0: "
                                   "sampled from softmax(logits / temperature)")
        seed: int = Field(0, ge=0, description="seed of the sampling (temperature > 0); a seed always gives the "
                          "same continuation")
        models: Optional[list[str]] = Field(None, min_length=1, description="models continued side by side "
                                            "(default: `model` if given, else every model of the spec)")

    @property
    def title(self) -> str:
        return self.p.title or self.default_title  # one card for all its models: no "· model" suffix

    def continued(self) -> list[str]:
        """The models this view continues, in order."""
        if self.p.models:
            return list(self.p.models)
        if self.p.model is not None or not self.infos:
            return [self.model]
        return list(self.infos)

    def needs(self, max_tokens):
        # the prompt of a dataset sample is its tokenization by each model (Executor.sample_ids)
        return [Node.make("tokens", m, max_tokens=max_tokens) for m in self.continued()]

    def check(self, info):
        issues = super().check(info)
        names = list(self.infos)
        for i, name in enumerate(self.p.models or []):
            if names and name not in names:
                from lensframe.errors import did_you_mean

                issues.append((("models", i), f"unknown model {name!r}",
                               did_you_mean(name, names) or f"models: {', '.join(names)}"))
        repeated = sorted({m for m in self.p.models or [] if (self.p.models or []).count(m) > 1})
        if repeated:
            issues.append((("models",), f"model {repeated[0]!r} is listed twice", None))
        return issues

    # --- what is generated -------------------------------------------------------------------
    def how(self) -> str:
        if self.p.temperature > 0:
            return f"sampled (T={self.p.temperature:g}, seed {self.p.seed})"
        return "greedy"

    def render(self, ctx):
        import panel as pn

        from lensframe.generate import GenerateJob

        ex, subject, models = ctx.board.executor, ctx.subject, self.continued()
        state = ctx.state
        if state.get("poll") is not None:  # a re-render (focus change): the jobs may change
            state["poll"].stop()
            state["poll"] = None
        streaming = pn.state.curdoc is not None  # a served page to stream to; else compute here, in order
        old = state.get("jobs") or {}
        jobs = {}
        for m in models:
            job = old.get(m)
            if job is None or job.settings != (m, subject, self.p.tokens, float(self.p.temperature), self.p.seed):
                if job is not None:
                    job.stop()  # nobody would see it, and each step takes the model's lock from other views
                job = GenerateJob(ex, m, subject, self.p.tokens, self.p.temperature, self.p.seed)
                if streaming:
                    job.start()
                else:
                    job.run()
            jobs[m] = job
        state["jobs"] = jobs
        if streaming and not state.get("cleanup"):  # a closed tab stops its generations too
            state["cleanup"] = True
            pn.state.on_session_destroyed(lambda _ctx: [j.stop() for j in (state.get("jobs") or {}).values()])

        prompts = {m: ex.sample_ids(m, subject) for m in models}
        limits = {m: _focus_limit(ctx, m) for m in models}
        head = html_part(ctx, "head", self._head(ctx, models), sizing_mode="stretch_width", css_classes=["lf-gen-head"])
        status = html_part(ctx, "status", "", sizing_mode="stretch_width")
        # the click extends the text this render shows (the callback is swapped on each render)
        strip = ctx.part("strip", gen_strip(), init={"rows": [], "sizing_mode": "stretch_width"},
                         on_click=lambda model, index: self._extend(ctx, subject, jobs, model, index))

        def draw():
            rows, caption, running = self._rows(ctx, jobs, prompts, limits)
            strip.rows = rows
            status.object = caption
            return running

        def poll():
            from panel.io import hold

            with hold():  # sent when it ends: a JSComponent changed in a periodic callback would wait for the next message
                running = draw()
            if not running and state.get("poll") is not None:
                state["poll"].stop()
                state["poll"] = None

        if draw() and streaming:
            state["poll"] = pn.state.add_periodic_callback(poll, period=POLL_MS)
        return layout_part(ctx, "layout", head, strip, status, sizing_mode="stretch_both", scroll=True,
                           css_classes=["lf-view-generate"])

    def _extend(self, ctx, subject, jobs: dict, model: str, index: int) -> None:
        """A click on new token `index` of `model`'s continuation of `subject`: focus the text up to
        and including it."""
        from lensframe.generate import extend_text

        job = jobs.get(model)
        if job is None or index >= len(job.ids):
            return
        ids = list(job.ids)
        ctx.set(text=extend_text(ctx.board.executor, model, subject, ids[: index + 1], ids[index + 1:]),
                position=None)

    # --- drawing -----------------------------------------------------------------------------
    def _head(self, ctx, models: list[str]) -> str:
        side = f" · {len(models)} models side by side" if len(models) > 1 else ""
        probe, cut = ctx.probe, ""
        if probe is not None:  # a probe past the focus limit is read cut, and continued from there
            told = ctx.board.executor.probe_tokens(models[0], probe)
            if told["cut"]:
                cut = (f" · <span class='lf-cut-note'>cut to its first {told['limit']} tokens ({told['cut']} more "
                       f"not read): the continuation follows those</span>")
        return (f"<div class='lf-gen-caption'>continuation of {ctx.subject_label()}{cut} · <b class='lf-gen-how'>"
                f"{esc(self.how())}</b> · up to {self.p.tokens} new tokens{side}<br><small>under each token: "
                f"its probability under the model's own next-token distribution (softmax of the logits, T = 1)"
                f"{', whatever the sampling temperature' if self.p.temperature > 0 else ''}; click a token to focus "
                f"the text up to it</small></div>")

    def _rows(self, ctx, jobs: dict, prompts: dict, limits: dict) -> tuple[list, str, bool]:
        """The strip's rows, the status caption, and whether any generation is still running."""
        from lensframe.generate import first_divergence

        seen = {}
        for m, job in jobs.items():
            done = job.done  # before the tokens: once done, the tokens read after it are the last ones
            ids = list(job.ids)
            seen[m] = (ids, job.probs[: len(ids)], _decode(ctx, m, ids), done)
        running = any(not done for *_, done in seen.values())
        marks = None
        if len(jobs) > 1:
            marks = first_divergence({m: (ids, strings) for m, (ids, _, strings, _) in seen.items()},
                                     _same_vocab(ctx, list(jobs)), {m: v[3] for m, v in seen.items()})
        rows = []
        for m, (ids, probs, strings, done) in seen.items():
            prompt = [int(i) for i in prompts[m]]
            tail = _decode(ctx, m, prompt[-PROMPT_TAIL:])
            at = marks.get(m) if marks else None
            rows.append({
                "model": m, "prompt": tail, "more": max(0, len(prompt) - PROMPT_TAIL),
                "tokens": [{"text": s, "prob": float(p), "id": int(t), "diverge": i == at,
                            "beyond": len(prompt) + i >= limits[m]}
                           for i, (t, p, s) in enumerate(zip(ids, probs, strings))],
                "state": "done" if done else "running",
                "end": _ending(jobs[m]) if done else "",
            })
        return rows, self._status(jobs, seen, marks, running, limits, prompts), running

    def _status(self, jobs, seen, marks, running, limits, prompts) -> str:
        errors = [f"{m}: {job.error}" for m, job in jobs.items() if job.error]
        if errors:
            return "<div class='lf-error lf-gen-status' data-state='done'>generation failed: " + \
                   esc("; ".join(errors)) + "</div>"
        lengths = {m: len(v[0]) for m, v in seen.items()}
        counts = ", ".join(f"{m} {n}" for m, n in lengths.items()) if len(seen) > 1 else str(*lengths.values())
        state = "running" if running else "done"
        what = f"generating… {counts} of {self.p.tokens}" if running else f"done: {counts} new token(s)"
        html = f"<div class='lf-gen-status' data-state='{state}'>{esc(what)}</div>"
        if marks:
            k = next(iter(marks.values()))
            if len(set(marks.values())) == 1:
                where = f"new token <b class='lf-gen-diverge-at'>{k}</b>"
            else:  # different tokenizers: the same character falls in different tokens
                where = ", ".join(f"{esc(m)} new token {i}" for m, i in marks.items()) + \
                    " (the texts' first different character)"
            html += f"<div class='lf-gen-divergence'>first divergence at {where}</div>"
        elif len(seen) > 1 and not running:
            html += "<div class='lf-gen-divergence lf-gen-same'>no divergence: the continuations are the same</div>"
        if any(len(prompts[m]) + len(v[0]) > limits[m] for m, v in seen.items()):
            limit = min(limits.values())
            html += (f"<div class='lf-hint lf-gen-beyond-note'>the focus takes {limit} tokens of a text: tokens past "
                     f"it (struck through) extend the text, but the other views show it cut at {limit}</div>")
        return html


def _ending(job) -> str:
    stopped = job.result.meta.get("stopped") if job.result is not None else None
    return {"eos": "end of text", "context": "context full", "stopped": "stopped"}.get(stopped, "")


def _decode(ctx, model: str, ids) -> list[str]:
    """Display strings of `model`'s tokens (ctx.decode decodes with the view's own model only)."""
    from lensframe.ops.tokens import display_tokens

    return display_tokens(ctx.board.executor.model(model).tokenizer, [int(i) for i in ids])


def _same_vocab(ctx, models: list[str]) -> bool:
    from lensframe.generate import same_vocabulary

    key = ("same_vocab", tuple(models))
    if key not in ctx.state:  # a 49k-entry dict compare per model pair: once per session, not per poll
        ctx.state[key] = same_vocabulary(ctx.board.executor, models)
    return ctx.state[key]


def _focus_limit(ctx, model: str) -> int:
    """How many tokens of a text the focus takes (a probe is cut there): the dataset's max_tokens,
    or the model's context if shorter (Executor.probe_tokens)."""
    limit = ctx.board.spec.dataset.max_tokens
    positions = ctx.board.infos[model].max_positions
    return min(limit, int(positions)) if positions else limit


@lru_cache(maxsize=1)
def gen_strip():
    """The GenStrip component class, made on first use: its base imports Panel, which view
    modules leave to render time (the validator and the compiler import them without Panel)."""
    import param

    from .widgets import _BASE_CSS, _JS_COMMON, _Clickable

    class GenStrip(_Clickable):
        """One column per model: the prompt's last tokens (greyed), then the generated tokens as
        chips with their probability; click -> on_click(model=..., index=...)."""

        # per model: {"model", "prompt": [str], "more": earlier prompt tokens not shown,
        #             "tokens": [{"text", "prob", "id", "diverge", "beyond"}], "state", "end"}
        rows = param.List(default=[])

        _esm = _JS_COMMON + """
        export function render({ model, el }) {
          const tip = lfTips(el);
          // newline as a return arrow, other control characters as their Unicode control pictures
          // (a generated \\r or \\x0b would otherwise be an empty chip), an empty token as the empty set
          const show = (t) => t.replace(/\\n/g, '\\u21b5').replace(/ /g, '\\u00a0')
            .replace(/[\\x00-\\x1f]/g, (c) => String.fromCharCode(0x2400 + c.charCodeAt(0))) || '\\u2205';
          function draw() {
            el.replaceChildren(tip);
            const box = document.createElement('div');
            box.className = 'lf-gen-models';
            model.rows.forEach((row) => {
              const col = document.createElement('div');
              col.className = 'lf-gen-model'; col.dataset.model = row.model; col.dataset.state = row.state;
              const name = document.createElement('div'); name.className = 'lf-gen-name'; name.textContent = row.model;
              col.appendChild(name);
              const line = document.createElement('div'); line.className = 'lf-gen-line';
              if (row.more > 0) {
                const more = document.createElement('span'); more.className = 'lf-gen-prompt lf-gen-more';
                more.textContent = '\\u2026'; more.dataset.tip = `${row.more} earlier prompt tokens`; line.appendChild(more);
              }
              row.prompt.forEach((t) => {
                const s = document.createElement('span'); s.className = 'lf-gen-prompt'; s.textContent = show(t);
                line.appendChild(s);
              });
              row.tokens.forEach((tok, i) => {
                const s = document.createElement('span');
                s.className = 'lf-gen-token' + (tok.diverge ? ' lf-gen-diverge' : '')
                              + (tok.beyond ? ' lf-gen-beyond' : '');
                s.dataset.index = i; s.dataset.model = row.model;
                const t = document.createElement('span'); t.className = 'lf-gen-text'; t.textContent = show(tok.text);
                const p = document.createElement('small'); p.className = 'lf-gen-prob';
                p.textContent = tok.prob.toFixed(3);
                s.appendChild(t); s.appendChild(p);
                s.dataset.tip = `new token ${i}: ${JSON.stringify(tok.text)} (id ${tok.id}), p = ${tok.prob.toPrecision(4)}`
                          + (tok.diverge ? ' \\u2014 first divergence' : '') + '\\nclick: focus the text up to here';
                s.addEventListener('click', () => model.send_msg({model: row.model, index: i}));
                line.appendChild(s);
              });
              if (row.end) {
                const e = document.createElement('span'); e.className = 'lf-gen-end'; e.textContent = row.end;
                line.appendChild(e);
              }
              col.appendChild(line);
              box.appendChild(col);
            });
            el.appendChild(box);
          }
          draw();
          model.on('rows', draw);
        }
        """
        _stylesheets = [_BASE_CSS + """
        .lf-gen-models { display: flex; gap: 12px; align-items: flex-start; }
        .lf-gen-model { flex: 1 1 0; min-width: 0; }
        .lf-gen-name { color: #555; font-weight: 600; margin: 2px 0; }
        .lf-gen-line { line-height: 2.2; font-family: ui-monospace, monospace; }
        .lf-gen-prompt { color: #999; white-space: pre; }
        .lf-gen-token { display: inline-flex; flex-direction: column; align-items: center; vertical-align: top;
                        line-height: 1.3; margin: 2px 1px; padding: 0 2px; border: 1px solid #ddd; border-radius: 3px;
                        background: #eef3fb; cursor: pointer; white-space: pre; }
        .lf-gen-token:hover { border-color: #333; }
        .lf-gen-prob { color: #777; font-size: 9px; }
        .lf-gen-token.lf-gen-diverge { background: #fff0c2; border-color: #e4572e; box-shadow: 0 0 0 1px #e4572e; }
        .lf-gen-token.lf-gen-beyond .lf-gen-text { text-decoration: line-through; }
        .lf-gen-end { color: #888; font-style: italic; margin-left: 4px; }
        """]

    return GenStrip
