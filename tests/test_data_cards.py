"""Dataset release on a small curated output written by the real shard writer (curation.journal): card
header and numbers, funnel, plots, Croissant validation, the card's loading snippets run as written, the
card's text with and without captioning, no local path in a release, CLI and hub push."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from curation.buckets import scene_buckets
from curation.config import CurateConfig
from curation.filters import ShotFilter, scene_verdict, summarise_scene
from curation.finalize import finalize
from curation.journal import DatasetWriter
from curation.records import CaptionRecord, Reject, SceneRecord, ShotRecord, VideoRecord, scene_id, shot_id
from curation.samples import VideoResult, video_result
from curation.stage import Keyframe, SceneUnit, StageStats, VideoUnit
from data_cards.card import CardOptions
from data_cards.dataset import CuratedDataset, sha256_file
from data_cards.release import build_release, push_to_hub
from data_cards.stats import compute_stats

CONFIG = {"scenes": {"window": 3, "threshold": 0.8}, "filters": {"min_shot_s": 1.0}, "caption": {"backend": "gemini"}}
CHARACTERS = [
    {
        "id": "C1",
        "label": "young woman",
        "clothing": "red coat",
        "hair": "long black hair",
        "age": "in her twenties",
        "distinguishing_features": "",
    },
    {
        "id": "C2",
        "label": "old fisherman",
        "clothing": "yellow oilskin",
        "hair": "grey beard",
        "age": "in his sixties",
        "distinguishing_features": "pipe",
    },
]
SCORED = {  # a filters.mode=score run: every threshold recorded, nothing dropped by the filters
    **CONFIG,
    "filters": {"mode": "score", "min_shot_s": 1.0, "min_motion": 0.05, "max_frozen": 0.6, "max_text_area": 0.1},
    "dedup": {"shot_threshold": 0.97, "scene_threshold": 0.96},
}
SETTING = {"place": "a harbour", "time_of_day": "dusk", "lighting": "warm low sun", "style": "live-action film"}


def tiny_mp4(tmp) -> bytes:
    path = tmp / "clip.mp4"
    src = "testsrc=size=64x36:rate=8:duration=0.5"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", src, "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)
    return path.read_bytes()


def _video(vid, uri, n_shots, shot_s, w, h, fps):
    v = VideoRecord(
        vid,
        uri,
        duration_s=n_shots * shot_s,
        fps_num=fps,
        n_frames=n_shots * shot_s * fps,
        width=w,
        height=h,
        codec="h264",
        container="mp4",
    )
    shots = [
        ShotRecord(
            shot_id(vid, i),
            vid,
            i,
            i * shot_s * fps,
            (i + 1) * shot_s * fps,
            i * shot_s,
            (i + 1) * shot_s,
            brightness=100.0,
            contrast=40.0,
            motion=3.0,
        )
        for i in range(n_shots)
    ]
    return v, shots


def score(shot: ShotRecord, video: int) -> None:
    """Scores of a shot of the ``scored`` build: flow grows with the index, the first shot of each video is
    frozen, the fourth has burnt-in text."""
    shot.flow = round(0.02 * (shot.index + 1) + 0.005 * video, 4)
    shot.frozen = 0.9 if shot.index == 0 else 0.05 * video
    shot.text_area = 0.3 if shot.index == 3 else 0.0
    shot.sharpness = 0.4 + 0.1 * shot.index


def build(out, clip, max_bytes=1, films="/films", captioned=True, scored=False, config=None):
    """Two good videos, one too small, one unreadable input, all in the folder ``films``; scenes kept,
    rejected, captioned and not (none with ``captioned=False``, as a run without a captioner).
    ``max_bytes=1`` closes a shard after every video, so there are two shards. ``scored``: a
    ``filters.mode=score`` run of ``SCORED`` (shots scored, verdicts recorded by the real filters instead of
    filter rejects, scene buckets) whose second video repeats the first's embeddings scene by scene (shots
    and the one-shot scene are near-duplicates). ``config``: run.json's config (default ``CONFIG``)."""
    rng = np.random.default_rng(0)
    curate = CurateConfig.model_validate(SCORED) if scored else None
    writer = DatasetWriter(str(out), max_bytes=max_bytes)
    plan = {  # video -> (scenes as lists of shot indices, shot rejects {i: (stage, reason)}, scene rejects)
        "va0000000000000000001": (
            [[0, 1, 2, 3], [4, 5, 6, 7], [8]],
            {2: ("filters", "too-short"), 5: ("filters", "black"), 7: ("verify", "caption-wrong")},
            {2: ("filters", "too-few-shots")},
        ),
        "vb0000000000000000002": (
            [[0, 1, 2], [3, 4], [5]],
            {},
            {1: ("filters", "too-many-characters"), 2: ("filters", "too-few-shots")},
        ),
    }
    sizes = {"va0000000000000000001": (640, 360, 24, 5), "vb0000000000000000002": (1920, 1080, 25, 3)}
    for n, (vid, (scene_shots, shot_rej, scene_rej)) in enumerate(plan.items()):
        w, h, fps, shot_s = sizes[vid]
        video, shots = _video(vid, f"{films}/{vid}.mp4", sum(map(len, scene_shots)), shot_s, w, h, fps)
        for s in shots[1::2]:  # a dissolve at both ends of every other shot: its clip leaves out fps // 4 frames each
            s.clip_start_frame, s.clip_end_frame = s.start_frame + fps // 4, s.end_frame - fps // 4
        vunit = VideoUnit(video, shots)
        if scored:
            shot_rej = {i: r for i, r in shot_rej.items() if r[0] != "filters"}  # verdicts only
            for s in shots:
                score(s, n)
                verdict = ShotFilter(curate).verdict(s)
                s.verdict = verdict[0] if verdict else None
        for i, (stage, reason) in shot_rej.items():
            vunit.rejects.append(Reject(shots[i].shot_id, video.uri, stage, reason))
        units, rejects = [], []
        for c, idx in enumerate(scene_shots):
            sid = scene_id(vid, c)
            members = [shots[i] for i in idx]
            for s in members:
                s.scene_id = sid
            sims = [float(rng.uniform(0.8, 0.97)) for _ in idx[1:]]
            scene = SceneRecord(
                sid,
                vid,
                c,
                [s.shot_id for s in members],
                members[0].start_s,
                members[-1].end_s,
                link_similarity=sims,
                link_shot=[0] * len(sims),
                max_faces=2,
            )
            vunit.scenes.append(scene)
            if scored:
                summarise_scene(scene, members)
                scene.resolution_bucket, scene.aspect_bucket, scene.duration_bucket = scene_buckets(
                    video, scene, curate.buckets
                )
                verdict = scene_verdict(curate.filters, [s for s in members if s.verdict is None])
                scene.verdict = verdict[0] if verdict else None
            if c in scene_rej and not (scored and scene_rej[c][0] == "filters"):
                stage, reason = scene_rej[c]
                scene.kept, scene.reject_reason = False, reason
                rejects.append(Reject(sid, video.uri, stage, reason))
                continue
            kept = [s for s in members if s.index not in shot_rej]
            caps, ann = [], {}
            if captioned and not (n == 1 and c == 0):  # one released scene without captions
                scene.caption_status, scene.n_characters = "ok", 2
                ann = {"characters": CHARACTERS, "setting": SETTING}
                for j, s in enumerate(kept):
                    text = f"the young woman in a red coat walks along pier number {vid[1]}{c}{j}"
                    caps.append(
                        CaptionRecord(
                            s.shot_id,
                            sid,
                            text,
                            "{C1} walks",
                            ["C1"],
                            "wide",
                            "static",
                            "fixed" if j == 1 else "accurate",
                            model="gemini-2.5-flash",
                            prompt_version="v1",
                        )
                    )
            else:
                scene.caption_status = "skipped" if captioned else "skipped: no captioner configured"
            units.append(
                SceneUnit(
                    scene,
                    video,
                    kept,
                    keyframes=[
                        Keyframe.encode(np.full((36, 64, 3), (40 * j + 30, 90, 200 - 30 * j), np.uint8), 90)
                        for j in range(len(kept))
                    ],
                    embeddings=(np.random.default_rng(100 + c) if scored else rng)
                    .standard_normal((len(kept), 8))
                    .astype(np.float32),
                    clips=[clip] * len(kept),
                    captions=caps,
                    annotation=ann,
                )
            )
        writer.add(video_result(vunit, units, rejects, rejected=False))
    small = VideoRecord("vc0000000000000000003", f"{films}/tiny.mp4", duration_s=30.0, fps_num=30, width=96, height=64)
    writer.add(video_result(VideoUnit(small), [], [Reject(small.video_id, small.uri, "probe", "too-small")], True))
    broken = f"{films}/broken.mp4"
    writer.add(VideoResult(None, rejects=[Reject(broken, broken, "probe", "unreadable", f"cannot open {broken}")]))
    usage = {"llm_input_tokens": 1200, "llm_output_tokens": 300, "llm_cost_usd": 0.00111}
    stats = {
        "probe": StageStats(4, 2, rejects={"too-small": 1, "unreadable": 1}, seconds=0.5),
        "caption": StageStats(3, 3, seconds=2.0, counts=usage if captioned else {"scenes_skipped": 3}),
    }
    if scored:
        stats["shot_filter"] = StageStats(2, 2, seconds=0.1, counts={"shots_kept": 15, "shots_flagged": 6})
    writer.add_stats(stats, {"embedder": "open_clip ViT-B-32 laion2b_s34b_b79k", "shot_detector": "scenedetect"})
    writer.close()
    if config is None:
        config = curate.model_dump(mode="json") if scored else CONFIG
    if not captioned:
        config = {**config, "caption": {"backend": "none"}}
    config = {**config, "shards": {**config.get("shards", {}), "max_bytes": max_bytes}}
    return finalize(str(out), {"config": config, "engine": "local"})


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("curated")
    out = tmp / "out"
    out.mkdir()
    build(out, tiny_mp4(tmp))
    return out


