"""The Hugging Face dataset card (``README.md``): YAML header plus sections after the HF template and
Datasheets for Datasets, rendered from ``templates/README.md.j2``."""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from typing import Any

import yaml
from pydantic import BaseModel, Field

from curation.buckets import duration_bucket, resolution_bucket
from curation.config import BucketsConfig, DedupConfig

from .dataset import MANIFEST_SCHEMAS, CuratedDataset
from .scores import SHOT_SCORES, score_distributions
from .stats import DatasetStats, released_scenes, size_category

COLUMN_DOCS = {
    "video_id": "content id of the source video (blake2b of size and first/last MiB)",
    "uri": "the source video, relative to the curator's source folder (file name only outside it; http(s) URLs as is)",
    "status": "ok, or rejected (see rejects)",
    "duration_s": "duration in seconds",
    "fps": "frame rate (fps_num / fps_den)",
    "width": "display width in pixels (rotation and aspect ratio applied)",
    "height": "display height in pixels",
    "shot_id": "{video_id}-s{index:05d}",
    "scene_id": "{video_id}-c{index:04d}; null for shots in no scene",
    "index": "position in the video (shots, scenes)",
    "start_frame": "first frame, counted in presentation order from 0",
    "end_frame": "frame after the last one (exclusive)",
    "start_s": "start time in seconds",
    "end_s": "end time in seconds",
    "transition_in": "cut or gradual: the transition opening the shot",
    "kept": "false when a filter or a later stage dropped the item",
    "reject_reason": "why the item was dropped",
    "keyframe_frames": "frame indices of the keyframes",
    "clip_start_frame": "first frame of the exported clip (the shot without a dissolve or fade at its start)",
    "clip_end_frame": "frame after the exported clip's last (without a closing transition; export.max_shot_s)",
    "brightness": "mean luma 0-255 of the sampled frames",
    "contrast": "luma standard deviation of the sampled frames",
    "motion": "mean absolute luma difference of consecutive frames, 0-255",
    "n_faces": "faces found by MTCNN on the keyframes",
    "boundary_score": "detector confidence of the opening cut",
    "shot_ids": "the scene's shots in order (released ones only for written scenes)",
    "link_similarity": "cosine similarity that admitted each following shot into the scene",
    "link_shot": "index within the scene of the shot each following shot matched",
    "max_faces": "most faces on one keyframe of the scene",
    "caption_status": "outcome of group captioning",
    "n_characters": "characters in the scene's registry",
    "shard": "shard file holding the scene sample",
    "caption": "the rendered caption: characters replaced by their one registry description",
    "caption_template": "the caption with character ids such as {C1}",
    "characters": "character ids visible in the shot",
    "shot_type": "close-up, medium, wide, ...",
    "camera_movement": "static, pan, tilt, ...",
    "verdict": "verification: accurate, fixed (refined) or wrong; empty when not verified",
    "problems": "problems the verifier found",
    "model": "captioning model",
    "prompt_version": "version of the prompt used",
    "flow": "mean optical-flow magnitude, frame diagonals per second",
    "frozen": "fraction 0-1 of frame pairs (scores.flow_interval_s apart) that did not change",
    "text_area": "fraction 0-1 of the keyframe covered by detected text (RapidOCR)",
    "sharpness": "Laplacian variance / luma variance of the keyframe",
    "aesthetic": "aesthetic head on the CLIP embedding; null without a head",
    "duplicate_of": "the item of another video this one near-duplicates (embedding cosine similarity)",
    "duplicate_similarity": "cosine similarity to duplicate_of",
    "mean_flow": "mean flow of the scene's kept shots",
    "max_frozen": "largest frozen score of the scene's kept shots",
    "max_text_area": "largest text_area of the scene's kept shots",
    "mean_sharpness": "mean sharpness of the scene's kept shots",
    "mean_aesthetic": "mean aesthetic score of the scene's kept shots",
    "resolution_bucket": "short-side bucket such as 720p (buckets.resolutions)",
    "aspect_bucket": "nearest named aspect ratio (buckets.aspects)",
    "duration_bucket": "scene duration bucket such as 2-5s (buckets.durations_s)",
    "item_id": "id of the rejected video, shot or scene (the uri for unreadable inputs)",
    "stage": "stage that rejected the item",
    "reason": "short reason slug",
    "detail": "human-readable detail",
}

