"""A conforming curated folder of many small scenes, written directly (no videos): for the scene-browser
test and benchmark. Every 20th scene (7, 27, 47, ...) is set by a lighthouse, the others by a harbour; each
caption holds ``</script>`` to prove the page escapes it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from curation.records import SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id, write_manifest


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 36), color).save(buf, format="JPEG")
    return buf.getvalue()


def write_scenes_folder(out: str | Path, n_scenes: int, clip: bytes = b"not a clip") -> Path:
    """``out`` with one shard of ``n_scenes`` two-shot scenes and the videos/shots/scenes manifests; every
    shot's ``mp4`` member is ``clip`` (a real MP4 where a test plays it)."""
    out = Path(out)
    (out / "shards").mkdir(parents=True)
    (out / "manifests").mkdir()
    vid = "v0123456789abcdef0123"
    video = VideoRecord(vid, "/films/a.mp4", duration_s=4.0 * n_scenes, fps_num=24, width=64, height=36)
    shots, scenes = [], []
    with wds.TarWriter(str(out / "shards" / "scenes-000000.tar")) as sink:
        for c in range(n_scenes):
            pair = [
                ShotRecord(shot_id(vid, 2 * c + j), vid, 2 * c + j, 0, 48, 4.0 * c + 2 * j, 4.0 * c + 2 * j + 2)
                for j in range(2)
            ]
            sid = scene_id(vid, c)
            for s in pair:
                s.scene_id = sid
            shots += pair
            word = "lighthouse" if c % 20 == 7 else "harbour"
            record = {
                "scene_id": sid,
                "caption_status": "ok",
                "video": {"uri": video.uri},
                "characters": [{"id": "C1", "label": "sailor", "hair": "red hair"}],
                "setting": {"place": f"a {word}"},
                "shots": [
                    {
                        "shot_id": s.shot_id,
                        "start_s": s.start_s,
                        "end_s": s.end_s,
                        "verdict": "accurate",
                        "caption": f"a sailor with red hair </script> stands by the {word}, shot {j} of scene {c}",
                    }
                    for j, s in enumerate(pair)
                ],
            }
            sample = {"__key__": sid, "json": json.dumps(record).encode(), "clip.npy": np.zeros((2, 4), np.float16)}
            for j in range(2):
                sample[f"{j:03d}.jpg"] = _jpeg((4 * c % 256, 100 + 50 * j, 200))
                sample[f"{j:03d}.mp4"] = clip
            sink.write(sample)
            scenes.append(
                SceneRecord(
                    sid,
                    vid,
                    c,
                    [s.shot_id for s in pair],
                    pair[0].start_s,
                    pair[1].end_s,
                    caption_status="ok",
                    n_characters=1,
                    shard="scenes-000000.tar",
                )
            )
    write_manifest([video], VideoRecord, str(out / "manifests" / "videos.parquet"))
    write_manifest(shots, ShotRecord, str(out / "manifests" / "shots.parquet"))
    write_manifest(scenes, SceneRecord, str(out / "manifests" / "scenes.parquet"))
    return out
