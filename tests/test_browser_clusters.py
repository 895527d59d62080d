"""Browser test of the clustering views: `lensframe serve` on tests/specs/smollm2_clusters.yaml (warm:
the store is computed first), driven by Playwright in Debian's Chromium.

One walk through the linked views, with real gestures on the HoloViews maps:
- a cluster clicked in neuron_clusters' legend lists its member neurons; a member clicked there moves
  the neurons view and top_examples to it (ids written L<layer>/N<index>);
- a legend entry of text_clusters, then a click on a point of the map (at the pixel Bokeh draws it,
  found from the figure's own scales), make the difference view describe that cluster;
- the lasso tool picked in the map's toolbar and a polygon dragged with the mouse select texts: the
  server's selection (the map caption) equals Bokeh's own hit test in the page (the data source's
  selected indices), and the difference view describes exactly those texts against the rest, with
  balanced accuracy, its chance level and a verdict;
- a lasso on the neuron map gets the topic enrichment of the neurons it caught;
- a representative text clicked in the difference view moves the text view.
No view shows an error card at any point; screenshots at 1400x1000 and 1920x1080.

Needs the playwright Python package and /usr/bin/chromium (never `playwright install`).
Screenshots go to tests/artifacts/browser-clusters*.png (git-ignored).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_browser import ARTIFACTS, browser, expect, no_errors, serving_computed  # noqa: F401  (browser, expect: fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPEC = Path(__file__).parent / "specs" / "smollm2_clusters.yaml"
TITLE = "lensframe clusters"  # the spec's title
K_TEXT = 3  # the spec's text_clusters k
K_NEURON = 4  # the spec's neuron_clusters k
N_TEXTS = 24  # the spec's dataset limit
SELECTED = re.compile(r"\blf-selected\b")
NEURON_ID = re.compile(r"L(\d+)/N(\d+)")

# The map's figure, found in the page's Bokeh document by the name the view gives it.
_FIGURE = """(name) => {
  const fv = Bokeh.index.all_views().find(v => v.model.type === 'Figure' && v.model.name === name);
  if (!fv) return null;
  const src = fv.model.renderers.map(r => r.data_source).find(s => s && s.data && s.data.row);
  const box = fv.canvas_view.el.getBoundingClientRect(), f = fv.frame.bbox;
  const rows = Array.from(src.data.row), groups = Array.from(src.data.group);
  const px = Array.from(src.data.x, x => box.left + fv.frame.x_scale.compute(x));
  const py = Array.from(src.data.y, y => box.top + fv.frame.y_scale.compute(y));
  const selected = Array.from(src.selected.indices, i => rows[i]).sort((a, b) => a - b);
  return {rows, groups, px, py, selected, frame: [box.left + f.left, box.top + f.top, f.width, f.height],
          xlabel: fv.model.below[0].axis_label, ylabel: fv.model.left[0].axis_label};
}"""


@pytest.fixture(scope="module")
def clusters_server(smollm2_available, tmp_path_factory):
    with serving_computed(SPEC, smollm2_available, tmp_path_factory) as url:
        yield url


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-clusters{name}.png"), full_page=True)


def _figure(page, name: str, card=None) -> dict:
    """The map's points in page pixels; with `card`, scrolled into view first (pixels are only
    valid for the layout they were measured in: measure right before a gesture)."""
    page.wait_for_function(f"() => window.Bokeh && Bokeh.index.all_views().some(v => v.model.name === '{name}')",
                           timeout=30_000)
    if card is not None:
        card.locator(".lf-map-plot").first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
    return page.evaluate(_FIGURE, name)


def _inside(fig: dict) -> list[tuple[float, float]]:
    """Points of the map drawn inside its frame (not clipped by the robust view range)."""
    L, T, W, H = fig["frame"]
    return [(x, y) for x, y in zip(fig["px"], fig["py"]) if L + 4 < x < L + W - 4 and T + 4 < y < T + H - 4]


def _lasso(page, card, fig: dict, xs: tuple[float, float], ys: tuple[float, float]) -> None:
    """Pick the lasso in the card's map toolbar and drag a closed polygon over the given shares of
    the frame, in small mouse steps as a hand would."""
    card.locator(".bk-tool-icon-lasso-select").first.click()
    L, T, W, H = fig["frame"]
    poly = [(L + xs[0] * W, T + ys[0] * H), (L + xs[1] * W, T + ys[0] * H), (L + xs[1] * W, T + ys[1] * H),
            (L + xs[0] * W, T + ys[1] * H)]
    page.mouse.move(*poly[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
        for k in range(1, 9):
            page.mouse.move(x0 + (x1 - x0) * k / 8, y0 + (y1 - y0) * k / 8)
    page.mouse.up()


def _check_difference(diff, expect, name: str, n_a: int) -> None:
    """The difference view describes group `name` (n_a texts) against the rest: group sizes,
    balanced accuracy first with its chance level and a verdict (or a clear n/a), terms (or a clear
    none) and representative texts."""
    expect(diff.locator(".lf-group-a")).to_have_text(name)
    expect(diff.locator(".lf-group-b")).to_have_text("the rest")
    expect(diff.locator(".lf-n-a")).to_have_text(str(n_a))
    expect(diff.locator(".lf-n-b")).to_have_text(str(N_TEXTS - n_a))
    sep = diff.locator(".lf-separability")
    expect(sep).to_contain_text(re.compile(r"balanced accuracy \d\.\d\d \(chance 0\.50\)|separability: n/a"))
    if "n/a" not in sep.inner_text():
        expect(sep.locator(".lf-verdict")).to_have_text(re.compile(r"^(above chance|at chance)"))
        assert "plain accuracy" in sep.inner_text()
    for side in ("a", "b"):
        terms = diff.locator(f".lf-terms-{side}")
        expect(terms).to_be_visible()
        assert terms.locator(".lf-term").count() > 0 or "none at this size" in terms.inner_text(), (
            f"side {side} lists neither terms nor 'none at this size': {terms.inner_text()!r}")


def test_cluster_views_follow_each_other(clusters_server, browser, expect):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(clusters_server)
        text, tclusters, diff = page.locator(".lf-card-text"), page.locator(".lf-card-tclusters"), page.locator(".lf-card-diff")
        nclusters, neurons, top = page.locator(".lf-card-nclusters"), page.locator(".lf-card-neurons"), page.locator(".lf-card-top")
        expect(page.locator(".lf-title")).to_have_text(TITLE)
        expect(text.locator(".lf-token").first).to_be_visible()
        texts_map, neuron_map = _figure(page, "lf-texts-map"), _figure(page, "lf-neurons-map")
        assert len(texts_map["rows"]) == N_TEXTS and len(neuron_map["rows"]) > 10
        assert re.fullmatch(r"PC [23]( \(.*% of variance\))?", texts_map["xlabel"]), texts_map["xlabel"]
        assert re.fullmatch(r"(PC|UMAP) [12].*", neuron_map["ylabel"]), neuron_map["ylabel"]
        expect(tclusters.locator(".lf-legend-item")).to_have_count(K_TEXT)
        expect(tclusters.locator(".lf-ari")).to_have_text(re.compile(r"^-?\d\.\d{3}$"))
        expect(nclusters.locator(".lf-cluster-item")).to_have_count(K_NEURON)
        expect(nclusters.locator(".lf-member-item")).to_have_count(0)  # no cluster focused yet
        expect(diff.locator(".lf-hint")).to_be_visible()  # no text cluster yet: difference asks for one
        expect(top.locator(".lf-hint")).to_be_visible()  # no neuron yet: top_examples asks for one
        # nothing cut: each legend note is as wide as its text (it wraps instead)
        for note in nclusters.locator(".lf-legend-note").all():
            assert note.evaluate("n => n.scrollWidth <= n.clientWidth + 1"), note.inner_text()
        no_errors(page, expect, js_errors)
        _shot(page, "-start")

        # Click a neuron cluster in the legend: its member neurons are listed, outlined on the map.
        cluster = nclusters.locator(".lf-cluster-item").first.get_attribute("data-group")
        nclusters.locator(f'.lf-cluster-item[data-group="{cluster}"]').click()
        expect(nclusters.locator(f'.lf-cluster-item[data-group="{cluster}"]')).to_have_class(SELECTED)
        expect(nclusters.locator("b.lf-cluster")).to_have_text(cluster)
        expect(nclusters.locator(".lf-member-item").first).to_be_visible()
        expect(nclusters.locator(".lf-map-key")).to_contain_text(f"outlined: cluster c{cluster}")

        # Click a member neuron (the second, so not just the cluster's default): the neuron views follow.
        members = nclusters.locator(".lf-member-item")
        member = members.nth(1) if members.count() > 1 else members.first
        name = member.locator(".lf-bar-label").inner_text().strip()
        assert NEURON_ID.fullmatch(name), f"member neuron label is not L<layer>/N<index>: {name!r}"
        member.click()
        expect(member).to_have_class(SELECTED)
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)
        expect(neurons.locator(".lf-layer")).to_have_text(NEURON_ID.fullmatch(name)[1])
        expect(top.locator("b.lf-neuron")).to_have_text(name)
        expect(nclusters.locator(".lf-focused-neuron")).to_have_text(name)  # the cross on the map
        no_errors(page, expect, js_errors)
        _shot(page, "-neuron")

        # Click a text legend entry (a cluster of at least two texts, so that it can be cross-fitted):
        # difference describes that cluster against the rest.
        sizes = {g: texts_map["groups"].count(g) for g in range(K_TEXT)}
        group = next((g for g in reversed(range(K_TEXT)) if sizes[g] >= 2), None)
        assert group is not None, f"no text cluster of two or more texts: {sizes}"
        tclusters.locator(f'.lf-legend-item[data-group="{group}"]').click()
        expect(tclusters.locator(f'.lf-legend-item[data-group="{group}"]')).to_have_class(SELECTED)
        expect(tclusters.locator("b.lf-cluster")).to_have_text(str(group))
        _check_difference(diff, expect, f"cluster {group}", sizes[group])
        no_errors(page, expect, js_errors)
        _shot(page, "-legend")

        # Click a point of another cluster where Bokeh draws it: the text view moves to that sample,
        # the map marks it and difference describes its cluster.
        current = text.locator(".lf-sample-head b").first.inner_text().strip()
        texts_map = _figure(page, "lf-texts-map", tclusters)
        drawn = set(_inside(texts_map))
        j = next(j for j, (x, y) in enumerate(zip(texts_map["px"], texts_map["py"]))
                 if texts_map["groups"][j] != group and str(texts_map["rows"][j]) != current and (x, y) in drawn
                 and sizes[texts_map["groups"][j]] >= 2
                 and min(abs(x - x2) + abs(y - y2) for k, (x2, y2) in enumerate(zip(texts_map["px"], texts_map["py"])) if k != j) > 6)
        key, point_group = texts_map["rows"][j], texts_map["groups"][j]
        page.mouse.click(texts_map["px"][j], texts_map["py"][j])
        expect(text.locator(".lf-sample-head b").first).to_have_text(str(key))
        expect(tclusters.locator(".lf-focused-text")).to_have_text(f"#{key}")
        expect(tclusters.locator("b.lf-cluster")).to_have_text(str(point_group))
        _check_difference(diff, expect, f"cluster {point_group}", sizes[point_group])
        no_errors(page, expect, js_errors)
        _shot(page, "-point")

        # Lasso the left half of the text map: the server's selection is Bokeh's own hit test, and
        # difference describes exactly those texts against the rest.
        _lasso(page, tclusters, _figure(page, "lf-texts-map", tclusters), (0.02, 0.5), (0.02, 0.98))
        selection = tclusters.locator(".lf-selection")
        expect(selection).to_be_visible()
        chosen = _figure(page, "lf-texts-map")["selected"]
        assert 0 < len(chosen) < N_TEXTS, chosen
        expect(selection).to_have_attribute("data-texts", ",".join(map(str, chosen)))
        _check_difference(diff, expect, f"the {len(chosen)} selected text{'s' if len(chosen) != 1 else ''}", len(chosen))
        expect(tclusters.locator(".lf-clear-selection button")).to_be_visible()
        no_errors(page, expect, js_errors)
        _shot(page, "-lasso")

        # Lasso the right half of the neuron map: the topic enrichment of the neurons it caught.
        _lasso(page, nclusters, _figure(page, "lf-neurons-map", nclusters), (0.5, 0.98), (0.02, 0.98))
        box = nclusters.locator(".lf-enrichment-box")
        expect(box.locator(".lf-selected-count")).to_be_visible()
        caught = _figure(page, "lf-neurons-map")["selected"]
        assert caught, "the lasso caught no neuron"
        expect(box.locator(".lf-selected-count")).to_have_text(str(len(caught)))
        expect(nclusters.locator(".lf-selection")).to_contain_text(f"{len(caught)} selected neuron")
        expect(box.locator(".lf-topic-effect")).to_have_count(4)  # one per topic of the spec
        expect(box.locator(".lf-enrichment")).to_contain_text(re.compile(r"enriched for|not enriched for any topic"))
        no_errors(page, expect, js_errors)
        _shot(page, "-neuron-lasso")
        page.set_viewport_size({"width": 1920, "height": 1080})
        page.wait_for_timeout(1500)  # the maps re-fit their cards
        _shot(page, "-1920")

        # "clear selection" gives the difference view back to the focused cluster.
        tclusters.locator(".lf-clear-selection button").click()
        expect(tclusters.locator(".lf-selection")).to_have_count(0)
        _check_difference(diff, expect, f"cluster {point_group}", sizes[point_group])
        page.set_viewport_size({"width": 1400, "height": 1000})

        # Click a representative text (another sample): the text view follows.
        samples = diff.locator(".lf-sample").evaluate_all("rows => rows.map(r => r.dataset.sample)")
        other = next((s for s in samples if s != str(key)), None)
        if other is not None:  # a cluster too small to cross-fit lists none
            diff.locator(f'.lf-sample[data-sample="{other}"]').first.click()
            expect(text.locator(".lf-sample-head b").first).to_have_text(other)
            expect(tclusters.locator(".lf-focused-text")).to_have_text(f"#{other}")
            expect(neurons.locator("b.lf-neuron")).to_have_text(name)  # the neuron focus survives
        no_errors(page, expect, js_errors)
        _shot(page, "-text")
    finally:
        context.close()
