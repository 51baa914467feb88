"""A user's mistake gets one line on stderr and exit status 2, with nothing written; -v adds the traceback."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("filmweaver: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "taken"
    path.write_text("a file, not a folder")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["curate", "{film}", "--out", "{out}"],
        ["curate", "{film}", "--out", "{out}/sub"],
        ["precompute", "{film}", "--out", "{out}"],
        ["sample", "--checkpoint", "tiny", "--script", "{script}", "--out", "{out}"],
        ["demo", "--out", "{out}"],
    ],
)
def test_out_naming_a_file(argv, a_file, tmp_path, capsys):
    film, script = tmp_path / "film.mp4", tmp_path / "s.yaml"
    film.write_bytes(b"x")
    script.write_text("shots: [{prompt: a man walks}]\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(film=film, out=a_file, script=script) for a in argv]
    assert main(argv) == 2
    one_line_error(capsys, str(a_file), "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and a_file.read_text() == "a file, not a folder"


def test_verbose_adds_the_traceback(a_file, tmp_path, capsys):
    assert main(["-v", "curate", str(tmp_path), "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("filmweaver: error:")


def test_evaluate_needs_finished_sessions(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    one_line_error(capsys, "is not a folder")
    assert main(["evaluate", str(tmp_path)]) == 2
    one_line_error(capsys, "holds no story session")
    (tmp_path / "session.json").write_text(json.dumps({"config": {}, "rounds": [{"prompt": "a man walks"}]}))
    assert main(["evaluate", str(tmp_path)]) == 2
    one_line_error(capsys, "not finished (0 of 1 rounds)", "--continue")


@pytest.fixture
def hub_unreachable(monkeypatch, tmp_path):
    """A Hugging Face Hub that refuses connections (as offline) and an empty model cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    return constants


def test_release_push_to_hub_offline_fails_before_writing(hub_unreachable, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ds"
    out.mkdir()
    assert main(["release", str(out), "--push-to-hub", "me/films"]) == 2
    one_line_error(capsys, "--push-to-hub", "did not")
    monkeypatch.setattr(hub_unreachable, "HF_HUB_OFFLINE", True)
    assert main(["release", str(out), "--push-to-hub", "me/films"]) == 2
    one_line_error(capsys, "HF_HUB_OFFLINE")
    assert list(out.iterdir()) == []  # no card written


def test_precompute_default_checkpoint_offline_fails_at_once(hub_unreachable, tmp_path, capsys, monkeypatch):
    out = tmp_path / "latents"
    assert main(["precompute", str(tmp_path), "--out", str(out)]) == 2
    one_line_error(capsys, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "not in the Hugging Face cache", "huggingface-cli")
    monkeypatch.setattr(hub_unreachable, "HF_HUB_OFFLINE", True)
    assert main(["precompute", str(tmp_path), "--out", str(out)]) == 2
    one_line_error(capsys, "HF_HUB_OFFLINE")
    assert main(["precompute", str(tmp_path), "--out", str(out), "--set", f"checkpoint={tmp_path}"]) == 2
    one_line_error(capsys, "has no vae/, text_encoder/, tokenizer/")
    assert not out.exists()


def test_train_asks_for_more_workers_than_the_cluster_has(tmp_path, capsys, monkeypatch):
    """Checked before Ray starts (a local Ray would have this machine's CPUs), so it fails at once."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--set", f"out_dir={out}", "--set", "distributed.num_workers=512"]
    assert main([*argv, "--set", "distributed.use_gpu=false"]) == 2
    assert not ray.is_initialized()
    one_line_error(capsys, "distributed.num_workers=512 needs 512 CPUs but this Ray cluster has")
    assert not out.exists()


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("filmweaver 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert "curate long videos into multi-shot scene datasets" in shown and "exit" in shown
    assert "register(subparsers)" not in shown and "cli`` module" not in shown
