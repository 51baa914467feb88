"""Unit tests of the cache-guided model: token layout, timesteps, rotary positions, loss masking."""

import numpy as np
import pytest
import torch

from training.model import CacheGuidedWan

SCHEDULE = ((1, 1, 2, 2), (2, 2, 4, 4), (4, 4, 8, 8))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CacheGuidedWan.from_preset("tiny", temporal_schedule=SCHEDULE).eval()


def _inputs(batch=2, frames=3, hist=7, shots=2, size=16):
    g = torch.Generator().manual_seed(1)
    return dict(
        target=torch.randn(batch, 4, frames, size, size, generator=g),
        timestep=torch.tensor([700.0, 250.0][:batch]),
        temporal_cache=torch.randn(batch, 4, hist, size, size, generator=g),
        temporal_timestep=torch.tensor([30.0, 80.0][:batch]),
        shot_cache=torch.randn(batch, shots, 4, 1, size, size, generator=g),
        shot_timestep=torch.tensor([[150.0, 390.0], [120.0, 260.0]])[:batch, :shots],
    )


def test_token_counts_per_compression_level(model):
    # 16x16 latents: 64 tokens per frame at 1x2x2, 16 at 2x4x4 per 2 frames, 4 at 4x8x8 per 4 frames
    x = _inputs()
    cases = {0: 0, 1: 64, 2: 64 + 16, 3: 64 + 16, 4: 64 + 16 + 4, 7: 64 + 16 + 4, 12: 64 + 16 + 4}
    for hist, expected in cases.items():
        packed = model.pack(x["target"], x["timestep"], torch.randn(2, 4, hist, 16, 16), 10.0)
        assert packed.counts["temporal"] == expected, hist
        assert packed.counts["target"] == 3 * 64 and packed.counts["shot"] == 0
    full = model.pack(**x)
    assert full.counts == {"shot": 2 * 64, "temporal": 84, "target": 192}
    assert full.hidden.shape == (2, 128 + 84 + 192, 32)
    # uncompressed history of 7 frames would be 7 * 64 = 448 tokens
    assert 7 * 64 / full.counts["temporal"] > 5


def test_per_token_timesteps_by_segment(model):
    x = _inputs()
    packed = model.pack(**x)
    ts, seg = packed.timesteps, packed.segments
    assert torch.all(ts[:, seg["target"]] == x["timestep"][:, None])
    assert torch.all(ts[:, seg["temporal"]] == x["temporal_timestep"][:, None])
    shot = ts[:, seg["shot"]].reshape(2, 2, 64)
    assert torch.all(shot == x["shot_timestep"][:, :, None])


def test_compressed_rotary_positions_are_averages(model):
    x = _inputs(hist=7)
    # the positions of a 4x8x8 token cover base-patch times 0..3 (the oldest 4 history frames, padded)
    # take the time axis from the rotary angles of the first t-frequency (== 1 rad per unit position)
    packed = model.pack(x["target"], x["timestep"], x["temporal_cache"], x["temporal_timestep"])
    cos = packed.rotary[0][0, :, 0, 0]
    sin = packed.rotary[1][0, :, 0, 1]
    t_pos = torch.atan2(sin, cos)
    seg = packed.segments["temporal"]
    # oldest level first: 4 tokens of 4x8x8 over frames 0..3, 16 of 2x4x4 over 4..5, 64 of frame 6
    expected = torch.cat([torch.full((4,), 1.5), torch.full((16,), 4.5), torch.full((64,), 6.0)])
    expected = torch.cat([expected, torch.tensor([7.0, 8.0, 9.0]).repeat_interleave(64)])
    got = torch.cat([t_pos[seg], t_pos[packed.segments["target"]]])
    assert torch.allclose(torch.cos(got), torch.cos(expected), atol=1e-5)  # angles wrap at pi
    assert torch.allclose(torch.sin(got), torch.sin(expected), atol=1e-5)


def test_compressed_embedding_is_mean_of_base_tokens(model):
    z = torch.randn(1, 4, 2, 4, 4)
    base = model.transformer.patch_embedding(z).mean(dim=(2, 3, 4))
    comp = model.cache_patch_embeddings["2x4x4"](z).flatten(1)
    assert torch.allclose(base[0], comp[0], atol=1e-5)


