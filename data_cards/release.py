"""``filmweaver release OUT``: build ``OUT/card/`` (card, Croissant, plots, browser) and optionally push."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .browser import write_browser
from .card import CardOptions, render_card
from .croissant import build_croissant, validate_croissant
from .dataset import CuratedDataset
from .plots import write_plots
from .stats import DatasetStats, compute_stats

log = logging.getLogger(__name__)

# What a hub release uploads from OUT (llm_cache/ and the commit journal stay local).
UPLOAD_PATTERNS = ["shards/*.tar", "manifests/*.parquet", "index.json", "run.json", "card/**"]


@dataclass
class Release:
    """Paths of a built release and the statistics it shows."""

    card_dir: Path
    readme: Path
    croissant: Path
    plots: dict[str, Path]
    browser: Path
    stats: DatasetStats


def _description(stats: DatasetStats) -> str:
    c = stats.counts
    return (
        f"{c['scenes_released']} multi-shot scenes ({c['shots_released']} shots, {c['hours_released']:.2f} h) "
        f"curated from {c['videos']} videos with the FilmWeaver data engine: shots grouped into scenes by CLIP "
        "similarity, group-captioned with a consistent character registry, and verified."
    )


def build_release(out_dir: str | Path, options: CardOptions | None = None, repo_id: str | None = None) -> Release:
    """Write ``card/README.md``, ``card/croissant.json``, ``card/plots/*.png`` and ``card/browse.html``."""
    options = options or CardOptions()
    ds = CuratedDataset.load(out_dir)
    stats = compute_stats(ds)
    for level in stats.funnel:
        if level.unaccounted:
            log.warning("%d %s left the pipeline without a reject row", level.unaccounted, level.name)
    card = ds.root / "card"
    card.mkdir(exist_ok=True)
    plots = write_plots(stats, card / "plots")
    readme = card / "README.md"
    readme.write_text(render_card(ds, stats, options, {k: f"plots/{p.name}" for k, p in plots.items()}, repo_id))
    url = options.homepage or (f"https://huggingface.co/datasets/{repo_id}" if repo_id else "https://example.org")
    croissant = card / "croissant.json"
    jsonld = build_croissant(ds, options.pretty_name, _description(stats), options.license, url, options.citation)
    croissant.write_text(json.dumps(jsonld, indent=1, ensure_ascii=False) + "\n")
    validate_croissant(str(croissant))
    browser = write_browser(ds, card)
    log.info("release card written to %s", card)
    return Release(card, readme, croissant, plots, browser, stats)


def push_to_hub(out_dir: str | Path, release: Release, repo_id: str, private: bool = False, token: str | None = None):
    """Create the dataset repo if needed and upload shards, manifests, index, run.json and the card.

    The card becomes the repo's ``README.md`` with plot links pointing into ``card/``. The token comes from
    ``token`` or the usual ``HF_TOKEN`` / ``huggingface-cli login``; it is never logged.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    readme = release.readme.read_text().replace("](plots/", "](card/plots/")
    api.upload_file(
        path_or_fileobj=readme.encode(),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Dataset card",
    )
    commit = api.upload_folder(
        folder_path=str(out_dir),
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=UPLOAD_PATTERNS,
        commit_message="Shards, manifests and card",
    )
    log.info("pushed %s to https://huggingface.co/datasets/%s", out_dir, repo_id)
    return commit