# (manifest, column) -> meaning, where a column name means something else in that manifest
MANIFEST_COLUMN_DOCS = {
    ("shots", "verdict"): "the shot filter's reason at the run's thresholds; null when the shot passes",
    ("scenes", "verdict"): "the scene filter's reason at the run's thresholds; null when the scene passes",
}

STAGE_DOCS = {
    "probe": "Videos are probed with PyAV (duration, frame rate, size, rotation); unreadable or unusable inputs "
    "are rejected.",
    "shots": "Shot boundaries are detected (PySceneDetect content/adaptive detectors or TransNetV2) on frames "
    "decoded at the analysis size; keyframes are sampled in the same pass.",
    "embed": "Keyframes are embedded with an open_clip image tower, or a weight-free fallback when its weights "
    "cannot be loaded: the model actually used is listed under Models.",
    "shot_filter": "Shots are dropped by the shot rules of the filter table below.",
    "scenes": "Shots are grouped in order: a shot joins the current scene when its keyframe embedding's cosine "
    "similarity to any of the scene's last w shots reaches tau, which keeps A-B-A-B dialogue cuts together.",
    "scene_filter": "Scenes are dropped by the scene rules of the filter table below.",
    "export": "Kept shots are re-encoded to H.264 clips at the configured resolution.",
    "caption": "One request per scene carries all its shots; the model returns a character registry, the setting "
    "and one caption per shot that names characters by id, rendered with the same description every time.",
    "verify": "Each shot is checked against its caption again; vague or wrong captions are refined or the shot "
    "is rejected.",
    "write": "Scenes are written as WebDataset samples; manifests, index and run.json record everything.",
}
# stage -> (config section whose settings it used, unit of the items it takes, unit of the items it returns);
# a video stage passes whole videos even when it drops shots or scenes inside them (counted as rejects).
STAGE_UNITS = {
    "probe": ("video", "videos", "videos"),
    "shots": ("shots", "videos", "videos"),
    "embed": ("embed", "videos", "videos"),
    "shot_filter": ("filters", "videos", "videos"),
    "scenes": ("scenes", "videos", "videos"),
    "scene_filter": ("filters", "videos", "videos"),
    "export": ("export", "videos", "scenes"),
    "caption": ("caption", "scenes", "scenes"),
    "verify": ("verify", "scenes", "scenes"),
    "write": ("shards", "scenes", "scenes"),
}
# reject reason -> (filters.* setting, the rule with its unit, level of the dropped items)
FILTER_RULES = {
    "too-small": ("min_short_side", "short side below {v} px", "videos"),
    "too-short": ("min_shot_s", "shorter than {v} s", "shots"),
    "black": ("black_luma", "mean luma below {v} (0-255)", "shots"),
    "blank": ("blank_contrast", "luma standard deviation below {v} (0-255)", "shots"),
    "static": ("static_motion", "mean frame difference below {v} (0-255)", "shots"),
    "too-few-shots": ("min_scene_shots", "fewer than {v} kept shots", "scenes"),
    "too-many-characters": ("max_characters", "more than {v} faces on one keyframe (MTCNN)", "scenes"),
    "frozen": ("max_frozen", "frozen score at least {v} (fraction of frame pairs)", "shots"),
    "low-motion": ("min_motion", "flow below {v} frame diagonals / s", "shots"),
    "high-motion": ("max_motion", "flow above {v} frame diagonals / s", "shots"),
    "text-overlay": ("max_text_area", "text covering more than {v} of the keyframe", "shots"),
    "blurry": ("min_sharpness", "sharpness below {v} (Laplacian var / luma var)", "shots"),
    "aesthetic": ("min_aesthetic", "aesthetic score below {v}", "shots"),
}
# filters.mode = score: the filter stages judged every item and recorded the verdict without dropping it
SCORE_MODE_DOCS = {
    "shot_filter": "Shots are judged by the shot rules of the filter table below (`filters.mode = score`): each "
    "shot's verdict is recorded in `verdict` and no shot is dropped.",
    "scene_filter": "Scenes are judged by the scene rules of the filter table below (`filters.mode = score`): "
    "each scene's verdict is recorded in `verdict` and no scene is dropped.",
}
FILTER_STAGES = ("shot_filter", "scene_filter", "filters")


