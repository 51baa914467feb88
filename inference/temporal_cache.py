"""The temporal cache: recent latent frames of the current shot, compressed as the model was trained.

It keeps at most ``capacity`` latent frames (the model's ``schedule_capacity``); the model's ``pack``
patchifies the newest at the base patch size and older ones with the larger kernels of its
``temporal_schedule``, so the sampler and the trainer see the same layout. Cleared when a new shot starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TemporalCache:
    """Latent history (C, F, h, w) of the current shot, oldest first, at most ``capacity`` frames."""

    def __init__(self, capacity: int, schedule: Sequence[Sequence[int]] = ()):
        self.capacity = capacity
        self.schedule = [tuple(int(v) for v in level) for level in schedule]
        self.frames: np.ndarray | None = None

    def __len__(self) -> int:
        return 0 if self.frames is None else self.frames.shape[1]

    def push(self, latents: np.ndarray) -> None:
        """Append a generated chunk (C, F, h, w); frames beyond the capacity are dropped, oldest first."""
        latents = np.asarray(latents, np.float32)
        joined = latents if self.frames is None else np.concatenate([self.frames, latents], axis=1)
        self.frames = joined[:, -self.capacity :] if self.capacity > 0 else joined[:, :0]

    def clear(self) -> None:
        self.frames = None

    def levels(self) -> list[tuple[int, tuple[int, int, int]]]:
        """(frames, kernel) per compression level in use, newest level first (as the model packs them)."""
        left, out = len(self), []
        for frames, *kernel in self.schedule:
            take = min(int(frames), left)
            if take > 0:
                out.append((take, tuple(kernel)))
            left -= take
        return out
