"""The confirmation phase: short runs at a few candidate LRs below the sweep's blow-up, the best kept.

A range test holds each LR for one step; the LR that trains best for a whole
run is a property of many steps. The confirmation phase measures it directly,
cheaply: after the sweep, from the same snapshot, it trains ``steps`` optimizer
steps at each of a few constant candidate LRs and keeps the one whose loss is
lowest at the end of its run.

This module holds the pure parts, on plain numbers (no torch):

* :func:`candidates`: the LRs to try, from the curve's climb point
  (:attr:`~torch_lrrange.analysis.Suggestion.climb_at`, where the loss climbed
  back above its starting level for good): ``count`` LRs half a decade apart,
  from half a decade below it down;
* :func:`run_score`: what a run is judged by: the mean of its last ``tail``
  recorded losses (training losses, or validation losses when those were
  recorded), infinite when the run diverged or is too short;
* :func:`choose`: the winner, as a :class:`Confirmation`: ``lr`` for constant-LR
  training and ``max_lr`` (a third of a decade above it) for one-cycle.

The defaults were fixed on the tuning tasks of ``benchmarks/suggestion_quality.py``
(6 candidates, 100 steps each, the last 10 losses; see docs/suggestion-quality.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_int, check_positive_float

__all__ = ["COUNT", "MAX_FACTOR", "SPACING", "STEPS", "TAIL", "Confirmation", "candidates", "choose", "run_score"]

#: Candidate LRs tried.
COUNT = 6
#: Ratio between neighbouring candidates, and between the climb point and the largest one (half a decade).
SPACING = math.sqrt(10.0)
#: Optimizer steps per candidate run.
STEPS = 100
#: A run is judged by the mean of its last this many recorded losses.
TAIL = 10
#: ``max_lr`` (one-cycle) is this factor (a third of a decade) above the confirmed constant LR.
MAX_FACTOR = 10.0 ** (1.0 / 3.0)


@dataclass
class Confirmation:
    """The outcome of a confirmation phase (plain data).

    ``lr``: the winning candidate, for constant-LR training; ``max_lr``:
    ``MAX_FACTOR`` times it, for one-cycle; ``candidates``: the LRs tried, in
    increasing order; ``scores``: each run's :func:`run_score` (``inf`` for a
    run that diverged or was cut short); ``steps``: optimizer steps per run.
    """

    lr: float
    max_lr: float
    candidates: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    steps: int = STEPS

    @property
    def cost(self) -> int:
        """Optimizer steps the phase took (all runs)."""
        return self.steps * len(self.candidates)


def candidates(climb_at: float, count: int = COUNT, spacing: float = SPACING) -> list[float]:
    """``count`` LRs, ``spacing`` apart, the largest ``spacing`` below ``climb_at``; increasing order.

    Example:
        >>> [round(lr, 6) for lr in candidates(1.0, count=3, spacing=10.0)]
        [0.001, 0.01, 0.1]
    """
    climb_at = check_positive_float("climb_at", climb_at)
    count = check_int("count", count, minimum=1)
    spacing = check_positive_float("spacing", spacing)
    if spacing <= 1:
        raise ValueError(f"spacing must be > 1, got {spacing!r}")
    return [climb_at / spacing ** (count - i) for i in range(count)]


def run_score(losses: Sequence[float] | np.ndarray, steps: int = STEPS, tail: int = TAIL) -> float:
    """The mean of the last ``tail`` of a run's ``steps`` losses; ``inf`` if any is not finite or the run is short.

    Example:
        >>> run_score([3.0, 2.0, 1.0, 1.0], steps=4, tail=2)
        1.0
        >>> run_score([3.0, float("nan")], steps=4, tail=2)
        inf
    """
    steps = check_int("steps", steps, minimum=1)
    tail = check_int("tail", tail, minimum=1)
    values = np.asarray(losses, dtype=np.float64).reshape(-1)
    if len(values) < steps or not np.all(np.isfinite(values[:steps])):
        return math.inf
    return float(np.mean(values[steps - min(tail, steps) : steps]))


def choose(
    lrs: Sequence[float], runs: Sequence[Sequence[float] | np.ndarray], steps: int = STEPS, tail: int = TAIL
) -> Confirmation:
    """The candidate whose run scored lowest (:func:`run_score`); ties go to the smaller LR.

    ``runs[i]`` holds the losses recorded during the run at ``lrs[i]``. Raises
    ``ValueError`` when ``lrs`` and ``runs`` differ in length or every run diverged.

    Example:
        >>> c = choose([0.01, 0.1, 1.0], [[2.0, 1.5], [2.0, 1.0], [2.0, float("inf")]], steps=2, tail=1)
        >>> c.lr, round(c.max_lr, 4), c.scores
        (0.1, 0.2154, [1.5, 1.0, inf])
    """
    if len(lrs) != len(runs):
        raise ValueError(f"lrs and runs must have the same length, got {len(lrs)} and {len(runs)}")
    if not lrs:
        raise ValueError("choose() needs at least one candidate")
    order = np.argsort(np.asarray(lrs, dtype=np.float64), kind="stable")
    ordered = [float(lrs[i]) for i in order]
    scores = [run_score(runs[i], steps, tail) for i in order]
    if all(math.isinf(s) for s in scores):
        raise ValueError("every candidate run diverged or was cut short; lower the candidates (or start_lr)")
    best = int(np.argmin(scores))  # first minimum: the smaller LR wins a tie
    return Confirmation(ordered[best], ordered[best] * MAX_FACTOR, ordered, scores, steps)
