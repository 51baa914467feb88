"""Training data and trainer on a tiny latent dataset made from synthetic scene shards (CPU)."""

import copy
import json
import os

import numpy as np
import pytest
import ray
import torch

from filmweaver_testing.scene_shards import write_synthetic_scenes
from pipelines.precompute import precompute
from training.config import CurriculumConfig, DataConfig, PrecomputeConfig, TrainConfig
from training.data import LatentDataset, SampleStream, mode_for
from training.encoders import save_tiny_checkpoint
from training.model import CacheGuidedWan
from training.trainer import flow_matching_loss, run_training, sample_to_batch


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_synthetic_scenes(str(root / "scenes"), n_scenes=4, shots=3, frames=13)
    save_tiny_checkpoint(str(root / "ckpt"))
    cfg = PrecomputeConfig(checkpoint=str(root / "ckpt"), height=32, width=32, max_frames=13, text_len=16)
    precompute([str(root / "scenes")], str(root / "latents"), cfg, engine="local")
    return str(root / "latents")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def _config(out_dir, latents, **optim):
    return TrainConfig(
        out_dir=str(out_dir),
        precision="fp32",
        log_every=2,
        checkpoint_every=3,
        data=DataConfig(latents=latents, chunk_frames=2, shot_cache_size=2, text_len=16, timestep_shift=1.0),
        curriculum=CurriculumConfig(stage2_step=2),
        optim={"lr": 2e-3, "warmup_steps": 2, "max_steps": 6, "grad_accum": 2, "ema_decay": 0.9, **optim},
    )


def _stream(latents, seed=0, **data):
    d = DataConfig(latents=latents, chunk_frames=2, shot_cache_size=2, text_len=16, **data)
    return SampleStream(LatentDataset(latents), d, CurriculumConfig(stage2_step=0), 7, (100, 400), (0, 100), seed)


def test_latent_dataset_layout(latents):
    ds = LatentDataset(latents)
    assert len(ds) == 4
    rec = ds.record(0)
    assert [s["latent_frames"] for s in rec["shots"]] == [4, 4, 4]  # 13 frames -> 1 + 12/4 latents
    assert ds.array(0, "000.latent.npy").shape == (4, 4, 4, 4)  # 32 px / 8
    assert ds.array(0, "001.keyframe.npy").shape == (4, 1, 4, 4)
    assert ds.array(0, "000.text.npy").shape[1] == 32


def test_samples_per_mode_and_timestep_ranges(latents):
    stream = _stream(latents, text_dropout=0.0)
    rng = np.random.default_rng(0)
    for mode in ("none", "temporal", "shot", "both"):
        s = stream.build(0, mode, rng)
        assert s.target.shape == (4, 2, 4, 4)
        assert (s.temporal.shape[1] > 0) == (mode in ("temporal", "both"))
        assert len(s.shot_cache) == (2 if mode in ("shot", "both") else 0)
        assert np.all((s.shot_timesteps >= 100) & (s.shot_timesteps <= 400))
        assert 0 <= s.temporal_timestep <= 100 and 0 <= s.timestep <= 1000
        if mode == "temporal":  # the history is the frames right before the target in the same shot
            shot = LatentDataset(latents).array(0, f"{s.shot:03d}.latent.npy")
            start = s.temporal.shape[1]
            np.testing.assert_array_equal(shot[:, :start], s.temporal)
            np.testing.assert_array_equal(shot[:, start : start + 2], s.target)


def test_negatives_at_configured_rate(latents):
    stream = _stream(latents, negative_rate=0.3)
    rng = np.random.default_rng(5)
    flags = np.concatenate([stream.build(i % 4, "shot", rng).negatives for i in range(300)])
    assert abs(flags.mean() - 0.3) < 0.05, flags.mean()
    none = _stream(latents, negative_rate=0.0)
    assert not np.concatenate([none.build(i % 4, "shot", rng).negatives for i in range(40)]).any()


def test_curriculum_switches_at_configured_step():
    cur = CurriculumConfig(stage2_step=10, stage2_mix={"none": 1, "shot": 1, "both": 2})
    rng = np.random.default_rng(0)
    assert {mode_for(s, cur, rng) for s in range(10) for _ in range(20)} == {"temporal"}
    after = [mode_for(10, cur, rng) for _ in range(2000)]
    assert set(after) == {"none", "shot", "both"}
    assert abs(after.count("both") / 2000 - 0.5) < 0.05


