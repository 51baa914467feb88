"""Local paths and object-store URIs (``s3://``, ``gs://``, ``file://``) behind one small API on ``pyarrow.fs``.

Credentials and endpoints come from the usual environment of each store (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL`` for S3-compatible servers such as MinIO, ``GOOGLE_APPLICATION_CREDENTIALS`` ...), so
Ray workers configured like the driver resolve the same URIs. Writes are atomic everywhere: bytes go to a
temporary name beside the target, which is moved over the target once complete (a rename on local disks, a
server-side copy + delete on object stores), so readers never see a partial file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from curation.errors import ConfigError

REMOTE_SCHEMES = ("s3", "gs", "gcs")
_GLOB_CHARS = "*?["
_COPY_CHUNK = 8 << 20


def scheme(uri: str) -> str:
    """The URI scheme (``s3``, ``gs`` ...), or ``""`` for a plain local path."""
    head, sep, _ = str(uri).partition("://")
    return head.lower() if sep else ""


def is_remote(uri: str) -> bool:
    """True for object-store URIs: workers on other nodes see the same data."""
    return scheme(uri) in REMOTE_SCHEMES


@functools.lru_cache(maxsize=64)
def _filesystem(prefix: str) -> pafs.FileSystem:
    # one filesystem per bucket: S3 resolves the bucket's region with a request on creation
    try:
        fs, _ = pafs.FileSystem.from_uri(prefix)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot open {prefix}: {exc}") from None
    return fs


def resolve(uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The ``pyarrow.fs`` filesystem and the path within it for a local path or a URI."""
    uri = os.fspath(uri)
    s = scheme(uri)
    if s in ("", "file"):
        path = uri.split("://", 1)[1] if s else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if s not in REMOTE_SCHEMES:
        raise ConfigError(f"unsupported URI scheme {s!r} in {uri!r}: use a local path, s3:// or gs://")
    rest = uri.split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"URI without a bucket: {uri!r}")
    return _filesystem(f"{s}://{bucket}"), rest.rstrip("/")


def join(base: str, *parts: str) -> str:
    """``base/part/...`` keeping a URI's scheme; local paths joined with ``os.path``."""
    if scheme(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def _as_uri(template: str, path: str) -> str:
    """The URI of ``path`` (a filesystem path) on the store ``template`` lives on."""
    s = scheme(template)
    return f"{s}://{path}" if s in REMOTE_SCHEMES else path


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = resolve(uri)
    if is_remote(uri) and "/" not in path:
        return True  # a bare bucket
    return fs.get_file_info(path).type == pafs.FileType.Directory


def makedirs(uri: str) -> None:
    """Create a folder (a no-op on object stores, which have no folders)."""
    fs, path = resolve(uri)
    if not is_remote(uri):
        fs.create_dir(path, recursive=True)


def list_files(uri: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Files under a folder / prefix, recursively, sorted, as URIs of the same kind as ``uri``.

    ``uri`` may hold glob characters (``s3://bucket/films/*.mkv``): the part before the first one is listed
    and the whole pattern matched. ``suffixes`` filters by lower-cased extension (``(".mp4", ".mkv")``).
    """
    fs, path = resolve(uri)
    pattern = None
    if any(c in path for c in _GLOB_CHARS):
        pattern = path
        base = path[: min(path.index(c) for c in _GLOB_CHARS if c in path)]
        path = base.rsplit("/", 1)[0] if "/" in base else base
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or posixpath.basename(info.path).startswith("."):
            continue
        if pattern is not None and not fnmatch.fnmatchcase(info.path, pattern):
            continue
        if suffixes and not info.path.lower().endswith(suffixes):
            continue
        out.append(_as_uri(uri, info.path))
    return sorted(out)


def open_input(uri: str) -> Any:
    """A seekable binary file (``pyarrow.NativeFile``) reading ``uri`` in ranges, never downloading it whole."""
    fs, path = resolve(uri)
    return fs.open_input_file(path)


def read_bytes(uri: str) -> bytes:
    with open_input(uri) as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


@contextlib.contextmanager
def atomic_output(uri: str) -> Iterator[Any]:
    """A binary output stream whose bytes appear at ``uri`` only when the block exits without error."""
    fs, path = resolve(uri)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    if not is_remote(uri):
        fs.create_dir(posixpath.dirname(path) or ".", recursive=True)
    try:
        with fs.open_output_stream(tmp) as f:
            yield f
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically."""
    with atomic_output(uri) as f:
        f.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def put_file(local: str, uri: str) -> None:
    """Copy a local file to ``uri`` atomically."""
    with open(local, "rb") as src, atomic_output(uri) as dst:
        shutil.copyfileobj(src, dst, length=_COPY_CHUNK)


def get_file(uri: str, local: str) -> None:
    """Copy ``uri`` to a local file."""
    with open_input(uri) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, length=_COPY_CHUNK)


def delete(uri: str) -> None:
    """Delete a file if it exists."""
    fs, path = resolve(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)
