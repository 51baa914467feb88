"""``curate --dry-run`` for every captioning backend and model: right model names, prices or 'unknown', no --out."""

from __future__ import annotations

import re

import pytest

from filmweaver_testing.films import make_simple_video
from pipelines.cli import main


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("dry") / "clip.mp4"
    make_simple_video(str(path), n_frames=240, size=(96, 64), fps=24)  # 10 s
    return path


def dry_run(video, capsys, *sets: str) -> str:
    argv = ["curate", str(video), "--dry-run"] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert list(video.parent.iterdir()) == [video]  # nothing written, no --out needed
    return out


def test_backend_none_requests_nothing(video, capsys):
    out = dry_run(video, capsys)
    assert "no captioning requests will be made and nothing is spent" in out
    assert "$" not in out and "requests," not in out


def test_gemini_known_model_is_priced(video, capsys):
    out = dry_run(video, capsys, "caption.backend=gemini")
    assert re.search(r"gemini/gemini-2\.5-flash: .* \d+ requests, .*\$\d+\.\d{4}; per hour", out)
    assert "warning" not in out


def test_unknown_model_warns_and_has_no_price(video, capsys):
    out = dry_run(video, capsys, "caption.backend=gemini", "caption.model=gemini-9-ultra")
    assert "warning: no price for gemini-9-ultra in caption.prices" in out
    assert "price unknown" in out and "$0.0000" not in out and "$" not in out


def test_openai_uses_its_own_model_and_prices(video, capsys):
    out = dry_run(video, capsys, "caption.backend=openai")
    assert "caption.model is not set" in out and "gemini" not in out and "price unknown" in out
    model = "Qwen/Qwen2.5-VL-7B-Instruct"
    out = dry_run(video, capsys, "caption.backend=openai", f"caption.model={model}")
    assert f"openai/{model}:" in out and "price unknown" in out and "gemini" not in out
    prices = f'caption.prices={{"{model}": {{input_per_million: 0.2, output_per_million: 0.6}}}}'
    out = dry_run(video, capsys, "caption.backend=openai", f"caption.model={model}", prices)
    assert re.search(r"\$\d+\.\d{4}; per hour", out) and "warning" not in out


def test_curate_without_out_or_dry_run_is_a_user_error(video, capsys):
    assert main(["curate", str(video)]) == 2
    assert "curate needs --out" in capsys.readouterr().err