def test_loss_goes_down(latents, tmp_path):
    eval_stream = _stream(latents, seed=123, text_dropout=0.0)
    eval_samples = [eval_stream.next(step=5) for _ in range(12)]

    def eval_loss(model):
        with torch.no_grad():
            losses = [
                flow_matching_loss(model, sample_to_batch(s, torch.device("cpu")), torch.Generator().manual_seed(i))
                for i, s in enumerate(eval_samples)
            ]
        return float(torch.stack(losses).mean())

    torch.manual_seed(0)
    before = eval_loss(CacheGuidedWan.from_preset("tiny"))  # the trainer starts from these weights (seed 0)
    cfg = _config(tmp_path, latents, max_steps=40, ema_decay=0.0, grad_accum=1)
    cfg.checkpoint_every = 100
    history = run_training(cfg)
    after = eval_loss(CacheGuidedWan.from_pretrained(str(tmp_path / "model")))
    assert after < 0.8 * before, (before, after)
    assert len(history) == 40 and {"temporal", "both"} <= {m for r in history for m in r["modes"]}


def test_resume_reproduces_loss_curve(latents, tmp_path):
    full = run_training(_config(tmp_path / "full", latents))
    first = run_training(_config(tmp_path / "split", latents, max_steps=3))
    rest = run_training(_config(tmp_path / "split", latents))
    assert len(first) == 3 and len(rest) == 3
    assert [r["loss"] for r in first + rest] == [r["loss"] for r in full]
    assert [r["modes"] for r in first + rest] == [r["modes"] for r in full]
    a = CacheGuidedWan.from_pretrained(str(tmp_path / "full" / "model")).state_dict()
    b = CacheGuidedWan.from_pretrained(str(tmp_path / "split" / "model")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # EMA weights identical too
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]


def test_ray_train_two_workers(latents, tmp_path, ray_session):
    cfg = _config(tmp_path, latents, max_steps=3)
    cfg.distributed.num_workers = 2
    assert run_training(cfg) is None
    assert os.path.isfile(tmp_path / "checkpoints" / "step-00000003" / "state.pt")
    state = torch.load(tmp_path / "checkpoints" / "step-00000003" / "state.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["streams"]) == 2
    assert state["streams"][0]["samples"] == state["streams"][1]["samples"] == 6
    CacheGuidedWan.from_pretrained(str(tmp_path / "model"))


def test_fsdp_without_gpus_is_refused_at_start(latents, tmp_path):
    from curation.errors import ConfigError

    cfg = _config(tmp_path, latents)
    cfg.distributed.num_workers, cfg.distributed.strategy, cfg.distributed.use_gpu = 2, "fsdp", False
    with pytest.raises(ConfigError, match="FSDP is GPU-only"):
        run_training(cfg)
    assert not os.path.exists(tmp_path / "ray")  # refused before any Ray Train run started


def test_default_config_runs_both_curriculum_stages():
    cfg = TrainConfig()
    modes = {mode_for(s, cfg.curriculum, np.random.default_rng(s)) for s in range(cfg.optim.max_steps)}
    assert modes == {"none", "temporal", "shot", "both"}
    with pytest.raises(ValueError, match="stage 2 .* would never run"):
        TrainConfig(curriculum={"stage2_step": 500}, optim={"max_steps": 500})


def test_mismatched_checkpoint_fails_with_a_clear_message(latents, tmp_path):
    from curation.errors import ConfigError
    from training.model import build_model

    run_training(_config(tmp_path, latents, max_steps=3))
    path = tmp_path / "checkpoints" / "step-00000003" / "state.pt"
    state = torch.load(path, weights_only=False)
    state["model"]["extra.weight"] = state["model"].pop("transformer.proj_out.weight")
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"missing \(1\): transformer.proj_out.weight; unexpected \(1\): extra"):
        run_training(_config(tmp_path, latents, max_steps=4))
    # an exported model whose weights do not match its config.json
    model = build_model("tiny", num_layers=1)
    model.register_to_config(num_layers=2)
    model.save_pretrained(str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="does not match its config.json: missing keys"):
        build_model(str(tmp_path / "bad"))


