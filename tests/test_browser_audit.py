"""Browser test of the audit example: two models side by side (SmolLM2 with a secret ROME edit and
the base model) follow one focus, and model_diff names the edited layer and lets you click a text.

Needs the playwright Python package and /usr/bin/chromium (never `playwright install`).
Screenshots go to tests/artifacts/browser-audit*.png (git-ignored).
"""
from __future__ import annotations

import re

from pathlib import Path

import pytest

from tests.test_browser import ARTIFACTS, browser, expect, no_errors, serving_computed  # noqa: F401  (browser, expect: fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = Path(__file__).parent / "specs" / "smollm2_audit.yaml"


@pytest.fixture(scope="module")
def audit_server(audit_example, smollm2_available, tmp_path_factory):
    with serving_computed(SPEC, smollm2_available, tmp_path_factory) as url:
        yield url


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-audit{name}.png"), full_page=True)


def test_paired_views_follow_one_focus(audit_server, audit_example, browser, expect):
    from lensframe import audit

    answer = audit.unseal(audit_example)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(audit_server)
        text, lens, base, diff = (page.locator(f".lf-card-{v}") for v in ("text", "lens", "lens_base", "diff"))
        expect(text.locator(".lf-token").first).to_be_visible()
        expect(lens).to_contain_text(re.compile(r"Logit lens.* · suspect"))  # with two models, a card says whose it is
        expect(base).to_contain_text(re.compile(r"Logit lens.* · base"))
        # model_diff finds the planted layer, with a rank-one change
        expect(diff.locator(".lf-top-layer")).to_have_text(f"layer {answer['layer']}")
        first = diff.locator(".lf-layer-diff-item").first
        expect(first).to_contain_text("rank 1")
        no_errors(page, expect, js_errors)
        _shot(page, "-start")

        # one click on a token moves both models' lenses
        text.locator('.lf-token[data-position="4"]').click()
        for card in (text, lens, base):
            expect(card.locator(".lf-position")).to_have_text("4")
        expect(diff.locator(".lf-moved-up .lf-moved").first).to_be_visible()

        # a text in model_diff's list focuses that sample everywhere
        item = diff.locator(".lf-sample").nth(2)
        index = item.get_attribute("data-sample")
        item.click()
        expect(text.locator(".lf-sample-head b").first).to_have_text(index)
        for card in (lens, base):
            expect(card.locator(".lf-lens-head b").first).to_have_text(index)
        no_errors(page, expect, js_errors)
        _shot(page, "-clicked")
    finally:
        context.close()
