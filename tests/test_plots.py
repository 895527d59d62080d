"""The HoloViews plots of top_examples and dream, read back from the Bokeh document a served page
would get: what they draw equals an independent computation, their axes are named, and a focus
change (or a running dream's new steps) patches their data without building new Bokeh models.

References: the activations come from plain transformers forwards of a separately loaded copy of the
tiny model (tests/test_neurons.py's hooks), histogrammed here with numpy on edges written out from
the documented design (uniform in asinh(m) on [-6, 6], 48 bins); the dream's trace is the job's own
record of its steps, which tests/test_dream.py checks against the model.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from .conftest import tiny_spec
from .test_dream import WIRED_NEURON, wired_model  # noqa: F401  (a fixture)
from .test_neurons import MAX_TOKENS, brute_force_acts, make_board, reference, trace

pytest.importorskip("holoviews")
pytest.importorskip("panel")

EDGES = np.sinh(np.linspace(-6.0, 6.0, 49))  # ARCHITECTURE.md: "fixed edges uniform in asinh(m)"
PROBE = "Never trust a histogram that reads the mat."


@pytest.fixture(scope="module")
def top_board(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    return make_board(tiny_models["gpt2"], tmp, "  text: {type: text}\n  top: {type: top_examples, k: 3}\n")


@pytest.fixture(scope="module")
def acts(tiny_models) -> list:
    """m of every dataset token, [layers, T, d_mlp] per sample, from the reference forwards."""
    return brute_force_acts(tiny_models["gpt2"], "gpt2")


def rendered(board, vid: str):
    """(view, ctx, focus, root): the view rendered as the in-place engine does, and the Bokeh
    model of its layout in a fresh document."""
    from bokeh.document import Document

    from lensframe.context import ViewContext

    view = board.views[vid]
    focus = board.new_focus()
    ctx = ViewContext(board, focus, view)
    layout = view.render(ctx)
    root = layout.get_root(Document())
    return view, ctx, focus, layout, root


def rerender(view, ctx, layout, **change):
    """A focus change as the engine makes it: the view renders again and must return its layout."""
    ctx.focus.update(**change)
    again = view.render(ctx)
    assert again is layout, "the view returned new objects: the engine would rebuild its card"


def ids(root) -> set[str]:
    return {m.id for m in root.references()}


def source(root, column: str) -> dict:
    """The data of the one Bokeh ColumnDataSource that has `column`."""
    from bokeh.models import ColumnDataSource

    found = [s for s in root.select({"type": ColumnDataSource}) if column in s.data]
    assert len(found) == 1, f"{len(found)} sources with a {column!r} column"
    return {k: np.asarray(v) for k, v in found[0].data.items()}


def lines_of(root) -> list:
    """The x positions of the histogram's vertical lines (one source per line kind)."""
    from bokeh.models import ColumnDataSource

    return [np.asarray(s.data["x"]) for s in root.select({"type": ColumnDataSource}) if list(s.data) == ["x"]]


def axis_labels(root) -> set[str]:
    from bokeh.models import Axis

    return {a.axis_label for a in root.select({"type": Axis}) if a.axis_label}


def reference_bars(values: np.ndarray, atol: float = 1e-4):
    """The bars the histogram should draw for these activations: numpy's histogram on EDGES, from
    the first to the last occupied bin, the last ending at the max; and how many values lie within
    atol of an edge (the board's batched forwards may put those in the neighbouring bin)."""
    counts, _ = np.histogram(np.clip(values, EDGES[0], EDGES[-1]), bins=EDGES)
    nz = np.flatnonzero(counts)
    lo, hi = nz[0], nz[-1] + 1
    right = EDGES[lo + 1 : hi + 1].copy()
    right[-1] = values.max()
    near = int((np.abs(values[:, None] - EDGES[None, 1:-1]) < atol).sum())
    return EDGES[lo:hi], right, counts[lo:hi], near


