"""`lensframe serve --watch` without a browser: the spec file is edited on disk, LiveSpec.check()
looks at it once (what the watcher thread does every half second), and a session's page
(server/template.SessionPage, built in a Bokeh Document as a served session is) moves to the new
board. Forward passes are counted on the model itself (tests/test_sharing.ForwardCounter): a
title, metric or layout change runs none; a new dataset node runs one dataset pass; a new focus
node one focus forward. A broken edit keeps the old dashboard and shows `lensframe validate`'s
message; a fixed one clears it. Also lensframe.panel_app: one board per process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import pytest

pytest.importorskip("panel")

from lensframe.board import Board  # noqa: E402
from lensframe.graph import dataset_stages  # noqa: E402
from lensframe.cli import main  # noqa: E402

from .conftest import tiny_spec  # noqa: E402
from .test_sharing import ForwardCounter  # noqa: E402

VIEWS = "  text: {type: text}\n  lens: {type: logit_lens, top_k: 4}\n  attn: {type: attention}\n"
LAYOUT = "layout: |\n  text text\n  lens attn\n"


@contextmanager
def session_doc():
    """pn.state.curdoc set to a fresh Document, as in a served session's callbacks."""
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    doc = Document()
    with set_curdoc(doc):
        yield doc


def write(path, text: str) -> None:
    """Save as an editor that writes a new file and renames it over the old one (vim, VS Code)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def served(tiny_models, tmp_path, monkeypatch):
    """A computed spec, its LiveSpec, and one session's page focused off its defaults. Its focus
    forwards run on the caller's thread (focus queue 0), so each is counted when it happens; the
    worker threads are tested in test_focus_worker."""
    from lensframe.server import app
    from lensframe.server.template import SessionPage
    from lensframe.server.watch import LiveSpec

    monkeypatch.setitem(app.FOCUS_QUEUE, "value", 0)
    monkeypatch.setitem(app.FOCUS_PROCESS, "value", False)

    path = tmp_path / "spec.yaml"
    text = tiny_spec(tiny_models["gpt2"], VIEWS, LAYOUT)
    path.write_text(text)
    board = Board.from_file(path, cache_dir=tmp_path / "store")
    board.compute(progress=False)
    said = []
    live = LiveSpec(board, say=said.append)
    with session_doc() as doc:
        page = SessionPage(live, url=False)
        page.template.server_doc(doc)  # its Bokeh models, as a served session has them
        page.focus.update(sample=2, position=3, layer=1, head=2)
        counter = ForwardCounter(board.executor.model("main").model)
        yield dict(path=path, text=text, live=live, page=page, counter=counter, said=said, doc=doc)


def edit(served, text: str) -> bool:
    write(served["path"], text)
    changed = served["live"].check()
    if served["live"].job is not None:
        served["live"].job.wait()
    served["page"].tick()
    return changed


def html_text(page) -> str:
    from .test_neurons import html_of

    return html_of(page.content)


def test_a_title_metric_and_layout_change_runs_no_forward(served):
    page, live, counter = served["page"], served["live"], served["counter"]
    old_board = live.board
    text = (served["text"].replace("title: tiny", "title: a new title")
            .replace("lens: {type: logit_lens, top_k: 4}", "lens: {type: logit_lens, top_k: 4, metric: kl}")
            .replace("  text text\n  lens attn\n", "  text attn\n  lens attn\n"))
    assert edit(served, text)
    assert live.board is not old_board and live.version == 1 and live.error is None
    assert counter.calls == 0, f"{counter.calls} forward(s) for a title, metric and layout change"
    # the new board runs on the same loaded model (else the counter, on the old one, would see nothing)
    assert live.board.executor.model("main") is old_board.executor.model("main")
    assert live.board.executor.forward_passes == 0
    assert page.board is live.board
    assert "a new title" in page.title.object
    assert page.template.title  # the tab keeps a title
    f = page.focus
    assert (f.sample, f.position, f.layer, f.head) == (2, 3, 1, 2)  # the session's focus is kept
    assert page.page.cards["attn"] in page.content.objects[0].objects.values()  # the new layout is the one shown
    assert live.board.spec.layout.areas["attn"] == (0, 1, 2, 2)
    assert "KL" in html_text(page) and "lf-error" not in html_text(page)
    # the session's view shows what the old one showed: its focus, on the new board
    assert "sample <b class='lf-sample-index'>2</b>" in html_text(page)


def test_a_new_dataset_node_runs_one_pass_and_nothing_else(served):
    live, counter = served["live"], served["counter"]
    batches = len(live.board.executor.dataset_batches("main"))
    text = served["text"].replace("  attn: {type: attention}\n",
                                  "  attn: {type: attention}\n  lens2: {type: logit_lens, top_k: 2}\n")
    text = text.replace("  lens attn\n", "  lens attn\n  lens2 lens2\n")
    assert edit(served, text)
    assert live.job.error is None
    assert counter.calls == batches, f"{counter.calls} forwards; one dataset pass is {batches} batches"
    assert live.board.executor.forward_passes == batches
    assert any("1 result(s) to compute (logit_lens(" in line for line in served["said"]), served["said"]
    page = served["page"]
    assert "lf-card-lens2" in " ".join(c for card in page.page.cards.values() for c in card.css_classes)
    assert "lf-waiting" not in html_text(page) and "lf-error" not in html_text(page)
    # the same edit again (saved unchanged) rebuilds nothing
    assert not edit(served, text) and live.version == 1


def test_a_new_focus_node_runs_one_focus_forward(served):
    """A neurons view adds a focus node (neuron activations): the focus results kept in memory no
    longer cover the plan, so the focused sample's one forward runs again; nothing else does."""
    live, counter, page = served["live"], served["counter"], served["page"]
    text = served["text"].replace("  attn: {type: attention}\n", "  attn: {type: attention}\n  neurons: {type: neurons}\n")
    text = text.replace("  lens attn\n", "  lens attn\n  neurons neurons\n")
    old = live.board.plan
    assert edit(served, text)
    added = [p for n, p in live.board.plan.nodes.items() if n not in old.nodes]
    assert "focus" in {p.node.kind for p in added}
    # the new dataset nodes (the neurons' histograms, if any) fused into one pass per stage
    stages = dataset_stages([p for p in added if p.node.kind == "dataset"])
    passes = len(stages) * len(live.board.executor.dataset_batches("main"))
    # and two focus forwards: warm_up's on sample 0 (the new page's default) and this session's sample 2
    assert counter.calls == live.board.executor.forward_passes == passes + 2, (counter.calls, passes)
    assert "lf-error" not in html_text(page)


