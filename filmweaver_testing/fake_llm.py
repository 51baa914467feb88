"""Local fake LLM servers for tests and benchmarks: the Gemini REST API and the OpenAI chat API.

Both bind 127.0.0.1 on a free port and serve from an aiohttp app on their own thread. They answer
caption and verification requests with schema-valid JSON built from the request (how many shots it
carries), add ``latency_s`` to every model call, count requests by endpoint in ``counts``, and play
scripted faults. Faults are queued per scene id (``add_faults("vX-c0001", "429", "missing_shot")``: the
next requests for that scene get them, in order) or for any request (``add_faults(None, ...)``).

Fault names: ``429``, ``500``, ``503``, ``400_echo_key`` (an error message quoting the API key sent),
``slow`` (answer after ``slow_s``), ``malformed`` (not JSON), ``missing_shot``, ``extra_shot``,
``unknown_character``, ``safety`` (prompt blocked) and, for verification requests, ``verify_wrong:I``,
``verify_fixed:I``, ``verify_vague:I`` (shot I judged wrong / refined / refined for vagueness).

Gemini endpoints: ``POST /{v}/models/{m}:generateContent``, the resumable upload
``POST /upload/{v}/files`` then ``POST`` to the returned ``X-Goog-Upload-URL``, ``GET /{v}/files/{id}``
(PROCESSING for ``file_processing_polls`` polls, then ACTIVE), ``POST /{v}/models/{m}:batchGenerateContent``
and ``GET /{v}/batches/{id}`` (RUNNING for ``batch_polls`` polls). OpenAI: ``POST .../chat/completions``.
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import json
import re
import threading
import time
import zlib
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any

import numpy as np
from aiohttp import web

from curation.records import SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id
from curation.stage import Keyframe, SceneUnit

_SCENE = re.compile(r"Scene (\S+?)[:.]?\s")
_SHOT = re.compile(r"^Shot (\d+):$")
TRANSIENT = {"429": (429, "RESOURCE_EXHAUSTED"), "500": (500, "INTERNAL"), "503": (503, "UNAVAILABLE")}


def caption_answer(shots: list[int], fault: str | None) -> dict[str, Any]:
    """A group-caption answer for ``shots``, optionally broken the way ``fault`` says."""
    captions = [
        {
            "shot": i,
            "caption": "{C1} speaks to {C2} across the kitchen table."
            if i % 2 == 0
            else "{C2} listens, then turns toward {C1} and nods.",
            "characters": ["C1", "C2"],
            "shot_type": "medium" if i % 2 == 0 else "close-up",
            "camera_movement": "static",
        }
        for i in shots
    ]
    if fault == "missing_shot" and captions:
        captions.pop()
    elif fault == "extra_shot":
        captions.append({**captions[-1], "shot": max(shots) + 1})
    elif fault == "unknown_character" and captions:
        captions[0]["caption"] = "{C9} walks in behind {C1}."
    return {
        "characters": [
            {
                "id": "C1",
                "label": "woman",
                "clothing": "green raincoat over a white shirt",
                "hair": "curly red shoulder-length hair",
                "age": "in her thirties",
                "distinguishing_features": "round glasses",
            },
            {
                "id": "C2",
                "label": "man",
                "clothing": "grey wool suit",
                "hair": "short black hair",
                "age": "in his fifties",
                "distinguishing_features": "",
            },
        ],
        "setting": {
            "place": "small apartment kitchen",
            "time_of_day": "evening",
            "lighting": "warm tungsten light",
            "style": "live-action drama",
        },
        "shots": captions,
    }


def verify_answer(shots: list[int], fault: str | None) -> dict[str, Any]:
    """A verification answer: every shot accurate unless ``fault`` names one (``verify_wrong:1``)."""
    verdicts = [{"shot": i, "verdict": "accurate", "problems": [], "refined_caption": ""} for i in shots]
    kind, _, arg = (fault or "").partition(":")
    target = next((v for v in verdicts if arg and v["shot"] == int(arg)), None)
    if target is not None and kind == "verify_wrong":
        target.update(verdict="wrong", problems=[{"kind": "hallucination", "detail": "no kitchen table in view"}])
    elif target is not None and kind in ("verify_fixed", "verify_vague"):
        problem = (
            {"kind": "vague", "detail": "something"}
            if kind == "verify_vague"
            else {
                "kind": "wrong-character",
                "detail": "{C2} is not in the shot",
            }
        )
        target.update(
            verdict="fixed", problems=[problem], refined_caption="{C1} pours tea into a blue cup by the window."
        )
    elif fault == "missing_shot" and verdicts:
        verdicts.pop()
    return {"shots": verdicts}


class _FakeServer:
    """aiohttp app on a thread; subclasses add routes and say how to read a request."""

    def __init__(self, latency_s: float = 0.0, slow_s: float = 5.0, api_key: str | None = None):
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.api_key = api_key
        self.counts: Counter = Counter()
        self.faults: dict[str | None, list[str]] = defaultdict(list)
        self.scenes_seen: Counter = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=type(self).__name__)
        self.port = 0

    # -- lifecycle
    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=1 << 30)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> _FakeServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> _FakeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting
    def add_faults(self, scene: str | None, *faults: str) -> None:
        """Queue ``faults`` for the next requests of ``scene`` (None: of any request)."""
        with self._lock:
            self.faults[scene].extend(faults)

    def _next_fault(self, scene: str | None) -> str | None:
        with self._lock:
            for key in (None, scene):
                if self.faults.get(key):
                    return self.faults[key].pop(0)
        return None

    async def _answer(self, texts: list[str], key: str) -> tuple[int, Any, str | None]:
        """(status, answer dict | error text | None for a block, fault) for one model call."""
        joined = "\n".join(texts)
        m = _SCENE.search(joined + " ")
        scene = m.group(1) if m else None
        self.scenes_seen[scene] += 1
        shots = [int(s.group(1)) for t in texts if (s := _SHOT.match(t.strip()))]
        fault = self._next_fault(scene)
        self.counts["faults"] += fault is not None
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
            if fault == "slow":
                await asyncio.sleep(self.slow_s)
        finally:
            self.in_flight -= 1
        if fault in TRANSIENT:
            return TRANSIENT[fault][0], f"fake {TRANSIENT[fault][1]}", fault
        if fault == "400_echo_key":
            return 400, f"API key not valid: {key}", fault
        if fault == "safety":
            return 200, None, fault
        if fault == "malformed":
            return 200, '{"characters": [ {"id": "C1", oops', fault
        is_verify = "Task: verify" in joined
        return 200, (verify_answer if is_verify else caption_answer)(shots, fault), fault


# ------------------------------------------------------------------------------------------------ Gemini


def _gemini_error(status: int, message: str) -> web.Response:
    names = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    body = {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}
    return web.json_response(body, status=status)


class FakeGemini(_FakeServer):
    """The Gemini Developer REST API subset google-genai uses for captioning."""

    def __init__(self, *args: Any, file_processing_polls: int = 1, batch_polls: int = 1, **kw: Any):
        super().__init__(*args, **kw)
        self.file_processing_polls = file_processing_polls
        self.batch_polls = batch_polls
        self.files: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/upload/{ver}/files", self._upload)
        app.router.add_post("/{ver}/models/{call}", self._model_call)
        app.router.add_get("/{ver}/files/{fid}", self._get_file)
        app.router.add_get("/{ver}/batches/{bid}", self._get_batch)

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return _gemini_error(400, "API key not valid. Please pass a valid API key.")
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        command = request.headers.get("X-Goog-Upload-Command", "")
        upload_id = request.query.get("upload_id")  # the session id authorizes the chunks, not the key
        if command == "start":
            if (bad := self._check_key(request)) is not None:
                return bad
            self.counts["upload_start"] += 1
            uid = str(next(self._ids))
            self.uploads[uid] = bytearray()
            ver = request.match_info["ver"]
            url = f"{self.url}/upload/{ver}/files?upload_id={uid}&upload_protocol=resumable"
            return web.json_response({}, headers={"X-Goog-Upload-URL": url, "X-Goog-Upload-Status": "active"})
        if upload_id not in self.uploads:
            return _gemini_error(404, "unknown upload")
        self.uploads[upload_id] += await request.read()
        if "finalize" not in command:
            self.counts["upload_chunk"] += 1
            return web.json_response({}, headers={"X-Goog-Upload-Status": "active"})
        self.counts["upload_finalize"] += 1
        data = self.uploads.pop(upload_id)
        fid = f"f{upload_id}"
        ver = request.match_info["ver"]
        self.files[fid] = {
            "name": f"files/{fid}",
            "uri": f"{self.url}/{ver}/files/{fid}",
            "mimeType": "video/mp4",
            "sizeBytes": str(len(data)),
            "state": "PROCESSING",
            "_polls": 0,
        }
        return web.json_response({"file": self._public(self.files[fid])}, headers={"X-Goog-Upload-Status": "final"})

    @staticmethod
    def _public(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if not k.startswith("_")}

    async def _get_file(self, request: web.Request) -> web.Response:
        self.counts["file_get"] += 1
        f = self.files.get(request.match_info["fid"])
        if f is None:
            return _gemini_error(404, "file not found")
        f["_polls"] += 1
        if f["_polls"] >= self.file_processing_polls:
            f["state"] = "ACTIVE"
        return web.json_response(self._public(f))

    def _texts(self, body: dict[str, Any]) -> tuple[list[str], str | None]:
        """The user texts of a generateContent body, and an error if a file part is not ACTIVE."""
        texts = []
        for content in body.get("contents", []):
            if content.get("role", "user") != "user":
                continue
            for part in content.get("parts", []):
                if "text" in part:
                    texts.append(part["text"])
                uri = part.get("fileData", {}).get("fileUri")
                if uri is not None:
                    f = self.files.get(uri.rsplit("/", 1)[-1])
                    if f is None or f["state"] != "ACTIVE":
                        return texts, f"file {uri} is not ACTIVE"
        return texts, None

    async def _generate(self, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        texts, file_error = self._texts(body)
        if file_error:
            return 400, {"error": {"code": 400, "message": file_error, "status": "FAILED_PRECONDITION"}}
        status, answer, fault = await self._answer(texts, key)
        if status != 200:
            return status, {"error": {"code": status, "message": answer, "status": "ERROR"}}
        n_media = sum(1 for t in texts if _SHOT.match(t.strip()))
        usage = {"promptTokenCount": 200 + 330 * n_media}
        if answer is None:
            return 200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage, "modelVersion": "fake"}
        text = answer if isinstance(answer, str) else json.dumps(answer)
        usage["candidatesTokenCount"] = len(text) // 4
        usage["totalTokenCount"] = usage["promptTokenCount"] + usage["candidatesTokenCount"]
        cand = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
        return 200, {"candidates": [cand], "usageMetadata": usage, "modelVersion": "fake-gemini"}

    async def _model_call(self, request: web.Request) -> web.Response:
        if (bad := self._check_key(request)) is not None:
            return bad
        model, _, method = request.match_info["call"].partition(":")
        body = await request.json()
        key = request.headers.get("x-goog-api-key", "")
        if method == "generateContent":
            self.counts["generate"] += 1
            status, payload = await self._generate(body, key)
            return web.json_response(payload, status=status)
        if method == "batchGenerateContent":
            self.counts["batch_create"] += 1
            return web.json_response(await self._create_batch(model, body, key))
        return _gemini_error(404, f"unknown method {method}")

    async def _create_batch(self, model: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        entries = body["batch"]["inputConfig"]["requests"]["requests"]
        self.counts["batch_entries"] += len(entries)
        saved, self.latency_s = self.latency_s, 0.0  # a batch job's latency is its polls
        try:
            results = await asyncio.gather(*(self._generate(e["request"], key) for e in entries))
        finally:
            self.latency_s = saved
        out = []
        for e, (status, payload) in zip(entries, results):
            item: dict[str, Any] = {"metadata": e.get("metadata", {})}
            item.update({"error": payload["error"]} if status != 200 else {"response": payload})
            out.append(item)
        bid = f"b{next(self._ids)}"
        self.batches[bid] = {"model": f"models/{model}", "output": out, "_polls": 0}
        return self._batch_view(bid)

    def _batch_view(self, bid: str) -> dict[str, Any]:
        b = self.batches[bid]
        done = b["_polls"] >= self.batch_polls
        meta: dict[str, Any] = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": f"batches/{bid}",
            "model": b["model"],
            "displayName": "fake",
            "createTime": "2025-01-01T00:00:00Z",
            "state": "BATCH_STATE_SUCCEEDED" if done else "BATCH_STATE_RUNNING",
        }
        if done:
            meta["output"] = {"inlinedResponses": {"inlinedResponses": b["output"]}}
        return {"name": f"batches/{bid}", "metadata": meta, "done": done}

    async def _get_batch(self, request: web.Request) -> web.Response:
        self.counts["batch_get"] += 1
        bid = request.match_info["bid"]
        if bid not in self.batches:
            return _gemini_error(404, "batch not found")
        self.batches[bid]["_polls"] += 1
        return web.json_response(self._batch_view(bid))


# ------------------------------------------------------------------------------------------------ OpenAI


class FakeOpenAI(_FakeServer):
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint (as vLLM and SGLang serve it)."""

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.Response:
        self.counts["chat"] += 1
        auth = request.headers.get("Authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key", "type": "auth"}}, status=401)
        body = await request.json()
        texts = []
        n_images = 0
        for msg in body.get("messages", []):
            if msg.get("role") != "user":
                continue
            content = msg["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            texts += [p["text"] for p in parts if p.get("type") == "text"]
            n = sum(p.get("type") == "image_url" for p in parts)
            n_images += n
            self.counts["images"] += n
            self.counts["videos"] += sum(p.get("type") == "video_url" for p in parts)
        status, answer, _ = await self._answer(texts, auth.removeprefix("Bearer "))
        if status != 200:
            return web.json_response({"error": {"message": answer, "type": "error", "code": status}}, status=status)
        text = None if answer is None else answer if isinstance(answer, str) else json.dumps(answer)
        finish = "content_filter" if answer is None else "stop"
        out_tokens = len(text or "") // 4
        prompt_tokens = 200 + 100 * n_images
        return web.json_response(
            {
                "id": f"chatcmpl-{self.counts['chat']}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": out_tokens,
                    "total_tokens": prompt_tokens + out_tokens,
                },
            }
        )


