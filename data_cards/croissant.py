"""ML Croissant 1.0 JSON-LD of a curated dataset: its files with checksums and record sets per manifest.

``contentUrl`` values are ``base_url`` + the path inside the release folder; the default (empty) resolves
from ``croissant.json`` at the release root, and a hub release may pass the repository's resolve URL.
"""

from __future__ import annotations

import datetime
from typing import Any

import pyarrow as pa

from .dataset import MANIFEST_SCHEMAS, CuratedDataset, sha256_file

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

RECORD_KEYS = {"videos": "video_id", "shots": "shot_id", "scenes": "scene_id", "captions": "shot_id"}
RECORD_DESCRIPTIONS = {
    "videos": "One row per input video (status ok or rejected) with its probed properties.",
    "shots": "One row per detected shot: frame range [start_frame, end_frame), times, scores, scene, kept flag.",
    "scenes": "One row per scene: its shots in order, clustering evidence, caption status and shard.",
    "captions": "One row per captioned shot: rendered caption, template with character ids, verification verdict.",
    "rejects": "One row per rejected item (video, shot or scene): stage, reason and detail.",
}
SAMPLE_MEMBERS = {
    "scene-json": ("*.json", "application/json", "Scene records: shots, captions, character registry, setting."),
    "shot-clips": ("*.mp4", "video/mp4", "Shot clips, one per shot, re-encoded (H.264)."),
    "keyframes": ("*.jpg", "image/jpeg", "One keyframe per shot."),
    "clip-embeddings": ("*.npy", "application/x-npy", "Keyframe embeddings per scene, float16 (n_shots, dim)."),
}


def _data_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "sc:Boolean"
    if pa.types.is_integer(t):
        return "sc:Integer"
    if pa.types.is_floating(t):
        return "sc:Float"
    return "sc:Text"


def _record_set(name: str, schema: pa.Schema) -> dict[str, Any]:
    fields = []
    for f in schema:
        item = f.type.value_type if pa.types.is_list(f.type) else f.type
        field: dict[str, Any] = {
            "@type": "cr:Field",
            "@id": f"{name}/{f.name}",
            "name": f.name,
            "dataType": _data_type(item),
            "source": {"fileObject": {"@id": f"{name}.parquet"}, "extract": {"column": f.name}},
        }
        if pa.types.is_list(f.type):
            field["repeated"] = True
        fields.append(field)
    record: dict[str, Any] = {
        "@type": "cr:RecordSet",
        "@id": name,
        "name": name,
        "description": RECORD_DESCRIPTIONS[name],
        "field": fields,
    }
    if name in RECORD_KEYS:
        record["key"] = {"@id": f"{name}/{RECORD_KEYS[name]}"}
    return record


def build_croissant(
    ds: CuratedDataset,
    name: str,
    description: str,
    license: str,
    url: str,
    citation: str,
    base_url: str = "",
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The Croissant metadata as a JSON-ready dict (validate with ``mlcroissant.Dataset(jsonld=path)``)."""
    distribution: list[dict[str, Any]] = []
    for path in ds.manifest_files():
        distribution.append(
            {
                "@type": "cr:FileObject",
                "@id": path.name,
                "name": path.name,
                "description": RECORD_DESCRIPTIONS[path.stem],
                "contentUrl": f"{base_url}manifests/{path.name}",
                "contentSize": f"{path.stat().st_size} B",
                "encodingFormat": "application/x-parquet",
                "sha256": sha256_file(path),
            }
        )
    for shard in ds.shards:
        distribution.append(
            {
                "@type": "cr:FileObject",
                "@id": shard.url,
                "name": shard.url.rsplit("/", 1)[-1],
                "description": f"WebDataset shard of {shard.nsamples} scene samples.",
                "contentUrl": f"{base_url}{shard.url}",
                "contentSize": f"{shard.bytes} B",
                "encodingFormat": "application/x-tar",
                "sha256": shard.sha256,
            }
        )
    if ds.shards:
        for set_id, (pattern, fmt, desc) in SAMPLE_MEMBERS.items():
            distribution.append(
                {
                    "@type": "cr:FileSet",
                    "@id": set_id,
                    "name": set_id,
                    "description": desc,
                    "containedIn": [{"@id": s.url} for s in ds.shards],
                    "encodingFormat": fmt,
                    "includes": pattern,
                }
            )
    present = {p.stem for p in ds.manifest_files()}
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": name,
        "description": description,
        "license": license,
        "url": url,
        "version": version,
        "datePublished": datetime.date.today().isoformat(),
        "citeAs": citation,
        "keywords": ["video", "multi-shot", "text-to-video", "scenes", "captions"],
        "distribution": distribution,
        "recordSet": [_record_set(n, s) for n, s in MANIFEST_SCHEMAS.items() if n in present],
    }


def validate_croissant(path: str) -> None:
    """Raise ``mlcroissant.ValidationError`` when the file is not valid Croissant."""
    import mlcroissant

    mlcroissant.Dataset(jsonld=path)