@pytest.mark.parametrize("layer, neuron", [(0, 3), (1, 40), (2, 127)])
def test_the_histogram_draws_a_numpy_histogram_of_the_activations(top_board, acts, layer, neuron):
    from bokeh.models import LogAxis, Plot

    view, ctx, focus, layout, root = rendered(top_board, "top")
    rerender(view, ctx, layout, layer=layer, neuron=neuron)
    values = np.concatenate([a[layer, :, neuron].numpy() for a in acts]).astype(np.float64)
    left, right, counts, near = reference_bars(values)
    bars = source(root, "count")
    if near == 0:  # no token sits on a bin edge: the bins must match exactly
        np.testing.assert_array_equal(bars["count"], counts)
        np.testing.assert_allclose(bars["lo"], left, rtol=1e-6)
        np.testing.assert_allclose(bars["hi"], right, rtol=1e-5, atol=1e-5)
    else:
        assert abs(int(bars["count"].sum()) - int(counts.sum())) <= near
    assert int(bars["count"].sum()) == len(values)  # every token of the dataset, once
    # the x axis runs from the first occupied bin to the max activation, and 1.5% beyond each so
    # that the line at the max stays clear of the frame
    (fig,) = root.select({"type": Plot})
    pad = 0.015 * (values.max() - left[0])
    assert fig.x_range.start == pytest.approx(left[0] - pad, rel=1e-5, abs=1e-6)
    assert fig.x_range.end == pytest.approx(values.max() + pad, rel=1e-5, abs=1e-5)
    assert isinstance(fig.left[0], LogAxis)  # log counts: the tail's few tokens stay visible
    assert fig.y_range.end >= counts.max()
    # the red line at the #1 example's activation (the max), no probe line
    assert sorted(len(x) for x in lines_of(root)) == [0, 1]
    assert any(len(x) == 1 and x[0] == pytest.approx(values.max(), abs=1e-5) for x in lines_of(root))
    assert axis_labels(root) >= {f"activation of L{layer}/N{neuron}", "tokens (log scale)"}
    head = layout.objects[1].object
    assert f"<b class='lf-neuron'>L{layer}/N{neuron}</b>" in head and f"{len(values):,} tokens" in head


