"""Micro-batches of training samples bucketed by latent layout (``optim.micro_batch``).

Samples of one forward pass must have the same target shape, temporal-cache length and shot-cache size (the
token sequence layout). ``BatchStream`` draws samples from a ``SampleStream`` in order and files them into
buckets by that layout; a batch is a bucket that reached ``size`` samples, or, when more than
``max_pending`` samples wait (rare layouts), the fullest bucket as it is. The samples still waiting are part
of the stream position (saved in checkpoints, ``pending``), so batches are a function of the stream position
and resume stays exact. With ``size=1`` every sample is its own batch, as without batching.
"""

from __future__ import annotations

from .data import SampleStream, StreamState, TrainingSample


def layout(sample: TrainingSample) -> tuple:
    """Target shape, temporal-cache shape and shot-cache shape: samples of one batch share it."""
    return tuple(sample.target.shape), tuple(sample.temporal.shape), tuple(sample.shot_cache.shape)


class BatchStream:
    """``next(step)`` returns a list of up to ``size`` samples of one layout (see module doc)."""

    def __init__(self, stream: SampleStream, size: int, max_pending: int | None = None):
        self.stream, self.size = stream, size
        self.max_pending = max_pending if max_pending is not None else 4 * size
        self._buckets: dict[tuple, list[tuple[int, TrainingSample]]] = {}  # layout -> (draw number, sample)
        self._drawn = 0

    @property
    def state(self) -> StreamState:
        return self.stream.state

    @state.setter
    def state(self, value: StreamState) -> None:
        self.stream.state = value

    @property
    def pending(self) -> list[TrainingSample]:
        """The waiting samples in the order they were drawn (refiled in this order, they rebuild the buckets)."""
        return [s for _, s in sorted((x for b in self._buckets.values() for x in b), key=lambda x: x[0])]

    @pending.setter
    def pending(self, samples: list[TrainingSample]) -> None:
        self._buckets = {}
        for sample in samples:
            self._file(sample)

    def _file(self, sample: TrainingSample) -> tuple:
        self._drawn += 1
        key = layout(sample)
        self._buckets.setdefault(key, []).append((self._drawn, sample))
        return key

    def next(self, step: int) -> list[TrainingSample]:
        """The next batch; samples drawn now get their cache mode from the curriculum at ``step``."""
        while True:
            if sum(len(b) for b in self._buckets.values()) >= self.max_pending:
                key = max(self._buckets, key=lambda k: len(self._buckets[k]))  # the oldest of the fullest
                return [s for _, s in self._buckets.pop(key)]
            key = self._file(self.stream.next(step))
            if len(self._buckets[key]) >= self.size:
                return [s for _, s in self._buckets.pop(key)]
