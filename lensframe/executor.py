"""Runs a plan: prepare nodes, one fused dataset pass per model, memoized focus passes.

Dataset pass: every dataset node of one model is folded into ONE batched forward. Hooks capture
the union of the activations the nodes read; each batch is handed to every node's reduction and
then dropped, so memory is the size of the results, not of the dataset's activations.
Focus pass: one forward of the focused sample per model, capturing the union of what the focus
nodes read, memoized (LRU) across views and browser sessions of this process.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .graph import dataset_stages
from .memo import Memo
from .models.adapters import keeps_logits
from .progress import progress_bar as bar_for
from .ops import Batch, get_op
from .ops.base import Result
from .probes import Probe

FOCUS_MEMO_SIZE = 16  # samples and probes per model; a SmolLM2 sample's focus results are ~20 MB at 64 tokens
LOOKUP_MEMO_SIZE = 256
PROBE_TOKENS_MEMO_SIZE = 512
GENERATIONS_MEMO_SIZE = 64  # a generation is a few hundred numbers


@dataclass
class ComputeReport:
    forward_passes: int = 0
    batches: int = 0
    cache_hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    resumed_batches: int = 0  # batches a checkpoint of an interrupted pass already held (lensframe.checkpoint)
    checkpoints: int = 0  # checkpoints written

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PassContext:
    """What an op sees while running: the model's pieces and the dataset."""

    info: object
    adapter: object
    tokenizer: object
    dataset: object
    n_tokens: int  # longest tokenized sample (result arrays are padded to it)
    device: str
    nodes: tuple = ()  # the nodes of the pass this context runs (ops may share work between them)
    inputs: dict = field(default_factory=dict)  # results of the dataset nodes these nodes read
    progress: object = None  # how long finalize steps (training) report progress: see progress_bar
    scratch: dict = field(default_factory=dict)  # buffers that live for the whole pass
    executor: object = None  # the executor: ops reach it only through the methods below

    def load(self, name: str):
        """Another model of the spec (loaded once per process), e.g. the other side of a comparison."""
        return self.executor.model(name)

    def other_logits(self, name: str, input_ids, mask):
        """The logits [B, T, vocab] of another model of the spec on this batch (model_kl's reference),
        under that model's lock, on that model's device."""
        loaded = self.load(name)
        with self.executor.model_lock(name):
            return self.executor._forward(loaded, input_ids.to(loaded.device), mask.to(loaded.device), set(), {}).logits

    def progress_bar(self, total: int, desc: str):
        """A bar for a long finalize step (training), shown where this pass shows its progress."""
        return bar_for(self.progress, total, desc)


def set_threads(threads: int | None) -> int:
    """torch intra-op threads: explicit, else OMP_NUM_THREADS, else 2 (more thrashes small ops on
    a loaded 2-core machine; see docs/ARCHITECTURE.md)."""
    import torch

    n = threads or int(os.environ.get("OMP_NUM_THREADS") or 2)
    torch.set_num_threads(max(1, n))
    return n


