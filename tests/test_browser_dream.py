"""Browser test of the dream view: `lensframe serve` on tests/specs/smollm2_dream.yaml (warm: the store
is computed first), driven by Playwright in Debian's Chromium.

One walk: a logit-lens cell focuses layer 10, a neuron clicked in the neurons view becomes the dream's
target (its head names the neuron, as L10/N<index>, and its best dataset example), Run starts the dream
and the live chart advances step by step (read from the page's Bokeh document: the rows of the chart's
data source), Stop ends it early (status "stopped", the best snapped text shown), and "Show best
example" moves the text view to that example's sample and token. No view shows an error card and the
page raises no JavaScript error at any point.

Needs the playwright Python package and /usr/bin/chromium (never `playwright install`).
Screenshots go to tests/artifacts/browser-dream-*.png (git-ignored).
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest

from tests.test_browser import ARTIFACTS, browser, expect, no_errors, serving_computed  # noqa: F401  (browser, expect: fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = Path(__file__).parent / "specs" / "smollm2_dream.yaml"
TITLE = "lensframe dream"  # the spec's title
LAYER = 10  # indexed by the spec's top_examples and dream views
STEPS = 150  # the spec's dream steps: far more than the test lets run before it presses Stop


@pytest.fixture(scope="module")
def dream_server(smollm2_available, tmp_path_factory):
    with serving_computed(SPEC, smollm2_available, tmp_path_factory) as url:
        yield url


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-dream-{name}.png"), full_page=True)


# The rows of the chart's data sources that have `column`, as the browser holds them (the chart is
# a HoloViews/Bokeh plot: its steps live in a ColumnDataSource, not in the DOM).
CHART_ROWS = """column => {
  const rows = [];
  for (const doc of window.Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.type !== 'ColumnDataSource') continue;
      const col = m.data instanceof Map ? m.data.get(column) : m.data[column];
      if (col !== undefined) rows.push(col.length);
    }
  }
  return rows;
}"""


def _steps(page, column: str = "snapped") -> int:
    """How many steps the dream chart's curve of `column` holds in the page. (While the dream runs,
    the soft and snapped panels are patched one after the other: compare them once it is done.)"""
    rows = page.evaluate(CHART_ROWS, column)
    assert len(rows) == 1, f"{len(rows)} chart sources with a {column!r} column in the page"
    return rows[0]


def _steps_change(page, than: int, timeout_s: float = 30) -> int:
    """Poll the chart until it holds a number of steps other than `than`."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        now = _steps(page)
        if now != than:
            return now
        time.sleep(0.25)
    return _steps(page)


