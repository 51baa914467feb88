"""Scalar logs of a training run: TensorBoard event files in ``<out_dir>/tensorboard`` and, when asked for
(``log.wandb``), Weights & Biases. Only rank 0 writes; other ranks get a ``RunLog`` that does nothing.

Tags: ``loss/all`` and ``loss/<cache mode>`` (mean over the log window), ``lr``, ``grad_norm``,
``tokens_per_s`` (model tokens: target plus caches, all ranks), ``samples_per_s`` (all ranks), and
``val/loss/all``, ``val/loss/<cache mode>`` from validation.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from curation.errors import ConfigError

from .config import TrainConfig

TENSORBOARD_DIR = "tensorboard"


def check_loggers(cfg: TrainConfig) -> None:
    """Raise ``ConfigError`` at start when a logger that is asked for is not installed."""
    if cfg.log.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.wandb=true but wandb is not installed: `pip install wandb`, or set log.wandb=false")
    if cfg.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "log.tensorboard=true but tensorboard is not installed: `pip install tensorboard`, or set "
            "log.tensorboard=false"
        )


class RunLog:
    """Writes scalars at an optimizer step to the configured loggers (rank 0 only).

    ``start_step`` is the step the run starts or resumes from: TensorBoard events logged after it by an
    interrupted run are purged, so a resumed run's curves have no duplicate points."""

    def __init__(self, cfg: TrainConfig, rank: int, start_step: int = 0):
        self.writer = self.wandb = None
        if rank != 0:
            return
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(cfg.out_dir, TENSORBOARD_DIR), purge_step=start_step + 1)
        if cfg.log.wandb:
            import wandb

            self.wandb = wandb.init(
                project=cfg.log.wandb_project,
                name=os.path.basename(os.path.abspath(cfg.out_dir)),
                dir=cfg.out_dir,
                config=cfg.model_dump(mode="json"),
                resume="allow",
                id=_wandb_id(cfg.out_dir),
            )

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and k != "step"}
        if self.writer is not None:
            for tag, value in numbers.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_id(out_dir: str) -> str:
    """A wandb run id kept in the run folder, so a resumed training run continues the same wandb run."""
    path = os.path.join(out_dir, "wandb_id.txt")
    if not os.path.exists(path):
        import uuid

        os.makedirs(out_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(uuid.uuid4().hex[:16])
    with open(path) as f:
        return f.read().strip()
