"""`lensframe export`: the planned size against the written one, --max-mb's refusal, note cards
for views that cannot export, Python's number formatting in the page's JS, and the exported page
in an offline Chromium: clicks on a token, a lens cell, a head, a neuron, a top example, a sample
and a layer of the layer finder move the other views, and every card shows what the served
dashboard shows at the same focus (DOM text and hover tips compared, and the top examples'
histogram figure), with no request leaving the page; the cluster maps and difference views
(legend entries, a member neuron, a point on each map, a representative text) clicked in the
exported and the served page alike show the same cards and map marks, and a lasso says it needs
a server.
"""
from __future__ import annotations

import json
import math
import random
import re
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from lensframe.cli import main
from lensframe.export_plan import ranges
from tests.conftest import tiny_spec
from tests.test_browser import browser  # noqa: F401  (the module-scoped Chromium fixture, shared)

VIEWS = ("  text: {type: text}\n  lens: {type: logit_lens, metric: kl}\n  attn: {type: attention}\n"
         "  neurons: {type: neurons, top_n: 6}\n  top: {type: top_examples, k: 4}\n  gen: {type: generate}\n"
         "  pinned: {type: attention, show_heads: false, pin: {layer: 0, head: 1}}\n  finder: {type: layer_finder}")
LAYOUT = "layout: |\n  text text neurons\n  lens attn neurons\n  top pinned gen\n  finder finder finder\n"
# pinned: a view that keeps its layer and head
LINKED = ("text", "lens", "attn", "neurons", "top", "pinned", "finder")


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    """A tiny GPT-2 spec (focus results kept in the store), computed, and its page exported."""
    from lensframe.board import Board

    root = tmp_path_factory.mktemp("export")
    spec = root / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS, extra=LAYOUT, keep_focus_mb=64))
    board = Board.from_file(spec, cache_dir=root / "store")
    report = board.export(root / "board.html")
    return {"spec": spec, "store": root / "store", "board": board, "report": report, "root": root}


def test_plan_matches_the_written_page(exported):
    report = exported["report"]
    html = report.path.read_bytes()
    assert report.bytes == len(html)
    assert abs(report.plan.total - report.bytes) / report.bytes < 0.05, (report.plan.describe(), report.describe())
    # the packed data of each exportable view as planned from shapes: arrays exactly, strings estimated
    for vid in LINKED:
        planned, written = report.plan.views[vid], report.views[vid]
        assert 0.5 < planned / written < 2, (vid, planned, written)
    # the page asks nothing of any host: no URL but the libraries' own comments and strings
    assert b'rel="icon"' not in html and b"cdn.holoviz.org/panel" not in html.split(b"<body>", 1)[0]


def test_data_is_packed_not_json_floats(exported):
    html = exported["report"].path.read_text()
    block = re.search(r'<script type="application/json" id="lf-data-attn">(.*?)</script>', html, re.S).group(1)
    data = json.loads(block)
    assert set(data["arrays"]) == {"weights", "order"}
    assert data["arrays"]["weights"]["dtype"] == "uint16" and data["arrays"]["order"]["dtype"] == "uint8"
    assert not re.search(r"\d\.\d{5,}", block)  # no float written out in decimal


def test_a_view_that_cannot_export_is_a_note(exported):
    report, html = exported["report"], exported["report"].path.read_text()
    assert set(report.plan.notes) == {"gen"}
    assert "lf-export-note" in html and "lf-card-gen" in html
    assert "needs a live model" in report.plan.notes["gen"]
    header = json.loads(re.search(r'id="lf-export">(.*?)</script>', html, re.S).group(1))
    assert [v["id"] for v in header["views"]] == ["text", "lens", "attn", "neurons", "top", "pinned", "finder"]
    assert header["views"][5]["pin"] == {"layer": 0, "head": 1}


