"""The Python API (README, "From Python"), as a notebook uses it, and the error card of a failing view."""
from __future__ import annotations

import lensframe as lf

from .conftest import tiny_spec

VIEWS = "  text: {type: text}\n  lens: {type: logit_lens, metric: entropy}\n  attn: {type: attention}\n"


def test_notebook_flow(tiny_models, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS))
    board = lf.load(spec, cache_dir=tmp_path / "store")
    assert board.executor._models == {}  # load validates and compiles; no weights yet
    assert "dataset pass on main" in board.plan.describe()
    report = board.compute(progress=False)
    assert report.forward_passes == 3
    board.focus.update(sample=3, position=5)
    layout = board.panel()
    lens_card = _card(board, layout, "lens")
    assert lens_card.title == "Logit lens (entropy)"
    text = _html(lens_card)
    assert "sample <b class='lf-sample-index'>3</b>" in text and "position <b class='lf-position'>5</b>" in text


def test_a_failing_view_shows_an_error_card(tiny_models, tmp_path, monkeypatch):
    board = lf.Board.from_text(tiny_spec(tiny_models["gpt2"], VIEWS), base_dir=tmp_path, cache_dir=tmp_path / "s")
    board.compute(progress=False)

    def broken(self, ctx):
        raise ValueError("boom in the attention view")

    monkeypatch.setattr(type(board.views["attn"]), "render", broken)
    layout = board.panel()
    attn = _html(_card(board, layout, "attn"))
    assert "lf-error" in attn and "boom in the attention view" in attn
    assert "lf-error" not in _html(_card(board, layout, "lens"))  # the others still render


def _card(board, layout, view_id):
    grid = layout.objects[-1]
    return next(obj for obj in grid.objects.values() if f"lf-card-{view_id}" in obj.css_classes)


def _html(viewable) -> str:
    """The HTML panes' text inside a Panel object (enough to check captions and error cards)."""
    import panel as pn

    out = []
    for pane in viewable.select(pn.pane.HTML):
        out.append(str(pane.object))
    return "\n".join(out)
