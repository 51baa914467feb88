"""Embedders: a tiny random open_clip model loaded through load_embedder, the fallback, the embed stage."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from curation import embed as embed_mod
from curation.config import CurateConfig, EmbedConfig
from curation.embed import DEFAULT_THRESHOLDS, Embedder, FallbackEmbedder, load_embedder
from curation.errors import ModelUnavailable
from curation.records import ShotRecord, VideoRecord, shot_id
from curation.scenes import cluster_scenes
from curation.stage import Keyframe, VideoUnit, run_stage_batch
from curation.video import analysis_size, iter_frames, probe
from filmweaver_testing.films import make_film

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(config, reference model): a random tiny open_clip saved as a state dict beside its config JSON."""
    d = tmp_path_factory.mktemp("tiny_clip")
    cfg_path = d / "tiny-clip-test.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test").eval()
    torch.save(model.state_dict(), d / "tiny.pt")
    cfg = EmbedConfig(backend="open_clip", pretrained=str(d / "tiny.pt"), clip_config_path=str(cfg_path), device="cpu")
    return cfg, model


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8) for _ in range(n)]


def test_tiny_open_clip_loads_through_load_embedder(tiny_clip):
    cfg, reference = tiny_clip
    emb = load_embedder(cfg)
    assert emb.kind == "open_clip" and emb.dim == 16
    assert emb.model_id == "open_clip:tiny-clip-test/tiny.pt"
    assert emb.default_threshold == DEFAULT_THRESHOLDS["open_clip"] == 0.8
    x = emb.embed_images(_images(3))
    assert x.shape == (3, 16) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(x[0], x[1])
    np.testing.assert_array_equal(emb.embed_images(_images(3)), x)  # deterministic
    t = emb.embed_texts(["a man in a red coat", "a dark forest"])
    assert t.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    # the saved weights were loaded, not a fresh random init: text features match the reference model
    with torch.no_grad():
        ref = reference.encode_text(open_clip.get_tokenizer("tiny-clip-test")(["a man in a red coat"]))
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(t[:1], ref, atol=1e-5)


