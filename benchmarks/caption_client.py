"""Caption client throughput against the fake Gemini server, and tokens/dollars per hour of the demo film.

Requests/s of ``GroupCaptioner.process_batch`` (real google-genai client, cache off, budgets off) against a
fake server that answers after ``--latency`` seconds, at several concurrency limits, as a fraction of the
bound concurrency / latency. Then the dry-run estimate of tokens and dollars per hour of video for the
demo film's shots at default settings (caption + verification, gemini-2.5-flash, 1 fps, low resolution).

    .venv/bin/python benchmarks/caption_client.py [--latency 0.2] [--concurrency 8 16 32] [--waves 6]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import tempfile
import time
from itertools import groupby

from curation.captions.estimate import estimate_cost
from curation.captions.stages import GroupCaptioner
from curation.config import CurateConfig
from curation.records import Reject
from curation.stage import run_stage_batch
from filmweaver_testing.fake_llm import FakeGemini, make_scene_units


def _serve(latency: float, ports: mp.Queue, stop: mp.Event) -> None:
    with FakeGemini(latency_s=latency) as srv:
        ports.put(srv.port)
        stop.wait()


def throughput(latency: float, concurrency: int, waves: int) -> tuple[float, float]:
    """(requests/s, fraction of the bound) for ``waves * concurrency`` one-request scenes.

    The fake server runs in its own process so that it does not compete with the client for the GIL.
    """
    units = make_scene_units(waves * concurrency + concurrency, 1, shot_s=3.0, video=f"vbench{concurrency}")
    warm, timed = units[:concurrency], units[concurrency:]
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(latency, ports, stop), daemon=True)
    server.start()
    try:
        cfg = CurateConfig()
        cfg.caption.backend = "gemini"
        cfg.caption.base_url = f"http://127.0.0.1:{ports.get(timeout=60)}"
        cfg.caption.concurrency = concurrency
        cfg.caption.rpm = 0
        cfg.caption.tpm = 0
        stage = GroupCaptioner(cfg, None)
        run_stage_batch(stage, warm)  # open the connection pool
        t0 = time.perf_counter()
        out = run_stage_batch(stage, timed)
        wall = time.perf_counter() - t0
        stage.close()
    finally:
        stop.set()
        server.join(10)
    assert not any(isinstance(r, Reject) for r in out), "benchmark requests failed"
    rps = len(timed) / wall
    return rps, rps / (concurrency / latency)


def demo_estimate() -> None:
    from filmweaver_testing.films import make_film
    from pipelines.commands import DEMO_FILM

    with tempfile.TemporaryDirectory() as tmp:
        truth = make_film(os.path.join(tmp, "demo.mp4"), **DEMO_FILM)
    fps = truth.fps_num / truth.fps_den
    scenes = [
        [(s.end_frame - s.start_frame) / fps for s in shots] for _, shots in groupby(truth.shots, lambda s: s.scene)
    ]
    cfg = CurateConfig()
    cfg.caption.backend = "gemini"
    for label, batch in (("online", False), ("batch API", True)):
        cfg.caption.batch = batch
        est = estimate_cost(cfg, shot_durations=scenes)
        h = est.per_hour()
        print(
            f"demo film ({est.scenes} scenes, {est.shots} shots, {est.video_s:.1f} s), {label}: "
            f"{h['input_tokens']:,.0f} input + {h['output_tokens']:,.0f} output tokens and "
            f"${h['cost_usd']:.2f} per hour of video"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2, help="fake server latency in seconds")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--waves", type=int, default=6, help="requests per run = waves x concurrency")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GEMINI_API_KEY", "benchmark-fake-key")
    print(f"fake Gemini, latency {args.latency * 1000:.0f} ms")
    for c in args.concurrency:
        rps, frac = throughput(args.latency, c, args.waves)
        print(f"concurrency {c:3d}: {rps:7.1f} requests/s, bound {c / args.latency:6.1f}, fraction {frac:.2f}")
    demo_estimate()


if __name__ == "__main__":
    main()
