"""``browse.html``: a static page that shows every released scene, offline from the release folder.

The scene data is a script (``browse/scenes.js``, loaded by a ``<script>`` tag, since browsers refuse
``fetch`` on ``file://``), and each scene's keyframes are tiled into one contact sheet JPEG
(``browse/sheets/{scene_id}.jpg``). The page renders one page of cards at a time and loads sheet images
lazily, so 10,000 scenes stay usable; search matches every word of the query against captions, characters,
setting and ids.

Shot clips play in the page: for ``clip_scenes`` scenes spread evenly over the dataset, each shot's MP4 is
copied from the shard as it is (H.264, which Chromium, Firefox and Safari decode; Debian's Chromium too, as
its test shows) to ``browse/clips/{scene_id}.{NNN}.mp4`` with its keyframe as the poster
(``browse/posters/``); videos load only when played (``preload="none"``). Copying every clip would double
the release, hence the sample; other scenes show their keyframes.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from curation.records import clip_seconds

from .dataset import CuratedDataset

log = logging.getLogger(__name__)

THUMB_HEIGHT = 96
SHEET_COLUMNS = 6
DEFAULT_CLIP_SCENES = 200


def contact_sheet(jpegs: list[bytes], height: int = THUMB_HEIGHT, columns: int = SHEET_COLUMNS) -> bytes:
    """Keyframes scaled to ``height`` pixels and tiled in rows of ``columns``, as one JPEG."""
    from PIL import Image

    thumbs = []
    for data in jpegs:
        im = Image.open(io.BytesIO(data)).convert("RGB")
        thumbs.append(im.resize((max(1, round(im.width * height / im.height)), height)))
    width = max(t.width for t in thumbs)
    cols = min(columns, len(thumbs))
    rows = -(-len(thumbs) // cols)
    sheet = Image.new("RGB", (cols * width + (cols - 1) * 2, rows * height + (rows - 1) * 2), (24, 24, 24))
    for i, t in enumerate(thumbs):
        sheet.paste(t, ((i % cols) * (width + 2), (i // cols) * (height + 2)))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _character(c: Any) -> dict[str, str]:
    if not isinstance(c, dict):
        return {"id": "", "label": str(c), "appearance": ""}
    details = [c.get(k) for k in ("appearance", "age", "hair", "clothing", "distinguishing_features")]
    return {
        "id": str(c.get("id", "")),
        "label": str(c.get("label", "")),
        "appearance": "; ".join(str(d) for d in details if d),
    }


def _setting(s: Any) -> str:
    if isinstance(s, dict):
        return ", ".join(str(v) for v in s.values() if v)
    return str(s or "")


def scene_entry(
    key: str,
    record: dict[str, Any],
    captions: dict[str, dict[str, Any]],
    sheet: str | None,
    media: list[tuple[str, str]] | None = None,
) -> dict:
    """The browser's view of one scene sample (its JSON record, captions manifest rows as fallback);
    ``media`` holds ``(clip, poster)`` paths per shot when the scene's clips were extracted."""
    shots = []
    for i, s in enumerate(record.get("shots", [])):
        cap = captions.get(s.get("shot_id", ""), {})
        shot = {
            "caption": s.get("caption") or cap.get("caption") or "",
            "verdict": s.get("verdict") or cap.get("verdict") or "",
            "duration": round(clip_seconds(s), 2),
        }
        if media and i < len(media):
            shot["clip"], shot["poster"] = media[i]
        shots.append(shot)
    video = record.get("video") or {}
    return {
        "id": key,
        "video": str(video.get("uri") or record.get("video_id", "")),
        "status": str(record.get("caption_status", "")),
        "duration": round(sum(s["duration"] for s in shots), 2),
        "characters": [_character(c) for c in record.get("characters") or []],
        "setting": _setting(record.get("setting")),
        "shots": shots,
        "sheet": sheet,
    }


def clip_positions(total: int, clip_scenes: int) -> set[int]:
    """Positions of ``clip_scenes`` samples spread evenly over ``total`` (all for -1, none for 0)."""
    if clip_scenes < 0 or clip_scenes >= total:
        return set(range(total))
    return {i * total // clip_scenes for i in range(clip_scenes)}


def _extract_media(card: Path, key: str, members: dict[str, bytes]) -> list[tuple[str, str]]:
    """Write the scene's shot clips and keyframe posters next to the page; ``(clip, poster)`` per shot."""
    media = []
    for i in range(len([m for m in members if m.endswith(".mp4")])):
        clip, poster = f"browse/clips/{key}.{i:03d}.mp4", f"browse/posters/{key}.{i:03d}.jpg"
        (card / clip).write_bytes(members[f"{i:03d}.mp4"])
        (card / poster).write_bytes(members[f"{i:03d}.jpg"])
        media.append((clip, poster))
    return media


def write_browser(ds: CuratedDataset, card_dir: str | Path, clip_scenes: int = DEFAULT_CLIP_SCENES) -> Path:
    """Write ``browse.html`` and ``browse/`` (scenes.js, sheets, and the clips and posters of ``clip_scenes``
    scenes) under ``card_dir``."""
    card = Path(card_dir)
    assets = card / "browse"
    if assets.exists():
        shutil.rmtree(assets)
    for sub in ("sheets", "clips", "posters"):
        (assets / sub).mkdir(parents=True)
    captions = {c["shot_id"]: c for c in ds.rows("captions")}
    scenes = []
    total = sum(s.nsamples for s in ds.shards)
    with_clips = clip_positions(total, clip_scenes)
    for n, (key, members) in enumerate(ds.iter_samples(("json", "jpg"), with_clips.__contains__)):
        record = json.loads(members.get("json", b"{}"))
        jpegs = [members[k] for k in sorted(m for m in members if m.endswith(".jpg"))]
        sheet = None
        if jpegs:
            sheet = f"browse/sheets/{key}.jpg"
            (card / sheet).write_bytes(contact_sheet(jpegs))
        media = _extract_media(card, key, members) if n in with_clips else None
        scenes.append(scene_entry(key, record, captions, sheet, media))
        if (n + 1) % 500 == 0:
            log.info("browser: %d/%d scenes", n + 1, total)
    data = json.dumps(scenes, ensure_ascii=False, separators=(",", ":"))
    # "</" cannot end the script early inside a JS string; JSON allows the escaped form.
    (assets / "scenes.js").write_text("window.FW_SCENES = " + data.replace("</", "<\\/") + ";\n")
    page = card / "browse.html"
    page.write_text(resources.files("data_cards").joinpath("templates/browse.html").read_text())
    log.info("browser: %d scenes (%d with clips) in %s", len(scenes), len(with_clips), page)
    return page
