"""Before an engine starts: recover the output, identify the inputs, decide from the journal what is left.

Both engines call ``precheck`` first. It says what the run will do with videos the output already holds
(``curation.rerun``), and when nothing is left it finishes the run itself (rejects of unreadable inputs
journaled, ``finalize``, a ``run.json`` history entry) without starting Ray or loading a model.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from curation.config import CurateConfig
from curation.errors import FilmweaverError
from curation.journal import Journal
from curation.records import Reject
from curation.rerun import changed_sections, config_hash, plan_rerun
from curation.samples import VideoResult
from curation.video import content_id

from .output import DatasetOutput
from .summary import RunSummary

log = logging.getLogger(__name__)


def identify(uri: str) -> tuple[str | None, Reject | None]:
    """Cheap content id of an input (no decoding), or the reject of an input that cannot be read at all."""
    try:
        return content_id(uri), None
    except FilmweaverError as exc:
        return None, Reject(uri, uri, "probe", exc.reason, str(exc))
    except OSError as exc:
        reason = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
        return None, Reject(uri, uri, "probe", reason, f"cannot read {uri}: {exc.strerror or exc}")


def identify_inputs(inputs: list[str], threads: int = 16) -> list[tuple[str | None, Reject | None]]:
    """``identify`` every input, overlapping the I/O (a content id reads 2 MiB per input)."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(identify, inputs))


@dataclass
class Precheck:
    """What ``precheck`` found: the journal, each input's id, the videos to skip, and, when nothing was left
    to do, the finished run's summary."""

    journal: Journal
    ids: list[tuple[str | None, Reject | None]]
    skip: set[str]
    config_hash: str
    summary: RunSummary | None = None
    notes: list[str] = field(default_factory=list)

    def run_info(
        self,
        engine: str,
        inputs: list[str],
        skipped: dict[str, Any],
        summary: RunSummary,
        config: CurateConfig,
        reprocess: str | None,
    ) -> dict[str, Any]:
        """The fields of ``run.json`` (and of its history entry) every engine records for a run."""
        return {
            "engine": engine,
            "inputs": len(inputs),
            "skipped_files": skipped,
            "seconds": round(summary.seconds, 3),
            "config": config.model_dump(mode="json"),
            "config_hash": self.config_hash,
            "reprocess": reprocess,
            "rerun": self.notes,
        }

    def todo(self, inputs: list[str]) -> list[tuple[str, str]]:
        """(uri, video id) of each input to process, every content once."""
        seen = set(self.skip)
        out = []
        for uri, (vid, _) in zip(inputs, self.ids):
            if vid is not None and vid not in seen:
                seen.add(vid)
                out.append((uri, vid))
        return out


def precheck(
    inputs: list[str],
    output: DatasetOutput,
    config: CurateConfig,
    engine: str,
    reprocess: str | None = None,
    run_info: dict[str, Any] | None = None,
) -> Precheck:
    """Recover ``output``, identify ``inputs``, log what the run will do; finish the run when nothing is left.

    ``reprocess``: None, 'changed', 'failed' or 'all' (``curation.rerun``). ``run_info`` is added to
    ``run.json`` when this call finishes the run."""
    t0 = time.perf_counter()
    journal = output.recover()
    ids = identify_inputs(inputs)
    chash = config_hash(config)
    journaled = journal.videos()
    previous = output.read_run().get("config")
    sections = changed_sections(previous, config) if previous else []
    plan = plan_rerun(journaled, [v for v, _ in ids if v is not None], chash, reprocess, sections)
    check = Precheck(journal, ids, plan.skip, chash)
    message = plan.message()
    if message:
        log.warning("%s: %s", output.uri, message)
        check.notes.append(message)
    if check.todo(inputs):
        return check
    summary = RunSummary(out_dir=output.uri, engine=engine, inputs=len(inputs))
    summary.skipped = sum(1 for v, _ in ids if v is not None)
    missing = [r for _, r in ids if r is not None]
    if missing:
        with output.writer(f"{config.shards.prefix}-precheck", config.shards.max_bytes) as writer:
            for reject in missing:
                writer.add(VideoResult(None, rejects=[reject]))
        summary.rejects.update(f"{r.stage}/{r.reason}" for r in missing)
    summary.seconds = time.perf_counter() - t0
    info = {
        "engine": engine,
        "inputs": len(inputs),
        "seconds": round(summary.seconds, 3),
        "config": config.model_dump(mode="json"),
        "config_hash": chash,
        "engine_started": False,
        "rerun": check.notes,
        **(run_info or {}),
    }
    summary.dataset = output.finalize(info)["counts"]
    log.info(
        "%s: nothing left to do (%d inputs already done); the %s engine was not started",
        output.uri,
        summary.skipped,
        engine,
    )
    check.summary = summary
    return check