@pytest.fixture(scope="module")
def release(curated):
    options = CardOptions(license="cc-by-4.0", source_licenses=["cc-by-3.0"], contact="takedown@example.org")
    return build_release(curated, options)


def manifest(out: Path, name: str) -> list[dict]:
    return pq.read_table(out / "manifests" / f"{name}.parquet").to_pylist()


def card_header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def count_table(text: str) -> dict[str, str]:
    section = text.split("## Dataset summary")[1].split("##")[0]
    return dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", section, re.M))


def test_header_has_required_fields(release, curated):
    header = card_header(release.readme.read_text())
    assert header["license"] == "cc-by-4.0"
    assert header["source_licenses"] == ["cc-by-3.0"]
    assert header["task_categories"] == ["text-to-video"]
    assert header["size_categories"] == ["n<1K"]
    assert header["pretty_name"] and "multi-shot" in header["tags"]
    configs = {c["config_name"]: c for c in header["configs"]}
    assert list(configs) == ["scenes"]  # one builder per repository: manifests load with the parquet builder
    assert configs["scenes"]["default"] and configs["scenes"]["data_files"][0]["path"] == "shards/*.tar"
    features = header["dataset_info"][0]["features"]
    assert [f["name"] for f in features][:3] == ["json", "000.mp4", "000.jpg"]
    assert features[1] == {"name": "000.mp4", "video": {"decode": False}}
    assert "002.jpg" in [f["name"] for f in features] and "003.jpg" not in [f["name"] for f in features]


