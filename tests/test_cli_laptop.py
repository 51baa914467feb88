"""README's "Try the whole path on a laptop" block, run exactly as written (curate -> release -> models tiny ->
precompute -> train -> sample -> evaluate), offline on CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Try the whole path on a laptop"


def laptop_block() -> list[str]:
    """The command lines of the first ```bash block of the README's laptop section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_laptop_path_runs_as_written(tmp_path):
    lines = laptop_block()
    assert [line.split()[1] for line in lines if line.startswith("$fw ")] == [
        "curate",
        "release",
        "models",
        "precompute",
        "train",
        "sample",
        "evaluate",
    ]
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the README runs from a checkout with .venv
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"  # one shell: `fw=` carries; stops at a failure
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    laptop = tmp_path / "laptop"
    assert (laptop / "ds" / "release" / "browse.html").is_file()
    assert json.loads((laptop / "latents" / "latents.json").read_text())["shards"]
    assert (laptop / "run" / "model" / "config.json").is_file()
    assert (laptop / "story" / "story.mp4").stat().st_size > 0
    assert "3 rounds in" in proc.stdout and "embedder:" in proc.stdout
