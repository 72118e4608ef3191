"""Does ``range_test_grid`` pick a weight decay (and a momentum) that trains well? Against ground truth.

Smith ("A disciplined approach to neural network hyper-parameters", arXiv
1803.09820) reads weight decay and momentum off LR range tests run at a few
values of each: the value whose curve reaches the lowest loss and stays stable
to the largest LR. ``range_test_grid`` runs those sweeps from one snapshot and
picks with :func:`torch_lrrange.grid.choose`; this script checks the pick.

Ground truth, per task (``_quality_tasks.py``, listed in ``TASKS``) and
protocol (constant LR, and OneCycleLR with ``max_lr`` on the grid): the fixed
training budget at every pair of (hyperparameter value, LR) on the grid (the
task's 16 LRs, a third of a decade apart, as in ``suggestion_quality.py``), from
the same initial weights, mean of two seeds.

* **Weight decay**: coupled (L2 in the gradient: SGD, Adam, Adagrad, Adadelta)
  over ``0, 1e-4, 1e-3, 1e-2, 1e-1``; decoupled (AdamW, where the decay per step
  is ``lr * weight_decay``, so the useful values are larger) over ``0, 1e-3,
  1e-2, 1e-1, 1``. The default is the optimizer's own (0.01 for AdamW, else 0).
* **Momentum**: SGD ``momentum`` and Adam/AdamW ``beta1`` (``betas``, beta2 kept)
  over Smith's short list ``0.8, 0.9, 0.95, 0.99``; the default is 0.9. Under
  one-cycle, Smith pairs the LR cycle with a cyclical momentum that starts at the
  chosen value and falls to 0.85 while the LR rises; training does so here
  (``OneCycleLR(max_momentum=m, base_momentum=min(m, 0.85))``; ``OneCycleLR``'s
  own default would overwrite the value under test with 0.95).

The recommendation is ``grid.best``: its hyperparameter value with its curve's
``lr`` (constant) or ``max_lr`` (one-cycle), trained like the ground truth; the
optimizer's own value is ``grid.current``. Reported per (task, protocol): the
best grid pair; the recommended pair; whether training at it is within
tolerance of the best grid pair (1 accuracy point, or 2% of the best validation
loss, as ``suggestion_quality.py``'s good band) and its regret; the same for the
default (the optimizer's own value with this library's LR read off that value's
curve) and for the best curve (the best of training at every value with its own
curve's LR: what a perfect pick among the sweeps would give); the cost in
optimizer steps of the range tests next to the ground-truth grid; and, as a
reference, full grid searches at seeds 2 and 3 (``CEILING_SEEDS``: the best pair
of the whole grid trained from other weights and batch order, scored on seeds 0
and 1; their mean): how often seed-to-seed noise alone moves the best pair out
of tolerance. Range tests: 1e-6 to 10, 100 steps, seed 0, the task's training
batches.

Held-out evaluation: the tasks in ``TUNING`` were the only ones looked at while
the rule was derived. The first rule (Smith's reading: the lowest loss, then
the largest ``max_lr``) was read once on the other four of the first seven
tasks; the final rule (the current setting kept unless another is clearly
better) was then derived from the tuning tasks alone, and the tasks in ``FRESH``
were added to the benchmark only after it was fixed, never looked at before.

    python benchmarks/hyperparam_quality.py                       # weight decay and momentum
    python benchmarks/hyperparam_quality.py --study weight_decay --verbose
    python benchmarks/hyperparam_quality.py --confirm validation  # confirm=True, val_loader=: confirmed LRs
    python benchmarks/hyperparam_quality.py --ground-truth-only   # fill the cache and stop

Everything trained is cached in ``benchmarks/.cache/`` (delete it to retrain).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _quality_options import END_LR, START_LR
from _quality_rules import regret
from _quality_tasks import CEILING_SEEDS, PROTOCOLS, Cache, Task, tasks, trained

NUM_STEPS = 100

#: The only tasks looked at while the rule was derived; all others are held out.
TUNING = ("mlp-digits/sgd", "cnn-digits/adam", "lstm-seq/adamw")
#: Held out and never looked at before the final rule's figure: added to the benchmark once the rule was fixed.
FRESH = ("mlp-tabular/adagrad", "ln-mlp-tabular/sgd-bs16", "mnist-example/adadelta", "vit-shapes/adamw")
#: The first seven tasks of ``_quality_tasks``: the rule's tuning tasks and the four held out from the start.
FIRST_SEVEN = (
    "mlp-digits/sgd",
    "cnn-digits/adam",
    "bn-mlp-digits/sgd",
    "mlp-diabetes/sgd",
    "lstm-seq/adamw",
    "transformer-seq/adamw",
    "bn-cnn-digits/adamw",
)
#: The tasks of each study: the first seven and fresh ones (momentum: those whose optimizer has a momentum).
TASKS = {
    "weight_decay": (*FIRST_SEVEN, "mlp-tabular/adagrad", "ln-mlp-tabular/sgd-bs16", "mnist-example/adadelta"),
    "momentum": (*FIRST_SEVEN, "ln-mlp-tabular/sgd-bs16", "vit-shapes/adamw"),
}
COUPLED_WD = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
DECOUPLED_WD = (0.0, 1e-3, 1e-2, 1e-1, 1.0)
MOMENTA = (0.8, 0.9, 0.95, 0.99)
#: Smith's cyclical momentum under one-cycle falls to this value while the LR rises.
CYCLE_LOW_MOMENTUM = 0.85
STUDIES = ("weight_decay", "momentum")


# --- what is swept ------------------------------------------------------------------


def _group0(task: Task) -> dict[str, Any]:
    return task.optimizer(task.build(0).parameters(), 1e-3).param_groups[0]


@dataclass
class Study:
    """One hyperparameter of one task: the key, the values on the grid and the optimizer's default."""

    key: str
    values: tuple[Any, ...]
    default: Any

    def hyper(self, value: Any) -> dict[str, Any]:
        return {self.key: value}

    def shown(self, value: Any) -> str:
        return f"{value[0]:g}" if isinstance(value, tuple) else f"{value:g}"


