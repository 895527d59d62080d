"""Pieces the three edits share: batching prompts, next-token probabilities, the LM loss, finding a
subject's last token, naming a weight. Pure torch + transformers; every forward runs through the
model as loaded (eval mode, no dropout) and the Adapter's normalized hooks."""
from __future__ import annotations

import torch


class StopForward(Exception):
    """Raised by Adapter.stop_after once the layer a computation needs has run."""


def parts(loaded):
    """(model, tokenizer, adapter) of a LoadedModel."""
    return loaded.model, loaded.tokenizer, loaded.adapter


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return int(pid)


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text).input_ids)


def encode_target(tokenizer, target: str) -> list[int]:
    """A continuation's token ids, without special tokens (" Paris" -> [id(" Paris")])."""
    ids = list(tokenizer(target, add_special_tokens=False).input_ids)
    if not ids:
        raise ValueError(f"target {target!r} tokenizes to nothing")
    return ids


def batch(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask. Right padding keeps every real token at its own position
    (and position id), so indices computed on the unpadded rows stay valid."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def subject_last_index(tokenizer, text: str, subject: str, search_from: int = 0) -> int:
    """Index of the token holding the last character of the first occurrence of `subject` in `text`
    at or after character `search_from` (a context prefix may mention the subject too)."""
    start = text.find(subject, search_from)
    if start < 0:
        raise ValueError(f"subject {subject!r} does not occur in {text!r}")
    end = start + len(subject)
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        for i, (a, b) in enumerate(enc["offset_mapping"]):
            if a < end <= b:
                return i
    except (NotImplementedError, TypeError, KeyError, ValueError):
        pass  # a slow tokenizer has no offsets: count the tokens of the text up to the subject's end
    return len(encode(tokenizer, text[:end])) - 1


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: list[str], batch_size: int = 16) -> torch.Tensor:
    """log P(next token | prompt) at each prompt's last token, [n, vocab] (float32, on the CPU)."""
    out = []
    dev = device_of(model)
    for i in range(0, len(prompts), batch_size):
        rows = [encode(tokenizer, p) for p in prompts[i:i + batch_size]]
        ids, mask = batch(rows, pad_id(tokenizer), dev)
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(r) - 1 for r in rows], device=dev)
        out.append(logits[torch.arange(len(rows), device=dev), last].float().log_softmax(-1).cpu())
    return torch.cat(out) if out else torch.empty(0)


def first_token_probs(model, tokenizer, prompts: list[str], targets: list[str]) -> list[float]:
    """P(the first token of targets[i] | prompts[i])."""
    lp = next_token_logprobs(model, tokenizer, prompts)
    ids = [encode_target(tokenizer, t)[0] for t in targets]
    return [float(lp[i, t].exp()) for i, t in enumerate(ids)]


def top_token(model, tokenizer, prompt: str) -> str:
    return tokenizer.decode([int(next_token_logprobs(model, tokenizer, [prompt])[0].argmax())])


@torch.no_grad()
def lm_loss(model, tokenizer, texts, max_tokens: int = 48, batch_size: int = 8) -> float:
    """Mean next-token NLL (nats per predicted token) over the texts, each cut to max_tokens."""
    dev = device_of(model)
    total, count = 0.0, 0
    rows_all = [encode(tokenizer, t)[:max_tokens] for t in texts]
    rows_all = [r for r in rows_all if len(r) >= 2]
    for i in range(0, len(rows_all), batch_size):
        rows = rows_all[i:i + batch_size]
        ids, mask = batch(rows, pad_id(tokenizer), dev)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        m = mask[:, 1:].float()
        total += float((nll * m).sum())
        count += int(m.sum())
    return total / max(count, 1)


def param_name(model, tensor: torch.Tensor) -> str:
    """The state-dict name of a parameter (e.g. 'model.layers.4.mlp.down_proj.weight')."""
    for name, p in model.named_parameters():
        if p is tensor:
            return name
    raise KeyError("parameter not found in the model")


def module_params(model, module) -> list[str]:
    """Names of a submodule's parameters, as the model's state dict spells them."""
    ids = {id(p) for p in module.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def get(root, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root


def is_conv1d(module) -> bool:
    """GPT-2's Conv1D stores weight as [in, out]; nn.Linear as [out, in]."""
    return type(module).__name__ == "Conv1D"


def fingerprint_of(loaded) -> str | None:
    return getattr(loaded, "fingerprint", None)
