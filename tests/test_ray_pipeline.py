"""The Ray executor against the local executor on tiny synthetic films (one local Ray session, 2 CPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.config import load_config
from filmweaver_testing.films import make_film
from pipelines.cli import build_parser as filmweaver_parser
from pipelines.cli import main as filmweaver
from pipelines.curate import build_parser, plan_groups, run_ray
from pipelines.local import run_local
from pipelines.output import DatasetOutput
from pipelines.ray_attempts import TESTING_CRASH_ENV

POISON = "poison-"  # inputs whose name holds this SIGKILL their Ray worker (the testing hook)
CAPTION_POISON = "captionkill-"  # ... only in the caption stage group (the LLM actor pool's batches)


@pytest.fixture(scope="module")
def settings(small_settings) -> list[str]:
    return [*small_settings, "shards.max_bytes=60000"]  # several shards per run


@pytest.fixture(scope="module")
def config(settings):
    return load_config(None, settings)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("films")
    paths = []
    for seed in (1, 2, 3):
        path = str(d / f"film{seed}.mp4")
        make_film(path, seed=seed, n_scenes=2, shots_per_scene=(2, 3), shot_seconds=(1.0, 1.5))
        paths.append(path)
    (d / "broken.mp4").write_bytes(os.urandom(5000))  # a bad input becomes a reject row, not a failure
    return [*paths, str(d / "broken.mp4")]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ[TESTING_CRASH_ENV] = f"{POISON},{CAPTION_POISON}@caption"  # inherited by the Ray started here
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        yield ray
        ray.shutdown()
    finally:
        del os.environ[TESTING_CRASH_ENV]


@pytest.fixture(scope="module")
def local_out(inputs, config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run_local(inputs, str(out), config)
    return out


@pytest.fixture(scope="module")
def ray_out(inputs, config, ray_session, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("ray")
    return out, run_ray(inputs, str(out), config, videos_per_write=2)


def test_ray_matches_local(local_out, ray_out, dataset_view):
    out, summary = ray_out
    assert summary.videos == 4 and summary.videos_rejected == 1 and summary.scenes_written >= 3
    assert dataset_view(out) == dataset_view(local_out)
    run, local_run = (json.loads((o / "run.json").read_text()) for o in (out, local_out))
    assert run["engine"] == "ray" and run["ray"]["cluster_resources"]["CPU"] == 2
    # the video stages saw 4 videos, the scene stages the 3 not rejected (the broken file is)
    assert [n["stage_attempts"] for n in run["ray"]["nodes_worked"]] == [4 + 3]
    assert run["ray"]["worker_crashes"] == run["ray"]["quarantined_videos"] == 0
    assert run["counts"] == local_run["counts"]

    # the same stages saw the same items, in the same order; only timings differ
    def counters(r: dict) -> dict:
        return {k: {f: v[f] for f in ("items_in", "items_out", "rejects", "counts")} for k, v in r["stages"].items()}

    assert list(run["stages"]) == list(local_run["stages"]) and counters(run) == counters(local_run)
    assert run["stages"]["probe"]["seconds"] > 0


def test_one_video_runs_its_stages_on_every_cpu(inputs, config, ray_session, dataset_view, tmp_path):
    """Fewer videos than CPUs: the video's stage tasks ask for the idle cores and run on that many threads,
    and the output is the one-CPU-per-video output (the same video in the four-video local run)."""
    one, alone = tmp_path / "ray", tmp_path / "local"
    run_ray(inputs[:1], str(one), config)
    run_local(inputs[:1], str(alone), config)
    run = json.loads((one / "run.json").read_text())
    assert run["ray"]["cpus_per_video"] == 2
    assert dataset_view(one) == dataset_view(alone)


def test_task_threads_follow_the_cpus_of_the_task(ray_session):
    """A worker reused by tasks of other sizes: each task runs torch, ``OMP_NUM_THREADS`` and the text and
    face pools on its own CPUs, and the worker's settings come back after."""

    @ray_session.remote
    def threads() -> tuple:
        import torch

        from curation.config import ScoresConfig
        from curation.scores import KeyframeScorer
        from pipelines.ray_cpus import task_threads

        before = (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
        with task_threads() as n:
            inside = (n, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
            text = KeyframeScorer(ScoresConfig(text=False)).text_workers
        return before, inside, text, (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))

    for cpus in (2, 1, 2):
        before, inside, text, after = ray_session.get(threads.options(num_cpus=cpus).remote())
        assert inside == (cpus, cpus, str(cpus)) and text == cpus
        assert after == before


def test_video_cpus_share_the_idle_cores():
    from pipelines.ray_cpus import task_threads, video_cpus

    assert video_cpus([2.0], 1) == 2 and video_cpus([2.0], 2) == 1 and video_cpus([2.0], 40) == 1
    assert video_cpus([16.0], 3) == 5  # floor: 15 of 16 cores asked for
    assert video_cpus([8.0, 4.0], 1) == 8  # one video: the biggest node
    assert video_cpus([2.0, 64.0], 3) == 21  # every task placeable at once: 22 would fit only twice
    assert video_cpus([4.0, 4.0], 3) == 2 and video_cpus([4.0, 4.0], 2) == 4  # a task never spans nodes
    assert video_cpus([8.0, 0.0], 1) == 8  # a node with no CPU (a head node kept for the driver) runs no task
    assert video_cpus([], 1) == video_cpus([2.0], 0) == 1
    with task_threads() as n:  # outside a Ray task nothing changes
        assert n is None


def test_rerun_skips_finished_videos(inputs, config, ray_out, dataset_view):
    out, _ = ray_out
    before = dataset_view(out)
    shards = sorted(p.name for p in (out / "shards").iterdir())
    summary = run_ray(inputs, str(out), config)
    assert summary.skipped == 4 and summary.videos == 0  # the broken file was journaled as rejected
    assert dataset_view(out) == before
    assert sorted(p.name for p in (out / "shards").iterdir()) == shards


def test_model_stages_in_actor_pools(inputs, settings, config, ray_session, local_out, dataset_view, tmp_path):
    groups = plan_groups(config, gpus=False, actors=True)
    assert [g.names for g in groups if g.actors] == [("embed",)]
    assert plan_groups(config, gpus=False) == [
        g for g in plan_groups(config, gpus=False) if not g.actors
    ]  # CPU-only cluster: everything in fused tasks
    gpu = {g.names: g.num_gpus for g in plan_groups(load_config(None, [*settings, "filters.faces=true"]), True)}
    assert gpu[("embed",)] == 0.5 and gpu[("scene_filter",)] == 0.25
    run_ray(inputs, str(tmp_path), config, actors=True)
    assert dataset_view(tmp_path) == dataset_view(local_out)


def test_repeated_failures_are_quarantined(inputs, config, ray_session, dataset_view, tmp_path):
    from curation.video import content_id

    vid = content_id(inputs[0])
    state = {vid: {"uri": inputs[0], "failures": 3, "reasons": ["x"]}}
    DatasetOutput(str(tmp_path)).write_state("failures.json", state)
    summary = run_ray(inputs[:2], str(tmp_path), config, max_failures=3)
    assert summary.rejects["ray/quarantined"] == 1 and summary.videos == 2
    m, samples = dataset_view(tmp_path)
    assert {r["item_id"] for r in m["rejects"] if r["reason"] == "quarantined"} == {vid}
    assert {v["video_id"]: v["status"] for v in m["videos"]}[vid] == "rejected"
    assert not any(k.startswith(vid) for k in samples)


def test_video_that_kills_its_worker_is_quarantined_in_the_same_run(
    inputs, small_settings, ray_session, dataset_view, tmp_path, capsys
):
    poison = tmp_path / f"{POISON}film.mp4"
    make_film(poison, seed=9, n_scenes=1, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.0))
    out = tmp_path / "out"
    sets = [a for s in small_settings for a in ("--set", s)]
    argv = ["curate", str(poison), inputs[1], "--out", str(out), "--engine", "ray", "--max-failures", "2", *sets]
    assert filmweaver(argv) == 0  # the run ends; the other video is curated
    assert "quarantined" in capsys.readouterr().out
    from curation.video import content_id

    m, samples = dataset_view(out)
    status = {v["uri"]: v["status"] for v in m["videos"]}
    assert status == {str(poison): "rejected", inputs[1]: "ok"}
    [reject] = [r for r in m["rejects"] if r["reason"] == "quarantined"]
    assert reject["item_id"] == content_id(str(poison)) and reject["stage"] == "ray"
    assert "died in 2 attempts" in reject["detail"]  # --max-failures reached run_ray
    assert samples and all(k.startswith(content_id(inputs[1])) for k in samples)
    ray_info = json.loads((out / "run.json").read_text())["ray"]
    assert ray_info["worker_crashes"] == 2 and ray_info["quarantined_videos"] == 1 and ray_info["failed_videos"] == 0
    assert not (out / "state" / "failures.json").exists()