def test_a_broken_edit_keeps_the_dashboard_and_says_where(served, capsys):
    import html

    live, page, counter = served["live"], served["page"], served["counter"]
    board, shown, cards = live.board, page.page, dict(page.page.cards)
    broken = served["text"].replace("top_k: 4}", "top_k: 400}")
    assert edit(served, broken)
    assert live.board is board and live.version == 0 and page.page is shown and page.page.cards == cards
    # the message is the one `lensframe validate` prints, with the file and line of the bad value
    assert main(["validate", str(served["path"])]) == 2
    expected = capsys.readouterr().err.strip()
    line = next(i for i, row in enumerate(broken.splitlines(), 1) if "top_k: 400" in row)
    assert f"spec.yaml:{line}:" in expected
    assert live.error == expected
    assert page.banner.visible and f"spec.yaml:{line}:" in page.banner.object
    assert "last valid version" in page.banner.object
    # the old dashboard still answers a click
    page.focus.update(position=1)
    assert "position <b class='lf-position'>1</b>" in html_text(page)
    # a second broken edit replaces the message; then a fix clears it and rebuilds
    broken2 = served["text"].replace("type: attention", "type: atention")
    assert edit(served, broken2)
    assert "atention" in page.banner.object and "did you mean" in page.banner.object.lower()
    # a spec that validates but asks the model for more than it has: `lensframe plan`'s message
    deep = served["text"].replace("type: attention}", "type: attention, pin: {layer: 9}}")
    assert edit(served, deep)
    assert main(["plan", str(served["path"]), "--cache-dir", str(live.board.store.root)]) == 2
    expected = capsys.readouterr().err.strip()
    line = next(i for i, row in enumerate(deep.splitlines(), 1) if "layer: 9" in row)
    assert f"spec.yaml:{line}:" in expected and "beyond the model's depth" in expected
    assert live.error == expected and html.escape(expected) in page.banner.object
    fixed = served["text"].replace("title: tiny", "title: fixed")
    assert edit(served, fixed)
    assert live.error is None and not page.banner.visible and page.banner.object == ""
    assert live.version == 1 and "fixed" in page.title.object
    assert counter.calls == 0


