"""The Ray executor: one streaming Ray Data graph over the stages of ``pipelines.plan``.

Rows are videos: a uri enters (never the bytes) and a pickled ``CuratedVideo`` leaves for the shard sink
(``pipelines.ray_sink``). Consecutive stages are fused into one operator; on a cluster with GPUs the model
stages (TransNetV2 shot splitting, CLIP embedding, MTCNN faces in the scene filter) run in actor pools that
load their model once per actor and ask for a share of a GPU, and the LLM stages (caption, verify, when a
backend is configured) run in an actor pool whose calls carry every scene of a batch of videos, so many
requests are in flight. Elsewhere stages run as CPU tasks that keep their built stages per worker process.
``run_stage_batch`` turns every per-item failure into a reject row, so a bad video never fails a block.

Resume: the output's journal names finished videos, which are skipped before the graph is built. A video
whose task fails for reasons outside Python (a crashed or out-of-memory worker) is not journaled; its failure
is counted in ``OUT/state/failures.json`` and, after ``max_failures`` runs that failed on it, it is
quarantined: journaled as rejected with reason ``quarantined`` instead of being retried forever.

Entry point for ``ray job submit --working-dir . -- python -m pipelines.curate INPUT... --out DIR``: it
joins the cluster in ``RAY_ADDRESS`` (or ``--address``), else starts a local Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import pickle
import sys
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np

from curation.config import CurateConfig, add_config_arguments, load_config
from curation.records import Reject, VideoRecord
from curation.rerun import add_reprocess_argument
from curation.samples import VideoResult, video_result
from curation.stage import Stage, StageStats, VideoUnit, run_stage_batch
from pipelines.inputs import expand_inputs
from pipelines.local import run_units
from pipelines.output import DatasetOutput
from pipelines.plan import scene_stage_classes, video_stage_classes
from pipelines.ray_sink import COLUMN, CuratedVideo, ShardDatasink
from pipelines.rerun import Precheck, precheck
from pipelines.summary import RunSummary

log = logging.getLogger(__name__)

FAILURES = "failures.json"
# Share of a GPU each model stage's actor asks for, so that all of them fit on one GPU node.
GPU_SHARE = {"shots": 0.25, "embed": 0.5, "scene_filter": 0.25}


@dataclasses.dataclass
class _Work:
    """One video between stages (pickled in the ``video`` column)."""

    uri: str
    video_id: str
    units: list[Any]  # the VideoUnit, then its SceneUnits after clip export
    last_video: VideoUnit
    rejects: list[Reject] = dataclasses.field(default_factory=list)
    rejected: bool = False  # a video stage rejected the video itself
    stats: dict[str, StageStats] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StageGroup:
    """Consecutive stages fused into one Ray Data operator."""

    names: tuple[str, ...]
    scene: bool  # scene stages (caption, verify) rather than video stages
    actors: bool = False
    num_gpus: float = 0.0


def model_stages(config: CurateConfig) -> set[str]:
    """Names of the stages that hold a neural network for this config."""
    names = {"embed"}
    if config.shots.backend in ("transnetv2", "hybrid", "auto"):
        names.add("shots")  # 'auto' picks TransNetV2 on GPU nodes
    if config.filters.faces:
        names.add("scene_filter")
    return names


def plan_groups(config: CurateConfig, gpus: bool, actors: bool | None = None) -> list[StageGroup]:
    """The operators of the graph. ``actors``: model stages in actor pools (default: when there are GPUs)."""
    use_actors = gpus if actors is None else actors
    models = model_stages(config) if use_actors else set()
    groups: list[StageGroup] = []
    current: list[str] = []
    for cls in video_stage_classes():
        if cls.name in models:
            if current:
                groups.append(StageGroup(tuple(current), scene=False))
                current = []
            groups.append(StageGroup((cls.name,), False, True, GPU_SHARE.get(cls.name, 0.25) if gpus else 0.0))
        else:
            current.append(cls.name)
    if current:
        groups.append(StageGroup(tuple(current), scene=False))
    llm = config.caption.backend != "none"
    groups.append(StageGroup(tuple(c.name for c in scene_stage_classes()), scene=True, actors=llm))
    return groups


@functools.lru_cache(maxsize=8)
def _built_stages(config_json: str, out_dir: str | None, names: tuple[str, ...]) -> list[Stage]:
    # cached per worker process: Ray reuses workers, so a task-based stage loads its model once per process
    config = CurateConfig.model_validate_json(config_json)
    classes = {c.name: c for c in video_stage_classes() + scene_stage_classes()}
    return [classes[n](config, out_dir) for n in names]


class StageRunner:
    """Runs one ``StageGroup`` on a batch of rows; a callable class, so it also serves as an actor."""

    def __init__(self, config_json: str, stage_dir: str | None, names: tuple[str, ...], scene: bool):
        self.stages = _built_stages(config_json, stage_dir, names)
        self.scene = scene

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        works: list[_Work] = [pickle.loads(b) for b in batch[COLUMN]]
        for stage in self.stages:
            stage.stats = StageStats()
            if self.scene:
                self._scene_stage(stage, [w for w in works if not w.rejected])
            else:
                for w in works:
                    if not w.rejected:
                        w.units, rejects, last = run_units([stage], w.units)
                        w.rejects += rejects
                        w.rejected = bool(w.rejects)  # as in the local executor: any whole-unit reject so far
                        w.last_video = last or w.last_video
            # the counters of a batch travel with its first video and are journaled with it
            works[0].stats.setdefault(stage.name, StageStats()).merge(stage.stats)
            embedder = getattr(stage, "embedder", None)
            if embedder is not None:
                works[0].provenance["embedder"] = {"kind": embedder.kind, "model_id": embedder.model_id}
        return {COLUMN: [pickle.dumps(w, protocol=5) for w in works]}

    @staticmethod
    def _scene_stage(stage: Stage, works: list[_Work]) -> None:
        units = [u for w in works for u in w.units]
        out = run_stage_batch(stage, units)  # every scene of the batch at once: LLM requests run concurrently
        if len(out) != len(units):
            raise RuntimeError(f"scene stage {stage.name} returned {len(out)} results for {len(units)} scenes")
        i = 0
        for w in works:
            results, i = out[i : i + len(w.units)], i + len(w.units)
            w.units = [u for u in results if not isinstance(u, Reject)]
            w.rejects += [r for r in results if isinstance(r, Reject)]


def _finish(batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
    """Records and shard samples of each video (NPY encoding runs here, in parallel tasks)."""
    out = []
    for blob in batch[COLUMN]:
        w: _Work = pickle.loads(blob)
        result = video_result(w.last_video, [] if w.rejected else w.units, w.rejects, w.rejected)
        out.append(pickle.dumps(CuratedVideo(w.video_id, result, w.stats, w.provenance), protocol=5))
    return {COLUMN: out}


def _start(uri: str, video_id: str) -> bytes:
    unit = VideoUnit(VideoRecord(video_id=video_id, uri=uri))
    return pickle.dumps(_Work(uri, video_id, [unit], unit), protocol=5)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Join the cluster at ``address`` / ``RAY_ADDRESS``, else start a local Ray; the cluster's resources."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": num_cpus}
        ray.init(**kwargs, logging_level=logging.WARNING, log_to_driver=True)
    return {k: v for k, v in sorted(ray.cluster_resources().items()) if not k.startswith("node:")}


def _quarantined(result_uri: str, video_id: str, entry: dict[str, Any]) -> VideoResult:
    detail = (
        f"failed in {entry['failures']} runs (worker crash, out of memory or timeout); not retried: "
        f"{'; '.join(entry.get('reasons', [])[-3:])}"
    )
    record = VideoRecord(video_id=video_id, uri=result_uri, status="rejected")
    return VideoResult(record, rejects=[Reject(video_id, result_uri, "ray", "quarantined", detail)])


def run_ray(
    inputs: list[str],
    out_dir: str,
    config: CurateConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    actors: bool | None = None,
    max_failures: int = 3,
    videos_per_write: int = 8,
    reprocess: str | None = None,
    check: Precheck | None = None,
) -> RunSummary:
    """Curate ``inputs`` (uris, already expanded) into ``out_dir`` (a path or an object-store URI) with Ray.

    ``actors``: run model stages in actor pools (default: when the cluster has GPUs). ``max_failures``: runs
    that may fail on a video (crashed worker) before it is quarantined. ``videos_per_write``: videos a
    shard-writing task gathers at least (fewer at the end). ``reprocess``: redo journaled videos that are
    'changed', 'failed' or 'all' (``curation.rerun``); ``check``: the ``precheck`` of these inputs, when the
    caller made it.
    """
    import ray

    t0 = time.perf_counter()
    output = DatasetOutput(out_dir)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
    summary = RunSummary(out_dir=out_dir, engine="ray", inputs=len(inputs))
    check = check or precheck(inputs, output, config, "ray", reprocess)  # from the journal: no Ray when nothing is left
    if check.summary is not None:
        return check.summary
    done, ids = set(check.skip), check.ids
    failures: dict[str, dict[str, Any]] = output.read_state(FAILURES)

    todo: list[tuple[str, str]] = []
    driver_results: list[VideoResult] = []
    for uri, (video_id, missing) in zip(inputs, ids):
        if missing is not None:
            driver_results.append(VideoResult(None, rejects=[missing]))
        elif video_id in done:
            summary.skipped += 1
        elif failures.get(video_id, {}).get("failures", 0) >= max_failures:
            driver_results.append(_quarantined(uri, video_id, failures[video_id]))
            done.add(video_id)
        else:
            todo.append((uri, video_id))
            done.add(video_id)  # the same content twice in the inputs is processed once

    if driver_results:
        driver_prefix = f"{config.shards.prefix}-{run_id}-driver"
        with output.writer(driver_prefix, config.shards.max_bytes, config_hash=check.config_hash) as writer:
            for result in driver_results:
                writer.add(result)
                output.publish(writer)
                _count_driver(summary, result)

    resources = init_ray(address, num_cpus)
    sink = ShardDatasink(
        out_dir, config.shards.prefix, config.shards.max_bytes, run_id, videos_per_write, check.config_hash
    )
    if todo:
        _run_graph(todo, config, output, sink, resources, actors)
    _merge(summary, sink.summary)

    finished = output.journal().finished
    failed = [(uri, vid) for uri, vid in todo if vid not in finished]
    if failed:
        for uri, vid in failed:
            entry = failures.setdefault(vid, {"uri": uri, "failures": 0, "reasons": []})
            entry["failures"] += 1
            entry["reasons"].append(f"run {run_id}: its Ray task failed (see the Ray logs of this run)")
        output.write_state(FAILURES, failures)
        log.error(
            "%d videos failed outside the stages (worker crash or out of memory); they are retried on the next "
            "run and quarantined after %d failures: %s",
            len(failed),
            max_failures,
            [u for u, _ in failed],
        )
    summary.seconds = time.perf_counter() - t0
    run_info = {
        "engine": "ray",
        "inputs": len(inputs),
        "seconds": round(summary.seconds, 3),
        "config": config.model_dump(mode="json"),
        "config_hash": check.config_hash,
        "reprocess": reprocess,
        "rerun": check.notes,
        "ray": {
            "version": ray.__version__,
            "address": address or os.environ.get("RAY_ADDRESS") or "local",
            "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "cluster_resources": resources,
            "model_actors": bool(actors if actors is not None else resources.get("GPU")),
            "failed_videos": len(failed),
        },
    }
    run = output.finalize(run_info)
    summary.dataset = run["counts"]
    return summary


def _run_graph(
    todo: list[tuple[str, str]],
    config: CurateConfig,
    output: DatasetOutput,
    sink: ShardDatasink,
    resources: dict[str, Any],
    actors: bool | None,
) -> None:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = len(todo)  # a crashed worker costs its videos, not the run (they are retried)
    config_json = config.model_dump_json()
    stage_dir = output.local_dir or output.uri  # where the LLM stages keep their response cache
    ds = ray.data.from_items([{COLUMN: _start(uri, vid)} for uri, vid in todo], override_num_blocks=len(todo))
    cpus = max(1, int(resources.get("CPU", 1)))
    for group in plan_groups(config, bool(resources.get("GPU")), actors):
        args = (config_json, stage_dir, group.names, group.scene)
        name = "+".join(group.names)
        if group.actors:
            llm = group.scene
            ds = ds.map_batches(
                StageRunner,
                fn_constructor_args=args,
                batch_size=8 if llm else 1,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpus if not group.num_gpus else None),
                num_gpus=group.num_gpus or None,
                num_cpus=0.5,
                zero_copy_batch=True,
            )
        else:
            ds = ds.map_batches(
                _run_group,
                fn_args=args,
                batch_size=1,
                num_cpus=1,
                zero_copy_batch=True,
            )
        log.debug("operator %s", name)
    ds = ds.map_batches(_finish, batch_size=1, zero_copy_batch=True)
    # a smaller CPU share keeps the writer out of the stage tasks: fused, the sink's bundling of
    # videos_per_write rows would make one task process those videos one after the other
    ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.25})


def _run_group(batch: dict[str, np.ndarray], config_json: str, stage_dir: str | None, names, scene) -> dict:
    return StageRunner(config_json, stage_dir, names, scene)(batch)


def _count_driver(summary: RunSummary, result: VideoResult) -> None:
    summary.rejects.update(Counter(f"{r.stage}/{r.reason}" for r in result.rejects))
    if result.video is not None:
        summary.videos += 1
        summary.videos_rejected += 1


def _merge(summary: RunSummary, part: RunSummary) -> None:
    for f in ("videos", "videos_rejected", "hours", "shots", "shots_kept", "scenes", "scenes_written"):
        setattr(summary, f, getattr(summary, f) + getattr(part, f))
    summary.rejects.update(part.rejects)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.curate", description="Curate videos with Ray Data.")
    add_ray_arguments(p)
    add_reprocess_argument(p)
    return p


def add_ray_arguments(p: argparse.ArgumentParser, with_inputs: bool = True) -> None:
    """Options of the Ray executor (shared with ``filmweaver curate``)."""
    if with_inputs:
        p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders, globs, lists, s3:// or gs://")
        p.add_argument("--out", required=True, help="output folder or object-store URI (s3://bucket/prefix)")
        add_config_arguments(p, "config YAML", "shots.backend=auto")
    g = p.add_argument_group("ray")
    g.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    g.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this run (default: all)")
    g.add_argument(
        "--actors",
        choices=["auto", "on", "off"],
        default="auto",
        help="model stages in actor pools: 'auto' when the cluster has GPUs",
    )
    g.add_argument(
        "--max-failures", type=int, default=3, help="runs that may crash on a video before it is quarantined"
    )
    g.add_argument("--videos-per-write", type=int, default=8, help="videos gathered by each shard-writing task")


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """``run_ray`` keyword arguments from parsed ``add_ray_arguments`` options."""
    return {
        "address": args.address,
        "num_cpus": args.num_cpus,
        "actors": {"auto": None, "on": True, "off": False}[args.actors],
        "max_failures": args.max_failures,
        "videos_per_write": args.videos_per_write,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from curation.errors import FilmweaverError

    try:
        config = load_config(args.config, args.overrides)
        summary = run_ray(expand_inputs(args.inputs), args.out, config, reprocess=args.reprocess, **ray_options(args))
    except FilmweaverError as exc:
        print(f"filmweaver: error: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    return 0


if __name__ == "__main__":
    # run the module's own copy: Ray pickles functions by module name, and workers cannot import __main__
    from pipelines.curate import main as module_main

    sys.exit(module_main())
