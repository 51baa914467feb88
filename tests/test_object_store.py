"""Object-store URIs against a local S3-compatible server (moto, loopback only)."""

from __future__ import annotations

import os

import pytest

from pipelines import storage

BUCKET = "films"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; the AWS env points every client (and subprocess) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        storage._filesystem.cache_clear()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield env
        storage._filesystem.cache_clear()
    server.stop()


def test_resolve_local_and_remote(tmp_path, s3):
    fs, path = storage.resolve(str(tmp_path / "x"))
    assert fs.type_name == "local" and path == str(tmp_path / "x")
    fs, path = storage.resolve(f"file://{tmp_path}/y")
    assert fs.type_name == "local" and path == f"{tmp_path}/y"
    fs, path = storage.resolve(f"s3://{BUCKET}/a/b.mp4")
    assert fs.type_name == "s3" and path == f"{BUCKET}/a/b.mp4"
    assert storage.join(f"s3://{BUCKET}/out/", "shards", "x.tar") == f"s3://{BUCKET}/out/shards/x.tar"
    with pytest.raises(storage.ConfigError, match="unsupported URI scheme"):
        storage.resolve("ftp://host/x")


def test_atomic_write_list_read_delete(s3):
    base = f"s3://{BUCKET}/t1"
    storage.write_bytes(f"{base}/a/one.mp4", b"1" * 10)
    storage.write_text(f"{base}/a/b/two.MKV", "two")
    storage.write_bytes(f"{base}/three.txt", b"3")
    assert storage.read_bytes(f"{base}/a/one.mp4") == b"1" * 10
    assert storage.read_text(f"{base}/a/b/two.MKV") == "two"
    assert storage.exists(f"{base}/three.txt") and not storage.exists(f"{base}/nope")
    # no temporary keys left behind by the atomic writes
    assert storage.list_files(base) == [f"{base}/a/b/two.MKV", f"{base}/a/one.mp4", f"{base}/three.txt"]
    assert storage.list_files(base, (".mp4", ".mkv")) == [f"{base}/a/b/two.MKV", f"{base}/a/one.mp4"]
    assert storage.list_files(f"{base}/a/*.mp4") == [f"{base}/a/one.mp4"]
    with storage.open_input(f"{base}/a/one.mp4") as f:  # ranged reads, seekable
        f.seek(8)
        assert f.read(5) == b"11" and f.size() == 10
    storage.delete(f"{base}/three.txt")
    storage.delete(f"{base}/three.txt")  # deleting a missing file is fine
    assert not storage.exists(f"{base}/three.txt")


def test_failed_atomic_write_leaves_nothing(s3, tmp_path):
    for base in (f"s3://{BUCKET}/t2", str(tmp_path)):
        with pytest.raises(RuntimeError), storage.atomic_output(storage.join(base, "x.bin")) as f:
            f.write(b"partial")
            raise RuntimeError("killed")
        assert storage.list_files(base) == []
        storage.write_bytes(storage.join(base, "x.bin"), b"new")
        storage.write_bytes(storage.join(base, "x.bin"), b"newer")  # replaces
        assert storage.read_bytes(storage.join(base, "x.bin")) == b"newer"
        assert [os.path.basename(u) for u in storage.list_files(base)] == ["x.bin"]


def test_curate_bucket_to_bucket(s3, small_settings, tmp_path):
    """Films read from a bucket, the dataset written to a bucket by the Ray executor, read back and checked."""
    import hashlib
    import io
    import json
    import tarfile

    import pyarrow.parquet as pq
    import ray

    from curation.config import load_config
    from filmweaver_testing.films import make_film
    from pipelines.curate import run_ray
    from pipelines.inputs import expand_inputs
    from pipelines.local import run_local

    config = load_config(None, [*small_settings, "shards.max_bytes=60000"])
    for seed in (1, 2):
        make_film(tmp_path / f"film{seed}.mp4", seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
        storage.write_bytes(f"s3://{BUCKET}/in/film{seed}.mp4", (tmp_path / f"film{seed}.mp4").read_bytes())
    uris = expand_inputs([f"s3://{BUCKET}/in/"])
    assert uris == [f"s3://{BUCKET}/in/film1.mp4", f"s3://{BUCKET}/in/film2.mp4"]
    out = f"s3://{BUCKET}/datasets/v1"
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": s3})
    try:
        summary = run_ray(uris, out, config, videos_per_write=1)
    finally:
        ray.shutdown()
    assert summary.videos == 2 and summary.videos_rejected == 0

    def samples(read) -> dict[str, str]:
        found = {}
        for s in json.loads(read("index.json"))["shards"]:
            data = read(s["url"])
            assert hashlib.sha256(data).hexdigest() == s["sha256"]
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    data = tar.extractfile(m).read()
                    if m.name.endswith(".json"):  # the same but for where the video was read from
                        record = json.loads(data)
                        assert record["video"].pop("uri").startswith(("s3://", str(tmp_path)))
                        data = json.dumps(record, sort_keys=True).encode()
                    found[m.name] = hashlib.sha256(data).hexdigest()
        return found

    remote = samples(lambda rel: storage.read_bytes(f"{out}/{rel}"))
    run_local([str(tmp_path / "film1.mp4"), str(tmp_path / "film2.mp4")], str(tmp_path / "local"), config)
    assert remote and remote == samples(lambda rel: (tmp_path / "local" / rel).read_bytes())
    videos = pq.read_table(io.BytesIO(storage.read_bytes(f"{out}/manifests/videos.parquet"))).to_pylist()
    assert sorted(v["uri"] for v in videos) == uris and all(v["status"] == "ok" for v in videos)
    run = json.loads(storage.read_text(f"{out}/run.json"))
    assert run["engine"] == "ray" and run["counts"]["samples"] == summary.scenes_written
    assert not [u for u in storage.list_files(out) if ".tmp" in u]


def test_llm_response_cache_in_a_bucket(s3, monkeypatch):
    """Captioning into an object-store output keeps its response cache there: a second run asks nothing."""
    from curation.captions.cache import ResponseCache
    from curation.captions.stages import CaptionVerifier, GroupCaptioner
    from curation.config import CurateConfig
    from curation.stage import SceneUnit, run_stage_batch
    from filmweaver_testing.fake_llm import FakeGemini, make_scene_units

    cache = ResponseCache(f"s3://{BUCKET}/c0")
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, {"response": "x"})
    assert cache.get("ab" * 32) == {"response": "x"}
    assert storage.list_files(f"s3://{BUCKET}/c0") == [f"s3://{BUCKET}/c0/ab/{'ab' * 32}.json"]

    monkeypatch.setenv("GEMINI_API_KEY", "AIzaFAKE-object-store-test")
    units = make_scene_units(2, 2, video="vbucket")
    out = f"s3://{BUCKET}/datasets/captioned"
    with FakeGemini() as srv:
        cfg = CurateConfig()
        cfg.caption.backend, cfg.caption.base_url = "gemini", srv.url
        for run in range(2):
            stages = [GroupCaptioner(cfg, out), CaptionVerifier(cfg, out)]
            results = units
            for stage in stages:
                results = run_stage_batch(stage, results)
                stage.close()
            assert all(isinstance(u, SceneUnit) and u.scene.caption_status == "captioned" for u in results)
            if run == 0:
                first = dict(srv.counts)
                assert first["generate"] == 4  # a caption and a verification request per scene
    assert dict(srv.counts) == first  # the second run was answered from the bucket
    assert len(storage.list_files(f"{out}/llm_cache")) == 4
