"""LLM group captioning and verification.

Public names load lazily: ``curation.config`` imports ``.config`` from here, and the stages import
``curation.config`` back.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "GroupCaptioner": ".stages",
    "CaptionVerifier": ".stages",
    "CostEstimate": ".estimate",
    "estimate_cost": ".estimate",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(name)
