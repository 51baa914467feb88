"""Group captioning and verification with the real google-genai and openai clients against local fakes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path

import pytest

from curation.captions.estimate import estimate_cost
from curation.captions.limits import RateBudget
from curation.captions.render import check_scene, describe, render
from curation.captions.schema import SceneCaptions
from curation.captions.stages import SKIPPED, CaptionVerifier, GroupCaptioner
from curation.config import CurateConfig, config_yaml
from curation.errors import CaptionerNotConfigured
from curation.records import Reject
from curation.stage import SceneUnit, run_stage_batch
from filmweaver_testing.fake_llm import FakeGemini, FakeOpenAI, make_scene_units

KEY = "AIzaFAKE-filmweaver-test-key-0123456789"


def _config(backend: str, url: str, **caption) -> CurateConfig:
    cfg = CurateConfig()
    cfg.caption.backend = backend
    cfg.caption.base_url = url
    cfg.caption.backoff_initial_s = 0.01
    cfg.caption.backoff_max_s = 0.05
    cfg.caption.file_poll_s = 0.01
    cfg.caption.batch_poll_s = 0.02
    for k, v in caption.items():
        setattr(cfg.caption, k, v)
    return cfg


def _run(cfg: CurateConfig, out_dir, units: list[SceneUnit], between=None):
    """Caption, call ``between()``, verify; returns (caption results, verify results, caption, verify stage)."""
    out = None if out_dir is None else str(out_dir)
    cap, ver = GroupCaptioner(cfg, out), CaptionVerifier(cfg, out)
    try:
        captioned = run_stage_batch(cap, units)
        if between is not None:
            between()
        verified = run_stage_batch(ver, [u for u in captioned if isinstance(u, SceneUnit)])
    finally:
        cap.close()
        ver.close()
    return captioned, verified, cap, ver


def _outcomes(results) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in results:
        sid = r.item_id
        assert sid not in out, f"{sid} came out twice"
        out[sid] = r.reason if isinstance(r, Reject) else r.scene.caption_status
    return out


@pytest.fixture
def gemini_key(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return KEY


def test_gemini_fault_script_outcomes_and_cache(gemini_key, tmp_path):
    """Every scripted fault ends in the right outcome, once per scene; a second run is all cache hits."""
    units = make_scene_units(10, 3)
    ids = [u.scene.scene_id for u in units]
    cfg = _config("gemini", "", max_retries=7, timeout_s=0.5)
    with FakeGemini(api_key=KEY, slow_s=2.0) as srv:
        cfg.caption.base_url = srv.url
        srv.add_faults(None, "429", "429", "429", "429")  # a storm hitting whichever requests come first
        script = {
            0: ["429", "429", "429"],
            1: ["500", "503"],
            2: ["slow"],
            3: ["malformed", "malformed"],
            4: ["missing_shot", "missing_shot"],
            5: ["extra_shot", "extra_shot"],
            6: ["unknown_character", "unknown_character"],
            7: ["safety"],
            8: ["missing_shot"],  # repaired by the one repair request
            9: ["429"] * 8,  # more than the retries: rate-limited
        }
        for i, faults in script.items():
            srv.add_faults(ids[i], *faults)

        def verify_faults():
            srv.add_faults(ids[0], "verify_wrong:2")
            srv.add_faults(ids[1], "missing_shot")  # verification answer repaired
            srv.add_faults(ids[8], "verify_fixed:1")

        captioned, verified, cap, ver = _run(cfg, tmp_path, units, verify_faults)
        first_requests = srv.counts["generate"]

    expected = {
        ids[3]: "malformed-response",
        ids[4]: "missing-shot",
        ids[5]: "extra-shot",
        ids[6]: "unknown-character",
        ids[7]: "safety-block",
        ids[9]: "rate-limited",
    }
    outcomes = _outcomes(captioned)
    assert set(outcomes) == set(ids)
    for sid in ids:
        assert outcomes[sid] == expected.get(sid, "captioned"), sid
    rejects = [r for r in captioned if isinstance(r, Reject)]
    assert all(r.stage == "caption" and r.detail for r in rejects)
    assert cap.stats.counts["llm_error_timeout"] >= 1 and cap.stats.counts["llm_error_server-error"] == 2
    assert cap.stats.counts["repair_requests"] == 5
    assert cap.stats.counts["llm_input_tokens"] > 0 and cap.stats.counts["llm_cost_usd"] > 0

    by_id = {u.item_id: u for u in verified}
    assert len(by_id[ids[0]].shots) == 2 and by_id[ids[0]].rejects[0].reason == "caption-wrong"
    assert [c.verdict for c in by_id[ids[1]].captions] == ["accurate"] * 3
    fixed = by_id[ids[8]].captions[1]
    assert fixed.verdict == "fixed" and fixed.caption_template.startswith("{C1} pours tea")
    assert fixed.problems and "{" not in fixed.caption
    assert ver.stats.counts["shots_wrong"] == 1 and ver.stats.counts["shots_refined"] == 1
    for u in verified:
        assert all(c.prompt_version == "caption_v1" and c.model == "gemini-2.5-flash" for c in u.captions)
        assert u.annotation["usage"]["caption"]["input_tokens"] > 0 and u.scene.n_characters == 2

    # A resumed run pays nothing for final outcomes; the rate-limited scene is asked again.
    with FakeGemini(api_key=KEY) as srv2:
        cfg.caption.base_url = srv2.url
        final = [u for u in make_scene_units(10, 3) if u.scene.scene_id != ids[9]]
        captioned2, verified2, cap2, ver2 = _run(cfg, tmp_path, final)
        assert srv2.counts["generate"] == 0 and first_requests > 0
        assert _outcomes(captioned2) == {k: v for k, v in outcomes.items() if k != ids[9]}
        assert cap2.stats.counts["llm_cache_hits"] > 0 and cap2.stats.counts["llm_cost_usd"] == 0
        assert [len(u.shots) for u in verified2] == [len(u.shots) for u in verified]
        retry = _run(cfg, tmp_path, [make_scene_units(10, 3)[9]])[0]
        assert _outcomes(retry) == {ids[9]: "captioned"} and srv2.counts["generate"] == 2  # caption + verify


def test_files_api_upload_polling_and_shared_uploads(gemini_key, tmp_path):
    """Scenes over the inline limit upload each clip once, wait until ACTIVE, and reference the file."""
    units = make_scene_units(2, 3, video="vfiles")
    with FakeGemini(api_key=KEY, file_processing_polls=3) as srv:
        cfg = _config("gemini", srv.url, inline_max_bytes=1)
        captioned, verified, cap, _ = _run(cfg, tmp_path, units)
        assert _outcomes(captioned) == {u.scene.scene_id: "captioned" for u in units}
        assert len(verified) == 2
        assert srv.counts["upload_start"] == srv.counts["upload_finalize"] == 6  # verify reuses the uploads
        assert srv.counts["file_get"] >= 6 * 2  # polled while PROCESSING (the fake rejects non-ACTIVE files)
        assert cap.stats.counts["llm_uploads"] == 6


def test_gemini_batch_mode_partial_failures(gemini_key, tmp_path):
    """Batch API: one job for the batch, a 429 entry retried in a later job, a safety block rejected, half price."""
    units = make_scene_units(4, 2, video="vbatch")
    ids = [u.scene.scene_id for u in units]
    with FakeGemini(api_key=KEY, batch_polls=2) as srv:
        cfg = _config("gemini", srv.url, batch=True)
        srv.add_faults(ids[1], "429")
        srv.add_faults(ids[2], "safety")
        srv.add_faults(ids[3], "extra_shot")
        cfg.verify.enabled = False
        captioned, _, cap, ver = _run(cfg, tmp_path, units)
        assert _outcomes(captioned) == {
            ids[0]: "captioned",
            ids[1]: "captioned",
            ids[2]: "safety-block",
            ids[3]: "captioned",
        }
        assert srv.counts["generate"] == 0 and srv.counts["batch_create"] == 2  # first job; retry + repair job
        assert srv.counts["batch_get"] >= 4
        counts = cap.stats.counts
        full = cap.client.cost("gemini-2.5-flash", counts["llm_input_tokens"], counts["llm_output_tokens"], False)
        assert cap.stats.counts["llm_cost_usd"] == pytest.approx(full / 2)
        assert ver.stats.counts["scenes_not_verified"] == 3


def test_openai_backend_frames_video_and_reject_scene(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    units = make_scene_units(3, 3, video="vopenai")
    ids = [u.scene.scene_id for u in units]
    with FakeOpenAI() as srv:
        cfg = _config("openai", srv.url + "/v1", model="Qwen/Qwen2.5-VL-7B-Instruct", max_frames_per_shot=3)
        cfg.verify.on_wrong = "reject_scene"
        srv.add_faults(ids[0], "503", "unknown_character")  # retried, then repaired
        srv.add_faults(ids[1], "safety")
        captioned, verified, cap, ver = _run(cfg, tmp_path, units, lambda: srv.add_faults(ids[0], "verify_wrong:0"))
        assert _outcomes(captioned) == {ids[0]: "captioned", ids[1]: "safety-block", ids[2]: "captioned"}
        assert _outcomes(verified) == {ids[0]: "caption-wrong", ids[2]: "captioned"}
        assert srv.counts["images"] > 0 and srv.counts["videos"] == 0
        assert cap.stats.counts["llm_retries"] == 1 and cap.stats.counts["repair_requests"] == 1

    with FakeOpenAI() as srv:
        cfg.caption.base_url = srv.url + "/v1"
        cfg.caption.openai_media = "video"  # another request: new cache key
        cfg.verify.enabled = False
        captioned, _, _, _ = _run(cfg, tmp_path, units[2:])
        assert _outcomes(captioned) == {ids[2]: "captioned"} and srv.counts["videos"] == 3


def test_rendered_captions_describe_each_character_identically(gemini_key, tmp_path):
    units = make_scene_units(1, 4, video="vrender")
    with FakeGemini() as srv:
        cfg = _config("gemini", srv.url)
        cfg.verify.enabled = False
        (unit,), _, _, _ = _run(cfg, tmp_path, units)
    descriptions = {c["id"]: c["description"] for c in unit.annotation["characters"]}
    assert len(descriptions) == 2 and len(set(descriptions.values())) == 2
    for rec in unit.captions:
        assert "{" not in rec.caption and rec.characters == ["C1", "C2"]
        for cid, words in descriptions.items():
            assert rec.caption.lower().count(words.lower()) == 1, (cid, rec.caption)
    # the template structure survives: removing the descriptions gives back the template text
    for rec in unit.captions:
        back = rec.caption[0].lower() + rec.caption[1:]
        for cid, words in descriptions.items():
            back = back.replace(words, "{" + cid + "}")
        assert back[0].lower() + back[1:] == rec.caption_template[0].lower() + rec.caption_template[1:]


def test_structural_checks_name_the_problem():
    resp = SceneCaptions.model_validate(
        {
            "characters": [{"id": "C1", "label": "girl", "clothing": "red coat", "hair": "braids", "age": "about ten"}],
            "setting": {"place": "park", "time_of_day": "day", "lighting": "sun", "style": "film"},
            "shots": [
                {
                    "shot": 0,
                    "caption": "{C1} runs.",
                    "characters": ["C1"],
                    "shot_type": "wide",
                    "camera_movement": "pan",
                },
                {"shot": 0, "caption": "{C2} waves.", "characters": [], "shot_type": "wide", "camera_movement": "pan"},
                {
                    "shot": 3,
                    "caption": "A dog.",
                    "characters": ["C7"],
                    "shot_type": "wide",
                    "camera_movement": "static",
                },
            ],
        }
    )
    reasons = [e.reason for e in check_scene(resp, 3)]
    assert reasons == ["duplicate-shot", "missing-shot", "missing-shot", "extra-shot"] + ["unknown-character"] * 2
    reg = {c.id: c for c in resp.characters}
    d = describe(reg["C1"])
    assert d == "girl (about ten; braids; red coat)"
    assert render("{C1} runs after {C1}.", reg) == f"G{d[1:]} runs after {d}."


def test_no_backend_skips_and_verify_passes_through(tmp_path):
    cfg = CurateConfig()
    units = make_scene_units(2, 2, video="vnone")
    captioned, verified, cap, ver = _run(cfg, tmp_path, units)
    assert [u.scene.caption_status for u in verified] == [SKIPPED, SKIPPED]
    assert cap.stats.counts["scenes_skipped"] == 2 and ver.stats.counts["scenes_not_verified"] == 2
    assert not any(u.captions for u in verified) and not (tmp_path / "llm_cache").exists()


def test_gemini_without_key_fails_at_construction(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    cfg = CurateConfig()
    cfg.caption.backend = "gemini"
    with pytest.raises(CaptionerNotConfigured, match="GEMINI_API_KEY"):
        GroupCaptioner(cfg, None)
    cfg.caption.backend = "openai"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(CaptionerNotConfigured, match="base_url"):
        CaptionVerifier(cfg, None)


def test_key_never_reaches_outputs(gemini_key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    units = make_scene_units(3, 2, video="vkey")
    with FakeGemini(api_key=KEY) as srv:
        cfg = _config("gemini", srv.url)
        srv.add_faults(units[0].scene.scene_id, "400_echo_key")  # the server quotes the key back
        captioned, verified, cap, ver = _run(cfg, tmp_path, units)
    rejects = [r for r in captioned if isinstance(r, Reject)]
    assert [r.reason for r in rejects] == ["bad-request"] and "[redacted]" in rejects[0].detail
    texts = [caplog.text, config_yaml(cfg), json.dumps(cap.stats.to_dict()), json.dumps(ver.stats.to_dict())]
    texts += [repr(r) for r in rejects] + [repr(u.captions) + json.dumps(u.annotation) for u in verified]
    texts += [p.read_text() for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert len(texts) > 6 and all(KEY not in t for t in texts)


def test_gemini_requests_go_through_a_configured_proxy(gemini_key, monkeypatch):
    """The client's own aiohttp session honours HTTP(S)_PROXY (the fake server plays the proxy)."""
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    units = make_scene_units(1, 2, video="vproxy")
    with FakeGemini() as srv:
        cfg = _config("gemini", "http://gemini.invalid", max_retries=0)
        cfg.verify.enabled = False
        monkeypatch.setenv("HTTP_PROXY", srv.url)
        cap = GroupCaptioner(cfg, None)
        (through,) = run_stage_batch(cap, units)
        cap.close()
        monkeypatch.delenv("HTTP_PROXY")
        cap = GroupCaptioner(cfg, None)
        (direct,) = run_stage_batch(cap, units)
        cap.close()
    assert isinstance(through, SceneUnit) and through.scene.caption_status == "captioned"
    assert srv.counts["generate"] == 1
    assert isinstance(direct, Reject) and direct.reason == "connection-error"  # gemini.invalid does not resolve


