"""browse.html in headless Chromium (Debian ``chromium``, driven over ``--remote-debugging-pipe``): it shows
the scenes a page at a time, search by caption filters them, and nothing logs an error."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from data_cards.chromium import CHROMIUM, Chromium
from data_cards.release import build_release
from data_cards.synthetic import write_scenes_folder

N_SCENES = 60  # more than two pages of 24


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = write_scenes_folder(tmp_path_factory.mktemp("browse") / "out", N_SCENES)
    build_release(out)
    return out


def test_browser_shows_pages_of_scenes_and_searches(dataset, tmp_path):
    assert os.access(CHROMIUM, os.X_OK), "run `make sysdeps` (apt-get install chromium)"
    page = dataset / "card" / "browse.html"
    browser = Chromium(tmp_path / "profile")
    try:
        browser.call("Page.navigate", session=True, url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.js("document.querySelectorAll('article.scene').length") == 24
        assert browser.js("document.getElementById('count').textContent") == f"{N_SCENES} of {N_SCENES} scenes"
        first = browser.js("document.querySelector('article.scene h2').textContent")
        assert first == "v0123456789abcdef0123-c0000"
        assert "</script> stands by the harbour" in browser.js("document.querySelector('.caption').textContent")
        assert browser.js("document.querySelector('article.scene img').naturalWidth") > 0  # contact sheet loads
        browser.js("document.getElementById('next').click()")
        assert browser.js("document.querySelector('article.scene h2').textContent").endswith("-c0024")

        browser.js("document.getElementById('q').focus()")
        browser.call("Input.insertText", session=True, text="sailor LIGHTHOUSE")
        deadline = time.monotonic() + 10
        while browser.js("document.querySelectorAll('article.scene').length") != 3:
            assert time.monotonic() < deadline, "search did not filter the scenes"
            time.sleep(0.1)
        ids = browser.js("[...document.querySelectorAll('article.scene h2')].map(e => e.textContent)")
        assert [i.rsplit("-c", 1)[1] for i in ids] == ["0007", "0027", "0047"]
        assert browser.js("document.getElementById('page').textContent") == "page 1 / 1"

        shot = browser.call("Page.captureScreenshot", session=True, format="png")
        screenshot = tmp_path / "browse.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        assert Image.open(screenshot).size[0] > 0 and screenshot.stat().st_size > 10_000
        assert browser.errors() == []
    finally:
        browser.close()
