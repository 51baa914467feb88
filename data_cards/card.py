"""The Hugging Face dataset card (``README.md``): YAML header plus sections after the HF template and
Datasheets for Datasets, rendered from ``templates/README.md.j2``."""

from __future__ import annotations

import json
import tarfile
from typing import Any

import yaml
from pydantic import BaseModel, Field

from .dataset import MANIFEST_SCHEMAS, CuratedDataset
from .stats import DatasetStats, released_scenes, size_category

COLUMN_DOCS = {
    "video_id": "content id of the source video (blake2b of size and first/last MiB)",
    "uri": "where the source video was read from",
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
    "embed": "Keyframes are embedded with an open_clip image tower (or a weight-free fallback, recorded below).",
    "scenes": "Shots are grouped in order: a shot joins the current scene when its keyframe embedding's cosine "
    "similarity to any of the scene's last w shots reaches tau, which keeps A-B-A-B dialogue cuts together.",
    "filters": "Shots that are too short, black, blank or static are dropped, then scenes with too few shots or "
    "too many faces (MTCNN) on their keyframes.",
    "export": "Kept shots are re-encoded to H.264 clips at the configured resolution.",
    "caption": "One request per scene carries all its shots; the model returns a character registry, the setting "
    "and one caption per shot that names characters by id, rendered with the same description every time.",
    "verify": "Each shot is checked against its caption again; vague or wrong captions are refined or the shot "
    "is rejected.",
    "write": "Scenes are written as WebDataset samples; manifests, index and run.json record everything.",
}


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
        "@misc{filmweaver_dataset,\n  title  = {FilmWeaver multi-shot scenes},\n  note   = {Curated with the "
        "FilmWeaver data engine},\n  year   = {2025}\n}",
        description="BibTeX entry to cite the dataset.",
    )


def dataset_features(max_shots: int) -> list[dict[str, Any]]:
    """``dataset_info.features`` of the scenes config: ``json`` as Json, then clip and keyframe per shot.

    Declared so that ``datasets``' WebDataset loader skips inferring the features from the first samples,
    which fails when scenes hold different numbers of shots (their members differ).
    """
    features: list[dict[str, Any]] = [{"name": "json", "dtype": "json"}]
    for i in range(max_shots):
        features += [{"name": f"{i:03d}.mp4", "dtype": "video"}, {"name": f"{i:03d}.jpg", "dtype": "image"}]
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
    configs += [{"config_name": f"{p.stem}_manifest", "data_files": f"manifests/{p.name}"} for p in ds.manifest_files()]
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


def render_card(
    ds: CuratedDataset, stats: DatasetStats, options: CardOptions, plots: dict[str, str], repo_id: str | None
) -> str:
    """The card's Markdown, YAML header included. ``plots`` maps plot stems to paths relative to the card."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("data_cards", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    config = ds.run.get("config") or {}
    stage_names = [s["name"] for s in stats.stages] or [k for k in STAGE_DOCS if k in config]
    stages = [
        {"name": n, "doc": STAGE_DOCS.get(n, ""), "config": config.get(n) if isinstance(config.get(n), dict) else None}
        for n in stage_names
    ]
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
        run=ds.run,
        stages=stages,
        manifests=manifests,
        example=_example_sample(ds),
        plots=plots,
        repo_id=repo_id or "OWNER/DATASET",
        models=ds.run.get("models") or {},
        prompt_versions=ds.run.get("prompt_versions") or [],
        caption_models=ds.run.get("caption_models") or [],
    )
