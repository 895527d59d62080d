"""Screenshots of example specs as a user first sees them, for the visual review of the views.

    python scripts/screenshots.py [SPEC ...] [--sizes 1400x1000,1920x1080] [--out tests/artifacts/screens]
                                  [--cache-dir /tmp/lf-screens] [--click]

Each spec (default: every specs/*.yaml) is served with `lensframe serve` in a subprocess, opened in
Debian's Chromium once the dataset passes are done (no card says "waiting"), and photographed at
each size: the viewport, as it opens (<spec>-<W>x<H>.png), and with --click also after a click on
the fourth token of the text view (<spec>-<W>x<H>-click.png). Cards showing an error are listed.
Stores are kept under --cache-dir, so a second run starts warm.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(spec: Path, cache: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lensframe", "serve", str(spec), "--port", str(port),
                             "--cache-dir", str(cache)], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 1800
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name}: the server exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=120)
            return proc, url
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{spec.name}: the server did not start")


def shoot(page, url: str, path: Path, size: tuple[int, int], click: bool) -> list[str]:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.goto(url, timeout=600_000)
    page.locator(".lf-card").first.wait_for(timeout=600_000)
    deadline = time.time() + 1800  # the cards' text is in shadow roots: ask the locators, which see into them
    while page.locator(".lf-waiting").count() and time.time() < deadline:
        page.wait_for_timeout(2000)
    page.wait_for_timeout(2500)  # plots draw after their data arrives
    page.screenshot(path=str(path))
    shots = [path.name]
    if click and page.locator(".lf-card-text .lf-token").count() > 3:
        page.locator(".lf-card-text .lf-token").nth(3).click()
        page.wait_for_timeout(2500)
        clicked = path.with_name(path.stem + "-click.png")
        page.screenshot(path=str(clicked))
        shots.append(clicked.name)
    errors = page.locator(".lf-error").all_inner_texts()
    return shots + [f"ERROR in {path.stem}: {e[:200]}" for e in errors]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="*", type=Path)
    ap.add_argument("--sizes", default="1400x1000,1920x1080")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "artifacts" / "screens")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/lf-screens"))
    ap.add_argument("--click", action="store_true", help="also photograph after clicking a token")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    specs = args.specs or sorted((ROOT / "specs").glob("*.yaml"))
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for spec in specs:
            proc, url = serve(spec.resolve(), args.cache_dir / spec.stem, args.out / f"{spec.stem}.log")
            try:
                page = browser.new_page()
                page.on("pageerror", lambda e, s=spec.stem: print(f"{s}: page error: {e}", flush=True))
                for size in sizes:
                    for line in shoot(page, url, args.out / f"{spec.stem}-{size[0]}x{size[1]}.png", size, args.click):
                        print(line, flush=True)
                page.close()
            finally:
                proc.terminate()
                proc.wait(30)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