def test_empty_cache_equals_stock_wan_forward(model):
    x = _inputs(hist=0, shots=0)
    with torch.no_grad():
        stock = model.transformer(x["target"], x["timestep"], torch.ones(2, 5, 32)).sample
        ours = model(x["target"], x["timestep"], torch.ones(2, 5, 32))
        empty = model(
            x["target"], x["timestep"], torch.ones(2, 5, 32), x["temporal_cache"], 5.0, x["shot_cache"], 100.0
        )
    assert torch.allclose(stock, ours, atol=1e-5)
    assert torch.equal(empty, ours)  # zero-length caches are empty caches
    assert ours.shape == x["target"].shape


def test_loss_ignores_cache_tokens(model):
    x = _inputs()
    packed = model.pack(**x)
    hidden, temb = model.run_blocks(packed, torch.ones(2, 5, 32))
    hidden.retain_grad()
    pred = model.head(hidden, temb, packed)
    loss = torch.nn.functional.mse_loss(pred, torch.zeros_like(pred))
    loss.backward()
    grad = hidden.grad
    cache = slice(0, packed.segments["target"].start)
    assert torch.count_nonzero(grad[:, cache]) == 0
    assert torch.count_nonzero(grad[:, packed.segments["target"]]) > 0
    # but the caches do reach the prediction through attention
    with torch.no_grad():
        other = model(**{**x, "temporal_cache": x["temporal_cache"] + 1.0}, encoder_hidden_states=torch.ones(2, 5, 32))
    assert not torch.allclose(other, pred.detach())


def test_save_and_load_roundtrip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = CacheGuidedWan.from_pretrained(tmp_path / "m")
    assert [list(e) for e in loaded.config.temporal_schedule] == [list(e) for e in SCHEDULE]
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(
            loaded(**x, encoder_hidden_states=torch.ones(2, 5, 32)),
            model(**x, encoder_hidden_states=torch.ones(2, 5, 32)),
        )


def test_bad_kernel_is_rejected():
    with pytest.raises(ValueError, match="multiple"):
        CacheGuidedWan.from_preset("tiny", temporal_schedule=((1, 1, 3, 3),))
    assert np.isclose(CacheGuidedWan.from_preset("tiny").schedule_capacity, 7)


def test_wan_1_3b_shape_trains_at_480p_on_the_meta_device():
    """The real Wan2.1-1.3B shape runs a checkpointed training step at 480p with full caches: shapes only, no
    memory (the meta device), so the GPU configuration is exercised on any machine."""
    from training.trainer import flow_matching_loss

    with torch.device("meta"):
        model = CacheGuidedWan.from_preset("wan2.1-1.3b").train()
    model.enable_gradient_checkpointing()
    assert 1.3e9 < sum(p.numel() for p in model.parameters()) < 1.5e9
    meta = torch.device("meta")
    h, w = 60, 104  # 480x832 through the Wan VAE (8x)
    batch = {
        "target": torch.empty(1, 16, 21, h, w, device=meta),
        "temporal": torch.empty(1, 16, 16, h, w, device=meta),
        "shot_cache": torch.empty(1, 3, 16, 1, h, w, device=meta),
        "text": torch.empty(1, 512, 4096, device=meta),
        "timestep": torch.empty(1, device=meta),
        "temporal_timestep": torch.empty(1, device=meta),
        "shot_timesteps": torch.empty(1, 3, device=meta),
    }
    packed = model.pack(batch["target"], 1.0, batch["temporal"], 1.0, batch["shot_cache"], 1.0)
    per_frame = (h // 2) * (w // 2)
    assert packed.counts["shot"] == 3 * per_frame and packed.counts["target"] == 21 * per_frame
    assert 16 * per_frame / packed.counts["temporal"] > 5  # the differential compression at work
    flow_matching_loss(model, batch, torch.Generator()).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_installed_diffusers_meets_the_model_floor():
    """pyproject's floor is the model's MIN_DIFFUSERS, the installed diffusers meets it and has what it needs."""
    import pathlib
    import tomllib

    import diffusers
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from packaging.version import Version

    from training.model import MIN_DIFFUSERS

    deps = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"diffusers>={MIN_DIFFUSERS}" in deps
    assert Version(diffusers.__version__) >= Version(MIN_DIFFUSERS)
    rope = WanRotaryPosEmbed(attention_head_dim=16, patch_size=(1, 2, 2), max_seq_len=32)
    assert rope.t_dim + rope.h_dim + rope.w_dim == 16