def test_a_position_and_neuron_that_no_longer_apply_are_reset(tiny_models, tmp_path):
    """The focus carried to a new board keeps what still applies and says what it reset: here the
    model becomes a Llama (MLP width 64, not GPT-2's 128) and the dataset shorter."""
    from lensframe.server.watch import carried_focus

    a = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "s")
    b = Board.from_text(tiny_spec(tiny_models["llama"], VIEWS, texts=["One text.", "Two texts here."],
                                  labels=["a", "b"]), base_dir=tmp_path, cache_dir=tmp_path / "s")
    old = a.new_focus()
    old.update(sample=5, position=4, layer=2, head=3, neuron=100)
    focus, notes = carried_focus(a, b, old)
    assert (focus.sample, focus.position, focus.layer, focus.head, focus.neuron) == (0, None, 2, 3, None)
    said = " | ".join(notes)
    assert "sample 5 reset: the dataset now has 2 samples (0..1)" in said
    assert "neuron 100 reset: main now has 64 neurons (0..63)" in said
    assert "position reset" in said
    same, notes = carried_focus(a, a, old)  # nothing changed: everything kept, nothing said
    assert same.values() == old.values() and notes == []


def test_panel_app_loads_the_board_once(tiny_models, tmp_path, monkeypatch):
    import lensframe

    path = tmp_path / "spec.yaml"
    path.write_text(tiny_spec(tiny_models["gpt2"], VIEWS))
    built = []
    real = Board.from_file.__func__

    def counting(cls, *args, **kwargs):
        built.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(Board, "from_file", classmethod(counting))
    monkeypatch.setattr(lensframe, "_PANEL_BOARDS", {})
    with session_doc():
        first = lensframe.panel_app(str(path), cache_dir=tmp_path / "store")
    with session_doc():
        second = lensframe.panel_app(tmp_path / "." / "spec.yaml", cache_dir=tmp_path / "store")
    assert len(built) == 1, "the second call loaded the spec again"
    assert first is not second  # one page per session
    (live,) = lensframe._PANEL_BOARDS.values()
    live.job.wait()
    assert live.job.error is None and live.board.store.has(live.board.plan.of_kind("dataset")[0].key)


def test_the_sidebar_says_what_is_focused(tiny_models, tmp_path):
    """The focus summary follows every focus change: sample or probe, position with its token, layer,
    head, and the neuron written as neuron_label writes it."""
    import html

    from lensframe.server.template import FocusState

    board = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "store")
    board.compute(progress=False)
    focus = board.new_focus()
    state = FocusState(board, focus)
    tokens = board.executor.tokens("main")
    last = int(tokens["lengths"][0]) - 1
    assert f"last token ({last})" in state.pane.object
    focus.update(sample=1, position=2, layer=1, head=3, neuron=5)
    shown = state.pane.object
    token = html.escape(tokens.meta["strings"][1][2])
    for part in ("data-field='sample'>1<", f"2 <span class='lf-focus-token'>{token}</span>", "data-field='layer'>1<",
                 "data-field='head'>3<", "data-field='neuron'>L1/N5<"):
        assert part in shown, (part, shown)
    focus.update(text="The cat sat", position=None)
    assert "data-field='probe'>&#x27;The cat sat&#x27;<" in state.pane.object
    assert "data-field='sample'" not in state.pane.object
    state.stop()
    focus.update(sample=4, text=None)
    assert "&#x27;The cat sat&#x27;" in state.pane.object  # detached: a replaced page no longer follows
