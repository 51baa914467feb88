"""Content-addressed cache of LLM responses, so that a re-run never pays twice.

It lives in the output: a local folder, or an object-store prefix (``s3://``, ``gs://``) when the dataset is
written there, so that every worker of a multi-node run shares it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any

from ..video import resolve_uri


def content_key(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (model, prompt, schema, media digests, parameters)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """``{root}/{key[:2]}/{key}.json`` entries, each written whole or not at all; ``root=None`` keeps nothing.

    Local entries go to a temporary name and are renamed; on an object store an object only appears once
    its upload completes, so a killed run leaves no torn entry either way.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.fs, self.root = resolve_uri(os.fspath(root)) if root is not None else (None, None)

    def _path(self, key: str) -> str:
        assert self.root is not None
        join = os.path.join if self.fs is None else posixpath.join
        return join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        try:
            if self.fs is None:
                with open(self._path(key), "rb") as f:
                    data = f.read()
            else:
                with self.fs.open_input_stream(self._path(key)) as f:
                    data = f.read()
            return json.loads(data)
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # a torn local write from a killed run: ask again

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.root is None:
            return
        path, data = self._path(key), json.dumps(value, ensure_ascii=False).encode()
        if self.fs is not None:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{id(value)}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
