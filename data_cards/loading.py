"""Reading a curated dataset: shard URLs from ``index.json``, a brace pattern for them, and a WebDataset
pipeline of scenes for training readers.

``index.json`` is the truth about which shards exist: shard names differ by engine (the local engine writes
``scenes-000000.tar ...``, the Ray engine ``scenes-<run>-<writer>-<n>.tar``) and a literal range such as
``{000000..000009}`` fails as soon as fewer shards exist. Works on a curated output (``OUT``) and on a
release folder alike (both hold ``index.json`` and ``shards/``).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import FilmweaverError

_NUMBERED = re.compile(r"^(.*?)(\d+)$")
_BRACE_SPECIAL = re.compile(r"([{},\\])")


class NoShardIndex(FilmweaverError):
    """A folder without ``index.json``, or whose index names a missing shard."""

    reason = "no-index"


def _read_remote_index(root: str) -> tuple[list[str], set[str]]:
    """Shard urls of ``root/index.json`` on an object store (``pyarrow.fs``: s3://, gs://) and the shard files
    that exist under ``root/shards``."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(root)
    path = path.rstrip("/")
    try:
        with fs.open_input_stream(f"{path}/index.json") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise NoShardIndex(f"{root}/index.json does not exist: is {root} a curated output?") from None
    selector = pafs.FileSelector(f"{path}/shards", recursive=True, allow_not_found=True)
    present = {i.path[len(path) + 1 :] for i in fs.get_file_info(selector) if i.type == pafs.FileType.File}
    return [e["url"] for e in (data["shards"] if isinstance(data, dict) else data)], present


def shard_urls(root: str | os.PathLike, absolute: bool = True) -> list[str]:
    """The shard files listed by ``root/index.json``, in index order; absolute paths (full URIs for an
    object-store ``root`` such as ``s3://bucket/ds``) unless ``absolute`` is False (then relative to ``root``,
    as in the index). Raises ``NoShardIndex`` when the index is missing or names a shard that is not there."""
    if "://" in str(root) and not str(root).startswith("file://"):
        base = str(root).rstrip("/")
        urls, present = _read_remote_index(base)
        missing = [u for u in urls if u not in present]
        full = [f"{base}/{u}" for u in urls]
    else:
        local = Path(str(root).removeprefix("file://"))
        index = local / "index.json"
        if not index.is_file():
            raise NoShardIndex(
                f"{index} does not exist: is {local} a curated output (filmweaver curate --out) or a release?"
            )
        data = json.loads(index.read_text())
        urls = [e["url"] for e in (data["shards"] if isinstance(data, dict) else data)]
        missing = [u for u in urls if not (local / u).is_file()]
        full = [str((local / u).resolve()) for u in urls]
    if missing:
        raise NoShardIndex(f"{root}/index.json lists {len(missing)} shards that are missing, e.g. {missing[0]}")
    return full if absolute else urls


def _ranges(stems: list[str]) -> list[str]:
    """Consecutive numbered stems with one prefix and digit width folded into ``prefix{a..b}``."""
    groups: list[list[Any]] = []  # [prefix, width, first, last] or [stem]
    for stem in stems:
        m = _NUMBERED.match(stem)
        if m:
            prefix, digits = m.groups()
            last = groups[-1] if groups else None
            if last and len(last) == 4 and last[0] == prefix and last[1] == len(digits) and last[3] + 1 == int(digits):
                last[3] += 1
                continue
            groups.append([prefix, len(digits), int(digits), int(digits)])
        else:
            groups.append([stem])
    out = []
    for g in groups:
        if len(g) == 1:
            out.append(_BRACE_SPECIAL.sub(r"\\\1", g[0]))
            continue
        prefix, width, first, last = g
        prefix = _BRACE_SPECIAL.sub(r"\\\1", prefix)
        if first == last:
            out.append(f"{prefix}{first:0{width}d}")
        else:
            out.append(f"{prefix}{{{first:0{width}d}..{last:0{width}d}}}")
    return out


def brace_pattern(urls: list[str]) -> str:
    """One brace pattern (``braceexpand`` syntax, as ``webdataset`` reads it) that expands to exactly ``urls``
    in order, e.g. ``shards/scenes-{000000..000002}.tar`` or ``shards/{a-{000000..000001},b-000000}.tar``.
    Raises ValueError for an empty list."""
    if not urls:
        raise ValueError("no shard urls: the dataset has no shards")
    head = os.path.commonprefix([u.rsplit("/", 1)[0] + "/" if "/" in u else "" for u in urls])
    head = head[: head.rfind("/") + 1]
    tails = [u[len(head) :] for u in urls]
    suffix = ".tar" if all(t.endswith(".tar") for t in tails) else ""
    stems = [t[: len(t) - len(suffix)] for t in tails]
    # the stems' common start, cut after its last separator, stays outside the braces: scenes-{...}
    common = os.path.commonprefix(stems) if len(stems) > 1 else ""
    stem_head = common[: max(common.rfind(c) for c in "-_.") + 1]
    parts = _ranges([s[len(stem_head) :] for s in stems])
    body = parts[0] if len(parts) == 1 else "{" + ",".join(parts) + "}"
    return _BRACE_SPECIAL.sub(r"\\\1", head + stem_head) + body + suffix


def scene_from_sample(sample: dict[str, Any], keyframes: str = "bytes") -> dict[str, Any]:
    """A WebDataset sample as a scene: ``key``, ``record`` (the JSON), ``clips`` (MP4 bytes per shot, in
    order), ``keyframes`` (JPEG bytes, or PIL images with ``keyframes="pil"``), ``embeddings`` (float16
    array of shape (n_shots, dim))."""
    record = json.loads(sample["json"])
    n = len(record["shots"])
    jpegs = [sample[f"{i:03d}.jpg"] for i in range(n)]
    if keyframes == "pil":
        from PIL import Image

        jpegs = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
    return {
        "key": sample["__key__"],
        "record": record,
        "clips": [sample[f"{i:03d}.mp4"] for i in range(n)],
        "keyframes": jpegs,
        "embeddings": np.load(io.BytesIO(sample["clip.npy"]), allow_pickle=False),
    }


def load_scenes(
    root: str | os.PathLike,
    shuffle: int = 0,
    keyframes: str = "bytes",
    map_scene: Callable[[dict[str, Any]], Any] | None = None,
    seed: int = 0,
):
    """The scenes of a curated output or release as a ``webdataset.WebDataset`` (a PyTorch
    ``IterableDataset``): one :func:`scene_from_sample` dict per scene, then ``map_scene`` if given.

    Shards come from ``index.json`` of a local folder. With several DataLoader workers or distributed ranks,
    each reads its own shards (split by node, then by worker), so every scene is read once per epoch. ``shuffle`` > 0
    shuffles shard order and scenes within a buffer of that many (seeded by ``seed``); clips stay MP4 bytes
    (decode them in ``map_scene``, e.g. with PyAV, where a training reader needs frames).
    """
    import webdataset as wds

    pipeline = wds.WebDataset(
        shard_urls(root),
        shardshuffle=shuffle or False,
        nodesplitter=wds.split_by_node,
        workersplitter=wds.split_by_worker,
        empty_check=False,
        seed=seed,
    )
    if shuffle > 0:
        pipeline = pipeline.shuffle(shuffle, seed=seed)
    pipeline = pipeline.map(functools.partial(scene_from_sample, keyframes=keyframes))
    return pipeline.map(map_scene) if map_scene else pipeline
