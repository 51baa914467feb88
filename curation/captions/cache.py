"""Content-addressed cache of LLM responses on disk, so that a re-run never pays twice."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def content_key(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (model, prompt, schema, media digests, parameters)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``{root}/{key[:2]}/{key}.json`` files written atomically; ``root=None`` keeps nothing."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        try:
            return json.loads(self._path(key).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a torn write from a killed run: ask again

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}-{id(value)}")
        tmp.write_text(json.dumps(value, ensure_ascii=False))
        os.replace(tmp, path)
