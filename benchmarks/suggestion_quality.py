"""Do the suggested LRs train well? Our methods and the peers' against ground truth, on held-out tasks.

26 tasks (``_quality_tasks.py``), split once, before any rule was changed, into
15 tuning tasks and 11 held-out tasks (``Task.split``). They span transformer
language models trained from scratch on real text (Python's own prose and
source code; with and without warm-up; a GPT-2-style model with the LLM recipe),
fine-tuning of models pretrained inside the benchmark, small data sets where
over-fitting sets the best LR, SGD with and without momentum, Adam, AdamW,
RMSprop, Adadelta and Adagrad, batches of 16 to 1024, BatchNorm, LayerNorm and
no normalisation, CNNs, MLPs, RNNs and vision transformers, classification and
regression, and budgets of 88 to 2000 optimizer steps.

**Ground truth.** For each task, its training budget from the same initial
weights at each of 16 LRs a third of a decade apart (the task's own five
decades), (a) at a constant LR (with the task's own warm-up or StepLR around
it) and (b) under ``OneCycleLR`` with ``max_lr`` on the grid; the mean
validation metric over two seeds. The good band is the grid LRs whose metric is
within 1 accuracy point (or 2% of the loss) of the best, taken as an interval.

**Suggestions.** Each method reads one range test per task (1e-6 to 10, 100 or
200 steps, seed 0's weights and batch order). Our methods give ``result.lr``
for the constant protocol and ``result.max_lr`` for one-cycle; torch-lr-finder
(``LRFinder.range_test`` and the point its ``plot()`` reports) and Lightning
(``Tuner.lr_find(...).suggestion()``) run their own sweeps; fastai's four rules
(``_quality_rules.py``) read this library's raw curve with fastai's smoothing.
A peer's one LR serves both protocols. The reference rows ``grid-search-seed2``
and ``-seed3`` are no finders: each is the best LR of the whole grid trained
again at another seed, the ceiling that seed-to-seed noise puts on any method.

**Scores**, per (task, protocol) case: in band (the nearest grid LR is in it),
|log10(lr / best grid LR)|, its maximum, the distance in decades to the band,
and regret: the best grid metric minus the metric at the suggestion
(interpolated in log10(lr) between grid LRs; beyond the top of the grid, the
worst grid metric), in accuracy points or % of the best loss. A method that
gives no LR scores as out of band, the grid's width away, with the worst regret.

Everything trained is cached in ``benchmarks/.cache/`` (delete it to retrain).

    python benchmarks/suggestion_quality.py --ground-truth-only   # fill the cache (~3 CPU-hours cold)
    python benchmarks/suggestion_quality.py                       # both splits, 100- and 200-step sweeps
    python benchmarks/suggestion_quality.py --options             # validation sweeps, confirmation, LR-free
    python benchmarks/suggestion_quality.py --verbose --split tuning --num-steps 100
    python benchmarks/suggestion_quality.py --cases                # the small cases (_quality_cases.py), ~2 min
    python benchmarks/suggestion_quality.py --design --split tuning  # confirmation designs (_quality_design.py)
    python benchmarks/suggestion_quality.py --span --split tuning     # candidate windows (_quality_span.py)
    python benchmarks/suggestion_quality.py --horizon --num-steps 100  # what 100-step runs can see (_quality_horizon.py)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _quality_options as options
from _quality_options import curve
from _quality_rules import DEFAULTS, Rows, fastai_suggestions, ours, print_cases, print_table, score_task
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
    tasks,
    truth,
)

from torch_lrrange import METHODS

START_LR, END_LR = options.START_LR, options.END_LR
SPLITS = (HELD_OUT, TUNING)


# --- ground truth and sweeps ------------------------------------------------------------------


def torch_lr_finder_lr(task: Task, num_steps: int) -> float | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder

    model = task.build(0)
    opt = task.optimizer(model.parameters(), START_LR)
    finder = LRFinder(model, opt, task.loss, device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(task.loader(0), start_lr=START_LR, end_lr=END_LR, num_iter=num_steps)
        fig, ax = plt.subplots()
        try:
            _, lr = finder.plot(ax=ax, suggest_lr=True)
        except (RuntimeError, ValueError):
            lr = None
        plt.close(fig)
    return None if lr is None else float(lr)


def lightning_lr(task: Task, num_steps: int) -> float | None:
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = task.build(0)
            self.lr = START_LR

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return task.loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return task.optimizer(self.parameters(), self.lr)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=100,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache", "lightning"),
    )
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        finder = Tuner(trainer).lr_find(
            Module(),
            train_dataloaders=task.loader(0),
            min_lr=START_LR,
            max_lr=END_LR,
            num_training=num_steps,
            update_attr=False,
        )
    lr = finder.suggestion() if finder is not None else None
    return None if lr is None else float(lr)


PEERS: dict[str, tuple[str, Callable[[Task, int], float | None]]] = {
    "torch-lr-finder": ("tlf", torch_lr_finder_lr),
    "lightning": ("pl", lightning_lr),
}


# --- suggestions and scores ----------------------------------------------------------------

#: The cache key tag of the defaults row (``_quality_rules.DEFAULTS``): bump it when the library's default reading changes.
DEFAULTS_TAG = "defaults-v2"


def range_test_defaults(cache: Cache, task: Task, num_steps: int) -> dict[str, float | None]:
    """``{protocol: lr}`` of ``range_test`` at its defaults (``result.lr``, ``result.max_lr``), cached."""
    got = cache.get(f"{task.name}|{DEFAULTS_TAG}|{num_steps}", lambda: options.defaults(task, num_steps))
    return {"constant": got["lr"], "onecycle": got["max_lr"]}


def suggestions(
    task: Task, raw: dict[str, list[float]], peers: dict[str, float | None], num_steps: int
) -> dict[str, dict[str, float | None]]:
    """``{method: {protocol: lr or None}}`` for our methods, fastai's rules and the peers."""
    out = {method: ours(raw, method) for method in METHODS}
    for rule, lr in fastai_suggestions(np.array(raw["lrs"]), np.array(raw["losses"]), num_steps).items():
        out[rule] = {"constant": lr, "onecycle": lr}
    for peer, lr in peers.items():
        out[peer] = {"constant": lr, "onecycle": lr}
    return out


