"""Background sample prefetch: a thread reads latent shards and builds the next samples (as pinned host
tensors on CUDA) while the GPU trains on the current ones.

The thread drives the same ``SampleStream``, in the same order, with the same optimizer step per sample as the
loop would, so prefetching changes no sample. It runs ahead of the loop, so ``state`` is the stream position
after the last sample *handed out* (what a checkpoint must save), not the thread's own position.
"""

from __future__ import annotations

import copy
import queue
import threading

import numpy as np
import torch

from .data import SampleStream, StreamState, TrainingSample


def sample_tensors(sample: TrainingSample, pin: bool = False) -> dict[str, torch.Tensor]:
    """float32 CPU tensors with a batch dimension of one (pinned when ``pin``), the fields of
    ``flow_matching_loss``'s batch: target (1, C, F, H, W), temporal (1, C, Fh, H, W), shot_cache
    (1, K, C, 1, H, W), text (1, text_len, D), timestep (1,), temporal_timestep (1,), shot_timesteps (1, K)."""

    def t(x) -> torch.Tensor:
        out = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        return out.pin_memory() if pin else out

    return {
        "target": t(sample.target),
        "temporal": t(sample.temporal),
        "shot_cache": t(sample.shot_cache),
        "text": t(sample.text),
        "timestep": t(sample.timestep),
        "temporal_timestep": t(sample.temporal_timestep),
        "shot_timesteps": t(sample.shot_timesteps),
    }


class PrefetchedStream:
    """``next(step)`` returns ``(sample, tensors)`` like building them in place, ``depth`` samples ahead.

    ``start_step`` is the optimizer step of the first sample and ``per_step`` the samples per step (the
    loop's ``grad_accum``); a call with another step than the one the sample was built for raises. Errors
    of the thread (e.g. a scene that cannot be read) are raised by ``next``. ``close()`` stops the thread."""

    def __init__(self, stream: SampleStream, start_step: int, per_step: int, depth: int, pin: bool = False):
        self.stream, self.depth, self.pin = stream, depth, pin
        self.state: StreamState = copy.deepcopy(stream.state)
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
                sample = self.stream.next(step)
                item = (step, sample, sample_tensors(sample, self.pin), copy.deepcopy(self.stream.state))
            except BaseException as exc:  # handed to the loop, which raises it
                self._put(exc)
                return
            if not self._put(item):
                return
            n += 1
            step += n % per_step == 0

    def next(self, step: int) -> tuple[TrainingSample, dict[str, torch.Tensor]]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        built_for, sample, tensors, state = item
        if built_for != step:
            raise RuntimeError(f"prefetched sample was built for step {built_for}, requested at step {step}")
        self.state = state
        return sample, tensors

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
