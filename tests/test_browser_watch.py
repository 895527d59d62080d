"""Browser test of `lensframe serve SPEC --watch` on the small SmolLM2 spec, in Debian's Chromium: the
spec file is edited on disk while a page is open. A new title shows in the page and its tab with the
session's focus kept; a broken edit shows `lensframe validate`'s message (file:line) in a banner above
the last valid dashboard, which still answers clicks; a fix clears it; a new view computes its
dataset pass with progress in the sidebar, then draws. Screenshots in tests/artifacts/.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from lensframe.server.process import ServerDidNotStart, serve_process

from .test_browser import ROOT, SPEC, START_TIMEOUT_S, _open, artifacts, browser, expect  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TITLE = "lensframe integration"


@pytest.fixture
def watched(smollm2_board, smollm2_cache, tmp_path):
    """A copy of the small spec, served with --watch from the session's warm store."""
    del smollm2_board  # the store is computed before the server starts
    spec = tmp_path / "spec.yaml"
    shutil.copy(SPEC, spec)
    try:
        with serve_process(spec, "--cache-dir", str(smollm2_cache), "--watch", log_path=tmp_path / "serve.log",
                           cwd=ROOT, wait_s=START_TIMEOUT_S) as server:
            yield spec, server
    except ServerDidNotStart as err:
        pytest.fail(str(err))


def save(spec, text: str) -> None:
    """Write as editors that save by rename do (a new file moved over the old one)."""
    tmp = spec.with_name(spec.name + ".swp")
    tmp.write_text(text)
    tmp.replace(spec)


def validate_message(spec) -> str:
    out = subprocess.run([sys.executable, "-m", "lensframe", "validate", str(spec)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2, out
    return out.stderr.strip()


def test_edits_reach_the_open_page(watched, browser, expect, artifacts):
    spec, server = watched
    original = spec.read_text()
    context, page, errors = _open(browser, server.url, expect)
    try:
        lens = page.locator(".lf-card-lens")
        page.locator('.lf-card-text .lf-token[data-position="5"]').click()
        expect(lens.locator(".lf-position")).to_have_text("5")
        expect(page.locator(".lf-focus-state .lf-focus-position")).to_contain_text("5")

        # a new title: the header and the tab follow; the focus stays where it was
        save(spec, original.replace(f"title: {TITLE}", "title: Watched and edited"))
        expect(page.locator(".lf-title")).to_have_text("Watched and edited")
        expect(page).to_have_title("Watched and edited")
        expect(lens.locator(".lf-position")).to_have_text("5")
        expect(page.locator(".lf-card-attn .lf-position")).to_have_text("5")
        expect(page.locator(".lf-watch-error")).to_be_hidden()
        page.screenshot(path=str(artifacts / "browser-watch-title.png"))

        # a broken edit: the banner says what `lensframe validate` says, the dashboard stays usable
        broken = original.replace("metric: prob, top_k: 5", "metric: prob, top_k: 500")
        assert broken != original
        save(spec, broken)
        message = validate_message(spec)
        line = next(i for i, row in enumerate(broken.splitlines(), 1) if "top_k: 500" in row)
        assert f"spec.yaml:{line}:" in message, message
        banner = page.locator(".lf-watch-error-text")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text(message)
        expect(page.locator(".lf-title")).to_have_text("Watched and edited")  # the last valid version
        page.locator('.lf-card-text .lf-token[data-position="3"]').click()
        expect(lens.locator(".lf-position")).to_have_text("3")
        expect(page.locator(".lf-card-attn .lf-position")).to_have_text("3")
        page.screenshot(path=str(artifacts / "browser-watch-error-1400x1000.png"))
        # a page opened while the spec is broken shows the banner too
        ctx2, page2, errors2 = _open(browser, server.url, expect, size=(1920, 1080))
        try:
            expect(page2.locator(".lf-watch-error-text")).to_contain_text(f"spec.yaml:{line}:")
            page2.screenshot(path=str(artifacts / "browser-watch-error-1920x1080.png"))
            assert not errors2, errors2
        finally:
            ctx2.close()

        # fixed: the banner goes, the page shows the saved spec
        save(spec, original)
        expect(page.locator(".lf-watch-error")).to_be_hidden()
        expect(page.locator(".lf-title")).to_have_text(TITLE)
        expect(lens.locator(".lf-position")).to_have_text("3")
        expect(page.locator(".lf-error")).to_have_count(0)
        assert not errors, f"JavaScript errors in the page: {errors}"
        log = server.log()
        assert "does not check" in log and log.count("watch: serving the new version") == 2, log
    finally:
        context.close()


def test_a_new_view_computes_with_progress_in_the_page(watched, browser, expect, artifacts):
    spec, server = watched
    original = spec.read_text()
    context, page, errors = _open(browser, server.url, expect, size=(1920, 1080))
    try:
        page.locator('.lf-card-text .lf-token[data-position="4"]').click()
        expect(page.locator(".lf-card-lens .lf-position")).to_have_text("4")
        edited = original.replace("  attn: {type: attention}\n",
                                  "  attn: {type: attention}\n  ranks: {type: logit_lens, metric: rank, top_k: 3}\n")
        edited = edited.replace("  lens_kl attn\n", "  lens_kl attn\n  ranks ranks\n")
        assert edited.count("ranks") == 3
        save(spec, edited)
        expect(page.locator(".lf-card-ranks")).to_be_visible()
        expect(page.locator(".lf-progress-text")).to_contain_text("dataset pass on main")
        expect(page.locator(".lf-card-ranks .lf-waiting")).to_be_visible()
        page.screenshot(path=str(artifacts / "browser-watch-computing.png"))
        expect(page.locator(".lf-card-ranks .lf-cell").first).to_be_visible(timeout=600_000)
        expect(page.locator(".lf-card-ranks .lf-position")).to_have_text("4")  # the focus carried over
        expect(page.locator(".lf-progress-box")).to_be_hidden()
        expect(page.locator(".lf-error")).to_have_count(0)
        page.screenshot(path=str(artifacts / "browser-watch-new-view.png"))
        assert not errors, f"JavaScript errors in the page: {errors}"
        assert re.search(r"1 result\(s\) to compute \(logit_lens\(", server.log()), server.log()
    finally:
        context.close()
