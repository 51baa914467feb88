"""A dataset output folder, local or on an object store, with the commit rules of ``curation.journal``.

``curation.journal`` writes and recovers local folders. For an object-store output (``s3://``, ``gs://``:
workers of a multi-node cluster share no disk) each writer stages its commits in a local temporary folder
and ``publish``es every committed part in commit order: the shard (temporary key, then moved), the part's
tables, and last its marker, the commit point. Recovery and finalize mirror the remote journal into a local
folder (markers and tables for real, other files as empty placeholders; finalize fetches the few shards it
compacts), run the very same ``recover`` / ``finalize`` there, and apply the result remotely in commit order
(new shards, new tables, the new marker, then deletions, then the published files), so one set of rules
serves both kinds of output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from curation.finalize import finalize
from curation.journal import PARTS_DIR, DatasetWriter, Journal, live_markers, normalized_marker, read_journal, recover
from curation.records import MANIFESTS
from curation.shard_writer import SHARDS_DIR, TMP_SUFFIX

from . import storage

log = logging.getLogger(__name__)

STATE_DIR = "state"  # executor state that is not part of the dataset (failure counts for quarantine)


class DatasetOutput:
    """The output folder ``uri`` of a curation run (a local path or an object-store URI)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.remote = storage.is_remote(uri)
        self.local_dir = None if self.remote else storage.resolve(uri)[1]

    def _rel(self, full: str) -> str:
        return full[len(self.uri.rstrip("/")) + 1 :]

    def _mirror(self, into: str, full_tables: bool) -> set[str]:
        """Copy the remote journal into ``into``: markers (and tables when ``full_tables``) for real, every
        other file under ``manifests/`` and ``shards/`` as an empty placeholder. Returns the relative paths."""
        rels = set()
        for sub in ("manifests", SHARDS_DIR):
            for full in storage.list_files(storage.join(self.uri, sub)):
                rel = self._rel(full)
                rels.add(rel)
                local = os.path.join(into, rel)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                is_marker = rel.startswith(PARTS_DIR + "/") and rel.endswith(".json")
                is_table = rel.startswith(PARTS_DIR + "/") and rel.endswith(".parquet")
                if is_marker or (full_tables and is_table):
                    storage.get_file(full, local)
                else:
                    open(local, "wb").close()
        return rels

    def recover(self) -> Journal:
        """Remove what an interrupted run left half-written; the committed journal."""
        if not self.remote:
            return recover(self.local_dir)
        with tempfile.TemporaryDirectory(prefix="fw-mirror-") as mirror:
            before = self._mirror(mirror, full_tables=False)
            journal = recover(mirror)
            for rel in sorted(r for r in before if not os.path.exists(os.path.join(mirror, r))):
                storage.delete(storage.join(self.uri, rel))
        return journal

    def journal(self, prefix: str | None = None) -> Journal:
        """The committed journal, read only; ``prefix``: only one writer's parts (no other marker is read)."""
        if not self.remote:
            return read_journal(self.local_dir, prefix)
        markers = []
        for full in storage.list_files(storage.join(self.uri, PARTS_DIR, prefix + "-*" if prefix else ""), (".json",)):
            if TMP_SUFFIX not in os.path.basename(full):
                markers.append(normalized_marker(json.loads(storage.read_text(full))))
        return Journal(live_markers(markers))

    def read_run(self) -> dict[str, Any]:
        """The output's ``run.json`` ({} when there is none yet)."""
        uri = storage.join(self.uri, "run.json")
        try:
            return json.loads(storage.read_text(uri)) if storage.exists(uri) else {}
        except json.JSONDecodeError:
            return {}

    def finalize(self, run_info: dict[str, Any]) -> dict[str, Any]:
        """``curation.finalize.finalize`` on this output: compaction, manifests, index.json and run.json;
        returns run.json."""
        if not self.remote:
            return finalize(self.local_dir, run_info)
        with tempfile.TemporaryDirectory(prefix="fw-mirror-") as mirror:
            before = self._mirror(mirror, full_tables=True)
            if storage.exists(storage.join(self.uri, "run.json")):
                storage.get_file(storage.join(self.uri, "run.json"), os.path.join(mirror, "run.json"))

            def fetch(rel: str) -> None:
                storage.get_file(storage.join(self.uri, rel), os.path.join(mirror, rel))

            run = finalize(mirror, run_info, fetch=fetch)
            after = {
                os.path.relpath(os.path.join(d, n), mirror).replace(os.sep, "/")
                for d, _, names in os.walk(mirror)
                for n in names
            }
            published = {os.path.join("manifests", f"{name}.parquet") for name in MANIFESTS}
            published |= {"index.json", "run.json"}
            new = sorted(after - before - published)
            # commit order: shards and tables first, markers (the commit point) next, then deletions
            for rel in sorted(new, key=lambda r: r.endswith(".json")):
                storage.put_file(os.path.join(mirror, rel), storage.join(self.uri, rel))
            for rel in sorted(before - after, key=lambda r: not r.endswith(".json")):
                storage.delete(storage.join(self.uri, rel))
            for rel in sorted(published):
                storage.put_file(os.path.join(mirror, rel), storage.join(self.uri, *rel.split("/")))
        return run

    @contextlib.contextmanager
    def writer(self, prefix: str, max_bytes: int, **options: Any) -> Iterator[DatasetWriter]:
        """A ``DatasetWriter`` for this output; closed (last shard committed, everything published) on exit.
        ``options``: the writer's ``commit_videos``, ``commit_s``, ``config_hash``.

        On an object store the writer stages into a local folder; call ``publish(writer)`` after ``add`` to
        upload what it committed so far (a no-op for local outputs)."""
        if not self.remote:
            writer = DatasetWriter(self.local_dir, prefix, max_bytes, **options)
            yield writer
            writer.close()
            return
        staging = tempfile.mkdtemp(prefix="fw-stage-")
        try:
            # numbering continues after this writer's earlier files on the store (a retried task)
            earlier = storage.list_files(storage.join(self.uri, PARTS_DIR, prefix + "-*"))
            earlier += storage.list_files(storage.join(self.uri, SHARDS_DIR, prefix + "-*"))
            names = [full.rsplit("/", 1)[-1] for full in earlier]
            writer = DatasetWriter(staging, prefix, max_bytes, earlier_names=names, **options)
            yield writer
            writer.close()
            self.publish(writer)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def publish(self, writer: DatasetWriter) -> list[str]:
        """Upload the parts ``writer`` committed in its staging folder, in commit order; returns their names."""
        if not self.remote:
            return []
        staging = writer.out_dir
        parts_dir = os.path.join(staging, PARTS_DIR)
        markers = sorted(n for n in os.listdir(parts_dir) if n.endswith(".json") and TMP_SUFFIX not in n)
        published = []
        for name in markers:
            marker_path = os.path.join(parts_dir, name)
            with open(marker_path) as f:
                marker = json.load(f)
            for info in marker["shards"]:
                shard = os.path.join(staging, info["url"])
                storage.put_file(shard, storage.join(self.uri, info["url"]))
                os.remove(shard)
            for table in MANIFESTS:
                local = os.path.join(parts_dir, f"{marker['part']}.{table}.parquet")
                storage.put_file(local, storage.join(self.uri, PARTS_DIR, os.path.basename(local)))
                os.remove(local)
            storage.put_file(marker_path, storage.join(self.uri, PARTS_DIR, name))  # the commit point
            os.remove(marker_path)
            published.append(marker["part"])
        return published

    def read_state(self, name: str) -> dict[str, Any]:
        uri = storage.join(self.uri, STATE_DIR, name)
        return json.loads(storage.read_text(uri)) if storage.exists(uri) else {}

    def write_state(self, name: str, data: dict[str, Any]) -> None:
        storage.write_text(storage.join(self.uri, STATE_DIR, name), json.dumps(data, indent=1, sort_keys=True))
