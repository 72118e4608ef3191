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

and :class:`CandidateRuns`, the phase itself as :class:`~torch_lrrange.RangeTest`
runs it after the sweep, inside the same block (``RangeTest(confirm=...)``,
``range_test(confirm=...)``): it reuses the sweep's snapshot, held
hyperparameters, per-group LR ranges, loaders and loss reducer.

The defaults were fixed on the tuning tasks of ``benchmarks/suggestion_quality.py``
(6 candidates, 100 steps each, the last 10 losses; see docs/suggestion-quality.md).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ._checks import check_choice, check_int, check_positive_float
from ._distributed import LossReducer
from ._divergence import to_host
from ._guard import GUARDED_KEYS, GroupGuard
from ._schedule import group_lrs, set_group_lrs
from ._sweep import reads_host_memory

__all__ = [
    "BUDGET",
    "BY",
    "COUNT",
    "MAX_FACTOR",
    "SPACING",
    "STEPS",
    "TAIL",
    "CandidateRuns",
    "Confirmation",
    "auto_steps",
    "candidates",
    "choose",
    "confirm_steps",
    "run_score",
]

#: Candidate LRs tried.
COUNT = 6
#: Ratio between neighbouring candidates, and between the climb point and the largest one (half a decade).
SPACING = math.sqrt(10.0)
#: Optimizer steps per candidate run (at the default, for steps of one gradient evaluation each).
STEPS = 100
#: Gradient evaluations the default confirmation may spend: ``COUNT * STEPS`` one-gradient steps, fewer
#: steps where each costs several (an LBFGS step evaluates its closure up to ``max_iter`` times).
BUDGET = COUNT * STEPS
#: A run is judged by the mean of its last this many recorded losses.
TAIL = 10
#: ``max_lr`` (one-cycle) is this factor (a third of a decade) above the confirmed constant LR.
MAX_FACTOR = 10.0 ** (1.0 / 3.0)
#: What a run can be judged by: its own training losses, a validation loss after it, or the loss of
#: batches held back from the runs (``range_test`` on a small training set without ``val_loader``).
BY = ("training", "validation", "held-back")


