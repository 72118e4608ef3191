"""One sweep of the LR: the schedule, the window of recorded losses, their host reads, the stop.

A :class:`Sweep` is what one repeat of a :class:`~torch_lrrange.RangeTest`
runs. Each :meth:`Sweep.push` takes the loss of the optimizer step just taken
(kept on its device) and moves the LR to the next value of the schedule. Every
``check_every`` points the window of losses goes to the host in one read
(:class:`~torch_lrrange._divergence.WindowReader`) and the divergence rule
decides whether to stop. The sweep ends after ``num_steps`` points or at the
first window holding a diverged point; :meth:`Sweep.close` then returns every
loss read, also those past divergence: where the curve is cut is decided once,
by the analysis (:func:`torch_lrrange.analysis.suggest`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._distributed import LossReducer
from ._divergence import DEFAULT_BETA, DivergenceRule, WindowReader
from ._guard import GUARDED_KEYS, GroupGuard
from ._schedule import LRRangeScheduler

__all__ = ["Sweep", "reads_host_memory"]


def reads_host_memory(window: list[Any], has_floats: bool, world_size: int) -> bool:
    """Whether a window can be read value by value: its losses already sit in host memory, one process.

    Reading CPU losses waits for nothing, and staging them in a tensor first
    would cost more than the read itself. Accelerator windows, and every window
    averaged over ranks, are staged in one device tensor and read at once.
    """
    return world_size == 1 and (has_floats or window[0].is_cpu)


class Sweep:
    """One sweep from ``start_lr`` to ``end_lr`` over ``num_steps`` points (arguments already checked).

    ``on_window(step, lr, smoothed)`` is called after each host read, with
    values already on the host (progress display: no extra sync). The param
    groups' LR, ``momentum``/``betas`` and the ``hold`` keys are kept at the
    sweep's values before every optimizer step (:class:`~torch_lrrange._guard.GroupGuard`)
    until :meth:`close` or :meth:`release`.
    """

    def __init__(
        self,
        optimizer: Any,
        start_lr: float | list[float],
        end_lr: float | list[float],
        num_steps: int,
        mode: str,
        *,
        threshold: float,
        check_every: int,
        reducer: LossReducer,
        on_window: Callable[[int, float, float], None] | None = None,
        hold: tuple[str, ...] = (),
    ) -> None:
        self.scheduler = LRRangeScheduler(optimizer, start_lr, end_lr, num_steps, mode)
        self.lrs = self.scheduler.lrs
        self.num_steps = num_steps
        self.check_every = check_every
        self.reader = WindowReader(DivergenceRule(threshold, DEFAULT_BETA))
        self.window: list[Any] = []
        self.has_floats = False
        self.step = 0
        self.ended = False
        self._reducer = reducer
        self._on_window = on_window
        self._buffer: torch.Tensor | None = None  # one window of losses, on the loss's device
        self.guard = GroupGuard(optimizer, GUARDED_KEYS + hold)  # last: nothing after it can fail
        self.guard.expect(self.scheduler.current_lrs)

    @property
    def lr(self) -> float:
        """The LR of param group 0 for the next step."""
        return self.lrs[min(self.step, self.num_steps - 1)]

    @property
    def diverged(self) -> bool:
        """Whether a diverged point has been read."""
        return self.reader.first_bad is not None

    def push(self, loss: torch.Tensor | float) -> bool:
        """Add the loss of the step just taken (a detached 0-dim tensor or a float), move the LR on.

        Returns True when this point ended the sweep (``num_steps`` reached, or divergence read).
        """
        self.window.append(loss)
        self.step += 1
        guard = self.guard
        guard.recorded(stacklevel=3)  # a warning points at the user's record() call
        if self.step >= self.num_steps:
            self.ended = True
            return True
        self.scheduler.step()
        guard.row = self.scheduler.current_lrs
        if guard.tensor_lr:
            guard.expect(guard.row)
        if len(self.window) >= self.check_every:
            self.flush()
            if self.reader.first_bad is not None:
                self.ended = True
        return self.ended

    def flush(self) -> None:
        """Hand the window's losses to the reader: read from host memory, or staged on their device."""
        window, self.window = self.window, []
        has_floats, self.has_floats = self.has_floats, False
        if not window:
            return
        if reads_host_memory(window, has_floats, self._reducer.world_size):
            self.reader.push(window)
        else:
            self.reader.push(self._reducer.average(self._stage(window, has_floats)))
        if self._on_window is not None:
            self._on_window(self.step, self.lr, self.reader.rule.smoothed)

    def close(self) -> list[float]:
        """Read what is still pending; every loss of the sweep, in order (also past divergence)."""
        self.release()
        self.flush()
        self.reader.drain()
        return self.reader.losses

    def release(self) -> None:
        """Stop guarding the param groups (idempotent; also after an error)."""
        self.guard.close()

    def _stage(self, window: list[Any], has_floats: bool) -> torch.Tensor:
        """The window as a 1-d float32 tensor on the losses' device (for a collective, or an accelerator)."""
        if has_floats:
            device = self._buffer.device if self._buffer is not None else torch.device("cpu")
            return torch.tensor([float(v) for v in window], dtype=torch.float32, device=device)
        # One stack per window into a buffer preallocated on the loss's device: no op per
        # step, and stream-ordered on CUDA, so the pending host copy of the last window stays valid.
        buffer = self._buffer
        if buffer is None or buffer.device != window[0].device:
            buffer = self._buffer = torch.empty(self.check_every, dtype=torch.float32, device=window[0].device)
        segment = buffer if len(window) == len(buffer) else buffer[: len(window)]
        if window[0].dtype == torch.float32:
            torch.stack(window, out=segment)
        else:
            segment.copy_(torch.stack(window))
        return segment
