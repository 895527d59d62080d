"""Browser test of the clustering views: `lensframe serve` on tests/specs/smollm2_clusters.yaml (warm:
the store is computed first), driven by Playwright in Debian's Chromium.

One walk through the linked views: a cluster clicked in neuron_clusters lists its member neurons; a
member neuron clicked there moves the neurons view and top_examples to that layer.index; a legend
entry and a point clicked in text_clusters make the difference view describe that cluster against
the rest; a representative text clicked in the difference view moves the text view to it. No view
shows an error card at any point.

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
SELECTED = re.compile(r"\blf-selected\b")


@pytest.fixture(scope="module")
def clusters_server(smollm2_available, tmp_path_factory):
    with serving_computed(SPEC, smollm2_available, tmp_path_factory) as url:
        yield url


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-clusters{name}.png"), full_page=True)


def _check_difference(diff, tclusters, expect, cluster: int) -> None:
    """The difference view describes `cluster` against the rest: the same texts as the map's cluster,
    terms (or a clear none), a separability figure (or a clear n/a) and representative texts."""
    expect(diff.locator(".lf-group-a")).to_have_text(f"cluster {cluster}")
    expect(diff.locator(".lf-group-b")).to_have_text("the rest")
    groups = dict(tclusters.locator(".lf-point").evaluate_all("cs => cs.map(c => [c.dataset.key, c.dataset.group])"))
    n_in = sum(1 for g in groups.values() if g == str(cluster))
    expect(diff.locator(".lf-diff-head")).to_contain_text(f"cluster {cluster} ({n_in} texts) vs the rest ({len(groups) - n_in} texts)")
    lists = diff.locator(".lf-samples")
    expect(lists).to_have_count(2)
    for side, inside in ((0, True), (1, False)):
        keys = lists.nth(side).locator(".lf-sample").evaluate_all("rows => rows.map(r => r.dataset.sample)")
        wrong = [k for k in keys if (groups[k] == str(cluster)) != inside]
        assert not wrong, f"representative texts of side {'ab'[side]} outside it (cluster {cluster}): {wrong}"
    head = diff.locator(".lf-diff-head")
    expect(head).to_contain_text(re.compile(r"cross-validated accuracy|separability: n/a"))
    for side in ("a", "b"):
        terms = diff.locator(f".lf-terms-{side}")
        expect(terms).to_be_visible()
        assert terms.locator(".lf-term").count() > 0 or "none at this size" in terms.inner_text(), (
            f"side {side} lists neither terms nor 'none at this size': {terms.inner_text()!r}")
    if "separability: n/a" in diff.locator(".lf-diff-head").inner_text():
        return  # too few texts to cross-fit: no representative texts either (the lists stay empty)
    expect(diff.locator(".lf-sample").first).to_be_visible()
    for side in range(2):
        assert lists.nth(side).locator(".lf-sample").count() > 0, f"no representative texts on side {'ab'[side]}"


def test_cluster_views_follow_each_other(clusters_server, browser, expect):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        page.goto(clusters_server)
        text, tclusters, diff = page.locator(".lf-card-text"), page.locator(".lf-card-tclusters"), page.locator(".lf-card-diff")
        nclusters, neurons, top = page.locator(".lf-card-nclusters"), page.locator(".lf-card-neurons"), page.locator(".lf-card-top")
        expect(page.locator(".lf-title")).to_have_text(TITLE)
        expect(text.locator(".lf-token").first).to_be_visible()
        expect(tclusters.locator(".lf-point").first).to_be_attached()
        expect(tclusters.locator(".lf-legend-item")).to_have_count(K_TEXT)
        expect(tclusters.locator(".lf-ari")).to_have_text(re.compile(r"^-?\d\.\d{3}$"))
        expect(nclusters.locator(".lf-point").first).to_be_attached()
        expect(nclusters.locator(".lf-cluster-item").first).to_be_visible()
        expect(nclusters.locator(".lf-member-item")).to_have_count(0)  # no cluster focused yet
        expect(diff.locator(".lf-hint")).to_be_visible()  # no text cluster yet: difference asks for one
        expect(top.locator(".lf-hint")).to_be_visible()  # no neuron yet: top_examples asks for one
        no_errors(page, expect, js_errors)
        _shot(page, "-start")

        # Click a cluster row in neuron_clusters: its member neurons are listed.
        rows = nclusters.locator(".lf-cluster-item")
        keys = rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
        assert len(keys) == 4, f"neuron_clusters lists {len(keys)} clusters, the spec's k is 4: {keys}"
        cluster = keys[0]
        nclusters.locator(f'.lf-cluster-item[data-key="{cluster}"]').click()
        expect(nclusters.locator(f'.lf-cluster-item[data-key="{cluster}"]')).to_have_class(SELECTED)
        expect(nclusters.locator("b.lf-cluster")).to_have_text(cluster)
        expect(nclusters.locator(".lf-member-item").first).to_be_visible()
        expect(nclusters.locator(f'.lf-legend-item[data-group="{cluster}"]')).to_have_class(SELECTED)
        no_errors(page, expect, js_errors)

        # Click a member neuron (the second, so not just the cluster's default): the neuron views follow.
        members = nclusters.locator(".lf-member-item")
        member = members.nth(1) if members.count() > 1 else members.first
        name = member.locator(".lf-bar-label").inner_text().strip()
        assert re.fullmatch(r"\d+\.\d+", name), f"member neuron label is not layer.index: {name!r}"
        layer = name.split(".")[0]
        member.click()
        expect(member).to_have_class(SELECTED)
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)
        expect(neurons.locator(".lf-layer")).to_have_text(layer)
        expect(top.locator("b.lf-neuron")).to_have_text(name)
        expect(top.locator(".lf-example").first).to_be_visible()
        selected_point = nclusters.locator(".lf-point.lf-selected")
        expect(selected_point).to_have_count(1)  # the neuron is marked on the map
        no_errors(page, expect, js_errors)
        _shot(page, "-neuron")

        # Click a legend entry in text_clusters (a cluster of at least two texts, so that it can be
        # cross-fitted): difference describes that cluster against the rest.
        groups = tclusters.locator(".lf-point").evaluate_all("cs => cs.map(c => c.dataset.group)")
        sizes = {g: groups.count(str(g)) for g in range(K_TEXT)}
        group = next((g for g in reversed(range(K_TEXT)) if sizes[g] >= 2), None)
        assert group is not None, f"no text cluster of two or more texts: {sizes}"
        tclusters.locator(f'.lf-legend-item[data-group="{group}"]').click()
        expect(tclusters.locator(f'.lf-legend-item[data-group="{group}"]')).to_have_class(SELECTED)
        expect(tclusters.locator("b.lf-cluster")).to_have_text(str(group))
        _check_difference(diff, tclusters, expect, group)
        no_errors(page, expect, js_errors)
        _shot(page, "-legend")

        # Click a point of another cluster: the text view moves to that sample, difference to its cluster.
        points = tclusters.locator(".lf-point").evaluate_all(
            "cs => cs.map(c => [c.dataset.key, c.dataset.group])")
        current = text.locator(".lf-sample-head b").first.inner_text().strip()
        key, point_group = next(((k, g) for k, g in points if g != str(group) and k != current), points[0])
        assert key != current, f"no point outside cluster {group} and sample {current}: {points}"
        # dispatched, not clicked at coordinates: circles of a 24-point map may overlap
        tclusters.locator(f'.lf-point[data-key="{key}"]').dispatch_event("click")
        expect(text.locator(".lf-sample-head b").first).to_have_text(key)
        expect(tclusters.locator(f'.lf-point[data-key="{key}"]')).to_have_class(SELECTED)
        expect(tclusters.locator("b.lf-cluster")).to_have_text(point_group)
        _check_difference(diff, tclusters, expect, int(point_group))
        no_errors(page, expect, js_errors)
        _shot(page, "-point")

        # Click a representative text (another sample): the text view follows.
        samples = diff.locator(".lf-sample").evaluate_all("rows => rows.map(r => r.dataset.sample)")
        other = next((s for s in samples if s != key), None)
        assert other is not None, f"the difference view lists no representative text besides {key}: {samples}"
        diff.locator(f'.lf-sample[data-sample="{other}"]').first.click()
        expect(text.locator(".lf-sample-head b").first).to_have_text(other)
        expect(text.locator(f'.lf-sample[data-sample="{other}"]')).to_have_class(SELECTED)
        # (difference reads only text_cluster, so its own list keeps the old highlight: not checked)
        expect(tclusters.locator(f'.lf-point[data-key="{other}"]')).to_have_class(SELECTED)
        expect(neurons.locator("b.lf-neuron")).to_have_text(name)  # the neuron focus survives
        no_errors(page, expect, js_errors)
        _shot(page, "-text")
    finally:
        context.close()
