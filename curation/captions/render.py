"""Rendering of caption templates and the structural checks every response must pass."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .schema import Character, SceneCaptions, SceneVerification

CHAR_REF = re.compile(r"\{([A-Za-z][A-Za-z0-9_-]*)\}")


@dataclass(frozen=True)
class StructureError:
    """One way a response breaks its contract; ``reason`` is the reject slug used if repair fails."""

    reason: str  # missing-shot | extra-shot | duplicate-shot | unknown-character
    message: str


def describe(character: Character) -> str:
    """The one phrase that stands for a character in every rendered caption of its scene."""
    details = [character.age, character.hair, character.clothing, character.distinguishing_features]
    details = [d.strip() for d in details if d and d.strip()]
    return f"{character.label.strip()} ({'; '.join(details)})" if details else character.label.strip()


def render(template: str, registry: dict[str, Character]) -> str:
    """Substitute every ``{id}`` by its registry description (unknown ids must be rejected before)."""
    text = CHAR_REF.sub(lambda m: describe(registry[m.group(1)]), template).strip()
    return text[:1].upper() + text[1:]


def _shot_coverage(indices: list[int], expected: list[int]) -> list[StructureError]:
    errors = []
    seen = Counter(indices)
    for i in expected:
        if seen[i] == 0:
            errors.append(StructureError("missing-shot", f"shot {i} has no entry"))
        elif seen[i] > 1:
            errors.append(StructureError("duplicate-shot", f"shot {i} appears {seen[i]} times"))
    for i in sorted(set(indices) - set(expected)):
        errors.append(StructureError("extra-shot", f"shot {i} does not exist (shots are {expected})"))
    return errors


def _unknown_refs(text: str, listed: list[str], ids: set[str], where: str) -> list[StructureError]:
    refs = CHAR_REF.findall(text) + list(listed)
    return [
        StructureError("unknown-character", f"{where} refers to {{{r}}}, which is not in the character registry")
        for r in dict.fromkeys(refs)
        if r not in ids
    ]


def check_scene(resp: SceneCaptions, n_shots: int) -> list[StructureError]:
    """Every shot exactly once, unique registry ids, every referenced id in the registry."""
    errors = _shot_coverage([s.shot for s in resp.shots], list(range(n_shots)))
    dup_ids = [i for i, n in Counter(c.id for c in resp.characters).items() if n > 1]
    errors += [StructureError("duplicate-character", f"character id {i} is defined twice") for i in dup_ids]
    ids = {c.id for c in resp.characters}
    for s in resp.shots:
        errors += _unknown_refs(s.caption, s.characters, ids, f"shot {s.shot}")
    return errors


def check_verification(resp: SceneVerification, expected: list[int], ids: set[str]) -> list[StructureError]:
    """Every shot sent has one verdict; refined captions use registry ids only."""
    errors = _shot_coverage([v.shot for v in resp.shots], expected)
    for v in resp.shots:
        if v.verdict == "fixed":
            if not v.refined_caption.strip():
                errors.append(StructureError("missing-refinement", f"shot {v.shot} is 'fixed' with no refined_caption"))
            errors += _unknown_refs(v.refined_caption, [], ids, f"refined caption of shot {v.shot}")
    return errors
