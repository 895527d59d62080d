"""The focus in a page's address (lensframe.focus_url): what a link carries, what a hand-made link
gets told, and `serve --open`'s checks."""
from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qsl

from lensframe.cli import main
from lensframe.focus import Focus
from lensframe.focus_url import URL_FIELDS, focus_query, parse_query, query_string

INFO = SimpleNamespace(n_layers=4, n_heads=2, d_mlp=16)
BOARD = SimpleNamespace(spec=SimpleNamespace(models={"a": None, "b": None}), infos={"a": INFO, "b": INFO},
                        dataset=list(range(5)))


def test_a_focus_round_trips_through_the_address():
    focus = Focus(model="a")
    default = focus.values()
    focus.update(text="The Eiffel Tower is in & near?", position=3, layer=2, neuron=7, model="b")
    query = focus_query(focus.values(), default)
    assert "sample" not in query and "head" not in query  # defaults stay out of the link
    fields, problems = parse_query(parse_qsl(query), BOARD)
    assert problems == []
    assert fields == {"text": "The Eiffel Tower is in & near?", "position": 3, "layer": 2, "neuron": 7, "model": "b"}
    assert focus_query(default, default) == ""


def test_a_hand_made_link_is_told_what_did_not_apply():
    pairs = [("sample", b"9"), ("layer", b"x"), ("head", b"1"), ("colour", b"red"), ("text", b"caf\xe9"),
             ("model", b"c"), ("neuron", b"-1")]
    fields, problems = parse_query(pairs, BOARD)
    assert fields == {"head": 1, "text": "caf\N{REPLACEMENT CHARACTER}"}
    said = " | ".join(problems)
    for part in ("sample=9 in the address is out of range (0..4)", "layer='x' in the address is not a whole number",
                 "unknown focus field 'colour'", "not valid UTF-8", "unknown model 'c'", "neuron=-1"):
        assert part in said, (part, said)
    fields, problems = parse_query([("text", "   ")], BOARD)
    assert fields == {} and "empty" in problems[0]


def test_serve_open_refuses_an_unknown_field_before_loading(capsys, tmp_path):
    assert query_string("?text=a%20b&layer=2") == ([("text", "a b"), ("layer", "2")], [])
    assert set(URL_FIELDS) >= {"text", "position", "layer", "head", "neuron", "model", "sample"}
    spec = tmp_path / "s.yaml"  # never read: the flag is checked first
    assert main(["serve", str(spec), "--open", "txt=hello"]) == 2
    err = capsys.readouterr().err
    assert "unknown focus field(s) 'txt'" in err and "Traceback" not in err