def test_card_numbers_equal_manifests(release, curated):
    text = release.readme.read_text()
    table = count_table(text)
    videos, shots, scenes = (manifest(curated, n) for n in ("videos", "shots", "scenes"))
    captions, rejects = manifest(curated, "captions"), manifest(curated, "rejects")
    ok = [v for v in videos if v["status"] == "ok"]
    released = [s for s in scenes if s["kept"] and s["shard"]]
    by_id = {s["shot_id"]: s for s in shots}
    released_shots = [by_id[i] for s in released for i in s["shot_ids"]]
    unopened = {r["item_id"] for r in rejects} - {v["video_id"] for v in videos} - set(by_id)
    unopened -= {s["scene_id"] for s in scenes}
    assert table["Input videos"] == str(len(videos) + len(unopened)) == "4"
    assert table["Videos used"] == str(len(ok)) == "2"
    assert table["Hours of source video"] == f"{sum(v['duration_s'] for v in ok) / 3600:.3f}"
    assert table["Shots detected"] == str(len(shots)) == "15"
    assert table["Shots kept by shot filters"] == str(sum(s["kept"] for s in shots)) == "12"
    assert table["Scenes formed"] == str(len(scenes)) == "6"
    assert table["Scenes released"] == str(len(released)) == "3"
    assert table["Shots released"] == str(len(released_shots)) == "8"
    # the clips' seconds: each shot's seconds scaled to the frames its clip holds
    clip_s = [
        (s["end_s"] - s["start_s"])
        * (s["clip_end_frame"] - s["clip_start_frame"])
        / (s["end_frame"] - s["start_frame"])
        if s["clip_start_frame"] is not None
        else s["end_s"] - s["start_s"]
        for s in released_shots
    ]
    assert sum(clip_s) < sum(s["end_s"] - s["start_s"] for s in released_shots)  # some clips leave dissolves out
    assert table["Hours released"] == f"{sum(clip_s) / 3600:.3f}"
    stats = compute_stats(CuratedDataset.load(curated))  # the card rounds hours; the stats hold the seconds
    assert stats.counts["hours_released"] * 3600 == pytest.approx(sum(clip_s))
    assert sorted(stats.distributions["shot_duration_s"]) == pytest.approx(sorted(clip_s))
    assert table["Kept ratio (shots released / detected)"] == f"{100 * 8 / 15:.1f}%"
    assert table["Captions"] == str(len(captions)) == "5"
    index = json.loads((release.root / "index.json").read_text())["shards"]
    assert table["Shards"] == str(len(index)) == "2"
    assert table["Shard bytes"] == str(sum(s["bytes"] for s in index))
    run = json.loads((curated / "run.json").read_text())
    assert f"| caption.llm_input_tokens | {run['llm']['caption.llm_input_tokens']} |" in text
    assert "config hash `" in text and "unknown" not in text.split("config hash `")[1][:14]


