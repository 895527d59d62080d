"""The dataset tokenized with a model's tokenizer: ids, lengths and display strings."""
from __future__ import annotations

import numpy as np

from . import register
from .base import Op, Result


def tokenize(tokenizer, texts, max_tokens: int) -> list[list[int]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_tokens, add_special_tokens=True)
    return [list(ids) for ids in enc["input_ids"]]


def display_tokens(tokenizer, ids: list[int]) -> list[str]:
    """Each token as the text it adds (" the", not "Ġthe"), so views can show it verbatim."""
    return tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)


@register
class TokensOp(Op):
    name = "tokens"
    kind = "prepare"

    def estimate_bytes(self, node, info, n_samples, n_tokens):
        return n_samples * n_tokens * 4 * 3

    def compute(self, node, ctx) -> Result:
        ids = tokenize(ctx.tokenizer, ctx.dataset.texts, node.param("max_tokens"))
        lengths = np.array([len(x) for x in ids], dtype=np.int32)
        padded = np.full((len(ids), max(int(lengths.max()), 1)), -1, dtype=np.int32)
        for i, row in enumerate(ids):
            padded[i, : len(row)] = row
        strings = [display_tokens(ctx.tokenizer, row) for row in ids]
        return Result({"ids": padded, "lengths": lengths}, {"strings": strings})