def test_dream_runs_live_and_stops(dream_server, browser, expect):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(dream_server)
        text, lens = page.locator(".lf-card-text"), page.locator(".lf-card-lens")
        neurons, dream = page.locator(".lf-card-neurons"), page.locator(".lf-card-dream")
        expect(text.locator(".lf-token").first).to_be_visible()
        expect(page.locator(".lf-title")).to_have_text(TITLE)
        expect(dream.locator(".lf-hint")).to_contain_text("click a neuron")  # no neuron yet
        # the view's parts exist from the start (updated in place) and are hidden until a neuron is focused
        expect(dream.locator(".lf-dream-run")).to_be_hidden()
        expect(dream.locator(".lf-dream-plot")).to_be_hidden()
        no_errors(page, expect, js_errors)

        # Focus layer 10: click a lens cell in the row labelled 10, then the top neuron there.
        labels = [s.strip() for s in lens.locator("th.lf-row").all_inner_texts()]
        assert str(LAYER) in labels, f"no lens row labelled {LAYER}: {labels}"
        lens.locator(f'.lf-cell[data-row="{labels.index(str(LAYER))}"][data-col="3"]').click()
        expect(neurons.locator(".lf-layer")).to_have_text(str(LAYER))
        item = neurons.locator(".lf-neuron-item").first
        key = item.get_attribute("data-key")
        assert key and key.isdigit(), f"neuron row without a numeric data-key: {key!r}"
        name = f"L{LAYER}/N{key}"  # views/base.py neuron_label
        item.click()
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)

        # The dream card names the target and its best dataset example, and waits for Run.
        head = dream.locator(".lf-dream-head")
        expect(head.locator(".lf-dream-target")).to_have_text(f"neuron {name}")
        expect(head).to_contain_text(f"{STEPS} steps")
        best = re.search(r"\(sample (\d+), position (\d+)\)", head.inner_text())
        assert best, f"the dream head names no best example: {head.inner_text()!r}"
        best_sample, best_position = best.group(1), best.group(2)
        run, stop = dream.locator(".lf-dream-run button"), dream.locator(".lf-dream-stop button")
        expect(run).to_be_enabled()
        expect(stop).to_be_disabled()
        expect(dream.locator(".lf-dream-status")).to_contain_text("press Run")
        no_errors(page, expect, js_errors)
        _shot(page, "ready")

        # Run: the status says running and the live plot gains steps as the optimiser goes.
        run.click()
        status, plot = dream.locator(".lf-dream-status"), dream.locator(".lf-dream-plot")
        expect(dream.locator(".lf-dream-status[data-state=running]")).to_be_visible()
        expect(status).to_contain_text(f"of {STEPS}")
        expect(plot).to_be_visible()
        expect(plot.locator(".lf-dream-key")).to_contain_text("best dataset example")
        first = _steps_change(page, 0)
        assert first >= 1, "the dream chart shows no step while the dream runs"
        second = _steps_change(page, first)  # polled until it moves
        assert second > first, f"the dream chart went from {first} to {second} steps"
        expect(dream.locator(".lf-dream-text .lf-dream-token").first).to_be_visible()  # the live snapped text
        expect(run).to_be_disabled()
        expect(dream.locator(".lf-dream-status[data-state=running]")).to_be_visible()
        no_errors(page, expect, js_errors)
        _shot(page, "running")

        # Stop: the dream ends early, the status says so, the result shows the best snapped text.
        expect(stop).to_be_enabled()
        stop.click()
        expect(status).to_contain_text("stopped")  # on failure, shows what the status says instead
        expect(dream.locator(".lf-dream-status[data-state=done]")).to_be_visible()
        result = dream.locator(".lf-dream-result")
        expect(result).to_be_visible()
        snapped = result.locator(".lf-dream-best-snapped")
        expect(snapped).to_have_text(re.compile(r"^[+-]\d+\.\d{3}$"))
        assert math.isfinite(float(snapped.inner_text()))
        n_rows = result.locator(".lf-dream-top-row").count()
        assert 1 <= n_rows <= 4, f"the top tokens are listed for {n_rows} positions, for a span of at most 4"
        final_steps = _steps(page)
        assert second <= final_steps < STEPS + 1, f"{final_steps} steps recorded after Stop (budget {STEPS})"
        shown = int(dream.locator(".lf-dream-text").get_attribute("data-step"))
        if final_steps != shown + 1:  # the chart's last patch may land just after the status's
            final_steps = _steps_change(page, final_steps, timeout_s=10)
        assert final_steps == shown + 1, f"the chart holds {final_steps} steps, the live text is at step {shown}"
        assert _steps(page, "soft") == final_steps, "the soft and snapped panels hold different steps"
        expect(run).to_be_enabled()
        expect(stop).to_be_disabled()
        no_errors(page, expect, js_errors)
        _shot(page, "stopped")

        # Show best example: the text view moves to the best example's sample and token.
        dream.locator(".lf-dream-example button").click()
        expect(text.locator(".lf-sample-head b").first).to_have_text(best_sample)
        expect(text.locator(".lf-position")).to_have_text(best_position)
        expect(text.locator(f'.lf-token[data-position="{best_position}"]')).to_have_class(
            re.compile(r"\blf-selected\b"))
        expect(neurons.locator(".lf-position")).to_have_text(best_position)  # re-rendered for that sample
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)
        expect(result).to_be_visible()  # the dream does not read sample or position: its result stays
        expect(head.locator(".lf-dream-target")).to_have_text(f"neuron {name}")
        no_errors(page, expect, js_errors)
        _shot(page, "example")
    finally:
        context.close()
