"""The card's score distributions (quantiles, histogram, flagged counts against the thresholds), and the card of
a small curated run: its scores, verdicts, near-duplicates and buckets with the numbers of its manifests, and
no such section for what did not run."""

import re
from collections import Counter

import jinja2
import numpy as np
import pyarrow.parquet as pq
import pytest

from data_cards.release import build_release
from data_cards.scores import score_distributions
from tests.test_data_cards import CONFIG, build, tiny_mp4


def test_score_distributions_and_template():
    rows = [{"flow": i / 100, "frozen": 1.0 if i < 10 else 0.0, "text_area": None} for i in range(100)]
    table = score_distributions(rows, {"min_motion": 0.2, "max_frozen": 0.8, "max_text_area": 0.01})
    by = {d["name"]: d for d in table}
    assert set(by) == {"flow", "frozen"}  # text_area never measured: no entry
    assert by["flow"]["flagged"] == 20 and by["frozen"]["flagged"] == 10
    assert by["flow"]["quantiles"][0.5] == pytest.approx(0.495)
    assert sum(by["flow"]["histogram"]["counts"]) == 100 and by["flow"]["missing"] == 0
    env = jinja2.Environment(loader=jinja2.PackageLoader("data_cards", "templates"), trim_blocks=True)
    md = env.get_template("scores.md.j2").render(score_table=table)
    assert "| `flow` | frame diagonals / s | 100 |" in md and "`min_motion` below 0.2 | 20 |" in md


# --- the card of a curated run: real numbers from its manifests, sections only for what ran


@pytest.fixture(scope="module")
def scored_release(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scored")
    out = tmp / "out"
    out.mkdir()
    build(out, tiny_mp4(tmp), scored=True)
    release = build_release(out)
    rows = {n: pq.read_table(release.root / "manifests" / f"{n}.parquet").to_pylist() for n in ("shots", "scenes")}
    return release.readme.read_text(), rows, pq.read_table(release.root / "manifests" / "rejects.parquet").to_pylist()


def test_score_run_card_shows_distributions_with_thresholds(scored_release):
    text, rows, rejects = scored_release
    shots = rows["shots"]
    flow = np.array([s["flow"] for s in shots], np.float64)
    quantiles = " | ".join(f"{np.quantile(flow, q):.4g}" for q in (0.05, 0.25, 0.5, 0.75, 0.95))
    slow = int((flow < 0.05).sum())
    assert slow > 0
    assert f"| `flow` | frame diagonals / s | {len(shots)} | {quantiles} | `min_motion` below 0.05 | {slow} |" in text
    frozen = sum(s["frozen"] >= 0.6 for s in shots)
    assert f"| `frozen` | fraction of frame pairs | {len(shots)} |" in text
    assert f"`max_frozen` at or above 0.6 | {frozen} |" in text
    section = text.split("### Score distributions")[1].split("### Funnel")[0]
    assert "| `brightness` | mean luma 0-255 |" in section
    assert "| `aesthetic` |" not in section  # never measured


def test_score_run_card_says_verdicts_were_recorded_not_applied(scored_release):
    text, rows, rejects = scored_release
    assert not [r for r in rejects if r["stage"] in ("filters", "shot_filter", "scene_filter")]
    verdicts = Counter(s["verdict"] for s in rows["shots"] if s["verdict"])
    scene_verdicts = Counter(s["verdict"] for s in rows["scenes"] if s["verdict"])
    assert verdicts["frozen"] == 2 and verdicts["text-overlay"] and scene_verdicts
    filters = text.split("### Filters")[1].split("### Funnel")[0]
    assert "the verdicts were recorded but not applied" in filters
    n = verdicts["frozen"]
    rule = "frozen score at least 0.6 (fraction of frame pairs) | `filters.max_frozen`"
    assert f"| shots | frozen | {rule} | 0 shots | {n} shots |" in filters
    n = verdicts["text-overlay"]
    rule = "text covering more than 0.1 of the keyframe | `filters.max_text_area`"
    assert f"| shots | text-overlay | {rule} | 0 shots | {n} shots |" in filters
    for reason, n in scene_verdicts.items():
        assert re.search(rf"\| scenes \| {reason} \| [^|]+ \| [^|]+ \| 0 scenes \| {n} scenes? \|", filters), reason
    listed = ", ".join(f"{r} {n}" for r, n in verdicts.most_common())
    assert f"Verdicts recorded on shots: {listed}." in filters
    assert "Flagged shots were **kept**" in filters and "dropped by the shot filter" not in filters
    stages = text.split("## Curation process")[1].split("### Filters")[0]
    assert "`shot_filter`" in stages and "each shot's verdict is recorded in `verdict` and no shot is dropped" in stages
    assert "Shots are dropped by the shot rules" not in stages


def test_score_run_card_counts_near_duplicates_and_buckets(scored_release):
    text, rows, _ = scored_release
    for level, threshold, least in (("shots", 0.97, 6), ("scenes", 0.96, 1)):
        marked = [r for r in rows[level] if r["duplicate_of"]]
        assert len(marked) >= least
        low = min(r["duplicate_similarity"] for r in marked)
        assert f"| {level} | {len(rows[level])} | {len(marked)} | {threshold} | {low:.4f} |" in text
    released = [s for s in rows["scenes"] if s["shard"]]
    buckets = text.split("### Buckets")[1].split("### Funnel")[0]
    for column in ("resolution_bucket", "aspect_bucket", "duration_bucket"):
        for name, n in Counter(s[column] for s in released).items():
            assert f"| {name} | {n} |" in buckets, (column, name)
    assert buckets.index("| 360p |") < buckets.index("| 1080p |")  # config order, not counts


def test_card_leaves_out_scores_dedup_and_buckets_that_did_not_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    build(out, tiny_mp4(tmp_path), config={**CONFIG, "dedup": {"enabled": False}})
    text = build_release(out).readme.read_text()
    for absent in ("Score distributions", "### Near-duplicates", "### Buckets", "Flagged, kept", "not applied"):
        assert absent not in text, absent
    assert "| shots | too-short | shorter than 1.0 s | `filters.min_shot_s` | 1 shot |" in text