class CardOptions(BaseModel):
    """What the release says about the data beyond what the manifests hold."""

    pretty_name: str = Field("FilmWeaver multi-shot scenes", description="Human-readable dataset name.")
    license: str = Field("other", description="SPDX-style license id of the released annotations and clips.")
    source_licenses: list[str] = Field(
        default_factory=list, description="Licenses of the source videos, as they apply to the clips."
    )
    tags: list[str] = Field(
        default_factory=lambda: ["video", "multi-shot", "scenes", "captions", "webdataset"],
        description="Hub tags.",
    )
    homepage: str = Field("", description="Project or dataset homepage URL.")
    contact: str = Field("", description="Where takedown and consent requests go (e-mail or URL).")
    citation: str = Field(
        "", description="BibTeX entry to cite the dataset; empty: a @misc entry with the name and the run's year."
    )


def citation(options: CardOptions, year: int) -> str:
    """``options.citation``, or a ``@misc`` entry whose year is the run's."""
    if options.citation:
        return options.citation
    key = re.sub(r"[^a-z0-9]+", "_", options.pretty_name.lower()).strip("_") or "dataset"
    lines = [f"@misc{{{key}_{year},", f"  title  = {{{options.pretty_name}}},"]
    lines += ["  note   = {Curated with the FilmWeaver data engine},", f"  year   = {{{year}}}"]
    if options.homepage:
        lines[-1] += ","
        lines.append(f"  url    = {{{options.homepage}}}")
    return "\n".join(lines + ["}"])


def dataset_features(max_shots: int) -> list[dict[str, Any]]:
    """``dataset_info.features`` of the scenes config: ``json`` as Json, then clip and keyframe per shot.

    Declared so that ``datasets``' WebDataset loader skips inferring the features from the first samples,
    which fails when scenes hold different numbers of shots (their members differ). Clips are
    ``Video(decode=False)``: ``{"bytes", "path"}`` rows that need neither torchcodec nor FFmpeg.
    """
    features: list[dict[str, Any]] = [{"name": "json", "dtype": "json"}]
    for i in range(max_shots):
        features += [{"name": f"{i:03d}.mp4", "video": {"decode": False}}, {"name": f"{i:03d}.jpg", "dtype": "image"}]
    features += [
        {"name": "clip.npy", "list": {"list": "float16"}},
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
    ]
    return features


def card_header(ds: CuratedDataset, stats: DatasetStats, options: CardOptions) -> dict[str, Any]:
    """The YAML header of the card as a dict."""
    header: dict[str, Any] = {
        "pretty_name": options.pretty_name,
        "license": options.license,
        "task_categories": ["text-to-video"],
        "language": ["en"],
        "size_categories": [size_category(stats.counts["scenes_released"])],
        "tags": list(options.tags),
    }
    if options.source_licenses:
        header["source_licenses"] = list(options.source_licenses)
    configs: list[dict[str, Any]] = []
    if ds.shards:
        configs.append(
            {
                "config_name": "scenes",
                "data_files": [{"split": "train", "path": "shards/*.tar"}],
                "default": True,
            }
        )
    # One builder serves every config of a repository (datasets infers it from the first config's files), so
    # the Parquet manifests are not configs: they load with the "parquet" builder (see the card's Loading).
    header["configs"] = configs
    if ds.shards:
        max_shots = max((len(s["shot_ids"]) for s in released_scenes(ds)), default=1)
        header["dataset_info"] = [{"config_name": "scenes", "features": dataset_features(max_shots)}]
    return header


