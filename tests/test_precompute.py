"""The precompute Ray Data job: scene shards in, latent shards out (tiny VAE and text encoder, CPU)."""

import numpy as np
import pytest
import ray
import webdataset as wds

from curation.embed import FallbackEmbedder
from filmweaver_testing.scene_shards import write_synthetic_scenes
from pipelines.cli import build_parser
from pipelines.precompute import clip_frames, fit_frame, precompute, scene_shards
from training.config import PrecomputeConfig
from training.data import LatentDataset
from training.encoders import WanEncoders, save_tiny_checkpoint


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_fit_frame_covers_and_crops():
    frame = np.zeros((40, 80, 3), np.uint8)
    frame[:, 38:42] = 255  # a centred vertical bar survives the centre crop
    out = fit_frame(frame, 32, 32)
    assert out.shape == (32, 32, 3)
    assert out[:, 14:18].mean() > 100 and out[:, :8].mean() < 5


def test_precompute_ray_job_writes_latent_shards(tmp_path, ray_session):
    write_synthetic_scenes(str(tmp_path / "scenes"), n_scenes=2, shots=2, frames=9)
    save_tiny_checkpoint(str(tmp_path / "ckpt"))
    cfg = PrecomputeConfig(checkpoint=str(tmp_path / "ckpt"), height=32, width=48, max_frames=9, text_len=8)
    index = precompute([str(tmp_path / "scenes")], str(tmp_path / "latents"), cfg, engine="ray")
    assert sum(s["nsamples"] for s in index["shards"]) == 2
    ds = LatentDataset(str(tmp_path / "latents"))
    assert sorted(key for _, key in ds.scenes) == ["vsynth0000-c0000", "vsynth0001-c0000"]
    for i in range(2):
        rec = ds.record(i)
        assert [s["latent_frames"] for s in rec["shots"]] == [3, 3]  # 9 frames -> 1 + 8/4
        assert ds.array(i, "000.latent.npy").shape == (4, 3, 4, 6) and ds.array(i, "000.latent.npy").dtype == np.float16
        assert ds.array(i, "001.keyframe.npy").shape == (4, 1, 4, 6)
        assert ds.array(i, "clip.npy").shape == (
            2,
            FallbackEmbedder().embed_images([np.zeros((8, 8, 3), np.uint8)]).shape[1],
        )
        # the last synthetic shot has no caption: it is encoded as the empty caption
        np.testing.assert_array_equal(ds.array(i, "001.text.npy"), ds.empty_text)
        assert not np.array_equal(ds.array(i, "000.text.npy")[: len(ds.empty_text)], ds.empty_text)
    # shot-cache keyframes are the middle encoded frame of the clip at the training resolution (as sampling)
    (sample,) = list(wds.WebDataset(scene_shards([str(tmp_path / "scenes")])[0], shardshuffle=False).slice(1))
    frames = clip_frames(sample["001.mp4"], cfg)
    assert frames.shape == (9, 32, 48, 3)
    expected = WanEncoders(cfg.checkpoint, "cpu", 8).encode_frames(frames[4:5])
    np.testing.assert_array_equal(ds.array(0, "001.keyframe.npy"), expected)


def test_cli_registers_train_and_precompute():
    args = build_parser().parse_args(["train", "--config", "tiny", "--set", "optim.max_steps=3"])
    assert args.overrides == ["optim.max_steps=3"]
    args = build_parser().parse_args(["precompute", "in", "--out", "o", "--engine", "local"])
    assert args.inputs == ["in"] and args.engine == "local"
