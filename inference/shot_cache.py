"""The shot cache: keyframes of earlier shots and injected reference images, retrieved by CLIP similarity.

Each entry holds one keyframe latent (C, 1, h, w), as the trainer's shot-cache keyframes, and the CLIP
image embedding of its picture. For a new shot the top-K entries by cosine similarity between the shot's
prompt (CLIP text embedding) and the entries' image embeddings are retrieved; entries of the shot being
generated are never retrieved (the shot cache holds *other* shots), and pinned entries (a round's reference
images) are always included, ahead of the retrieved ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CacheEntry:
    """One keyframe: ``latent`` (C, 1, h, w); ``embedding`` (D,) L2-normalised CLIP image embedding;
    ``shot`` the story shot it comes from (-1 for an injected reference); ``source`` 'keyframe' | 'reference'."""

    latent: np.ndarray
    embedding: np.ndarray
    shot: int
    source: str = "keyframe"
    label: str | None = None


class ShotCache:
    """Keyframes of earlier shots plus injected concepts, with top-K text-image retrieval."""

    def __init__(self) -> None:
        self.entries: list[CacheEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: CacheEntry) -> int:
        """Add an entry; returns its index."""
        self.entries.append(entry)
        return len(self.entries) - 1

    def retrieve(
        self, text_embedding: np.ndarray | None, k: int, exclude_shot: int | None = None, pinned: list[int] = ()
    ) -> list[int]:
        """Indices of the entries for a new shot: ``pinned`` first, then the top ``k - len(pinned)`` others by
        cosine similarity to ``text_embedding`` (ties to the older entry). Without a text embedding (an
        embedder with no text tower) the most recent entries are taken. Entries of ``exclude_shot`` are skipped.
        """
        chosen = list(dict.fromkeys(pinned))
        pool = [
            i
            for i, e in enumerate(self.entries)
            if i not in chosen and (exclude_shot is None or e.shot != exclude_shot)
        ]
        room = max(0, k - len(chosen))
        if not pool or room == 0:
            return chosen
        if text_embedding is None:
            return chosen + pool[-room:]
        sims = np.stack([self.entries[i].embedding for i in pool]) @ np.asarray(text_embedding, np.float32)
        order = np.argsort(-sims, kind="stable")[:room]
        return chosen + [pool[int(o)] for o in order]

    def latents(self, indices: list[int]) -> np.ndarray:
        """Stacked latents (K, C, 1, h, w) of the chosen entries (K may be 0)."""
        if not indices:
            return np.zeros((0,), np.float32)
        return np.stack([self.entries[i].latent for i in indices]).astype(np.float32)

    # ---------------------------------------------------------------------------------------- persistence

    def state(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (exact round trip)."""
        if not self.entries:
            return {"count": np.array(0)}
        return {
            "count": np.array(len(self.entries)),
            "latents": np.stack([e.latent for e in self.entries]),
            "embeddings": np.stack([e.embedding for e in self.entries]),
            "shots": np.array([e.shot for e in self.entries]),
            "sources": np.array([e.source for e in self.entries]),
            "labels": np.array([e.label or "" for e in self.entries]),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ShotCache:
        cache = cls()
        for i in range(int(state["count"])):
            cache.add(
                CacheEntry(
                    latent=state["latents"][i],
                    embedding=state["embeddings"][i],
                    shot=int(state["shots"][i]),
                    source=str(state["sources"][i]),
                    label=str(state["labels"][i]) or None,
                )
            )
        return cache