def _example_sample(ds: CuratedDataset) -> tuple[str, list[str]] | None:
    """A real sample: its JSON (first two shots shown) and its member names."""
    for shard in ds.shards[:1]:
        with tarfile.open(ds.root / shard.url) as tar:
            names, record = [], None
            for info in tar:
                key, ext = info.name.split(".", 1)
                if names and not names[0].startswith(key + "."):
                    break
                names.append(info.name)
                if ext == "json":
                    record = json.loads(tar.extractfile(info).read())
        if record is None:
            return None
        n = len(record.get("shots", []))
        if n > 2:
            record["shots"] = record["shots"][:2] + [f"... {n - 2} more shots"]
        return json.dumps(record, indent=2, ensure_ascii=False), names
    return None


def _count(n: int, unit: str) -> str:
    """``1 shot``, ``3 shots``: ``unit`` is the plural."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def stage_rows(stats: DatasetStats, config: dict[str, Any], skipped: dict[str, str]) -> list[dict[str, Any]]:
    """One row per stage in run.json order: what it did, its settings (scalars), items in and out with their
    units, rejects by level (videos, shots, scenes), seconds and its own counters. A stage in ``skipped``
    passed its items on without work: its text says why and no settings are shown."""
    rows = []
    for st in stats.stages:
        name = st["name"]
        section, unit_in, unit_out = STAGE_UNITS.get(name, (name, "items", "items"))
        settings = config.get(section) if isinstance(config.get(section), dict) else None
        if settings:
            settings = {k: v for k, v in settings.items() if not isinstance(v, dict | list)}
        rejected = {lv: n for lv in ("videos", "shots", "scenes") if (n := stats.rejects_where(stage=name, level=lv))}
        rows.append(
            {
                "name": name,
                "doc": skipped.get(name)
                or (score_mode(config) and SCORE_MODE_DOCS.get(name))
                or STAGE_DOCS.get(name, ""),
                "settings": None if name in FILTER_STAGES or name in skipped else settings,
                "items_in": _count(st.get("items_in", 0), unit_in),
                "items_out": _count(st.get("items_out", 0), unit_out),
                "rejected": ", ".join(_count(n, lv) for lv, n in rejected.items()) or "0",
                "seconds": float(st.get("seconds", 0.0)),
                "produced": ", ".join(
                    f"{k} {v:g}" for k, v in (st.get("counts") or {}).items() if not k.startswith("llm_")
                ),
            }
        )
    return rows


def score_mode(config: dict[str, Any]) -> bool:
    """Whether the run only recorded the filters' verdicts (``filters.mode = score``)."""
    return ((config.get("filters") or {}).get("mode")) == "score"


def _verdicts(ds: CuratedDataset) -> dict[str, Counter]:
    """Verdict reasons recorded on the shots and scenes of the manifests, by level."""
    return {lv: Counter(r["verdict"] for r in ds.rows(lv) if r.get("verdict")) for lv in ("shots", "scenes")}


