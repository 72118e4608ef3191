"""fastai's four LR suggestions, read off a recorded range-test curve, and the benchmark's scoring.

fastai (``lr_find``, fastai 2.x) records the loss smoothed by a bias-corrected
EMA (beta 0.98), stops once the smoothed loss exceeds 4 times its best, drops
the first tenth of the sweep and its last 5 points, and then reads one of:

* ``valley`` (its default): the longest decreasing subsequence of the smoothed
  losses, and the LR halfway into it (a third plus a sixth of its length);
* ``steep``: the steepest fall of the smoothed loss against log(lr);
* ``minimum``: the LR of the smallest smoothed loss, divided by 10;
* ``slide``: an interval slide rule on the loss gradient (per index): a window
  of 15 points slides left from the end of the curve while the gradients at its
  two ends differ by more than 0.005; the LR at its left end when it stops.

They are implemented here from those descriptions (fastai is not a dependency)
and applied to the raw losses this library recorded, so every rule reads the
same sweep.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from _quality_tasks import CEILING_NOTE, CEILING_ROWS, PROTOCOLS, Cache, Task, grid_search

from torch_lrrange import UnusableCurveError, analyze

FASTAI_RULES = ("valley", "steep", "minimum", "slide")


def fastai_curve(lrs: np.ndarray, losses: np.ndarray, num_it: int) -> tuple[np.ndarray, np.ndarray]:
    """The curve fastai reads: EMA-smoothed (0.98, bias-corrected), stopped at 4x the best, trimmed."""
    smoothed, avg, best = [], 0.0, math.inf
    for i, loss in enumerate(losses):
        avg = 0.98 * avg + 0.02 * float(loss)
        value = avg / (1 - 0.98 ** (i + 1))
        smoothed.append(value)
        if not math.isfinite(value) or value > 4 * best:
            break
        best = min(best, value)
    y = np.asarray(smoothed, dtype=np.float64)
    x = np.asarray(lrs[: len(y)], dtype=np.float64)
    x, y = x[num_it // 10 : len(y) - 5], y[num_it // 10 : len(y) - 5]
    finite = np.isfinite(y)
    if not finite.all():
        cut = int(np.argmin(finite))
        x, y = x[:cut], y[:cut]
    return x, y


def _valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    n = len(losses)
    length = [1] * n  # longest decreasing subsequence ending at each point
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[i] < length[j] + 1:
                length[i] = length[j] + 1
        if length[i] > length[best_end]:
            best_end = i
    start = best_end - length[best_end]
    third = (best_end - start) / 3
    return float(lrs[max(0, start + int(third) + int(third / 2))])


def _steep(lrs: np.ndarray, losses: np.ndarray) -> float:
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def _minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    return float(lrs[int(np.argmin(losses))]) / 10


def _slide(lrs: np.ndarray, losses: np.ndarray, window: int = 15, thresh: float = 0.005) -> float:
    grad = np.gradient(losses)
    right, left = -1, -1 - window
    lr = float(lrs[left])
    while left >= -len(losses) and abs(grad[right] - grad[left]) > thresh:
        lr = float(lrs[left])
        right -= 1
        left -= 1
    return lr


def fastai_suggestions(lrs: np.ndarray, losses: np.ndarray, num_it: int) -> dict[str, float | None]:
    """``{rule: lr}`` for fastai's four rules on a raw curve (None where the trimmed curve is too short)."""
    x, y = fastai_curve(np.asarray(lrs), np.asarray(losses), num_it)
    out: dict[str, float | None] = {}
    for name, rule in (("valley", _valley), ("steep", _steep), ("minimum", _minimum), ("slide", _slide)):
        out[f"fastai-{name}"] = rule(x, y) if len(y) > 16 else None
    return out


# --- scoring ---------------------------------------------------------------------------------


def band(kind: str, scores: np.ndarray) -> np.ndarray:
    """Grid LRs within 1 accuracy point (2% of the loss) of the best, as an interval (noise makes holes)."""
    best = float(np.max(scores))
    good = scores >= (best - 1.0 if kind == "accuracy" else best - 0.02 * abs(best))
    idx = np.flatnonzero(good)
    out = np.zeros_like(good)
    out[idx.min() : idx.max() + 1] = True
    return out


def regret(kind: str, best: float, got: float) -> float:
    """Accuracy points lost, or % of the best loss lost (scores are -loss), capped at 100 (a blow-up)."""
    if kind == "accuracy":
        return best - got
    return min(100.0, 100.0 * (best - got) / abs(best))


def interpolated(grid: np.ndarray, scores: np.ndarray, lr: float) -> float:
    """The score of training at ``lr``, interpolated in log10(lr) between grid LRs.

    Beyond the grid: the lowest grid LR's score below it, the worst grid score above it.
    """
    x = np.log10(grid)
    v = math.log10(lr)
    if v > x[-1]:
        return float(np.min(scores))
    return float(np.interp(v, x, scores))


