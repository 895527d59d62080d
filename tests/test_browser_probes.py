"""Browser tests of asking the model live (probes), on SmolLM2 in Debian's Chromium: type a prompt and
every focus view follows; a template fills the probes view; a row click focuses that probe; a click
on a generated token extends the focused text; a URL with a focus opens on it; bad input is a message
in the page, never a traceback, and the views keep what they showed.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from .test_browser import _open, artifacts, browser, expect, serving  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = Path(__file__).parent / "specs" / "smollm2_probes.yaml"
TITLE = "lensframe probes"
FOCUS_VIEWS = ("text", "lens", "attn", "neurons")


@pytest.fixture(scope="module")
def server(smollm2_board, smollm2_cache, tmp_path_factory):
    """The probe spec served from the session's SmolLM2 store (the model is converted once)."""
    del smollm2_board
    with serving(SPEC, smollm2_cache, tmp_path_factory.mktemp("serve-probes")) as url:
        yield url


def _ok(page, expect, errors):
    expect(page).to_have_title(TITLE)
    _check_page_no_title(page, expect, errors)


def _check_page_no_title(page, expect, errors):
    expect(page.locator(".lf-error")).to_have_count(0)
    expect(page.locator(".lf-waiting")).to_have_count(0)
    assert not errors, f"JavaScript errors in the page: {errors}"


def _ask(page, text: str, fillers: str = ""):
    page.locator(".lf-probe-text textarea").fill(text)
    page.locator(".lf-probe-fillers input").fill(fillers)
    page.locator(".lf-probe-ask button").click()


def _probe_named(expect, page, text: str):
    """Every focus view names the probe in its caption."""
    shown = repr(text if len(text) <= 40 else text[:39] + "…")
    for view in FOCUS_VIEWS:
        expect(page.locator(f".lf-card-{view} .lf-probe-name").first).to_have_text(shown)


def test_typed_prompt_moves_every_focus_view(server, browser, expect, artifacts):
    context, page, errors = _open(browser, server, expect)
    try:
        prompt = "The capital of France is"
        _ask(page, prompt)
        _probe_named(expect, page, prompt)
        text = page.locator(".lf-card-text")
        n = text.locator(".lf-token").count()
        assert n == 5, f"the probe shows {n} tokens"
        expect(page.locator(".lf-card-lens th.lf-col")).to_have_count(n)
        expect(page.locator(".lf-card-attn th.lf-col")).to_have_count(n)
        expect(page.locator(".lf-card-lens .lf-position")).to_have_text(str(n - 1))
        # the continuation follows the probe and finishes
        expect(page.locator(".lf-card-gen .lf-probe-name")).to_have_count(1)
        expect(page.locator(".lf-card-gen .lf-gen-status")).to_have_attribute("data-state", "done")
        assert page.locator(".lf-card-gen .lf-gen-token").count() >= 1
        # a token click moves the position in the other views, still on the probe
        text.locator('.lf-token[data-position="2"]').click()
        for view in ("text", "lens", "attn", "neurons"):
            expect(page.locator(f".lf-card-{view} .lf-position")).to_have_text("2")
        _ok(page, expect, errors)
        page.screenshot(path=str(artifacts / "browser-probe-typed.png"), full_page=True)
        assert "text=The+capital+of+France+is" in page.url or "text=The%20capital" in page.url, page.url

        # back to the dataset in one click
        page.locator(".lf-probe-back button").click()
        expect(page.locator(".lf-card-text .lf-sample-head .lf-sample-index")).to_have_text("0")
        expect(page.locator(".lf-card-lens .lf-probe-name")).to_have_count(0)
        _ok(page, expect, errors)
    finally:
        context.close()


def test_template_fills_the_probes_view_and_a_row_click_focuses_it(server, browser, expect, artifacts):
    context, page, errors = _open(browser, server, expect)
    try:
        probes = page.locator(".lf-card-probes")
        expect(probes.locator(".lf-probes-count")).to_have_text("3")  # the spec's template
        _ask(page, "{} is the capital of", "Paris, Rome")
        expect(probes.locator(".lf-probes-count")).to_have_text("2")
        rows = probes.locator(".tabulator-row")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("Paris is the capital of")
        _probe_named(expect, page, "Paris is the capital of")  # the first probe is focused
        rows.nth(1).locator('.tabulator-cell[tabulator-field="probe"]').click()
        _probe_named(expect, page, "Rome is the capital of")
        _ok(page, expect, errors)
        page.screenshot(path=str(artifacts / "browser-probe-set.png"), full_page=True)
    finally:
        context.close()


