"""The end-of-run summary every executor prints: what this run did and what the dataset now holds."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunSummary:
    """Counts of one run (videos skipped as already finished are not processed again) and the dataset's."""

    out_dir: str
    engine: str
    inputs: int = 0
    videos: int = 0  # processed by this run, rejected ones included
    videos_rejected: int = 0
    skipped: int = 0  # finished by an earlier run into the same output
    duplicates: int = 0  # inputs whose content an earlier input of this run has (a 'duplicate' videos row)
    skipped_files: int = 0  # files a folder scan passed over (not a video extension)
    skipped_examples: list[str] = field(default_factory=list)
    hours: float = 0.0  # of the videos processed by this run
    shots: int = 0
    shots_kept: int = 0
    scenes: int = 0  # scenes found by this run
    scenes_written: int = 0
    rejects: Counter = field(default_factory=Counter)  # "stage/reason" -> count
    seconds: float = 0.0
    dataset: dict[str, Any] = field(default_factory=dict)  # run.json counts of the whole output

    def format(self) -> str:
        """Human-readable summary."""
        rate = f", {self.hours * 3600 / self.seconds:.1f} s of video per s" if self.seconds and self.hours else ""
        lines = [
            f"curated with the {self.engine} engine in {self.seconds:.1f} s{rate}",
            f"  videos  : {self.videos} processed ({self.videos_rejected} rejected), {self.skipped} already done, "
            f"{self.hours:.3f} h of video",
            f"  shots   : {self.shots} ({self.shots_kept} kept)",
            f"  scenes  : {self.scenes} found, {self.scenes_written} written",
        ]
        if self.duplicates or self.skipped_files:
            examples = f" (e.g. {', '.join(self.skipped_examples)})" if self.skipped_examples else ""
            lines.append(
                f"  inputs  : {self.inputs} videos, {self.duplicates} duplicate content, "
                f"{self.skipped_files} non-video files skipped{examples}"
            )
        if self.rejects:
            lines.append("  rejects : " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejects.items())))
        d = self.dataset
        if d:
            lines.append(
                f"  dataset : {d.get('samples', 0)} scenes in {d.get('shards', 0)} shards "
                f"({d.get('bytes', 0) / 1e6:.1f} MB) from {d.get('videos_ok', 0)} videos"
            )
        dup = d.get("duplicates") or {}
        if dup.get("shots") or dup.get("scenes"):  # curation/dedup.py, across videos
            lines.append(
                f"  dupes   : {dup.get('shots', 0)} shots, {dup.get('scenes', 0)} scenes near-duplicate another video's"
            )
        out = os.path.abspath(self.out_dir)
        lines.append(f"  output  : {os.path.join(out, 'shards')}  (index.json, manifests/, run.json in {out})")
        return "\n".join(lines)
