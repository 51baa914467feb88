"""Keyframe embeddings: open_clip image/text towers, or a weight-free fallback when no checkpoint loads.

``load_embedder`` resolves the open_clip checkpoint without ever waiting on the network: a local file, a
pretrained tag already in the Hugging Face / CLIP cache, or a download only when the hub is reachable.
With ``backend='auto'`` a failure gives the fallback embedder (colour histograms + thumbnails) and a loud
warning; ``run.json`` records ``model_id``. Each embedder carries the scene-clustering threshold calibrated
for it (``DEFAULT_THRESHOLDS``, the one place that maps an embedder kind to its tau).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from .config import CurateConfig, EmbedConfig
from .errors import ConfigError, ModelUnavailable
from .stage import Keyframe, Stage, VideoUnit

log = logging.getLogger(__name__)

# Cosine similarity at or above which a shot joins a scene, per embedder kind. open_clip: the usual value
# for CLIP ViT-B-32 keyframes of one place and cast. fallback: calibrated on the real-footage scene films
# (benchmarks/scene_accuracy.py --real: F1 0.966 at 0.55 against 0.889 at 0.5) and on synthetic films
# (same-scene shots >= 0.55, other scenes <= 0.08; benchmarks/scene_threshold.py), BENCHMARKS.md.
DEFAULT_THRESHOLDS = {"open_clip": 0.8, "fallback": 0.55}

_NETWORK_PROBE_S = 3.0  # seconds to wait for a TCP connection to the weights host before giving up
_CHECKPOINT_HINT = (
    "to use CLIP offline, download a checkpoint on a machine with internet (e.g. open_clip_pytorch_model.bin "
    "of laion/CLIP-ViT-B-32-laion2B-s34B-b79K) and set embed.pretrained=/path/to/checkpoint"
)


def default_threshold(kind: str) -> float:
    """Calibrated scene-clustering tau of an embedder kind ('open_clip' | 'fallback')."""
    try:
        return DEFAULT_THRESHOLDS[kind]
    except KeyError:
        raise ValueError(f"no default scene threshold for embedder kind {kind!r}") from None


def resolve_device(device: str) -> str:
    """Torch device string: 'auto' is 'cuda' when a CUDA GPU is present, else 'cpu'; others as given.

    Raises ``ConfigError`` for a string torch does not take as a device, and for a CUDA device this machine
    does not have (torch would fail deep inside a stage with a driver traceback)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (parsed.index or 0) >= count:
            raise ConfigError(
                f"device {device!r} asks for a CUDA GPU and torch sees {count} on this machine; use auto or cpu"
            )
    return device


class ImageTextEmbedder(Protocol):
    kind: str  # 'open_clip' | 'fallback'
    model_id: str  # recorded in run.json
    dim: int
    default_threshold: float

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 L2-normalised embeddings of RGB uint8 HxWx3 images."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, dim) float32 L2-normalised text embeddings (open_clip only)."""
        ...


def _l2(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


# ------------------------------------------------------------------------------------------- fallback


class FallbackEmbedder:
    """Weight-free, deterministic image features: HSV colour histograms and a small colour thumbnail.

    Blocks (each L2-normalised, then weighted so that cosine similarity is a weighted mean of per-block
    cosines): a global joint HSV histogram, a joint HSV histogram per cell of a 2x2 grid (square-rooted:
    Hellinger, so cosine is the Bhattacharyya coefficient), and a mean-centred 16x9 RGB thumbnail. The
    histograms carry place and palette, robust to reframing and camera motion; the thumbnail adds layout.
    """

    kind = "fallback"
    model_id = "fallback:hsv-hist-thumb-v1"
    _bins = (12, 4, 4)  # hue, saturation, value bins of the global histogram
    _grid_bins = (8, 3, 3)
    _weights = (0.5, 0.3, 0.2)  # share of global histogram, grid histograms, thumbnail in the cosine
    _work = (96, 54)  # (w, h) histograms are computed on
    _thumb = (16, 9)

    def __init__(self) -> None:
        self.default_threshold = default_threshold(self.kind)
        self.dim = int(np.prod(self._bins) + 4 * np.prod(self._grid_bins) + self._thumb[0] * self._thumb[1] * 3)

    @staticmethod
    def _hist(hsv: np.ndarray, bins: tuple[int, int, int]) -> np.ndarray:
        idx = [np.minimum((hsv[..., c].astype(np.int32) * b) >> 8, b - 1) for c, b in enumerate(bins)]
        flat = (idx[0] * bins[1] + idx[1]) * bins[2] + idx[2]
        h = np.bincount(flat.ravel(), minlength=int(np.prod(bins))).astype(np.float32)
        return np.sqrt(h / max(h.sum(), 1.0))

    def _features(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
        img = Image.fromarray(rgb)
        hsv = np.asarray(img.resize(self._work, Image.Resampling.BOX).convert("HSV"))
        h2, w2 = hsv.shape[0] // 2, hsv.shape[1] // 2
        cells = [hsv[:h2, :w2], hsv[:h2, w2:], hsv[h2:, :w2], hsv[h2:, w2:]]
        grid = np.concatenate([self._hist(c, self._grid_bins) for c in cells])
        thumb = np.asarray(img.resize(self._thumb, Image.Resampling.BOX), dtype=np.float32).ravel()
        thumb = thumb - thumb.mean()
        blocks = (self._hist(hsv, self._bins), grid, thumb)
        return np.concatenate([_l2(b) * np.sqrt(w) for b, w in zip(blocks, self._weights)])

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return _l2(np.stack([self._features(im) for im in images]))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        raise ModelUnavailable(
            f"the fallback embedder ({self.model_id}) has no text encoder; text-image retrieval needs an "
            f"open_clip checkpoint: {_CHECKPOINT_HINT}"
        )


# ------------------------------------------------------------------------------------------- open_clip


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))


