"""The focus in a page's query string: `?text=...&position=3&layer=5&neuron=120`, so a link reopens
the same view. Selections are lists: `texts=3,7,12` (samples) and `neurons=L6/N12,L14/N300` (the
ids as every view writes them). Plain functions (no Panel): the server reads the request's query into the focus and
writes the focus back into the address bar; `lensframe serve --open` builds the first link.

What a user can put in a URL is checked like everything else they type: an unknown field, a number
that is not one or is out of range, text a probe cannot take are reported as messages (the page shows
them), and the rest of the focus still applies.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from .probes import ProbeError, clean_text

URL_FIELDS = ("text", "sample", "position", "layer", "head", "neuron", "model", "texts", "neurons")
_INTS = ("sample", "position", "layer", "head", "neuron")
_NEURON = re.compile(r"L(\d+)/N(\d+)")  # views.base.neuron_label's form


def parse_query(pairs, board) -> tuple[dict, list[str]]:
    """Query pairs [(name, value as str or bytes)] -> (focus fields, problems). Values are checked
    against the board: the dataset's size, the models' depth, heads and MLP width."""
    fields, problems = {}, []
    models = list(board.spec.models)
    for name, value in pairs:
        if name == "text":  # bytes as they came (a hand-made link may carry any): clean_text says what it replaced
            try:
                fields["text"], notes = clean_text(value)
                problems += [f"text in the address: {n}" for n in notes]
            except ProbeError as err:
                problems.append(f"text in the address: {err}")
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if name not in URL_FIELDS:
            problems.append(f"unknown focus field {name!r} in the address (fields: {', '.join(URL_FIELDS)})")
            continue
        if name in ("texts", "neurons"):
            continue  # after the loop: their ranges depend on the model, which may come later
        if name == "model":
            if value in models:
                fields["model"] = value
            else:
                problems.append(f"unknown model {value!r} in the address (models: {', '.join(models)})")
            continue
        try:
            number = int(value)
        except ValueError:
            problems.append(f"{name}={value!r} in the address is not a whole number")
            continue
        top = _upper(name, board, fields.get("model") or models[0])
        if number < 0 or (top is not None and number >= top):
            problems.append(f"{name}={number} in the address is out of range" + (f" (0..{top - 1})" if top else ""))
            continue
        fields[name] = number
    model = fields.get("model") or models[0]
    for name, value in pairs:
        if name in ("texts", "neurons"):
            value = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
            items = [v.strip() for v in value.split(",") if v.strip()]
            parse = _sample if name == "texts" else _neuron
            got = [parse(item, board, model) for item in items]
            problems += [f"{name} in the address: {g}" for g in got if isinstance(g, str)]
            fields[name] = sorted({g for g in got if not isinstance(g, str)})
            if name == "neurons":
                fields[name] = [list(g) for g in fields[name]]
    return fields, problems


def _sample(item: str, board, model: str):
    """A sample index of a `texts=` list, or what is wrong with it."""
    try:
        number = int(item)
    except ValueError:
        return f"{item!r} is not a whole number"
    top = len(board.dataset)
    return number if 0 <= number < top else f"{number} is out of range (0..{top - 1})"


def _neuron(item: str, board, model: str):
    """A (layer, index) of a `neurons=` list, or what is wrong with it."""
    match = _NEURON.fullmatch(item)
    if match is None:
        return f"{item!r} is not a neuron id like L6/N12"
    layer, index = int(match[1]), int(match[2])
    info = board.infos.get(model)
    if info is not None and not (layer < info.n_layers and index < info.d_mlp):
        return f"{item} is out of range (layers 0..{info.n_layers - 1}, neurons 0..{info.d_mlp - 1})"
    return layer, index


def _upper(name: str, board, model: str) -> int | None:
    info = board.infos.get(model)
    if name == "sample":
        return len(board.dataset)
    if info is None:
        return None
    return {"layer": info.n_layers, "head": info.n_heads, "neuron": info.d_mlp}.get(name)


def query_string(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """`--open "text=The Eiffel Tower is in&layer=3"` -> pairs, and the names it does not know."""
    pairs = parse_qsl(text.lstrip("?"), keep_blank_values=True)
    return pairs, [n for n, _ in pairs if n not in URL_FIELDS]


def focus_query(values: dict, defaults: dict | None = None) -> str:
    """The focus as a query string: the fields that are set and differ from `defaults` (a new
    session's focus), so a link carries only what was chosen."""
    defaults = defaults or {}
    pairs = [(f, _written(f, values[f])) for f in URL_FIELDS
             if values.get(f) is not None and values.get(f) != defaults.get(f)]
    # "," and "/" are allowed in a query: left as they are, a selection reads L6/N12,L14/N300
    return urlencode([(f, v) for f, v in pairs if v != ""], safe=",/")


def _written(name: str, value) -> str:
    if name == "texts":
        return ",".join(str(int(i)) for i in value)
    if name == "neurons":
        return ",".join(f"L{int(l)}/N{int(n)}" for l, n in value)
    return str(value)
