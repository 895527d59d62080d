"""Generation: the continuation of the focused sample or probe, token by token, with each token's
probability (docs/METHODS.md, "Generation").

A manual decoding loop over the model's KV cache rather than `model.generate`, for three reasons:
every step hands its token to a callback (the dashboard streams them), every step takes the
model's lock on its own (other views' focus forwards interleave with a long generation instead of
waiting for all of it), and every step records the probability the model gave the token it chose.
Greedy decoding takes the argmax, exactly as `model.generate(do_sample=False)` does (the tests
compare the two); sampling draws from softmax(logits / T) with a seeded CPU generator, so a seed
always gives the same continuation.

Finished generations are memoized in this process's memory (Executor.generations), keyed by what the model
reads (model, prompt token ids) and the decoding settings; they are never written to the store.
No Panel here: lensframe.views.generate draws what this computes.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .jobs import BackgroundJob
from .ops.base import Result

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"  # what decoding shows for the bytes of an unfinished character
MAX_CHAR_BYTES = 4  # UTF-8: a character is at most 4 bytes, so at most 3 more byte tokens finish it


class GenerateError(Exception):
    """A generation that cannot run (e.g. a prompt that already fills the model's context)."""


def memo_key(executor, model: str, sample, max_new_tokens: int, temperature: float, seed: int) -> tuple:
    """What a generation depends on: the model, the token ids it reads (a probe and a sample with
    the same tokens share one), the length and the decoding. Greedy ignores the seed."""
    ids = tuple(int(i) for i in executor.sample_ids(model, sample))
    temperature = float(temperature)
    return (model, ids, int(max_new_tokens), temperature, int(seed) if temperature > 0 else 0)


def memoized(executor, model: str, sample, max_new_tokens: int, temperature: float = 0.0,
             seed: int = 0) -> Result | None:
    """A finished generation from the memo, or None (nothing runs)."""
    return executor.generations.get(memo_key(executor, model, sample, max_new_tokens, temperature, seed))


def stop_ids(loaded) -> set[int]:
    """Token ids that end a generation: the generation config's EOS (what model.generate stops at)
    and the tokenizer's (a chat model's end-of-turn token may be only one of the two)."""
    ids: set[int] = set()
    for source in (getattr(loaded.model, "generation_config", None), loaded.model.config, loaded.tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return ids


def _room(loaded, prompt_len: int) -> int | None:
    """How many tokens fit after the prompt in the model's context (None: no fixed limit)."""
    limit = loaded.info.max_positions
    return None if not limit else int(limit) - prompt_len


def _step(loaded, input_ids, cache, lock):
    """One forward under the model's lock: the prompt (no cache yet) or one new token. Only the
    last position's logits are kept: the prompt's others would be a [T, V] unembedding nobody reads."""
    import torch

    takes = _forward_params(type(loaded.model))
    # transformers 5 names the KV cache `cache`; 4.x (and remote code written for it) `past_key_values`
    name = "cache" if "cache" in takes else "past_key_values"
    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in takes else {}
    with lock, torch.no_grad():
        out = loaded.model(input_ids=input_ids, use_cache=True, **{name: cache}, **kwargs)
    return out.logits[0, -1].float(), getattr(out, name)


@lru_cache(maxsize=None)
def _forward_params(cls) -> frozenset:
    import inspect

    return frozenset(inspect.signature(cls.forward).parameters)


def _choose(logits, temperature: float, generator) -> tuple[int, float, float]:
    """(token id, its probability under the model (T = 1), its probability under the distribution
    it was drawn from). Greedy: the argmax, as model.generate(do_sample=False) takes it."""
    import torch

    probs = torch.softmax(logits, -1)
    if temperature <= 0:
        token = int(torch.argmax(logits))
        return token, float(probs[token]), 1.0
    drawn = torch.softmax(logits / temperature, -1).cpu()  # the generator is a CPU one, whatever the device
    token = int(torch.multinomial(drawn, 1, generator=generator))
    return token, float(probs[token]), float(drawn[token])


def generate(executor, model: str, sample, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
             on_token: Callable[[int, int, float], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Result:
    """The continuation of a dataset sample (its index) or a Probe by `model`: up to
    `max_new_tokens` new tokens, greedy when temperature is 0, else sampled from
    softmax(logits / temperature) with a generator seeded by `seed`.

    Returns Result arrays: ids [n] (int64), probs [n] (each token's probability under the model's
    own next-token distribution, T = 1) and sample_probs [n] (under the distribution it was drawn
    from: 1.0 for greedy); meta: prompt_len, stopped ("eos": the model ended the text, its EOS
    token is the last id; "length": max_new_tokens reached; "context": the model's context is full;
    "stopped": should_stop said so), temperature, seed. `on_token(index, id, prob)` is called as
    each token is chosen. A finished generation (not one stopped early) is memoized."""
    import torch

    key = memo_key(executor, model, sample, max_new_tokens, temperature, seed)
    done = executor.generations.get(key)
    if done is not None:
        for i, (t, p) in enumerate(zip(done["ids"], done["probs"])):
            if on_token:
                on_token(i, int(t), float(p))
        return done
    loaded = executor.model(model)
    prompt = np.asarray(key[1], dtype=np.int64)
    if len(prompt) == 0:
        raise GenerateError("the prompt has no tokens")
    room = _room(loaded, len(prompt))
    if room is not None and room <= 0:
        raise GenerateError(f"the prompt ({len(prompt)} tokens) fills the model's context "
                            f"({loaded.info.max_positions} positions)")
    n = max_new_tokens if room is None else min(max_new_tokens, room)
    generator = torch.Generator().manual_seed(int(seed)) if temperature > 0 else None
    ends, lock = stop_ids(loaded), executor.model_lock(model)
    ids, probs, drawn = [], [], []
    stopped = "length" if n == max_new_tokens else "context"
    step_input, cache = torch.as_tensor(prompt[None], device=loaded.device), None
    counter = executor.__dict__.setdefault("_generate_steps", [0])  # not forward_passes: those count focus passes
    for i in range(n):
        if should_stop is not None and should_stop():
            stopped = "stopped"
            break
        logits, cache = _step(loaded, step_input, cache, lock)
        counter[0] += 1
        token, p, q = _choose(logits, float(temperature), generator)
        ids.append(token)
        probs.append(p)
        drawn.append(q)
        if on_token:
            on_token(i, token, p)
        if token in ends:
            stopped = "eos"
            break
        step_input = torch.tensor([[token]], device=loaded.device)
    res = Result({"ids": np.asarray(ids, dtype=np.int64), "probs": np.asarray(probs, dtype=np.float64),
                  "sample_probs": np.asarray(drawn, dtype=np.float64)},
                 {"prompt_len": len(prompt), "stopped": stopped, "temperature": float(temperature),
                  "seed": int(seed), "max_new_tokens": int(max_new_tokens)})
    if stopped != "stopped":
        executor.generations.put(key, res)
    return res


def generation_steps(executor) -> int:
    """Forwards this executor ran for generations (each prompt and each new token is one)."""
    return executor.__dict__.get("_generate_steps", [0])[0]


class GenerateJob(BackgroundJob):
    """A generation in a background thread, for the dashboard: `ids` and `probs` grow as tokens
    come; `done`, then `result` (or `error`); `stop()` ends it after the current step."""

    thread_name = "lensframe-generate"

    def __init__(self, executor, model: str, sample, max_new_tokens: int, temperature: float = 0.0, seed: int = 0):
        super().__init__()
        self.executor, self.model, self.sample = executor, model, sample
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.ids: list[int] = []
        self.probs: list[float] = []
        self.result: Result | None = None

    @property
    def settings(self) -> tuple:
        return (self.model, self.sample, self.max_new_tokens, float(self.temperature), self.seed)

    def start(self) -> "GenerateJob":
        done = memoized(self.executor, self.model, self.sample, self.max_new_tokens, self.temperature, self.seed)
        if done is not None:  # ran before: nothing to stream
            self._finish(done)
            self.done = True
            return self
        self._launch()
        return self

    def run(self) -> "GenerateJob":
        """In this thread (a notebook, or no server to stream to)."""
        self._guarded()
        return self

    def _on_token(self, index: int, token: int, prob: float) -> None:
        # probs first: a reader that sees the id also sees its probability
        self.probs.append(prob)
        self.ids.append(token)

    def _finish(self, res: Result) -> None:
        self.ids[:] = [int(t) for t in res["ids"]]
        self.probs[:] = [float(p) for p in res["probs"]]
        self.result = res

    def _work(self) -> None:
        self._finish(generate(self.executor, self.model, self.sample, self.max_new_tokens, self.temperature, self.seed,
                              on_token=self._on_token, should_stop=self._stop.is_set))


def extend_text(executor, model: str, sample, new_ids_upto, following=()) -> str:
    """The focused text continued by generated tokens, up to and including the clicked one: the
    text a probe takes (Focus.text) so every other view shows that position. The prompt's token ids
    and the new ones are decoded together (a character split across two tokens comes out whole),
    skipping special tokens, so tokenizing the text again does not add a second BOS.

    `following`: the generated ids after the clicked one. When the clicked token ends inside a
    character (byte-level tokenizers split emoji and CJK characters into byte tokens), the text
    takes the next tokens up to the end of that character: a text ending in half a character would
    decode to U+FFFD, whose bytes the other views would show as tokens the model never saw."""
    ids = [int(i) for i in executor.sample_ids(model, sample)] + [int(i) for i in new_ids_upto]
    tokenizer = executor.model(model).tokenizer

    def decode(seq):
        return tokenizer.decode(seq, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    text = decode(ids)
    for token in list(following)[:MAX_CHAR_BYTES - 1]:
        if not text.endswith(REPLACEMENT):
            break
        ids.append(int(token))
        text = decode(ids)
    return text


def first_divergence(rows: dict, same_vocab: bool, done: dict | None = None) -> dict | None:
    """Where continuations first differ, as {model: new-token index}, or None where they agree so
    far. rows: {model: (ids, strings)}. With one vocabulary, the first index whose ids differ (or
    where a finished continuation has ended and another goes on). With different tokenizers ids
    mean nothing across models: the first character where the texts differ, and in each model the
    token holding it. done: {model: finished?}; an unfinished row that is a prefix of the others
    has not diverged yet."""
    if len(rows) < 2:
        return None
    done = done or {m: True for m in rows}
    if same_vocab:
        seqs = {m: [int(i) for i in ids] for m, (ids, _) in rows.items()}
    else:
        seqs = {m: "".join(strings) for m, (_, strings) in rows.items()}
    at = _first_difference(seqs, done)
    if at is None:
        return None
    if same_vocab:
        return {m: at for m in rows}
    return {m: _token_at(rows[m][1], at) for m in rows}


def _first_difference(seqs: dict, done: dict) -> int | None:
    shortest = min(len(s) for s in seqs.values())
    first = next(iter(seqs.values()))
    for k in range(shortest):
        if any(s[k] != first[k] for s in seqs.values()):
            return k
    # one continuation ended (EOS or length) where another goes on: they differ there
    ended = [m for m, s in seqs.items() if len(s) == shortest and done.get(m)]
    longer = [m for m, s in seqs.items() if len(s) > shortest]
    return shortest if ended and longer else None


def _token_at(strings: list[str], char: int) -> int:
    """The index of the token holding character `char` of the joined strings (the last token + 1
    when the text ends before it)."""
    end = 0
    for i, s in enumerate(strings):
        end += len(s)
        if char < end:
            return i
    return len(strings)


def same_vocabulary(executor, models) -> bool:
    """Whether the models share one tokenizer (the same vocabulary), so their ids compare."""
    vocabs = [executor.model(m).tokenizer.get_vocab() for m in models]
    return all(v == vocabs[0] for v in vocabs[1:])