def test_a_crash_in_a_batch_of_videos_quarantines_only_the_video_that_caused_it(
    inputs, settings, ray_session, dataset_view, tmp_path, monkeypatch
):
    """Captioning runs in an actor pool that takes several videos per call. One video kills the actor's worker
    in the caption stage: its batch's other videos are retried one at a time and curated, and only the one
    that crashes alone is quarantined (before: every video of the batch was charged and quarantined)."""
    from curation.video import content_id
    from filmweaver_testing.fake_llm import FakeOpenAI

    poison = tmp_path / f"{CAPTION_POISON}film.mp4"
    make_film(poison, seed=9, n_scenes=1, shots_per_scene=(2, 2), shot_seconds=(1.0, 1.0))
    videos = [inputs[0], str(poison), inputs[1]]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI() as srv:
        llm = ["caption.backend=openai", f"caption.base_url={srv.url}/v1", "caption.model=m", "verify.enabled=false"]
        config = load_config(None, [*settings, *llm])
        assert [g.names for g in plan_groups(config, gpus=False) if g.actors] == [("caption", "verify")]
        summary = run_ray(videos, str(tmp_path / "out"), config, max_failures=2)
    assert summary.videos == 3 and summary.rejects == {"ray/quarantined": 1}
    m, samples = dataset_view(tmp_path / "out")
    assert {v["uri"]: v["status"] for v in m["videos"]} == {inputs[0]: "ok", str(poison): "rejected", inputs[1]: "ok"}
    [reject] = [r for r in m["rejects"] if r["reason"] == "quarantined"]
    assert reject["item_id"] == content_id(str(poison)) and "caption+verify" in reject["detail"]
    kept = (content_id(inputs[0]), content_id(inputs[1]))
    assert (
        samples
        and all(k.startswith(kept) for k in samples)
        and all(any(k.startswith(v) for k in samples) for v in kept)
    )
    assert all(s["caption_status"] == "captioned" for s in m["scenes"])
    ray_info = json.loads((tmp_path / "out" / "run.json").read_text())["ray"]
    assert ray_info["batch_crashes"] == 1 and ray_info["worker_crashes"] == 2 and ray_info["quarantined_videos"] == 1


