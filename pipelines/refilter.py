"""``filmweaver refilter OUT --set filters.X=... --out VIEW``: new thresholds on stored scores, no decoding.

The verdicts of every shot and scene of a curated output are recomputed from the scores in its manifests
(``ShotFilter.verdict`` and ``scene_verdict``, the very rules a curation run applies) with the run's config
(``OUT/run.json``) updated by ``--config`` / ``--set``. The result is written as a **view**: a complete
dataset folder ``VIEW`` (``shards/``, ``manifests/``, ``index.json``, ``run.json``) holding the scenes that
still qualify with their passing shots, so ``release``, ``precompute`` and training read it like any
curated output. Shard samples are repacked, not re-encoded: members of dropped shots are left out, the
others renumbered (``NNN.mp4``/``NNN.jpg``, rows of ``clip.npy``, ``json`` shots). Near-duplicates are
marked again over the view (``finalize``).

Only what the source's shards hold can come back: after a ``filters.mode=score`` run every shot and scene
is there, so thresholds can be tightened or loosened; after a ``filter`` run, shots and scenes it dropped
stay dropped (a warning says so). Scene membership never changes (no re-clustering).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from curation.config import CurateConfig, load_config
from curation.errors import ConfigError
from curation.filters import ShotFilter, scene_verdict, summarise_scene
from curation.finalize import finalize
from curation.journal import DatasetWriter, recover
from curation.records import MANIFESTS, Reject, SceneRecord, ShotRecord, read_manifest
from curation.samples import VideoResult
from curation.stage import StageStats

log = logging.getLogger(__name__)

STAGE = "refilter"


def _samples(path: str) -> Iterator[dict[str, bytes]]:
    """Samples of a WebDataset tar in order: ``{"__key__": key, ext: bytes, ...}``."""
    current: dict[str, Any] | None = None
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            current[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current


def _repack(sample: dict[str, Any], keep: list[str]) -> dict[str, Any]:
    """The sample with only the shots ``keep`` (shot ids), renumbered in their order."""
    meta = json.loads(sample["json"])
    shots = meta["shots"]
    index = [i for i, s in enumerate(shots) if s["shot_id"] in set(keep)]
    out: dict[str, Any] = {"__key__": sample["__key__"]}
    new_shots = []
    for j, i in enumerate(index):
        old = shots[i].get("member", f"{i:03d}")
        shot = dict(shots[i], member=f"{j:03d}")
        new_shots.append(shot)
        for ext in ("mp4", "jpg"):
            if f"{old}.{ext}" in sample:
                out[f"{j:03d}.{ext}"] = sample[f"{old}.{ext}"]
    meta["shots"] = new_shots
    out["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    if "clip.npy" in sample:
        emb = np.load(io.BytesIO(sample["clip.npy"]), allow_pickle=False)[index]
        buf = io.BytesIO()
        np.save(buf, emb, allow_pickle=False)
        out["clip.npy"] = buf.getvalue()
    for ext, data in sample.items():  # members that are not per shot (e.g. future ones) travel as they are
        if ext not in out and ext != "__key__" and not ext[:3].isdigit() and ext != "clip.npy":
            out[ext] = data
    return out


def view_config(source: str, config_path: str | None, overrides: list[str]) -> tuple[CurateConfig, CurateConfig]:
    """(the source run's config, the refilter config = it + ``--config``/``--set``)."""
    run_path = os.path.join(source, "run.json")
    if not os.path.isfile(run_path):
        raise ConfigError(f"{source} has no run.json: refilter needs a finished curation output")
    with open(run_path) as f:
        run_config = json.load(f).get("config") or {}
    base = CurateConfig.model_validate(run_config)
    import yaml

    data = base.model_dump(mode="json")
    if config_path:
        with open(config_path) as f:
            extra = yaml.safe_load(f) or {}
        for section, values in extra.items():
            data.setdefault(section, {}).update(values)
    tmp = os.path.join(source, ".refilter-config.yaml")
    try:
        with open(tmp, "w") as f:
            yaml.safe_dump(data, f)
        config = load_config(tmp, overrides)
    finally:
        os.remove(tmp)
    return base, config


def _shot_verdicts(shots: list[ShotRecord], shot_filter: ShotFilter) -> None:
    for shot in shots:
        if not shot.kept:  # dropped by the source run (filter mode or a scene stage): not in its shards
            continue
        verdict = shot_filter.verdict(shot)
        shot.verdict = verdict[0] if verdict else None


def refilter(source: str, out_dir: str, config: CurateConfig, base: CurateConfig | None = None) -> dict[str, Any]:
    """Write the view of ``source`` under ``config``'s filters into ``out_dir``; returns its run.json."""
    source, out_dir = os.path.abspath(source), os.path.abspath(out_dir)
    if source == out_dir:
        raise ConfigError("refilter writes a new view folder: --out must differ from the source")
    if os.path.isdir(os.path.join(out_dir, "manifests", "parts")) and os.listdir(os.path.join(out_dir, "manifests")):
        raise ConfigError(f"{out_dir} already holds a dataset: choose an empty --out")
    if base is not None and base.filters.mode == "filter":
        log.warning(
            "%s was curated with filters.mode=filter: shots and scenes it dropped are not in its shards "
            "and stay dropped; curate with --set filters.mode=score to loosen thresholds later",
            source,
        )
    manifests = {name: read_manifest(os.path.join(source, "manifests", f"{name}.parquet"), cls)
                 for name, cls in MANIFESTS.items()}  # fmt: skip
    shots: list[ShotRecord] = manifests["shots"]
    scenes: list[SceneRecord] = manifests["scenes"]
    _shot_verdicts(shots, ShotFilter(config))
    shot_by_id = {s.shot_id: s for s in shots}
    stats = StageStats()
    view: dict[str, list[str]] = {}  # scene_id -> its passing shot ids, for scenes that qualify
    rejects: dict[str, list[Reject]] = {}
    for scene in scenes:
        members = [shot_by_id[i] for i in scene.shot_ids]
        passing = [s for s in members if s.kept and s.verdict is None]
        stats.items_in += 1
        verdict = scene_verdict(config.filters, passing)
        scene.verdict = verdict[0] if verdict else None
        if scene.shard is None or not scene.kept:
            continue  # not written by the source run
        if verdict is not None:
            scene.kept, scene.reject_reason, scene.shard = False, verdict[0], None
            rejects.setdefault(scene.video_id, []).append(Reject(scene.scene_id, "", STAGE, *verdict))
            stats.rejects[verdict[0]] += 1
            continue
        view[scene.scene_id] = [s.shot_id for s in passing]
        stats.items_out += 1
    for shot in shots:
        in_view = shot.scene_id in view and shot.shot_id in view[shot.scene_id]
        if shot.kept and not in_view:
            reason = shot.verdict or "scene-dropped"
            shot.kept, shot.reject_reason = False, reason
            rejects.setdefault(shot.video_id, []).append(Reject(shot.shot_id, "", STAGE, reason, "refiltered"))
    for scene in scenes:
        if scene.scene_id in view:
            summarise_scene(scene, [shot_by_id[i] for i in view[scene.scene_id]])
            scene.shot_ids = view[scene.scene_id]
    _write_view(source, out_dir, config, manifests, view, rejects, stats)
    run_info = {
        "engine": "refilter",
        "refiltered_from": source,
        "config": config.model_dump(mode="json"),
    }
    return finalize(out_dir, run_info)


def _write_view(
    source: str,
    out_dir: str,
    config: CurateConfig,
    manifests: dict[str, list[Any]],
    view: dict[str, list[str]],
    rejects: dict[str, list[Reject]],
    stats: StageStats,
) -> None:
    os.makedirs(out_dir, exist_ok=True)
    recover(out_dir)
    uris = {v.video_id: v.uri for v in manifests["videos"]}
    for vid, video_rejects in rejects.items():
        video_rejects[:] = [Reject(r.item_id, uris.get(vid, ""), r.stage, r.reason, r.detail) for r in video_rejects]
    by_video: dict[str, dict[str, list[Any]]] = {}
    for name, id_of in (
        ("shots", lambda r: r.video_id),
        ("scenes", lambda r: r.video_id),
        ("captions", lambda r: r.shot_id),
        ("rejects", lambda r: r.item_id),
    ):
        for rec in manifests[name]:
            vid = id_of(rec).split("-")[0]  # ids are {video_id}-s00000 / -c0000; video ids hold no dash
            by_video.setdefault(vid, {}).setdefault(name, []).append(rec)
    kept_shots = {s for ids in view.values() for s in ids}
    writer = DatasetWriter(out_dir, config.shards.prefix, config.shards.max_bytes)
    done: set[str] = set()

    def flush(video_id: str, samples: list[dict[str, Any]]) -> None:
        parts = by_video.get(video_id, {})
        video = next(v for v in manifests["videos"] if v.video_id == video_id)
        video.n_scenes = len(samples)
        writer.add(
            VideoResult(
                video,
                shots=parts.get("shots", []),
                scenes=parts.get("scenes", []),
                captions=[c for c in parts.get("captions", []) if c.shot_id in kept_shots],
                rejects=parts.get("rejects", []) + rejects.get(video_id, []),
                samples=samples,
            )
        )
        done.add(video_id)

    with open(os.path.join(source, "index.json")) as f:
        shards = json.load(f)["shards"]
    current, samples = None, []
    scene_video = {s.scene_id: s.video_id for s in manifests["scenes"]}
    for shard in shards:
        for sample in _samples(os.path.join(source, shard["url"])):
            key = sample["__key__"]
            if key not in view:
                continue
            vid = scene_video[key]
            if vid != current:
                if current is not None:
                    flush(current, samples)
                current, samples = vid, []
            samples.append(_repack(sample, view[key]))
    if current is not None:
        flush(current, samples)
    for video in manifests["videos"]:
        if video.video_id not in done:
            flush(video.video_id, [])
    orphans = [r for vid, parts in by_video.items() if vid not in uris for r in parts.get("rejects", [])]
    if orphans:  # inputs that could not be opened (no content id)
        writer.add(VideoResult(None, rejects=orphans))
    writer.add_stats({STAGE: stats})
    writer.close()


def register(sub: Any) -> None:
    """The ``refilter`` subcommand (registered by ``pipelines.commands``)."""
    from curation.config import add_config_arguments

    p = sub.add_parser("refilter", help="re-apply filter thresholds to stored scores and write a view, no decoding")
    p.add_argument("source", metavar="OUT", help="a curated output (best curated with filters.mode=score)")
    p.add_argument("--out", required=True, help="new folder for the view (a complete dataset: shards, manifests)")
    add_config_arguments(p, "YAML with a filters: section applied over the run's config", "filters.max_frozen=0.9")
    p.set_defaults(func=cmd_refilter)


def cmd_refilter(args: Any) -> int:
    base, config = view_config(args.source, args.config, args.overrides)
    run = refilter(args.source, args.out, config, base)
    c = run["counts"]
    print(f"view written to {args.out}: {c['samples']} scenes, {c['shots_kept']} of {c['shots']} shots kept")
    return 0
