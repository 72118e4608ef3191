"""How far do 100-step runs see? The best any pick from short runs can do (``suggestion_quality.py --horizon``).

The default confirmation judges its candidates by runs of ``STEPS`` (100)
optimizer steps, far fewer than most tasks train for. This measures what that
horizon costs, apart from where the candidates lie and how finely they are
spaced: every LR of the task's ground-truth grid (16 LRs, a third of a decade
apart, over the task's five decades) is trained for ``STEPS`` steps at a
constant LR, from seed 0's weights on seed 0's batches (the confirmation's own
runs, :func:`_quality_options.confirm`), and the best run is kept, judged three
ways:

* ``100-step grid, training``: by the mean of its last 10 training losses, as
  the confirmation judges by default;
* ``100-step grid, val loss``: by the validation loss after the run, as
  ``val_loader=`` judges;
* ``100-step grid, val metric``: by the task's own validation metric after the
  run (accuracy, or loss): an oracle no user has.

One-cycle gets ``MAX_FACTOR`` times the pick, as the library reads it. Each row
is the best that a reading keeping the best 100-step run can do, with every grid
LR a candidate (1,600 steps a task, against the default's 600); what keeps such
a row out of band is the horizon itself: the LR that wins 100 steps is not the
one that wins the whole budget. Nothing here changed a rule; it measures why
the held-out targets are missed.
"""

from __future__ import annotations

import argparse

import _quality_options as options
import numpy as np
from _quality_report import _confirmed
from _quality_rules import Rows, print_cases, print_table, score_task
from _quality_tasks import CEILING_NOTE, CEILING_ROWS, HELD_OUT, TUNING, Cache, Task, grid_search, score

from torch_lrrange import _confirmation as confirm

ROWS = ("100-step grid, training", "100-step grid, val loss", "100-step grid, val metric")


def _by_metric(task: Task, run: dict) -> dict[str, float | None]:
    """``{protocol: lr}`` of the run whose validation metric after it is best (a blow-up scores worst)."""
    return _confirmed({**run, "vals": [-score(task, m) for m in run["metrics"]]}, "val")


def horizon_methods(task: Task, opt_cache: Cache) -> dict[str, dict[str, float | None]]:
    """``{row: {protocol: lr}}`` of :data:`ROWS` for one task (its grid's 100-step runs are cached)."""
    run = opt_cache.get(
        f"{task.name}|grid-runs|{confirm.STEPS}",
        lambda: options.confirm(task, [float(lr) for lr in task.grid()], confirm.STEPS),
    )
    return dict(zip(ROWS, (_confirmed(run, "train"), _confirmed(run, "val"), _by_metric(task, run))))


def horizon_report(
    all_tasks: list[Task],
    gts: dict[str, dict[str, np.ndarray]],
    defaults: dict[tuple[str, int], dict[str, float | None]],
    args: argparse.Namespace,
) -> None:
    """One table a split: the defaults (``{(task, sweep length): {protocol: lr}}``), :data:`ROWS`, the grid searches.

    The defaults are read at the first of ``args.num_steps``.
    """
    opt_cache, train_cache = Cache("options.json"), Cache("trained.json")
    for split in (HELD_OUT, TUNING) if args.split == "all" else (args.split,):
        split_tasks = [t for t in all_tasks if t.split == split]
        rows: Rows = {}
        for task in split_tasks:
            methods = {
                "range_test() defaults": defaults[task.name, args.num_steps[0]],
                **horizon_methods(task, opt_cache),
            }
            methods.update(grid_search(train_cache, task))
            score_task(task, gts[task.name], methods, rows)
            if args.verbose:
                print_cases(task, gts[task.name], rows, ("range_test() defaults", *ROWS))
        print_table(
            f"the horizon, {split}: {len(split_tasks)} tasks; every grid LR trained {confirm.STEPS} steps",
            rows,
            dict.fromkeys(CEILING_ROWS, CEILING_NOTE),
        )
    print(
        f"range_test() defaults: sweeps of {args.num_steps[0]} steps; the 100-step grid's one-cycle max_lr is its pick x 10**(1/3)"
    )
