"""Reading curated outputs of both engines as the README and the card say: ``filmweaver shards`` (list and
brace pattern), the README's index.json snippet, ``load_scenes`` in a DataLoader with workers, and the card's
snippets in a release of a Ray-engine output (shard names ``scenes-<run>-<writer>-<n>.tar``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from braceexpand import braceexpand

from curation.config import load_config
from data_cards.loading import brace_pattern, load_scenes, shard_urls
from data_cards.release import build_release
from filmweaver_testing.films import make_film
from pipelines.cli import main


@pytest.mark.parametrize(
    "urls",
    [
        ["shards/scenes-000000.tar"],
        ["shards/scenes-000009.tar", "shards/scenes-000010.tar", "shards/scenes-000011.tar"],
        [
            "shards/s-20261130a-00000-000000.tar",
            "shards/s-20261130a-00000-000001.tar",
            "shards/s-20261130a-00001-000000.tar",
        ],
        ["a/x-1.tar", "a/x-3.tar", "b/odd,name{1}.tar", "/abs/p-01.tar", "/abs/p-1.tar"],
    ],
)
def test_brace_pattern_expands_to_exactly_the_urls(urls):
    assert list(braceexpand(brace_pattern(urls))) == urls


def test_shards_of_an_output_without_index(tmp_path, capsys):
    (tmp_path / "shards").mkdir()
    assert main(["shards", str(tmp_path)]) == 2
    assert "index.json does not exist" in capsys.readouterr().err
    (tmp_path / "index.json").write_text('{"shards": []}')
    assert main(["shards", str(tmp_path), "--pattern"]) == 1
    assert "lists no shards" in capsys.readouterr().err


def test_shards_of_an_object_store_output(tmp_path, capsys, monkeypatch):
    """``filmweaver shards s3://bucket/ds`` reads index.json through pyarrow.fs (a moto server on loopback)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="curated")
        names = ["shards/scenes-run1-00000-000000.tar", "shards/scenes-run1-00001-000000.tar"]
        index = {"shards": [{"url": n, "nsamples": 1, "bytes": 1, "sha256": ""} for n in names]}
        s3.put_object(Bucket="curated", Key="out/index.json", Body=json.dumps(index).encode())
        s3.put_object(Bucket="curated", Key=f"out/{names[0]}", Body=b"x")
        assert main(["shards", "s3://curated/out"]) == 2  # the second shard is missing
        assert "1 shards that are missing, e.g. shards/scenes-run1-00001-000000.tar" in capsys.readouterr().err
        s3.put_object(Bucket="curated", Key=f"out/{names[1]}", Body=b"x")
        assert main(["shards", "s3://curated/out"]) == 0
        assert capsys.readouterr().out.split() == [f"s3://curated/out/{n}" for n in names]
        assert main(["shards", "s3://curated/out", "--pattern"]) == 0
        assert capsys.readouterr().out.strip() == "s3://curated/out/shards/scenes-run1-{00000-000000,00001-000000}.tar"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def outputs(small_settings, tmp_path_factory) -> dict[str, Path]:
    """One local-engine and one Ray-engine output of two tiny films, several shards each."""
    import ray

    from pipelines.curate import run_ray
    from pipelines.local import run_local

    films = tmp_path_factory.mktemp("films")
    inputs = []
    for seed in (1, 2):
        make_film(
            str(films / f"film{seed}.mp4"), seed=seed, n_scenes=2, shots_per_scene=(2, 2), shot_seconds=(0.8, 1.0)
        )
        inputs.append(str(films / f"film{seed}.mp4"))
    config = load_config(None, [*small_settings, "shards.max_bytes=1"])  # a shard per video
    local = tmp_path_factory.mktemp("local")
    run_local(inputs, str(local), config)
    ray_out = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        run_ray(inputs, str(ray_out), config, videos_per_write=1)
    finally:
        ray.shutdown()
    return {"local": local, "ray": ray_out}


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


def scene_keys(out: Path) -> list[str]:
    """Scenes written to a shard, from the manifest."""
    return sorted(r["scene_id"] for r in pq.read_table(out / "manifests" / "scenes.parquet").to_pylist() if r["shard"])


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_shards_command_and_readme_snippet(outputs, engine, capsys, monkeypatch):
    out = outputs[engine]
    keys = scene_keys(out)
    assert main(["shards", str(out)]) == 0
    urls = capsys.readouterr().out.split()
    assert len(urls) >= 2 and urls == shard_urls(out) and all(Path(u).is_file() for u in urls)
    if engine == "ray":
        assert all(re.fullmatch(r"scenes-\d+\w*-\d+-\d+\.tar", Path(u).name) for u in urls)
    assert main(["shards", str(out), "--pattern"]) == 0
    pattern = capsys.readouterr().out.strip()
    assert list(braceexpand(pattern)) == urls
    assert sorted(s["__key__"] for s in wds.WebDataset(pattern, shardshuffle=False)) == keys

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = next(b for b in python_blocks(readme) if "index.json" in b)
    namespace: dict = {}
    exec(snippet.replace('out = "OUT"', f"out = {str(out)!r}"), namespace)
    assert sorted(s["__key__"] for s in namespace["scenes"]) == keys


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_load_scenes_in_a_dataloader(outputs, engine):
    out = outputs[engine]
    loader = torch.utils.data.DataLoader(load_scenes(out, shuffle=8), batch_size=None, num_workers=2)
    scenes = list(loader)
    assert sorted(s["key"] for s in scenes) == scene_keys(out)  # each scene once across workers
    for s in scenes:
        n = len(s["record"]["shots"])
        assert len(s["clips"]) == len(s["keyframes"]) == s["embeddings"].shape[0] == n
        assert s["clips"][0][4:8] == b"ftyp" and s["keyframes"][0][:2] == b"\xff\xd8"


@pytest.fixture(scope="module")
def releases(outputs, tmp_path_factory) -> dict[str, Path]:
    return {engine: build_release(out).root for engine, out in outputs.items()}


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_readme_and_card_snippets_on_releases(outputs, releases, engine, tmp_path, monkeypatch):
    """The README's datasets snippet and every snippet of the release's card, as written; the card's brace
    pattern names that engine's shards."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out, release = outputs[engine], releases[engine]
    keys = scene_keys(out)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = next(b for b in python_blocks(readme) if "OUT/release" in b)
    namespace: dict = {}
    exec(snippet.replace('"OUT/', f'"{out}/'), namespace)
    assert sorted(namespace["scenes"]["__key__"]) == keys
    assert sorted(namespace["shots"]["shot_id"]) == sorted(
        pq.read_table(out / "manifests" / "shots.parquet")["shot_id"].to_pylist()
    )

    text = (release / "README.md").read_text()
    assert brace_pattern(shard_urls(release, absolute=False)) in text
    monkeypatch.chdir(release)
    for block in python_blocks(text):
        namespace = {}
        exec(block, namespace)
        assert sorted(r["__key__"] for r in namespace["scenes"]) == keys
