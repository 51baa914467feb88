"""The WebDataset shard writer: ``shards/{prefix}-{index:06d}.tar``, each written under a temporary name
(``.tar.tmp``) and renamed once complete, with fixed tar metadata so that the same samples give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SHARDS_DIR = "shards"
TMP_SUFFIX = ".tmp"


@dataclass
class ShardInfo:
    """A committed shard as listed in ``index.json``; ``url`` is relative to the output folder."""

    url: str
    nsamples: int
    bytes: int
    sha256: str


class _HashingFile:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, path: str):
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed metadata: the same samples give the same bytes
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Writes samples into ``shards/{prefix}-{index:06d}.tar`` files, each under a temporary name until
    it is complete. ``before_commit(info)`` runs after a shard is closed and hashed, before its rename."""

    def __init__(
        self,
        out_dir: str,
        prefix: str = "scenes",
        max_bytes: int = 1_000_000_000,
        start_index: int = 0,
        before_commit: Callable[[ShardInfo], None] | None = None,
    ):
        self.dir = os.path.join(out_dir, SHARDS_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self.prefix, self.max_bytes, self.index = prefix, max_bytes, start_index
        self.before_commit = before_commit
        self.committed: list[ShardInfo] = []
        self._file: _HashingFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._nsamples = 0

    @property
    def name(self) -> str:
        """File name of the shard being written."""
        return f"{self.prefix}-{self.index:06d}.tar"

    @property
    def full(self) -> bool:
        return self._file is not None and self._file.size >= self.max_bytes

    @property
    def open_samples(self) -> int:
        """Samples written to the shard not yet committed."""
        return self._nsamples

    def _open(self) -> tarfile.TarFile:
        if self._tar is None:
            self._file = _HashingFile(os.path.join(self.dir, self.name + TMP_SUFFIX))
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        return self._tar

    def write(self, sample: dict[str, Any]) -> str:
        """Append one sample (``__key__`` plus members ``ext -> bytes``); returns the shard's file name."""
        key = sample["__key__"]
        if "." in key:
            raise ValueError(f"sample key {key!r} contains a dot")
        tar = self._open()
        for ext in sorted(k for k in sample if k != "__key__"):
            data = sample[ext]
            _tar_member(tar, f"{key}.{ext}", data.encode() if isinstance(data, str) else data)
        self._nsamples += 1
        return self.name

    def write_raw(self, blocks: bytes) -> str:
        """Append one sample as the tar blocks (headers, data, padding) another ``ShardWriter`` wrote for it:
        the same bytes as ``write`` of that sample, without re-serializing (shard compaction)."""
        tar = self._open()
        tar.fileobj.write(blocks)
        tar.offset += len(blocks)  # where tarfile writes the next member and the end-of-archive blocks
        self._nsamples += 1
        return self.name

    def roll_if_full(self) -> ShardInfo | None:
        """Commit the current shard if it reached ``max_bytes``."""
        return self.commit() if self.full else None

    def commit(self) -> ShardInfo | None:
        """Close, hash and rename the current shard (None when it holds no sample)."""
        if self._tar is None or self._file is None:
            return None
        self._tar.close()
        self._file.close()
        info = ShardInfo(f"{SHARDS_DIR}/{self.name}", self._nsamples, self._file.size, self._file.sha.hexdigest())
        if self.before_commit is not None:
            self.before_commit(info)
        final = os.path.join(self.dir, self.name)
        os.replace(final + TMP_SUFFIX, final)
        self.committed.append(info)
        self._tar, self._file, self._nsamples = None, None, 0
        self.index += 1
        return info

    def close(self) -> ShardInfo | None:
        """Commit the last shard."""
        return self.commit()
