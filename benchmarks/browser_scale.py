"""Scene browser at scale: does ``browse.html`` stay usable with 10,000 scenes?

Builds the release of a small and a large scenes folder (``filmweaver_testing.scenes_folder``, two shots per
scene), opens each ``browse.html`` in headless Chromium and times, inside the page: the load until the first page
of scenes is shown, turning to the next page, and a caption search (typed text until the filtered list is shown).
Reports the large/small ratios, the size of ``browse/scenes.js`` and the page's JS heap.

    .venv/bin/python benchmarks/browser_scale.py [--small 100] [--large 10000]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from data_cards.release import build_release
from filmweaver_testing.chromium import Chromium
from filmweaver_testing.scenes_folder import write_scenes_folder


def wait_until(browser: Chromium, expression: str, timeout: float = 60.0) -> float:
    """Seconds until ``expression`` is true in the page (polled every 5 ms)."""
    t0 = time.perf_counter()
    while not browser.js(expression):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"timed out waiting for {expression}")
        time.sleep(0.005)
    return time.perf_counter() - t0


def measure(root: Path, n: int) -> dict[str, float]:
    out = write_scenes_folder(root / f"scenes{n}", n)
    t0 = time.perf_counter()
    release = build_release(out)
    build_s = time.perf_counter() - t0
    browser = Chromium(root / f"profile{n}")
    try:
        t0 = time.perf_counter()
        browser.call("Page.navigate", session=True, url=release.browser.as_uri())
        browser.wait_for("Page.loadEventFired")
        wait_until(browser, "document.querySelectorAll('article.scene').length === 24")
        load_s = time.perf_counter() - t0
        assert browser.js("document.getElementById('count').textContent") == f"{n} of {n} scenes"

        browser.js("document.getElementById('next').click()")
        next_s = wait_until(browser, "document.querySelector('article.scene h2').textContent.endsWith('-c0024')")

        browser.js("document.getElementById('q').focus()")
        t0 = time.perf_counter()
        browser.call("Input.insertText", session=True, text="lighthouse")
        expected = f"{len(range(7, n, 20))} of {n} scenes"
        wait_until(browser, f"document.getElementById('count').textContent === {expected!r}")
        search_s = time.perf_counter() - t0
        browser.call("Performance.enable", session=True)
        metrics = {m["name"]: m["value"] for m in browser.call("Performance.getMetrics", session=True)["metrics"]}
        if browser.errors():
            raise RuntimeError(f"page errors: {browser.errors()}")
    finally:
        browser.close()
    return {
        "build_s": build_s,
        "load_s": load_s,
        "next_s": next_s,
        "search_s": search_s,
        "scenes_js_mb": (release.root / "browse" / "scenes.js").stat().st_size / 2**20,
        "heap_mb": metrics["JSHeapUsedSize"] / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=10_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        small, large = measure(Path(tmp), args.small), measure(Path(tmp), args.large)
    print("search includes the page's 150 ms typing debounce")
    print(f"| measure | {args.small} scenes | {args.large} scenes | ratio |")
    print("|---|---:|---:|---:|")
    for key, label in [
        ("build_s", "release build, s"),
        ("load_s", "open until the first page shows, s"),
        ("next_s", "next page, s"),
        ("search_s", "search 'lighthouse' until filtered, s"),
        ("scenes_js_mb", "browse/scenes.js, MiB"),
        ("heap_mb", "page JS heap, MiB"),
    ]:
        print(f"| {label} | {small[key]:.3f} | {large[key]:.3f} | {large[key] / small[key]:.1f}x |")


if __name__ == "__main__":
    main()