def study(task: Task, name: str) -> Study | None:
    """What ``name`` sweeps for ``task``; None for momentum when the optimizer has none (Adagrad, Adadelta)."""
    group = _group0(task)
    if name == "weight_decay":
        values = DECOUPLED_WD if group.get("decoupled_weight_decay", False) else COUPLED_WD
        return Study("weight_decay", values, float(group["weight_decay"]))
    if "betas" in group:
        beta2 = float(group["betas"][1])
        return Study("betas", tuple((m, beta2) for m in MOMENTA), tuple(float(b) for b in group["betas"]))
    if float(group.get("momentum", 0.0)) > 0:
        return Study("momentum", MOMENTA, float(group["momentum"]))
    return None


@contextlib.contextmanager
def _cyclical_momentum(s: Study, value: Any) -> Iterator[None]:
    """One-cycle training of a momentum study: ``OneCycleLR`` cycles momentum down from ``value``.

    ``_quality_tasks.train`` builds ``OneCycleLR`` with its default momentum cycle
    (0.95 to 0.85), which would overwrite the value under test; for the duration of
    the call its ``max_momentum``/``base_momentum`` defaults become Smith's.
    """
    if s.key == "weight_decay":
        yield
        return
    top = value[0] if isinstance(value, tuple) else value
    original = torch.optim.lr_scheduler.OneCycleLR

    class OneCycleFrom(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("max_momentum", top)
            kwargs.setdefault("base_momentum", min(top, CYCLE_LOW_MOMENTUM))
            super().__init__(*args, **kwargs)

    torch.optim.lr_scheduler.OneCycleLR = OneCycleFrom  # type: ignore[misc]
    try:
        yield
    finally:
        torch.optim.lr_scheduler.OneCycleLR = original  # type: ignore[misc]


def train_at(cache: Cache, task: Task, s: Study, value: Any, lr: float, protocol: str, seeds: tuple[int, ...]) -> float:
    with _cyclical_momentum(s, value) if protocol == "onecycle" else contextlib.nullcontext():
        return trained(cache, task, lr, protocol, seeds, s.hyper(value))


def truth(cache: Cache, task: Task, s: Study, lrs: np.ndarray, protocol: str, seeds: tuple[int, ...]) -> np.ndarray:
    """Scores (higher is better) of the ground-truth grid: one row per value, one column per LR."""
    return np.array([[train_at(cache, task, s, v, float(lr), protocol, seeds) for lr in lrs] for v in s.values])


# --- range tests ------------------------------------------------------------------------


def grid_test(task: Task, s: Study, num_steps: int, confirm: str | None = None) -> tuple[Any, int]:
    """``range_test_grid`` over the study's values, and the optimizer steps it took.

    ``confirm``: None (the curves alone), ``"training"`` (``confirm=True``: each
    value's LR confirmed by short runs, judged by their training loss) or
    ``"validation"`` (``confirm=True, val_loader=``: judged by the validation loss).
    """
    from torch_lrrange import range_test_grid

    model = task.build(0)
    opt = task.optimizer(model.parameters(), 1e-3)
    steps = 0

    def loss_fn(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        nonlocal steps
        steps += torch.is_grad_enabled()  # one micro-batch per optimizer step; validation passes run without grad
        return task.loss(m(batch[0]), batch[1])

    result = range_test_grid(
        model,
        opt,
        task.loader(0),
        loss_fn,
        grid={s.key: list(s.values)},
        start_lr=START_LR,
        end_lr=END_LR,
        num_steps=num_steps,
        progress=False,
        confirm=confirm is not None,
        val_loader=task.val_loader() if confirm == "validation" else None,
    )
    return result, steps


def _library_version() -> str:
    """A hash of the library's sources: a range test cached under another version is run again."""
    import torch_lrrange

    digest = hashlib.sha256()
    folder = os.path.dirname(torch_lrrange.__file__)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:12]


def cached_grid_test(cache: Cache, task: Task, s: Study, num_steps: int, confirm: str | None) -> tuple[Any, int]:
    from torch_lrrange import GridResult

    values = ",".join(s.shown(v) for v in s.values)
    mode = "" if confirm is None else f"|confirm-{confirm}"
    key = f"{task.name}|grid|{s.key}|{num_steps}|{values}{mode}|{_library_version()}"
    saved = cache.get(
        key, lambda: (lambda g: {"grid": g[0].to_dict(), "steps": g[1]})(grid_test(task, s, num_steps, confirm))
    )
    return GridResult.from_dict(saved["grid"]), int(saved["steps"])


# --- scoring ------------------------------------------------------------------------------


@dataclass
class Case:
    task: str
    protocol: str
    best: tuple[Any, float]
    recommended: tuple[Any, float] | None
    within: bool
    regret: float
    default_within: bool
    default_regret: float
    oracle_within: bool
    oracle_regret: float
    ceiling_within: float  # the fraction of CEILING_SEEDS whose search lands within tolerance
    ceiling_regret: float  # mean over CEILING_SEEDS
    steps: int
    truth_steps: int
    split: str  # "tuning", "held out" or "fresh"


def tolerance(task: Task, best: float) -> float:
    """1 accuracy point, or 2% of the best validation loss (scores of a loss task are -loss)."""
    return 1.0 if task.kind == "accuracy" else 0.02 * abs(best)


def _lr(result: Any, protocol: str) -> float:
    return result.lr if protocol == "constant" else result.max_lr


def evaluate(
    cache: Cache,
    task: Task,
    s: Study,
    lrs: np.ndarray,
    seeds: tuple[int, ...],
    num_steps: int,
    verbose: bool,
    confirm: str | None = None,
) -> list[Case]:
    from torch_lrrange import UnusableCurveError

    g, steps = cached_grid_test(cache, task, s, num_steps, confirm)
    per_run = task.epochs * len(task.loader(0))
    cases = []
    for protocol in PROTOCOLS:
        scores = truth(cache, task, s, lrs, protocol, seeds)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        best = float(scores[i, j])
        worst = float(np.min(scores))
        tol = tolerance(task, best)
        # training at each usable curve's own recommendation: the pick, the default and the best pick possible
        own = {
            values: train_at(cache, task, s, values[0], _lr(r, protocol), protocol, seeds)
            for values, r in g.results.items()
            if r.usable
        }
        recommended: tuple[Any, float] | None
        try:
            values, result = g.best
            recommended = (values[s.key], _lr(result, protocol))
            got = own[(values[s.key],)]
        except UnusableCurveError:
            recommended, got = None, worst
        default_got = own.get((s.default,), worst)
        oracle_got = max(own.values(), default=worst)
        ceiling_got = [
            float(scores.flat[int(np.argmax(truth(cache, task, s, lrs, protocol, (seed,))))]) for seed in CEILING_SEEDS
        ]
        case = Case(
            task.name,
            protocol,
            (s.values[i], float(lrs[j])),
            recommended,
            got >= best - tol,
            regret(task.kind, best, got),
            default_got >= best - tol,
            regret(task.kind, best, default_got),
            oracle_got >= best - tol,
            regret(task.kind, best, oracle_got),
            float(np.mean([g >= best - tol for g in ceiling_got])),
            float(np.mean([regret(task.kind, best, g) for g in ceiling_got])),
            steps,
            len(s.values) * len(lrs) * per_run * len(seeds),
            "tuning" if task.name in TUNING else "fresh" if task.name in FRESH else "held out",
        )
        cases.append(case)
        if verbose:
            print(_row(case, s), flush=True)
            for line in g.table().splitlines():
                print("    " + line)
    return cases


def _row(c: Case, s: Study) -> str:
    rec = "-" if c.recommended is None else f"{s.shown(c.recommended[0])} @ {c.recommended[1]:.2e}"
    return (
        f"| {c.task} | {c.protocol} | {c.split} | "
        f"{s.shown(c.best[0])} @ {c.best[1]:.2e} | {rec} | {'yes' if c.within else 'no'} | "
        f"{c.regret:.2f} | {'yes' if c.default_within else 'no'} | {c.default_regret:.2f} | "
        f"{'yes' if c.oracle_within else 'no'} | {c.oracle_regret:.2f} | {c.steps} / {c.truth_steps} |"
    )


def summary(label: str, cases: list[Case]) -> str:
    if not cases:
        return f"| {label} | 0 | | | | | | | | | |"

    def mean(field: str) -> float:
        return float(np.mean([getattr(c, field) for c in cases]))

    cost = np.mean([c.steps / c.truth_steps for c in cases])
    return (
        f"| {label} | {len(cases)} | {mean('within'):.0%} | {mean('regret'):.2f} | {mean('default_within'):.0%} | "
        f"{mean('default_regret'):.2f} | {mean('oracle_within'):.0%} | {mean('oracle_regret'):.2f} | {cost:.2%} | "
        f"{mean('ceiling_within'):.0%} | {mean('ceiling_regret'):.2f} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=STUDIES, action="append", help="(default: both)")
    parser.add_argument("--ground-truth-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--verbose", action="store_true", help="every case, with each grid's table")
    parser.add_argument("--num-steps", type=int, default=NUM_STEPS, help="points per range test (default 100)")
    parser.add_argument("--tasks", help="comma-separated task names (default: the study's TASKS)")
    parser.add_argument(
        "--confirm",
        choices=("training", "validation"),
        help="range_test_grid(confirm=True): each value's LR confirmed by short runs, judged by this loss, "
        "and the values compared by those runs",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("torch_lrrange").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    seeds = (0, 1)
    cache = Cache("hyperparam_quality.json")
    for name in args.study or STUDIES:
        chosen = args.tasks.split(",") if args.tasks else TASKS[name]
        all_tasks = [t for t in tasks() if t.name in chosen]
        cases: list[Case] = []
        for task in all_tasks:
            s = study(task, name)
            if s is None:
                continue
            lrs = task.grid()
            if args.ground_truth_only:
                for protocol in PROTOCOLS:
                    for seed in CEILING_SEEDS:
                        truth(cache, task, s, lrs, protocol, (seed,))
                    scores = truth(cache, task, s, lrs, protocol, seeds)
                    print(name, task.name, protocol, np.round(scores.max(1), 2).tolist(), flush=True)
                continue
            cases += evaluate(cache, task, s, lrs, seeds, args.num_steps, args.verbose, args.confirm)
        if args.ground_truth_only:
            continue
        how = "the curves alone" if args.confirm is None else f"confirm=True, judged by the {args.confirm} loss"
        print(
            f"\n## {name}: {len(all_tasks)} tasks x {len(PROTOCOLS)} protocols, seeds {seeds}, 16 LRs per task; "
            f"range_test_grid with {how}"
        )
        print(
            "\n| task | protocol | set | best grid pair | recommended | within tol. | regret | default within "
            "| default's regret | best curve within | best curve's regret | steps: range tests / grid |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        order = ("fresh", "held out", "tuning")
        for c in sorted(cases, key=lambda c: order.index(c.split)):
            s = study(next(t for t in all_tasks if t.name == c.task), name)
            assert s is not None
            print(_row(c, s))
        print(
            "\n| cases | n | recommended within tol. | mean regret | default within tol. | default's mean regret "
            "| best curve within tol. | best curve's mean regret | steps vs grid | grid search at seeds "
            f"{CEILING_SEEDS}: within tol. | its mean regret |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        print(summary("held out, fresh", [c for c in cases if c.split == "fresh"]))
        print(summary("held out", [c for c in cases if c.split != "tuning"]))
        print(summary("tuning", [c for c in cases if c.split == "tuning"]))
        print(summary("all", cases))
        print(
            "regret: accuracy points, or % of the best validation loss (loss tasks), capped at 100; default: the "
            "optimizer's own value at this library's LR from its curve; best curve: the best of training at each "
            "grid value with its own curve's LR (what a perfect pick among the sweeps would give); grid search: the "
            f"best pair of the whole grid trained at each of seeds {CEILING_SEEDS}, scored on seeds {seeds}, mean "
            "over the two searches (the ceiling that seed-to-seed noise sets, at the grid's cost)"
        )


if __name__ == "__main__":
    main()