def test_auto_falls_back_loudly_when_checkpoint_missing(tiny_clip, tmp_path, caplog):
    cfg = tiny_clip[0].model_copy(update={"backend": "auto", "pretrained": str(tmp_path / "missing.pt")})
    with caplog.at_level(logging.WARNING, logger="curation.embed"):
        emb = load_embedder(cfg)
    assert isinstance(emb, FallbackEmbedder) and emb.kind == "fallback"
    (rec,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "missing.pt" in rec.getMessage() and "embed.pretrained=" in rec.getMessage()


def test_explicit_open_clip_raises_typed_errors(tiny_clip, tmp_path, monkeypatch):
    cfg = tiny_clip[0]
    with pytest.raises(ModelUnavailable, match="not found"):
        load_embedder(cfg.model_copy(update={"pretrained": str(tmp_path / "missing.pt")}))
    with pytest.raises(ModelUnavailable, match="neither a file nor a pretrained tag"):
        load_embedder(EmbedConfig(backend="open_clip", pretrained="no-such-tag"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ModelUnavailable, match="embed_dim"):
        load_embedder(cfg.model_copy(update={"clip_config_path": str(bad)}))
    # a known tag that is not cached and whose host is unreachable fails at once, without download retries
    probed = []
    monkeypatch.setattr(embed_mod, "_cached_tag_file", lambda tag_cfg: None)
    monkeypatch.setattr(embed_mod, "_reachable", lambda url: probed.append(url) or False)
    monkeypatch.setattr(embed_mod, "_hf_offline", lambda: False)
    with pytest.raises(ModelUnavailable, match="unreachable"):
        load_embedder(EmbedConfig(backend="open_clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert probed
    with pytest.raises(ModelUnavailable, match="has no text encoder"):
        FallbackEmbedder().embed_texts(["a cat"])


def test_fallback_decided_before_open_clip_models_import(tmp_path):
    """Weights not cached, hub offline: the fallback comes without importing open_clip's models (torchvision,
    transformers: seconds of start-up); a later full import of open_clip still works."""
    code = (
        "import sys\n"
        "from curation.config import EmbedConfig\n"
        "from curation.embed import load_embedder\n"
        "emb = load_embedder(EmbedConfig(backend='auto', model='ViT-B-32', pretrained='laion2b_s34b_b79k'))\n"
        "heavy = [m for m in ('open_clip', 'open_clip.model', 'torchvision', 'transformers') if m in sys.modules]\n"
        "import open_clip\n"
        "print(emb.kind, heavy, callable(open_clip.create_model_and_transforms), open_clip.pretrained.__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "fallback [] True open_clip.pretrained"


def _smooth(seed: int) -> np.ndarray:
    """A smooth colour picture (a 4x3 grid of random colours, bilinearly upsampled)."""
    grid = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((128, 72), Image.Resampling.BILINEAR))


def test_fallback_embedder_is_deterministic_and_normalised():
    emb = FallbackEmbedder()
    x = emb.embed_images(_images(4))
    assert x.shape == (4, emb.dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(FallbackEmbedder().embed_images(_images(4)), x)
    assert emb.embed_images([]).shape == (0, emb.dim)
    with pytest.raises(ValueError, match="RGB uint8"):
        emb.embed_images([np.zeros((8, 8), np.uint8)])
    # the same picture, shifted by a few pixels, is far more alike than an unrelated picture
    img, other = _smooth(3), _smooth(4)
    a, b, c = emb.embed_images([img, np.roll(img, 6, axis=1), other])
    assert a @ b > 0.9 > 0.5 > a @ c


def _unit(name: str, keyframes: list[list[Keyframe]]) -> VideoUnit:
    shots = [ShotRecord(shot_id(name, i), name, i, i, i + 1, i, i + 1) for i in range(len(keyframes))]
    return VideoUnit(VideoRecord(name, f"{name}.mp4", width=128, height=72), shots=shots, keyframes=keyframes)


def test_embed_stage_means_keyframes_and_batches_across_units(tiny_clip):
    imgs = [Keyframe.encode(im, 90) for im in _images(5, seed=7)]
    cfg = CurateConfig()
    cfg.embed = tiny_clip[0].model_copy(update={"backend": "auto"})
    cfg.embed.batch_size = 2
    stage = Embedder(cfg)
    units = [_unit("va", [[imgs[0], imgs[1]], [imgs[2]]]), _unit("vb", [[imgs[3], imgs[4], imgs[0]]]), _unit("vc", [])]
    out = run_stage_batch(stage, units)
    assert [u.embedder for u in out] == ["open_clip"] * 3
    assert [u.embeddings.shape for u in out] == [(2, 16), (1, 16), (0, 16)]
    each = stage.embedder.embed_images([k.rgb() for k in imgs])
    want = each[[0, 2, 3]] + np.stack([each[1], 0 * each[1], each[4] + each[0]])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(np.concatenate([out[0].embeddings, out[1].embeddings]), want, atol=1e-5)
    assert stage.stats.counts["keyframes_embedded"] == 6
    (rej,) = run_stage_batch(stage, [_unit("vd", [[]])])
    assert rej.stage == "embed" and "no keyframes" in rej.detail


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    """A 4-scene synthetic film (about 13 shots) and per true shot its middle keyframe at analysis size."""
    path = str(tmp_path_factory.mktemp("film") / "film.mp4")
    truth = make_film(path, seed=5, n_scenes=4, shots_per_scene=(2, 4))
    rec = probe(path)
    mids = {(s.start_frame + s.end_frame) // 2: k for k, s in enumerate(truth.shots)}
    keyframes = {mids[f.index]: f.rgb for f in iter_frames(path, analysis_size(rec.width, rec.height, 256))
                 if f.index in mids}  # fmt: skip
    return truth, [keyframes[k] for k in range(len(truth.shots))]


def test_fallback_separates_synthetic_scenes(film):
    truth, keyframes = film
    emb = FallbackEmbedder().embed_images(keyframes)
    tau = DEFAULT_THRESHOLDS["fallback"]
    labels = [s.scene for s in truth.shots]
    window = CurateConfig().scenes.window
    for i in range(1, len(labels)):
        same = [emb[i] @ emb[j] for j in range(max(i - window, 0), i) if labels[j] == labels[i]]
        other = [emb[i] @ emb[j] for j in range(i) if labels[j] != labels[i]]
        if same:  # a shot joins its scene through its window
            assert max(same) >= tau, (i, same)
        if other:  # and matches no shot of another scene
            assert max(other) < tau, (i, other)
    groups = cluster_scenes(emb, window, tau, CurateConfig().scenes.max_shots)
    assert [g.shots[0] for g in groups] == truth.scene_starts()