# --- main ------------------------------------------------------------------------------------


def selected(args: argparse.Namespace) -> list[Task]:
    chosen = [t for t in tasks() if args.split == "all" or t.split == args.split]
    if args.tasks:
        chosen = [t for t in chosen if t.name in args.tasks]
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("all", HELD_OUT, TUNING), default="all")
    parser.add_argument("--tasks", nargs="*", help="only these task names")
    parser.add_argument("--num-steps", type=int, nargs="*", default=[100, 200], help="sweep lengths (default 100 200)")
    parser.add_argument("--ground-truth-only", action="store_true", help="fill the ground-truth cache and stop")
    parser.add_argument("--options", action="store_true", help="also measure the options beyond the rule")
    parser.add_argument(
        "--design", action="store_true", help="only the confirmation designs of _quality_design.py (tuning first)"
    )
    parser.add_argument(
        "--horizon",
        action="store_true",
        help="only the best picks from 100-step runs of every grid LR (_quality_horizon.py)",
    )
    parser.add_argument(
        "--span", action="store_true", help="only the windows of candidates around the climb point (_quality_span.py)"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip torch-lr-finder and Lightning")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    parser.add_argument(
        "--cases", nargs="*", help="only the small cases of _quality_cases.py (these names, or all): bands and readings"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("torch_lrrange").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="torch_lrrange")
    if args.cases is not None:
        import _quality_cases

        _quality_cases.report(args.cases)
        return
    all_tasks = selected(args)
    train_cache, curve_cache, options_cache = Cache("trained.json"), Cache("curves.json"), Cache("options.json")
    if args.design:
        import _quality_design

        _quality_design.design_report(all_tasks, {t.name: truth(train_cache, t) for t in all_tasks}, args)
        return

    if args.horizon or args.span:
        import _quality_horizon
        import _quality_span

        report = _quality_horizon.horizon_report if args.horizon else _quality_span.span_report
        report(
            all_tasks,
            {t.name: truth(train_cache, t) for t in all_tasks},
            lambda task, k: range_test_defaults(options_cache, task, k),
            args,
        )
        return

    gts = {}
    for task in all_tasks:
        gts[task.name] = truth(train_cache, task)
        if args.ground_truth_only:
            grid_search(train_cache, task)
            print(task.name, {p: np.round(v, 3).tolist() for p, v in gts[task.name].items()}, flush=True)
    if args.ground_truth_only:
        return

    for k in args.num_steps:
        for split in SPLITS:
            split_tasks = [t for t in all_tasks if t.split == split]
            if not split_tasks:
                continue
            rows: Rows = {}
            for task in split_tasks:
                raw = curve(curve_cache, task, k)
                peers = {}
                if not args.no_peers:
                    for peer, (tag, fn) in PEERS.items():
                        peers[peer] = curve_cache.get(
                            f"{task.name}|{tag}|{k}", lambda fn=fn, task=task, k=k: fn(task, k)
                        )
                methods = {DEFAULTS: range_test_defaults(options_cache, task, k)}
                methods.update(suggestions(task, raw, peers, k))
                methods.update(grid_search(train_cache, task))
                score_task(task, gts[task.name], methods, rows)
                if args.verbose:
                    print_cases(task, gts[task.name], rows, rows)
            print_table(
                f"{split}: {len(split_tasks)} tasks x {len(PROTOCOLS)} protocols = {2 * len(split_tasks)} cases; "
                f"range tests of {k} steps; ground truth: grids of 16 LRs, seeds {SEEDS}",
                rows,
                dict.fromkeys(CEILING_ROWS, CEILING_NOTE),
            )
    print("regret: accuracy points, or % of the best validation loss (loss tasks); '>1 decade': cases off by more")
    if args.options:
        import _quality_report

        _quality_report.options_report(all_tasks, gts, args)


if __name__ == "__main__":
    main()
