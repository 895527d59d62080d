"""`lensframe plan` estimates each pass's memory (and, with --calibrate, time) before anything runs, and
--max-memory refuses a plan that does not fit, suggesting a batch size that does."""
from __future__ import annotations

import json
import re

import pytest

from lensframe.board import Board
from lensframe.cli import main
from lensframe.errors import LensframeError
from lensframe.estimate import _peak_of, estimate_plan, parse_size
from lensframe.executor import Executor

from .conftest import tiny_spec

VIEWS = """  text: {type: text}
  lens: {type: logit_lens, top_k: 4}
  top: {type: top_examples, k: 3}
  attn: {type: attention}
"""


def board_for(tiny_models, tmp_path, batch_size=3, kind="gpt2"):
    return Board.from_text(tiny_spec(tiny_models[kind], VIEWS, batch_size=batch_size), base_dir=tmp_path,
                           cache_dir=tmp_path / "store")


def test_parse_size():
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("123456") == 123456
    assert parse_size("64 kib") == 64 * 1024
    for bad in ("lots", "2 parsecs", "", "-1GB"):
        with pytest.raises(LensframeError, match="cannot read"):
            parse_size(bad)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_estimate_matches_what_the_pass_holds(kind, tiny_models, tmp_path, monkeypatch):
    """The captured tensors of every batch, summed, match the estimate of the worst batch; the weights
    match the loaded parameters; the batches are the executor's."""
    board = board_for(tiny_models, tmp_path, kind=kind)
    dataset, focus = estimate_plan(board)
    assert (dataset.kind, focus.kind) == ("dataset", "focus")
    captured = []
    real_forward = Executor._forward

    def forward(self, loaded, input_ids, mask, hooks, sink, edits=(), **kw):
        out = real_forward(self, loaded, input_ids, mask, hooks, sink, edits, **kw)
        captured.append((tuple(input_ids.shape), sum(t.numel() * t.element_size() for t in sink.values())))
        return out

    monkeypatch.setattr(Executor, "_forward", forward)
    report = board.compute(progress=False)
    assert [shape for shape, _ in captured] == dataset.batches  # (samples, padded tokens), in order
    assert report.batches == len(dataset.batches) == 3
    measured = max(n for _, n in captured)
    assert measured == dataset.parts["captures"]  # same hooks, same shapes: exact
    board.executor.focus("main", 0)
    assert captured[-1][1] <= focus.parts["captures"] <= 2 * captured[-1][1]  # sample 0 vs the longest one
    model = board.executor.model("main").model
    params = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    assert dataset.parts["weights"] == sum(params.values())
    # the peak is what coexists: the runtime, the weights, the batch and the results, at least
    assert dataset.peak >= dataset.parts["runtime"] + dataset.parts["weights"] + measured


def test_max_memory_refuses_and_suggests_a_batch_size_that_fits(tiny_models, tmp_path, capsys):
    board = board_for(tiny_models, tmp_path, batch_size=8)
    dataset, focus = estimate_plan(board)
    limit = _peak_of(board, dataset, batch_size=3)
    assert dataset.peak > limit >= focus.peak  # only the dataset pass is over
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS, batch_size=8))
    args = ["plan", str(spec), "--cache-dir", str(tmp_path / "c"), "--max-memory"]
    assert main(args + [str(limit)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dataset pass on main needs ≈") and "more than --max-memory" in err
    assert "Traceback" not in err
    suggested = int(re.search(r"run: \{batch_size: (\d+)\}", err).group(1))
    assert 3 <= suggested < 8
    assert "layers:" in err and "top" in err  # the view that reads every layer
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS, batch_size=suggested))
    assert main(args + [str(limit)]) == 0
    assert "peak ≈" in capsys.readouterr().out
    assert main(args + ["2 parsecs"]) == 2
    assert "cannot read '2 parsecs'" in capsys.readouterr().err
    # compute refuses the same way, before it runs anything
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS, batch_size=8))
    assert main(["compute", str(spec), "--cache-dir", str(tmp_path / "c"), "--max-memory", str(limit)]) == 2
    assert "more than --max-memory" in capsys.readouterr().err
    assert not list((tmp_path / "c").rglob("*.safetensors"))


def test_calibrate_times_one_batch_per_pass_and_stores_nothing(tiny_models, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS))
    store = tmp_path / "c"
    assert main(["plan", str(spec), "--cache-dir", str(store), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert all(p["estimate"]["seconds"] is None and p["estimate"]["peak_bytes"] > 0 for p in plain["passes"])
    board = Board.from_file(spec, cache_dir=store)
    estimates = estimate_plan(board, calibrate=True)
    assert board.executor.forward_passes == 2 * len(estimates)  # the longest batch twice, per pass
    dataset, focus = estimates
    assert dataset.seconds_per_batch > 0 and dataset.seconds >= dataset.seconds_per_batch
    assert focus.seconds == focus.seconds_per_batch > 0
    assert dataset.measured_peak > dataset.parts["weights"]
    assert not any(f.is_file() for f in store.rglob("*"))  # the plan computed nothing into the store
    assert main(["plan", str(spec), "--cache-dir", str(store), "--calibrate"]) == 0
    assert "calibrated:" in capsys.readouterr().out
