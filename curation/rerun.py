"""What a rerun into an existing output does with the videos it already journaled.

Each journaled video carries the hash of the config that curated it (``config_hash``: only the fields that
change results, so a new ``concurrency`` or ``device`` does not count) and the transient reasons among its
rejects (``records.TRANSIENT_REASONS``: network, rate limits, a missing key or model, I/O, memory). Rules:

- a video with a transient reject (its own, or one of its scenes' or shots') is retried: the environment
  failed, not the content; the LLM response cache makes the scenes that did succeed free the second time;
- a video rejected for its content, or curated under the same config, is kept as it is;
- a video curated under another config is kept, and the run says so and how to redo it, unless
  ``--reprocess changed`` (or ``all``) asks for it;
- ``--reprocess failed`` redoes every rejected video, whatever the reason; ``--reprocess all`` everything.

A reprocessed video's new records and samples replace the old ones at ``finalize`` (the later commit wins).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

REPROCESS_CHOICES = ("changed", "failed", "all")
# Config sections that shape the dataset (shards.* only packs it), and within them the fields that change
# speed, cost or where work runs but never a record or a sample.
RESULT_SECTIONS = ("video", "shots", "keyframes", "embed", "scenes", "filters", "export", "caption", "verify")
NOT_RESULT_FIELDS = {
    "video": {"decode_threads"},
    "shots": {"device"},
    "embed": {"device", "batch_size"},
    "filters": {"device", "face_threads"},
    "export": {"encoders"},
    "caption": {
        "file_poll_s",
        "file_timeout_s",
        "timeout_s",
        "max_retries",
        "backoff_initial_s",
        "backoff_max_s",
        "concurrency",
        "rpm",
        "tpm",
        "batch",
        "batch_poll_s",
        "batch_timeout_s",
        "batch_discount",
        "prices",
        "output_tokens_per_shot",
        "output_tokens_per_scene",
    },
    "verify": {"output_tokens_per_shot"},
}


def result_config(config: BaseModel | dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The result-affecting part of a curation config, section by section (a dumped config works too)."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return {
        s: {k: v for k, v in data.get(s, {}).items() if k not in NOT_RESULT_FIELDS.get(s, set())}
        for s in RESULT_SECTIONS
    }


def config_hash(config: BaseModel | dict[str, Any]) -> str:
    """Short hash of ``result_config(config)``: equal for configs that give the same dataset."""
    blob = json.dumps(result_config(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def changed_sections(old: dict[str, Any], new: BaseModel) -> list[str]:
    """Result-affecting sections that differ between a dumped config ``old`` and ``new``."""
    a, b = result_config(old), result_config(new)
    return [s for s in RESULT_SECTIONS if a[s] != b[s]]


@dataclass
class RerunPlan:
    """Which inputs already journaled are skipped, retried or redone, with the words to tell the user."""

    reprocess: str | None
    skip: set[str] = field(default_factory=set)  # journaled and kept as they are
    retry: Counter = field(default_factory=Counter)  # transient reason -> videos retried
    changed: list[str] = field(default_factory=list)  # curated under another config
    redo: list[str] = field(default_factory=list)  # redone because --reprocess asked
    sections: list[str] = field(default_factory=list)  # what changed, when known

    @property
    def n_retry(self) -> int:
        return sum(self.retry.values())

    def message(self) -> str:
        """One paragraph for the log: what this run does with the videos the output already holds."""
        lines = []
        kept_changed = [v for v in self.changed if v in self.skip]
        if self.skip:
            lines.append(f"{len(self.skip)} videos already done: kept as they are")
        if self.retry:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.retry.items()))
            lines.append(f"{self.n_retry} videos rejected last time for a transient reason ({reasons}): retried")
        what = f" (changed: {', '.join(self.sections)})" if self.sections else ""
        if kept_changed:
            lines.append(
                f"{len(kept_changed)} of them were curated with another config{what}: kept as they are; rerun "
                "with --reprocess changed to redo them"
            )
        if self.redo:
            lines.append(f"{len(self.redo)} videos redone (--reprocess {self.reprocess}){what}")
        return "; ".join(lines)


def plan_rerun(
    journaled: dict[str, dict[str, Any]],
    video_ids: list[str],
    config_hash_now: str,
    reprocess: str | None = None,
    sections: list[str] | None = None,
) -> RerunPlan:
    """Decide for each input id found in ``journaled`` (``Journal.videos()``) whether this run skips it."""
    if reprocess is not None and reprocess not in REPROCESS_CHOICES:
        raise ValueError(f"reprocess must be one of {REPROCESS_CHOICES}, got {reprocess!r}")
    plan = RerunPlan(reprocess, sections=list(sections or []))
    for vid in dict.fromkeys(video_ids):
        entry = journaled.get(vid)
        if entry is None:
            continue
        changed = entry.get("config") not in (None, config_hash_now)
        if changed:
            plan.changed.append(vid)
        if entry.get("retry"):
            plan.retry.update(entry["retry"])
        elif (
            reprocess == "all"
            or (reprocess == "changed" and changed)
            or (reprocess == "failed" and entry.get("rejected"))
        ):
            plan.redo.append(vid)
        else:
            plan.skip.add(vid)
    return plan


def add_reprocess_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--reprocess`` option of ``filmweaver curate`` and ``python -m pipelines.curate``."""
    parser.add_argument(
        "--reprocess",
        choices=REPROCESS_CHOICES,
        help="redo videos the output already holds: 'changed' (curated with another config), 'failed' (rejected, "
        "whatever the reason) or 'all'. Without it, finished videos are kept (the run says which were curated "
        "with another config) and only videos rejected for a transient reason (network, rate limit, I/O) are "
        "retried",
    )
