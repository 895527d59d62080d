"""logit_lens: what each layer would predict (nostalgebraist 2020), for the focused sample.

Layers x positions grid: the top-1 token of E · norm_f(h_l) in each cell, coloured by a metric
against the model's final distribution; top-k on hover; click sets focus layer and position.
Numbers come from the dataset pass (lensframe.ops.lens); this view only draws them.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lensframe.graph import Node

from .base import VIEW_CSS, View, ViewParams, esc, html_part, layout_part


class TunedParams(BaseModel):
    """The tuned lens's training budget (see lensframe.ops.tuned_lens)."""

    model_config = ConfigDict(extra="forbid")
    train_tokens: int = Field(2048, ge=16, le=1_000_000, description="token positions sampled for training")
    steps: int = Field(100, ge=1, le=100_000, description="Adam steps")
    lr: float = Field(1e-3, gt=0, le=1, description="learning rate")
    batch_tokens: int = Field(32, ge=1, le=4096, description="tokens per step (all layers train together)")
    seed: int = Field(0, description="seed of the token sample, the split and the minibatches")

METRIC_HELP = {
    "prob": "probability the layer gives the final prediction",
    "rank": "rank of the final prediction among the layer's tokens (log scale)",
    "kl": "KL(final ‖ layer) in nats, log scale (this sample's range)",
    "entropy": "entropy of the layer's distribution in nats (this sample's range)",
}
# A cell's value in its hover tip; `final` is the final layer's top-1 token at that position.
METRIC_TIP = {
    "prob": "p({final!r}) = {value:.4g} (the final prediction)",
    "rank": "rank of {final!r} = {value:.0f} (the final prediction; 0 = top)",
    "kl": "KL(final \u2016 layer) = {value:.4g} nats",
    "entropy": "entropy = {value:.4g} nats",
}
# The rows are the residual stream read at each depth: "embed" (the input of block 0), then the
# output of each block, labelled with the block's index; every view labels these rows so.
ROW_TITLE = {"resid_post": "layer (embed, then after block i) →", "resid_mid": "layer (block i after attention) →"}
COL_TITLE = "position \u2192 (each cell: the layer's top-1 token)"
SCALE_CSS = """
.lf-scale { white-space: nowrap; }
.lf-scale-bar { display: inline-block; width: 60px; height: 9px; margin: 0 4px; vertical-align: middle;
                border: 1px solid #ccc;
                background: linear-gradient(to right, rgba(31, 111, 209, 0), rgba(31, 111, 209, 1)); }
"""