def test_max_mb_refuses_with_what_fits(exported, tmp_path, capsys):
    out = tmp_path / "big.html"
    total = exported["report"].plan.total
    limit = (total - 20_000) / 1e6  # a little under the whole page: fewer samples fit
    code = main(["export", str(exported["spec"]), "--cache-dir", str(exported["store"]), "-o", str(out),
                 "--max-mb", f"{limit:.3f}", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "over --max-mb" in err and "Traceback" not in err
    m = re.search(r"options that fit: --samples 0-(\d+) \(", err)
    assert m, err
    n = int(m.group(1)) + 1
    assert 0 < n < 8
    # and what it names does fit
    code = main(["export", str(exported["spec"]), "--cache-dir", str(exported["store"]), "-o", str(out),
                 "--max-mb", f"{limit:.3f}", "--samples", f"0-{n - 1}", "-q"])
    assert code == 0 and out.stat().st_size <= limit * 1e6


@pytest.mark.parametrize("option, value, said", [
    ("--samples", "3-40", ("there are 8 samples (0..7)", "hint: --samples 0-7")),
    ("--neurons", "0-99,512", ("there are 128 neurons a layer (0..127)", "hint: --neurons 0-127")),
    ("--neurons", "5,x", ("cannot read 'x'", "hint: write them as 0-49, or 3,7,10-12"))])
def test_bad_samples_are_one_message(exported, tmp_path, capsys, option, value, said):
    code = main(["export", str(exported["spec"]), "--cache-dir", str(exported["store"]), "-o",
                 str(tmp_path / "x.html"), option, value])
    err = capsys.readouterr().err
    assert code == 2 and all(s in err for s in said), err
    assert "Traceback" not in err


# --- in the browser --------------------------------------------------------------------------------

CARD = r"""
(vid) => {
  // a card's text (through open shadow roots, without <style>, <script> and the hover tip) and the
  // hover tips of its tokens, cells, labels and heads, in document order
  function find(root) {
    const hit = root.querySelector('.lf-card-' + vid);
    if (hit) return hit;
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) { const h = find(el.shadowRoot); if (h) return h; }
    return null;
  }
  const text = [], tips = [];
  function walk(node) {
    if (node.nodeType === 3) { const t = node.data.trim(); if (t) text.push(t); return; }
    if (node.nodeType !== 1 && node.nodeType !== 11) return;
    if (node.nodeType === 1) {
      if (['STYLE', 'SCRIPT'].includes(node.tagName) || node.classList.contains('lf-tip')) return;
      if (node.dataset && node.dataset.tip && !node.classList.contains('lf-sample')) tips.push(node.dataset.tip);
      if (node.shadowRoot) walk(node.shadowRoot);
    }
    for (const c of node.childNodes) walk(c);
  }
  walk(find(document));
  return {text: text.join(' | '), tips};
}
"""


# what the top_examples histogram draws (its Bokeh figure: the bars' source, the line, the ranges, the label)
FIGURE = r"""
() => {
  const figs = [...Bokeh.documents[0]._all_models.values()].filter((m) => Array.isArray(m.renderers) && m.x_range);
  return figs.map((f) => ({sources: f.renderers.map((r) => Object.fromEntries(Object.entries(r.data_source.data)
                             .map(([k, v]) => [k, Array.from(v).map(Number)]))),
                           x: [f.x_range.start, f.x_range.end], y: [f.y_range.start, f.y_range.end],
                           label: f.below[0].axis_label}));
}
"""


@contextmanager
def _offline_page(browser, path: Path, ready: str):
    """An exported page opened in a context with the network off, once `ready` shows: (page,
    requests, errors), with every request but the file's counted and every page error kept."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_offline(True)
    requests, errors = [], []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    try:
        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: None if r.url.startswith("file:") else requests.append(r.url))
        page.goto(path.as_uri())
        page.locator(ready).first.wait_for(timeout=60_000)
        yield page, requests, errors
    finally:
        context.close()


@pytest.fixture(scope="module")
def offline(exported, browser):
    """The exported page in a context with the network off; every request but the file is counted."""
    with _offline_page(browser, exported["report"].path, ".lf-card-attn .lf-head") as opened:
        yield opened


@contextmanager
def served_pages(exported, browser, tmp_path_factory, read):
    """The exported spec and store served; yields cards(query, expect): a page opened at the focus
    query, waited on until each selector of `expect` shows its text, then read(page, query)."""
    from lensframe.server.process import serve_process

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_process(exported["spec"], "--cache-dir", str(exported["store"]), log_path=log, wait_s=120) as server:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})

        def cards(query: str, expect: dict) -> dict:
            page = context.new_page()
            page.goto(server.url + "?" + query)
            for selector, text in expect.items():
                _shows(page, selector, text, timeout=60_000)
            out = read(page, query)
            page.close()
            return out

        try:
            yield cards
        finally:
            context.close()


def _linked_cards(page, query: str) -> dict:
    """Each linked card's text and tips, and the histogram's figure."""
    neuron = re.search(r"neuron=(\d+)", query)
    if neuron:  # the histogram's patch comes with the view's: wait for its label all the same
        page.wait_for_function(f"() => ({FIGURE})().some((f) => f.label.endsWith('/N{neuron.group(1)}'))",
                               timeout=60_000)
    page.wait_for_timeout(300)
    out = {vid: page.evaluate(CARD, vid) for vid in LINKED}
    out["figure"] = page.evaluate(FIGURE)
    return out


@pytest.fixture(scope="module")
def served(exported, browser, tmp_path_factory):
    """The same spec and store served; yields a function: focus query -> each linked card's text and tips."""
    with served_pages(exported, browser, tmp_path_factory, _linked_cards) as cards:
        yield cards


def _shows(page, selector: str, text: str, timeout: int) -> None:
    """Wait until an element of `selector` reads exactly `text`."""
    page.locator(selector).filter(has_text=re.compile(rf"^{re.escape(text)}$")).first.wait_for(timeout=timeout)


def _after(page, selector: str, text: str) -> None:
    _shows(page, selector, text, timeout=10_000)
    page.wait_for_timeout(150)


def _first_difference(a: str, b: str) -> str:
    x, y = a.split(" | "), b.split(" | ")
    i = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    return f"at item {i}: exported {x[max(0, i - 3):i + 3]} served {y[max(0, i - 3):i + 3]}"


def _same(page, served_cards) -> None:
    for vid in LINKED:
        here = page.evaluate(CARD, vid)
        assert here["text"] == served_cards[vid]["text"], (vid, _first_difference(here["text"], served_cards[vid]["text"]))
        assert here["tips"] == served_cards[vid]["tips"], vid
    figure, theirs = page.evaluate(FIGURE), served_cards["figure"]
    assert len(figure) == len(theirs) == 1
    if theirs[0]["sources"][0].get("count"):  # a neuron is focused: the histogram is shown
        assert figure[0]["label"] == theirs[0]["label"]
        assert json.dumps(figure[0]["sources"]) == json.dumps(theirs[0]["sources"])
        np.testing.assert_allclose(figure[0]["x"] + figure[0]["y"], theirs[0]["x"] + theirs[0]["y"], rtol=1e-12)


@pytest.mark.browser
def test_exported_page_links_offline_like_the_served_one(exported, offline, served):
    page, requests, errors = offline
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    text, lens, attn = (page.locator(f".lf-card-{v}") for v in ("text", "lens", "attn"))
    T = text.locator(".lf-token").count()
    assert T > 6
    _same(page, served("", {".lf-card-attn .lf-position": str(T - 1)}))

    # a token: every view moves to its position
    text.locator('.lf-token[data-position="5"]').click()
    _after(page, ".lf-card-attn .lf-position", "5")
    assert lens.locator(".lf-position").inner_text() == "5"
    _same(page, served("position=5", {".lf-card-attn .lf-position": "5"}))

    # a lens cell: row 1 is the block below the last (rows: final block on top, embed at the bottom)
    blocks = exported["board"].result(exported["board"].views["lens"].lens_node(16)).meta["blocks"]
    layer = blocks[::-1][1]
    lens.locator('.lf-cell[data-row="1"][data-col="3"]').click()
    _after(page, ".lf-card-attn .lf-layer", str(layer))
    assert attn.locator(".lf-position").inner_text() == "3" and text.locator(".lf-position").inner_text() == "3"
    _same(page, served(f"position=3&layer={layer}", {".lf-card-attn .lf-layer": str(layer),
                                                     ".lf-card-attn .lf-position": "3"}))

    # a head
    attn.locator('.lf-head[data-head="2"]').click()
    _after(page, ".lf-card-attn .lf-head-index", "2")
    page.screenshot(path=str(artifacts / "export-after-clicks.png"))
    _same(page, served(f"position=3&layer={layer}&head=2", {".lf-card-attn .lf-head-index": "2",
                                                            ".lf-card-attn .lf-layer": str(layer)}))

    # a neuron: the strip of its activations over the sample appears
    neurons = page.locator(".lf-card-neurons")
    key = neurons.locator(".lf-neuron-list .lf-bar-row").nth(2).get_attribute("data-key")
    neurons.locator(f'.lf-neuron-list .lf-bar-row[data-key="{key}"]').first.click()
    _after(page, ".lf-card-neurons .lf-neuron", f"L{layer}/N{key}")
    _same(page, served(f"position=3&layer={layer}&head=2&neuron={key}",
                       {".lf-card-neurons .lf-neuron": f"L{layer}/N{key}", ".lf-card-attn .lf-head-index": "2"}))
    # a token of that strip moves the position
    neurons.locator('.lf-token[data-position="6"]').click()
    _after(page, ".lf-card-attn .lf-position", "6")
    _same(page, served(f"position=6&layer={layer}&head=2&neuron={key}",
                       {".lf-card-neurons .lf-neuron": f"L{layer}/N{key}", ".lf-card-attn .lf-position": "6"}))

    # a top example's token: its sample and position (the sample is one the page holds)
    top = page.locator(".lf-card-top")
    assert top.locator(".lf-neuron").inner_text() == f"L{layer}/N{key}"
    top.locator(".lf-example").first.locator(".lf-token").nth(1).click()
    head = top.locator(".lf-example-head").first.inner_text()
    sample = int(re.search(r"sample (\d+)", head).group(1))
    _after(page, ".lf-card-text .lf-sample-index", str(sample))
    position = text.locator(".lf-position").inner_text()
    _same(page, served(f"sample={sample}&position={position}&layer={layer}&head=2&neuron={key}",
                       {".lf-card-neurons .lf-neuron": f"L{layer}/N{key}", ".lf-card-attn .lf-position": position,
                        ".lf-card-text .lf-sample-index": str(sample)}))
    page.screenshot(path=str(artifacts / "export-top-example.png"))

    # another sample: its tokens everywhere, position back to its last token
    text.locator('.lf-sample[data-sample="3"]').click()
    _after(page, ".lf-card-text .lf-sample-index", "3")
    T3 = text.locator(".lf-token").count()
    _same(page, served(f"sample=3&layer={layer}&head=2&neuron={key}", {".lf-card-attn .lf-position": str(T3 - 1),
                                                                       ".lf-card-lens .lf-sample-index": "3"}))
    page.screenshot(path=str(artifacts / "export-sample-3.png"))

    # a layer in the layer finder: every view that reads the layer moves to it
    other = 0 if layer != 0 else 1
    page.locator(f'.lf-card-finder .lf-bar-row[data-key="{other}"]').click()
    _after(page, ".lf-card-attn .lf-layer", str(other))
    _same(page, served(f"sample=3&layer={other}&head=2&neuron={key}", {".lf-card-attn .lf-layer": str(other),
                                                                      ".lf-card-finder .lf-layer": str(other)}))
    assert page.locator(".lf-export-note").count() == 1
    assert requests == [] and errors == []


def _float32s(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    out = [0.0, 1.0, 0.5, 0.125, 0.375, 0.0625, 2.5, 9.9995, 0.99995, 1e-5, 1.5e-5, 123456.7, 0.0001234,
           65504.0, 1e21 / 3, 1e-30, 0.045, 0.055, 0.0005, 0.9995]
    for _ in range(n):
        e = rng.uniform(-8, 6)
        out.append(rng.random() * 10 ** e)
    for k in range(200):  # exact ties at 2, 3 and 4 digits (dyadic values)
        out.append((2 * k + 1) / 64)
        out.append((2 * k + 1) / 1024 * 10)
    return [struct.unpack("f", struct.pack("f", x))[0] for x in out]


@pytest.mark.browser
def test_python_formatting_in_the_page(offline):
    page = offline[0]
    values = [x for x in _float32s(3000) if math.isfinite(x) and x < 1e20]
    got = page.evaluate("""(xs) => xs.map((x) => [LF.fixed(x, 0), LF.fixed(x, 2), LF.fixed(x, 3), LF.general(x, 4),
                                                  LF.general(x, 3), LF.fixed(-x, 3)])""", values)
    want = [[f"{x:.0f}", f"{x:.2f}", f"{x:.3f}", f"{x:.4g}", f"{x:.3g}", f"{-x:.3f}"] for x in values]
    bad = [(x, g, w) for x, g, w in zip(values, got, want) if g != w]
    assert not bad, bad[:5]


def test_fixed_digits_is_pythons_rounding():
    from lensframe.export_pack import fixed_digits

    xs = np.array(_float32s(20000, seed=1), dtype=np.float32)
    xs = xs[xs < 1e6]
    for n in (2, 3):
        want = [int(f"{float(x):.{n}f}".replace(".", "")) for x in xs]
        assert fixed_digits(xs, n).tolist() == want


@pytest.mark.browser
def test_layers_not_exported_are_said(exported, browser):
    """--layers 0: the attention view holds layer 0 only; focusing another layer says so."""
    report = exported["board"].export(exported["root"] / "layer0.html", samples="0-1", layers="0")
    assert report.plan.views["attn"] < exported["report"].plan.views["attn"]
    with _offline_page(browser, report.path, ".lf-card-attn .lf-head") as (page, _, errors):
        attn = page.locator(".lf-card-attn")
        assert attn.locator(".lf-sample").count() == 0 and page.locator(".lf-card-text .lf-sample").count() == 2
        page.locator('.lf-card-lens .lf-cell[data-row="1"][data-col="2"]').click()  # layer 1
        _after(page, ".lf-card-attn .lf-layer", "1")
        assert "layer 1 is not in this exported page: it holds layers 0" in attn.locator(".lf-attn-head").inner_text()
        assert attn.locator(".lf-head").count() == 0
        page.locator('.lf-card-lens .lf-cell[data-row="2"][data-col="2"]').click()  # layer 0 again
        _after(page, ".lf-card-attn .lf-layer", "0")
        assert attn.locator(".lf-head").count() == 4 and "attends to" in attn.locator(".lf-attn-head").inner_text()
        assert errors == []


@pytest.mark.browser
def test_a_page_opens_at_the_focus_given(exported, browser, served):
    """--focus: the page opens where a served page opens at the same address, and clicks from there
    land where the served page's do."""
    query = "sample=2&position=4&layer=1&head=3&neuron=7"
    report = exported["board"].export(exported["root"] / "focused.html", focus=query)
    with _offline_page(browser, report.path, ".lf-card-top .lf-example") as (page, _, errors):
        _same(page, served(query, {".lf-card-neurons .lf-neuron": "L1/N7", ".lf-card-attn .lf-head-index": "3"}))
        page.locator('.lf-card-text .lf-token[data-position="1"]').click()
        _after(page, ".lf-card-attn .lf-position", "1")
        _same(page, served(query.replace("position=4", "position=1"),
                           {".lf-card-neurons .lf-neuron": "L1/N7", ".lf-card-attn .lf-position": "1"}))
        assert errors == []


# --- --neurons: the top examples of some neurons -----------------------------------------------------

def _page_data(path: Path, vid: str) -> tuple[dict, dict]:
    """A view's block of an exported page: its meta and its arrays as numpy (as the runtime decodes them)."""
    import base64

    raw = json.loads(re.search(rf'id="lf-data-{vid}">(.*?)</script>', path.read_text(), re.S).group(1))
    return raw["meta"], {k: np.frombuffer(base64.b64decode(a["b64"]), dtype=np.dtype(a["dtype"]).newbyteorder("<"))
                         for k, a in raw["arrays"].items()}


@pytest.fixture(scope="module")
def neurons_export(exported):
    """The tiny page again, opened at layer 1, position 5, holding the top examples of neurons 0-9 and
    of the first two the neurons view lists there by activation; `outside`: one it lists that is not held."""
    from lensframe.export_pack import ExportContext

    board, view = exported["board"], exported["board"].views["neurons"]
    acts = ExportContext(board, view, [0], None).context(0).focus_result(view.acts_node(16))["acts"][1, 5]
    listed = [int(i) for i in np.argsort(-acts)[:6]]
    held = sorted(set(range(10)) | set(listed[:2]))
    outside = next(i for i in listed if i not in held)
    text = ",".join(map(str, held))
    report = board.export(exported["root"] / "neurons.html", focus="position=5&layer=1", neurons=text)
    return {"report": report, "held": held, "listed": listed, "outside": outside}


def test_an_export_of_some_neurons_holds_their_rows_only(exported, neurons_export):
    report, held = neurons_export["report"], neurons_export["held"]
    meta, arrays = _page_data(report.path, "top")
    full_meta, full = _page_data(exported["report"].path, "top")
    assert meta["neurons"] == held and full_meta["neurons"] is None and meta["d_mlp"] == full_meta["d_mlp"] == 128
    nl, k, bins = len(meta["layers"]), meta["k"], len(meta["edges"]) - 1
    for name, per in (("values", k), ("samples", k), ("positions", k), ("shade", k * 17), ("hist", bins)):
        mine = arrays[name].reshape(nl, len(held), per)
        np.testing.assert_array_equal(mine, full[name].reshape(nl, 128, per)[:, held], err_msg=name)
    # planned as the other pages are: the whole within 5%, the view within a factor of 2, and smaller
    assert abs(report.plan.total - report.bytes) / report.bytes < 0.05, (report.plan.describe(), report.describe())
    assert 0.5 < report.plan.views["top"] / report.views["top"] < 2, (report.plan.views["top"], report.views["top"])
    assert report.views["top"] < exported["report"].views["top"] / 2


def test_max_mb_names_the_neurons_that_fit(exported, capsys):
    """A page whose top examples are most of it: the refusal names the --neurons that fit, and they do."""
    spec = exported["root"] / "top-heavy.yaml"
    spec.write_text(exported["spec"].read_text().split("views:")[0] + "views:\n  text: {type: text}\n"
                    "  top: {type: top_examples, k: 100}\n")
    from lensframe.board import Board
    from lensframe.export_plan import export_options, plan_export

    out = exported["root"] / "top-heavy.html"
    args = ["export", str(spec), "--cache-dir", str(exported["store"]), "-o", str(out), "-q"]
    board = Board.from_file(spec, cache_dir=exported["store"])
    planned = plan_export(board, export_options(board))
    assert planned.views["top"] > 0.25 * planned.total, planned.describe()
    limit = (planned.total - planned.views["top"] / 2) / 1e6
    assert main(args + ["--max-mb", f"{limit:.3f}"]) == 2 and not out.exists()
    err = capsys.readouterr().err
    m = re.search(r"options that fit: .*--neurons 0-(\d+) \(", err)
    assert m and "Traceback" not in err, err
    n = int(m.group(1)) + 1
    assert 0 < n < 128
    assert main(args + ["--max-mb", f"{limit:.3f}", "--neurons", f"0-{n - 1}"]) == 0
    assert out.stat().st_size <= limit * 1e6


def test_max_mb_below_the_least_page_names_what_is_left(exported, capsys):
    """Under even one sample at one layer with one neuron: the refusal says what that page holds
    (its scripts, its largest view, whose own parameters are the way down) and writes nothing."""
    out = exported["root"] / "nothing.html"
    args = ["export", str(exported["spec"]), "--cache-dir", str(exported["store"]), "-o", str(out), "-q"]
    assert main(args + ["--max-mb", "1"]) == 2 and not out.exists()
    err = capsys.readouterr().err
    size = r"([\d.]+) (kB|MB)"
    m = re.search(rf"nothing fits: one sample at one layer with one neuron is {size}: the page's scripts and "
                  rf"components {size}, view `(\w+)` {size} \(lower its k or top_n in the spec\); or raise --max-mb", err)
    assert m and "Traceback" not in err, err
    mb = [float(m.group(i)) * (1 if m.group(i + 1) == "MB" else 1e-3) for i in (1, 3, 6)]
    assert mb[1] > 1 and mb[1] + mb[2] <= mb[0] + 0.01, err  # the scripts alone are over 1 MB
    assert m.group(5) in exported["board"].views, err


@pytest.mark.browser
def test_neurons_not_exported_are_said(exported, neurons_export, browser, served):
    """In a page of some neurons, clicking a held one shows the served card; one not held says so."""
    report, held, outside = neurons_export["report"], neurons_export["held"], neurons_export["outside"]
    first = neurons_export["listed"][0]
    with _offline_page(browser, report.path, ".lf-card-attn .lf-head") as (page, requests, errors):
        row = '.lf-card-neurons .lf-neuron-list .lf-bar-row[data-key="{}"]'
        page.locator(row.format(first)).first.click()
        _after(page, ".lf-card-top .lf-neuron", f"L1/N{first}")
        _same(page, served(f"position=5&layer=1&neuron={first}", {".lf-card-neurons .lf-neuron": f"L1/N{first}",
                                                                  ".lf-card-attn .lf-layer": "1"}))
        page.locator(row.format(outside)).first.click()
        _after(page, ".lf-card-neurons .lf-neuron", f"L1/N{outside}")
        hint = f"neuron {outside} is not in this exported page (it holds neurons {ranges(held)})"
        _after(page, ".lf-card-top .lf-hint", hint)
        assert page.locator(".lf-card-top .lf-example-head").filter(has_text="sample").count() == 0
        assert requests == [] and errors == []


def test_focus_a_page_cannot_open_at_is_one_message(exported, tmp_path, capsys):
    code = main(["export", str(exported["spec"]), "--cache-dir", str(exported["store"]), "-o",
                 str(tmp_path / "x.html"), "--focus", "text=The cat"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a live model" in err and "Traceback" not in err and not (tmp_path / "x.html").exists()


PLUGIN = """from lensframe.views.base import View, esc, html_pane


class Caption(View):
    type = "caption"
    description = "a line of text (written before views could export: no export_script)"

    def render(self, ctx):
        return html_pane(f"<div class='lf-caption'>{esc(ctx.sample)}</div>")
"""


def test_a_plugin_view_without_a_port_is_left_out_with_a_note(tiny_models, tmp_path, capsys):
    (tmp_path / "my_views.py").write_text(PLUGIN)
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], "  text: {type: text}\n  note: {type: ./my_views.py:Caption}\n"))
    out = tmp_path / "page.html"
    code = main(["export", str(spec), "--allow-local-views", "--cache-dir", str(tmp_path / "store"), "-o", str(out),
                 "--samples", "0-1", "-q"])
    err = capsys.readouterr().err
    assert code == 0 and "view 'note' is a note in the page: it has no JS port yet" in err
    html = out.read_text()
    assert "lf-export-note" in html and "this caption view has no JS port yet" in html
    assert "lf-caption" not in html  # its render never ran for the page
    header = json.loads(re.search(r'id="lf-export">(.*?)</script>', html, re.S).group(1))
    assert [v["id"] for v in header["views"]] == ["text"]


def test_max_mb_refuses_before_any_forward(tiny_models, tmp_path, capsys):
    """On a store that holds nothing yet, --max-mb plans from the token counts alone and refuses
    without running the model (nothing but the tokenization is stored)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(tiny_spec(tiny_models["gpt2"], VIEWS, extra=LAYOUT, keep_focus_mb=64))
    store = tmp_path / "store"
    code = main(["export", str(spec), "--cache-dir", str(store), "-o", str(tmp_path / "x.html"), "--max-mb", "3.4",
                 "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "over --max-mb 3.4" in err and "options that fit: --samples 0" in err, err
    from lensframe.store import Store

    stored = [doc.get("node", "") for _, doc, _ in Store(store).entries()]
    assert stored and all(label.startswith("tokens") for label in stored), stored


def test_views_say_whether_they_export(capsys):
    assert main(["views"]) == 0
    out = capsys.readouterr().out
    blocks = {b.split(":", 1)[0]: b for b in re.split(r"\n(?=\S)", out)}
    for name in ("text", "logit_lens", "attention", "neurons", "top_examples", "layer_finder", "neuron_clusters",
                 "text_clusters", "difference", "ffn_vocab"):
        assert "lensframe export: linked in the page" in blocks[name], name
    assert "lensframe export: a note in the page: it runs the model" in blocks["generate"]
    if "token_entropy" in blocks:  # the example plugin (installed for the tests) has no port
        assert "lensframe export: a note in the page: it has no JS port yet" in blocks["token_entropy"]


# --- the cluster maps and the difference view ---------------------------------------------------------

CLUSTER_VIEWS = """  text: {type: text}
  nc: {type: neuron_clusters, layers: [0], n_neurons: 64, k: 4, n_perm: 200}
  tc: {type: text_clusters, layer: 0, k: 3}
  diffc: {type: difference, layer: 0, k: 3}
  diff: {type: difference, layer: 0, k: 3, compare: labels, a: food, b: law}
  neurons: {type: neurons, top_n: 6}
"""
CLUSTER_LAYOUT = "layout: |\n  text text tc\n  nc nc diffc\n  neurons diff diffc\n"
CLUSTER_LINKED = ("text", "nc", "tc", "diffc", "diff", "neurons")

# the marks of a map (the focused cluster's outlines, the selection's rings, the focused point's frame)
MARKS = r"""
(name) => {
  const f = [...Bokeh.documents[0]._all_models.values()].find((m) => m.name === name && Array.isArray(m.renderers));
  return f.renderers.filter((r) => !('row' in r.data_source.data))
          .map((r) => [Array.from(r.data_source.data.x), Array.from(r.data_source.data.y)]);
}
"""


@pytest.fixture(scope="module")
def cluster_export(tmp_path_factory):
    """The planted-topics model of tests/test_cluster_views.py (60 texts of 3 topics), a spec with
    both cluster maps, both kinds of difference view, text and neurons, computed and exported."""
    from lensframe.board import Board
    from tests.test_cluster_views import build_planted, spec_text

    root = tmp_path_factory.mktemp("export-clusters")
    spec = root / "spec.yaml"
    spec.write_text(spec_text(build_planted(root / "llama"), CLUSTER_VIEWS).replace("keep_focus_mb: 0", "keep_focus_mb: 64")
                    + CLUSTER_LAYOUT)
    board = Board.from_file(spec, cache_dir=root / "store")
    return {"spec": spec, "store": root / "store", "board": board, "report": board.export(root / "clusters.html")}


def test_cluster_views_export_as_planned(cluster_export):
    report = cluster_export["report"]
    assert report.plan.notes == {}
    assert abs(report.plan.total - report.bytes) / report.bytes < 0.05, (report.plan.describe(), report.describe())
    for vid in ("nc", "tc", "diffc", "diff"):
        assert 0.7 < report.plan.views[vid] / report.views[vid] < 1.4, (vid, report.plan.views[vid], report.views[vid])
    html = report.path.read_text()
    data = json.loads(re.search(r'id="lf-data-diffc">(.*?)</script>', html, re.S).group(1))
    assert len(data["meta"]["heads"]) == 3  # every cluster described in advance


def _map_point(page, card, name: str, avoid=()) -> tuple[int, float, float]:
    """A point of the map drawn inside its frame, far from the others (a click picks it and no
    neighbour), not in `avoid`: its row and page pixel."""
    from tests.test_browser_clusters import _FIGURE

    card.locator(".lf-map-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    fig = page.evaluate(_FIGURE, name)
    L, T, W, H = fig["frame"]
    pts = [(r, x, y) for r, x, y in zip(fig["rows"], fig["px"], fig["py"])
           if L + 6 < x < L + W - 6 and T + 6 < y < T + H - 6 and r not in avoid]
    alone = lambda p: min((math.hypot(p[1] - x, p[2] - y) for _, x, y in zip(fig["rows"], fig["px"], fig["py"])  # noqa: E731
                           if (x, y) != (p[1], p[2])), default=1e9)
    return max(pts, key=alone)


def _click_point(page, card, name: str, row: int) -> None:
    from tests.test_browser_clusters import _FIGURE

    card.locator(".lf-map-plot").first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    fig = page.evaluate(_FIGURE, name)
    j = fig["rows"].index(row)
    page.mouse.click(fig["px"][j], fig["py"][j])


@pytest.mark.browser
def test_cluster_views_link_offline_like_the_served_ones(cluster_export, browser):
    """Legend clicks, a member neuron, taps on both maps and a representative text, done in the
    exported page (offline) and in the served page alike: every card's DOM text and tips, and the
    maps' marks, are the same after each; a lasso in the exported page says it needs a server."""
    from lensframe.server.process import serve_process

    report = cluster_export["report"]
    with _offline_page(browser, report.path, ".lf-card-nc .lf-legend-item") as (page, requests, errors):

        log = cluster_export["spec"].parent / "serve.log"
        with serve_process(cluster_export["spec"], "--cache-dir", str(cluster_export["store"]), log_path=log,
                           wait_s=120) as server:
            live = browser.new_context(viewport={"width": 1400, "height": 1000})
            theirs = live.new_page()
            theirs.goto(server.url)
            theirs.locator(".lf-card-nc .lf-legend-item").first.wait_for(timeout=60_000)

            def same(expect: dict) -> None:
                for p in (page, theirs):
                    for selector, text in expect.items():
                        p.locator(selector).filter(has_text=re.compile(rf"^{re.escape(text)}$")).first.wait_for(timeout=60_000)
                theirs.wait_for_timeout(400)
                for vid in CLUSTER_LINKED:
                    a, b = page.evaluate(CARD, vid), theirs.evaluate(CARD, vid)
                    assert a["text"] == b["text"], (vid, _first_difference(a["text"], b["text"]))
                    assert a["tips"] == b["tips"], vid
                for name in ("lf-neurons-map", "lf-texts-map"):
                    assert page.evaluate(MARKS, name) == theirs.evaluate(MARKS, name), name

            def both(action) -> None:
                for p in (page, theirs):
                    action(p)

            same({".lf-card-text .lf-sample-index": "0"})
            # a neuron cluster in the legend: its members listed; one of them focused (the neurons view follows)
            both(lambda p: p.locator(".lf-card-nc .lf-legend-item").nth(2).click())
            same({".lf-card-nc .lf-cluster": "2"})
            label = page.locator(".lf-card-nc .lf-bar-row").nth(1).locator(".lf-bar-label").inner_text()
            both(lambda p: p.locator(".lf-card-nc .lf-bar-row").nth(1).click())
            same({".lf-card-neurons .lf-layer": label.split("/")[0][1:], ".lf-card-nc .lf-focused-neuron": label})
            # a text cluster in the legend: the difference view describes it (computed in advance)
            both(lambda p: p.locator(".lf-card-tc .lf-legend-item").nth(1).click())
            same({".lf-card-diffc .lf-group-a": "cluster 1"})
            # a text on the map: it is focused, with its cluster
            row = _map_point(page, page.locator(".lf-card-tc"), "lf-texts-map", avoid={0})[0]
            both(lambda p: _click_point(p, p.locator(".lf-card-tc"), "lf-texts-map", row))
            same({".lf-card-text .lf-sample-index": str(row), ".lf-card-tc .lf-focused-text": f"#{row}"})
            page.screenshot(path=str(Path(__file__).parent / "artifacts" / "export-clusters.png"))
            # a representative text of the difference view
            pick = int(page.locator(".lf-card-diffc .lf-sample").nth(2).get_attribute("data-sample"))
            both(lambda p: p.locator(f'.lf-card-diffc .lf-sample[data-sample="{pick}"]').first.click())
            same({".lf-card-text .lf-sample-index": str(pick)})
            # a neuron on the map: its layer, index and cluster
            nrow = _map_point(page, page.locator(".lf-card-nc"), "lf-neurons-map")[0]
            both(lambda p: _click_point(p, p.locator(".lf-card-nc"), "lf-neurons-map", nrow))
            page.locator(".lf-card-nc .lf-focused-neuron").first.wait_for(timeout=10_000)
            same({".lf-card-nc .lf-focused-neuron": page.locator(".lf-card-nc .lf-focused-neuron").inner_text()})
            live.close()

        # a lasso: a selection's description needs a server, and the card says so
        from tests.test_browser_clusters import _FIGURE, _lasso

        card = page.locator(".lf-card-tc")
        card.locator(".lf-map-plot").first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        _lasso(page, card, page.evaluate(_FIGURE, "lf-texts-map"), (0.05, 0.95), (0.05, 0.95))
        card.locator(".lf-lasso-note").wait_for(timeout=10_000)
        assert "needs lensframe serve" in card.locator(".lf-lasso-note").inner_text()
        page.screenshot(path=str(Path(__file__).parent / "artifacts" / "export-clusters-lasso.png"))
        assert requests == [] and errors == []