# ------------------------------------------------------------------------------------------------ data


@functools.cache
def tiny_clip(seed: int, n_frames: int = 6, size: tuple[int, int] = (64, 48), fps: int = 12) -> bytes:
    """A small H.264 MP4 whose pixels depend on ``seed`` (so every clip has its own digest).

    Memoised: x264 output is not always bit-identical between encodes in one process, and tests rely on
    the same clip having the same digest (cache keys).
    """
    import av

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"threads": "1"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i * 2, axis=1), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def make_scene_units(n_scenes: int, n_shots: int = 3, shot_s: float = 2.0, video: str = "vfake0") -> list[SceneUnit]:
    """Scenes of one synthetic video with tiny clips, keyframes and embeddings, ready for the LLM stages."""
    rec = VideoRecord(video_id=video, uri=f"/data/{video}.mp4", fps_num=24, fps_den=1, width=64, height=48)
    units = []
    fps = Fraction(24)
    for c in range(n_scenes):
        shots = []
        for k in range(n_shots):
            idx = c * n_shots + k
            start = idx * shot_s
            shots.append(
                ShotRecord(
                    shot_id=shot_id(video, idx),
                    video_id=video,
                    index=idx,
                    start_frame=int(start * fps),
                    end_frame=int((start + shot_s) * fps),
                    start_s=start,
                    end_s=start + shot_s,
                    scene_id=scene_id(video, c),
                )
            )
        scene = SceneRecord(
            scene_id=scene_id(video, c),
            video_id=video,
            index=c,
            shot_ids=[s.shot_id for s in shots],
            start_s=shots[0].start_s,
            end_s=shots[-1].end_s,
        )
        clips = [tiny_clip(zlib.crc32(f"{video}-{s.index}".encode())) for s in shots]
        keyframes = [Keyframe.encode(np.full((48, 64, 3), (s.index * 37) % 255, np.uint8), 90) for s in shots]
        emb = np.eye(n_shots, 8, dtype=np.float32)
        units.append(SceneUnit(scene=scene, video=rec, shots=shots, keyframes=keyframes, embeddings=emb, clips=clips))
    return units
