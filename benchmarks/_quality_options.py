"""The benchmark's range tests, and the options beyond the rule, measured on the same tasks.

* :func:`range_test_of`, :func:`sweep`: the range test a user runs (``range_test`` on the task's
  training loader), its raw curve kept whole so every rule can read it.
* :func:`validation_sweep`: the same sweep reading the validation loss, either
  through ``range_test(..., val_loader=)`` (the whole validation set after each
  step) or in the user's own loop (one validation batch per step, recorded with
  ``RangeTest.record``).
* :func:`confirm`: a confirmation phase prototype: after the sweep, short runs
  at a few candidate LRs from the same starting state, keeping the best.
* :func:`lr_free`: what a user might pick instead of a finder: Prodigy,
  D-Adaptation Adam and Schedule-Free AdamW at their documented defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from _quality_tasks import Cache, Task, fit

from torch_lrrange import RangeTest, Snapshot, range_test

START_LR, END_LR = 1e-6, 10.0
#: The sweep runs on past divergence (the analysis cuts the curve where a default sweep would stop).
RECORD_THRESHOLD = 1e6


def _loss_fn(task: Task) -> Callable[[Any, Any], torch.Tensor]:
    return lambda m, b: task.loss(m(b[0]), b[1])


def range_test_of(task: Task, num_steps: int, **kwargs: Any) -> Any:
    """``range_test`` of the task from seed 0's weights and batch order (1e-6 to 10); ``kwargs`` go to it."""
    model = task.build(0)
    opt = task.optimizer(model.parameters(), 1e-3)
    return range_test(
        model,
        opt,
        task.loader(0),
        _loss_fn(task),
        start_lr=START_LR,
        end_lr=END_LR,
        num_steps=num_steps,
        progress=False,
        **kwargs,
    )


def sweep(task: Task, num_steps: int, repeats: int = 1) -> dict[str, list[float]]:
    """One range test of the task from seed 0's weights (1e-6 to 10): its LRs and raw losses."""
    result = range_test_of(task, num_steps, repeats=repeats, diverge_threshold=RECORD_THRESHOLD, confirm=False)
    return {"lrs": result.lrs.tolist(), "losses": result.losses.tolist()}


def defaults(task: Task, num_steps: int) -> dict[str, Any]:
    """What ``range_test`` gives at its defaults (confirmation included): ``{"lr", "max_lr", "steps"}``."""
    steps = 0
    loss_fn = _loss_fn(task)

    def counted(m: Any, b: Any) -> torch.Tensor:
        nonlocal steps
        steps += 1
        return loss_fn(m, b)

    model = task.build(0)
    opt = task.optimizer(model.parameters(), 1e-3)
    result = range_test(
        model, opt, task.loader(0), counted, start_lr=START_LR, end_lr=END_LR, num_steps=num_steps, progress=False
    )
    if not result.usable:
        return {"lr": None, "max_lr": None, "steps": steps}
    return {"lr": result.lr, "max_lr": result.max_lr, "steps": steps}


def curve(cache: Cache, task: Task, num_steps: int) -> dict[str, list[float]]:
    """:func:`sweep`'s curve, cached under ``"<task>|raw|<num_steps>"``."""
    return cache.get(f"{task.name}|raw|{num_steps}", lambda: sweep(task, num_steps))


def validation_sweep(task: Task, num_steps: int, own_loop: bool) -> dict[str, list[float]]:
    """A range test of the validation loss.

    ``own_loop=False``: ``range_test(..., val_loader=task.val_loader())``, the
    whole validation set after every step. ``own_loop=True``: a ``RangeTest``
    around a plain loop that records, after each step, the loss of the next
    validation batch (training batch size, cycling through the set).
    """
    model = task.build(0)
    opt = task.optimizer(model.parameters(), 1e-3)
    common = dict(
        start_lr=START_LR, end_lr=END_LR, num_steps=num_steps, diverge_threshold=RECORD_THRESHOLD, confirm=False
    )
    if not own_loop:
        result = range_test(
            model, opt, task.loader(0), _loss_fn(task), val_loader=task.val_loader(), progress=False, **common
        )
        return {"lrs": result.lrs.tolist(), "losses": result.losses.tolist()}
    val = task.val_loader(task.batch_size)
    with RangeTest(model, opt, progress=False, **common) as rt:
        for i, (x, y) in enumerate(rt.batches(task.loader(0))):
            opt.zero_grad()
            task.loss(model(x), y).backward()
            opt.step()
            xv, yv = val[i % len(val)]
            model.eval()
            with torch.no_grad():
                val_loss = task.loss(model(xv), yv)
            model.train()
            rt.record(val_loss)
    assert rt.result is not None
    return {"lrs": rt.result.lrs.tolist(), "losses": rt.result.losses.tolist()}


