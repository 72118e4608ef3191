"""Where the candidates lie: windows of candidates around the sweep's climb point (``suggestion_quality.py --span``).

Today's six candidates lie half a decade apart from half a decade below the
sweep's climb point down to three decades below it. ``--horizon`` showed that
picking among 100-step runs of every grid LR lands in band more often than the
defaults do, held out: some best LRs lie above today's candidates. Here nine
candidates half a decade apart, from 3.5 decades below the climb point to half
a decade above it, are each trained 100 steps from seed 0's snapshot on seed 0's
batches (judged by the held-back batches on training sets of at most 1000
samples, as ``range_test`` does, else by the last 10 training losses), and each
window of :data:`WINDOWS` keeps the best of its own candidates. Designed on the
tuning tasks; read once on the held-out ones.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import _quality_options as options
import numpy as np
from _quality_design import SMALL, _held_out
from _quality_options import curve
from _quality_report import _confirmed
from _quality_rules import compare
from _quality_tasks import HELD_OUT, TUNING, Cache, Task

from torch_lrrange import _confirmation as confirm
from torch_lrrange import analyze

#: The candidates' exponents: each is the climb point times 10**e.
EXPONENTS = (-3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5)
#: Windows: (lowest, highest exponent); "today" must read what ``range_test`` reads.
WINDOWS = {
    "today -3..-0.5": (-3.0, -0.5),
    "-3..0": (-3.0, 0.0),
    "-3..+0.5": (-3.0, 0.5),
    "-3.5..+0.5": (-3.5, 0.5),
    "-2.5..+0.5": (-2.5, 0.5),
    "-2..+0.5": (-2.0, 0.5),
}


def span_methods(task: Task, k: int, curve_cache: Cache, opt_cache: Cache) -> dict[str, dict[str, float | None]]:
    """``{window: {protocol: lr}}`` for one task and sweep length (the nine runs are cached)."""
    raw = curve(curve_cache, task, k)
    climb = analyze(raw["lrs"], raw["losses"]).suggestion.climb_at
    if climb is None:
        return {name: {"constant": None, "onecycle": None} for name in WINDOWS}
    lrs = [climb * 10.0**e for e in EXPONENTS]
    if len(task.tensors()[0]) <= SMALL:
        run = opt_cache.get(f"{task.name}|span-holdout|{k}", lambda: options.confirm_holdout(task, lrs, confirm.STEPS))
    else:
        run = opt_cache.get(f"{task.name}|span|{k}", lambda: options.confirm(task, lrs, confirm.STEPS))
    out = {}
    for name, (lo, hi) in WINDOWS.items():
        keep = [i for i, e in enumerate(EXPONENTS) if lo <= e <= hi]
        window = {key: [run[key][i] for i in keep] for key in ("lrs", "runs", "scores") if key in run}
        out[name] = _held_out(window) if "scores" in run else _confirmed({**window, "steps": run["steps"]}, "train")
    return out


def span_report(
    all_tasks: list[Task],
    gts: dict[str, dict[str, np.ndarray]],
    defaults: Callable[[Task, int], dict[str, float | None]],
    args: argparse.Namespace,
) -> None:
    """One table per split (tuning first) and sweep length: the defaults, the windows, the grid searches."""
    curve_cache, opt_cache = Cache("curves.json"), Cache("options.json")
    compare(
        all_tasks,
        gts,
        defaults,
        args,
        splits=(TUNING, HELD_OUT),
        sweep_lengths=args.num_steps,
        title=f"candidate windows, {{split}}: {{n}} tasks; sweeps of {{k}} steps; runs of {confirm.STEPS}",
        names=tuple(WINDOWS),
        methods_of=lambda task, k: span_methods(task, k, curve_cache, opt_cache),
    )
