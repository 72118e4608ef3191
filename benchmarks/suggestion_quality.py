"""Do the suggested LRs train well? Our methods and the peers' against ground truth.

For each task (see ``_quality_tasks.py``: MLP, CNN and BatchNorm MLP on digits,
an MLP regression on diabetes, an LSTM and a transformer on a generated sequence
task, and a BatchNorm CNN on digits added as a hold-out after the default rule
was fixed; SGD+momentum, Adam and AdamW), the ground truth is a fixed training budget
from the same initial weights at every LR of a grid (16 LRs, 1e-5 to 1, five
decades), (a) at a constant LR and (b) under OneCycleLR with ``max_lr`` on the
grid, averaged over two seeds. The good band is the set of grid LRs whose
validation metric is within 1 accuracy point (or 2% of the loss) of the best,
taken as an interval: the grid LRs from the lowest such LR to the highest.

Each method reads one range test per task (1e-6 to 10, 100 steps, the training
batch size) and its LR is scored: in band (its nearest grid LR is in the band),
|log10 distance| to the grid best, and regret (best grid metric minus the metric
of training at the suggestion: accuracy points, or % of the best loss, capped
at 100 for a blow-up). For the
constant protocol our methods give ``result.lr``; for one-cycle ``result.max_lr``.
torch-lr-finder (``LRFinder.range_test`` + the steepest-gradient point its
``plot()`` reports) and Lightning (``Tuner(trainer).lr_find(...).suggestion()``)
give one LR, used for both protocols. A method that gives no LR scores as out of
band, at the largest distance in the grid, with the worst grid regret.

Everything trained is cached in ``benchmarks/.cache/`` (delete it to retrain).

    python benchmarks/suggestion_quality.py            # full run (~6 min on 2 cores, cold cache)
    python benchmarks/suggestion_quality.py --quick    # 3 tasks, one seed, a coarser grid
    python benchmarks/suggestion_quality.py --num-steps 200 --verbose   # longer sweeps, every case
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import warnings
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quality_tasks import Cache, Task, tasks, trained

from torch_lrrange import METHODS, UnusableCurveError, analyze, range_test

START_LR, END_LR, NUM_STEPS = 1e-6, 10.0, 100
PROTOCOLS = ("constant", "onecycle")
PEERS = ("torch-lr-finder", "lightning")


def grid(quick: bool) -> np.ndarray:
    step = 2 / 3 if quick else 1 / 3
    return 10 ** np.arange(-5, 1e-9, step)


# --- range tests ----------------------------------------------------------------


def our_curve(task: Task, num_steps: int) -> dict[str, list[float]]:
    model = task.build(0)
    opt = task.optimizer(model.parameters(), 1e-3)
    result = range_test(
        model,
        opt,
        task.loader(0),
        lambda m, b: task.loss(m(b[0]), b[1]),
        start_lr=START_LR,
        end_lr=END_LR,
        num_steps=num_steps,
        progress=False,
    )
    return {"lrs": result.lrs.tolist(), "losses": result.losses.tolist()}


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


# --- scoring --------------------------------------------------------------------


def suggestions(curve: dict[str, list[float]], peers: dict[str, float | None]) -> dict[str, dict[str, float | None]]:
    """``{method: {protocol: lr or None}}`` for our methods and the peers."""
    out: dict[str, dict[str, float | None]] = {}
    for method in METHODS:
        result = analyze(curve["lrs"], curve["losses"], method=method)
        try:
            out[method] = {"constant": result.lr, "onecycle": result.max_lr}
        except UnusableCurveError:
            out[method] = {"constant": None, "onecycle": None}
    for peer, lr in peers.items():
        out[peer] = {"constant": lr, "onecycle": lr}
    return out


def regret(task: Task, best: float, got: float) -> float:
    """Accuracy points lost, or % of the best loss lost (scores are -loss), capped at 100 (a blow-up)."""
    if task.kind == "accuracy":
        return best - got
    return min(100.0, 100.0 * (best - got) / abs(best))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 tasks, one seed, a coarser grid")
    parser.add_argument("--ground-truth-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    parser.add_argument("--num-steps", type=int, default=NUM_STEPS, help="points per range test (default 100)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("torch_lrrange").setLevel(logging.WARNING)
    all_tasks = tasks()[:3] if args.quick else tasks()
    seeds = (0,) if args.quick else (0, 1)
    lrs = grid(args.quick)
    train_cache = Cache("trained.json")
    curve_cache = Cache("curves.json")

    k = args.num_steps
    rows: dict[str, list[tuple[bool, float, float]]] = {}
    for task in all_tasks:
        truth = {p: np.array([trained(train_cache, task, lr, p, seeds) for lr in lrs]) for p in PROTOCOLS}
        if args.ground_truth_only:
            print(task.name, {p: np.round(v, 3).tolist() for p, v in truth.items()}, flush=True)
            continue
        curve = curve_cache.get(f"{task.name}|ours|{k}", lambda task=task: our_curve(task, k))
        peers = {
            "torch-lr-finder": curve_cache.get(f"{task.name}|tlf|{k}", lambda task=task: torch_lr_finder_lr(task, k)),
            "lightning": curve_cache.get(f"{task.name}|pl|{k}", lambda task=task: lightning_lr(task, k)),
        }
        for method, by_protocol in suggestions(curve, peers).items():
            for protocol in PROTOCOLS:
                scores = truth[protocol]
                best_i = int(np.argmax(scores))
                best = float(scores[best_i])
                band = _band(task, scores, best)
                lr = by_protocol[protocol]
                if lr is None:
                    case = (False, float(np.log10(lrs[-1] / lrs[0])), regret(task, best, float(np.min(scores))))
                else:
                    nearest = int(np.argmin(np.abs(np.log10(lrs) - math.log10(lr))))
                    got = trained(train_cache, task, lr, protocol, seeds)
                    case = (bool(band[nearest]), abs(math.log10(lr / lrs[best_i])), regret(task, best, got))
                rows.setdefault(method, []).append(case)
                if args.verbose:
                    band_lrs = lrs[band]
                    print(
                        f"{task.name:22s} {protocol:8s} {method:16s} lr={'-' if lr is None else f'{lr:.2e}':9s} "
                        f"best={lrs[best_i]:.1e} band=[{band_lrs.min():.1e}, {band_lrs.max():.1e}] "
                        f"in={case[0]!s:5s} dist={case[1]:.2f} regret={case[2]:.2f}",
                        flush=True,
                    )
    if args.ground_truth_only:
        return
    cases = len(all_tasks) * len(PROTOCOLS)
    print(
        f"\n{len(all_tasks)} tasks x {len(PROTOCOLS)} protocols = {cases} cases; grid {len(lrs)} LRs "
        f"{lrs[0]:.0e}..{lrs[-1]:.0e}; seeds {seeds}; range tests of {args.num_steps} steps"
    )
    print(f"{'method':18s} {'in-band':>9s} {'mean |dlog10|':>14s} {'mean regret':>12s}")
    for method, cs in rows.items():
        inband = np.mean([c[0] for c in cs])
        dist = np.mean([c[1] for c in cs])
        reg = np.mean([c[2] for c in cs])
        print(f"{method:18s} {inband:9.0%} {dist:14.2f} {reg:12.2f}")
    print("regret: accuracy points, or % of the best validation loss (diabetes)")


def _band(task: Task, scores: np.ndarray, best: float) -> np.ndarray:
    """Grid LRs within 1 accuracy point (2% of the loss) of the best, as an interval (noise makes holes)."""
    good = scores >= (best - 1.0 if task.kind == "accuracy" else best - 0.02 * abs(best))
    idx = np.flatnonzero(good)
    band = np.zeros_like(good)
    band[idx.min() : idx.max() + 1] = True
    return band


if __name__ == "__main__":
    main()
