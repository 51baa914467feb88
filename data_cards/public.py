"""The public copy of a curated output: shards, manifests, ``index.json`` and ``run.json`` with source paths
made publishable (:mod:`data_cards.provenance`), written into a release folder.

A shard whose scene JSON needs no change is hard-linked (copied across file systems); one that does is
rewritten member by member under a temporary name and renamed when complete, so the release holds the
same samples with the same bytes except for the ``json`` members. ``index.json`` is recomputed from the
files written. ``OUT`` itself is never modified: it stays the private record with the full paths.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import CuratedDataset, sha256_file
from .provenance import SourcePaths

log = logging.getLogger(__name__)

# run.json keys naming machines (Ray addresses, node IPs, host names): their values are not published
PRIVATE_KEYS = re.compile(r"(^|_)(address|addresses|ip|hostname|host|node_ip)$", re.I)


def source_paths(ds: CuratedDataset, roots: list[str] | None) -> SourcePaths:
    """The uri mapping of ``ds``: default roots from the videos it read (not from inputs it could not open)."""
    return SourcePaths(ds.tables["videos"].column("uri").to_pylist(), roots, out_dir=ds.root)


def public_scene_json(data: bytes, paths: SourcePaths) -> bytes:
    """A scene sample's ``json`` member with its video uri public and every other string scrubbed."""
    record = json.loads(data)
    video = record.get("video")
    if isinstance(video, dict) and video.get("uri"):
        video["uri"] = paths.public(video["uri"])
    record = paths.scrub_tree(record)
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def public_run(run: Any, paths: SourcePaths) -> Any:
    """``run.json`` with local paths scrubbed and the values of machine-naming keys replaced by "private"."""
    if isinstance(run, dict):
        return {k: "private" if PRIVATE_KEYS.search(k) else public_run(v, paths) for k, v in run.items()}
    if isinstance(run, list):
        return [public_run(v, paths) for v in run]
    return paths.scrub_tree(run)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def write_public_shard(src: Path, dst: Path, paths: SourcePaths) -> int:
    """Copy the shard ``src`` to ``dst`` with public scene JSON; returns how many JSON members changed."""
    changed, members = 0, []
    with tarfile.open(src) as tar:
        for info in tar:
            if info.isfile() and info.name.endswith(".json"):
                data = tar.extractfile(info).read()
                new = public_scene_json(data, paths)
                changed += new != data
                members.append((info, new))
    if not changed:
        _link_or_copy(src, dst)
        return 0
    replaced = {info.name: new for info, new in members}
    tmp = dst.with_name(dst.name + ".tmp")
    with tarfile.open(src) as tar, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as out:
        for info in tar:
            if info.name in replaced:
                data = replaced[info.name]
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(info, tar.extractfile(info) if info.isfile() else None)
    os.replace(tmp, dst)
    return changed


def public_table(table: pa.Table, paths: SourcePaths) -> pa.Table:
    """A manifest with ``uri`` public, ``item_id`` public where it is the uri (inputs that could not be
    opened), and every other string column scrubbed (a reject's ``detail`` may quote its path)."""
    names = table.column_names
    uris = table.column("uri").to_pylist() if "uri" in names else [None] * len(table)
    for i, field in enumerate(table.schema):
        if not pa.types.is_string(field.type) and not pa.types.is_large_string(field.type):
            continue
        values = table.column(i).to_pylist()
        if field.name == "uri":
            new = [paths.public(v) for v in values]
        elif field.name == "item_id":
            new = [paths.public(v) if v == u else paths.scrub(v) for v, u in zip(values, uris, strict=True)]
        else:
            new = [paths.scrub(v, u) for v, u in zip(values, uris, strict=True)]
        table = table.set_column(i, field, pa.array(new, field.type))
    return table


def write_public_copy(ds: CuratedDataset, dest: Path, paths: SourcePaths) -> None:
    """``dest/shards``, ``dest/manifests``, ``dest/index.json`` and ``dest/run.json`` from ``ds``, public."""
    for sub in ("shards", "manifests"):
        if (dest / sub).exists():
            shutil.rmtree(dest / sub)
        (dest / sub).mkdir(parents=True)
    index: list[dict[str, Any]] = []
    for n, shard in enumerate(ds.shards, 1):
        src = ds.root / shard.url
        dst = dest / "shards" / Path(shard.url).name
        changed = write_public_shard(src, dst, paths)
        sha = shard.sha256 if not changed else sha256_file(dst)
        index.append(
            {"url": f"shards/{dst.name}", "nsamples": shard.nsamples, "bytes": dst.stat().st_size, "sha256": sha}
        )
        log.info("release: shard %d/%d %s (%s)", n, len(ds.shards), dst.name, "rewritten" if changed else "linked")
    for path in ds.manifest_files():
        pq.write_table(public_table(pq.read_table(path), paths), dest / "manifests" / path.name)
    (dest / "index.json").write_text(json.dumps({"shards": index}, indent=1) + "\n")
    (dest / "run.json").write_text(json.dumps(public_run(ds.run, paths), indent=1, ensure_ascii=False) + "\n")
