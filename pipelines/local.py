"""The local executor: every stage of ``pipelines.plan`` in one process, one video at a time.

Videos already finished in ``out_dir`` (by content id, so moved files are recognised) are skipped; the
journal in ``curation.journal`` makes an interrupted run resume exactly. Progress is a tqdm bar over videos.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from tqdm import tqdm

from curation.config import CurateConfig
from curation.finalize import finalize
from curation.journal import DatasetWriter
from curation.records import Reject, VideoRecord
from curation.samples import VideoResult, video_result
from curation.stage import Stage, StageStats, VideoUnit, run_stage_batch

from .inputs import skipped_info
from .output import DatasetOutput
from .plan import scene_stages, video_stages
from .rerun import Precheck, precheck
from .summary import RunSummary

log = logging.getLogger(__name__)


def run_units(stages: list[Stage], units: list[Any]) -> tuple[list[Any], list[Reject], VideoUnit | None]:
    """Run units through stages in order: the surviving units, the whole-unit rejects, and the last
    ``VideoUnit`` seen (the video stages' state before clip export fans out to scenes)."""
    rejects: list[Reject] = []
    last_video = next((u for u in units if isinstance(u, VideoUnit)), None)
    for stage in stages:
        if not units:
            break
        out = run_stage_batch(stage, units)
        units = [u for u in out if not isinstance(u, Reject)]
        rejects += [r for r in out if isinstance(r, Reject)]
        last_video = next((u for u in units if isinstance(u, VideoUnit)), last_video)
    return units, rejects, last_video


class LocalPipeline:
    """The stages, built once (models load here), and the processing of one video."""

    def __init__(self, config: CurateConfig, out_dir: str):
        self.config = config
        self.video_stages = video_stages(config, out_dir)
        self.scene_stages = scene_stages(config, out_dir)
        self.totals: dict[str, StageStats] = {s.name: StageStats() for s in self.stages}

    @property
    def stages(self) -> list[Stage]:
        return self.video_stages + self.scene_stages

    def process(self, uri: str, video_id: str) -> VideoResult:
        """All stages on one video; never raises for a bad video (it becomes a rejected record)."""
        unit = VideoUnit(VideoRecord(video_id=video_id, uri=uri))
        scenes, rejects, last_video = run_units(self.video_stages, [unit])
        rejected = bool(rejects)  # a video stage's whole-unit reject is the video's
        if not rejected:
            scenes, scene_rejects, _ = run_units(self.scene_stages, scenes)
            rejects += scene_rejects
        return video_result(last_video or unit, scenes, rejects, rejected)

    def take_stats(self) -> dict[str, StageStats]:
        """Stage counters since the last call (added to the run totals), in pipeline order."""
        delta = {}
        for stage in self.stages:
            delta[stage.name], stage.stats = stage.stats, StageStats()
            self.totals[stage.name].merge(delta[stage.name])
        return delta

    def provenance(self) -> dict[str, Any]:
        """Model ids that shaped the data (recorded in run.json)."""
        out: dict[str, Any] = {}
        for stage in self.stages:
            embedder = getattr(stage, "embedder", None)
            if embedder is not None:
                out["embedder"] = {"kind": embedder.kind, "model_id": embedder.model_id}
        return out

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


def duplicate_result(uri: str, video_id: str, original: str) -> VideoResult:
    """The ``videos.parquet`` row of an input whose content an earlier input of the run has (not processed)."""
    record = VideoRecord(video_id=video_id, uri=uri, status="duplicate", duplicate_of=original)
    return VideoResult(record)


def run_local(
    inputs: list[str],
    out_dir: str,
    config: CurateConfig,
    reprocess: str | None = None,
    check: Precheck | None = None,
) -> RunSummary:
    """Curate ``inputs`` (uris, already expanded) into ``out_dir`` in this process; resumable.

    ``reprocess``: redo journaled videos that are 'changed' (another config), 'failed' or 'all'
    (``curation.rerun``); videos rejected for a transient reason are retried in any case. ``check``: the
    ``precheck`` of these inputs, when the caller made it."""
    t0 = time.perf_counter()
    check = check or precheck(inputs, DatasetOutput(out_dir), config, "local", reprocess)
    if check.summary is not None:
        return check.summary
    summary = RunSummary(out_dir=out_dir, engine="local", inputs=len(inputs))
    skipped = skipped_info(inputs)
    summary.skipped_files, summary.skipped_examples = skipped["count"], skipped["examples"]
    done = set(check.skip)
    first: dict[str, str] = {}  # content id -> the first uri of this run that has it
    shards = config.shards
    writer = DatasetWriter(
        out_dir,
        shards.prefix,
        shards.max_bytes,
        commit_videos=shards.commit_videos,
        commit_s=shards.commit_s,
        config_hash=check.config_hash,
    )
    write_stats = StageStats()
    pipeline: LocalPipeline | None = None
    bar = tqdm(list(zip(inputs, check.ids)), unit="video", desc="curate", dynamic_ncols=True)
    try:
        for uri, (video_id, missing) in bar:
            if video_id in first:
                result = duplicate_result(uri, video_id, first[video_id])
            elif video_id in done:
                summary.skipped += 1
                continue
            elif missing is not None:
                result = VideoResult(None, rejects=[missing])
            else:
                first[video_id] = uri
                done.add(video_id)
                if pipeline is None:
                    pipeline = LocalPipeline(config, out_dir)  # only when there is work: models load here
                result = pipeline.process(uri, video_id)
            t1 = time.perf_counter()
            stats = pipeline.take_stats() if pipeline is not None else {}
            writer.add_stats(stats, pipeline.provenance() if pipeline is not None else None)
            writer.add(result)
            write_stats.items_in += len(result.samples)
            write_stats.items_out += len(result.samples)
            write_stats.seconds += time.perf_counter() - t1
            writer.add_stats({"write": write_stats})
            write_stats = StageStats()
            _count(summary, result)
            bar.set_postfix(hours=f"{summary.hours:.2f}", scenes=summary.scenes_written, refresh=False)
        writer.close()
    finally:
        bar.close()
        if pipeline is not None:
            pipeline.close()
    summary.seconds = time.perf_counter() - t0
    info = check.run_info("local", inputs, skipped, summary, config, reprocess)
    run = finalize(out_dir, info)
    summary.dataset = run["counts"]
    return summary


def _count(summary: RunSummary, result: VideoResult) -> None:
    summary.rejects.update(Counter(f"{r.stage}/{r.reason}" for r in result.rejects))
    if result.video is None:
        return
    if result.video.status == "duplicate":
        summary.duplicates += 1
        return
    summary.videos += 1
    if result.video.status != "ok":
        summary.videos_rejected += 1
        return
    summary.hours += result.video.duration_s / 3600
    summary.shots += len(result.shots)
    summary.shots_kept += sum(s.kept for s in result.shots)
    summary.scenes += len(result.scenes)
    summary.scenes_written += len(result.samples)
