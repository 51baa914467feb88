"""Per-shot scores, measured once; the keep/reject decisions on them live in ``curation/filters.py``.

Two kinds, both from frames the analysis pass already decodes (no second decode):

- ``MotionSampler`` (fed by the shot splitter with each frame's grey detection-size image): frames a fixed
  time ``scores.flow_interval_s`` apart are scaled to ``scores.flow_width`` and compared.
  ``flow`` = mean dense optical-flow magnitude (OpenCV Farneback) in frame diagonals per second, so it does
  not depend on the frame rate or the resolution; ``frozen`` = fraction of those pairs whose mean absolute
  luma difference is below ``scores.frozen_diff`` (0-255), i.e. the picture did not change at all: a still
  image held, a freeze frame, a slideshow of stills. Real calm footage (a slow close-up, a still life with
  light changes) still changes by grain, light and small movements over that interval; calibrated on real
  footage in ``benchmarks/filters_real.py``.
- ``KeyframeScorer`` (run by the shot filter on each shot's representative keyframe, analysis size):
  ``sharpness`` = variance of the Laplacian divided by the variance of the luma (dimensionless, so neither
  the contrast nor the exposure moves it); ``text_area`` = fraction of the keyframe covered by text boxes
  found by RapidOCR's text detection model (PP-OCRv4 det, shipped in the ``rapidocr-onnxruntime`` wheel;
  detection only, no recognition); ``aesthetic`` = a head of linear layers on the L2-normalised CLIP image
  embedding when ``scores.aesthetic_head`` names one, else None.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .config import ScoresConfig
from .errors import ConfigError, MissingDependency
from .threads import SizedPool, cpu_threads

log = logging.getLogger(__name__)

# Farneback parameters: pyramid scale, levels, window, iterations, poly_n, poly_sigma, flags. Lighter than
# OpenCV's example (0.5, 3, 15, 3, 5, 1.2): on ~96x54 frames 2 levels and a 9-pixel window follow motions up to
# ~8 px per interval at 2.6x less cost (measured in benchmarks/filters_real.py's cost ratio)
_FARNEBACK = (0.5, 2, 9, 2, 5, 1.1, 0)
# Detected boxes count as text when at least this elongated (long side / short side): overlay text comes in
# words and lines; the detector's squarish boxes are mostly blobs with text-like strokes (eyes, dots, grilles).
_MIN_TEXT_ASPECT = 2.0


class MotionSampler:
    """Motion and frozen scores of one shot from grey frames fed in presentation order."""

    def __init__(self, config: ScoresConfig):
        self.interval = config.flow_interval_s
        self.width = config.flow_width
        self.frozen_diff = config.frozen_diff
        self._prev: np.ndarray | None = None  # last sampled small frame
        self._prev_t = 0.0
        self._last: tuple[float, np.ndarray] | None = None  # latest frame fed, for shots shorter than interval
        self._flows: list[float] = []  # diagonals per second, per pair
        self._frozen = 0
        self.seconds = 0.0  # time spent here (for the cost of the scores)

    def _small(self, gray: np.ndarray) -> np.ndarray:
        h, w = gray.shape
        if w <= self.width:
            return gray
        size = (self.width, max(8, round(h * self.width / w)))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)

    def add(self, time_s: float, gray: np.ndarray) -> None:
        """Feed one frame (uint8 HxW grey) at ``time_s`` seconds; it is sampled when it is due."""
        if self._prev is not None and time_s - self._prev_t < self.interval:
            self._last = (time_s, gray)
            return
        t0 = time.perf_counter()
        small = self._small(gray)
        if self._prev is not None:
            self._pair(self._prev, small, time_s - self._prev_t)
        self._prev, self._prev_t, self._last = small, time_s, None
        self.seconds += time.perf_counter() - t0

    def _pair(self, a: np.ndarray, b: np.ndarray, dt: float) -> None:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, *_FARNEBACK)
        magnitude = float(np.mean(np.hypot(flow[..., 0], flow[..., 1])))
        diagonal = math.hypot(*a.shape)
        self._flows.append(magnitude / diagonal / max(dt, 1e-3))
        self._frozen += cv2.norm(a, b, cv2.NORM_L1) / a.size < self.frozen_diff

    def result(self) -> tuple[float | None, float | None]:
        """``(flow, frozen)`` of the shot; a shot shorter than the interval compares its first and last frames;
        ``(None, None)`` for a single frame."""
        if not self._flows and self._last is not None and self._prev is not None:
            t0 = time.perf_counter()
            self._pair(self._prev, self._small(self._last[1]), self._last[0] - self._prev_t)
            self.seconds += time.perf_counter() - t0
        if not self._flows:
            return None, None
        return float(np.mean(self._flows)), self._frozen / len(self._flows)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the luma divided by the variance of the luma (0 for a uniform image)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    var = float(gray.var())
    if var < 1e-6:
        return 0.0
    return float(cv2.Laplacian(gray, cv2.CV_32F).var()) / var


class TextDetector:
    """Fraction of an image covered by text: RapidOCR's PP-OCRv4 detection model (onnxruntime, CPU)."""

    def __init__(self, short_side: int):
        try:
            import rapidocr_onnxruntime
            from rapidocr_onnxruntime.ch_ppocr_det import TextDetector as _Det
        except ImportError as exc:
            raise MissingDependency(
                f"text scores need RapidOCR ({exc}): pip install rapidocr-onnxruntime, or set scores.text=false"
            ) from None
        model = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
        self._det = _Det(
            {
                "model_path": str(model),
                "use_cuda": False,
                "limit_side_len": short_side,
                "limit_type": "min",
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "thresh": 0.3,
                "box_thresh": 0.5,
                "unclip_ratio": 1.6,
                "intra_op_num_threads": 1,
                "inter_op_num_threads": 1,
            }
        )
        self.short_side = short_side

    def area(self, rgb: np.ndarray) -> float:
        """Fraction 0..1 of the RGB uint8 image covered by the union of detected text-line boxes (elongated ones,
        ``_MIN_TEXT_ASPECT``)."""
        h, w = rgb.shape[:2]
        scale = self.short_side / min(h, w)
        img = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        boxes, _ = self._det(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if boxes is None or len(boxes) == 0:
            return 0.0
        lines = []
        for box in boxes:
            (_, _), (bw, bh), _ = cv2.minAreaRect(np.asarray(box, np.float32))
            if min(bw, bh) > 0 and max(bw, bh) / min(bw, bh) >= _MIN_TEXT_ASPECT:
                lines.append(np.round(box).astype(np.int32))
        mask = np.zeros(img.shape[:2], np.uint8)
        if lines:
            cv2.fillPoly(mask, lines, 1)
        return float(mask.mean())


class AestheticHead:
    """Linear layers (as LAION's improved aesthetic predictor: no activations) on L2-normalised embeddings.

    Loaded from a torch state dict: every 2-D ``*.weight`` with its ``*.bias``, in key order, is one layer.
    """

    def __init__(self, path: str, embed_dim: int | None = None):
        import torch

        if not Path(path).is_file():
            raise ConfigError(f"scores.aesthetic_head: no file at {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        for key, value in state.items():
            if key.endswith(".weight") and value.ndim == 2:
                bias = state.get(key[: -len("weight")] + "bias")
                b = bias.float().numpy() if bias is not None else np.zeros(value.shape[0], np.float32)
                self.layers.append((value.float().numpy().T, b))
        if not self.layers or self.layers[-1][0].shape[1] != 1:
            raise ConfigError(f"scores.aesthetic_head {path}: expected linear layers ending in one output")
        self.embed_dim = self.layers[0][0].shape[0]
        if embed_dim is not None and embed_dim != self.embed_dim:
            raise ConfigError(
                f"scores.aesthetic_head {path} takes {self.embed_dim}-d embeddings, the embedder gives {embed_dim}"
            )

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores (N,) of embeddings (N, D)."""
        x = np.asarray(embeddings, np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        for w, b in self.layers:
            x = x @ w + b
        return x[:, 0]


class KeyframeScorer:
    """Sharpness, text area and aesthetics of shots from their keyframes and embeddings."""

    def __init__(self, config: ScoresConfig):
        self.config = config
        self.text = TextDetector(config.text_side) if config.text else None
        self.aesthetic = AestheticHead(config.aesthetic_head) if config.aesthetic_head else None
        self.seconds = 0.0
        self._pool = SizedPool("text")

    def score(
        self,
        shots: list[Any],
        keyframes: list[Any],
        embeddings: np.ndarray | None,
        embedder: str,
        text: list[bool] | None = None,
    ) -> None:
        """Set ``sharpness``, ``text_area`` and ``aesthetic`` on each shot (``keyframes[i]`` its representative
        ``Keyframe``; ``embeddings`` (N, D) or None). ``text[i]`` False skips text detection on shot i (its
        ``text_area`` stays None); None measures every shot."""
        t0 = time.perf_counter()
        step = 4 * self.text_workers  # keyframes decoded at a time
        for b in range(0, len(shots), step):
            rgbs = [key.rgb() for key in keyframes[b : b + step]]
            wanted = []
            for i, (shot, rgb) in enumerate(zip(shots[b : b + step], rgbs)):
                shot.sharpness = sharpness(rgb)
                shot.text_area = None
                if self.text is not None and (text is None or text[b + i]):
                    wanted.append(i)
            for i, area in zip(wanted, self._text_areas([rgbs[i] for i in wanted])):
                shots[b + i].text_area = area
        if self.aesthetic is not None and embeddings is not None and embedder == "open_clip":
            if embeddings.shape[1] != self.aesthetic.embed_dim:
                raise ConfigError(
                    f"scores.aesthetic_head takes {self.aesthetic.embed_dim}-d embeddings, "
                    f"the embedder gives {embeddings.shape[1]}"
                )
            for shot, value in zip(shots, self.aesthetic(embeddings)):
                shot.aesthetic = float(value)
        self.seconds += time.perf_counter() - t0

    @property
    def text_workers(self) -> int:
        """Keyframes text detection runs on at once: ``text_threads``, else ``cpu_threads()`` now (a Ray
        worker runs tasks of different CPU counts)."""
        return self.config.text_threads or cpu_threads()

    def _text_areas(self, images: list[np.ndarray]) -> list[float]:
        """``TextDetector.area`` of each image, ``text_workers`` at once (onnxruntime releases the GIL; each run
        on one thread, so no intra-op barriers stall on shared cores)."""
        workers = self.text_workers
        if workers <= 1 or len(images) <= 1:
            return [self.text.area(im) for im in images]
        return self._pool.map(self.text.area, images, workers)

    def close(self) -> None:
        """Stop the text detection threads."""
        self._pool.close()
