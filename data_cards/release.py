"""``filmweaver release OUT``: a release folder that is a Hugging Face dataset repository as it stands.

Layout of ``RELEASE`` (default ``OUT/release``)::

    README.md              the dataset card: YAML (configs, data_files, features) + sections from what ran
    croissant.json         ML Croissant metadata with checksums
    plots/*.png            distributions shown by the card
    browse.html browse/    the offline scene browser (keyframes, captions, shot clips)
    shards/*.tar           the scene shards, source paths made public (hard links when nothing changes)
    manifests/*.parquet    videos, shots, scenes, captions, rejects, source paths made public
    index.json run.json    shard index (recomputed) and run record (paths scrubbed)

``load_dataset(RELEASE)`` reads it, ``push_to_hub`` uploads it unchanged. ``OUT`` keeps the full source
paths (its manifests are the private record, never uploaded), ``OUT/llm_cache`` and the commit journal.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .browser import DEFAULT_CLIP_SCENES, write_browser
from .card import CardOptions, citation, render_card
from .croissant import build_croissant, validate_croissant
from .dataset import CuratedDataset
from .plots import write_plots
from .public import source_paths, write_public_copy
from .stats import DatasetStats, compute_stats, run_date

log = logging.getLogger(__name__)

RELEASE_DIR = "release"


@dataclass
class Release:
    """Paths of a built release and the statistics it shows."""

    root: Path
    readme: Path
    croissant: Path
    plots: dict[str, Path]
    browser: Path
    stats: DatasetStats


def _description(stats: DatasetStats) -> str:
    c = stats.counts
    text = (
        f"{c['scenes_released']} multi-shot scenes ({c['shots_released']} shots, {c['hours_released']:.2f} h) "
        f"curated from {c['videos']} videos with the FilmWeaver data engine: shots grouped into scenes by CLIP "
        "similarity"
    )
    if c["captions"]:
        text += ", group-captioned with a consistent character registry"
    return text + "."


def build_release(
    out_dir: str | Path,
    options: CardOptions | None = None,
    repo_id: str | None = None,
    release_dir: str | Path | None = None,
    source_roots: list[str] | None = None,
    clip_scenes: int = DEFAULT_CLIP_SCENES,
) -> Release:
    """Write the release folder of the curated output ``out_dir`` (layout in the module docstring).

    ``source_roots``: folders (or ``s3://bucket/prefix``) the published uris are made relative to; default:
    the deepest folder holding every input. ``clip_scenes``: scenes whose shot clips the browser plays
    (spread evenly over the dataset; -1 for all). Raises ``NotACuratedDataset`` for a folder with no output.
    """
    options = options or CardOptions()
    private = CuratedDataset.load(out_dir)
    root = Path(release_dir) if release_dir else private.root / RELEASE_DIR
    root.mkdir(parents=True, exist_ok=True)
    write_public_copy(private, root, source_paths(private, source_roots))
    ds = CuratedDataset.load(root)
    stats = compute_stats(ds)
    for level in stats.funnel:
        if level.unaccounted:
            log.warning("%d %s left the pipeline without a reject row", level.unaccounted, level.name)
    if (root / "plots").exists():  # a plot the previous release had and this one lacks must not stay behind
        shutil.rmtree(root / "plots")
    plots = write_plots(stats, root / "plots")
    readme = root / "README.md"
    year = run_date(private.run, private.root / "run.json").year
    plot_paths = {k: f"plots/{p.name}" for k, p in plots.items()}
    readme.write_text(render_card(ds, stats, options, plot_paths, repo_id, year))
    url = options.homepage or (f"https://huggingface.co/datasets/{repo_id}" if repo_id else "https://example.org")
    croissant = root / "croissant.json"
    jsonld = build_croissant(
        ds, options.pretty_name, _description(stats), options.license, url, citation(options, year)
    )
    croissant.write_text(json.dumps(jsonld, indent=1, ensure_ascii=False) + "\n")
    validate_croissant(str(croissant))
    browser = write_browser(ds, root, clip_scenes)
    log.info("release written to %s", root)
    return Release(root, readme, croissant, plots, browser, stats)


def push_to_hub(release: Release, repo_id: str, private: bool = False, token: str | None = None):
    """Create the dataset repo if needed and upload the release folder as it is.

    The token comes from ``token`` or the usual ``HF_TOKEN`` / ``huggingface-cli login``; it is never logged.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(release.root),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Release: card, shards, manifests, browser",
    )
    log.info("pushed %s to https://huggingface.co/datasets/%s", release.root, repo_id)
    return commit