# --- confirmation phase --------------------------------------------------------------------


def _each_candidate(task: Task, candidates: list[float]) -> Iterator[tuple[torch.nn.Module, Any]]:
    """Seed 0's model and the task's optimizer, back at one snapshot with each candidate's LR in turn.

    Yields ``(model, optimizer)`` once per candidate; the snapshot is put back and
    released when the loop ends (also when it stops early).
    """
    model = task.build(0)
    opt = task.optimizer(model.parameters(), 1e-3)
    snapshot = Snapshot.take(model, opt)
    try:
        for lr in candidates:
            snapshot.restore()
            for group in opt.param_groups:
                group["lr"] = lr
            yield model, opt
    finally:
        snapshot.restore()
        snapshot.release()


def _train(
    task: Task,
    model: torch.nn.Module,
    opt: Any,
    batches: Iterator[Any],
    steps: int,
    after_step: Callable[[int], None] | None = None,
) -> list[float]:
    """``steps`` optimizer steps on ``batches``; every training loss, the run stopping at the first non-finite one.

    ``after_step(n)`` is called after the n-th step (1-based).
    """
    losses: list[float] = []
    for step in range(1, steps + 1):
        x, y = next(batches)
        opt.zero_grad()
        loss = task.loss(model(x), y)
        losses.append(float(loss.detach()))
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
    return losses


def confirm(task: Task, candidates: list[float], steps: int) -> dict[str, Any]:
    """Short constant-LR runs from seed 0's starting state, one per candidate: what a confirmation phase sees.

    Each run restores the same snapshot (``torch_lrrange.Snapshot``), takes
    ``steps`` optimizer steps on the training loader (seed 0's order) and
    records every training loss; after the run, the validation loss and the
    task's validation metric. A run whose loss turns non-finite stops there.
    Returns ``{"lrs", "runs" (training losses per run), "vals" (validation loss
    per run, inf after a blow-up), "metrics" (``Task.evaluate`` per run, nan
    after a blow-up), "steps"}``.
    """
    runs: list[list[float]] = []
    vals: list[float] = []
    metrics: list[float] = []
    for model, opt in _each_candidate(task, candidates):
        losses = _train(task, model, opt, _cycle(task.loader(0)), steps)
        runs.append(losses)
        finished = len(losses) == steps and math.isfinite(losses[-1])
        val = _val_loss(task, model) if finished else math.inf
        vals.append(val if math.isfinite(val) else math.inf)
        metrics.append(task.evaluate(model) if finished else math.nan)
    return {"lrs": list(candidates), "runs": runs, "vals": vals, "metrics": metrics, "steps": steps}


#: Fine candidates: this many, a quarter decade apart below the climb point (every other one is a default candidate).
FINE_COUNT = 12
FINE_SPACING = 10.0**0.25
#: Steps of the fine runs, and the steps after which each records its validation loss.
FINE_STEPS = 200
FINE_VAL_AT = (25, 50, 100, 150, 200)


def fine_candidates(climb_at: float) -> list[float]:
    """``FINE_COUNT`` LRs a quarter decade apart, the largest a quarter decade below ``climb_at``; increasing."""
    return [climb_at / FINE_SPACING ** (FINE_COUNT - i) for i in range(FINE_COUNT)]


