"""Story sessions never trap the user: a failed `sample` writes no session, a failed round leaves the session as
it was, paths are stored absolute, and `--continue` takes the `--set` values that are safe to change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from inference.config import SampleConfig, StoryScript
from inference.sampler import CacheGuidedSampler
from inference.story import StorySession
from pipelines.cli import main
from training.model import build_model
from training.tiny_models import write_tiny_models
from training.trainer import export_model

ONE = {"shots": [{"prompt": "a man walks in a room"}]}
MORE = {"shots": [{"prompt": "the man sits", "extend": True}, {"prompt": "a red car in the street"}]}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Tiny encoders, CLIP and settings (``filmweaver models tiny``) plus a tiny model as the trainer exports it."""
    d = tmp_path_factory.mktemp("models")
    write_tiny_models(str(d))
    torch.manual_seed(0)
    model = build_model("tiny")
    export_model(model, torch.optim.AdamW(model.parameters()), None, str(d / "model"), rank=0)
    settings = yaml.safe_load((d / "sample.yaml").read_text())
    settings.update(height=32, width=32, num_steps=2)
    (d / "sample.yaml").write_text(yaml.safe_dump(settings))
    return d


def write(path: Path, data) -> str:
    path.write_text(json.dumps(data))  # JSON is YAML
    return str(path)


def new_session(models: Path, script: str, out: Path, *extra: str) -> int:
    config = str(models / "sample.yaml")
    return main(
        [
            "sample",
            "--checkpoint",
            str(models / "model"),
            "--script",
            script,
            "--out",
            str(out),
            "--config",
            config,
            *extra,
        ]
    )


def test_a_failed_sample_writes_no_session(models, tmp_path, capsys):
    out = tmp_path / "story"
    bad_ref = write(tmp_path / "ref.yaml", {"shots": [{"prompt": "a man", "references": ["missing.png"]}]})
    assert new_session(models, bad_ref, out) == 2
    assert "reference image" in capsys.readouterr().err and not out.exists()
    script = write(tmp_path / "one.yaml", ONE)
    try:  # a model that fails to load
        code = new_session(models, script, out, "--set", f"encoders={tmp_path / 'no-encoders'}")
    except Exception:  # noqa: BLE001 - whichever way it fails, it must leave no session behind
        code = None
    assert code != 0 and not (out / "session.json").exists()
    assert new_session(models, script, out) == 0  # the rerun is not refused
    assert StorySession.open(str(out)).completed() == 1


class FailOnChunk:
    """The real sampler, raising on its ``n``-th generated chunk (a crash in the middle of a run)."""

    def __init__(self, sampler: CacheGuidedSampler, n: int):
        self.sampler, self.n, self.calls = sampler, n, 0

    def __getattr__(self, name):
        return getattr(self.sampler, name)

    def generate_chunk(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("injected failure")
        return self.sampler.generate_chunk(*args, **kwargs)


def test_a_failed_round_leaves_the_session_as_it_was(models, tmp_path):
    out = tmp_path / "story"
    assert new_session(models, write(tmp_path / "one.yaml", ONE), out) == 0
    saved = (out / "session.json").read_bytes()
    story = (out / "story.mp4").read_bytes()
    more = StoryScript.model_validate(MORE, context={"continuation": True})  # may continue the last shot
    sampler = CacheGuidedSampler(StorySession.open(str(out)).config)
    for _ in range(2):  # two failed extensions: the second round of the extension crashes each time
        with pytest.raises(RuntimeError, match="injected"):
            StorySession.open(str(out), more=more).run(FailOnChunk(sampler, 2))
        assert (out / "session.json").read_bytes() == saved and (out / "story.mp4").read_bytes() == story
        assert StorySession.open(str(out)).completed() == 1
    assert main(["sample", "--continue", str(out), "--script", write(tmp_path / "more.yaml", MORE)]) == 0
    session = StorySession.open(str(out))
    assert len(session.rounds) == session.completed() == 3 and session.shots() == [[0, 1], [2]]
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["000", "001", "002"]
    assert sorted(p.name for p in (out / "shots").iterdir()) == ["000.mp4", "001.mp4"]


def test_paths_are_absolute_and_continue_works_from_elsewhere(models, tmp_path, monkeypatch):
    monkeypatch.chdir(models.parent)
    rel = models.name
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(tmp_path / "hero.png")
    script = write(tmp_path / "one.yaml", {"shots": [{"prompt": "a man", "references": ["hero.png"]}]})
    out = tmp_path / "story"
    argv = ["sample", "--checkpoint", f"{rel}/model", "--script", script, "--out", str(out)]
    assert main([*argv, "--config", f"{rel}/sample.yaml", "--set", f"encoders={rel}/encoders"]) == 0
    data = json.loads((out / "session.json").read_text())
    config = SampleConfig.model_validate(data["config"])
    for path in (config.checkpoint, config.encoders, config.embed.pretrained, config.embed.clip_config_path):
        assert Path(path).is_absolute() and Path(path).exists()
    assert data["rounds"][0]["references"][0]["image"] == str(tmp_path / "hero.png")
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--continue", "story", "--script", write(tmp_path / "more.yaml", MORE)]) == 0
    assert StorySession.open(str(out)).completed() == 3


def test_continue_takes_safe_settings(models, tmp_path, capsys):
    out = tmp_path / "story"
    assert new_session(models, write(tmp_path / "one.yaml", ONE), out) == 0
    capsys.readouterr()
    assert main(["sample", "--continue", str(out), "--set", "height=64"]) == 2
    err = capsys.readouterr().err
    assert "--continue cannot change height" in err and "num_steps" in err
    assert main(["sample", "--continue", str(out), "--config", str(models / "sample.yaml")]) == 2
    assert "drop --checkpoint/--config" in capsys.readouterr().err
    more = write(tmp_path / "more.yaml", MORE)
    assert main(["sample", "--continue", str(out), "--script", more, "--set", "num_steps=1"]) == 0
    assert StorySession.open(str(out)).config.num_steps == 1  # kept for the next rounds


def test_a_session_without_a_finished_round_is_replaced(models, tmp_path):
    out = tmp_path / "story"
    config = SampleConfig.model_validate(yaml.safe_load((models / "sample.yaml").read_text()))
    config = config.model_copy(update={"checkpoint": str(models / "model")})
    StorySession.create(str(out), config, StoryScript.model_validate(ONE))  # written, never run
    assert new_session(models, write(tmp_path / "one.yaml", MORE | {"shots": ONE["shots"] * 2}), out) == 0
    assert StorySession.open(str(out)).completed() == 2
    assert new_session(models, write(tmp_path / "again.yaml", ONE), out) == 2  # now it holds generated rounds
