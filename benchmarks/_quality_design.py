"""Designs of the confirmation phase beyond today's, read off one set of runs (``suggestion_quality.py --design``).

Every design is simulated from :func:`_quality_options.confirm_fine`: twelve
candidates a quarter decade apart below the sweep's climb point, each trained
200 steps from seed 0's snapshot on seed 0's batches. A run of n steps from that
snapshot on those batches is the first n steps of the longer run, so any
schedule of shorter runs (successive halving restarts every rung from the
snapshot) is read off the same losses, and every other candidate is one of
today's six. Designed on the tuning tasks; read once on the held-out ones.

* ``today``: six candidates half a decade apart, 100 steps each, the last 10
  losses (a check: it must equal ``--options``' ``confirm`` row);
* ``fine-100``: all twelve, 100 steps each (1200 steps: what resolution alone buys);
* ``halving-25/75``: twelve candidates for 25 steps, the best 4 (by their last 10
  losses) again from the snapshot for 75 steps, the best of those (600 steps);
* ``halving-20/60``: twelve for 20 steps, the best 6 for 60 (600 steps);
* ``halving-25/50/100``: twelve for 25, the best 6 for 50, the best 3 for 100
  (900 steps, every rung from the snapshot);
* ``holdout-small``: today's, except on training sets of at most 1000 samples, where
  every 5th batch of the first pass is held back from the runs, which train on the
  others, and judge each run (a generalisation signal without a validation set);
* one-cycle ``max_lr`` read from the candidates (``-max:...``): the winner
  times 10**f for f in 1/4, 1/2, 3/4 (without a suffix: 1/3, today's), or the
  largest candidate whose score is within 2% of the best (``-max:within2%``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import _quality_options as options
import numpy as np
from _quality_options import curve
from _quality_rules import Rows, print_table, score_task
from _quality_tasks import CEILING_NOTE, CEILING_ROWS, HELD_OUT, TUNING, Cache, Task, grid_search

from torch_lrrange import _confirmation as confirm
from torch_lrrange import analyze

#: Successive-halving schedules: (steps of each rung, candidates kept after each rung but the last).
HALVING = {
    "halving-25/75": ((25, 75), (4,)),
    "halving-20/60": ((20, 60), (6,)),
    "halving-25/50/100": ((25, 50, 100), (6, 3)),
}
#: One-cycle max_lr as the winner times 10**f.
MAX_FACTORS = {"1/4": 0.25, "1/3": 1 / 3, "1/2": 0.5, "3/4": 0.75}
#: A candidate within this fraction of the best score counts as training as well (the -max:within2% reading).
WITHIN = 0.02


def _score(run: Sequence[float], steps: int) -> float:
    return confirm.run_score(run, steps=steps, tail=confirm.TAIL)


def _best(indices: list[int], runs: list[list[float]], steps: int) -> list[int]:
    """``indices`` ordered best first by the score of their first ``steps`` losses (ties: the smaller LR first)."""
    return sorted(indices, key=lambda i: (_score(runs[i], steps), i))


def winner(runs: list[list[float]], rungs: Sequence[int], keep: Sequence[int], pool: list[int]) -> int | None:
    """The winning candidate index of a halving schedule over ``pool``; None when every run blew up at once."""
    if all(math.isinf(_score(runs[i], rungs[0])) for i in pool):
        return None
    alive = list(pool)
    for steps, kept in zip(rungs, [*keep, 1]):
        alive = _best(alive, runs, steps)[:kept]
    return alive[0]


#: The designs: (candidates: "coarse" today's six or "fine" all twelve, rungs, kept after each rung).
DESIGNS = {
    "today": ("coarse", (100,), ()),
    "fine-100": ("fine", (100,), ()),
    **{name: ("fine", rungs, keep) for name, (rungs, keep) in HALVING.items()},
}
NAMES = [
    f"{design}{suffix}"
    for design in DESIGNS
    for suffix in ("", *(f"-max:{label}" for label in MAX_FACTORS if label != "1/3"), "-max:within2%")
]


def readings(run: dict) -> dict[str, dict[str, float | None]]:
    """``{name: {protocol: lr}}`` for every name of :data:`NAMES`, from one task's fine runs (None: no LR)."""
    lrs, runs = run["lrs"], run["runs"]
    pools = {"coarse": list(range(0, len(lrs), 2)), "fine": list(range(len(lrs)))}
    out: dict[str, dict[str, float | None]] = {name: {"constant": None, "onecycle": None} for name in NAMES}
    for design, (which, rungs, keep) in DESIGNS.items():
        pool = pools[which]
        won = winner(runs, rungs, keep, pool)
        if won is None:
            continue
        lr = lrs[won]
        out[design] = {"constant": lr, "onecycle": lr * confirm.MAX_FACTOR}
        for label, f in MAX_FACTORS.items():
            if label != "1/3":
                out[f"{design}-max:{label}"] = {"constant": lr, "onecycle": lr * 10**f}
        best = _score(runs[won], rungs[-1])
        near = [i for i in pool if _score(runs[i], rungs[-1]) <= best + WITHIN * abs(best)]
        out[f"{design}-max:within2%"] = {"constant": lr, "onecycle": lrs[max([*near, won])]}
    return out


#: Training sets of at most this many samples get the holdout reading (``holdout-small``), as range_test warns.
SMALL = 1000


def _held_out(run: dict) -> dict[str, float | None]:
    """``{protocol: lr}`` of the candidate whose held-back batches scored lowest (:func:`confirm.choose`)."""
    try:
        chosen = confirm.choose(run["lrs"], [[v] for v in run["scores"]], steps=1, tail=1)
    except ValueError:
        return {"constant": None, "onecycle": None}
    return {"constant": chosen.lr, "onecycle": chosen.max_lr}


def design_report(all_tasks: list[Task], gts: dict[str, dict[str, np.ndarray]], args: argparse.Namespace) -> None:
    curve_cache, opt_cache, train_cache = Cache("curves.json"), Cache("options.json"), Cache("trained.json")
    for split in (TUNING, HELD_OUT) if args.split == "all" else (args.split,):
        split_tasks = [t for t in all_tasks if t.split == split]
        for k in args.num_steps:
            rows: Rows = {}
            for task in split_tasks:
                raw = curve(curve_cache, task, k)
                climb = analyze(raw["lrs"], raw["losses"]).suggestion.climb_at
                methods: dict[str, dict[str, float | None]] = {n: {"constant": None, "onecycle": None} for n in NAMES}
                if climb is not None:
                    run = opt_cache.get(
                        f"{task.name}|fine|{k}",
                        lambda climb=climb, task=task: options.confirm_fine(task, options.fine_candidates(climb)),
                    )
                    methods = readings(run)
                methods["holdout-small"] = methods["today"]
                if climb is not None and len(task.tensors()[0]) <= SMALL:
                    held = opt_cache.get(
                        f"{task.name}|holdout|{k}",
                        lambda climb=climb, task=task: options.confirm_holdout(
                            task, confirm.candidates(climb), confirm.STEPS
                        ),
                    )
                    methods["holdout-small"] = _held_out(held)
                methods.update(grid_search(train_cache, task))
                score_task(task, gts[task.name], methods, rows)
            print_table(
                f"confirmation designs, {split}: {len(split_tasks)} tasks; sweeps of {k} steps",
                rows,
                dict.fromkeys(CEILING_ROWS, CEILING_NOTE),
            )