def test_generated_token_click_extends_the_focused_text(server, browser, expect, artifacts):
    context, page, errors = _open(browser, server, expect)
    try:
        _ask(page, "Once upon a time")
        gen = page.locator(".lf-card-gen")
        _probe_named(expect, page, "Once upon a time")  # the views have left sample 0 ...
        expect(gen.locator(".lf-probe-name")).to_have_count(1)  # ... and so has the continuation
        expect(gen.locator(".lf-gen-status")).to_have_attribute("data-state", "done")
        before = page.locator(".lf-card-text .lf-token").count()
        tokens = gen.locator(".lf-gen-token")
        assert tokens.count() >= 2
        tokens.nth(1).click()  # the prompt plus the first two generated tokens
        expect(page.locator(".lf-card-text .lf-token")).not_to_have_count(before)
        after = page.locator(".lf-card-text .lf-token").count()
        assert after > before, (before, after)
        for view in ("text", "lens", "attn"):
            expect(page.locator(f".lf-card-{view} .lf-position")).to_have_text(str(after - 1))
        expect(page.locator(".lf-card-lens th.lf-col")).to_have_count(after)
        _ok(page, expect, errors)
        page.screenshot(path=str(artifacts / "browser-probe-generated.png"), full_page=True)
    finally:
        context.close()


def test_url_with_focus_opens_on_it(server, browser, expect, artifacts):
    url = f"{server}?text={quote('The Eiffel Tower is in')}&position=2&layer=5"
    context, page, errors = _open(browser, url, expect)
    try:
        _probe_named(expect, page, "The Eiffel Tower is in")
        for view in ("text", "lens", "attn"):
            expect(page.locator(f".lf-card-{view} .lf-position")).to_have_text("2")
        expect(page.locator(".lf-card-attn .lf-layer")).to_have_text("5")
        _ok(page, expect, errors)
        # a bad field in a hand-made link is said, and the rest still applies
        page.goto(f"{server}?sample=3&layer=999&colour=red")
        expect(page.locator(".lf-card-text .lf-sample-index")).to_have_text("3")
        expect(page.locator(".lf-probe-message")).to_contain_text("layer=999")
        expect(page.locator(".lf-probe-message")).to_contain_text("colour")
    finally:
        context.close()


def test_bad_input_is_a_message_and_nothing_is_lost(server, browser, expect, artifacts):
    context, page, errors = _open(browser, server, expect)
    try:
        _ask(page, "The capital of Italy is")
        _probe_named(expect, page, "The capital of Italy is")
        for text, fillers, says in [("   ", "", "empty"), ("no slot here", "a, b", "{}"),
                                    ("{} is here", " , ", "empty")]:
            _ask(page, text, fillers)
            expect(page.locator(".lf-probe-error")).to_contain_text(says)
            _probe_named(expect, page, "The capital of Italy is")  # the views keep the last good probe
        _ask(page, "tab\tand bell\x07 in a prompt")
        expect(page.locator(".lf-probe-note")).to_contain_text("control character")
        _probe_named(expect, page, "tab\tand bell in a prompt")
        long = " ".join(["word"] * 80)  # past the spec's run.probe_max_tokens (40)
        _ask(page, long)
        expect(page.locator(".lf-card-text .lf-cut-note")).to_contain_text("cut to the first 40 tokens")
        expect(page.locator(".lf-card-text .lf-token")).to_have_count(40)
        _check_page_no_title(page, expect, errors)
        page.screenshot(path=str(artifacts / "browser-probe-bad-input.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("size", [(1400, 1000), (1920, 1080)])
def test_probe_screenshots(server, browser, expect, artifacts, size):
    """The probe page at both sizes the views are checked at (looked at by a person)."""
    context, page, errors = _open(browser, server, expect, size)
    try:
        prompt = "The Eiffel Tower is located in the city of"
        _ask(page, prompt)
        _probe_named(expect, page, prompt)
        expect(page.locator(".lf-card-gen .lf-probe-name")).to_have_count(1)
        expect(page.locator(".lf-card-gen .lf-gen-status")).to_have_attribute("data-state", "done")
        _ok(page, expect, errors)
        page.screenshot(path=str(artifacts / f"browser-probe-{size[0]}x{size[1]}.png"))
    finally:
        context.close()