def test_readme_sample_command_works_on_a_trained_tiny_model(latents, tmp_path, monkeypatch):
    """`filmweaver sample --checkpoint runs/x/model --script story.yaml --out story1`, nothing else set."""
    from pipelines.cli import main as cli_main

    cfg = _config(tmp_path / "runs" / "x", latents, max_steps=3)
    run_training(cfg)
    (tmp_path / "story.yaml").write_text("shots:\n  - {prompt: a red man walks, chunks: 2}\n  - {prompt: a blue car}\n")
    monkeypatch.chdir(tmp_path)
    args = [
        "sample",
        "--checkpoint",
        "runs/x/model",
        "--script",
        "story.yaml",
        "--out",
        "story1",
        "--set",
        "num_steps=2",
    ]
    assert cli_main(args) == 0
    config = json.loads((tmp_path / "story1" / "session.json").read_text())["config"]
    assert config["encoders"] == os.path.join(os.path.dirname(latents), "ckpt")
    assert (config["height"], config["width"], config["chunk_frames"], config["text_len"]) == (32, 32, 2, 16)
    assert config["num_steps"] == 2  # explicit settings win over the trainer's record
    assert (tmp_path / "story1" / "story.mp4").is_file()


def test_shot_cache_retrieval_by_caption_as_in_sampling(latents, monkeypatch):
    """'text' ranks the other shots' keyframes by similarity to the target's caption, 'image' to its keyframe."""
    image = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]], np.float32)  # shot 1's keyframe is like shot 0's
    text = np.array([[0, 0, 1], [1, 0, 0], [1, 0, 0]], np.float32)  # shot 0's caption describes shot 2's keyframe
    real = LatentDataset.array

    def array(self, i, ext):
        return {"clip.npy": image, "clip_text.npy": text}.get(ext) if ext.startswith("clip") else real(self, i, ext)

    monkeypatch.setattr(LatentDataset, "array", array)
    for retrieval, expected in (("text", 2), ("image", 1)):
        d = DataConfig(
            latents=latents, chunk_frames=2, shot_cache_size=1, negative_rate=0.0, shot_cache_retrieval=retrieval
        )
        stream = SampleStream(LatentDataset(latents), d, CurriculumConfig(stage2_step=0), 7, (100, 400), (0, 100))
        rng = np.random.default_rng(0)
        sample = next(s for s in (stream.build(0, "shot", rng) for _ in range(50)) if s.shot == 0)
        np.testing.assert_array_equal(sample.shot_cache[0], real(stream.ds, 0, f"{expected:03d}.keyframe.npy"))


def test_lr_warms_up_then_decays():
    from training.config import OptimConfig
    from training.trainer import lr_factor

    o = OptimConfig(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert [lr_factor(s, o) for s in (0, 9)] == [0.1, 1.0]
    assert lr_factor(60, o) == pytest.approx(0.55) and lr_factor(110, o) == pytest.approx(0.1)
    assert lr_factor(60, o.model_copy(update={"lr_schedule": "linear"})) == pytest.approx(0.55)
    assert lr_factor(35, o.model_copy(update={"lr_schedule": "linear"})) == pytest.approx(0.1 + 0.9 * 0.75)
    assert lr_factor(35, o) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4)))


def test_lora_fine_tuning_trains_adapters_and_exports_merged_weights(latents, tmp_path):
    from training.config import ModelConfig
    from training.trainer import add_lora, merge_lora

    m = ModelConfig(lora_rank=4, lora_alpha=8)
    torch.manual_seed(0)
    model = add_lora(CacheGuidedWan.from_preset("tiny"), m)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("cache_patch_embeddings.") for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    merged = CacheGuidedWan.from_preset("tiny")
    merged.load_state_dict(merge_lora(model.state_dict(), m))  # strict: a plain checkpoint
    sample = _stream(latents, seed=1).next(step=5)
    batch = sample_to_batch(sample, torch.device("cpu"))
    a = flow_matching_loss(model.eval(), batch, torch.Generator().manual_seed(0))
    b = flow_matching_loss(merged.eval(), batch, torch.Generator().manual_seed(0))
    assert a.item() == pytest.approx(b.item(), rel=1e-4)

    cfg = _config(tmp_path, latents, max_steps=3)
    cfg.model = m
    run_training(cfg)
    CacheGuidedWan.from_pretrained(str(tmp_path / "model"))
    run_training(_config(tmp_path, latents, max_steps=4).model_copy(update={"model": m}))  # resumes strictly


