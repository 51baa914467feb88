"""The Ray executor: one streaming Ray Data graph over the stages of ``pipelines.plan``.

Rows are videos: a uri enters (never the bytes) and a pickled ``CuratedVideo`` leaves for the shard sink
(``pipelines.ray_sink``). Consecutive stages are fused into one operator; on a cluster with GPUs the model
stages (TransNetV2 shot splitting, CLIP embedding, MTCNN faces in the scene filter) run in actor pools that
load their model once per actor and ask for a share of a GPU, and the LLM stages (caption, verify, when a
backend is configured) run in an actor pool whose calls carry every scene of a batch of videos, so many
requests are in flight. Elsewhere stages run as CPU tasks that keep their built stages per worker process.
``run_stage_batch`` turns every per-item failure into a reject row, so a bad video never fails a block.

Resume: the output's journal names finished videos, which are skipped before the graph is built.

Failures outside Python: a video whose worker process dies (a decoder segfault, an out-of-memory kill) is
charged with the crash by the run's ``AttemptLedger`` (``pipelines.ray_attempts``); after ``max_failures``
crashes it is quarantined in the same run (journaled as rejected, reason ``quarantined``, with the crash
history) while the other videos go on. Tasks lost with a dead node are retried by Ray and charged to no
video. Ray's task retries are bounded; a video still unfinished when the graph ends (its nodes kept dying)
is counted in ``OUT/state/failures.json`` and quarantined after ``max_failures`` such runs.

Cluster safety: before any work, every node must see a local ``--out`` and the local inputs
(``pipelines.ray_nodes``), else the run is refused with the names of the nodes that do not.

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
import warnings
from collections import Counter
from typing import Any

import numpy as np

from curation.config import CurateConfig, add_config_arguments, load_config
from curation.records import Reject, VideoRecord
from curation.rerun import add_reprocess_argument
from curation.samples import VideoResult, video_result
from curation.stage import Stage, StageStats, VideoUnit, run_stage_batch
from pipelines.inputs import expand_inputs, skipped_info
from pipelines.local import duplicate_result, run_units
from pipelines.output import DatasetOutput
from pipelines.plan import scene_stage_classes, video_stage_classes
from pipelines.ray_attempts import AttemptGuard, AttemptLedger, task_retries, testing_crash_hook
from pipelines.ray_cpus import task_threads, video_cpus
from pipelines.ray_nodes import alive_nodes, check_shared_paths
from pipelines.ray_options import add_ray_arguments, ray_options
from pipelines.ray_session import interrupt_kept
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
    """Runs one ``StageGroup`` on a batch of rows; a callable class, so it also serves as an actor.

    ``ledger``: the run's ``AttemptLedger`` actor, told of every video this runner starts and finishes; a
    video it says has crashed its workers too often is rejected as ``quarantined`` without running a stage,
    and the videos of a batch whose worker died run one at a time after the rest of their batch.
    """

    def __init__(
        self, config_json: str, stage_dir: str | None, names: tuple[str, ...], scene: bool, ledger: Any = None
    ):
        self.stages = _built_stages(config_json, stage_dir, names)
        self.scene, self.names = scene, "+".join(names)
        self.guard = AttemptGuard(ledger, self.names) if ledger is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        works: list[_Work] = [pickle.loads(b) for b in batch[COLUMN]]
        with task_threads():
            alone = self._attempt([w for w in works if not w.rejected])
            for w in alone:  # suspects of an earlier batch crash: one at a time, so a crash names its video
                self._attempt([w])
        return {COLUMN: [pickle.dumps(w, protocol=5) for w in works]}

    def _attempt(self, works: list[_Work]) -> list[_Work]:
        """Run the stages on ``works`` together, as one attempt the ledger knows of; the works it defers
        (``AttemptLedger.begin``: to run alone) are returned unrun, the quarantined ones become rejected."""
        if not works:
            return []
        plan = {"started": [w.video_id for w in works], "alone": [], "quarantined": {}}
        if self.guard is not None:
            plan = self.guard.begin([w.video_id for w in works])
        for w in works:
            detail = plan["quarantined"].get(w.video_id)
            if detail is not None:
                w.rejects.append(Reject(w.video_id, w.uri, "ray", "quarantined", detail))
                w.rejected = True
        started = [w for w in works if w.video_id in plan["started"]]
        for w in started:
            testing_crash_hook(w.uri, self.names)
        self._run(started)
        if self.guard is not None and started:
            self.guard.end([w.video_id for w in started])
        return [w for w in works if w.video_id in plan["alone"]]

    def _run(self, works: list[_Work]) -> None:
        if not works:
            return
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

    from .ray_session import start_ray

    kwargs: dict[str, Any] = {} if (address or os.environ.get("RAY_ADDRESS")) else {"num_cpus": num_cpus}
    start_ray(address, **kwargs, logging_level=logging.WARNING, log_to_driver=True)
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

    ``actors``: run model stages in actor pools (default: when the cluster has GPUs). ``max_failures``: worker
    crashes a video may cause in this run, and runs that may end with it unfinished, before it is quarantined.
    ``videos_per_write``: videos a shard-writing task gathers at least (fewer at the end). ``reprocess``: redo
    journaled videos that are 'changed', 'failed' or 'all' (``curation.rerun``); ``check``: the ``precheck`` of
    these inputs, when the caller made it.

    Raises ``OutputNotShared`` on a multi-node cluster whose nodes do not all see a local ``out_dir`` or the
    local inputs (checked before anything is written).
    """
    import ray

    t0 = time.perf_counter()
    output = DatasetOutput(out_dir)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
    summary = RunSummary(out_dir=out_dir, engine="ray", inputs=len(inputs))
    check = check or precheck(inputs, output, config, "ray", reprocess)  # from the journal: no Ray when nothing is left
    if check.summary is not None:
        return check.summary
    skipped = skipped_info(inputs)
    summary.skipped_files, summary.skipped_examples = skipped["count"], skipped["examples"]
    done, ids = set(check.skip), check.ids
    failures: dict[str, dict[str, Any]] = output.read_state(FAILURES)

    todo: list[tuple[str, str]] = []
    driver_results: list[VideoResult] = []
    first: dict[str, str] = {}  # content id -> the first uri of this run that has it
    for uri, (video_id, missing) in zip(inputs, ids):
        if video_id in first:
            driver_results.append(duplicate_result(uri, video_id, first[video_id]))
        elif missing is not None:
            driver_results.append(VideoResult(None, rejects=[missing]))
        elif video_id in done:
            summary.skipped += 1
        elif failures.get(video_id, {}).get("failures", 0) >= max_failures:
            driver_results.append(_quarantined(uri, video_id, failures[video_id]))
            done.add(video_id)
            first[video_id] = uri
        else:
            todo.append((uri, video_id))
            done.add(video_id)
            first[video_id] = uri

    resources = init_ray(address, num_cpus)
    nodes = alive_nodes()
    model_actors = bool(actors if actors is not None else resources.get("GPU"))
    # model stages in actor pools (GPU clusters) keep one CPU per task; CPU-only runs share the idle cores
    per_video = 1 if model_actors else video_cpus([n["resources"].get("CPU", 0.0) for n in nodes], len(todo))
    if todo:
        check_shared_paths(out_dir, [uri for uri, _ in todo])  # before anything is written
    if driver_results:
        driver_prefix = f"{config.shards.prefix}-{run_id}-driver"
        with output.writer(driver_prefix, config.shards.max_bytes, config_hash=check.config_hash) as writer:
            for result in driver_results:
                writer.add(result)
                output.publish(writer)
                _count_driver(summary, result)

    sink = ShardDatasink(
        out_dir, config.shards.prefix, config.shards.max_bytes, run_id, videos_per_write, check.config_hash
    )
    attempts: dict[str, Any] = {"nodes_worked": [], "crashes": {}, "node_losses": 0, "quarantined": []}
    if todo:
        with interrupt_kept():
            attempts = _run_graph(todo, config, output, sink, resources, actors, max_failures, per_video)
    _merge(summary, sink.summary)
    _check_late_nodes(out_dir, todo, nodes, attempts["nodes_worked"])

    finished = output.journal().finished
    failed = [(uri, vid) for uri, vid in todo if vid not in finished]
    if failed:
        for uri, vid in failed:
            entry = failures.setdefault(vid, {"uri": uri, "failures": 0, "reasons": []})
            entry["failures"] += 1
            crashes = attempts["crashes"].get(vid, [])
            entry["reasons"].append(
                f"run {run_id}: unfinished after Ray retried its tasks up to {task_retries(max_failures)} times"
                + (f"; {'; '.join(crashes[-2:])}" if crashes else "")
            )
        output.write_state(FAILURES, failures)
        log.error(
            "%d videos are unfinished: Ray gave up on their tasks (nodes lost repeatedly, or an error outside the "
            "stages; see the Ray logs); they are retried on the next run and quarantined after %d such runs: %s",
            len(failed),
            max_failures,
            [u for u, _ in failed],
        )
    if attempts["quarantined"]:
        log.warning(
            "%d videos crashed their worker %d times and were quarantined (rejects.parquet, reason 'quarantined'): %s",
            len(attempts["quarantined"]),
            max_failures,
            attempts["quarantined"],
        )
    summary.seconds = time.perf_counter() - t0
    busy_share = None
    if attempts.get("seconds"):
        cpu_s = attempts["stage_busy_s"] * per_video
        busy_share = round(cpu_s / (attempts["seconds"] * max(1.0, resources.get("CPU", 1))), 3)
    run_info = check.run_info("ray", inputs, skipped, summary, config, reprocess)
    run_info["ray"] = {
        "version": ray.__version__,
        "address": address or os.environ.get("RAY_ADDRESS") or "local",
        "nodes": len(alive_nodes()),
        "nodes_at_start": [{"node_id": n["node_id"], "ip": n["ip"]} for n in nodes],
        # every node that ran a stage task in this run, also those lost before its end
        "nodes_worked": attempts["nodes_worked"],
        "cluster_resources": resources,
        "model_actors": model_actors,
        "cpus_per_video": per_video,  # CPUs each video's stage tasks asked for (video_cpus)
        "stage_cpu_busy_share": busy_share,  # stage task s x cpus_per_video / (graph s x cluster CPUs)
        "stage_window": attempts.get("stage_window"),  # Unix times of the first stage start, last stage end
        "worker_crashes": sum(len(c) for c in attempts["crashes"].values()),
        "batch_crashes": attempts.get("batch_crashes", 0),  # workers that died holding several videos
        "node_losses": attempts["node_losses"],
        "quarantined_videos": len(attempts["quarantined"]),
        "failed_videos": len(failed),
    }
    run = output.finalize(run_info)
    summary.dataset = run["counts"]
    return summary


