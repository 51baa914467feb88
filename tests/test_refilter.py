"""Score-only mode keeps every shot and records verdicts; ``refilter`` on stored scores gives the verdicts and
the dataset of a fresh run with the same thresholds, without decoding."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import webdataset as wds

from curation.config import load_config
from data_cards.dataset import CuratedDataset
from filmweaver_testing.films import make_film
from pipelines.cli import main as cli_main
from pipelines.local import run_local
from pipelines.precompute import read_scene_rows, scene_shards
from pipelines.refilter import refilter, view_config


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    paths = []
    for seed in (3, 4):
        path = str(d / f"film{seed}.mp4")
        make_film(path, seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
        paths.append(path)
    return paths


def _run(films, out, settings, extra):
    return run_local(films, str(out), load_config(None, [*settings, "filters.mode=score", *extra]))


@pytest.fixture(scope="module")
def score_run(films, small_settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("score")
    _run(films, out, small_settings, [])
    return out


def _tight(manifests, out) -> str:
    """A min_motion threshold that drops about a third of the shots of ``out``."""
    flows = sorted(s["flow"] for s in manifests(out)["shots"])
    return f"filters.min_motion={(flows[len(flows) // 3] + flows[len(flows) // 3 - 1]) / 2}"


def test_score_mode_keeps_everything_and_records_scores(score_run, manifests):
    m = manifests(score_run)
    assert m["shots"] and all(s["kept"] and s["reject_reason"] is None for s in m["shots"])
    assert all(s["shard"] is not None for s in m["scenes"])  # every scene written, even single-shot ones
    for s in m["shots"]:
        assert s["flow"] > 0 and s["frozen"] == 0.0 and s["sharpness"] > 0 and s["text_area"] is not None
    for sc in m["scenes"]:
        assert sc["resolution_bucket"] == "lt360p" and sc["aspect_bucket"] == "16:9"  # 320x192 films
        assert sc["duration_bucket"] and sc["mean_flow"] > 0


def test_score_mode_writes_single_shot_scenes_for_refilter_to_choose(small_settings, tmp_path, manifests):
    """Scenes below filters.min_scene_shots get the verdict, not a drop: the export used to drop them anyway,
    so refilter --set filters.min_scene_shots=1 could not bring them back."""
    film = str(tmp_path / "singles.mp4")
    make_film(film, seed=5, n_scenes=3, shots_per_scene=(1, 1), shot_seconds=(1.0, 1.5))
    _run([film], tmp_path / "out", small_settings, ["scenes.threshold=0.99"])
    scenes = manifests(tmp_path / "out")["scenes"]
    assert len(scenes) >= 2 and all(len(s["shot_ids"]) == 1 for s in scenes)
    assert all(s["shard"] is not None and s["verdict"] == "too-few-shots" for s in scenes)
    base, config = view_config(str(tmp_path / "out"), None, ["filters.min_scene_shots=1"])
    refilter(str(tmp_path / "out"), str(tmp_path / "view"), config, base)
    assert all(s["shard"] is not None for s in manifests(tmp_path / "view")["scenes"])


def test_refilter_equals_fresh_run(films, score_run, small_settings, manifests, tmp_path):
    tight = _tight(manifests, score_run)
    fresh = tmp_path / "fresh"
    _run(films, fresh, small_settings, [tight])
    base, config = view_config(str(score_run), None, [tight])
    assert config.filters.min_motion > 0 and base.filters.mode == "score"
    view = tmp_path / "view"
    run = refilter(str(score_run), str(view), config, base)

    source, f, v = manifests(score_run), manifests(fresh), manifests(view)
    fresh_verdicts = {s["shot_id"]: s["verdict"] for s in f["shots"]}
    assert {s["shot_id"]: s["verdict"] for s in v["shots"]} == fresh_verdicts
    assert "low-motion" in fresh_verdicts.values() and None in fresh_verdicts.values()
    assert {s["scene_id"]: s["verdict"] for s in v["scenes"]} == {s["scene_id"]: s["verdict"] for s in f["scenes"]}
    # the view holds exactly the scenes that qualify in the fresh run, with exactly their passing shots
    passing = {s["shot_id"] for s in f["shots"] if s["verdict"] is None}
    expected = {
        sc["scene_id"]: [i for i in sc["shot_ids"] if i in passing] for sc in f["scenes"] if sc["verdict"] is None
    }
    written = {sc["scene_id"]: sc["shot_ids"] for sc in v["scenes"] if sc["shard"]}
    assert written == expected and 0 < len(written) < len(source["scenes"])
    assert {s["shot_id"] for s in v["shots"] if s["kept"]} == {i for ids in expected.values() for i in ids}
    assert run["counts"]["samples"] == len(expected) and run["refiltered_from"] == str(score_run)

    # repacked samples: renumbered members, embeddings and json of the kept shots, the same bytes as the source
    tars = sorted(str(p) for p in (score_run / "shards").glob("*.tar"))
    src = {s["__key__"]: s for s in wds.WebDataset(tars, shardshuffle=False)}
    index = json.loads((view / "index.json").read_text())["shards"]
    for sample in wds.WebDataset([str(view / s["url"]) for s in index], shardshuffle=False):
        ids = expected[sample["__key__"]]
        meta = json.loads(sample["json"])
        assert [s["shot_id"] for s in meta["shots"]] == ids
        old = src[sample["__key__"]]
        old_ids = [s["shot_id"] for s in json.loads(old["json"])["shots"]]
        rows = [old_ids.index(i) for i in ids]
        emb = np.load(io.BytesIO(sample["clip.npy"]))
        np.testing.assert_array_equal(emb, np.load(io.BytesIO(old["clip.npy"]))[rows])
        for j, r in enumerate(rows):
            assert sample[f"{j:03d}.mp4"] == old[f"{r:03d}.mp4"] and sample[f"{j:03d}.jpg"] == old[f"{r:03d}.jpg"]
        assert f"{len(ids):03d}.mp4" not in sample
        if ids == old_ids:
            assert sample["json"] == old["json"]

    # the readers take the view as any curated output: the card's dataset reader and precompute's shard reader
    ds = CuratedDataset.load(view)
    assert {r["scene_id"] for r in ds.rows("scenes") if r["shard"]} == set(expected)
    rows = [r for shard in scene_shards([str(view)]) for r in read_scene_rows({"url": shard})]
    assert {r["key"]: len(r["mp4"]) for r in rows} == {k: len(v) for k, v in expected.items()}


def test_refilter_cli_loosens_back_and_refuses_same_folder(score_run, manifests, tmp_path, capsys):
    view = tmp_path / "loose"
    assert cli_main(["refilter", str(score_run), "--out", str(view), "--set", "filters.min_scene_shots=1"]) == 0
    assert "view written" in capsys.readouterr().out
    m = manifests(view)
    assert all(s["kept"] for s in m["shots"]) and all(sc["shard"] for sc in m["scenes"])
    assert cli_main(["refilter", str(score_run), "--out", str(score_run)]) == 2
