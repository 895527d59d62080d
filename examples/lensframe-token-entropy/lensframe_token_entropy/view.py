"""The `token_entropy` view: the focused sample's tokens, each coloured by how unsure the model is of
the token after it (entropy), or how surprised it is by the token that came (surprisal, rank).

Numbers come from the `token_entropy` dataset op (op.py), fused into the model's one dataset pass
with the other views' reductions; this view only draws them. Clicking a token sets focus.position,
so the logit lens, attention and text views move to it; the focused token's top predictions are
listed under the strip.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from lensframe.graph import Node
from lensframe.views.base import View, ViewParams, esc, html_pane

from . import op  # noqa: F401  (registers the token_entropy op)

METRIC_HELP = {
    "entropy": "entropy of the next-token distribution (dark = unsure)",
    "surprisal": "surprisal of the actual next token (dark = surprised)",
    "rank": "rank of the actual next token (dark = far from the top)",
}


class TokenEntropyView(View):
    type = "token_entropy"
    default_title = "Next-token entropy"
    description = "the focused sample's tokens coloured by next-token entropy, surprisal or rank (click to focus)"
    reads = ("sample", "position")
    sets = ("position",)

    class Params(ViewParams):
        metric: Literal["entropy", "surprisal", "rank"] = Field("entropy", description="token colour")
        top_k: int = Field(5, ge=1, le=20, description="predictions listed for the focused token")

    def stats_node(self, max_tokens: int) -> Node:
        # the metric only picks a colour: views that differ in it share one node (and one result)
        return Node.make("token_entropy", self.model, inputs=(self.tokens_node(max_tokens),), top_k=self.p.top_k)

    def needs(self, max_tokens):
        return [self.tokens_node(max_tokens), self.stats_node(max_tokens)]

    def check(self, info):
        issues = super().check(info)
        if not info.has_lm_head:
            issues.append((("type",), f"token_entropy reads the model's logits, and this model ({info.architecture}) "
                           "has no LM head", "use a causal LM (…ForCausalLM / …LMHeadModel)"))
        return issues

    def render(self, ctx):
        import panel as pn

        from .widget import EntropyStrip  # Panel only at render: validating a spec never imports it

        res = ctx.result(self.stats_node(ctx.board.spec.dataset.max_tokens))
        s, tokens = ctx.sample, ctx.tokens()
        T = len(tokens)
        pos = ctx.position(T)
        vocab = ctx.board.infos[self.model].vocab_size
        values = res[self.p.metric][s, :T]
        shades = [shade(self.p.metric, float(v), vocab) for v in values]
        labels = [label(self.p.metric, float(v)) for v in values]
        strip = EntropyStrip(tokens=tokens, shade=shades, labels=labels, selected=pos, sizing_mode="stretch_width",
                             on_click=lambda index: ctx.set(position=index))
        H, sup, rank = (float(res[m][s, pos]) for m in ("entropy", "surprisal", "rank"))
        preds = ctx.decode(res["ids"][s, pos])
        nxt = (f" · next token <code>{esc(repr(tokens[pos + 1]))}</code>: surprisal {sup:.2f} nats, rank "
               f"<b class='lf-te-rank'>{int(rank)}</b>") if pos + 1 < T else " · last token (nothing follows)"
        caption = html_pane(
            f"<div class='lf-te-head'>sample <b>{s}</b> · position <b class='lf-position'>{pos}</b> "
            f"<code>{esc(repr(tokens[pos]))}</code> · entropy <b class='lf-te-entropy'>{H:.2f}</b> nats{nxt}"
            f" · mean entropy of the sample {float(res['entropy'][s, :T].mean()):.2f} nats"
            f"<br>colour: {METRIC_HELP[self.p.metric]}</div>", sizing_mode="stretch_width")
        chips = "".join(f"<span class='lf-chip lf-te-pred'>{esc(repr(t))} <small>{p:.3f}</small></span>"
                        for t, p in zip(preds, res["probs"][s, pos]))
        top = html_pane(f"<div class='lf-sub'>top {self.p.top_k} predictions after position {pos}</div>{chips}",
                        sizing_mode="stretch_width")
        return pn.Column(caption, strip, top, sizing_mode="stretch_both", css_classes=["lf-view-token-entropy"])


def shade(metric: str, value: float, vocab_size: int) -> float | None:
    """A metric in [0, 1] for colour, on an absolute scale so samples compare: log V is the entropy
    of a uniform distribution (and the surprisal of a uniform guess)."""
    if math.isnan(value) or (metric == "rank" and value < 0):
        return None  # the last token: no next token to judge
    if metric == "rank":
        return math.log1p(value) / math.log1p(vocab_size)
    return min(1.0, value / math.log(vocab_size))


def label(metric: str, value: float) -> str:
    if math.isnan(value) or (metric == "rank" and value < 0):
        return "–"
    return str(int(value)) if metric == "rank" else f"{value:.1f}"
