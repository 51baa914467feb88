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

from .dataset import MANIFEST_SCHEMAS, CuratedDataset
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
    "item_id": "id of the rejected video, shot or scene (the uri for unreadable inputs)",
    "stage": "stage that rejected the item",
    "reason": "short reason slug",
    "detail": "human-readable detail",
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
                "doc": skipped.get(name) or STAGE_DOCS.get(name, ""),
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


def filter_rows(stats: DatasetStats, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The filter rules of the run with their settings (units included) and how many items each dropped;
    reject reasons of the filter stages that no known rule describes follow with their counts."""
    filters = config.get("filters") if isinstance(config.get("filters"), dict) else {}
    rows = []
    for reason, (key, rule, level) in FILTER_RULES.items():
        dropped = stats.rejects_where(level=level, reason=reason)
        if key not in filters and not dropped:
            continue
        text = rule.format(v=filters[key]) if key in filters else "(setting not recorded)"
        if reason == "too-many-characters" and filters.get("faces") is False:
            text = "off (filters.faces = false)"
        rows.append({"level": level, "reason": reason, "rule": text, "setting": key, "dropped": _count(dropped, level)})
    other: Counter = Counter()
    for (stage, level, reason), n in stats.reject_rows.items():
        if stage in FILTER_STAGES and reason not in FILTER_RULES:
            other[(level, reason)] += n
    for (level, reason), n in sorted(other.items()):
        rows.append({"level": level, "reason": reason, "rule": "", "setting": "", "dropped": _count(n, level)})
    return rows


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
    verification, filters) are left out."""
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
        name: [(f.name, str(f.type), COLUMN_DOCS.get(f.name, "")) for f in schema]
        for name, schema in MANIFEST_SCHEMAS.items()
    }
    header = yaml.safe_dump(card_header(ds, stats, options), sort_keys=False, allow_unicode=True, width=1000)
    return env.get_template("README.md.j2").render(
        header=header,
        o=options,
        s=stats,
        c=stats.counts,
        stages=stage_rows(stats, config, skipped),
        filters=filter_rows(stats, config),
        manifests=manifests,
        example=_example_sample(ds),
        plots=plots,
        repo_id=repo_id,
        pattern=brace_pattern([s.url for s in ds.shards]) if ds.shards else None,
        models={k: _model_text(v) for k, v in (ds.run.get("models") or {}).items()},
        captioning=caps,
        citation=citation(options, year),
    )
