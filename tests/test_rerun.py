"""Rerun semantics: transient rejects are retried, content rejects stand, a config change is detected and
said, ``--reprocess`` redoes what it names, and a no-op rerun starts no engine (local and Ray)."""

from __future__ import annotations

import json
import logging

import pytest

from curation.captions import GroupCaptioner
from curation.config import load_config
from curation.records import TRANSIENT_REASONS, Reject
from curation.rerun import config_hash, plan_rerun
from curation.stage import Stage, run_stage
from curation.video import ProbeVideo
from filmweaver_testing.films import make_film
from pipelines import local
from pipelines.local import run_local


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    for seed in (3, 4):
        make_film(d / f"film{seed}.mp4", seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
    return sorted(str(p) for p in d.glob("*.mp4"))


@pytest.fixture(scope="module")
def config(small_settings):
    return load_config(None, small_settings)


@pytest.fixture(scope="module")
def clean(films, config, tmp_path_factory, dataset_view):
    out = tmp_path_factory.mktemp("clean")
    run_local(films, str(out), config)
    return dataset_view(out)


def test_config_hash_counts_only_what_changes_results(config, small_settings):
    speed_only = ["caption.concurrency=3", "embed.device=cpu", "export.encoders=3", "filters.face_threads=1"]
    same = load_config(None, [*small_settings, *speed_only])
    assert config_hash(same) == config_hash(config)
    for change in ("scenes.window=5", "export.crf=30", "export.threads=2", "caption.prompt_version=v2"):
        assert config_hash(load_config(None, [*small_settings, change])) != config_hash(config), change


def test_reasons_are_classified_at_the_source():
    class Flaky(Stage):
        name = "flaky"

        def __init__(self, exc):
            super().__init__()
            self.exc = exc

        def process(self, unit):
            raise self.exc

    class Unit:
        item_id, uri = "v1", "/x.mp4"

    reasons = {
        type(e).__name__: run_stage(Flaky(e), Unit())[0]
        for e in (ConnectionError("down"), OSError("nfs"), MemoryError(), ValueError("bug"))
    }
    assert {k: (r.reason, r.transient) for k, r in reasons.items()} == {
        "ConnectionError": ("connection-error", True),
        "OSError": ("io-error", True),
        "MemoryError": ("out-of-memory", True),
        "ValueError": ("error", False),
    }
    # the captioning client's reasons after its retries run out, and a content verdict
    assert {"rate-limited", "connection-error", "server-error", "timeout"} <= TRANSIENT_REASONS
    assert (
        not Reject("s", "u", "verify", "caption-wrong").transient and not Reject("v", "u", "probe", "corrupt").transient
    )


def test_plan_rerun_rules():
    journaled = {
        "ok": {"config": "h1", "rejected": False, "retry": []},
        "net": {"config": "h1", "rejected": False, "retry": ["connection-error"]},
        "bad": {"config": "h1", "rejected": True, "retry": []},
        "old": {"config": "h0", "rejected": False, "retry": []},
        "legacy": {"config": None, "rejected": None, "retry": []},
    }
    ids = [*journaled, "new"]
    plan = plan_rerun(journaled, ids, "h1")
    assert plan.skip == {"ok", "bad", "old", "legacy"} and plan.retry == {"connection-error": 1}
    assert plan.changed == ["old"] and "--reprocess changed" in plan.message()
    assert plan_rerun(journaled, ids, "h1", "changed").skip == {"ok", "bad", "legacy"}
    assert plan_rerun(journaled, ids, "h1", "failed").skip == {"ok", "old", "legacy"}
    assert plan_rerun(journaled, ids, "h1", "all").skip == set()


def test_transient_video_reject_is_retried_content_reject_is_not(
    films, config, clean, tmp_path, monkeypatch, dataset_view
):
    out = tmp_path / "out"
    real = ProbeVideo.process

    def flaky(self, unit):  # the first film's storage is unreachable in the first run
        if unit.uri == films[0]:
            raise ConnectionError("storage unreachable")
        return real(self, unit)

    monkeypatch.setattr(ProbeVideo, "process", flaky)
    first = run_local(films, str(out), config)
    assert first.rejects == {"probe/connection-error": 1}
    monkeypatch.undo()
    second = run_local(films, str(out), config)
    assert (second.videos, second.skipped) == (1, 1)
    assert dataset_view(out) == clean
    third = run_local(films, str(out), config)
    assert (third.videos, third.skipped) == (0, 2)


def test_transient_scene_reject_retries_its_video(films, config, clean, tmp_path, monkeypatch, dataset_view):
    out = tmp_path / "out"
    real = GroupCaptioner.process_batch

    def no_network(self, units):
        return [Reject(u.item_id, u.uri, "caption", "connection-error", "no route to host") for u in units]

    monkeypatch.setattr(GroupCaptioner, "process_batch", no_network)
    run_local(films, str(out), config)
    monkeypatch.setattr(GroupCaptioner, "process_batch", real)
    second = run_local(films, str(out), config)
    assert second.videos == 2 and second.skipped == 0
    assert dataset_view(out) == clean


def test_content_reject_stands(films, small_settings, tmp_path):
    out = tmp_path / "out"
    strict = load_config(None, [*small_settings, "filters.min_short_side=4000"])  # every video too small
    first = run_local(films, str(out), strict)
    assert first.videos_rejected == 2
    again = run_local(films, str(out), strict)
    assert (again.videos, again.skipped) == (0, 2)
    assert run_local(films, str(out), strict, reprocess="failed").videos == 2


def test_config_change_is_said_and_reprocess_changed_redoes(
    films, config, small_settings, tmp_path, caplog, dataset_view, tmp_path_factory
):
    out = tmp_path / "out"
    run_local(films, str(out), config)
    changed = load_config(None, [*small_settings, "scenes.window=1", "filters.min_scene_shots=1"])
    with caplog.at_level(logging.WARNING):
        kept = run_local(films, str(out), changed)
    assert (kept.videos, kept.skipped) == (0, 2)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of them were curated with another config (changed: scenes, filters)" in said
    assert "--reprocess changed" in said
    redone = run_local(films, str(out), changed, reprocess="changed")
    assert redone.videos == 2
    reference = tmp_path_factory.mktemp("changed-clean")
    run_local(films, str(reference), changed)
    assert dataset_view(out) == dataset_view(reference)
    run = json.loads((out / "run.json").read_text())
    assert [h.get("reprocess") for h in run["history"]] == [None, None, "changed"]
    assert "curated with another config" in run["history"][1]["rerun"][0]  # what the run said, kept


def test_noop_rerun_starts_no_engine(films, config, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_local(films, str(out), config)

    def no_engine(*_a, **_k):
        raise AssertionError("an engine was started for a no-op rerun")

    monkeypatch.setattr(local, "LocalPipeline", no_engine)
    summary = run_local(films, str(out), config)
    assert summary.skipped == 2
    from pipelines import curate

    monkeypatch.setattr(curate, "init_ray", no_engine)
    summary = curate.run_ray(films, str(out), config)
    assert summary.skipped == 2 and summary.engine == "ray"
    from pipelines import commands

    monkeypatch.setattr(commands, "_engine", no_engine)  # `filmweaver curate`: not even Ray Data is imported
    assert commands.curate(films, str(out), config, "ray").skipped == 2
    history = json.loads((out / "run.json").read_text())["history"]
    assert [(h["engine"], h.get("engine_started", True)) for h in history] == [
        ("local", True),
        ("local", False),
        ("ray", False),
        ("ray", False),
    ]
