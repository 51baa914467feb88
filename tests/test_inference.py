"""Sampler, caches and story sessions with a tiny checkpoint exported by the trainer's code."""

import json

import av
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from curation.config import EmbedConfig
from inference.config import SampleConfig, StoryScript
from inference.sampler import CacheGuidedSampler, cache_mode
from inference.shot_cache import CacheEntry, ShotCache
from inference.story import StorySession
from pipelines.cli import main as cli_main
from pipelines.precompute import fit_frame
from training.encoders import save_tiny_checkpoint
from training.model import build_model
from training.trainer import export_model

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
SIZE, CHUNK = 32, 2  # 32x32 frames -> 4x4 latents; 2 latent frames -> 5 frames per chunk (VAE ratio 4)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> SampleConfig:
    """Sampling config of a tiny model (trainer export), tiny Wan encoders and a tiny random open_clip."""
    d = tmp_path_factory.mktemp("ckpt")
    save_tiny_checkpoint(str(d))
    torch.manual_seed(0)
    model = build_model("tiny")
    export_model(model, torch.optim.AdamW(model.parameters()), None, str(d / "model"), rank=0)
    clip_cfg = d / "tiny-clip-inference.json"
    clip_cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(clip_cfg)
    torch.save(open_clip.create_model("tiny-clip-inference").state_dict(), d / "clip.pt")
    embed = EmbedConfig(
        backend="open_clip", pretrained=str(d / "clip.pt"), clip_config_path=str(clip_cfg), device="cpu"
    )
    return SampleConfig(
        checkpoint=str(d / "model"),
        encoders=str(d),
        height=SIZE,
        width=SIZE,
        chunk_frames=CHUNK,
        num_steps=3,
        text_len=16,
        shot_cache_size=2,
        device="cpu",
        embed=embed,
    )


@pytest.fixture(scope="module")
def sampler(config) -> CacheGuidedSampler:
    return CacheGuidedSampler(config)


