"""Views update in place: a focus change patches the components a session already has instead of
building new ones, so the page gets param patches and no new Bokeh models.

Counted on the Bokeh document a served page would hold: the models of each view's card before and
after a focus change. The re-create engine (build_app(in_place=False)), kept for the benchmark,
must build new models on the same change: that is what makes the count able to fail.
"""
from __future__ import annotations

import pytest

from lensframe.board import Board

from .conftest import tiny_spec

pytest.importorskip("panel")

# Every built-in view that follows the focus: the focus changes below must build nothing new in
# any of them.
VIEWS = """  text: {type: text}
  lens: {type: logit_lens, top_k: 4}
  attn: {type: attention}
  neurons: {type: neurons}
  top: {type: top_examples, k: 3}
  ffn: {type: ffn_vocab, top_n: 7, k: 5}
  probes: {type: probes}
  generate: {type: generate, tokens: 4}
"""
IN_PLACE = ["text", "lens", "attn", "neurons", "top", "ffn", "probes", "generate"]

CHANGES = [{"position": 2}, {"sample": 3}, {"layer": 1, "position": 4}, {"neuron": 7}, {"sample": 1, "position": None}]


@pytest.fixture(scope="module")
def board(tiny_models, tmp_path_factory) -> Board:
    tmp = tmp_path_factory.mktemp("in-place")
    b = Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp, cache_dir=tmp / "store")
    b.compute(progress=False)
    return b


def card_models(app, vid: str) -> set[str]:
    """Ids of the Bokeh models under one view's card."""
    import panel as pn

    card = next(c for c in app.select(pn.Card) if f"lf-card-{vid}" in c.css_classes)
    (root,) = card._models.values()
    return {m.id for m in root[0].references()}


def served(board, in_place: bool):
    from bokeh.document import Document

    from lensframe.server.app import build_app

    focus = board.new_focus()
    app = build_app(board, focus, in_place=in_place)
    app.get_root(Document())  # the models a served page would get
    return app, focus


@pytest.mark.parametrize("vid", IN_PLACE)
def test_a_focus_change_builds_no_new_bokeh_models(board, vid):
    app, focus = served(board, in_place=True)
    before = card_models(app, vid)
    for change in CHANGES:
        focus.update(**change)
        after = card_models(app, vid)
        assert after <= before, f"{vid}: {change} built {len(after - before)} new Bokeh model(s)"


@pytest.mark.parametrize("vid", IN_PLACE)
def test_the_re_create_engine_builds_new_models(board, vid):
    from lensframe.probes import Probe

    app, focus = served(board, in_place=False)
    before = card_models(app, vid)
    focus.update(sample=3, position=2, layer=1, neuron=5, probes=[Probe("The cat sat"), Probe("The law is")])
    assert card_models(app, vid) - before


def test_in_place_and_re_created_views_show_the_same(board):
    """The engine changes how the page is patched, never what it shows."""
    from .test_neurons import html_of

    kept, focus_a = served(board, in_place=True)
    fresh, focus_b = served(board, in_place=False)
    for change in CHANGES:
        focus_a.update(**change)
        focus_b.update(**change)
        assert html_of(kept) == html_of(fresh)


def test_a_first_probe_focused_after_an_empty_set_is_selected_in_the_table(board):
    """A session opens with no probes, so the probe table is made empty (and hidden); a click that
    adds a probe and focuses it fills it with a row and selects that row. Set in one update, the
    selection was checked against the empty rows (Panel raised IndexError: the card showed
    "probes failed" in the audit flow)."""
    import panel as pn

    from lensframe.probes import Probe

    from .test_neurons import html_of

    app, focus = served(board, in_place=True)
    assert "lf-probes-empty" in html_of(app)
    focus.update(probes=[Probe("The cat sat")], text="The cat sat", position=None)
    html = html_of(app)
    assert "lf-error" not in html and "<b class='lf-probes-count'>1</b>" in html
    (table,) = [t for t in app.select(pn.widgets.Tabulator) if "lf-probes-table" in t.css_classes]
    assert list(table.value["probe"]) == ["The cat sat"] and table.selection == [0]