def test_funnel_adds_up(release, curated):
    text = release.readme.read_text()
    rows = re.findall(r"^\| (videos|shots|scenes) \|([^|]*)\| ([^|]+) \| (\d+) \|$", text, re.M)
    levels: dict[str, dict] = {}
    for level, stage, reason, n in rows:
        entry = levels.setdefault(level, {"rejects": {}})
        if reason in ("**in**", "**out**"):
            entry[reason.strip("*")] = int(n)
        else:
            entry["rejects"][(stage.strip(), reason)] = int(n)
    assert set(levels) == {"videos", "shots", "scenes"}
    for level in levels.values():
        assert level["in"] == level["out"] + sum(level["rejects"].values())
    shot_rejects = {("filters", "too-short"): 1, ("filters", "black"): 1, ("verify", "caption-wrong"): 1}
    assert levels["shots"]["rejects"] == shot_rejects
    assert levels["scenes"]["rejects"] == {("filters", "too-few-shots"): 2, ("filters", "too-many-characters"): 1}
    assert levels["videos"]["rejects"] == {("probe", "unreadable"): 1, ("probe", "too-small"): 1}
    all_rejects = sum(sum(lv["rejects"].values()) for lv in levels.values())
    assert all_rejects == len(manifest(curated, "rejects"))
    assert all(lv.unaccounted == 0 for lv in release.stats.funnel)


def test_plots_are_non_empty_pngs(release):
    names = {"shot_duration", "shots_per_scene", "characters_per_scene", "caption_length", "scene_similarity"}
    assert set(release.plots) == names | {"resolution"}
    text = release.readme.read_text()
    for stem, path in release.plots.items():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, stem
        assert f"](plots/{path.name})" in text


def test_croissant_validates_and_reads_records(release, curated):
    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=str(release.croissant))
    scene_ids = sorted(r["scenes/scene_id"].decode() for r in dataset.records("scenes"))
    assert scene_ids == sorted(s["scene_id"] for s in manifest(curated, "scenes"))
    jsonld = json.loads(release.croissant.read_text())
    files = {d["@id"]: d for d in jsonld["distribution"] if d["@type"] == "cr:FileObject"}
    for shard in json.loads((release.root / "index.json").read_text())["shards"]:
        assert files[shard["url"]]["sha256"] == shard["sha256"] == sha256_file(release.root / shard["url"])
    assert {r["@id"] for r in jsonld["recordSet"]} >= {"scenes", "shots"}


def run_card_snippets(readme: Path, monkeypatch) -> list[dict]:
    """Every Python block of the card, executed as written in the release folder; their variables."""
    monkeypatch.chdir(readme.parent)
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    namespaces = []
    for block in blocks:
        namespaces.append({})
        exec(block, namespaces[-1])
    return namespaces


