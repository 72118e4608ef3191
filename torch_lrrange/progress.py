"""Sweep progress: tqdm when installed, a plain line otherwise, silent off a terminal."""

from __future__ import annotations

import math
import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Shows step, LR and smoothed loss; updated once per host read, never per step.

    ``enabled=None`` shows it only when stderr is a terminal; nothing is shown
    off rank 0.
    """

    def __init__(self, total: int, enabled: bool | None = None, rank_zero: bool = True, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and rank_zero
        self.total = total
        self.position = 0
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(total=total, desc="LR range test", unit="step", file=self.stream, leave=False)

    def update(self, position: int, lr: float, smoothed: float) -> None:
        if not self.enabled:
            return
        loss = "nan" if not math.isfinite(smoothed) else f"{smoothed:.4g}"
        if self._bar is not None:
            self._bar.update(position - self.position)
            self._bar.set_postfix_str(f"lr={lr:.3g} loss={loss}", refresh=False)
        else:
            self.stream.write(f"\rLR range test {position}/{self.total}  lr={lr:.3g}  loss={loss}")
            self.stream.flush()
        self.position = position

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False
