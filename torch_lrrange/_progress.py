"""Sweep progress: tqdm when installed, a plain line otherwise, silent off a terminal.

:class:`~torch_lrrange.RangeTest` calls :meth:`Progress.update` once per window
of ``check_every`` points, with values the sweep has already read on the host
for its divergence test: showing progress never adds a device sync.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ._checks import check_choice
from ._optional import install_hint

__all__ = ["BACKENDS", "Progress"]

BACKENDS = ("auto", "tqdm", "plain")
_BAR_WIDTH = 24


class Progress:
    """Shows step, LR and smoothed loss of a sweep.

    Args:
        total: points in the whole sweep (``num_steps * repeats``).
        enabled: True / False, or None (default) to show it only when ``stream``
            is a terminal. Nothing is shown off rank 0 (``rank_zero=False``).
        stream: where to write. Default ``sys.stderr``.
        backend: ``"tqdm"``, ``"plain"`` (a one-line text bar redrawn in place),
            or ``"auto"`` (default): tqdm when it is installed, else plain.
    """

    def __init__(
        self,
        total: int,
        enabled: bool | None = None,
        rank_zero: bool = True,
        stream: Any = None,
        backend: str = "auto",
    ) -> None:
        backend = check_choice("backend", backend, BACKENDS)
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        self.enabled = bool(enabled) and rank_zero
        self.total = total
        self.position = 0
        self._bar: Any = None
        self._width = 0
        if self.enabled and backend != "plain":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if backend == "tqdm":
                    raise ImportError(
                        f"tqdm is needed for backend='tqdm'; install it with: {install_hint('progress')}"
                    ) from None
            else:
                # mininterval=0: updates come once per window of >= 8 optimizer steps, so every one is drawn.
                self._bar = tqdm(
                    total=total,
                    desc="LR range test",
                    unit="step",
                    file=self.stream,
                    leave=False,
                    dynamic_ncols=True,
                    mininterval=0,
                )

    @property
    def backend(self) -> str | None:
        """``"tqdm"`` or ``"plain"`` while shown, None when silent."""
        if not self.enabled:
            return None
        return "tqdm" if self._bar is not None else "plain"

    def resize(self, total: int) -> None:
        """Change the number of points in the whole run (the default confirmation sizes its runs after the sweep)."""
        self.total = max(total, self.position)
        if self.enabled and self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def update(self, position: int, lr: float, smoothed: float, phase: str = "") -> None:
        """Show that ``position`` points are done; ``lr`` is the current LR, ``smoothed`` the smoothed loss.

        ``phase``: what runs now, shown before them (``"confirming 2/6"``); empty for the sweep.
        """
        if not self.enabled:
            return
        position = max(self.position, min(position, self.total))
        loss = f"{smoothed:.4g}" if math.isfinite(smoothed) else "nan"
        what = f"{phase}  " if phase else ""
        if self._bar is not None:
            self._bar.set_postfix_str(f"{what}lr={lr:.3g} loss={loss}", refresh=False)
            self._bar.update(position - self.position)
        else:
            done = round(_BAR_WIDTH * position / self.total) if self.total else _BAR_WIDTH
            line = (
                f"LR range test [{'#' * done}{'.' * (_BAR_WIDTH - done)}] "
                f"{position}/{self.total}  {what}lr={lr:.3g}  loss={loss}"
            )
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)
        self.position = position

    def close(self) -> None:
        """Remove the bar (tqdm) or end the line (plain); later updates are ignored."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False
