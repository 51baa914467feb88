"""browse.html in headless Chromium (Debian ``chromium``, driven over ``--remote-debugging-pipe``): it shows
the scenes a page at a time, search by caption filters them, and nothing logs an error."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import select
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from curation.records import SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id, write_manifest
from data_cards.release import build_release

CHROMIUM = "/usr/bin/chromium"
N_SCENES = 60  # more than two pages of 24


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 36), color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A conforming curated folder of N_SCENES two-shot scenes, written with TarWriter and write_manifest."""
    out = tmp_path_factory.mktemp("browse") / "out"
    (out / "shards").mkdir(parents=True)
    (out / "manifests").mkdir()
    vid = "v0123456789abcdef0123"
    video = VideoRecord(vid, "/films/a.mp4", duration_s=4.0 * N_SCENES, fps_num=24, width=64, height=36)
    shots, scenes = [], []
    with wds.TarWriter(str(out / "shards" / "scenes-000000.tar")) as sink:
        for c in range(N_SCENES):
            pair = [
                ShotRecord(shot_id(vid, 2 * c + j), vid, 2 * c + j, 0, 48, 4.0 * c + 2 * j, 4.0 * c + 2 * j + 2)
                for j in range(2)
            ]
            sid = scene_id(vid, c)
            for s in pair:
                s.scene_id = sid
            shots += pair
            word = "lighthouse" if c % 20 == 7 else "harbour"
            record = {
                "scene_id": sid,
                "caption_status": "ok",
                "video": {"uri": video.uri},
                "characters": [{"id": "C1", "label": "sailor", "hair": "red hair"}],
                "setting": {"place": f"a {word}"},
                "shots": [
                    {
                        "shot_id": s.shot_id,
                        "start_s": s.start_s,
                        "end_s": s.end_s,
                        "verdict": "accurate",
                        "caption": f"a sailor with red hair </script> stands by the {word}, shot {j} of scene {c}",
                    }
                    for j, s in enumerate(pair)
                ],
            }
            sample = {"__key__": sid, "json": json.dumps(record).encode(), "clip.npy": np.zeros((2, 4), np.float16)}
            for j in range(2):
                sample[f"{j:03d}.jpg"] = _jpeg((4 * c, 100 + 50 * j, 200))
                sample[f"{j:03d}.mp4"] = b"not decoded by the browser"
            sink.write(sample)
            scenes.append(
                SceneRecord(
                    sid,
                    vid,
                    c,
                    [s.shot_id for s in pair],
                    pair[0].start_s,
                    pair[1].end_s,
                    caption_status="ok",
                    n_characters=1,
                    shard="scenes-000000.tar",
                )
            )
    write_manifest([video], VideoRecord, str(out / "manifests" / "videos.parquet"))
    write_manifest(shots, ShotRecord, str(out / "manifests" / "shots.parquet"))
    write_manifest(scenes, SceneRecord, str(out / "manifests" / "scenes.parquet"))
    build_release(out)
    return out


class Chromium:
    """Headless Chromium spoken to with the DevTools protocol over its pipe (fd 3 in, fd 4 out)."""

    def __init__(self, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def wire() -> None:
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(cmd_r)
        os.close(res_w)
        self._buf, self._id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._res_r], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "chromium did not answer in time"
            chunk = os.read(self._res_r, 1 << 16)
            assert chunk, "chromium closed its pipe"
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, timeout: float = 30.0, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def js(self, expression: str):
        reply = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return reply["result"].get("value")

    def errors(self) -> list[dict]:
        """Uncaught exceptions, console.error/assert calls and error log entries (failed loads) so far."""
        kinds = {
            "Runtime.exceptionThrown": lambda p: True,
            "Runtime.consoleAPICalled": lambda p: p.get("type") in ("error", "assert"),
            "Log.entryAdded": lambda p: p["entry"]["level"] == "error",
        }
        return [e for e in self.events if e.get("method") in kinds and kinds[e["method"]](e.get("params", {}))]

    def close(self) -> None:
        with contextlib.suppress(AssertionError):  # it may close its pipe before answering
            self.call("Browser.close", timeout=10)
        self.proc.wait(timeout=20)
        os.close(self._cmd_w)
        os.close(self._res_r)


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