def filter_rows(stats: DatasetStats, config: dict[str, Any], ds: CuratedDataset | None = None) -> list[dict[str, Any]]:
    """The filter rules of the run with their settings (units included) and how many items each dropped;
    reject reasons of the filter stages that no known rule describes follow with their counts. In score mode
    (with ``ds``) each row also counts the items whose recorded verdict is its reason (``flagged``)."""
    filters = config.get("filters") if isinstance(config.get("filters"), dict) else {}
    verdicts = _verdicts(ds) if ds is not None and score_mode(config) else None
    rows = []
    for reason, (key, rule, level) in FILTER_RULES.items():
        dropped = stats.rejects_where(level=level, reason=reason)
        flagged = verdicts[level][reason] if verdicts and level in verdicts else 0
        if key not in filters and not dropped and not flagged:
            continue
        text = rule.format(v=filters[key]) if key in filters else "(setting not recorded)"
        if key in filters and filters[key] is None:
            text = f"off (filters.{key} = null)"
        if reason == "too-many-characters" and filters.get("faces") is False:
            text = "off (filters.faces = false)"
        row = {"level": level, "reason": reason, "rule": text, "setting": key, "dropped": _count(dropped, level)}
        if verdicts is not None:
            row["flagged"] = _count(flagged, level) if level in verdicts else "-"
        rows.append(row)
    other: Counter = Counter()
    for (stage, level, reason), n in stats.reject_rows.items():
        if stage in FILTER_STAGES and reason not in FILTER_RULES:
            other[(level, reason)] += n
    for (level, reason), n in sorted(other.items()):
        row = {"level": level, "reason": reason, "rule": "", "setting": "", "dropped": _count(n, level)}
        if verdicts is not None:
            row["flagged"] = _count(verdicts[level][reason], level) if level in verdicts else "-"
        rows.append(row)
    return rows


def scores_section(ds: CuratedDataset, config: dict[str, Any]) -> dict[str, Any] | None:
    """Per-score distributions of every shot with the thresholds used (``data_cards.scores``), whether they
    were applied (``filters.mode``) and the verdicts recorded per level; None when no shot has a score."""
    filters = config.get("filters") if isinstance(config.get("filters"), dict) else {}
    measured = [name for name in SHOT_SCORES if name not in ("brightness", "contrast")]
    shots = ds.rows("shots")
    if not any(r.get(name) is not None for r in shots for name in measured):
        return None
    verdicts = _verdicts(ds)
    return {
        "table": score_distributions(shots, filters),
        "mode": filters.get("mode", "filter"),
        "verdicts": {lv: dict(c.most_common()) for lv, c in verdicts.items() if c},
        "scenes_kept": sum(1 for s in released_scenes(ds)),
    }


def dedup_section(ds: CuratedDataset, config: dict[str, Any]) -> dict[str, Any] | None:
    """Near-duplicates marked at finalize (``curation.dedup``): counts per level from the manifests with the
    similarity thresholds; None when dedup did not run (disabled, skipped or an older run)."""
    found = (ds.run.get("counts") or {}).get("duplicates")
    dedup = config.get("dedup") if isinstance(config.get("dedup"), dict) else {}
    if not isinstance(found, dict) or "skipped" in found or dedup.get("enabled") is False:
        return None
    rows = []
    for level, threshold in (("shots", "shot_threshold"), ("scenes", "scene_threshold")):
        items = ds.rows(level)
        marked = [r for r in items if r.get("duplicate_of")]
        sims = [r["duplicate_similarity"] for r in marked if r.get("duplicate_similarity") is not None]
        rows.append(
            {
                "level": level,
                "n_items": len(items),
                "duplicates": len(marked),
                "threshold": dedup.get(threshold, DedupConfig.model_fields[threshold].default),
                "min_similarity": min(sims) if sims else None,
            }
        )
    return {"rows": rows, "cluster_size": dedup.get("cluster_size", DedupConfig.model_fields["cluster_size"].default)}


def _bucket_names(kind: str, buckets: dict[str, Any]) -> list[str]:
    """Bucket names of one kind in the config's order (smallest first), from ``curation.buckets``."""
    config = BucketsConfig.model_validate(buckets)
    if kind == "resolution_bucket":
        edges = sorted(config.resolutions)
        return [resolution_bucket(e, e, edges) for e in [edges[0] - 1, *edges]]
    if kind == "aspect_bucket":
        return list(config.aspects)
    edges = sorted(config.durations_s)
    points = [edges[0] / 2] + [(lo + hi) / 2 for lo, hi in zip(edges, edges[1:])] + [edges[-1]]
    return [duration_bucket(x, edges) for x in points]