class Executor:
    def __init__(self, board):
        self.board = board
        self._models: dict = {}
        self._model_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        # keyed by (model, sample): a spec comparing two models keeps as many samples of each as a
        # one-model spec does, so switching between recent samples runs neither model's forward
        self._focus_memo = Memo(FOCUS_MEMO_SIZE * max(1, len(board.sources)))
        self._lookup_memo = Memo(LOOKUP_MEMO_SIZE)
        self._probe_tokens = Memo(PROBE_TOKENS_MEMO_SIZE)
        self.generations = Memo(GENERATIONS_MEMO_SIZE)  # finished continuations (lensframe.generate)
        # per model: the lens decode's [rows, V] buffers, kept across probes (fresh ones per probe
        # cost page faults; rows stay below ROWS_PER_MATMUL, ~200 MB for SmolLM2 at most)
        self._probe_scratch: dict = {}
        self.forward_passes = 0  # every forward this executor ran (dataset and focus)
        self.shards = None  # set by lensframe.distributed to fold dataset passes on Dask workers
        self._focus_workers = None  # made by focus_workers() for served pages
        set_threads(board.spec.run.threads)

    # --- models -----------------------------------------------------------------------------
    def model_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(name, threading.RLock())

    def model(self, name: str):
        loaded = self._models.get(name)
        if loaded is not None:  # loaded: no lock (a job may hold it for a batch; a page waiting here hangs)
            return loaded
        with self.model_lock(name):
            if name not in self._models:
                self._models[name] = self.board.sources[name].load(self.board.device)
            return self._models[name]

    def context(self, name: str, n_tokens: int) -> PassContext:
        m = self.model(name)
        return PassContext(m.info, m.adapter, m.tokenizer, self.board.dataset, n_tokens, m.device, executor=self)

    def _forward_backward(self, loaded, input_ids, mask, hooks: set[str], grad_hooks: set[str], sink: dict,
                          grads: dict) -> None:
        """One forward and one backward of the sum of the samples' mean LM losses, so each sample's
        gradients are those of its own loss (samples do not interact in a causal LM with a mask).
        The weights stay frozen: the graph starts at the input embeddings."""
        import torch

        with loaded.adapter.capture(hooks | grad_hooks) as captured, torch.enable_grad():
            embeds = loaded.adapter.embed(input_ids).detach().requires_grad_(True)
            out = loaded.model(inputs_embeds=embeds, attention_mask=mask.long(), use_cache=False,
                               output_attentions=any(h.startswith("attn_pattern") for h in hooks))
            for h in grad_hooks:
                captured[h].retain_grad()
            logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
            nll = -logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            pairs = (mask[:, 1:] & mask[:, :-1]).float()
            loss = ((nll * pairs).sum(1) / pairs.sum(1).clamp_min(1)).sum()
            loss.backward()
            sink.update({h: v.detach() for h, v in captured.complete().items()})
            grads.update({h: captured[h].grad for h in grad_hooks})
        self.forward_passes += 1

    def _forward(self, loaded, input_ids, mask, hooks: set[str], sink: dict, edits=(), logits: bool = True):
        """One forward with `hooks` captured into `sink`. logits=False: the caller reads only the
        captures, so the LM head runs on the last position alone (the full [B, T, vocab] logits
        would be one more unembedding and ~100 MB per batch that nothing reads)."""
        import torch

        kwargs = {}
        if not logits and "unembed" not in hooks and keeps_logits(loaded.model):
            kwargs["logits_to_keep"] = 1
        with loaded.adapter.capture(hooks) as captured, loaded.adapter.edit_neurons(edits), torch.no_grad():
            out = loaded.model(input_ids=input_ids, attention_mask=mask.long(), use_cache=False,
                               output_attentions=any(h.startswith("attn_pattern") for h in hooks), **kwargs)
            sink.update(captured.complete())
        self.forward_passes += 1
        return out

    # --- prepare nodes ----------------------------------------------------------------------
    def prepared(self, node) -> Result:
        planned = self.board.plan.nodes[node]
        res = self.board.store.get(planned.key)
        if res is None:
            with self.model_lock(node.model):
                res = self.board.store.get(planned.key)
                if res is None:
                    op = get_op(node.op)
                    res = op.compute(node, self.context(node.model, 0))
                    self.board.store.put(planned.key, res, node.label())
                    planned.cached = True
        return res

    def derived(self, node) -> Result:
        """Compute a derive node from its inputs' stored results (no forward) and store it."""
        planned = self.board.plan.nodes[node]
        ctx = self.context(node.model, 0) if node.model else PassContext(None, None, None, self.board.dataset, 0, "cpu")
        ctx.inputs = {i: self.board.result(i) for i in node.inputs}
        missing = [i.label() for i, r in ctx.inputs.items() if r is None]
        if missing:
            raise RuntimeError(f"{node.label()} needs {', '.join(missing)}: run compute first")
        res = get_op(node.op).compute(node, ctx)
        self.board.store.put(planned.key, res, node.label())
        planned.cached = True
        return res

    def tokens(self, model: str) -> Result:
        node = next(p.node for p in self.board.plan.of_kind("prepare", model) if p.node.op == "tokens")
        return self.board.result(node)  # read and checksummed once per board, not at every pass, batch or focus

    # --- dataset passes ---------------------------------------------------------------------
    def compute(self, progress: bool | Callable[[float, str], None] = True) -> ComputeReport:
        """Run every missing dataset node; cached ones are skipped (a warm start runs no forward).
        Under the store's lock for this plan: a second compute of it (another process) waits for
        the first, then finds its results stored."""
        plan, store = self.board.plan, self.board.store
        if store.read_only:
            return self._compute(progress)
        keys = sorted(p.key for p in plan.nodes.values() if p.node.kind in ("prepare", "dataset", "derive"))
        name = "compute-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]

        def waiting(pid: str) -> None:
            _say_for(progress)(f"waiting for another compute of this plan on this store (pid {pid}) to finish")

        with store.lock(name, on_wait=waiting):
            return self._compute(progress)

    def _compute(self, progress) -> ComputeReport:
        t0 = time.perf_counter()
        report = ComputeReport()
        plan, store = self.board.plan, self.board.store
        prepare = [p for p in plan.of_kind("prepare") if not (store.has(p.key) and store.get(p.key) is not None)]
        report.cache_hits += len(plan.of_kind("prepare")) - len(prepare)
        slow = [p for p in prepare if p.node.op != "tokens"]  # weight statistics take a minute on a real model
        bar = bar_for(progress, len(slow), f"weights ({', '.join(sorted({p.node.op for p in slow}))})") if slow else bar_for(None, 0, "")
        for p in prepare:
            self.prepared(p.node)
            report.computed += 1
            if p.node.op != "tokens":
                bar.update(1)
        bar.close()
        for model in plan.models:
            todo = []
            for p in plan.of_kind("dataset", model):
                if store.get(p.key) is not None:  # verifies the checksum: a corrupt entry is redone
                    report.cache_hits += 1
                    p.cached = True
                else:
                    todo.append(p)
            # Nodes that read another dataset node's result (a lens through a trained tuned lens)
            # run in a later pass; everything else of the model is fused into the first.
            for stage in dataset_stages(todo):
                self._dataset_pass(model, stage, report, progress)
        derive = sorted(plan.of_kind("derive"), key=lambda p: _depth(p.node))
        todo = [p for p in derive if store.get(p.key) is None]
        report.cache_hits += len(derive) - len(todo)
        if todo:  # clustering, permutation tests: seconds each, so they show progress too
            bar = bar_for(progress, len(todo), f"derived results ({', '.join(p.node.op for p in todo)})")
            for p in todo:
                self.derived(p.node)
                report.computed += 1
                bar.update(1)
            bar.close()
        report.seconds = round(time.perf_counter() - t0, 3)
        return report

    def dataset_batches(self, model: str) -> list[np.ndarray]:
        """The dataset's samples in batches, in the order every pass runs them: sorted by length
        (similar lengths together: less padding), then cut into run.batch_size. Shards of a
        distributed pass are runs of these batches, so each batch is computed the same way."""
        lengths = self.tokens(model)["lengths"]
        order = np.argsort(-lengths, kind="stable")
        bs = self.board.spec.run.batch_size
        return [order[i : i + bs] for i in range(0, len(order), bs)]

    def pass_context(self, model: str, nodes, inputs: dict, progress=False) -> PassContext:
        ctx = self.context(model, self.tokens(model)["ids"].shape[1])
        ctx.nodes, ctx.inputs, ctx.progress = tuple(nodes), inputs, progress
        return ctx

    def run_batches(self, model: str, ctx: PassContext, states: dict, batches, on_batch=None) -> int:
        """Fold `batches` into the reduction `states` ({node: state}) of ctx.nodes: one forward (and
        backward, when a node reads gradients) per batch, shared by every node. Returns the number
        of forward passes run."""
        import torch

        loaded = self.model(model)
        tok = self.tokens(model)
        ids, lengths = tok["ids"], tok["lengths"]
        ops = [(node, get_op(node.op)) for node in ctx.nodes]
        hooks = set().union(*(op.hooks(node, loaded.info) for node, op in ops))
        grad_hooks = set().union(*(op.grad_hooks(node, loaded.info) for node, op in ops))
        pad = loaded.tokenizer.pad_token_id or 0
        for samples in batches:
            T = int(lengths[samples].max())
            batch_ids = torch.as_tensor(ids[samples, :T], dtype=torch.long)
            mask = batch_ids >= 0
            batch_ids = batch_ids.masked_fill(~mask, pad).to(loaded.device)
            mask = mask.to(loaded.device)
            captures, grads = {}, {}
            with self.model_lock(model):  # focus passes may interleave between batches
                if grad_hooks:  # one forward + backward serves every node of the pass
                    self._forward_backward(loaded, batch_ids, mask, hooks, grad_hooks, captures, grads)
                else:
                    self._forward(loaded, batch_ids, mask, hooks, captures, logits=False)
            batch = Batch(np.asarray(samples), batch_ids, mask, captures, grads=grads)
            for node, op in ops:
                states[node] = op.update(node, states[node], batch, ctx)
            del batch, captures, grads
            if on_batch is not None:
                on_batch()
        return len(batches)

    def _dataset_pass(self, model: str, todo, report: ComputeReport, progress) -> None:
        from .checkpoint import PassCheckpoint, pass_name

        nodes = [p.node for p in todo]
        inputs = {i: self.board.result(i) for n in nodes for i in n.inputs if i.kind == "dataset"}
        ctx = self.pass_context(model, nodes, inputs, progress)
        batches = self.dataset_batches(model)
        what = ", ".join(sorted({n.op for n in nodes}))  # what the pass computes, in the bar's words
        if self.shards is not None:  # a distributed pass (lensframe.distributed): workers fold shards
            bar = bar_for(progress, len(batches), f"dataset pass on {model} ({what})")
            states, passes = self.shards.run(model, nodes, inputs, batches, bar.update)
        else:
            ckpt = PassCheckpoint(self.board.store, pass_name(model, [p.key for p in todo], batches),
                                  self.board.spec.run.checkpoint_every, nodes, say=_say_for(progress),
                                  keys=[p.key for p in todo])
            resumed = ckpt.load(len(batches))
            done, states = resumed if resumed else (0, {n: get_op(n.op).init(n, ctx) for n in nodes})
            if done:
                _say_for(progress)(f"resuming the dataset pass on {model} at batch {done} of {len(batches)} "
                                   "(a checkpoint of an interrupted run)")
            bar = bar_for(progress, len(batches), f"dataset pass on {model} ({what})", initial=done)
            report.resumed_batches += done

            def after_batch():
                nonlocal done
                done += 1
                bar.update(1)
                if done < len(batches) and ckpt.due(done):
                    ckpt.save(done, states)

            passes = self.run_batches(model, ctx, states, batches[done:], after_batch)
            report.checkpoints += ckpt.saved
        bar.close()
        report.forward_passes += passes
        report.batches += len(batches)
        for p in todo:
            self.board.store.put(p.key, get_op(p.node.op).finalize(p.node, states[p.node], ctx), p.node.label())
            p.cached = True
            report.computed += 1
        if self.shards is None:
            ckpt.remove()  # after the results: a kill while storing them resumes from the checkpoint

    # --- focus passes -----------------------------------------------------------------------
    def focus(self, model: str, sample) -> dict:
        """Results of every focus node of `model` for one sample, memoized: read from the store
        where the dataset pass kept them, else from one forward of the sample.

        `sample` may be a Probe (typed text): it is never kept in the store, and the same forward
        also computes its row of every per-sample dataset node (the logit lens), which a dataset
        sample reads from the store instead. A per-sample node whose own inputs are not computed
        yet (a tuned lens still training) is left out; the view that needs it waits. Probes are
        memoized in this process's memory by their token ids, never written to the store."""
        import torch

        memo_key = self.focus_key(model, sample)
        hit = self._focus_memo.get(memo_key)
        if hit is not None:
            return hit
        nodes = [p.node for p in self.board.plan.of_kind("focus", model)]
        probe = isinstance(sample, Probe)
        kept = {} if probe else self.kept_focus(model, sample)  # stored by the dataset pass: no forward for these
        if len(kept) == len(nodes) and not probe:
            return self._focus_memo.put(memo_key, kept)
        nodes = [nd for nd in nodes if nd not in kept]
        rows = [nd for nd in self.per_sample_nodes(model)
                if all(self.board.result(i) is not None for i in nd.inputs if i.kind == "dataset")] if probe else []
        loaded = self.model(model)
        ids = self.sample_ids(model, sample)
        input_ids = torch.as_tensor(ids[None], dtype=torch.long, device=loaded.device)
        mask = torch.ones_like(input_ids, dtype=torch.bool)
        hooks = set().union(*(get_op(nd.op).hooks(nd, loaded.info) for nd in nodes + rows))
        captures: dict = {}
        with self.model_lock(model):
            hit = self._focus_memo.get(memo_key)  # another session may have filled it while we waited
            if hit is not None:
                return hit
            if nodes or rows:
                self._forward(loaded, input_ids, mask, hooks, captures, logits=False)
            ctx = self.context(model, len(ids))
            results = {**kept, **{nd: get_op(nd.op).extract(nd, captures, ctx) for nd in nodes}}
            if rows:
                batch = Batch(np.zeros(1, dtype=np.int64), input_ids, mask, captures)
                for nd, res in self._rows(model, rows, batch, [sample.text]).items():
                    results[nd] = Result({k: v[0] for k, v in res.arrays.items()}, res.meta)
            return self._focus_memo.put(memo_key, results)

    def focus_batch(self, model: str, samples: list[int]) -> list[dict]:
        """focus() of several dataset samples with ONE padded forward for those not memoized or kept
        (lensframe.focus_worker batches the samples that sessions wait for). Each sample's captures
        are cut out of the batch as the dataset pass cuts kept focus results (right padding under
        the attention mask: its real tokens compute as alone, up to float rounding), then memoized."""
        from .ops.kept_focus import sample_captures

        nodes = [p.node for p in self.board.plan.of_kind("focus", model)]
        out: dict = {}
        todo = []
        for s in dict.fromkeys(samples):
            hit = self._focus_memo.get(self.focus_key(model, s))
            kept = None if hit is not None else self.kept_focus(model, s)
            if hit is not None or len(kept) == len(nodes):
                out[s] = hit if hit is not None else self._focus_memo.put(self.focus_key(model, s), kept)
            else:
                todo.append((s, kept))
        if len(todo) == 1:
            out[todo[0][0]] = self.focus(model, todo[0][0])
        elif todo:
            loaded = self.model(model)
            rows = [self.sample_ids(model, s) for s, _ in todo]
            lengths = [len(r) for r in rows]
            ids, mask = _right_padded(rows, loaded.tokenizer.pad_token_id or 0)
            missing = [nd for nd in nodes if any(nd not in kept for _, kept in todo)]
            hooks = set().union(*(get_op(nd.op).hooks(nd, loaded.info) for nd in missing))
            captures: dict = {}
            with self.model_lock(model):
                self._forward(loaded, ids.to(loaded.device), mask.to(loaded.device), hooks, captures, logits=False)
            for b, ((s, kept), n) in enumerate(zip(todo, lengths)):
                caps, ctx = sample_captures(captures, b, n), self.context(model, n)
                results = {**kept, **{nd: get_op(nd.op).extract(nd, caps, ctx) for nd in nodes if nd not in kept}}
                out[s] = self._focus_memo.put(self.focus_key(model, s), results)
        return [out[s] for s in samples]

    def remember_focus(self, model: str, sample, results: dict) -> dict:
        """Memoize focus results computed elsewhere (a focus process) as focus() would have."""
        return self._focus_memo.put(self.focus_key(model, sample), results)

    def focus_workers(self, max_waiting: int = 16, process: bool = False):
        """The FocusWorkers (lensframe.focus_worker) that run this executor's focus forwards for a
        served page off the event loop, on threads or (process=True) in a process per model; made
        on first use, shared by every session of the board."""
        if self._focus_workers is None:
            from .focus_worker import FocusWorkers

            self._focus_workers = FocusWorkers(self, max_waiting, process=process)
        return self._focus_workers

    def close_focus_workers(self) -> None:
        """Stop this executor's focus workers and their processes (a board replaced by --watch)."""
        if self._focus_workers is not None:
            self._focus_workers.close()

    def focus_ready(self, model: str, sample) -> bool:
        """Whether focus() of this sample answers without a forward (memoized, or every focus node
        of the model kept in the store)."""
        if self.focus_key(model, sample) in self._focus_memo:
            return True
        if isinstance(sample, Probe):
            return False
        return len(self._kept_stored(model)) == len(self.board.plan.of_kind("focus", model))

    def kept_focus(self, model: str, sample: int) -> dict:
        """Focus results of `sample` that a dataset pass kept in the store (lensframe.ops.kept_focus),
        by focus node; nodes not kept, or not computed yet, are absent."""
        from .ops.kept_focus import sample_result

        return {focus: sample_result(stored, sample) for focus, stored in self._kept_stored(model).items()}

    def _kept_stored(self, model: str) -> dict:
        """{focus node: its stored kept_focus result} for the kept nodes already computed."""
        stored = {focus: self.board.result(p.node) for focus, p in self.board.plan.kept(model).items()}
        return {focus: res for focus, res in stored.items() if res is not None}

    # --- probes: typed text, focused like a sample, never stored ---------------------------------
    def focus_key(self, model: str, sample) -> tuple:
        """The focus memo's key of a sample or probe; lensframe.focus_worker coalesces requests by it."""
        if isinstance(sample, Probe):  # keyed by what the model reads: two spellings of one tokenization share
            return (model, "probe", tuple(int(i) for i in self.probe_tokens(model, sample)["ids"]))
        return (model, sample)

    def probe_tokens(self, model: str, probe: Probe) -> dict:
        """The probe tokenized as the dataset is (same tokenizer and special tokens), cut to
        run.probe_max_tokens and the model's context: {"ids": int array, "strings": display
        strings, "cut": tokens dropped (0 when none), "limit": the cut}; memoized. Not the
        dataset's max_tokens: that bounds the dataset pass, while a probe is one text a researcher
        typed or extended with generated tokens."""
        key = (model, probe.text)
        hit = self._probe_tokens.get(key)
        if hit is not None:
            return hit
        from .ops.tokens import display_tokens

        loaded = self.model(model)
        limit = self.board.spec.run.probe_max_tokens
        if loaded.info.max_positions:
            limit = min(limit, int(loaded.info.max_positions))
        full = loaded.tokenizer(probe.text, add_special_tokens=True)["input_ids"]
        ids = np.asarray(full[:limit], dtype=np.int64)
        res = {"ids": ids, "strings": display_tokens(loaded.tokenizer, ids.tolist()), "cut": max(0, len(full) - limit),
               "limit": limit}
        return self._probe_tokens.put(key, res)

    def sample_ids(self, model: str, sample) -> np.ndarray:
        """Token ids of a dataset sample (its real tokens) or of a probe."""
        if isinstance(sample, Probe):
            return self.probe_tokens(model, sample)["ids"]
        tok = self.tokens(model)
        return np.asarray(tok["ids"][sample, : int(tok["lengths"][sample])], dtype=np.int64)

    def per_sample_nodes(self, model: str) -> list:
        """The model's dataset nodes whose result is one row per sample, computed from that sample
        alone (the logit lens): a probe gets its own row from its focus forward."""
        return [p.node for p in self.board.plan.of_kind("dataset", model) if get_op(p.node.op).per_sample]

    def _rows(self, model: str, nodes, batch, texts) -> dict:
        """Per-sample dataset nodes run over `batch` alone, as if it were the whole dataset."""
        from .data import Dataset

        ctx = self.context(model, int(batch.mask.shape[1]))
        ctx.scratch = self._probe_scratch.setdefault(model, {})  # callers hold the model's lock
        ctx.dataset = Dataset(tuple(texts), None, tuple("probe" for _ in texts), "probes")
        ctx.nodes = tuple(nodes)
        ctx.inputs = {i: self.board.result(i) for nd in nodes for i in nd.inputs if i.kind == "dataset"}
        out = {}
        for nd in nodes:
            op = get_op(nd.op)
            state = op.update(nd, op.init(nd, ctx), batch, ctx)
            out[nd] = op.finalize(nd, state, ctx)
        return out

    def probe_set(self, model: str, probes) -> Result:
        """The next-token distribution of every probe of a set from ONE batched forward of `model`:
        "logprobs" [N, V] at each probe's last token, "lengths" [N] and "cut" [N] (tokens dropped
        past max_tokens); memoized as a lookup. Padding is on the right, under the attention mask,
        so each probe's real tokens compute as they do alone (up to float rounding)."""
        import torch

        probes = tuple(probes)
        key = ("probe_set", model, probes)
        hit = self._lookup_memo.get(key)
        if hit is not None:
            return hit
        loaded = self.model(model)
        rows = [self.sample_ids(model, p) for p in probes]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        ids, mask = _right_padded(rows, loaded.tokenizer.pad_token_id or 0)
        with self.model_lock(model):
            out = self._forward(loaded, ids.to(loaded.device), mask.to(loaded.device), set(), {})
        last = out.logits[torch.arange(len(rows)), torch.as_tensor(lengths - 1)].float()
        res = Result({"logprobs": torch.log_softmax(last, -1).cpu().numpy(), "lengths": lengths,
                      "cut": np.array([self.probe_tokens(model, p)["cut"] for p in probes], dtype=np.int64)},
                     {"texts": [p.text for p in probes]})
        return self._lookup_memo.put(key, res)

    # --- lookups and interventions ------------------------------------------------------------
    def lookup(self, node, **args) -> Result:
        """A small computation on demand (from weights, or from a sample's focus results), for
        arguments that come from the focus rather than the spec; memoized."""
        key = (node, tuple(sorted(args.items())))
        hit = self._lookup_memo.get(key)
        if hit is not None:
            return hit
        return self._lookup_memo.put(key, get_op(node.op).lookup(node, self, **args))

    def memoized(self, key: tuple, make: Callable):
        """make()'s value, computed once per process for `key` (kept with the lookups), for facts a
        lookup needs on every call but that change only with the weights (whether two models share
        their unembedding)."""
        key = ("memoized",) + tuple(key)
        hit = self._lookup_memo.get(key)
        if hit is None:
            hit = self._lookup_memo.put(key, make())
        return hit

    def intervene(self, model: str, sample, edits: tuple) -> "np.ndarray":
        """Final log-probabilities [T, V] of one sample (or probe) with neuron edits applied by hooks
        (edits: (layer, position, neuron, value), ...); one forward, memoized as a lookup."""
        import torch

        loaded = self.model(model)
        input_ids = torch.as_tensor(self.sample_ids(model, sample)[None], dtype=torch.long, device=loaded.device)
        with self.model_lock(model):
            out = self._forward(loaded, input_ids, torch.ones_like(input_ids, dtype=torch.bool), set(), {}, edits)
        return torch.log_softmax(out.logits[0].float(), -1).cpu().numpy()


def _right_padded(rows, pad: int):
    """Token id rows as one [N, longest] batch padded on the right, and its attention mask."""
    import torch

    ids = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def _say_for(progress):
    """Where a pass's notes go: the terminal (through tqdm, so no bar swallows them) when progress is
    shown there, the page's progress message for a callback, nowhere when progress is off."""
    if progress is True:
        from tqdm.auto import tqdm

        return tqdm.write
    if callable(progress):
        return lambda line: progress(0.0, line)
    return lambda line: None


def _depth(node) -> int:
    return max([_depth(i) + 1 for i in node.inputs] + [0])
