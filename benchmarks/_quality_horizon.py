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
from collections.abc import Callable

import _quality_options as options
import numpy as np
from _quality_report import _confirmed
from _quality_rules import compare
from _quality_tasks import HELD_OUT, TUNING, Cache, Task, score

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
    defaults: Callable[[Task, int], dict[str, float | None]],
    args: argparse.Namespace,
) -> None:
    """One table a split: the defaults (at the first of ``args.num_steps``), :data:`ROWS`, the grid searches."""
    opt_cache = Cache("options.json")
    compare(
        all_tasks,
        gts,
        defaults,
        args,
        splits=(HELD_OUT, TUNING),
        sweep_lengths=args.num_steps[:1],
        title=f"the horizon, {{split}}: {{n}} tasks; every grid LR trained {confirm.STEPS} steps; sweeps of {{k}}",
        names=ROWS,
        methods_of=lambda task, k: horizon_methods(task, opt_cache),
    )
    print("the 100-step grid's one-cycle max_lr is its pick x 10**(1/3), as the library reads it")
