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