def _scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logs_and_held_out_validation(latents, tmp_path):
    from training.data import LatentDataset as Dataset
    from training.validation import held_out_scenes, validation_loss, validation_samples

    def config(out):
        cfg = _config(out, latents, max_steps=5)
        cfg.validation.every_steps, cfg.validation.scenes = 2, 1
        return cfg

    history = run_training(config(tmp_path / "a"))
    scalars = _scalars(tmp_path / "a")
    expected = {"loss/all", "loss/temporal", "loss/both", "lr", "grad_norm", "tokens_per_s", "samples_per_s"}
    assert expected | {"val/loss/all", "val/loss/temporal", "val/loss/shot"} <= set(scalars)
    assert [s for s, _ in scalars["loss/all"]] == [2, 4, 5]  # log_every=2 and the last step
    assert [v for _, v in scalars["lr"]] == pytest.approx([history[i]["lr"] for i in (1, 3, 4)])
    assert all(v > 0 for _, v in scalars["tokens_per_s"] + scalars["samples_per_s"])
    val = [json.loads(x) for x in (tmp_path / "a" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val] == [2, 4, 5]
    assert [v for _, v in scalars["val/loss/all"]] == pytest.approx([r["val/loss/all"] for r in val])

    # deterministic: another run gives the same numbers, and they are the exported (EMA) weights' loss
    assert (tmp_path / "a" / "validation.jsonl").read_text() == (
        run_training(config(tmp_path / "b")) and (tmp_path / "b" / "validation.jsonl").read_text()
    )
    cfg = config(tmp_path / "a")
    scenes = held_out_scenes(4, cfg)
    assert len(scenes) == 1
    model = CacheGuidedWan.from_pretrained(str(tmp_path / "a" / "model"))
    samples = validation_samples(
        cfg,
        scenes,
        {
            "history_frames": model.schedule_capacity,
            "shot_t_range": model.config.shot_cache_t_range,
            "temporal_t_range": model.config.temporal_cache_t_range,
        },
    )
    assert {s.scene for s in samples} == {Dataset(latents).scenes[scenes[0]][1]}
    again = validation_loss(model, samples, torch.device("cpu"), torch.autocast("cpu", enabled=False), cfg.seed)
    assert again == pytest.approx({k: v for k, v in val[-1].items() if k != "step"}, rel=1e-5)


def test_held_out_scenes_are_never_trained_on(latents):
    ds = LatentDataset(latents)
    held = {ds.array(3, f"{k:03d}.keyframe.npy").tobytes() for k in range(3)}
    d = DataConfig(latents=latents, chunk_frames=2, shot_cache_size=2, text_len=16, negative_rate=0.5)
    stream = SampleStream(ds, d, CurriculumConfig(stage2_step=0), 7, (100, 400), (0, 100), scenes=[0, 1, 2])
    samples = [stream.next(step=0) for _ in range(60)]
    assert {s.scene for s in samples} == {ds.scenes[i][1] for i in (0, 1, 2)}
    negatives = [e.tobytes() for s in samples for e, neg in zip(s.shot_cache, s.negatives) if neg]
    assert negatives and not held & set(negatives)


def test_prefetch_gives_the_same_samples_and_resumes_exactly(latents, tmp_path):
    def config(out, prefetch, tensorboard=False, **optim):
        cfg = _config(out, latents, **optim)
        cfg.data.prefetch, cfg.log.tensorboard = prefetch, tensorboard
        return cfg

    inline = run_training(config(tmp_path / "inline", 0))
    ahead = run_training(config(tmp_path / "ahead", 4))
    assert [r["loss"] for r in ahead] == [r["loss"] for r in inline]
    assert [r["modes"] for r in ahead] == [r["modes"] for r in inline]
    # interrupted after the step-3 checkpoint with the prefetch thread ahead; logs of an unsaved step 4
    first = run_training(config(tmp_path / "split", 3, tensorboard=True, max_steps=3))
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": -1.0}) + "\n")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "split" / "tensorboard")) as writer:
        writer.add_scalar("loss/all", -1.0, 4)
    rest = run_training(config(tmp_path / "split", 0, tensorboard=True))
    assert [r["loss"] for r in first + rest] == [r["loss"] for r in inline]
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert -1.0 not in [json.loads(x)["loss"] for x in lines]
    logged = _scalars(tmp_path / "split")["loss/all"]
    assert [s for s, _ in logged] == [2, 3, 4, 6] and all(v > 0 for _, v in logged)


def test_wandb_asked_for_but_not_installed_is_refused_at_start(latents, tmp_path, monkeypatch):
    import importlib.util

    from curation.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = _config(tmp_path, latents)
    cfg.log.wandb = True
    with pytest.raises(ConfigError, match="wandb is not installed"):
        run_training(cfg)
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_sequence_tokens_counts_the_packed_sequence(latents):
    model = CacheGuidedWan.from_preset("tiny")
    stream = _stream(latents)
    rng = np.random.default_rng(0)
    for mode in ("none", "temporal", "shot", "both"):
        s = stream.build(0, mode, rng)
        b = sample_to_batch(s, torch.device("cpu"))
        packed = model.pack(b["target"], b["timestep"], b["temporal"], b["temporal_timestep"], b["shot_cache"], 1.0)
        assert model.sequence_tokens(s.target.shape, s.temporal.shape[1], len(s.shot_cache)) == packed.hidden.shape[1]
    # history beyond the smallest levels: compressed levels with padding
    for frames in range(1, model.schedule_capacity + 3):
        packed = model.pack(torch.zeros(1, 4, 2, 4, 4), 1.0, torch.zeros(1, 4, frames, 4, 4), 1.0)
        assert model.sequence_tokens((2, 4, 4), frames) == packed.hidden.shape[1], frames


def test_validation_samples_videos_with_the_sampler(latents, tmp_path):
    import av

    cfg = _config(tmp_path, latents, max_steps=3)
    cfg.validation.every_steps, cfg.validation.scenes, cfg.validation.sample = 2, 1, True
    cfg.validation.sample_steps, cfg.log.tensorboard = 2, False
    run_training(cfg)
    folder = tmp_path / "validation" / "step_000002"
    rows = json.loads((folder / "samples.json").read_text())
    assert len(rows) == 1 and rows[0]["mode"] == "shot"  # the scene's other shots' keyframes as the shot cache
    with av.open(str(folder / rows[0]["video"])) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 1 + 4 * (2 - 1) and frames[0].shape == (32, 32, 3)  # one chunk of 2 latents
    val = [json.loads(x) for x in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val] == [2, 3] and (tmp_path / "validation" / "step_000003" / "samples.json").is_file()
    with pytest.raises(ValueError, match="does not run under FSDP"):
        TrainConfig(validation={"sample": True}, distributed={"num_workers": 2, "strategy": "fsdp"})


def test_micro_batches_share_a_layout_and_lose_no_sample(latents):
    from training.batching import BatchStream, layout

    stream = _stream(latents, seed=3)
    plain = [stream.next(step=0) for _ in range(40)]
    batches = BatchStream(_stream(latents, seed=3), size=3)
    out = [batches.next(step=0) for _ in range(10)]
    assert all(len({layout(s) for s in b}) == 1 and 1 <= len(b) <= 3 for b in out)
    assert sum(len(b) == 3 for b in out) >= 5
    drawn = [s for b in out for s in b] + batches.pending
    key = [(s.scene, s.shot, s.mode, s.timestep) for s in drawn]
    assert sorted(key) == sorted((s.scene, s.shot, s.mode, s.timestep) for s in plain[: len(key)])
    assert len(set(key)) == len(key)  # nothing drawn twice
    refiled = BatchStream(_stream(latents, seed=3), size=3)
    refiled.pending, refiled.state = batches.pending, copy.deepcopy(batches.state)  # as a checkpoint restores
    assert [s.timestep for s in refiled.next(step=0)] == [s.timestep for s in batches.next(step=0)]


def test_micro_batches_train_and_resume_exactly(latents, tmp_path):
    def config(out, **optim):
        cfg = _config(out, latents, micro_batch=2, **optim)
        cfg.log.tensorboard = False
        return cfg

    full = run_training(config(tmp_path / "full"))
    assert all(len(r["modes"]) >= 2 for r in full) and max(len(r["modes"]) for r in full) == 4
    first = run_training(config(tmp_path / "split", max_steps=3))
    state = torch.load(tmp_path / "split" / "checkpoints" / "step-00000003" / "state.pt", weights_only=False)
    assert state["pending"][0]  # samples waiting in their buckets are part of the saved position
    rest = run_training(config(tmp_path / "split"))
    assert [r["loss"] for r in first + rest] == [r["loss"] for r in full]
    assert [r["modes"] for r in first + rest] == [r["modes"] for r in full]