def _reachable(url: str) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=_NETWORK_PROBE_S).close()
        return True
    except OSError:
        return False


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_tag_file(tag_cfg: dict[str, Any]) -> str | None:
    """Local file of a pretrained tag if it is already cached (HF hub cache or open_clip's URL cache)."""
    if tag_cfg.get("file"):
        return tag_cfg["file"]
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
    url = tag_cfg.get("url", "")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _pretrained_module() -> ModuleType:
    """``open_clip.pretrained`` (the table of pretrained tags) without running ``open_clip/__init__``, which imports
    every model and with them torchvision and transformers (3-5 s on a 2-core box): the weights are checked first,
    so a run that falls back never pays that. Raises ``ImportError`` when open_clip is not installed."""
    if "open_clip" in sys.modules:
        return importlib.import_module("open_clip.pretrained")
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise ImportError("No module named 'open_clip'")
    sys.modules["open_clip"] = importlib.util.module_from_spec(spec)  # not run: only its path, for the submodules
    try:
        return importlib.import_module("open_clip.pretrained")
    finally:  # the real package imports them again, in full, when a model loads
        for name in [n for n in sys.modules if n == "open_clip" or n.startswith("open_clip.")]:
            del sys.modules[name]


def _resolve_pretrained(model: str, pretrained: str) -> tuple[str, dict[str, Any]]:
    """What to pass to open_clip as ``pretrained`` (a local file, or a tag to download) and extra keyword
    arguments for ``create_model_and_transforms``. Raises ``ModelUnavailable`` at once when the weights are
    neither local nor reachable (open_clip itself would retry the hub for about a minute)."""
    table = _pretrained_module()
    get_pretrained_cfg, list_pretrained_tags_by_model = table.get_pretrained_cfg, table.list_pretrained_tags_by_model

    if os.path.isfile(pretrained):
        return pretrained, {}
    if _looks_like_path(pretrained):
        raise ModelUnavailable(f"open_clip checkpoint file not found: {pretrained}")
    tag_cfg = get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        raise ModelUnavailable(
            f"{pretrained!r} is neither a file nor a pretrained tag of open_clip model {model!r} "
            f"(tags: {list_pretrained_tags_by_model(model)})"
        )
    cached = _cached_tag_file(tag_cfg)
    if cached:  # loaded as a file, so apply what open_clip would have taken from the tag
        kw = {f"image_{k}": tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        return cached, {**kw, "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False))}
    if tag_cfg.get("hf_hub"):
        from huggingface_hub import constants

        if _hf_offline():
            raise ModelUnavailable(f"open_clip {model}/{pretrained} is not cached and HF_HUB_OFFLINE is set")
        host_url = constants.ENDPOINT
    else:
        host_url = tag_cfg.get("url", "")
    if not _reachable(host_url):
        raise ModelUnavailable(
            f"open_clip {model}/{pretrained} is not cached and {urlparse(host_url).hostname} is unreachable"
        )
    return pretrained, {}  # let open_clip download it


def _register_model_config(path: str) -> str:
    """Register a local open_clip model config JSON; returns the model name (the file's stem)."""
    import open_clip

    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot read open_clip model config {p}: {exc}") from None
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ModelUnavailable(f"open_clip model config {p} needs the keys embed_dim, vision_cfg and text_cfg")
    open_clip.add_model_config(p)
    return p.stem


class OpenClipEmbedder:
    """open_clip image and text towers, loaded once; inference in fp32 (autocast fp16 on CUDA)."""

    kind = "open_clip"

    def __init__(self, config: EmbedConfig):
        model_name = config.model
        if config.clip_config_path:
            model_name = _register_model_config(config.clip_config_path)
        pretrained, extra = _resolve_pretrained(model_name, config.pretrained)  # before open_clip's models load
        import open_clip
        import torch

        self.device = torch.device(resolve_device(config.device))
        try:
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=pretrained,
                device=self.device,
                require_pretrained=True,
                **extra,
            )
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ModelUnavailable(f"open_clip {model_name} with {config.pretrained!r} failed to load: {exc}") from exc
        self.model = model.eval()
        self.dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        tag = os.path.basename(config.pretrained) if _looks_like_path(config.pretrained) else config.pretrained
        self.model_id = f"open_clip:{model_name}/{tag}"
        self.default_threshold = default_threshold(self.kind)
        self._torch = torch

    def _run(self, fn: Any, batch: Any) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            out = fn(batch.to(self.device))
        return _l2(out.float().cpu().numpy())

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = self._torch.stack([self.preprocess(Image.fromarray(im)) for im in images])
        return self._run(self.model.encode_image, batch)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self._run(self.model.encode_text, self.tokenizer(texts))


def load_embedder(config: EmbedConfig) -> ImageTextEmbedder:
    """The configured embedder. ``backend='auto'`` falls back (with a WARNING) when open_clip cannot load;
    ``backend='open_clip'`` raises ``ModelUnavailable`` instead."""
    if config.backend == "fallback":
        log.info("embedding with the weight-free fallback embedder (embed.backend=fallback)")
        return FallbackEmbedder()
    try:
        embedder = OpenClipEmbedder(config)
    except (ModelUnavailable, ImportError) as exc:
        if config.backend == "open_clip":
            if isinstance(exc, ModelUnavailable):
                raise
            raise ModelUnavailable(f"open_clip cannot be imported ({exc}); pip install open-clip-torch") from exc
        log.warning(
            "!!! open_clip embedder unavailable: %s. Falling back to the weight-free colour-histogram embedder "
            "(%s): scene clustering is coarser and text-image retrieval is disabled. Fix: %s, or set "
            "embed.backend=fallback to silence this warning.",
            exc,
            FallbackEmbedder.model_id,
            _CHECKPOINT_HINT,
        )
        return FallbackEmbedder()
    log.info("embedding with %s on %s", embedder.model_id, embedder.device)
    return embedder


# ------------------------------------------------------------------------------------------- stage


class Embedder(Stage):
    """Shot embeddings: per shot the renormalised mean of its keyframes' embeddings (``unit.embeddings``)
    and each keyframe's own (``unit.keyframe_embeddings``, for scene clustering), batched across units."""

    name = "embed"

    def __init__(self, config: CurateConfig, out_dir: str | None = None):
        super().__init__()
        self.config = config.embed
        self.embedder = load_embedder(self.config)

    def process(self, unit: VideoUnit) -> VideoUnit:
        return self.process_batch([unit])[0]

    def process_batch(self, units: list[VideoUnit]) -> list[VideoUnit]:
        images: list[Keyframe] = []
        owners: list[tuple[int, int]] = []  # (unit, shot) of each keyframe
        for u, unit in enumerate(units):
            if len(unit.keyframes) != len(unit.shots):
                raise ValueError(f"{unit.item_id}: {len(unit.keyframes)} keyframe lists for {len(unit.shots)} shots")
            for s, frames in enumerate(unit.keyframes):
                if not frames:
                    raise ValueError(f"{unit.item_id}: shot {s} has no keyframes")
                images.extend(frames)
                owners.extend([(u, s)] * len(frames))
        bs = self.config.batch_size
        # decoded one batch at a time: a whole film's keyframes as pixels would grow with its length
        parts = [self.embedder.embed_images([k.rgb() for k in images[i : i + bs]]) for i in range(0, len(images), bs)]
        dim = self.embedder.dim
        feats = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
        per_shot: list[list[list[np.ndarray]]] = [[[] for _ in unit.shots] for unit in units]
        for (u, s), f in zip(owners, feats):
            per_shot[u][s].append(f)
        for unit, shots in zip(units, per_shot):
            unit.keyframe_embeddings = [np.stack(fs) for fs in shots]
            sums = [fs.sum(0) for fs in unit.keyframe_embeddings]
            unit.embeddings = _l2(np.stack(sums)) if sums else np.zeros((0, dim), np.float32)
            unit.embedder = self.embedder.kind
        self.stats.counts["keyframes_embedded"] += len(images)
        return units
