"""The public copy of a curated output: shards, manifests, ``index.json`` and ``run.json`` with source paths
made publishable (:mod:`data_cards.provenance`), written into a release folder.

Each shard is copied under a temporary name and renamed when complete: the bytes between changed ``json``
members are copied as raw ranges (in the kernel where it can), so the release holds the same samples with
the same bytes except for the ``json`` members; a shard whose scene JSON needed no change is hard-linked
instead (copied across file systems), so it takes no extra disk. ``index.json`` is recomputed from the
files written. ``OUT`` itself is never modified: it stays the private record with the full paths.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

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


def _copy_range(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> None:
    """Bytes ``[start, end)`` of ``src`` appended to ``dst`` (``copy_file_range`` in the kernel where it can)."""
    dst.flush()
    while start < end:
        try:
            n = os.copy_file_range(src.fileno(), dst.fileno(), end - start, start)
        except (AttributeError, OSError):  # not Linux, or not between these file systems
            src.seek(start)
            n = dst.write(src.read(min(end - start, 8 << 20)))
        if n <= 0:
            raise OSError(f"short copy from {src.name} at byte {start}")
        start += n
        dst.seek(0, os.SEEK_END)


def write_public_shard(src: Path, dst: Path, paths: SourcePaths) -> int:
    """Copy the shard ``src`` to ``dst`` with public scene JSON; returns how many JSON members changed.

    Members other than ``json`` are copied as raw byte ranges (headers included), so their bytes are the
    source's; a changed ``json`` member gets a new PAX header with its new size. A shard with no change is
    hard-linked instead."""
    changed, pending = 0, 0  # pending: start of the source bytes not yet copied
    tmp = dst.with_name(dst.name + ".tmp")
    out = None  # opened at the first change: an unchanged shard is only read
    with tarfile.open(src) as tar, open(src, "rb") as raw:
        try:
            for info in tar:
                if not (info.isfile() and info.name.endswith(".json")):
                    continue
                data = tar.extractfile(info).read()
                new = public_scene_json(data, paths)
                if new == data:
                    continue
                changed += 1
                out = out or open(tmp, "wb")  # noqa: SIM115 (closed below, after the rest is copied)
                _copy_range(raw, out, pending, info.offset)
                info.size = len(new)
                out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
                out.write(new + b"\0" * (-len(new) % tarfile.BLOCKSIZE))
                pending = info.offset_data + len(data) + (-len(data) % tarfile.BLOCKSIZE)
            if out is not None:
                _copy_range(raw, out, pending, os.path.getsize(src))  # the rest, end-of-archive blocks included
        finally:
            if out is not None:
                out.close()
    if changed:
        os.replace(tmp, dst)
    else:
        _link_or_copy(src, dst)
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