@dataclass
class Confirmation:
    """The outcome of a confirmation phase (plain data; :meth:`to_dict` / :meth:`from_dict`).

    ``lr``: the winning candidate, for constant-LR training; ``max_lr``:
    ``MAX_FACTOR`` times it, for one-cycle; ``candidates``: the LRs tried, in
    increasing order; ``scores``: each run's :func:`run_score` (``inf`` for a
    run that diverged or was cut short); ``steps``: optimizer steps per run;
    ``by``: ``"training"`` (the runs' last training losses), ``"validation"``
    (a validation loss after each run) or ``"held-back"`` (the loss of training
    batches held back from the runs, after each); ``warnings``: what limits the choice, in words;
    ``evaluations``: gradient evaluations the runs took (closure calls for LBFGS), when
    they were counted, else None (then one per optimizer step).
    """

    lr: float
    max_lr: float
    candidates: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    steps: int = STEPS
    by: str = "training"
    warnings: list[str] = field(default_factory=list)
    evaluations: int | None = None

    @property
    def cost(self) -> int:
        """Optimizer steps the phase took (all runs)."""
        return self.steps * len(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data (an infinite score becomes None)."""
        return {
            "by": self.by,
            "candidates": [float(v) for v in self.candidates],
            "scores": [None if math.isinf(v) else float(v) for v in self.scores],
            "steps": self.steps,
            "lr": self.lr,
            "max_lr": self.max_lr,
            "warnings": list(self.warnings),
            **({} if self.evaluations is None else {"evaluations": self.evaluations}),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "confirmation") -> Confirmation:
        """Rebuild from :meth:`to_dict` output; raises ``ValueError`` naming ``where`` and the field at fault.

        Example:
            >>> c = Confirmation(0.1, 0.2154, [0.01, 0.1], [1.5, 1.0], steps=20)
            >>> Confirmation.from_dict(c.to_dict()) == c
            True
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, got {type(data).__name__}")

        def number(value: Any, name: str) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{where} field {name!r} must be a number > 0, got {value!r}")
            return float(value)

        lrs = data.get("candidates")
        scores = data.get("scores")
        if not isinstance(lrs, list) or not lrs or not isinstance(scores, list) or len(scores) != len(lrs):
            raise ValueError(f"{where} fields 'candidates' and 'scores' must be lists of the same, non-zero length")
        candidates = [number(v, "candidates") for v in lrs]
        if any(b <= a for a, b in itertools.pairwise(candidates)):
            raise ValueError(f"{where} field 'candidates' must be strictly increasing")
        if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in scores):
            raise ValueError(f"{where} field 'scores' must hold numbers or null")
        lr = number(data.get("lr"), "lr")
        if lr not in candidates:
            raise ValueError(f"{where} field 'lr' must be one of its candidates, got {lr!r}")
        max_lr = number(data.get("max_lr", lr * MAX_FACTOR), "max_lr")
        if max_lr < lr:
            raise ValueError(f"{where} field 'max_lr' must be >= its 'lr', got {max_lr!r} < {lr!r}")
        by = data.get("by")
        if by not in BY:
            raise ValueError(f"{where} field 'by' must be one of {', '.join(map(repr, BY))}, got {by!r}")
        steps = data.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{where} field 'steps' must be an int >= 1, got {steps!r}")
        warnings = data.get("warnings", [])
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise ValueError(f"{where} field 'warnings' must be a list of strings")
        evaluations = data.get("evaluations")
        if evaluations is not None and (
            isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < steps * len(lrs)
        ):
            raise ValueError(
                f"{where} field 'evaluations' must be an int >= steps * candidates ({steps * len(lrs)}), "
                f"got {evaluations!r}"
            )
        return cls(
            lr,
            max_lr,
            candidates,
            [math.inf if v is None else float(v) for v in scores],
            steps,
            by,
            list(warnings),
            evaluations,
        )


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

    A run's first loss is taken before its first update, the same for every
    candidate: it counts only in a run of one step.

    Example:
        >>> run_score([3.0, 2.0, 1.0, 1.0], steps=4, tail=2)
        1.0
        >>> run_score([3.0, 2.0], steps=2, tail=10)  # the first loss, before any update, left out
        2.0
        >>> run_score([3.0, float("nan")], steps=4, tail=2)
        inf
    """
    steps = check_int("steps", steps, minimum=1)
    tail = check_int("tail", tail, minimum=1)
    values = np.asarray(losses, dtype=np.float64).reshape(-1)
    if len(values) < steps or not np.all(np.isfinite(values[:steps])):
        return math.inf
    return float(np.mean(values[max(steps - tail, 1 if steps > 1 else 0) : steps]))


def choose(
    lrs: Sequence[float],
    runs: Sequence[Sequence[float] | np.ndarray],
    steps: int = STEPS,
    tail: int = TAIL,
    *,
    by: str = "training",
) -> Confirmation:
    """The candidate whose run scored lowest (:func:`run_score`); ties go to the smaller LR, with a warning.

    ``runs[i]`` holds the losses recorded during the run at ``lrs[i]``. Raises
    ``ValueError`` when ``lrs`` and ``runs`` differ in length or every run
    diverged. A tie is said in ``warnings``.

    Example:
        >>> c = choose([0.01, 0.1, 1.0], [[2.0, 1.5], [2.0, 1.0], [2.0, float("inf")]], steps=2, tail=1)
        >>> c.lr, round(c.max_lr, 4), c.scores
        (0.1, 0.2154, [1.5, 1.0, inf])
    """
    by = check_choice("by", by, BY)
    if len(lrs) != len(runs):
        raise ValueError(f"lrs and runs must have the same length, got {len(lrs)} and {len(runs)}")
    if not lrs:
        raise ValueError("choose() needs at least one candidate")
    order = np.argsort(np.asarray(lrs, dtype=np.float64), kind="stable")
    ordered = [float(lrs[i]) for i in order]
    scores = [run_score(runs[i], steps, tail) for i in order]
    finite = [s for s in scores if not math.isinf(s)]
    if not finite:
        raise ValueError("every candidate run diverged or was cut short; lower the candidates (or start_lr)")
    best = int(np.argmin(scores))  # first minimum: the smaller LR wins a tie
    notes = []
    if scores.count(scores[best]) > 1:
        tied = [f"{lr:.3g}" for lr, s in zip(ordered, scores) if s == scores[best]]
        notes.append(f"candidates {', '.join(tied)} scored the same; the smallest was kept")
    if len(ordered) > 1 and best in (0, len(ordered) - 1):
        edge = "smallest" if best == 0 else "largest"
        notes.append(f"the confirmed LR is the {edge} candidate: the best LR may lie beyond them")
    chosen = Confirmation(ordered[best], ordered[best] * MAX_FACTOR, ordered, scores, steps)
    return replace(chosen, by=by, warnings=notes)


def confirm_steps(confirm: Any) -> int:
    """Optimizer steps per candidate run for ``confirm=``: 0 (False), :data:`STEPS` (True, or None: the
    default, which :func:`auto_steps` may shorten for costly steps), or the int given.

    Example:
        >>> confirm_steps(True), confirm_steps(None), confirm_steps(False), confirm_steps(30)
        (100, 100, 0, 30)
    """
    if confirm is False:
        return 0
    if confirm is True or confirm is None:
        return STEPS
    try:
        return check_int("confirm", confirm, minimum=1)
    except TypeError as err:
        raise TypeError(
            f"confirm must be None (the default), True, False or an int >= 1 (steps per candidate), got {confirm!r}"
        ) from err


def auto_steps(evaluations_per_step: float, count: int = COUNT, budget: int = BUDGET) -> int:
    """Steps per candidate run of the default confirmation: ``count`` runs within ``budget`` gradient evaluations.

    At least 2 (a run's first loss comes before its first update), at most :data:`STEPS`.

    Example:
        >>> auto_steps(1.0), auto_steps(20.0), auto_steps(500.0)
        (100, 5, 2)
    """
    per_step = check_positive_float("evaluations_per_step", evaluations_per_step)
    return max(2, min(STEPS, int(budget / (count * max(per_step, 1.0)))))


class CandidateRuns:
    """The confirmation phase of one range test: a short run at each candidate LR, every one from the same state.

    :class:`~torch_lrrange.RangeTest` drives it after the sweep, inside its
    block: it restores its snapshot (and sets the held hyperparameters), calls
    :meth:`begin`, feeds each recorded loss to :meth:`push` until it returns
    True, then :meth:`end_run`; after the last run :meth:`choose` reads the
    winner. Each candidate sets every param group's LR keeping the sweep's
    per-group ratios (:func:`~torch_lrrange._schedule.group_lrs`), held before
    every optimizer step like the sweep's (:class:`~torch_lrrange._guard.GroupGuard`).
    Losses stay on their device during a run and are read once, at its end.
    """

    def __init__(
        self,
        optimizer: Any,
        climb_at: float,
        steps: int,
        *,
        starts: list[float],
        ends: list[float],
        mode: str,
        reducer: LossReducer,
        by: str = "training",
        hold: tuple[str, ...] = (),
    ) -> None:
        self.optimizer = optimizer
        self.lrs = candidates(climb_at)
        self.rows = [group_lrs(lr, starts, ends, mode) for lr in self.lrs]
        self.steps = steps
        self.by = check_choice("by", by, BY)
        self.runs: list[list[float]] = []
        self.window: list[Any] = []
        self.has_floats = False
        self.step = 0
        self._reducer = reducer
        self._hold = GUARDED_KEYS + hold
        self.guard: GroupGuard | None = None

    @property
    def lr(self) -> float:
        """The LR of param group 0 in the run under way (the first candidate's before any)."""
        return self.lrs[min(len(self.runs), len(self.lrs) - 1)]

    @property
    def finished(self) -> bool:
        """Whether every candidate has run."""
        return len(self.runs) == len(self.lrs)

    def begin(self) -> None:
        """Set the next candidate's LR in every param group (after the state was restored)."""
        row = self.rows[len(self.runs)]
        set_group_lrs(self.optimizer, row)
        self.window, self.has_floats, self.step = [], False, 0
        self.guard = GroupGuard(self.optimizer, self._hold)
        self.guard.expect(row)

    def push(self, loss: torch.Tensor | float) -> bool:
        """Add the loss of the step just taken; True once the run has its ``steps``."""
        self.window.append(loss)
        self.step += 1
        assert self.guard is not None, "begin() first"
        self.guard.recorded(stacklevel=3)  # a warning points at the user's record() call
        return self.step >= self.steps

    def end_run(self, score: torch.Tensor | float | None = None) -> None:
        """Close the run under way: its losses (or ``score``, a validation loss after it) read in one host read."""
        self.release()
        window = self.window if score is None else [score]
        has_floats = self.has_floats if score is None else not isinstance(score, torch.Tensor)
        self.window = []
        if reads_host_memory(window, has_floats, self._reducer.world_size):
            self.runs.append(to_host(window))
            return
        device = next((v.device for v in window if isinstance(v, torch.Tensor)), torch.device("cpu"))
        staged = torch.stack(
            [
                v.detach().float().reshape(()).to(device)
                if isinstance(v, torch.Tensor)
                else torch.tensor(float(v), device=device)
                for v in window
            ]
        )
        self.runs.append(to_host(self._reducer.average(staged)))

    def release(self) -> None:
        """Stop guarding the param groups (idempotent)."""
        if self.guard is not None:
            self.guard.close()
            self.guard = None

    def choose(self) -> Confirmation:
        """The winner of the finished runs (:func:`choose`).

        Raises ``ValueError`` when every run diverged, or when every run scored
        the same: then the runs cannot tell the candidates apart.
        """
        scored, tail = (self.steps, TAIL) if self.by == "training" else (1, 1)
        chosen = choose(self.lrs, self.runs, scored, tail, by=self.by)
        if len(set(chosen.scores)) == 1:
            raise ValueError(
                f"every candidate run scored the same ({chosen.scores[0]:.6g}): the runs cannot tell the candidates "
                "apart (too few steps per run, or a loss that does not depend on the LR)"
            )
        return replace(chosen, steps=self.steps)