def _frames(path: str) -> np.ndarray:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_token_layout_per_mode(sampler):
    model = sampler.model
    per_frame = (SIZE // 8 // 2) ** 2  # base-patch tokens of one 4x4 latent frame
    latent = np.random.default_rng(0).normal(size=(4, 1, 4, 4)).astype(np.float32)
    x = torch.zeros(1, 4, CHUNK, 4, 4)
    for shots, history, mode in [(0, 0, "none"), (0, 3, "temporal"), (2, 0, "shot"), (2, 7, "both")]:
        temporal = sampler.new_temporal_cache()
        if history:
            temporal.push(np.ones((4, history, 4, 4), np.float32))
        shot_latents = np.stack([latent] * shots) if shots else np.zeros((0,), np.float32)
        cond = sampler.condition(temporal, shot_latents, seed=5)
        assert cond.mode == mode == cache_mode(shots, history)
        packed = model.pack(x, torch.tensor([900.0]), **cond.model_kwargs(1))
        # temporal schedule of `tiny`: newest frame at 1x2x2 (4 tokens), 2 frames at 2x4x4 (1), 4 at 4x8x8 (1)
        expected_temporal = {0: 0, 3: per_frame + 1, 7: per_frame + 1 + 1}[history]
        assert packed.counts == {"shot": shots * per_frame, "temporal": expected_temporal, "target": CHUNK * per_frame}
        steps = {name: packed.timesteps[0, s] for name, s in packed.segments.items()}
        assert torch.all(steps["target"] == 900.0)
        if shots:
            assert torch.all((steps["shot"] >= 100) & (steps["shot"] <= 400))
            assert len(set(cond.shot_timestep[0].tolist())) == shots  # one level per keyframe, as in training
        if history:
            assert torch.all((steps["temporal"] >= 0) & (steps["temporal"] <= 100))
            assert len(torch.unique(steps["temporal"])) == 1
    # the temporal cache never keeps more than the schedule's capacity, and clears on a new shot
    temporal = sampler.new_temporal_cache()
    temporal.push(np.zeros((4, 10, 4, 4), np.float32))
    assert len(temporal) == model.schedule_capacity == 7
    assert temporal.levels() == [(1, (1, 2, 2)), (2, (2, 4, 4)), (4, (4, 8, 8))]
    temporal.clear()
    assert len(temporal) == 0 and temporal.levels() == []


def test_retrieval_returns_expected_keyframes():
    cache = ShotCache()
    basis = np.eye(4, dtype=np.float32)
    for i, shot in enumerate([0, 0, 1, 2]):
        cache.add(CacheEntry(np.full((4, 1, 4, 4), i, np.float16), basis[i], shot))
    query = np.array([0.1, 0.2, 0.9, 0.5], np.float32)
    assert cache.retrieve(query, 2) == [2, 3]
    assert cache.retrieve(query, 3, exclude_shot=1) == [3, 1, 0]
    assert cache.retrieve(query, 2, pinned=[0]) == [0, 2]  # pinned first, then the best of the rest
    assert cache.retrieve(None, 2, exclude_shot=2) == [1, 2]  # no text tower: most recent
    assert cache.retrieve(query, 0) == []
    assert cache.latents([3, 1])[:, 0, 0, 0, 0].tolist() == [3.0, 1.0]
    restored = ShotCache.from_state(cache.state())
    assert restored.retrieve(query, 4) == cache.retrieve(query, 4)
    np.testing.assert_array_equal(restored.latents([0, 3]), cache.latents([0, 3]))


def test_injected_concepts_enter_shot_cache(sampler, config, tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name in ("hero", "dog"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    script = StoryScript.model_validate(
        {
            "shots": [
                {"prompt": "a man walks", "references": [{"image": str(paths[0]), "label": "hero"}, str(paths[1])]},
                {"prompt": "a man sits"},
            ]
        }
    )
    session = StorySession.create(str(tmp_path / "s"), config, script)
    first, second = session.run(sampler)
    # references are used (pinned) from the first chunk on, so the first shot already runs in 'shot' mode
    assert first["modes"] == ["shot"]
    assert [(e["source"], e["label"]) for e in first["shot_cache"]] == [("reference", "hero"), ("reference", None)]
    # they stay in the cache and are retrieved for later shots alongside shot 0's keyframe
    assert {e["source"] for e in second["shot_cache"]} <= {"reference", "keyframe"}
    with np.load(tmp_path / "s" / "rounds" / "001" / "cache.npz") as state:
        assert state["shot_sources"].tolist() == ["reference", "reference", "keyframe", "keyframe"]
        assert state["shot_labels"].tolist()[:2] == ["hero", ""]
        image = np.asarray(Image.open(paths[0]).convert("RGB"))
        expected = sampler.encoders.encode_frames(fit_frame(image, SIZE, SIZE)[None])
        np.testing.assert_array_equal(state["shot_latents"][0], expected)


STORY = {
    "shots": [
        {"prompt": "a red man walks in a room", "chunks": 2, "characters": {"man": [0.25, 0.0, 0.75, 1.0]}},
        {"prompt": "a red man sits", "extend": True},
        {"prompt": "a blue car in the street"},
        {"prompt": "the red man looks at the window", "chunks": 2, "characters": {"man": [0.0, 0.0, 0.5, 1.0]}},
    ]
}


def test_story_runs_and_resumes_identically(sampler, config, tmp_path):
    script_path = tmp_path / "story.yaml"
    script_path.write_text(json.dumps(STORY))  # JSON is YAML
    embed = config.embed
    sets = [
        f"encoders={config.encoders}",
        f"height={SIZE}",
        f"width={SIZE}",
        f"chunk_frames={CHUNK}",
        "num_steps=3",
        "text_len=16",
        "shot_cache_size=2",
        "device=cpu",
        "embed.backend=open_clip",
        f"embed.pretrained={embed.pretrained}",
        f"embed.clip_config_path={embed.clip_config_path}",
        "embed.device=cpu",
    ]
    full = tmp_path / "full"
    args = ["sample", "--checkpoint", config.checkpoint, "--script", str(script_path), "--out", str(full)]
    assert cli_main(args + [arg for s in sets for arg in ("--set", s)]) == 0
    records = [json.loads((full / "rounds" / f"{r:03d}" / "round.json").read_text()) for r in range(4)]
    assert [r["modes"] for r in records] == [["none", "temporal"], ["temporal"], ["shot"], ["shot", "both"]]
    assert [r["shot"] for r in records] == [0, 0, 1, 2]
    assert all(e["shot"] != 2 for e in records[3]["shot_cache"]) and len(records[3]["shot_cache"]) == 2
    # a shot of L latents has 1 + 4(L-1) frames (N chunks of F latents: 4NF-3); an extension round adds 4 per latent
    for r, n in enumerate([4 * 2 * CHUNK - 3, 4 * CHUNK, 4 * CHUNK - 3, 4 * 2 * CHUNK - 3]):
        assert _frames(str(full / "rounds" / f"{r:03d}" / "video.mp4")).shape == (n, SIZE, SIZE, 3)
    assert [len(_frames(str(full / "shots" / f"{s:03d}.mp4"))) for s in range(3)] == [21, 5, 13]
    assert len(_frames(str(full / "story.mp4"))) == 39

    # the same story, interrupted after two rounds, resumed by a new sampler, then extended with --continue
    script = StoryScript.model_validate({"shots": STORY["shots"][:3]})
    part = tmp_path / "part"
    StorySession.create(str(part), config, script).run(sampler, max_rounds=2)
    assert not (part / "rounds" / "002").exists() and not (part / "story.mp4").exists()
    StorySession.open(str(part)).run(CacheGuidedSampler(config))
    more = tmp_path / "more.yaml"
    more.write_text(json.dumps({"shots": STORY["shots"][3:]}))
    assert cli_main(["sample", "--continue", str(part), "--script", str(more)]) == 0
    for r in range(4):
        a, b = full / "rounds" / f"{r:03d}", part / "rounds" / f"{r:03d}"
        np.testing.assert_array_equal(np.load(a / "latents.npy"), np.load(b / "latents.npy"))
        assert (a / "keyframe.png").read_bytes() == (b / "keyframe.png").read_bytes()
    np.testing.assert_array_equal(_frames(str(full / "story.mp4")), _frames(str(part / "story.mp4")))

    # evaluation of the session: a Table-1 style row with every metric measured
    out = tmp_path / "scores.json"
    assert cli_main(["evaluate", str(full), "--json", str(out)] + [a for s in sets[-4:] for a in ("--set", s)]) == 0
    (story,) = json.loads(out.read_text())["stories"]
    assert story["shots"] == 3 and story["scuts"] >= 0
    assert all(-1.0 <= story[m] <= 1.0 for m in ("overall_consistency", "text_alignment", "character_consistency"))


def _smooth_video(frames: int) -> np.ndarray:
    """A colour gradient brightening and drifting by a few levels per frame (no cuts, no jumps)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return np.stack(
        [
            np.clip(np.stack([xx * 3 + 4 * t, yy * 3 + 4 * t, np.full_like(xx, 60 + 6 * t)], -1), 0, 255)
            for t in range(frames)
        ]
    ).astype(np.uint8)


def test_extended_shot_joins_chunks_without_lost_frames_or_jumps(sampler, config, tmp_path, monkeypatch):
    """Chunks of an extended shot are decoded as one sequence: 4NF-3 frames, continuous at every join."""
    latents = sampler.encoders.encode_frames(_smooth_video(1 + 4 * (3 * CHUNK - 1))).astype(np.float32)
    chunks = iter(np.split(latents, 3, axis=1))  # 3 chunks of CHUNK latents, "generated" in order
    monkeypatch.setattr(sampler, "generate_chunk", lambda prompt, temporal, shot, seed: (next(chunks), "none"))
    script = {"shots": [{"prompt": "a man walks", "chunks": 2}, {"prompt": "a man walks", "extend": True}]}
    session = StorySession.create(str(tmp_path / "s"), config, StoryScript.model_validate(script))
    assert [rec["frames"] for rec in session.run(sampler)] == [4 * 2 * CHUNK - 3, 4 * CHUNK]
    shot = _frames(str(tmp_path / "s" / "shots" / "000.mp4")).astype(np.float32)
    assert len(shot) == 4 * 3 * CHUNK - 3 == 21

    # the shot is the VAE's decode of all its latents at once; chunk by chunk, 3 frames would be lost at each join
    whole = sampler.decode(latents)
    assert len(np.concatenate([sampler.decode(z) for z in np.split(latents, 3, axis=1)])) == 15
    # keyframes (lossless PNG) are the rounds' middle frames, taken from that one decode (round 1: frames 13..20)
    for r, frame in ((0, 6), (1, 13 + 4)):
        key = np.asarray(Image.open(tmp_path / "s" / "rounds" / f"{r:03d}" / "keyframe.png"))
        np.testing.assert_array_equal(key, whole[frame])

    # frames around each chunk join (latents 2|3 and 4|5 -> frames 4|5 and 12|13) differ no more than inside chunks
    step = np.abs(np.diff(shot, axis=0)).mean((1, 2, 3))
    joins = [4 * CHUNK - 4, 4 * 2 * CHUNK - 4]
    inside = np.delete(step, joins)
    assert step[joins].max() <= inside.max()


def test_sample_cli_errors_are_clear(config, tmp_path, capsys):
    assert cli_main(["sample", "--continue", str(tmp_path / "none")]) == 2
    assert "holds no story session" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"shots": [{"prompt": "x", "extend": True}]}))
    assert (
        cli_main(["sample", "--checkpoint", config.checkpoint, "--script", str(bad), "--out", str(tmp_path / "o")]) == 2
    )
    assert "cannot be an extension" in capsys.readouterr().err