def test_card_snippets_load_the_release(release, curated, tmp_path, monkeypatch):
    """The card's datasets and webdataset snippets, as written, without torchcodec or a system FFmpeg."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # any import of it fails
    monkeypatch.setenv("PATH", str(tmp_path / "no-ffmpeg-here"))
    hub, wds_ns, builder = run_card_snippets(release.readme, monkeypatch)
    scenes, shots = hub["scenes"], hub["shots"]
    assert scenes.num_rows == 3 and shots.num_rows == len(manifest(curated, "shots"))
    rows = {r["__key__"]: r for r in scenes}
    first = rows["va0000000000000000001-c0000"]
    assert first["json"]["characters"][0]["id"] == "C1" and len(first["json"]["shots"]) == 3
    assert first["002.jpg"].size == (64, 36) and len(first["clip.npy"]) == 3
    assert first["000.mp4"]["bytes"][4:8] == b"ftyp"  # MP4 bytes, not decoded
    assert rows["va0000000000000000001-c0001"]["002.jpg"] is None  # a two-shot scene
    assert sorted(s["__key__"] for s in wds_ns["scenes"]) == sorted(rows)
    assert sorted(r["__key__"] for r in builder["scenes"]) == sorted(rows)


def test_card_without_captioning_says_so(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    build(out, tiny_mp4(tmp_path), captioned=False)
    text = build_release(out).readme.read_text()
    assert "The scenes are **uncaptioned**" in text
    for absent in ("## Annotation process", "### Verification", "LLM usage", "| Captions |", "caption_length.png"):
        assert absent not in text, absent
    curation = text.split("## Curation process")[1].split("### Funnel")[0]
    assert "### 8. `caption`" not in curation or "Not run" in curation
    stages = dict(re.findall(r"^\| (caption|probe) \| ([^|]+) \|", curation, re.M))
    assert stages == {"probe": "4 videos", "caption": "3 scenes"}
    assert "Not run: this run had no captioning model" in curation


def test_card_with_captioning_tells_what_ran(release):
    text = release.readme.read_text()
    annotation = text.split("## Annotation process")[1].split("## Limitations")[0]
    assert "`gemini-2.5-flash` with prompt version `v1`" in annotation
    assert "| accurate | 3 |" in annotation and "| fixed | 2 |" in annotation
    assert "here: 1 shot rejected at the `verify` stage" in annotation
    filters = text.split("### Filters")[1].split("### Funnel")[0]
    assert "| shots | too-short | shorter than 1.0 s | `filters.min_shot_s` | 1 shot |" in filters
    assert "| scenes | too-few-shots | (setting not recorded) | `filters.min_scene_shots` | 2 scenes |" in filters
    assert "| videos | too-small | (setting not recorded) | `filters.min_short_side` | 1 video |" in filters
    assert "| probe | 4 videos | 2 videos | 2 videos | 0.5 |" in text  # units of in, out and rejected
    year = datetime.datetime.now(datetime.UTC).year  # run.json was written today: the run's year
    assert f"year   = {{{year}}}" in text and "2025" not in text.split("## Citation")[1]


def _strings(path: Path) -> str:
    """Everything a release file says: tar members' bytes, Parquet values, or the raw bytes."""
    if path.suffix == ".tar":
        import tarfile

        with tarfile.open(path) as tar:
            return "".join(tar.extractfile(m).read().decode("latin-1") for m in tar if m.isfile())
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str)
    return path.read_bytes().decode("latin-1")


def test_source_paths_public_forms_and_scrub():
    from data_cards.provenance import SourcePaths, default_roots

    uris = ["/data/films/a.mp4", "/data/films/sub/b b.mp4", "s3://bk/arch/x/c.mp4", "s3://bk/arch/d.mp4"]
    assert default_roots(uris) == ["/data/films", "s3://bk/arch"]
    assert default_roots(["/a/x.mp4", "/b/y.mp4"]) == []  # the common folder is "/": no root
    paths = SourcePaths([*uris, "https://example.org/v.mp4"], out_dir="/work/out")
    public = [paths.public(u) for u in [*uris, "https://example.org/v.mp4", "/elsewhere/e.mp4"]]
    assert public == ["a.mp4", "sub/b b.mp4", "x/c.mp4", "d.mp4", "https://example.org/v.mp4", "e.mp4"]
    nested = SourcePaths(uris, roots=["/data", "/data/films/sub"])
    assert [nested.public(u) for u in uris[:2]] == ["films/a.mp4", "b b.mp4"]  # the deepest root wins
    text = "cannot open /data/films/sub/b b.mp4 (see /work/out/run.json, /work/output, s3://bk/data/films/x)"
    scrubbed = paths.scrub(text, "/data/films/sub/b b.mp4")
    assert scrubbed == "cannot open sub/b b.mp4 (see OUT/run.json, /work/output, s3://bk/data/films/x)"
    assert paths.scrub_tree({"k": ["/work/out", "/opt/models/ckpt.bin", 3]}) == {"k": ["OUT", "ckpt.bin", 3]}


