"""When has a sweep diverged? The rule, and its application to a running sweep.

The rule (:class:`DivergenceRule`): a point diverges when its loss is not finite,
or when the bias-corrected EMA of the loss (factor ``beta``, default 0.9) exceeds
``best + (threshold - 1) * |best|`` (``threshold`` times the best EMA so far for
positive losses; default threshold 4).

During a sweep, losses reach the host in windows of ``check_every`` points
(:class:`WindowReader`): one read per window, through :func:`to_host`, the only
host read the sweep makes. On an accelerator the window is one device tensor and
one device-to-host copy; on CUDA its read is lagged to the next window (a
non-blocking copy into pinned memory), so the host never waits for the device;
the sweep may then run up to ``2 * check_every - 1`` steps past the first
diverged point, and those points are dropped. CPU losses already sit in host
memory, so a CPU window (one process) is read value by value, with nothing to
wait for; the sweep then stops at the end of the window holding the first
diverged point (at most ``check_every - 1`` steps past it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_BETA", "DEFAULT_THRESHOLD", "DivergenceRule", "WindowReader", "divergence_index", "to_host"]

DEFAULT_THRESHOLD = 4.0
DEFAULT_BETA = 0.9


def to_host(window: torch.Tensor | list[Any]) -> list[float]:
    """The one place a sweep reads loss values on the host (tests count these calls).

    ``window``: a 1-d tensor (one read), or a list of CPU scalar tensors and
    floats, whose values are in host memory already (no device to wait for).
    """
    if isinstance(window, torch.Tensor):
        return window.tolist()
    return [float(v) for v in window]


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
        return self.update_many((loss,)) is not None

    def update_many(self, losses: list[float] | tuple[float, ...]) -> int | None:
        """Take losses in order up to the first that diverged; its index in ``losses``, or None."""
        # One loop over a window with locals: this runs once per host read of a sweep.
        beta, weight, margin, isfinite = self.beta, 1 - self.beta, self.threshold - 1, math.isfinite
        count, avg, best, smoothed = self.count, self._avg, self._best, self.smoothed
        limit = best + margin * abs(best)
        bad = None
        for i, loss in enumerate(losses):
            count += 1
            if not isfinite(loss):
                bad = i
                break
            avg = beta * avg + weight * loss
            smoothed = avg / (1 - beta**count)
            if not isfinite(smoothed) or smoothed > limit:
                bad = i
                break
            if smoothed < best:
                best = smoothed
                limit = best + margin * abs(best)
        self.count, self._avg, self._best, self.smoothed = count, avg, best, smoothed
        return bad


def divergence_index(losses: Any, threshold: float = DEFAULT_THRESHOLD, beta: float = DEFAULT_BETA) -> int:
    """Index of the first point that diverged, or ``len(losses)`` if none did.

    :class:`DivergenceRule` over the whole curve, the rule a running sweep
    applies window by window: where the curve is cut for analysis
    (:func:`torch_lrrange.analysis.suggest`), and the point at which a sweep stops.

    Example:
        >>> divergence_index([1.0, 0.9, 0.8, float("nan"), 0.5])
        3
    """
    values = [float(v) for v in np.asarray(losses, dtype=np.float64).reshape(-1)]
    first_bad = DivergenceRule(threshold, beta).update_many(values)
    return len(values) if first_bad is None else first_bad


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
        self._free: list[tuple[torch.Tensor, torch.cuda.Event]] = []  # read slots, reused by the next windows

    def push(self, window: torch.Tensor | list[Any]) -> None:
        """Queue a window (see :func:`to_host`); a CUDA tensor is read at the next push or :meth:`drain`, others now."""
        if isinstance(window, torch.Tensor) and window.device.type == "cuda":
            host, event = self._slot(window)
            host.copy_(window, non_blocking=True)
            event.record(torch.cuda.current_stream(window.device))
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
            self._free.append((host, event))

    def _slot(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
        """A pinned host buffer and an event for ``window``'s copy; two slots serve a whole sweep."""
        for i, (host, _) in enumerate(self._free):
            if host.shape == window.shape and host.dtype == window.dtype:
                return self._free.pop(i)
        return torch.empty(window.shape, dtype=window.dtype, pin_memory=True), torch.cuda.Event()

    def _read(self, window: torch.Tensor | list[Any]) -> None:
        values = to_host(window)
        if self.first_bad is None:
            bad = self.rule.update_many(values)
            if bad is not None:
                self.first_bad = len(self.losses) + bad
        self.losses.extend(values)