def bucket_tables(ds: CuratedDataset, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Released scenes per resolution, aspect-ratio and duration bucket (``scenes.parquet``), in the order of
    the run's ``buckets`` config; kinds no released scene has are left out."""
    buckets = config.get("buckets") if isinstance(config.get("buckets"), dict) else {}
    scenes = released_scenes(ds)
    tables = []
    for kind, title in (
        ("resolution_bucket", "Resolution (short side)"),
        ("aspect_bucket", "Aspect ratio"),
        ("duration_bucket", "Duration"),
    ):
        counts = Counter(s[kind] for s in scenes if s.get(kind))
        if not counts:
            continue
        order = _bucket_names(kind, buckets)
        names = [n for n in order if n in counts] + sorted(n for n in counts if n not in order)
        tables.append({"column": kind, "title": title, "counts": [(n, counts[n]) for n in names]})
    return tables


def _model_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v not in (None, ""))
    if isinstance(value, list):
        return "; ".join(_model_text(v) for v in value)
    return str(value)


def captioning(ds: CuratedDataset, stats: DatasetStats) -> dict[str, Any] | None:
    """What the card says about captioning and verification, or None when no caption was made."""
    config = ds.run.get("config") or {}
    backend = (config.get("caption") or {}).get("backend")
    if not stats.counts["captions"] and backend in (None, "none"):
        return None
    captions = ds.rows("captions")
    verdicts = Counter(c["verdict"] for c in captions if c["verdict"])
    verify = config.get("verify") or {}
    return {
        "backend": backend,
        "models": ds.run.get("caption_models") or sorted({c["model"] for c in captions if c["model"]}),
        "prompt_versions": ds.run.get("prompt_versions")
        or sorted({c["prompt_version"] for c in captions if c["prompt_version"]}),
        "statuses": dict(Counter(s["caption_status"] or "none" for s in released_scenes(ds)).most_common()),
        "verdicts": dict(verdicts.most_common()),
        "verify_enabled": verify.get("enabled"),
        "wrong": ", ".join(
            _count(n, lv) for lv in ("shots", "scenes") if (n := stats.rejects_where(stage="verify", level=lv))
        )
        or "nothing",
        "llm": stats.llm,
    }


def render_card(
    ds: CuratedDataset,
    stats: DatasetStats,
    options: CardOptions,
    plots: dict[str, str],
    repo_id: str | None,
    year: int,
) -> str:
    """The card's Markdown, YAML header included. ``plots`` maps plot stems to paths relative to the card;
    ``year`` (of the run) goes into the generated citation. Sections about stages that did not run (captioning,
    verification, filters, scores, near-duplicates, buckets) are left out."""
    import jinja2

    from .loading import brace_pattern

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("data_cards", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    config = ds.run.get("config") or {}
    caps = captioning(ds, stats)
    skipped = {}
    if caps is None:
        skipped["caption"] = "Not run: this run had no captioning model (`caption.backend = none`)."
    if caps is None or not caps["verdicts"]:
        skipped["verify"] = "Not run: " + ("no captions to verify." if caps is None else "no shot was verified.")
    manifests = {
        name: [
            (f.name, str(f.type), MANIFEST_COLUMN_DOCS.get((name, f.name)) or COLUMN_DOCS.get(f.name, ""))
            for f in schema
        ]
        for name, schema in MANIFEST_SCHEMAS.items()
    }
    header = yaml.safe_dump(card_header(ds, stats, options), sort_keys=False, allow_unicode=True, width=1000)
    return env.get_template("README.md.j2").render(
        header=header,
        o=options,
        s=stats,
        c=stats.counts,
        stages=stage_rows(stats, config, skipped),
        filters=filter_rows(stats, config, ds),
        score_mode=score_mode(config),
        scores=scores_section(ds, config),
        dedup=dedup_section(ds, config),
        buckets=bucket_tables(ds, config),
        manifests=manifests,
        example=_example_sample(ds),
        plots=plots,
        repo_id=repo_id,
        pattern=brace_pattern([s.url for s in ds.shards]) if ds.shards else None,
        models={k: _model_text(v) for k, v in (ds.run.get("models") or {}).items()},
        captioning=caps,
        citation=citation(options, year),
    )
