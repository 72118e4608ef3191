"""The options beyond the rule, scored on the benchmark's tasks (``suggestion_quality.py --options``).

* validation-aware reading: the default rule on a validation-loss sweep
  (``range_test(..., val_loader=)``, and ``RangeTest`` in the user's own loop,
  recording one validation batch per step);
* a confirmation phase (:mod:`torch_lrrange._confirmation`): short runs at candidate
  LRs below the sweep's climb point, the best kept by the last training losses
  (``confirm``) or by the validation loss after each run (``confirm-val``); the
  same runs read between the candidates (``-refined``: the vertex of the parabola
  through the winner's and its neighbours' scores in log10 LR, tried and not
  shipped); the same candidates run for 200 steps each (``confirm=200``, a
  keyword users have); and, for reference, the variant first tried on the issue: candidates
  from L*/1000 to L*/3 around the smoothed minimum L* (``confirm-L*``);
* LR-free optimizers at their documented defaults, against training at the suggestion.
"""

from __future__ import annotations

import argparse
import math

import _quality_options as options
import numpy as np
from _quality_options import curve
from _quality_rules import Rows, interpolated, ours, print_table, regret, score_task
from _quality_tasks import (
    CEILING_NOTE,
    CEILING_ROWS,
    HELD_OUT,
    PROTOCOLS,
    SEEDS,
    TUNING,
    Cache,
    Task,
    grid_search,
    score,
)

from torch_lrrange import _confirmation as confirm
from torch_lrrange import analyze

#: Fractions of L* of the variant tried on the issue (six candidates, L*/1000 to L*/3).
ISSUE_FRACTIONS = [10**-3, 10**-2.5, 10**-2, 10**-1.5, 10**-1, 10**-0.5]
NONE = {"constant": None, "onecycle": None}
#: ``range_test(confirm=200)``: candidate runs twice as long as the default's.
LONGER_STEPS = 200
LONGER = (f"confirm={LONGER_STEPS}", f"confirm={LONGER_STEPS}-val")


def _confirmed(run: dict, by: str, refined: bool = False) -> dict[str, float | None]:
    """``{protocol: lr}`` of the confirmation phase's choice from recorded runs (``by``: "train" or "val")."""
    try:
        if by == "train":
            chosen = confirm.choose(run["lrs"], run["runs"], steps=run["steps"])
        else:
            chosen = confirm.choose(run["lrs"], [[v] for v in run["vals"]], steps=1, tail=1)
    except ValueError:
        return dict(NONE)
    lr = _vertex(chosen.candidates, chosen.scores, chosen.lr) if refined else chosen.lr
    return {"constant": lr, "onecycle": lr * confirm.MAX_FACTOR}


def _vertex(lrs: list[float], scores: list[float], winner: float) -> float:
    """The vertex in log10(LR) of the parabola through the winner's and its neighbours' scores, within half a gap."""
    i = lrs.index(winner)
    if not 0 < i < len(lrs) - 1 or not all(math.isfinite(v) for v in scores[i - 1 : i + 2]):
        return winner
    x0, x1, x2 = (math.log10(lrs[j]) for j in (i - 1, i, i + 1))
    y0, y1, y2 = scores[i - 1 : i + 2]
    a, b = (x1 - x0) * (y1 - y2), (x1 - x2) * (y1 - y0)
    if a - b >= 0:  # not convex: no vertex to read
        return winner
    vertex = x1 - 0.5 * ((x1 - x0) * a - (x1 - x2) * b) / (a - b)
    return 10.0 ** min(max(vertex, (x0 + x1) / 2), (x1 + x2) / 2)


def option_methods(task: Task, k: int, curve_cache: Cache, opt_cache: Cache) -> tuple[dict, dict[str, int]]:
    """``{method: {protocol: lr}}`` of every option for one task and sweep length, and each one's extra steps."""
    raw = curve(curve_cache, task, k)
    result = analyze(raw["lrs"], raw["losses"])
    methods: dict[str, dict[str, float | None]] = {"default": ours(raw, "default")}
    cost: dict[str, int] = {}
    for own in (False, True):
        name = "val-own-loop" if own else "val-range_test"
        vraw = opt_cache.get(f"{task.name}|{name}|{k}", lambda own=own: options.validation_sweep(task, k, own))
        methods[name] = ours(vraw, "default")
    climb = result.suggestion.climb_at
    if climb is None:
        for name in ("confirm", "confirm-val", "confirm-refined", "confirm-val-refined", *LONGER):
            methods[name] = dict(NONE)
    else:
        lrs = confirm.candidates(climb)
        run = opt_cache.get(f"{task.name}|confirm|{k}", lambda: options.confirm(task, lrs, confirm.STEPS))
        for name, by in (("confirm", "train"), ("confirm-val", "val")):
            methods[name] = _confirmed(run, by)
            methods[f"{name}-refined"] = _confirmed(run, by, refined=True)
            cost[name] = cost[f"{name}-refined"] = confirm.STEPS * len(lrs)
        steps = LONGER_STEPS
        run = opt_cache.get(f"{task.name}|confirm{steps}|{k}", lambda: options.confirm(task, lrs, steps))
        for name, by in zip(LONGER, ("train", "val")):
            methods[name] = _confirmed(run, by)
            cost[name] = steps * len(lrs)
    if k == 100:
        lstar = result.suggestion.minimum_at
        if lstar is None:
            methods["confirm-L*"] = dict(NONE)
        else:
            lrs = [f * lstar for f in ISSUE_FRACTIONS]
            run = opt_cache.get(f"{task.name}|confirm-L*|{k}", lambda: options.confirm(task, lrs, 100))
            methods["confirm-L*"] = _confirmed(run, "train")
            cost["confirm-L*"] = 100 * len(lrs)
    return methods, cost


