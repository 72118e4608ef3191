"""When has a sweep diverged? The rule, and its application to a running sweep.

The rule (:class:`DivergenceRule`): a point diverges when its loss is not finite,
or when the bias-corrected EMA of the loss (factor ``beta``, default 0.9) exceeds
``best + (threshold - 1) * |best|`` (``threshold`` times the best EMA so far for
positive losses; default threshold 4).

During a sweep, losses reach the host in windows of ``check_every`` points
(:class:`WindowReader`): one device-to-host read per window, through
:func:`to_host`, the only host read the sweep makes. On CUDA a window's read is
lagged to the next window (a non-blocking copy into pinned memory), so the host
never waits for the device; the sweep may then run up to ``2 * check_every - 1``
steps past the first diverged point, and those points are dropped.
"""

from __future__ import annotations

import math

import torch

__all__ = ["DEFAULT_BETA", "DEFAULT_THRESHOLD", "DivergenceRule", "WindowReader", "to_host"]

DEFAULT_THRESHOLD = 4.0
DEFAULT_BETA = 0.9


def to_host(tensor: torch.Tensor) -> list[float]:
    """The one place a sweep reads device values on the host (tests count these calls)."""
    return tensor.tolist()


class DivergenceRule:
    """Streaming divergence test; feed losses in order with :meth:`update`."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, beta: float = DEFAULT_BETA) -> None:
        self.threshold = threshold
        self.beta = beta
        self.count = 0
        self.smoothed = math.nan
        self._avg = 0.0
        self._best = math.inf

    def update(self, loss: float) -> bool:
        """Take the next loss; True if this point diverged."""
        self.count += 1
        if not math.isfinite(loss):
            return True
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        self.smoothed = self._avg / (1 - self.beta**self.count)
        if not math.isfinite(self.smoothed):
            return True
        if self.smoothed > self._best + (self.threshold - 1) * abs(self._best):
            return True
        self._best = min(self._best, self.smoothed)
        return False


class WindowReader:
    """Brings windows of recorded losses to the host and applies :class:`DivergenceRule`.

    ``losses`` holds every value read so far; ``first_bad`` the index of the first
    diverged point once seen.
    """

    def __init__(self, rule: DivergenceRule) -> None:
        self.rule = rule
        self.losses: list[float] = []
        self.first_bad: int | None = None
        self._pending: tuple[torch.Tensor, torch.cuda.Event] | None = None

    def push(self, window: torch.Tensor) -> None:
        """Queue a 1-d window; on CPU it is read now, on CUDA at the next push or :meth:`drain`."""
        if window.device.type == "cuda":
            host = torch.empty(window.shape, dtype=window.dtype, pin_memory=True)
            host.copy_(window, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.drain()
            self._pending = (host, event)
        else:
            self.drain()
            self._read(window)

    def drain(self) -> None:
        """Read the queued window, waiting for its copy if needed."""
        if self._pending is not None:
            host, event = self._pending
            self._pending = None
            event.synchronize()
            self._read(host)

    def _read(self, window: torch.Tensor) -> None:
        for value in to_host(window):
            if self.first_bad is None and self.rule.update(value):
                self.first_bad = len(self.losses)
            self.losses.append(value)