def case(kind: str, grid: np.ndarray, scores: np.ndarray, lr: float | None) -> dict[str, float | bool]:
    """How ``lr`` fares against a ground-truth grid: in band, |log10| to the best and to the band, regret."""
    best_i = int(np.argmax(scores))
    best = float(scores[best_i])
    good = band(kind, scores)
    log_grid = np.log10(grid)
    lo, hi = log_grid[good].min(), log_grid[good].max()
    if lr is None:
        return {
            "in_band": False,
            "dist": float(log_grid[-1] - log_grid[0]),
            "band_dist": float(log_grid[-1] - log_grid[0]),
            "regret": regret(kind, best, float(np.min(scores))),
            "none": True,
        }
    v = math.log10(lr)
    nearest = int(np.argmin(np.abs(log_grid - v)))
    return {
        "in_band": bool(good[nearest]),
        "dist": abs(v - log_grid[best_i]),
        "band_dist": max(0.0, lo - v, v - hi),
        "regret": regret(kind, best, interpolated(grid, scores, lr)),
        "none": False,
    }


def ours(raw: dict[str, list[float]], method: str, **kwargs: Any) -> dict[str, float | None]:
    """``{protocol: lr}`` of one of our methods on a raw curve (None where it gives no LR)."""
    result = analyze(raw["lrs"], raw["losses"], method=method, **kwargs)
    try:
        return {"constant": result.lr, "onecycle": result.max_lr}
    except UnusableCurveError:
        return {"constant": None, "onecycle": None}


#: ``{method: [case, ...]}``: each method's scored cases (:func:`case`, with task, protocol and lr added).
Rows = dict[str, list[dict[str, Any]]]


def print_table(title: str, rows: Rows, extra: dict[str, str] | None = None) -> None:
    """One line per method: share in band, distances to the best LR and the band, mean regret; ``extra`` notes."""
    print(f"\n{title}")
    print(
        f"{'method':22s} {'in-band':>8s} {'mean|dlog10|':>13s} {'max|dlog10|':>12s} {'>1 decade':>10s} "
        f"{'to band':>8s} {'regret':>7s}"
    )
    for method, cs in rows.items():
        inband = np.mean([c["in_band"] for c in cs])
        dist = [c["dist"] for c in cs]
        far = sum(d > 1.0 for d in dist)
        note = f"  {extra[method]}" if extra and method in extra else ""
        print(
            f"{method:22s} {inband:8.0%} {np.mean(dist):13.2f} {np.max(dist):12.2f} {far:6d}/{len(cs):<3d} "
            f"{np.mean([c['band_dist'] for c in cs]):8.2f} {np.mean([c['regret'] for c in cs]):7.2f}{note}"
        )


def print_cases(task: Task, gt: dict[str, np.ndarray], rows: Rows, methods: Iterable[str]) -> None:
    """Each protocol's best grid LR and band, then where each of ``methods`` landed (``--verbose``)."""
    grid = task.grid()
    for protocol in PROTOCOLS:
        scores = gt[protocol]
        good = grid[band(task.kind, scores)]
        print(
            f"  {task.name:24s} {protocol:8s} best={grid[int(np.argmax(scores))]:.1e} "
            f"band=[{good.min():.1e}, {good.max():.1e}]"
        )
        for method in methods:
            c = next(c for c in rows[method] if c["task"] == task.name and c["protocol"] == protocol)
            lr = "-" if c["lr"] is None else f"{c['lr']:.2e}"
            print(f"      {method:20s} lr={lr:9s} in={c['in_band']!s:5s} dist={c['dist']:.2f} regret={c['regret']:.2f}")


def score_task(task: Task, gt: dict[str, np.ndarray], methods: dict[str, dict[str, float | None]], rows: Rows) -> None:
    """Score every method's ``{protocol: lr}`` for ``task`` against ``gt``, one case each, into ``rows``."""
    for method, by_protocol in methods.items():
        for protocol in PROTOCOLS:
            c = case(task.kind, task.grid(), gt[protocol], by_protocol[protocol])
            c.update(task=task.name, protocol=protocol, lr=by_protocol[protocol])
            rows.setdefault(method, []).append(c)


#: The row of what ``range_test(model, opt, loader, loss_fn)`` gives at its defaults, confirmation included.
DEFAULTS = "range_test() defaults"


def compare(
    all_tasks: list[Task],
    gts: dict[str, dict[str, np.ndarray]],
    defaults: Callable[[Task, int], dict[str, float | None]],
    args: argparse.Namespace,
    *,
    splits: tuple[str, ...],
    sweep_lengths: list[int],
    title: str,
    names: tuple[str, ...],
    methods_of: Callable[[Task, int], dict[str, dict[str, float | None]]],
) -> None:
    """One table per split and sweep length: the defaults, ``methods_of(task, k)`` (rows ``names``), the grid searches.

    ``defaults(task, k)``: ``{protocol: lr}`` of ``range_test`` at its defaults, asked only for ``sweep_lengths``;
    ``title`` is formatted with ``split``, ``n`` (tasks) and ``k``.
    """
    train_cache = Cache("trained.json")
    for split in splits if args.split == "all" else (args.split,):
        split_tasks = [t for t in all_tasks if t.split == split]
        for k in sweep_lengths:
            rows: Rows = {}
            for task in split_tasks:
                methods = {DEFAULTS: defaults(task, k), **methods_of(task, k)}
                methods.update(grid_search(train_cache, task))
                score_task(task, gts[task.name], methods, rows)
                if args.verbose:
                    print_cases(task, gts[task.name], rows, (DEFAULTS, *names))
            print_table(
                title.format(split=split, n=len(split_tasks), k=k), rows, dict.fromkeys(CEILING_ROWS, CEILING_NOTE)
            )
