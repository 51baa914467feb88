"""A curated dataset read back from disk: manifests, ``index.json``, ``run.json`` and shard samples.

Only the files are read (never the pipeline code), so a dataset curated by an older version still loads:
a missing manifest is an empty table with its schema, a missing ``run.json`` an empty dict, a missing
``index.json`` is rebuilt by hashing ``shards/*.tar``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import FilmweaverError
from curation.records import CAPTION_SCHEMA, REJECT_SCHEMA, SCENE_SCHEMA, SHOT_SCHEMA, VIDEO_SCHEMA

log = logging.getLogger(__name__)

MANIFEST_SCHEMAS: dict[str, pa.Schema] = {
    "videos": VIDEO_SCHEMA,
    "shots": SHOT_SCHEMA,
    "scenes": SCENE_SCHEMA,
    "captions": CAPTION_SCHEMA,
    "rejects": REJECT_SCHEMA,
}


class NotACuratedDataset(FilmweaverError):
    """The folder given to ``release`` holds no curated dataset."""

    reason = "not-a-dataset"


@dataclass
class Shard:
    """One shard file; ``url`` is relative to the dataset folder."""

    url: str
    nsamples: int
    bytes: int
    sha256: str


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_table(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.is_file():
        log.warning("%s is missing; treated as empty", path)
        return schema.empty_table()
    table = pq.read_table(path)
    # Older outputs may lack newer columns: add them as nulls so readers can rely on the schema.
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f.name, pa.nulls(len(table), f.type))
    return table


@dataclass
class CuratedDataset:
    """Everything ``release`` needs from a curated output folder."""

    root: Path
    tables: dict[str, pa.Table]
    run: dict[str, Any] = field(default_factory=dict)
    shards: list[Shard] = field(default_factory=list)

    @classmethod
    def load(cls, root: str | os.PathLike) -> CuratedDataset:
        """Read the manifests, ``run.json`` and the shard index of ``root``."""
        root = Path(root)
        if not (root / "manifests").is_dir() and not (root / "shards").is_dir():
            raise NotACuratedDataset(
                f"{root} holds no curated dataset (no manifests/ or shards/); run `filmweaver curate ... --out {root}`"
            )
        tables = {name: _read_table(root / "manifests" / f"{name}.parquet", s) for name, s in MANIFEST_SCHEMAS.items()}
        run = json.loads((root / "run.json").read_text()) if (root / "run.json").is_file() else {}
        return cls(root, tables, run, _load_shards(root))

    def rows(self, name: str) -> list[dict[str, Any]]:
        return self.tables[name].to_pylist()

    def manifest_files(self) -> list[Path]:
        return [p for name in MANIFEST_SCHEMAS if (p := self.root / "manifests" / f"{name}.parquet").is_file()]

    def iter_samples(
        self, extensions: tuple[str, ...] = ("json", "jpg"), read_all: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[str, dict[str, bytes]]]:
        """``(key, {member_ext: bytes})`` per scene sample, in shard order, reading only members whose last
        extension is listed, and every member of the samples whose position (from 0) satisfies ``read_all``."""
        position = -1
        for shard in self.shards:
            with tarfile.open(self.root / shard.url, mode="r:*") as tar:
                key, members = None, {}
                for info in tar:
                    if not info.isfile() or "." not in info.name:
                        continue
                    k, ext = os.path.basename(info.name).split(".", 1)
                    if k != key:
                        if key is not None:
                            yield key, members
                        key, members, position = k, {}, position + 1
                    if ext.rsplit(".", 1)[-1] in extensions or (read_all is not None and read_all(position)):
                        members[ext] = tar.extractfile(info).read()
                if key is not None:
                    yield key, members


def _load_shards(root: Path) -> list[Shard]:
    index = root / "index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        entries = data["shards"] if isinstance(data, dict) else data
        return [Shard(e["url"], int(e["nsamples"]), int(e["bytes"]), e["sha256"]) for e in entries]
    shards = []
    for path in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            keys = {os.path.basename(m.name).split(".", 1)[0] for m in tar if m.isfile()}
        shards.append(Shard(f"shards/{path.name}", len(keys), path.stat().st_size, sha256_file(path)))
    log.warning("%s has no index.json; indexed %d shards by reading them", root, len(shards))
    return shards
