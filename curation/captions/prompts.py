"""Versioned prompt texts (``prompts/{kind}_{version}.txt``), loaded from the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

from ..errors import ConfigError


@cache
def load_prompt(kind: str, version: str) -> str:
    """The text of prompt ``kind`` (caption, verify, repair) at ``version``; a clear error if it is missing."""
    name = f"{kind}_{version}.txt"
    path = resources.files(__package__).joinpath("prompts", name)
    if not path.is_file():
        raise ConfigError(f"no prompt {name} in curation/captions/prompts/ (check the prompt_version setting)")
    return path.read_text(encoding="utf-8")