def test_dry_run_estimate_without_network(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    cfg = CurateConfig()
    cfg.caption.backend = "gemini"
    low = estimate_cost(cfg, shot_durations=[[4.0, 4.0, 2.0]] * 6)
    assert low.scenes == 6 and low.shots == 18 and low.video_s == 60 and low.requests == 12
    cfg.caption.media_resolution = "medium"
    medium = estimate_cost(cfg, shot_durations=[[4.0, 4.0, 2.0]] * 6)
    assert medium.input_tokens > 2.5 * low.input_tokens and medium.cost_usd > low.cost_usd
    price = cfg.caption.prices["gemini-2.5-flash"]
    assert medium.cost_usd == pytest.approx(
        (medium.input_tokens * price.input_per_million + medium.output_tokens * price.output_per_million) / 1e6
    )
    cfg.caption.batch = True
    assert estimate_cost(cfg, shot_durations=[[4.0, 4.0, 2.0]] * 6).cost_usd == pytest.approx(medium.cost_usd / 2)
    units = make_scene_units(2, 3, shot_s=2.0, video="vdry")
    from_units = estimate_cost(cfg, scenes=units)
    assert from_units.video_s == 12 and from_units.per_hour()["cost_usd"] > 0
    assert re.search(r"per hour of video", from_units.summary())


def test_concurrency_limit_and_rate_budget(gemini_key, tmp_path):
    units = make_scene_units(8, 1, video="vconc")
    with FakeGemini(latency_s=0.2) as srv:
        cfg = _config("gemini", srv.url, concurrency=4)
        cfg.verify.enabled = False
        cap = GroupCaptioner(cfg, None)
        run_stage_batch(cap, units[:1])  # warm up the client session
        t0 = time.perf_counter()
        assert all(isinstance(u, SceneUnit) for u in run_stage_batch(cap, units))
        wall = time.perf_counter() - t0
        cap.close()
        assert srv.max_in_flight == 4 and wall < 8 * 0.2 * 0.75  # 2 waves of 4, not 8 sequential calls

    async def drain() -> float:
        budget = RateBudget(600)  # 10 per second, bursts of 600
        await budget.take(600)
        t = time.perf_counter()
        await budget.take(3)
        return time.perf_counter() - t

    assert 0.2 < asyncio.run(drain()) < 1.0