def confirm_fine(task: Task, candidates: list[float]) -> dict[str, Any]:
    """:func:`confirm`'s runs at finer candidates, ``FINE_STEPS`` long, with validation losses at ``FINE_VAL_AT``.

    A run of n steps from the snapshot on seed 0's batches is the first n steps of a
    longer one, so these runs simulate any schedule of shorter runs (successive halving).
    Returns ``{"lrs", "runs", "vals": [[val at each of FINE_VAL_AT] per run], "val_at"}``.
    """
    runs: list[list[float]] = []
    vals: list[list[float]] = []
    for model, opt in _each_candidate(task, candidates):
        at: list[float] = []

        def validate(step: int, model: torch.nn.Module = model, at: list[float] = at) -> None:
            if step in FINE_VAL_AT:
                val = _val_loss(task, model)
                at.append(val if math.isfinite(val) else math.inf)

        runs.append(_train(task, model, opt, _cycle(task.loader(0)), FINE_STEPS, validate))
        vals.append(at + [math.inf] * (len(FINE_VAL_AT) - len(at)))
    return {"lrs": list(candidates), "runs": runs, "vals": vals, "val_at": list(FINE_VAL_AT)}


#: The holdout prototype keeps back every this-many-th batch of the first pass.
HOLDOUT_EVERY = 5


def confirm_holdout(task: Task, candidates: list[float], steps: int) -> dict[str, Any]:
    """Candidate runs judged by batches held back from them: a generalisation signal without a validation set.

    The first pass of seed 0's loader is kept as a list; every ``HOLDOUT_EVERY``-th batch
    is held back. Each candidate trains ``steps`` steps from the snapshot on the other
    batches, cycled in their order, and scores the mean loss of the held-back batches in
    eval mode after its run (inf after a blow-up). Returns ``{"lrs", "scores"}``.
    """
    batches = list(task.loader(0))
    held = batches[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY]
    train = [b for i, b in enumerate(batches) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    scores: list[float] = []
    for model, opt in _each_candidate(task, candidates):
        losses = _train(task, model, opt, itertools.cycle(train), steps)
        score = math.inf
        if math.isfinite(losses[-1]):
            model.eval()
            with torch.no_grad():
                score = sum(float(task.loss(model(x), y)) for x, y in held) / len(held)
            model.train()
        scores.append(score if math.isfinite(score) else math.inf)
    return {"lrs": list(candidates), "scores": scores}


def _cycle(loader: Any):
    while True:
        yield from loader


@torch.no_grad()
def _val_loss(task: Task, model: torch.nn.Module) -> float:
    model.eval()
    total, count = 0.0, 0
    for xv, yv in task.val_loader():
        total += float(task.loss(model(xv), yv)) * len(xv)
        count += len(xv)
    model.train()
    return total / count


# --- LR-free optimizers --------------------------------------------------------------------

LR_FREE = ("prodigy", "dadapt-adam", "schedulefree-adamw")


def _weight_decay(task: Task) -> float:
    """The task's decoupled weight decay (AdamW), which a user would carry over; 0 otherwise."""
    opt = task.optimizer([torch.nn.Parameter(torch.zeros(2, 2))], 1e-3)
    if isinstance(opt, torch.optim.AdamW):
        return float(opt.param_groups[0]["weight_decay"])
    return 0.0


def lr_free_optimizer(name: str, params: Any, task: Task) -> torch.optim.Optimizer:
    """``name`` at its documented defaults (lr 1 for Prodigy and D-Adaptation, 0.0025 for Schedule-Free)."""
    wd = _weight_decay(task)
    if name == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=1.0, weight_decay=wd)
    if name == "dadapt-adam":
        from dadaptation import DAdaptAdam

        return DAdaptAdam(params, lr=1.0, weight_decay=wd, decouple=wd > 0)
    if name == "schedulefree-adamw":
        from schedulefree import AdamWScheduleFree

        return AdamWScheduleFree(params, weight_decay=wd)
    raise ValueError(f"unknown LR-free optimizer {name!r}")


def lr_free(task: Task, name: str, seed: int) -> float:
    """Validation metric after the task's budget with ``name`` (no schedule; Schedule-Free needs none)."""
    model = task.build(seed)
    opt = lr_free_optimizer(name, model.parameters(), task)
    return fit(task, model, opt, None, seed)
