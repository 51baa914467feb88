"""Turning the command line's INPUT arguments into a list of video uris.

An input is a video file, a folder (searched recursively for video extensions), a glob (``*``, ``?``,
``[``; ``**`` recurses), a list file (``.txt``/``.lst``: one path or uri per line, ``#`` comments; relative
paths are relative to the list file), a manifest (``.csv``/``.parquet`` with a ``uri`` column), or an
object-store uri (``s3://``, ``gs://``: a file, or a prefix listed recursively). The result keeps the given
order (folders and globs sorted), without duplicates. A local input that does not exist is an error; a path
listed inside a list file that does not exist is left for the executor, which records a reject row.

A path that exists is that file, even when its name holds glob characters (``clip [1080p].mp4``); only a
path that does not exist is matched as a pattern. Files a folder or prefix scan passes over (not a video
extension, or hidden) are counted, with a few examples, on the returned ``Inputs`` (the engines report
them in the summary and ``run.json``); a file named explicitly is always taken, whatever its extension.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from curation.errors import ConfigError

VIDEO_EXTENSIONS = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".ogv",
        ".3gp",
        ".mxf",
        ".y4m",
        ".vob",
        ".asf",
        ".f4v",
        ".divx",
        ".h264",
        ".264",
        ".h265",
        ".hevc",
        ".ivf",
    ]
)
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet"})


class InputNotFound(ConfigError):
    """An input given on the command line does not exist."""

    reason = "missing"


_SKIPPED_EXAMPLES = 5  # skipped files named in the summary and run.json


class Inputs(list):
    """The expanded video uris (a plain ``list``), and the files scans passed over: ``skipped_files`` (count)
    and ``skipped_examples`` (the first few paths)."""

    def __init__(self, uris: Iterable[str] = (), skipped: Sequence[str] = ()):
        super().__init__(uris)
        self.skipped_files = len(skipped)
        self.skipped_examples = list(skipped[:_SKIPPED_EXAMPLES])


def skipped_info(inputs: list[str]) -> dict:
    """``{"count", "examples"}`` of the files the scans behind ``inputs`` passed over (as ``run.json`` records
    them); a plain list skipped nothing."""
    return {"count": getattr(inputs, "skipped_files", 0), "examples": getattr(inputs, "skipped_examples", [])}


def _is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_remote(item: str) -> bool:
    return "://" in item and not item.startswith("file://")


def _is_dataset_folder(root: str, dirs: Iterable[str], files: Iterable[str]) -> bool:
    """Whether the folder ``root`` (holding ``dirs`` and ``files``) is a curated output or a release of one:
    ``manifests/`` with the journal's ``manifests/parts/`` (made when a run starts) or beside ``run.json``.
    Its clips are samples, not source videos."""
    if "manifests" not in dirs:
        return False
    return "run.json" in files or os.path.isdir(os.path.join(root, "manifests", "parts"))


def _folder(path: str, skipped: list[str]) -> list[str]:
    """Video files under ``path``, sorted; other files go to ``skipped``, and so does each curated output
    found inside (a ``--out`` inside the input folder: a rerun would curate its own clips), as one entry."""
    found = []
    for root, dirs, files in os.walk(path):
        if _is_dataset_folder(root, dirs, files):
            dirs.clear()
            skipped.append(os.path.join(root, ""))
            continue
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            (found if _is_video(f) and not f.startswith(".") else skipped).append(full)
    return found


def _remote(uri: str, skipped: list[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
    except (OSError, pa.ArrowException) as exc:  # no network, unknown bucket or scheme, bad credentials
        raise ConfigError(
            f"input {uri!r} cannot be read: {exc} (check the URI, the credentials and the network)"
        ) from None
    if info.type == pafs.FileType.File:
        return [uri]
    if info.type != pafs.FileType.Directory:
        return [uri]  # left for the probe stage, which rejects it with the filesystem's reason
    scheme = uri.split("://", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File)
    skipped += [f for f in files if not _is_video(f)]
    return [f for f in files if _is_video(f)]


def _list_file(path: str) -> list[str]:
    base = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            out.append(line if _is_remote(line) or os.path.isabs(line) else os.path.join(base, line))
    return out


def _manifest(path: str) -> list[str]:
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "uri" not in table.column_names:
            raise ConfigError(f"{path}: a manifest needs a 'uri' column (has {table.column_names})")
        uris = [u for u in table.column("uri").to_pylist() if u]
    else:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "uri" not in (reader.fieldnames or []):
                raise ConfigError(f"{path}: a manifest needs a 'uri' column (has {reader.fieldnames})")
            uris = [row["uri"] for row in reader if row["uri"]]
    base = os.path.dirname(os.path.abspath(path))
    return [u if _is_remote(u) or os.path.isabs(u) else os.path.join(base, u) for u in uris]


def _expand(item: str, skipped: list[str]) -> list[str]:
    if _is_remote(item):
        return _remote(item, skipped)
    path = item[len("file://") :] if item.startswith("file://") else item
    if not os.path.exists(path) and any(c in path for c in "*?["):
        matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
        if not matches:
            raise InputNotFound(f"input {item!r}: no file has this name and the pattern matches no file")
        return matches
    if os.path.isdir(path):
        found = _folder(path, skipped)
        if not found:
            known = ", ".join(sorted(VIDEO_EXTENSIONS))
            raise InputNotFound(f"input {item!r}: the folder holds no video file ({known})")
        return found
    if not os.path.exists(path):
        raise InputNotFound(f"input {item!r} does not exist (check the path)")
    suffix = Path(path).suffix.lower()
    if suffix in LIST_EXTENSIONS:
        return _list_file(path)
    if suffix in MANIFEST_EXTENSIONS:
        return _manifest(path)
    return [path]


def expand_inputs(items: list[str]) -> Inputs:
    """Video uris from files, folders, globs, list files, manifests and object-store uris; order kept,
    duplicate paths dropped (files of the same content under two names are both kept: the engines record
    the second as a ``duplicate``). Raises ``InputNotFound`` (a ``ConfigError``) for a local input that does
    not exist."""
    if not items:
        raise ConfigError("no input given: pass video files, folders, globs or a list file")
    seen: dict[str, None] = {}
    skipped: list[str] = []
    for item in items:
        for uri in _expand(str(item), skipped):
            key = uri if _is_remote(uri) else os.path.abspath(uri)
            seen.setdefault(key, None)
    return Inputs(list(seen), skipped)
