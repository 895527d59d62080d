"""Dataset passes on Dask workers: the dataset is cut into shards, every worker folds its shards
into the reductions' states with the same fused pass as one process, and the states merge (in
shard order) into the one store of the spec.

    lensframe compute SPEC --workers 4                  # a LocalCluster on this machine
    lensframe compute SPEC --scheduler tcp://host:8786  # an existing cluster

Exactness: a shard is a run of the batches the single process would run (same samples, same
padding), so each batch computes the same numbers; reductions merge in shard order, and the ones
whose merge could reorder anything are order-proof (top-k keeps the earlier sample among ties;
the tuned lens draws its training tokens per batch). Per-sample rows and integer counts are then
identical; float sums (neuron importance) add the same float32 terms in float64, in a different
grouping, and are rounded to float32 at the end (see docs/ARCHITECTURE.md).

Workers build the Board from the normalized spec (the spec's base folder, model sources and dataset
must be reachable at the same paths on every worker) and keep it for the worker's life, so each
worker loads a model once. Results go to the coordinator's store; workers write nothing.
"""
from __future__ import annotations

import hashlib
import tempfile
from contextlib import contextmanager

from .errors import LensframeError
from .ops import get_op

SHARDS_PER_WORKER = 2  # a few shards each: a slow worker does not hold the pass up for long

_boards: dict = {}  # per worker process: (spec text, folder, local views allowed, device) -> Board


def _worker_board(spec_text: str, spec_file: str, base_dir: str, allow_local_views: bool, device: str, threads: int):
    from .board import Board
    from .executor import set_threads

    key = hashlib.sha256(f"{spec_text}\0{base_dir}\0{allow_local_views}\0{device}".encode()).hexdigest()
    if key not in _boards:
        # a private store: tokenizing is cheap, and a worker must not write into the shared one.
        # Local view files (--allow-local-views on the coordinator) are imported here too, with the ops they register.
        _boards[key] = Board.from_text(spec_text, spec_file, base_dir, allow_local_views=allow_local_views,
                                       device=device, cache_dir=tempfile.mkdtemp(prefix="lensframe-worker-"))
    set_threads(threads)  # the coordinator's count: the same matmul kernels, the same numbers
    return _boards[key]


def fold_shard(spec_text: str, spec_file: str, base_dir: str, allow_local_views: bool, device: str, threads: int,
               model: str, nodes: list, inputs: dict, batches: list) -> tuple[dict, int]:
    """On a worker: the reduction states of `nodes` after folding `batches` in (and the number of
    forward passes that took)."""
    executor = _worker_board(spec_text, spec_file, base_dir, allow_local_views, device, threads).executor
    ctx = executor.pass_context(model, nodes, inputs)
    states = {n: get_op(n.op).init(n, ctx) for n in nodes}
    passes = executor.run_batches(model, ctx, states, batches)
    return states, passes


class DaskShards:
    """Executor.shards for a Dask client: runs a dataset pass's batches as shards on the workers."""

    def __init__(self, board, client, spec_text: str, threads: int):
        self.board, self.client, self.spec_text, self.threads = board, client, spec_text, threads

    def run(self, model: str, nodes: list, inputs: dict, batches: list, on_batch) -> tuple[dict, int]:
        from dask.distributed import as_completed

        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        n = min(len(batches), workers * SHARDS_PER_WORKER) or 1
        cuts = [round(i * len(batches) / n) for i in range(n + 1)]
        shards = [batches[cuts[i]:cuts[i + 1]] for i in range(n)]
        spec = self.board.spec
        args = (self.spec_text, str(spec.file), str(spec.base_dir), spec.allow_local_views, self.board.device,
                self.threads, model, nodes, inputs)
        futures = {self.client.submit(fold_shard, *args, shard, pure=False): i for i, shard in enumerate(shards)}
        done, merged, passes, next_i = {}, None, 0, 0
        for future in as_completed(futures):
            i = futures[future]
            done[i] = future.result()
            on_batch(len(shards[i]))
            while next_i in done:  # merge in shard order, whatever order the shards finish in
                states, count = done.pop(next_i)
                passes += count
                merged = states if merged is None else {
                    node: get_op(node.op).merge(node, merged[node], states[node]) for node in nodes}
                next_i += 1
        return merged, passes


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, threads: int = 1):
    """A Dask client: to `scheduler`, or to a LocalCluster of `workers` processes (one thread each)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise LensframeError("distributed computing needs dask.distributed (pip install 'dask[distributed]')") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise LensframeError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc}); start one with "
                                 "`dask scheduler` and its workers with `dask worker tcp://HOST:8786`") from None
        with client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": str(threads)}) as cluster, Client(cluster) as client:
        yield client


def compute_distributed(board, workers: int | None = None, scheduler: str | None = None, progress=True):
    """Run the board's missing dataset passes on Dask workers; returns the ComputeReport."""
    from .executor import set_threads

    import yaml

    threads = set_threads(board.spec.run.threads)
    spec_text = yaml.safe_dump(board.spec.normalized(), sort_keys=False)  # defaults filled: one meaning everywhere
    with dask_client(workers, scheduler, threads) as client:
        board.executor.shards = DaskShards(board, client, spec_text, threads)
        try:
            return board.compute(progress)
        finally:
            board.executor.shards = None
