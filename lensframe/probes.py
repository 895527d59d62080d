"""Probes: text a researcher types (or keeps in the spec) that the focus views follow like a sample.

A Probe is a session's own text. It is focused exactly as a dataset sample is (one focus forward
per model, memoized by its token ids in memory) and is never written to the store. A probe set is
several probes asked at once: typed one per line, or a template with `{}` and a list of fillers;
it runs as one batch, one forward per model (lensframe.executor.Executor.probe_set).

Everything a user can type is cleaned or refused here, with a message a page can show: empty text,
control characters (removed, with a note), text that is not valid UTF-8 (replaced, with a note),
a template without `{}`, a template with no fillers or an empty one.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .errors import LensframeError

MAX_PROBES = 64  # one batch; more is a dataset (put it in the spec's dataset instead)
MAX_CHARS = 20_000  # far past any model context this tool serves; longer pastes are refused, not tokenized
SLOT = "{}"


class ProbeError(LensframeError):
    """Text that cannot become a probe; str() is the message the page or the CLI shows."""


@dataclass(frozen=True)
class Probe:
    """A typed text, focused like a dataset sample. Hashable: memo keys and lookups take it as the
    `sample` argument in place of a dataset index."""

    text: str

    def __str__(self) -> str:
        return self.text


def clean_text(text) -> tuple[str, list[str]]:
    """A text as a probe takes it, and the notes on what was changed. Raises ProbeError when
    nothing is left to ask."""
    notes = []
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            text = text.decode("utf-8", errors="replace")
            notes.append("the text was not valid UTF-8: undecodable bytes were replaced by \N{REPLACEMENT CHARACTER}")
    text = str(text)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):  # lone surrogates: not encodable as UTF-8
        text = text.encode("utf-8", errors="replace").decode("utf-8")
        notes.append("the text held invalid UTF-16 surrogates: they were replaced by ?")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # Windows and old Mac line ends are line breaks
    controls = [ch for ch in text if ch not in "\n\t" and unicodedata.category(ch) == "Cc"]
    if controls:
        text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
        notes.append(f"removed {len(controls)} control character(s) (e.g. {repr(controls[0])})")
    if len(text) > MAX_CHARS:
        raise ProbeError(f"the text is {len(text):,} characters long; a probe takes at most {MAX_CHARS:,}")
    if not text.strip():
        raise ProbeError("the text is empty: type a prompt to ask the model")
    return text, notes


def expand_template(template: str, fillers) -> list[str]:
    """`"{} is located in the city of"` with ["Paris", "Rome"] -> one text per filler."""
    if SLOT not in template:
        raise ProbeError(f"the template has no {SLOT} for the fillers to go into "
                         f"(e.g. \"{SLOT} is located in the city of\")")
    fillers = [str(f) for f in (fillers or [])]
    if not fillers:
        raise ProbeError("the template has no fillers: give at least one (comma-separated)")
    empty = [i for i, f in enumerate(fillers) if not f.strip()]
    if empty:
        raise ProbeError(f"filler {empty[0] + 1} of {len(fillers)} is empty")
    return [template.replace(SLOT, f.strip()) for f in fillers]


def split_fillers(text: str) -> list[str]:
    """Fillers as typed in one box: comma- or newline-separated ("Paris, Rome" -> ["Paris", "Rome"])."""
    return [f for f in re.split(r"[,\n]", text or "")] if (text or "").strip() else []


def parse_probes(text: str, fillers: str = "") -> tuple[list[Probe], list[str]]:
    """What the probe box holds -> (probes, notes). One line is one probe; several lines are a
    set; a line with `{}` and fillers is a template (every line with `{}` is expanded)."""
    text, notes = clean_text(text)
    fills = split_fillers(fillers)
    lines = [ln for ln in text.splitlines() if ln.strip()] if "\n" in text.strip() else [text]
    texts = []
    for line in lines:
        if fills and SLOT in line:
            texts += expand_template(line, fills)
        else:
            texts.append(line)
    if fills and not any(SLOT in ln for ln in lines):
        raise ProbeError(f"fillers were given but no line has {SLOT} for them to go into")
    return make_set(texts), notes


def ask(focus, text, fillers: str = "") -> tuple[list[Probe], list[str]]:
    """Focus typed text, as the probe box's Ask and Board.probe do: one probe becomes focus.text;
    a set becomes focus.probes, its first one focused. Returns (probes, notes on what the text lost);
    raises ProbeError, leaving the focus as it was."""
    probes, notes = parse_probes(text, fillers)
    if len(probes) > 1:
        focus.param.update(probes=probes, text=probes[0].text, position=None)
    else:
        focus.param.update(text=probes[0].text, position=None)
    return probes, notes


def make_set(texts) -> list[Probe]:
    texts = list(dict.fromkeys(texts))  # a repeated text is one probe
    if len(texts) > MAX_PROBES:
        raise ProbeError(f"{len(texts)} probes at once; a set takes at most {MAX_PROBES} "
                         "(for more, make them the spec's dataset)")
    return [Probe(t) for t in texts]


def probes_from_spec(entries) -> list[Probe]:
    """The spec's `probes:` section (validated by lensframe.spec.schema) as a probe set."""
    texts = []
    for entry in entries or []:
        if isinstance(entry, str):
            texts.append(clean_text(entry)[0])
        else:
            texts += expand_template(entry.template, entry.fillers)
    return make_set(texts)


def compare_probes(executor, models, probes, token: str | None = None) -> list[dict]:
    """One row per probe of a set: every model's top next token and its probability and, with two
    models a and b (in `models`' order), KL(P_a || P_b) of the next-token distributions and the
    change in `token`'s probability p_b - p_a. One batched forward per model (Executor.probe_set).
    `token` is text ("Paris", " Paris"); its first token id is used, and the row says which."""
    import numpy as np

    sets = {m: executor.probe_set(m, probes) for m in models}
    tokenizer = executor.model(models[0]).tokenizer
    token_id = None
    if token:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        token_id = int(ids[0]) if ids else None
    rows = []
    for i, probe in enumerate(probes):
        row = {"probe": probe.text, "tokens": int(sets[models[0]]["lengths"][i]), "cut": int(sets[models[0]]["cut"][i])}
        for m in models:
            lp = sets[m]["logprobs"][i]
            top = int(np.argmax(lp))
            row[f"top:{m}"] = tokenizer.decode([top], clean_up_tokenization_spaces=False)
            row[f"top_id:{m}"] = top
            row[f"p:{m}"] = float(np.exp(lp[top]))
            if token_id is not None:
                row[f"p_token:{m}"] = float(np.exp(lp[token_id]))
        if len(models) == 2:
            a, b = (sets[m]["logprobs"][i].astype(np.float64) for m in models)
            row["kl"] = float(max(0.0, (np.exp(a) * (a - b)).sum()))
            if token_id is not None:
                row["delta_token"] = row[f"p_token:{models[1]}"] - row[f"p_token:{models[0]}"]
        rows.append(row)
    return rows
