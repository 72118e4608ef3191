"""Plots of a ``RangeTestResult`` (matplotlib, optional). Draws only: no analysis here."""

from __future__ import annotations

import os
from typing import Any

from ._optional import require

__all__ = ["plot_result"]


def plot_result(result: Any, ax: Any = None, path: str | os.PathLike[str] | None = None) -> Any:
    """Loss against LR on a log axis: raw and smoothed curves, suggestion, bounds, divergence.

    Draws on ``ax`` (a new figure when None), saves to ``path`` when given
    (the figure is then closed if this function created it), returns the axes.
    """
    matplotlib = require("matplotlib", "plot")
    created = ax is None
    if created:
        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
    else:
        fig = ax.figure
    ax.plot(result.lrs, result.losses, color="0.7", lw=1, label="loss (raw)")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=2, label="loss (smoothed)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    if result.usable:
        ax.axvspan(
            result.min_lr,
            result.max_lr,
            color="C2",
            alpha=0.15,
            label=f"bounds {result.min_lr:.2g} - {result.max_lr:.2g}",
        )
        ax.axvline(result.lr, color="C3", ls="--", label=f"lr {result.lr:.2g} ({result.method})")
    else:
        ax.set_title("no usable suggestion: " + "; ".join(result.warnings), fontsize=8)
    if result.diverged and len(result.lrs):
        ax.axvline(result.lrs[-1], color="k", ls=":", label="diverged")
    if len(result.losses):
        import numpy as np

        finite = result.smoothed[np.isfinite(result.smoothed)]
        if finite.size:
            low, high = float(finite.min()), float(max(finite[0], finite.min()))
            pad = 0.1 * (high - low or abs(high) or 1.0)
            ax.set_ylim(low - pad, high + 3 * pad)
    ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
        if created:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return ax