def test_the_probe_line_is_at_the_probes_peak(top_board, tiny_models):
    view, ctx, focus, layout, root = rendered(top_board, "top")
    rerender(view, ctx, layout, layer=1, neuron=40)
    model, tok = reference(str(tiny_models["gpt2"]))
    token_ids = tok(PROBE, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")["input_ids"]
    peak = float(trace(tiny_models["gpt2"], "gpt2", token_ids)[1]["m"][1, :, 40].max())
    before = ids(root)
    rerender(view, ctx, layout, text=PROBE)
    lines = lines_of(root)
    assert sorted(len(x) for x in lines) == [1, 1]  # the max's line and the probe's
    assert any(x[0] == pytest.approx(peak, abs=1e-4) for x in lines), (lines, peak)
    caption = layout.objects[3].object
    assert "lf-probe-place" in caption and "class='lf-hist-probe'" in caption and f"{peak:+.3f}" in caption
    assert ids(root) <= before  # the probe's line is a data patch
    rerender(view, ctx, layout, text=None)
    assert sorted(len(x) for x in lines_of(root)) == [0, 1]  # the probe's line is gone, the max's stays
    assert ids(root) <= before


def test_top_examples_builds_nothing_new_when_a_neuron_is_first_focused(top_board):
    """From the hint ("click a neuron") to a neuron and back: every part already exists."""
    view, ctx, focus, layout, root = rendered(top_board, "top")
    before = ids(root)
    assert not layout.objects[2].visible  # the plot is there, hidden, until a neuron is focused
    for change in ({"neuron": 5}, {"layer": 2, "neuron": 9}, {"neuron": None}, {"neuron": 1, "layer": 0}):
        rerender(view, ctx, layout, **change)
        assert ids(root) <= before, change
    assert layout.objects[2].visible
    heads = [p.object for p in layout.objects[4::2] if p.visible]
    assert len(heads) == 3 and all("sample" in h for h in heads)  # k = 3 examples, none cut


# --- the dream chart -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dream_board(wired_model, tmp_path_factory):  # noqa: F811  (the fixture imported above)
    """tests/test_dream.py's wired GPT-2 with a dream long enough (300 steps) that the polls below
    see it running."""
    from lensframe.board import Board

    views = ("  dream: {type: dream, layers: [0], k: 3, span: 4, steps: 300, "
             "temperature: {warmup: 5, decay: 0.98}}")
    board = Board.from_text(tiny_spec(wired_model, views), cache_dir=tmp_path_factory.mktemp("plots-dream"))
    board.compute(progress=False)
    return board


def steps_of(job) -> tuple:
    steps = list(job.steps)
    return (np.array([s.step for s in steps]), np.array([s.soft for s in steps]),
            np.array([s.snapped for s in steps]), np.array([s.temperature for s in steps]))


def test_the_dream_chart_streams_the_trace_in_place(dream_board):
    view, ctx, focus, layout, root = rendered(dream_board, "dream")
    before = ids(root)  # the hint: no neuron yet, yet the chart exists (hidden)
    rerender(view, ctx, layout, layer=0, neuron=WIRED_NEURON)
    assert ids(root) <= before
    chart = ctx._parts["chart"]
    assert not chart.visible  # nothing to draw before Run
    run = ctx._parts["run"]
    run.clicks += 1  # the Run button
    job = ctx.state["job"]
    deadline = time.time() + 120
    sizes = []
    while not job.done and time.time() < deadline:  # what the page's poll does every 250 ms
        ctx.state["draw"]()
        sizes.append(len(source(root, "snapped")["step"]))
        time.sleep(0.02)
    assert job.done and job.error is None
    ctx.state["draw"]()
    assert sizes == sorted(sizes) and any(0 < n < view.p.steps + 1 for n in sizes), sizes  # it streamed
    step, soft, snapped, temperature = steps_of(job)
    assert len(step) == view.p.steps + 1
    got_soft, got_snapped = source(root, "soft"), source(root, "snapped")
    # appended poll by poll, the chart holds each step once, in order: the trace itself
    np.testing.assert_array_equal(got_snapped["step"], step)
    np.testing.assert_array_equal(got_soft["step"], step)
    np.testing.assert_allclose(got_snapped["snapped"], snapped, rtol=1e-6)
    np.testing.assert_allclose(got_soft["soft"], soft, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(got_soft["temperature"], temperature, rtol=1e-6)
    assert chart.visible and ids(root) <= before
    assert axis_labels(root) >= {"step", f"activation of L0/N{WIRED_NEURON}"}
    best = source(root, "y")["y"]  # the best dataset example's dashed line
    from lensframe import dreams

    assert best == pytest.approx([dreams.best_example(dream_board, "main", 0, WIRED_NEURON).value])
    assert "lf-dream-result" in ctx._parts["final"].object and ctx._parts["final"].visible

    # another neuron: its own (empty) chart, no new models; back: the finished dream again
    rerender(view, ctx, layout, neuron=WIRED_NEURON + 1)
    assert not chart.visible and len(source(root, "snapped")["step"]) == 0 and ids(root) <= before
    assert not ctx._parts["final"].visible
    rerender(view, ctx, layout, neuron=WIRED_NEURON)
    np.testing.assert_array_equal(source(root, "snapped")["step"], step)
    np.testing.assert_allclose(source(root, "snapped")["snapped"], snapped, rtol=1e-6)
    assert chart.visible and ids(root) <= before
    assert ctx._parts["head"].object.count(f"L0/N{WIRED_NEURON}") == 1


def test_the_dream_chart_keeps_soft_and_snapped_on_their_own_scales(dream_board):
    """The soft input's value (hundreds on SmolLM2) and the snapped text's (a few units) are in
    two panels with their own y ranges over the same steps: each range fits its own curve."""
    from bokeh.models import Plot

    view, ctx, focus, layout, root = rendered(dream_board, "dream")
    rerender(view, ctx, layout, layer=0, neuron=WIRED_NEURON)
    ctx._parts["run"].clicks += 1
    job = ctx.state["job"]
    job.wait(120)
    ctx.state["draw"]()
    figs = {fig.title.text.split(" ")[0]: fig for fig in root.select({"type": Plot})}
    assert sorted(figs) == ["snapped", "soft"]
    _, soft, snapped, _ = steps_of(job)
    soft = soft[~np.isnan(soft)]
    for fig, values in ((figs["soft"], soft), (figs["snapped"], snapped)):
        assert (fig.x_range.start, fig.x_range.end) == (0, view.p.steps)  # the same steps, aligned
        assert fig.min_border_left == figs["soft"].min_border_left
        lo, hi = fig.y_range.start, fig.y_range.end
        assert lo <= values.min() and values.max() <= hi
        assert hi - lo <= 1.5 * (values.max() - values.min()) + 1e-3 or len(set(values)) == 1