class LogitLensView(View):
    type = "logit_lens"
    description = "layers x positions: top-1 token of every layer's decoded residual (logit lens)"
    reads = ("sample", "text", "position", "layer")
    sets = ("layer", "position")
    export_script = "js/logit_lens.js"

    class Params(ViewParams):
        metric: Literal["prob", "rank", "kl", "entropy"] = Field("prob", description="cell colour")
        top_k: int = Field(5, ge=1, le=50, description="tokens listed on hover")
        stream: Literal["resid_post", "resid_mid"] = Field(
            "resid_post", description="resid_post: after each block; resid_mid: after attention, before the MLP")
        lens: Literal["logit", "tuned"] = Field(
            "logit", description="tuned: through affine translators lensframe trains on the dataset (resid_post only)")
        tuned: TunedParams = Field(default_factory=TunedParams, description="training budget of lens: tuned")
        decode: Literal["fp32", "bf16_screen"] = Field(
            "fp32", description="bf16_screen: the unembedding in bfloat16, top-k certified equal to float32's "
                                "(uncertified rows in float32); probabilities, KL, entropy and rank then use "
                                "screened logits for the vocabulary sums (docs/METHODS.md)")

        @model_validator(mode="after")
        def _tuned_needs_resid_post(self):
            if self.lens == "tuned" and self.stream != "resid_post":
                raise ValueError("lens: tuned decodes stream: resid_post (its translators are trained there)")
            return self

    @property
    def default_title(self) -> str:
        where = " after attention" if self.p.stream == "resid_mid" else ""
        return f"{'Tuned' if self.p.lens == 'tuned' else 'Logit'} lens{where} ({self.p.metric})"

    def tuned_node(self, max_tokens: int) -> Node:
        t = self.p.tuned
        return Node.make("tuned_lens", self.model, inputs=(self.tokens_node(max_tokens),), train_tokens=t.train_tokens,
                         steps=t.steps, lr=t.lr, batch_tokens=t.batch_tokens, seed=t.seed)

    def lens_node(self, max_tokens: int) -> Node:
        # The metric is not part of the node: the op computes all four, so lens views that differ
        # only in colour share one result.
        tuned = (self.tuned_node(max_tokens),) if self.p.lens == "tuned" else ()
        # decode is a param only when screened: float32 lens nodes keep the keys of their stored results
        screen = {"decode": self.p.decode} if self.p.decode != "fp32" else {}
        return Node.make("logit_lens", self.model, inputs=(self.tokens_node(max_tokens),) + tuned,
                         stream=self.p.stream, top_k=self.p.top_k, **screen)

    def needs(self, max_tokens):
        extra = [self.tuned_node(max_tokens)] if self.p.lens == "tuned" else []
        return [self.tokens_node(max_tokens)] + extra + [self.lens_node(max_tokens)]

    def check(self, info):
        issues = super().check(info)
        if not info.has_lm_head:
            issues.append((("type",), f"logit_lens needs an LM head, and this model ({info.architecture}) has none",
                           "use a causal LM (…ForCausalLM / …LMHeadModel)"))
        return issues

    def render(self, ctx):
        from .widgets import HeatGrid

        res = ctx.row(self.lens_node(ctx.board.spec.dataset.max_tokens))  # the focused sample's or probe's
        k = self.p.top_k
        tokens = ctx.tokens()
        T = len(tokens)
        pos = ctx.position(T)
        layers, blocks = res.meta["layers"], res.meta["blocks"]
        L = len(layers)
        ids, probs = res["ids"][:, :T, :k], res["probs"][:, :T, :k]
        metric = res[self.p.metric][:, :T]
        vocab_size = ctx.board.infos[self.model].vocab_size
        shade = _shade(self.p.metric, metric, vocab_size)
        tok = ctx.board.executor.model(self.model).tokenizer
        vocab = _decoder(tok, np.unique(ids))
        order = list(range(L - 1, -1, -1))  # final layer on top, as lens plots read
        finals = [vocab[int(ids[L - 1, t, 0])] for t in range(T)]
        texts, tips, vals = [], [], []
        for l in order:
            texts.append([vocab[int(ids[l, t, 0])][:6] for t in range(T)])
            vals.append([float(shade[l, t]) for t in range(T)])
            tips.append([
                f"{_row_name(layers[l])}, position {t} {tokens[t]!r}\n"
                + METRIC_TIP[self.p.metric].format(final=finals[t], value=metric[l, t])
                + f"\ntop {k} at this layer:\n"
                + "\n".join(f"{probs[l, t, j]:.3f}  {vocab[int(ids[l, t, j])]!r}" for j in range(k))
                for t in range(T)])
        focus_layer = ctx.get("layer")
        sel_row = next((i for i, l in enumerate(order) if blocks[l] == focus_layer), -1) \
            if focus_layer is not None else -1

        def clicked(row, col):
            layer = blocks[order[row]]  # the "embed" row is no block: it moves the position only
            ctx.set(position=col, **({"layer": layer} if layer >= 0 else {}))

        # Every layer fits the card: rows shrink down to 4 px (colour alone below 10 px, the tip
        # has the tokens), so a one-row card still shows all 31 of SmolLM2's; positions scroll
        # sideways below 30 px (the top-1 token needs about 4 characters), the focused one in view.
        grid = ctx.part(
            "grid", HeatGrid, row_labels=[layers[l] for l in order], row_tips=[_row_name(layers[l]) for l in order],
            col_labels=tokens, values=vals, texts=texts, tips=tips, selected_row=sel_row, selected_col=pos,
            init=dict(kind="lens", fit="both", cell_width=44, min_cell_width=30, cell_height=20, min_cell_height=4,
                      row_title=ROW_TITLE[self.p.stream], col_title=COL_TITLE, sizing_mode="stretch_both"),
            on_click=clicked)
        final = finals[pos]
        caption = html_part(
            ctx, "caption",
            f"<div class='lf-lens-head'>{ctx.subject_label()} · position <b class='lf-position'>{pos}</b> "
            f"<code>{esc(repr(tokens[pos]))}</code> → final prediction <code>{esc(repr(final))}</code>"
            + self._caption_tail(ctx, res, metric, T),
            sizing_mode="stretch_width", stylesheets=[VIEW_CSS, SCALE_CSS])
        return layout_part(ctx, "layout", caption, grid, sizing_mode="stretch_both",
                           css_classes=["lf-view-logit-lens"])

    def _caption_tail(self, ctx, res, metric: np.ndarray, T: int) -> str:
        """The caption after the focused position's tokens: the colour scale and the notes (the
        same for every position of a sample, so an export ships it once per sample)."""
        low, high = _scale_ends(self.p.metric, metric, ctx.board.infos[self.model].vocab_size)
        return (f" · colour: <span class='lf-lens-metric'>{METRIC_HELP[self.p.metric]}</span> "
                f"<span class='lf-scale'><span class='lf-scale-low'>{esc(low)}</span>"
                f"<span class='lf-scale-bar'></span><span class='lf-scale-high'>{esc(high)}</span></span>"
                f"{self._tuned_note(ctx)}{_screen_note(res, T, self.p.top_k)}</div>")

    # --- export (views/js/logit_lens.js): every exported sample's stored rows, packed ---------------
    def export_data(self, ex):
        from lensframe.export_pack import ExportData, fixed_digits, smallest_uint

        k, rows = self.p.top_k, []
        for s in ex.samples:
            ctx = ex.context(s)
            res = ctx.row(self.lens_node(ex.board.spec.dataset.max_tokens))
            T = len(ctx.tokens())
            rows.append((s, T, res, ctx))
        meta0 = rows[0][2].meta
        layers, blocks = meta0["layers"], meta0["blocks"]
        ids = np.concatenate([res["ids"][:, :T, :k].ravel() for _, T, res, _ in rows])
        vocab_ids, local = np.unique(ids, return_inverse=True)
        vocab = _decoder(ex.board.executor.model(self.model).tokenizer, vocab_ids)
        strings = [vocab[int(i)] for i in vocab_ids]
        metric = np.concatenate([res[self.p.metric][:, :T].ravel() for _, T, res, _ in rows])
        probs = np.concatenate([res["probs"][:, :T, :k].ravel() for _, T, res, _ in rows])
        tails = {str(s): self._caption_tail(ctx, res, res[self.p.metric][:, :T], T) for s, T, res, ctx in rows}
        return ExportData(
            meta={"samples": list(ex.samples), "layers": layers, "blocks": blocks, "k": k, "metric": self.p.metric,
                  "vocab_size": ex.board.infos[self.model].vocab_size, "tip": METRIC_TIP[self.p.metric],
                  "row_names": [_row_name(x) for x in layers], "vocab": strings, "reprs": [repr(t) for t in strings],
                  "tails": tails},
            arrays={"ids": local.astype(smallest_uint(max(len(strings) - 1, 0))),
                    # probabilities as the tips show them: 3 decimals, Python's rounding
                    "probs": fixed_digits(probs, 3).astype(np.uint16),
                    "metric": metric.astype(np.float32) if metric.dtype.kind == "f" else metric.astype(np.int32)})

    def export_size(self, shapes):
        from lensframe.export_pack import b64_size

        lengths, k = shapes.lengths(self.model), self.p.top_k
        info = shapes.info(self.model)
        res = shapes.board.result(self.lens_node(shapes.board.spec.dataset.max_tokens))
        L = len(res.meta["layers"]) if res is not None else info.n_layers + 1
        cells = int(L * lengths.sum())
        if res is not None:  # the distinct top-k tokens of the exported rows, from the stored ids
            distinct = len(np.unique(np.concatenate([res["ids"][s, :, :int(T), :k].ravel()
                                                     for s, T in zip(shapes.options.samples, lengths)])))
        else:  # not computed yet (--max-mb checks before any forward): a quarter of the cells' tokens
            distinct = min(info.vocab_size, cells * k // 4)
        id_bytes = 2 if distinct <= 65536 else 4
        first_T = int(lengths[0]) if len(lengths) else 0
        return {"ids": b64_size(cells * k * id_bytes), "probs": b64_size(cells * k * 2),
                "metric": b64_size(cells * 4), "vocab": distinct * 24, "captions": len(lengths) * 420,
                "first render": 6_000 + L * first_T * (110 + 16 * k)}

    def _tuned_note(self, ctx) -> str:
        if self.p.lens != "tuned":
            return ""
        t = ctx.result(self.tuned_node(ctx.board.spec.dataset.max_tokens))
        tokens, texts = t.meta["tokens"], t.meta["texts"]
        tuned, logit = t["test_kl_tuned"], t["test_kl_logit"]
        worse = int((tuned > logit + 1e-6).sum())
        return (f"<br><span class='lf-tuned-note'>tuned lens trained on {tokens['train']} tokens of {texts['train']} "
                f"texts (checkpoints chosen on {texts['val']} others); on {texts['test']} texts it never saw "
                f"({tokens['test']} tokens): KL to the final layer {tuned.mean():.2f} vs {logit.mean():.2f} nats for "
                f"the logit lens (mean over layers)"
                + (f"; worse than the logit lens on {worse} of {len(tuned)} layers there" if worse else "")
                + "</span>")


def _screen_note(res, T: int, k: int) -> str:
    """With `decode: bf16_screen`: which of this sample's rows hold sums over bfloat16 logits."""
    if res.meta.get("decode", "fp32") == "fp32":
        return ""
    screened = res["screened"][:-1, :T]
    return (f"<br><span class='lf-screen-note'>bf16 screen: top-{k} tokens certified equal to float32's; "
            f"on {int(screened.sum())} of {screened.size} cells below the final layer the probabilities, KL, "
            f"entropy and rank sum over bfloat16 logits (bounds in docs/METHODS.md)</span>")


def _row_name(label: str) -> str:
    """A lens row in words, for its hover tip."""
    if label == "embed":
        return "embed (the input of block 0)"
    if label == "final":
        return "final (after the last block)"
    return f"after block {label.removesuffix(' mid')}" + (" attention" if label.endswith(" mid") else "")


def _scale_ends(metric: str, values: np.ndarray, vocab_size: int) -> tuple[str, str]:
    """What the lightest and the darkest colour stand for (as _shade maps them)."""
    if metric == "prob":
        return "0", "1"
    if metric == "rank":
        return f"rank {vocab_size - 1}", "rank 0 (top)"
    return "0", f"{max(float(values.max()), 0.0):.3g} nats"


def _shade(metric: str, values: np.ndarray, vocab_size: int) -> np.ndarray:
    """Map a metric to [0, 1] for colour (dark = the notable end)."""
    if metric == "prob":
        return np.clip(values, 0, 1)
    if metric == "rank":
        return 1 - np.log1p(values) / np.log1p(vocab_size)
    if metric == "kl":  # log: the first layers' KL (~100 nats) would wash out the last ones' (~1)
        return np.clip(np.log1p(np.maximum(values, 0)) / max(float(np.log1p(values.max())), 1e-9), 0, 1)
    top = max(float(values.max()), 1e-9)
    return np.clip(values / top, 0, 1)


def _decoder(tokenizer, ids) -> dict[int, str]:
    ids = [int(i) for i in ids]
    return dict(zip(ids, tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)))
