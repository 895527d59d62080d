"""Browser test of the example plugin view (examples/lensframe-token-entropy): `lensframe serve` on its
spec (warm: computed first), driven by Playwright in Debian's Chromium.

A token clicked in the plugin's token_entropy view moves the built-in text and logit lens views to
it (and the plugin marks it); a token clicked in the text view moves the plugin's caption back.
Needs the plugin installed (scripts/setup.sh --test), the playwright package and /usr/bin/chromium.
Screenshot: tests/artifacts/browser-plugin.png (git-ignored).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_browser import ARTIFACTS, _open, browser, expect, no_errors, serving_computed  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = Path(__file__).resolve().parent.parent / "examples" / "lensframe-token-entropy" / "spec.yaml"
SELECTED = re.compile(r"\blf-selected\b")


@pytest.fixture(scope="module")
def plugin_server(smollm2_available, tmp_path_factory):
    from lensframe.registry import view_types

    assert "token_entropy" in view_types(), "install the example plugin: pip install --no-deps -e examples/lensframe-token-entropy"
    with serving_computed(SPEC, smollm2_available, tmp_path_factory) as url:
        yield url


def test_plugin_view_click_moves_the_builtin_views(plugin_server, browser, expect):
    context, page, js_errors = _open(browser, plugin_server, expect)
    try:
        ent, text, lens = page.locator(".lf-card-entropy"), page.locator(".lf-card-text"), page.locator(".lf-card-lens")
        tokens = ent.locator(".lf-te-token")
        expect(tokens.first).to_be_visible()
        T = text.locator(".lf-token").count()
        assert T > 6 and tokens.count() == T, (T, tokens.count())
        expect(ent.locator(".lf-position")).to_have_text(str(T - 1))
        # every token shows its entropy (metric: entropy); colours differ across the sample
        values = ent.locator(".lf-te-value").all_inner_texts()
        assert all(re.fullmatch(r"\d+\.\d", v) for v in values), values
        assert len(set(tokens.evaluate_all("ts => ts.map(t => t.style.background)"))) > 3

        tokens.nth(4).click()  # the plugin sets focus.position: the built-in views follow
        expect(ent.locator('.lf-te-token[data-position="4"]')).to_have_class(SELECTED)
        expect(ent.locator(".lf-position")).to_have_text("4")
        expect(text.locator(".lf-position")).to_have_text("4")
        expect(text.locator('.lf-token[data-position="4"]')).to_have_class(SELECTED)
        expect(lens.locator(".lf-position")).to_have_text("4")
        expect(lens.locator("th.lf-col").nth(4)).to_have_class(SELECTED)
        expect(ent.locator(".lf-te-pred")).to_have_count(5)  # the spec's top_k
        expect(ent.locator(".lf-te-rank")).to_have_count(1)
        no_errors(page, expect, js_errors)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-plugin.png"), full_page=True)

        text.locator('.lf-token[data-position="2"]').click()  # and it reads the focus others set
        expect(ent.locator(".lf-position")).to_have_text("2")
        expect(ent.locator('.lf-te-token[data-position="2"]')).to_have_class(SELECTED)
        text.locator('.lf-sample[data-sample="3"]').click()
        T3 = text.locator(".lf-token").count()
        expect(ent.locator(".lf-te-token")).to_have_count(T3)
        expect(ent.locator(".lf-position")).to_have_text(str(T3 - 1))
        expect(ent.locator(".lf-te-head")).to_contain_text("last token (nothing follows)")
        no_errors(page, expect, js_errors)
    finally:
        context.close()