def _check_late_nodes(
    out_dir: str, todo: list[tuple[str, str]], at_start: list[dict[str, Any]], worked: list[dict[str, Any]]
) -> None:
    """Probe the nodes that joined after the start-of-run check and did work (an autoscaled cluster)."""
    probed = {n["node_id"] for n in at_start}
    late = [n for n in worked if n["node_id"] not in probed]
    if not late or len(at_start) + len(late) < 2:
        return
    alive = {n["node_id"]: n for n in alive_nodes()}
    check_shared_paths(out_dir, [uri for uri, _ in todo], [alive[n["node_id"]] for n in late if n["node_id"] in alive])


def _run_graph(
    todo: list[tuple[str, str]],
    config: CurateConfig,
    output: DatasetOutput,
    sink: ShardDatasink,
    resources: dict[str, Any],
    actors: bool | None,
    max_failures: int,
    per_video: int = 1,
) -> dict[str, Any]:
    """Run the graph over ``todo``, each video's stage tasks asking for ``per_video`` CPUs; the ``AttemptLedger``
    report (nodes that worked, crashes, quarantines)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    # on the driver's node: a lost worker node must not take the attempt history with it
    ledger = ray.remote(AttemptLedger).options(num_cpus=0, scheduling_strategy=here).remote(max_failures)
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = len(todo)  # a video Ray gives up on costs that video, not the run
    ds = ray.data.from_items([{COLUMN: _start(uri, vid)} for uri, vid in todo], override_num_blocks=len(todo))
    with warnings.catch_warnings():
        # Ray Data has no named parameter for task retries yet, and its catch-all remote arguments warn
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        ds = _stage_operators(ds, config, output, resources, actors, ledger, task_retries(max_failures), per_video)
    # Write tasks ask for no CPU. Ray Data reserves part of the cluster for every operator that asks for some
    # (reservation ratio 0.5, split evenly), so a writer asking for even 0.25 CPU cost the stage operator
    # about half the CPUs, and the writer still waited behind the stage tasks for a free CPU until they were
    # all done, holding every finished video uncommitted. An operator that asks for no CPU reserves none and
    # is never held back by CPU: the stage tasks get every CPU and commits follow the stages as they finish.
    # A write task is short and mostly I/O (tar and Parquet writes), so it oversubscribes a CPU only briefly.
    # Different resources also keep the writer unfused from the stage tasks, which would otherwise process
    # the videos_per_write videos a write task gathers one after the other.
    ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
    report = ray.get(ledger.report.remote())
    ray.kill(ledger)
    return report


def _stage_operators(ds, config, output, resources, actors, ledger, retries: int, per_video: int = 1):
    """``ds`` mapped through every ``StageGroup`` and ``_finish``: rows of pickled ``CuratedVideo``; stage tasks
    ask for ``per_video`` CPUs (``video_cpus``)."""
    import ray

    config_json = config.model_dump_json()
    stage_dir = output.local_dir or output.uri  # where the LLM stages keep their response cache
    cpus = max(1, int(resources.get("CPU", 1)))
    for group in plan_groups(config, bool(resources.get("GPU")), actors):
        args = (config_json, stage_dir, group.names, group.scene, ledger)
        if group.actors:
            llm = group.scene
            ds = ds.map_batches(
                StageRunner,
                fn_constructor_args=args,
                batch_size=8 if llm else 1,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpus if not group.num_gpus else None),
                num_gpus=group.num_gpus or None,
                num_cpus=0.5,
                max_task_retries=retries,
                zero_copy_batch=True,
            )
        else:
            ds = ds.map_batches(
                _run_group,
                fn_args=args,
                batch_size=1,
                num_cpus=per_video,
                max_retries=retries,
                zero_copy_batch=True,
            )
        log.debug("operator %s", "+".join(group.names))
    return ds.map_batches(_finish, batch_size=1, num_cpus=1, max_retries=retries, zero_copy_batch=True)


def _run_group(batch: dict[str, np.ndarray], config_json: str, stage_dir: str | None, names, scene, ledger) -> dict:
    return StageRunner(config_json, stage_dir, names, scene, ledger)(batch)


def _count_driver(summary: RunSummary, result: VideoResult) -> None:
    summary.rejects.update(Counter(f"{r.stage}/{r.reason}" for r in result.rejects))
    if result.video is not None and result.video.status == "duplicate":
        summary.duplicates += 1
    elif result.video is not None:
        summary.videos += 1
        summary.videos_rejected += 1


def _merge(summary: RunSummary, part: RunSummary) -> None:
    for f in ("videos", "videos_rejected", "hours", "shots", "shots_kept", "scenes", "scenes_written"):
        setattr(summary, f, getattr(summary, f) + getattr(part, f))
    summary.rejects.update(part.rejects)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.curate", description="Curate videos with Ray Data.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders, globs, lists, s3:// or gs://")
    p.add_argument("--out", required=True, help="output folder or object-store URI (s3://bucket/prefix)")
    add_config_arguments(p, "config YAML", "shots.backend=auto")
    add_ray_arguments(p)
    add_reprocess_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from curation.errors import FilmweaverError

    from .errors import RESUME_HINT, check_output_dir, report_error

    try:
        config = load_config(args.config, args.overrides)
        check_output_dir(args.out)
        summary = run_ray(expand_inputs(args.inputs), args.out, config, reprocess=args.reprocess, **ray_options(args))
    except KeyboardInterrupt as exc:
        return report_error(exc, False, RESUME_HINT)
    except FilmweaverError as exc:
        return report_error(exc, False)
    print(summary.format())
    return 0


if __name__ == "__main__":
    # run the module's own copy: Ray pickles functions by module name, and workers cannot import __main__
    from pipelines.curate import main as module_main

    sys.exit(module_main())
