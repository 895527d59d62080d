"""An edit search on a board: its store key, running it (in the terminal or beside a dashboard).

lensframe.edit_search computes; this module binds it to a board's models, dataset and store. A
finished search is stored under a key made of both models' fingerprints, the layer, the prefix and
the dataset, so a layer searched once is shown at once afterwards (also by the next server).
"""
from __future__ import annotations

import hashlib
import json
import threading

import numpy as np

from . import edit_search as es
from .errors import LensframeError
from .graph import STORE_FORMAT
from .jobs import BackgroundJob
from .ops.base import Result

VERSION = 1  # bump when a change alters what a search with the same inputs returns
NGRAM = 3  # tokens naming a dataset n-gram (the n ending at the scored position)
TOP_NGRAMS = 200


def mlp_changed(suspect, base, layer: int) -> bool:
    """Whether any weight of the layer's MLP differs between the two models."""
    a, b = es.mlp_module(suspect, layer), es.mlp_module(base, layer)
    return any(not bool((pa == pb).all()) for pa, pb in zip(a.parameters(), b.parameters()))


def search_key(board, model: str, other: str, layer: int, prefix: str) -> str:
    doc = {"op": "edit_search", "version": VERSION, "format": STORE_FORMAT, "layer": int(layer), "prefix": prefix,
           "models": [board.sources[model].fingerprint(), board.sources[other].fingerprint()],
           "dataset": board.dataset.fingerprint, "max_tokens": board.spec.dataset.max_tokens, "ngram": NGRAM}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def stored(board, model: str, other: str, layer: int, prefix: str) -> Result | None:
    return board.store.get(search_key(board, model, other, layer, prefix))


def run_search(board, model: str, other: str, layer: int, prefix: str = es.PREFIX, progress=None,
               stop=None) -> Result:
    """The search at `layer` (from the store when it was run before). Holds both models' locks
    while it runs forwards. progress(fraction, message); stop() -> True interrupts it."""
    hit = stored(board, model, other, layer, prefix)
    if hit is not None:
        return hit
    ex = board.executor
    suspect, base = ex.model(model), ex.model(other)
    if suspect.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        raise LensframeError(f"models {model!r} and {other!r} have different tokenizers: an edit search reads "
                             "one vocabulary")
    if not 0 <= layer < suspect.adapter.n_layers:
        raise LensframeError(f"layer {layer} is beyond the model's depth ({suspect.adapter.n_layers} layers)")
    if not mlp_changed(suspect, base, layer):
        raise LensframeError(f"layer {layer}'s MLP is the same in {model!r} and {other!r}: nothing to search for",
                             )
    report = progress or (lambda f, m: None)
    lock = ex.model_lock(model)  # per batch: the dashboard's other views run their forwards in between
    x_vocab = es.vocab_inputs(suspect, layer, prefix, progress=lambda f, m: report(0.8 * f, m), stop=stop, lock=lock)
    tok = ex.tokens(model)
    x_data, where = es.dataset_inputs(suspect, layer, tok["ids"], tok["lengths"],
                                      progress=lambda f, m: report(0.8 + 0.15 * f, m), stop=stop, lock=lock)
    with ex.model_lock(other):
        report(0.95, f"edit search: scoring at layer {layer}")
        vocab = es.change_scores(suspect, base, layer, x_vocab)
        data = es.change_scores(suspect, base, layer, x_data)
    _, sigma = es.changed_directions(suspect, base, layer)
    table = es.ngram_table(tok["ids"], where, data["change"], NGRAM, TOP_NGRAMS)
    rows = len(table)
    ngram_ids = np.full((rows, NGRAM), -1, np.int64)
    for i, (_, _, _, ids) in enumerate(table):
        ngram_ids[i, NGRAM - len(ids):] = ids
    pick = {(s, p): i for i, (s, p) in enumerate(map(tuple, where))}
    idx = np.array([pick[(s, p)] for _, s, p, _ in table], dtype=np.int64)
    arrays = {
        "vocab_change": vocab["change"].astype(np.float32), "vocab_alignment": vocab["alignment"].astype(np.float32),
        "ngram_change": data["change"][idx].astype(np.float32) if rows else np.zeros(0, np.float32),
        "ngram_alignment": data["alignment"][idx].astype(np.float32) if rows else np.zeros(0, np.float32),
        "ngram_sample": np.array([s for _, s, _, _ in table], np.int64),
        "ngram_position": np.array([p for _, _, p, _ in table], np.int64),
        "ngram_ids": ngram_ids,
        "data_change": data["change"].astype(np.float32),  # every dataset position, for the baseline
        "sigma": (sigma.numpy() if sigma is not None else np.zeros(0)).astype(np.float64),
    }
    result = Result(arrays, {"layer": int(layer), "prefix": prefix, "models": [model, other],
                             "rank": int(len(arrays["sigma"])), "down_changed": sigma is not None})
    if not board.store.read_only:
        board.store.put(search_key(board, model, other, layer, prefix), result, f"edit_search[{model} vs {other}, layer {layer}]",
                        refs={"models": [board.sources[m].fingerprint() for m in (model, other)]})
    report(1.0, f"edit search: layer {layer} done")
    return result


class EditSearchJob(BackgroundJob):
    """One search in a background thread; the view polls `fraction`, `message`, then `result`."""

    thread_name = "lensframe-edit-search"

    def __init__(self, board, model: str, other: str, layer: int, prefix: str):
        super().__init__()
        self.board, self.model, self.other, self.layer, self.prefix = board, model, other, layer, prefix
        self.fraction, self.message = 0.0, "starting"
        self.result: Result | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple:
        return (self.model, self.other, self.layer, self.prefix)

    def start(self) -> "EditSearchJob":
        self._launch()
        return self

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = fraction, message

    def _work(self) -> None:
        try:
            self.result = run_search(self.board, self.model, self.other, self.layer, self.prefix,
                                     progress=self._progress, stop=self._stop.is_set)
        except InterruptedError:
            self.error = "stopped"
        except LensframeError as err:
            self.error = str(err)
