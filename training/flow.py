"""Flow matching as in Wan: ``x_t = (1 - sigma) x0 + sigma * noise``, velocity target ``noise - x0``.

Timesteps are ``1000 * sigma``. Cache noise levels come from the model config's ranges and are drawn the
same way in training and sampling.
"""

from __future__ import annotations

import numpy as np
import torch


def shift_sigma(u: np.ndarray | float, shift: float) -> np.ndarray:
    """Wan/SD3 timestep shift of uniform ``u`` in [0, 1]: ``shift * u / (1 + (shift - 1) * u)``."""
    u = np.asarray(u, dtype=np.float64)
    return shift * u / (1.0 + (shift - 1.0) * u)


def sample_target_timestep(rng: np.random.Generator, shift: float) -> float:
    """A training timestep (0..1000) for target tokens: uniform ``u`` through the shift."""
    return float(1000.0 * shift_sigma(rng.uniform(0.0, 1.0), shift))


def sample_cache_timesteps(rng: np.random.Generator, t_range: tuple[float, float], n: int) -> np.ndarray:
    """``n`` timesteps uniform in ``t_range`` (0..1000), e.g. the model's ``shot_cache_t_range``."""
    lo, hi = t_range
    return rng.uniform(lo, hi, size=n)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """``x_t`` for clean latents ``x0`` at ``timestep`` (0..1000), broadcast from the leading dims."""
    sigma = (timestep.to(x0.device, torch.float32) / 1000.0).reshape(
        *timestep.shape, *([1] * (x0.ndim - timestep.ndim))
    )
    return ((1.0 - sigma) * x0.float() + sigma * noise.float()).to(x0.dtype)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching regression target ``noise - x0``."""
    return noise - x0
