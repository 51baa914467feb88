"""One CLI curation run over odd files and a good film: each odd file gets a reject row with a reason, files
that are merely unusual (MKV, WebM, rotated, variable frame rate) are processed, and the good film's scenes
are written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from filmweaver_testing.films import make_audio_only, make_film, make_simple_video
from pipelines.cli import main
from tests.clip_invariant import check_clips

SETTINGS = [
    "embed.backend=fallback",
    "video.analysis_short_side=96",
    "export.short_side=96",
    "filters.faces=false",
    "filters.min_shot_s=0.5",
]
FILM = {"n_scenes": 2, "shots_per_scene": (2, 2), "shot_seconds": (1.0, 1.3)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("odd")
    p = {name: d / name for name in ("good.mp4", "film.mkv", "film.webm", "empty.mp4", "truncated.mp4")}
    p.update({n: d / n for n in ("random.mp4", "audio.mp4", "one_frame.mp4", "tiny.mp4", "rotated.mp4", "vfr.mp4")})
    make_film(p["good.mp4"], seed=3, **FILM)
    make_film(p["film.mkv"], seed=4, **FILM)
    make_film(p["film.webm"], seed=5, codec="vp9", **FILM)
    p["empty.mp4"].write_bytes(b"")
    data = p["good.mp4"].read_bytes()
    p["truncated.mp4"].write_bytes(data[: len(data) // 2])
    p["random.mp4"].write_bytes(bytes(range(256)) * 400)
    make_audio_only(p["audio.mp4"])
    make_simple_video(p["one_frame.mp4"], n_frames=1, size=(320, 192))
    make_simple_video(p["tiny.mp4"], n_frames=48, size=(16, 16))
    make_simple_video(p["rotated.mp4"], n_frames=48, size=(320, 192), rotation=90)
    make_simple_video(p["vfr.mp4"], n_frames=48, size=(320, 192), vfr=True)
    return p


@pytest.fixture(scope="module")
def run(inputs, tmp_path_factory) -> tuple[Path, dict[str, list[dict]], str]:
    out = tmp_path_factory.mktemp("out")
    listing = out.parent / "inputs.txt"
    missing = inputs["good.mp4"].parent / "deleted_after_listing.mp4"
    listing.write_text("\n".join(str(p) for p in [*inputs.values(), missing]) + "\n")
    argv = ["curate", str(listing), "--out", str(out), "--engine", "local"]
    for s in SETTINGS:
        argv += ["--set", s]
    assert main(argv) == 0
    tables = {n: pq.read_table(out / "manifests" / f"{n}.parquet").to_pylist() for n in ("videos", "rejects", "scenes")}
    return out, tables, str(missing)


def _rejects_of(tables: dict, path: Path | str) -> list[tuple[str, str]]:
    return [(r["stage"], r["reason"]) for r in tables["rejects"] if r["uri"] == str(path)]


@pytest.mark.parametrize(
    "name, stages, reasons",
    [
        ("empty.mp4", {"probe"}, {"empty"}),
        ("truncated.mp4", {"probe", "shots"}, {"corrupt", "truncated"}),
        ("random.mp4", {"probe"}, {"corrupt"}),
        ("audio.mp4", {"probe"}, {"no-video-stream"}),
        ("one_frame.mp4", {"probe", "shots", "shot_filter"}, {"too-few-frames", "too-short"}),
        ("tiny.mp4", {"probe", "shot_filter", "scene_filter"}, {"too-small"}),
    ],
)
def test_odd_file_gets_a_reject_with_a_reason(run, inputs, name, stages, reasons):
    _, tables, _ = run
    rows = [r for r in tables["rejects"] if r["uri"] == str(inputs[name])]
    assert rows, f"no reject row for {name}"
    assert any(r["stage"] in stages and r["reason"] in reasons for r in rows), rows
    assert all(r["detail"] for r in rows)  # every reject says why
    assert not [s for s in tables["scenes"] if s["shard"] and _uri_of(tables, s["video_id"]) == str(inputs[name])]


def _uri_of(tables: dict, video_id: str) -> str:
    return next(v["uri"] for v in tables["videos"] if v["video_id"] == video_id)


@pytest.mark.parametrize("name", ["film.mkv", "film.webm", "rotated.mp4", "vfr.mp4"])
def test_unusual_but_valid_files_are_processed(run, inputs, name):
    _, tables, _ = run
    video = next(v for v in tables["videos"] if v["uri"] == str(inputs[name]))
    assert video["status"] == "ok" and video["n_shots"] >= 1
    if name == "rotated.mp4":
        assert (video["width"], video["height"], video["rotation"] % 180) == (192, 320, 90)
    if name == "vfr.mp4":
        assert video["variable_fps"]
    # a single-shot clip can only be dropped by the scene filter, never as a bad file
    assert {stage for stage, _ in _rejects_of(tables, inputs[name])} <= {"shot_filter", "scene_filter"}


def test_run_completes_and_good_films_are_written(run, inputs):
    out, tables, missing = run
    written = {_uri_of(tables, s["video_id"]) for s in tables["scenes"] if s["shard"]}
    assert {str(inputs[n]) for n in ("good.mp4", "film.mkv", "film.webm")} <= written
    assert _rejects_of(tables, missing) == [("probe", "missing")]
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["videos"] == len(inputs)  # every readable input has a videos row; the missing one only a reject


def test_missing_path_on_the_command_line_is_a_clear_error(tmp_path, capsys):
    assert main(["curate", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope.mp4" in err and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_every_written_clip_holds_its_shots_frames(run):
    """The clip invariant (tests/clip_invariant.py) over the MKV, WebM, rotated and VFR films written here."""
    out, tables, _ = run
    assert check_clips(out) == sum(len(s["shot_ids"]) for s in tables["scenes"] if s["shard"]) > 0


def test_an_input_read_by_a_later_run_loses_the_reject_it_had(tmp_path, small_settings):
    """A listed file missing (or unreadable) in one run is a reject keyed by its uri; once a rerun reads it,
    that row is stale and goes, beside its new video row (it used to stay, contradicting it)."""
    listing = tmp_path / "list.txt"
    listing.write_text("late.mp4\n")
    out = tmp_path / "out"
    argv = ["curate", str(listing), "--out", str(out), "--engine", "local"]
    argv += [a for s in small_settings for a in ("--set", s)]
    assert main(argv) == 0

    def rows(name: str) -> list[dict]:
        return pq.read_table(out / "manifests" / f"{name}.parquet").to_pylist()

    late = str(tmp_path / "late.mp4")
    assert [(r["item_id"], r["reason"]) for r in rows("rejects")] == [(late, "missing")]
    make_film(late, seed=2, n_scenes=1, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.0))
    assert main(argv) == 0
    assert [(v["uri"], v["status"]) for v in rows("videos")] == [(late, "ok")]
    assert not [r for r in rows("rejects") if r["item_id"] == late]
