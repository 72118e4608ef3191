"""Plots of a ``RangeTestResult`` (matplotlib, optional). Draws only: no analysis here."""

from __future__ import annotations

import os
import textwrap
from typing import Any

import numpy as np

from ._files import save_figure
from ._optional import require

__all__ = ["plot_grid", "plot_result"]


def _limits(raw: np.ndarray, smoothed: np.ndarray) -> tuple[float, float] | None:
    """y-limits that show the descent in full and cut off the blow-up after the minimum."""
    finite = smoothed[np.isfinite(smoothed)]
    if not finite.size:
        return None
    raw = raw[np.isfinite(raw)]
    low = float(finite.min())
    if raw.size:
        low = min(low, float(np.percentile(raw, 2)))  # a few noisy dips may fall below
    high = float(max(finite[0], finite.min()))
    pad = 0.1 * (high - low or abs(high) or 1.0)
    return low - pad, high + 3 * pad


def plot_result(
    result: Any,
    ax: Any = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    *,
    all_ranks: bool = False,
) -> Any:
    """Loss against LR on a log axis: raw and smoothed curves, suggestion, bounds, divergence.

    Draws on ``ax`` (a new figure when None), saves to ``path`` when given
    (under ``torch.distributed``: on rank 0 only, unless ``all_ranks=True``;
    the figure is then closed if this function created it), returns the axes.
    ``title`` defaults to a one-line summary of the result.
    """
    fig, ax, created = _axes(ax, path)
    lrs = np.asarray(result.lrs, dtype=np.float64)
    raw = np.asarray(result.losses, dtype=np.float64)
    smoothed = np.asarray(result.smoothed, dtype=np.float64)
    ax.plot(lrs, raw, color="0.65", lw=1, label="loss (raw, per step)")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="loss (smoothed)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="major", color="0.9", lw=0.8)
    confirmed = result.confirmation
    curve_lr = result.suggestion.lr
    if curve_lr is not None:
        label = f"lr {curve_lr:.2g} (method {result.method!r})" + (", the curve's" if confirmed is not None else "")
        ax.axvline(curve_lr, color="C3" if confirmed is None else "0.4", ls="--", lw=1.5, label=label)
        if lrs.size:
            y = np.interp(np.log10(curve_lr), np.log10(lrs), smoothed)
            ax.plot([curve_lr], [y], "o", color="C3" if confirmed is None else "0.4", ms=6)
    if confirmed is not None:
        runs = f"best of {len(confirmed.candidates)} runs of {confirmed.steps} steps, {confirmed.by} loss"
        ax.axvline(confirmed.lr, color="C3", ls="-", lw=2, label=f"confirmed lr {confirmed.lr:.2g} ({runs})")
        ax.plot(
            confirmed.candidates,
            [0.0] * len(confirmed.candidates),  # on the x axis: x in data, y in axes units
            "^",
            color="C3",
            ms=5,
            clip_on=False,
            transform=ax.get_xaxis_transform(),
            label="candidates tried",
        )
    if result.usable:
        lo, hi, lr = result.min_lr, result.max_lr, result.lr
        ax.axvspan(lo, hi, color="C2", alpha=0.15, label=f"bounds: min_lr {lo:.2g}, max_lr {hi:.2g}")
        what = "confirmed lr" if confirmed is not None else "suggested lr"
        summary = f"{what} {lr:.3g}, bounds {lo:.3g} to {hi:.3g}, confidence {result.confidence:.2f}"
    else:
        summary = "no usable suggestion"
    if result.diverged and lrs.size:
        ax.axvline(lrs[-1], color="k", ls=":", lw=1.5, label=f"diverged after {lrs[-1]:.2g}")
    limits = _limits(raw, smoothed)
    if limits is not None:
        ax.set_ylim(*limits)
    if title is None:
        title = "LR range test: " + summary
        if result.warnings:
            title += "\n" + textwrap.fill("; ".join(result.warnings), 110)
    return _finish(fig, ax, title, path, created, all_ranks)


def plot_grid(
    results: list[Any],
    labels: list[str],
    chosen: int | None,
    ax: Any = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    *,
    all_ranks: bool = False,
) -> Any:
    """Smoothed curves of a hyperparameter grid overlaid on one log-LR axis, the ``chosen`` one marked.

    ``results[i]`` is drawn with legend ``labels[i]``; the chosen curve is drawn
    thick with a marker at its ``lr`` (``chosen=None``: none is). Curves without
    a suggestion are drawn dashed, and those without points are only listed in
    the legend. Draws on ``ax`` (a new figure when None), saves to ``path`` when
    given (under ``torch.distributed``: on rank 0 only, unless ``all_ranks=True``;
    the figure is then closed if this function created it), returns the axes.
    """
    fig, ax, created = _axes(ax, path)
    lows, highs = [], []
    for i, (result, label) in enumerate(zip(results, labels)):
        lrs = np.asarray(result.lrs, dtype=np.float64)
        smoothed = np.asarray(result.smoothed, dtype=np.float64)
        color = f"C{i % 10}"
        if i == chosen:
            label += f" (chosen: lr {result.lr:.2g})"
        elif not result.usable:
            label += " (no suggestion)"
        if not lrs.size:
            ax.plot([], [], color=color, ls=":", label=label)
            continue
        ax.plot(
            lrs, smoothed, color=color, lw=2.6 if i == chosen else 1.3, ls="-" if result.usable else "--", label=label
        )
        if i == chosen:
            ax.plot([result.lr], [np.interp(np.log10(result.lr), np.log10(lrs), smoothed)], "o", color=color, ms=7)
        limits = _limits(np.asarray(result.losses, dtype=np.float64), smoothed)
        if limits is not None:
            lows.append(limits[0])
            highs.append(limits[1])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.grid(True, which="major", color="0.9", lw=0.8)
    if lows:
        ax.set_ylim(min(lows), max(highs))
    if title is None:
        title = "LR range tests over a hyperparameter grid: " + (
            "no usable curve" if chosen is None else f"chosen {labels[chosen]}"
        )
    return _finish(fig, ax, title, path, created, all_ranks)


def _axes(ax: Any, path: Any) -> tuple[Any, Any, bool]:
    """``(figure, axes, created)``: ``ax`` and its figure, or a new figure (off-screen when saving to ``path``)."""
    matplotlib = require("matplotlib", "plot")
    if ax is not None:
        return ax.figure, ax, False
    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    return fig, ax, True


def _finish(fig: Any, ax: Any, title: str, path: Any, created: bool, all_ranks: bool) -> Any:
    """Title and legend; save to ``path`` (rank 0 only unless ``all_ranks``), closing a figure made here."""
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    if path is not None:
        from ._distributed import is_rank_zero

        if all_ranks or is_rank_zero():
            save_figure(fig, path, dpi=110, bbox_inches="tight")
        if created:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return ax