def test_filmweaver_curate_has_every_ray_option(capsys, tmp_path):
    def ray_flags(parser) -> set[str]:
        if "curate" in parser.prog.split():
            return {o for a in parser._actions for o in a.option_strings}
        return ray_flags(parser._subparsers._group_actions[0].choices["curate"])

    flags = {o for a in build_parser()._actions for o in a.option_strings}
    assert {"--num-cpus", "--address", "--max-failures", "--actors", "--videos-per-write"} <= flags
    assert flags <= ray_flags(filmweaver_parser())
    argv = ["curate", str(tmp_path), "--out", str(tmp_path / "o"), "--engine", "local", "--num-cpus", "2"]
    assert filmweaver(argv) == 2
    assert "--num-cpus is an option of --engine ray" in capsys.readouterr().err


def test_clip_bytes_do_not_depend_on_the_cpus_a_node_has(inputs, tmp_path):
    """A clip re-exported on another node (here: a process that sees one CPU) has the same bytes."""
    code = (
        "import os, sys\n"
        "from curation.export import export_clip\nfrom curation.video import probe\n"
        "if sys.argv[2] == 'one-cpu':\n"
        "    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "clip = export_clip(sys.argv[1], probe(sys.argv[1]), 5, 40, 96, 23, 'veryfast')\n"
        "open(sys.argv[3], 'wb').write(clip)\n"
    )
    for cpus in ("all-cpus", "one-cpu"):
        subprocess.run([sys.executable, "-c", code, inputs[0], cpus, str(tmp_path / cpus)], check=True, timeout=120)
    assert (tmp_path / "all-cpus").read_bytes() == (tmp_path / "one-cpu").read_bytes()


def _go(ledger, video_ids, group, node, pid):
    """``begin`` on node ``n<node>`` (ip 10.0.0.<node>); the verdicts: started, alone, quarantined ids."""
    plan = ledger.begin(video_ids, group, f"n{node}", f"10.0.0.{node}", pid)
    return plan["started"], plan["alone"], sorted(plan["quarantined"])


def test_ledger_charges_crashes_to_the_video_and_node_losses_to_no_one(monkeypatch):
    from pipelines.ray_attempts import AttemptLedger

    alive = {"n1", "n2"}
    monkeypatch.setattr(AttemptLedger, "_alive", lambda self: set(alive))
    ledger = AttemptLedger(max_failures=2)
    assert _go(ledger, ["v"], "probe", 2, 7) == (["v"], [], [])
    alive.discard("n2")  # node n2 is lost with the attempt: Ray re-runs it, no crash is charged
    assert _go(ledger, ["v"], "probe", 1, 8) == (["v"], [], [])
    assert _go(ledger, ["v"], "probe", 1, 9) == (["v"], [], [])  # pid 8 died on a live node: crash 1
    ledger.end(["v"])  # this attempt finished: a later start (e.g. a reconstruction) charges nothing
    assert _go(ledger, ["v"], "export", 1, 9) == (["v"], [], [])
    detail = ledger.begin(["v"], "export", "n1", "10.0.0.1", 10)["quarantined"]["v"]  # pid 9 died: crash 2
    assert "died in 2 attempts" in detail and "worker 9 on node 10.0.0.1" in detail
    assert _go(ledger, ["w"], "probe", 1, 10) == (["w"], [], [])  # other videos go on
    report = ledger.report()
    assert report["node_losses"] == 1 and report["quarantined"] == ["v"] and len(report["crashes"]["v"]) == 2
    assert report["batch_crashes"] == 0
    assert {n["ip"]: n["stage_attempts"] for n in report["nodes_worked"]} == {"10.0.0.1": 4, "10.0.0.2": 1}


