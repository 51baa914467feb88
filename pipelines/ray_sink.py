"""The Ray Data sink of curation: each write task commits whole videos into its own shards and journal parts.

Rows hold a pickled ``CuratedVideo`` (one video's records, samples and stage counters). A write task opens a
``DatasetWriter`` with its own prefix (``{prefix}-{run}-{task}``) on the output, local or object store
(``pipelines.output``), so concurrent tasks never share a file; a shard is renamed (or moved, on object
stores) only once complete, and a video is journaled in the commit that holds all its scenes. A retried
task skips the videos its failed attempt already committed (it reads its own parts only, never the whole
journal), so nothing is written twice. The few-video shards of write tasks are merged into ``max_bytes``
shards by ``finalize``.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ray.data import Datasink
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import WriteResult

from curation.samples import VideoResult
from curation.stage import StageStats

from .local import _count
from .output import DatasetOutput
from .summary import RunSummary

COLUMN = "video"  # the column holding a pickled CuratedVideo


@dataclass
class CuratedVideo:
    """What the stages made of one video, ready to be written."""

    video_id: str | None
    result: VideoResult
    stats: dict[str, StageStats] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


class ShardDatasink(Datasink[RunSummary]):
    """Writes ``CuratedVideo`` rows as WebDataset shards + journal parts; ``summary`` once the write is done."""

    def __init__(
        self,
        out_uri: str,
        prefix: str,
        max_bytes: int,
        run_id: str,
        videos_per_write: int = 8,
        config_hash: str | None = None,
    ):
        self.out_uri, self.prefix, self.max_bytes, self.run_id = out_uri, prefix, max_bytes, run_id
        self.videos_per_write = videos_per_write
        self.config_hash = config_hash  # journaled with every video (``curation.rerun``)
        self.summary = RunSummary(out_dir=out_uri, engine="ray")

    @property
    def min_rows_per_write(self) -> int:
        # a write task gets several videos, so shards fill up instead of holding one video each
        return self.videos_per_write

    def get_name(self) -> str:
        return "WriteShards"

    def write(self, blocks: Iterable[Block], ctx: Any) -> RunSummary:
        output = DatasetOutput(self.out_uri)
        summary = RunSummary(out_dir=self.out_uri, engine="ray")
        prefix = f"{self.prefix}-{self.run_id}-{ctx.task_idx:05d}"
        done = output.journal(prefix).finished  # committed by an earlier attempt of this task
        with output.writer(prefix, self.max_bytes, config_hash=self.config_hash) as writer:
            for block in blocks:
                for blob in BlockAccessor.for_block(block).to_arrow().column(COLUMN).to_pylist():
                    video: CuratedVideo = pickle.loads(blob)
                    if video.video_id is not None and video.video_id in done:
                        continue
                    t0 = time.perf_counter()
                    writer.add(video.result)
                    n = len(video.result.samples)
                    video.stats["write"] = StageStats(n, n, seconds=time.perf_counter() - t0)
                    writer.add_stats(video.stats, video.provenance)
                    output.publish(writer)
                    _count(summary, video.result)
        return summary

    def on_write_complete(self, write_result: WriteResult[RunSummary]) -> None:
        for s in write_result.write_returns:
            self.summary.videos += s.videos
            self.summary.videos_rejected += s.videos_rejected
            self.summary.hours += s.hours
            self.summary.shots += s.shots
            self.summary.shots_kept += s.shots_kept
            self.summary.scenes += s.scenes
            self.summary.scenes_written += s.scenes_written
            self.summary.rejects.update(s.rejects)
