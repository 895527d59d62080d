"""Browser test of the audit example: two models side by side (SmolLM2 with a secret ROME edit and
the base model) follow one focus, and model_diff names the edited layer and lets you click a text;
and the audit flow: the layer finder's layer, edit_search on it, a row clicked into the probes, the
probe's causal trace, a click on a trace cell, the continuations of both models.

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
        lens, diff = (page.locator(f".lf-card-{v}") for v in ("lens", "diff"))
        expect(lens.locator(".lf-lens-head").first).to_be_visible()
        expect(lens).to_contain_text(re.compile(r"Logit lens.* · suspect"))  # with two models, a card says whose it is
        # model_diff finds the planted layer, with a rank-one change, reading base → suspect
        expect(diff.locator(".lf-top-layer")).to_have_text(f"layer {answer['layer']}")
        expect(diff).to_contain_text("base → suspect")
        first = diff.locator(".lf-layer-diff-item").first
        expect(first).to_contain_text("rank 1")
        no_errors(page, expect, js_errors)
        _shot(page, "-start")

        # one click on a position of the lens moves the paired lens too
        lens.locator('.lf-grid td[data-row="0"][data-col="4"]').first.click()
        expect(lens.locator(".lf-position")).to_have_text("4")
        expect(diff.locator(".lf-diff-focus-head .lf-position")).to_have_text("4")
        expect(diff.locator(".lf-moved-up .lf-moved").first).to_be_visible()

        # a text in model_diff's list focuses that sample everywhere
        item = diff.locator(".lf-sample").nth(2)
        index = item.get_attribute("data-sample")
        item.click()
        expect(lens.locator(".lf-lens-head b").first).to_have_text(index)
        no_errors(page, expect, js_errors)
        _shot(page, "-clicked")
    finally:
        context.close()


def test_from_the_layer_finder_to_a_probe_its_trace_and_its_continuation(audit_server, audit_example, browser,
                                                                          expect):
    from lensframe import audit

    layer = audit.unseal(audit_example)["layer"]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(audit_server)
        finder, search, probes, trace, gen = (page.locator(f".lf-card-{v}")
                                              for v in ("finder", "search", "probes", "trace", "gen"))
        # the layer finder has direct evidence for the edited layer (its MLP output matrix is off the
        # quantized model's grid); a click on its bar focuses that layer everywhere
        expect(finder.locator(".lf-finder-top")).to_have_text(f"layer {layer}")
        finder.locator(f'.lf-finder-layer-item[data-key="{layer}"]').click()
        expect(finder.locator(".lf-finder-detail .lf-layer")).to_have_text(str(layer))
        # edit_search follows the focused layer: its vocabulary scan runs with its progress shown,
        # and ends in ranked rows (a minute or two of CPU)
        expect(search.locator(".lf-search-title .lf-layer")).to_have_text(str(layer))
        rows = search.locator(".lf-search-vocab-item")
        expect(rows.first).to_be_visible(timeout=600_000)
        no_errors(page, expect, js_errors)
        _shot(page, "-search")
        # a row joins the probe set and is focused: the probes view compares the models on it
        rows.first.click()
        expect(probes.locator(".lf-probes-count")).to_have_text("1", timeout=120_000)
        expect(trace.locator(".lf-probe-name").first).to_be_visible(timeout=120_000)
        # the probe's causal trace: three grids once the restored runs are done
        mlp = trace.locator(".lf-trace-grid-mlp")
        expect(trace.locator(".lf-trace-progress[data-state='done']")).to_be_attached(timeout=600_000)
        expect(trace.locator(".lf-trace-clean")).to_be_visible()
        expect(mlp.locator("td").first).to_be_visible()
        # every cell computed: no tip says "not computed yet"
        expect(mlp.locator("td[data-tip*='not computed']")).to_have_count(0)
        cell = mlp.locator("td[data-row='0'][data-col='0']")
        cell.click()
        expect(page.locator(".lf-focus-state")).to_contain_text(re.compile(r"position\s*0\b"), timeout=60_000)
        # both models continue the probe side by side
        expect(gen.locator(".lf-gen-status[data-state='done']")).to_be_visible(timeout=120_000)
        no_errors(page, expect, js_errors)
        _shot(page, "-trace")
    finally:
        context.close()
