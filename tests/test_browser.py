"""browse.html in headless Chromium (Debian ``chromium``, driven over ``--remote-debugging-pipe``): it shows
the scenes a page at a time, search by caption filters them, a shot's H.264 clip plays with its keyframe as
poster, and nothing logs an error."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from data_cards.release import build_release
from filmweaver_testing.chromium import CHROMIUM, Chromium
from filmweaver_testing.scenes_folder import write_scenes_folder

N_SCENES = 60  # more than two pages of 24
CLIP_SCENES = 3  # scenes 0, 20 and 40 get playable clips


def h264_clip(path: Path) -> bytes:
    """A 3 s, 96x54 H.264 MP4 as the curation exports them (yuv420p), made with imageio-ffmpeg's binary."""
    import imageio_ffmpeg

    src = "testsrc=size=96x54:rate=12:duration=3"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", src, "-c:v", "libx264"]
    subprocess.run([*cmd, "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)], check=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browse")
    out = write_scenes_folder(tmp / "out", N_SCENES, clip=h264_clip(tmp / "clip.mp4"))
    return build_release(out, clip_scenes=CLIP_SCENES).root


def test_browser_shows_pages_of_scenes_and_searches(dataset, tmp_path):
    assert os.access(CHROMIUM, os.X_OK), "run `make sysdeps` (apt-get install chromium)"
    page = dataset / "browse.html"
    browser = Chromium(tmp_path / "profile")
    try:
        browser.call("Page.navigate", session=True, url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.js("document.querySelectorAll('article.scene').length") == 24
        assert browser.js("document.getElementById('count').textContent") == f"{N_SCENES} of {N_SCENES} scenes"
        first = browser.js("document.querySelector('article.scene h2').textContent")
        assert first == "v0123456789abcdef0123-c0000"
        assert "</script> stands by the harbour" in browser.js("document.querySelector('.caption').textContent")
        # scene 0 plays its shots (keyframes as posters); scene 1 has no clips and shows its contact sheet
        assert browser.js("document.querySelectorAll('article.scene')[0].querySelectorAll('video').length") == 2
        assert browser.js("document.querySelectorAll('article.scene')[1].querySelectorAll('video').length") == 0
        assert browser.js("document.querySelectorAll('article.scene')[1].querySelector('img').naturalWidth") > 0
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

        browser.js("location.hash = ''; document.getElementById('q').value = ''; search()")
        assert browser.js("document.querySelectorAll('video').length") == 2 * 2  # scenes 0 and 20 on page 1
        shot = browser.call("Page.captureScreenshot", session=True, format="png")
        screenshot = tmp_path / "browse.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        assert Image.open(screenshot).size[0] > 0 and screenshot.stat().st_size > 10_000
        assert browser.errors() == []
    finally:
        browser.close()


def test_browser_plays_a_shot_clip(dataset, tmp_path):
    """The first shot's clip plays in Chromium: it loads, its poster is the keyframe, currentTime advances."""
    clips = sorted((dataset / "browse" / "clips").iterdir())
    assert len(clips) == CLIP_SCENES * 2 and len(list((dataset / "browse" / "posters").iterdir())) == len(clips)
    browser = Chromium(tmp_path / "profile")
    try:
        browser.call("Page.navigate", session=True, url=(dataset / "browse.html").as_uri())
        browser.wait_for("Page.loadEventFired")
        video = "document.querySelector('article.scene video')"
        assert browser.js(f"{video}.poster").endswith("/browse/posters/v0123456789abcdef0123-c0000.000.jpg")
        assert browser.js(f"{video}.canPlayType('video/mp4; codecs=\"avc1.64000a\"')") != ""
        browser.js(
            f"window.played = null; {video}.play().then(() => window.played = 'ok', e => window.played = String(e))"
        )
        deadline = time.monotonic() + 20
        while not (browser.js(f"{video}.currentTime") or 0) > 0.3:
            assert browser.js("window.played") in (None, "ok"), browser.js("window.played")
            assert browser.js(f"{video}.error && {video}.error.message") in (None, False, ""), "decode error"
            assert time.monotonic() < deadline, "the clip did not play"
            time.sleep(0.1)
        assert browser.js(f"{video}.videoWidth") == 96 and browser.js("window.played") == "ok"
        assert browser.errors() == []
    finally:
        browser.close()
