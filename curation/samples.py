"""Scene samples and per-video results: what one curated video contributes to the dataset.

``video_result`` gathers a video's manifest records (video, shots, scenes, captions, rejects) and the
WebDataset sample of each written scene (``scene_sample``: ``json``, ``NNN.mp4``, ``NNN.jpg``, ``clip.npy``).
Same units, same bytes: reruns and both engines produce identical samples.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .records import CaptionRecord, Reject, SceneRecord, ShotRecord, VideoRecord
from .stage import SceneUnit, VideoUnit


def json_ready(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays become Python values, tuples lists."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(json_ready(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def scene_json(unit: SceneUnit) -> dict[str, Any]:
    """The ``json`` member of a scene sample: scene, video, shots with captions, characters and setting."""
    scene, video = unit.scene, unit.video
    captions = {c.shot_id: c for c in unit.captions}
    shots = []
    for i, shot in enumerate(unit.shots):
        s = {
            k: getattr(shot, k)
            for k in (
                "shot_id",
                "index",
                "start_frame",
                "end_frame",
                "start_s",
                "end_s",
                "transition_in",
                "boundary_score",
                "keyframe_frames",
                "clip_start_frame",
                "clip_end_frame",
                "brightness",
                "contrast",
                "motion",
                "n_faces",
            )
        }
        s["member"] = f"{i:03d}"
        cap = captions.get(shot.shot_id)
        if cap is not None:
            s.update(
                caption=cap.caption,
                caption_template=cap.caption_template,
                characters=cap.characters,
                shot_type=cap.shot_type,
                camera_movement=cap.camera_movement,
                verdict=cap.verdict,
                problems=cap.problems,
            )
        shots.append(s)
    ann = unit.annotation
    return {
        "scene_id": scene.scene_id,
        "video_id": scene.video_id,
        "index": scene.index,
        "start_s": scene.start_s,
        "end_s": scene.end_s,
        "link_similarity": scene.link_similarity,
        "link_shot": scene.link_shot,
        "max_faces": scene.max_faces,
        "caption_status": scene.caption_status,
        "video": {
            "video_id": video.video_id,
            "uri": video.uri,
            "fps": f"{video.fps_num}/{video.fps_den}",
            "width": video.width,
            "height": video.height,
            "duration_s": video.duration_s,
        },
        "shots": shots,
        "characters": ann.get("characters", []),
        "setting": ann.get("setting", ""),
    }


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float16), allow_pickle=False)
    return buf.getvalue()


def scene_sample(unit: SceneUnit) -> dict[str, Any]:
    """The WebDataset sample of a scene: ``__key__``, ``json``, ``NNN.mp4`` and ``NNN.jpg`` per shot (the
    keyframe's JPEG bytes as encoded by the shot splitter), ``clip.npy`` (float16 shot embeddings). Same unit,
    same bytes."""
    n = len(unit.shots)
    if len(unit.clips) != n or len(unit.keyframes) != n or len(unit.embeddings) != n:
        raise ValueError(
            f"scene {unit.scene.scene_id}: {n} shots but {len(unit.clips)} clips, {len(unit.keyframes)} "
            f"keyframes, {len(unit.embeddings)} embeddings"
        )
    sample: dict[str, Any] = {"__key__": unit.scene.scene_id, "json": _json_bytes(scene_json(unit))}
    for i in range(n):
        sample[f"{i:03d}.mp4"] = bytes(unit.clips[i])
        sample[f"{i:03d}.jpg"] = unit.keyframes[i].jpeg
    sample["clip.npy"] = _npy(unit.embeddings)
    return sample


@dataclass
class VideoResult:
    """Everything one video produced: its manifest records and the samples of its written scenes."""

    video: VideoRecord | None  # None when the input could not even be opened (no content id)
    shots: list[ShotRecord] = field(default_factory=list)
    scenes: list[SceneRecord] = field(default_factory=list)
    captions: list[CaptionRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


def video_result(
    video: VideoUnit,
    scenes: list[SceneUnit],
    rejects: list[Reject],
    rejected: bool,
) -> VideoResult:
    """Records and samples of one video after all stages.

    ``video`` is the last ``VideoUnit`` the video stages produced, ``scenes`` the scene units that passed
    every scene stage, ``rejects`` the whole-unit rejects of any stage (the video, or a scene), ``rejected``
    whether the video itself was rejected. Scenes rejected by a scene stage are marked not kept; shots that a
    scene stage dropped (a reject naming the shot) likewise; a written scene's ``shot_ids`` lists the shots
    in its sample.
    """
    record = video.video
    record.status = "rejected" if rejected else "ok"
    all_rejects = list(rejects) + list(video.rejects)
    if rejected:
        return VideoResult(record, rejects=all_rejects)
    shots = {s.shot_id: s for s in video.shots}
    scene_records = {s.scene_id: s for s in video.scenes}
    samples, captions = [], []
    for unit in scenes:
        all_rejects += unit.rejects
        shots.update({s.shot_id: s for s in unit.shots})
        unit.scene.shot_ids = [s.shot_id for s in unit.shots]
        scene_records[unit.scene.scene_id] = unit.scene
        samples.append(scene_sample(unit))
        captions += unit.captions
    for r in all_rejects:
        dropped = scene_records.get(r.item_id) or shots.get(r.item_id)
        if dropped is not None and dropped.kept:
            dropped.kept, dropped.reject_reason = False, r.reason
    record.n_shots, record.n_scenes = len(shots), len(samples)
    return VideoResult(
        record,
        shots=sorted(shots.values(), key=lambda s: s.index),
        scenes=sorted(scene_records.values(), key=lambda s: s.index),
        captions=captions,
        rejects=all_rejects,
        samples=samples,
    )