def test_ledger_charges_a_batch_crash_to_none_and_finds_the_video_alone(monkeypatch):
    """A worker holding three videos dies: none is charged; each then runs alone, and only the one that
    crashes alone is charged and quarantined (before: all three, the innocent two lost from the run)."""
    from pipelines.ray_attempts import AttemptLedger

    monkeypatch.setattr(AttemptLedger, "_alive", lambda self: {"n1"})
    ledger = AttemptLedger(max_failures=2)
    batch = ["a", "bad", "c"]
    assert _go(ledger, batch, "caption+verify", 1, 7) == (batch, [], [])  # pid 7 dies holding all three
    assert _go(ledger, batch, "caption+verify", 1, 8) == ([], batch, [])  # Ray's retry: all three alone
    assert _go(ledger, ["a"], "caption+verify", 1, 8) == (["a"], [], [])
    ledger.end(["a"])
    assert _go(ledger, ["bad"], "caption+verify", 1, 8) == (["bad"], [], [])  # pid 8 dies running it alone
    assert _go(ledger, batch, "caption+verify", 1, 9) == ([], batch, [])  # suspects stay alone
    assert _go(ledger, ["a"], "caption+verify", 1, 9) == (["a"], [], [])
    ledger.end(["a"])
    assert _go(ledger, ["bad"], "caption+verify", 1, 9) == (["bad"], [], [])  # crash 2 of 'bad' alone
    assert _go(ledger, batch, "caption+verify", 1, 10) == ([], ["a", "c"], ["bad"])
    for video in ("a", "c"):
        assert _go(ledger, [video], "caption+verify", 1, 10) == ([video], [], [])
        ledger.end([video])
    assert _go(ledger, ["d", "e"], "caption+verify", 1, 10) == (["d", "e"], [], [])  # others still batch
    report = ledger.report()
    assert (
        report["quarantined"] == ["bad"] and list(report["crashes"]) == ["bad"] and len(report["crashes"]["bad"]) == 2
    )
    assert report["batch_crashes"] == 1 and report["node_losses"] == 0


def test_ledger_counts_a_batch_lost_with_its_node_as_node_losses(monkeypatch):
    from pipelines.ray_attempts import AttemptLedger

    alive = {"n1", "n2"}
    monkeypatch.setattr(AttemptLedger, "_alive", lambda self: set(alive))
    ledger = AttemptLedger(max_failures=2)
    assert _go(ledger, ["a", "b"], "caption+verify", 2, 7) == (["a", "b"], [], [])
    assert _go(ledger, ["a", "b"], "caption+verify", 1, 8) == ([], ["a", "b"], [])  # n2 still looked alive
    alive.discard("n2")  # ... but it was lost
    report = ledger.report()
    assert report["batch_crashes"] == 0 and report["node_losses"] == 2 and report["crashes"] == {}


def test_ledger_turns_a_crash_on_a_node_found_dead_later_into_a_node_loss(monkeypatch):
    # Ray re-ran the lost node's task before the cluster marked the node dead: charged as a crash at first
    from pipelines.ray_attempts import AttemptLedger

    alive = {"n1", "n2"}
    monkeypatch.setattr(AttemptLedger, "_alive", lambda self: set(alive))
    ledger = AttemptLedger(max_failures=3)
    assert _go(ledger, ["v"], "probe", 2, 7) == (["v"], [], [])
    assert _go(ledger, ["v"], "probe", 1, 8) == (["v"], [], [])  # n2 still looks alive: crash charged
    assert _go(ledger, ["w"], "probe", 1, 9) == (["w"], [], [])
    assert _go(ledger, ["w"], "probe", 1, 10) == (["w"], [], [])  # a real crash on a live node
    alive.discard("n2")  # the cluster notices the node is gone
    report = ledger.report()
    assert report["node_losses"] == 1 and report["crashes"] == {"w": [report["crashes"]["w"][0]]}
    assert "worker 9 on node 10.0.0.1" in report["crashes"]["w"][0]