def options_report(all_tasks: list[Task], gts: dict[str, dict[str, np.ndarray]], args: argparse.Namespace) -> None:
    curve_cache, opt_cache, train_cache = Cache("curves.json"), Cache("options.json"), Cache("trained.json")
    for split in (HELD_OUT, TUNING):
        split_tasks = [t for t in all_tasks if t.split == split]
        if not split_tasks:
            continue
        for k in args.num_steps:
            rows: Rows = {}
            costs: dict[str, list[int]] = {}
            for task in split_tasks:
                methods, cost = option_methods(task, k, curve_cache, opt_cache)
                methods.update(grid_search(train_cache, task))
                for name, c in cost.items():
                    costs.setdefault(name, []).append(c)
                score_task(task, gts[task.name], methods, rows)
                if args.verbose:
                    for protocol in PROTOCOLS:
                        grid = task.grid()
                        best = grid[int(np.argmax(gts[task.name][protocol]))]
                        line = " ".join(
                            f"{m}={'-' if v[protocol] is None else f'{v[protocol]:.1e}'}" for m, v in methods.items()
                        )
                        print(f"  {task.name:24s} {protocol:8s} best={best:.1e} {line}")
            extra = {name: f"+{np.mean(c):.0f} optimizer steps" for name, c in costs.items()}
            extra.update(
                {
                    "val-range_test": f"{k} points, each one step and a validation pass",
                    "val-own-loop": f"{k} points, each one step and one validation batch",
                    **dict.fromkeys(CEILING_ROWS, CEILING_NOTE),
                }
            )
            print_table(f"options, {split}: {len(split_tasks)} tasks; sweeps of {k} steps", rows, extra)
        lr_free_report(split, split_tasks, gts, curve_cache, opt_cache)


def lr_free_report(
    split: str, split_tasks: list[Task], gts: dict[str, dict[str, np.ndarray]], curve_cache: Cache, opt_cache: Cache
) -> None:
    """Regret of LR-free optimizers and of training at the suggestions, against the best grid LR of either protocol."""
    cache = Cache("lrfree.json")
    print(f"\nLR-free optimizers, {split}: regret against the best of both grids (accuracy points or % of the loss)")
    ours_names = ["default/constant", "default/onecycle", "confirm/constant", "confirm/onecycle"]
    names = [*ours_names, *options.LR_FREE]
    print(f"{'task':26s} " + " ".join(f"{n:>18s}" for n in names))
    table: dict[str, list[float]] = {n: [] for n in names}
    for task in split_tasks:
        gt = gts[task.name]
        best = max(float(np.max(gt[p])) for p in PROTOCOLS)
        methods, _ = option_methods(task, 100, curve_cache, opt_cache)
        values: dict[str, float] = {}
        for method in ("default", "confirm"):
            for protocol in PROTOCOLS:
                lr = methods[method][protocol]
                got = float(np.min(gt[protocol])) if lr is None else interpolated(task.grid(), gt[protocol], lr)
                values[f"{method}/{protocol}"] = regret(task.kind, best, got)
        for name in options.LR_FREE:
            scores = []
            for seed in SEEDS:
                value = cache.get(
                    f"{task.name}|{name}|{seed}|e{task.epochs}", lambda n=name, s=seed, t=task: options.lr_free(t, n, s)
                )
                scores.append(score(task, math.nan if value is None else value))
            values[name] = regret(task.kind, best, float(np.mean(scores)))
        for n in names:
            table[n].append(values[n])
        print(f"{task.name:26s} " + " ".join(f"{values[n]:18.2f}" for n in names))
    print(f"{'mean':26s} " + " ".join(f"{np.mean(table[n]):18.2f}" for n in names))
    print(f"{'median':26s} " + " ".join(f"{np.median(table[n]):18.2f}" for n in names))
    wins = {n: sum(table[n][i] <= table["default/constant"][i] for i in range(len(split_tasks))) for n in names}
    print(f"{'<= default/constant':26s} " + " ".join(f"{wins[n]:18d}" for n in names))
