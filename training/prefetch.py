"""Background sample prefetch: a thread reads latent shards and builds the next micro-batches (as pinned
host tensors on CUDA) while the GPU trains on the current ones.

The thread drives the same ``BatchStream``, in the same order, with the same optimizer step per batch as the
loop would, so prefetching changes no sample. It runs ahead of the loop, so ``state`` and ``pending`` are the
stream position after the last batch *handed out* (what a checkpoint must save), not the thread's own.
"""

from __future__ import annotations

import copy
import queue
import threading

import numpy as np
import torch

from .batching import BatchStream
from .data import StreamState, TrainingSample

FIELDS = ("target", "temporal", "shot_cache", "text", "timestep", "temporal_timestep", "shot_timesteps")


def batch_tensors(samples: list[TrainingSample], pin: bool = False) -> dict[str, torch.Tensor]:
    """float32 CPU tensors of ``B`` samples of one layout (pinned when ``pin``), the fields of
    ``flow_matching_loss``'s batch: target (B, C, F, H, W), temporal (B, C, Fh, H, W), shot_cache
    (B, K, C, 1, H, W), text (B, text_len, D), timestep (B,), temporal_timestep (B,), shot_timesteps (B, K)."""
    out = {}
    for name in FIELDS:
        t = torch.from_numpy(np.stack([np.asarray(getattr(s, name), dtype=np.float32) for s in samples]))
        out[name] = t.pin_memory() if pin else t
    return out


def sample_tensors(sample: TrainingSample, pin: bool = False) -> dict[str, torch.Tensor]:
    """``batch_tensors`` of one sample (batch dimension of one)."""
    return batch_tensors([sample], pin)


class PrefetchedStream:
    """``next(step)`` returns ``(samples, tensors)`` like building them in place, ``depth`` batches ahead.

    ``start_step`` is the optimizer step of the first batch and ``per_step`` the batches per step (the
    loop's ``grad_accum``); a call with another step than the one the batch was built for raises. Errors
    of the thread (e.g. a scene that cannot be read) are raised by ``next``. ``close()`` stops the thread."""

    def __init__(self, stream: BatchStream, start_step: int, per_step: int, depth: int, pin: bool = False):
        self.stream, self.depth, self.pin = stream, depth, pin
        self.state: StreamState = copy.deepcopy(stream.state)
        self.pending: list[TrainingSample] = stream.pending
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start_step, per_step), daemon=True, name="prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, step: int, per_step: int) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                samples = self.stream.next(step)
                position = (copy.deepcopy(self.stream.state), self.stream.pending)
                item = (step, samples, batch_tensors(samples, self.pin), position)
            except BaseException as exc:  # handed to the loop, which raises it
                self._put(exc)
                return
            if not self._put(item):
                return
            n += 1
            step += n % per_step == 0

    def next(self, step: int) -> tuple[list[TrainingSample], dict[str, torch.Tensor]]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        built_for, samples, tensors, (self.state, self.pending) = item
        if built_for != step:
            raise RuntimeError(f"prefetched batch was built for step {built_for}, requested at step {step}")
        return samples, tensors

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