def view_members(shard: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_release_holds_no_local_path(tmp_path):
    """Sources under a home-like folder of this machine: no absolute path, user folder or output folder in
    any file of the release (shards, manifests, card, browser); OUT keeps them for takedowns."""
    films = tmp_path / "home" / "alice" / "films"
    out = tmp_path / "out"
    out.mkdir()
    build(out, tiny_mp4(tmp_path), films=str(films))
    run = json.loads((out / "run.json").read_text())
    run["config"]["embed"] = {"pretrained": str(tmp_path / "models" / "ckpt.bin")}
    run["ray"] = {"address": "10.1.2.3:6379", "nodes": [{"node_ip": "10.1.2.4", "cpus": 8}]}
    (out / "run.json").write_text(json.dumps(run))
    release = build_release(out)
    markers = [str(tmp_path), "/home/alice", str(Path.home()) + "/", str(out), "10.1.2.3", "10.1.2.4"]
    files = [p for p in release.root.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".tar", ".parquet", ".md", ".json", ".html", ".js"}
    for path in files:
        text = _strings(path)
        assert not [m for m in markers if m in text], path
    videos = {v["video_id"]: v["uri"] for v in pq.read_table(release.root / "manifests" / "videos.parquet").to_pylist()}
    assert videos["va0000000000000000001"] == "va0000000000000000001.mp4"
    rejects = manifest(release.root, "rejects")
    assert {"broken.mp4"} <= {r["item_id"] for r in rejects} and "cannot open broken.mp4" in {
        r["detail"] for r in rejects
    }
    public_run = json.loads((release.root / "run.json").read_text())
    assert public_run["config"]["embed"]["pretrained"] == "ckpt.bin" and public_run["ray"]["nodes"][0]["cpus"] == 8
    assert manifest(out, "videos")[0]["uri"].startswith(str(films))  # the private copy keeps the full path
    for name in ("scenes-000000.tar", "scenes-000001.tar"):  # same samples, only the json members changed
        private, public = (view_members(d / "shards" / name) for d in (out, release.root))
        assert private.keys() == public.keys()
        assert {k for k in private if private[k] != public[k]} == {k for k in private if k.endswith(".json")}
    roots = build_release(out, source_roots=[str(tmp_path / "home")], release_dir=tmp_path / "r2")
    uris = {v["uri"] for v in manifest(roots.root, "videos")}
    assert "alice/films/va0000000000000000001.mp4" in uris


def test_cli_release_and_older_dataset(curated, tmp_path, capsys):
    from pipelines.cli import main

    old = tmp_path / "old"
    shutil.copytree(curated, old, ignore=shutil.ignore_patterns("release"))
    (old / "manifests" / "captions.parquet").unlink()
    (old / "index.json").unlink()
    (old / "run.json").write_text(json.dumps({"config": {"scenes": {"window": 3}}}))
    assert main(["release", str(old), "--license", "cc-by-nc-4.0", "--pretty-name", "Old set"]) == 0
    assert "browse.html" in capsys.readouterr().out
    text = (old / "release" / "README.md").read_text()
    assert card_header(text)["license"] == "cc-by-nc-4.0"
    assert "| Captions |" not in text and count_table(text)["Shards"] == "2"
    assert "LLM usage" not in text  # no LLM usage in an old run.json: the table is left out
    import mlcroissant as mlc

    mlc.Dataset(jsonld=str(old / "release" / "croissant.json"))


def test_push_to_hub_uploads_the_release_folder(release, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push_to_hub(release, "me/scenes", private=True) == "commit"
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder"]
    assert calls[1][2] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    folder = calls[2][1]
    assert folder["folder_path"] == str(release.root) and folder["repo_type"] == "dataset"
    assert (release.root / "README.md").is_file() and not (release.root / "llm_cache").exists()


def test_not_a_dataset_is_a_clear_error(tmp_path):
    from data_cards.dataset import NotACuratedDataset

    with pytest.raises(NotACuratedDataset, match="no curated dataset"):
        build_release(tmp_path)
