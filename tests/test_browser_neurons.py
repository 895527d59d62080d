"""Browser test of the neuron views: `lensframe serve` on tests/specs/smollm2_neurons.yaml (warm: the
store is computed first), driven by Playwright in Debian's Chromium.

One walk through the linked views: a logit-lens cell focuses layer 10, a neuron clicked in the
neurons view moves top_examples and ffn_vocab to it, a sub-update clicked in ffn_vocab moves the
neurons view, an intervention in ffn_vocab shows the changed next-token prediction, and a top
example moves the text view to its sample and token. No view shows an error card at any point.

Needs the playwright Python package and /usr/bin/chromium (never `playwright install`).
Screenshots go to tests/artifacts/browser-neurons*.png (git-ignored).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lensframe.views.base import neuron_label
from tests.test_browser import ARTIFACTS, browser, expect, no_errors, serving_computed  # noqa: F401  (browser, expect: fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = Path(__file__).parent / "specs" / "smollm2_neurons.yaml"
TITLE = "lensframe neurons"  # the spec's title
LAYER = 10  # indexed by the spec's top_examples view


@pytest.fixture(scope="module")
def neurons_server(smollm2_available, tmp_path_factory):
    with serving_computed(SPEC, smollm2_available, tmp_path_factory) as url:
        yield url


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-neurons{name}.png"), full_page=True)


def test_neuron_views_follow_each_other(neurons_server, browser, expect):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(neurons_server)
        text, lens = page.locator(".lf-card-text"), page.locator(".lf-card-lens")
        neurons, top, ffn = page.locator(".lf-card-neurons"), page.locator(".lf-card-top"), page.locator(".lf-card-ffn")
        expect(text.locator(".lf-token").first).to_be_visible()
        expect(page.locator(".lf-title")).to_have_text(TITLE)
        expect(neurons.locator(".lf-neuron-item").first).to_be_visible()
        expect(ffn.locator(".lf-subupdate-item").first).to_be_visible()
        expect(top.locator(".lf-hint")).to_be_visible()  # no neuron yet: top_examples asks for one
        no_errors(page, expect, js_errors)
        _shot(page, "-start")

        # Focus layer 10 at position 3: click the lens cell in the row labelled 10.
        labels = [s.strip() for s in lens.locator("th.lf-row").all_inner_texts()]
        assert str(LAYER) in labels, f"no lens row labelled {LAYER}: {labels}"
        row, col = labels.index(str(LAYER)), 3
        lens.locator(f'.lf-cell[data-row="{row}"][data-col="{col}"]').click()
        for view in (neurons, ffn):
            expect(view.locator(".lf-layer")).to_have_text(str(LAYER))
            expect(view.locator(".lf-position")).to_have_text(str(col))
        expect(text.locator(".lf-position")).to_have_text(str(col))

        # Click the top neuron by activation: the neurons strip, top_examples and ffn_vocab follow.
        item = neurons.locator(".lf-neuron-item").first
        key = item.get_attribute("data-key")
        assert key and key.isdigit(), f"neuron row without a numeric data-key: {key!r}"
        name = neuron_label(LAYER, int(key))  # L10/N808: never "10.808", which reads as a number
        item.click()
        expect(neurons.locator(f'.lf-neuron-item[data-key="{key}"]').first).to_have_class(
            re.compile(r"\blf-selected\b"))
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)
        expect(neurons.locator(".lf-tokens .lf-token").first).to_be_visible()  # the neuron over the sample
        expect(top.locator("b.lf-neuron")).to_have_text(name)
        expect(top.locator(".lf-hist")).to_be_visible()
        expect(top.locator(".lf-hist canvas").first).to_be_visible()
        expect(top.locator(".lf-example").first).to_be_visible()
        assert top.locator(".lf-example").count() >= 2, "fewer than two top examples for a neuron of 10 samples"
        expect(ffn.locator(".lf-ffn-static b.lf-neuron")).to_have_text(name)
        expect(ffn.locator(".lf-promoted .lf-chip")).to_have_count(6)  # the spec's k
        expect(ffn.locator(".lf-suppressed .lf-chip")).to_have_count(6)
        # the ids and values in the neuron lists are whole (a note that does not fit wraps), and
        # the hover tip gives the neuron's numbers in words
        labels = neurons.locator(".lf-bar-label").all_inner_texts()
        assert labels and all(re.fullmatch(rf"L{LAYER}/N\d+", t.strip()) for t in labels), labels
        cut = neurons.locator(".lf-bar-note, .lf-bar-label").evaluate_all(
            "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")
        assert not cut, f"cut in the neurons view: {cut}"
        card = neurons.bounding_box()
        for note in neurons.locator(".lf-bar-note").all()[:5]:
            box = note.bounding_box()
            assert box["x"] + box["width"] <= card["x"] + card["width"] + 1, f"{note.inner_text()} runs out of the card"
        neurons.locator(f'.lf-neuron-item[data-key="{key}"]').first.hover()
        expect(neurons.locator(".lf-tip:visible")).to_contain_text(f"{name} at position {col}")
        no_errors(page, expect, js_errors)
        _shot(page, "-neuron")

        # Click another sub-update in ffn_vocab: the neurons view (and top_examples) follow.
        keys = ffn.locator(".lf-subupdate-item").evaluate_all("rows => rows.map(r => r.dataset.key)")
        other = next((k for k in keys if k != key), None)
        assert other is not None, f"ffn_vocab lists no sub-update besides {key}: {keys}"
        name = neuron_label(LAYER, int(other))
        ffn.locator(f'.lf-subupdate-item[data-key="{other}"]').click()
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)
        expect(top.locator("b.lf-neuron")).to_have_text(name)
        expect(ffn.locator(".lf-ffn-static b.lf-neuron")).to_have_text(name)
        expect(ffn.locator(f'.lf-subupdate-item[data-key="{other}"]')).to_have_class(re.compile(r"\blf-selected\b"))
        no_errors(page, expect, js_errors)

        # Intervene: set that neuron's activation to 50 at this token; a before/after table appears.
        expect(ffn.locator(".lf-edit-result")).to_have_count(0)
        neuron_input, value_input = ffn.locator(".lf-edit-neuron input"), ffn.locator(".lf-edit-value input")
        neuron_input.fill(other)
        neuron_input.press("Tab")
        value_input.fill("50")
        value_input.press("Tab")
        ffn.locator(".lf-edit-apply button").click()
        result = ffn.locator(".lf-edit-result")
        expect(result).to_be_visible()
        expect(result).to_contain_text(f"m[{name}]=50")
        expect(result.locator(".lf-edit-row").first).to_be_visible()
        assert result.locator(".lf-edit-row").count() >= 10, "the edit table lists fewer than 10 tokens"
        no_errors(page, expect, js_errors)
        _shot(page, "-edit")

        # Click the peak token of a top example from another sample: the text view moves there.
        current = text.locator(".lf-sample-head b").first.inner_text().strip()
        heads = top.locator(".lf-example-head").all_inner_texts()
        found = [(i, re.search(r"sample (\d+).* at position (\d+)", h)) for i, h in enumerate(heads)]
        pick = next(((i, m) for i, m in found if m and m.group(1) != current), None)
        assert pick is not None, f"no top example outside sample {current}: {heads}"
        i, m = pick
        sample, position = m.group(1), m.group(2)
        top.locator(".lf-example").nth(i).locator(".lf-token.lf-selected").click()
        expect(text.locator(".lf-sample-head b").first).to_have_text(sample)
        expect(text.locator(".lf-position")).to_have_text(position)
        expect(text.locator(f'.lf-token[data-position="{position}"]')).to_have_class(re.compile(r"\blf-selected\b"))
        expect(text.locator(f'.lf-sample[data-sample="{sample}"]')).to_have_class(re.compile(r"\blf-selected\b"))
        for view in (neurons, ffn):  # the neuron views follow the sample and keep layer and neuron
            expect(view.locator(".lf-position")).to_have_text(position)
            expect(view.locator(".lf-layer")).to_have_text(str(LAYER))
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)
        expect(ffn.locator(".lf-edit-result")).to_have_count(0)  # edits belong to the old token
        no_errors(page, expect, js_errors)
        _shot(page, "-example")
    finally:
        context.close()
