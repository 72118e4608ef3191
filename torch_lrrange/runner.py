"""``range_test()``: the whole LR range test in one call, for users without a loop."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from . import confirm as confirming
from . import distributed
from ._checks import check_int, check_loader, check_positive_float, check_stateful, keyword_options
from ._modes import evaluating
from .context import RangeTest
from .loaders import LoaderState, restoring
from .result import RangeTestResult
from .snapshot import Snapshot

logger = logging.getLogger("torch_lrrange")

__all__ = ["range_test", "to_device"]

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor nested in tuples, lists and dicts moved to ``device``.

    Named tuples and dict subclasses keep their type; anything else (dataclasses,
    custom objects, strings) is returned as it is.
    """
    device = torch.device(device)
    # Non-blocking only towards an accelerator: a non-blocking copy to the host
    # could be read before it lands.
    return _moved(batch, device, device.type != "cpu")


def _moved(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        moved = {k: _moved(v, device, non_blocking) for k, v in batch.items()}
        if type(batch) is dict:
            return moved
        out = copy.copy(batch)  # keeps a subclass's own state (a defaultdict's factory)
        out.update(moved)
        return out
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_moved(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_moved(v, device, non_blocking) for v in batch)
    return batch


def _needs_closure(optimizer: Any) -> bool:
    return isinstance(optimizer, torch.optim.LBFGS)


def _passes(loader: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``loader``, pass after pass (one pass for a one-shot iterator).

    A point may span more batches than one pass holds (accumulation, ``val_every``),
    so passes are chained here rather than checked one by one in ``RangeTest.batches``.
    """
    one_shot = isinstance(loader, Iterator)
    while True:
        count = 0
        for batch in loader:
            count += 1
            yield batch
        if one_shot or count == 0:
            return


def range_test(
    model: nn.Module,
    optimizer: Any,
    loader: Iterable[Any],
    loss_fn: LossFn,
    *,
    accumulation_steps: int = 1,
    device: torch.device | str | None = None,
    scaler: torch.amp.GradScaler | None = None,
    val_loader: Iterable[Any] | None = None,
    val_every: int = 1,
    confirm: bool | int = False,
    clip: float | None = None,
    **options: Any,
) -> RangeTestResult:
    """Run an LR range test with a standard training step and return its result.

    Each optimizer step takes ``accumulation_steps`` micro-batches (their losses
    divided by ``accumulation_steps`` before ``backward()``). ``loss_fn(model,
    batch)`` returns the scalar loss and receives each batch unchanged (or with
    the tensors nested in tuples, lists and dicts moved to ``device``); wrap its
    forward pass in ``torch.autocast`` for mixed precision. The model is used in
    the train/eval mode it is in (call ``model.train()`` first). Optimizers that
    need a closure (LBFGS) are stepped with one that evaluates the step's
    micro-batches. A model with ``no_sync()`` (DDP) skips the gradient all-reduce
    for all but the last micro-batch of a step. Everything is restored afterwards,
    ``scaler`` included.

    What each point records:

    * without ``val_loader``: the training loss of one optimizer step, the mean
      of its ``accumulation_steps`` micro-batch losses (for LBFGS, the loss the
      closure returned first, before the step).
    * with ``val_loader`` (validation-loss mode, as in Smith's original test):
      each point is ``val_every`` optimizer steps at the point's LR, followed by
      one pass over ``val_loader`` in eval mode under ``torch.no_grad()`` (the
      train/eval mode of every submodule is put back after it); the point's loss
      is the mean of the per-batch validation losses. A sweep of ``num_steps``
      points then takes ``num_steps * val_every`` optimizer steps.

    Args:
        model, optimizer: as for :class:`RangeTest`.
        loader: an iterable of training batches (iterated again when it runs out;
            a one-shot iterator that runs out ends the sweep early with a warning).
        loss_fn: ``loss_fn(model, batch) -> loss``, a scalar tensor.
        accumulation_steps: micro-batches per optimizer step, int >= 1. Default 1.
        device: move the tensors in each batch (training and validation) there
            first. Default None (batches are passed as they are).
        scaler: a ``torch.amp.GradScaler`` to scale the loss and step through
            (``scaler.scale(loss).backward()``, ``scaler.step(optimizer)``,
            ``scaler.update()``); it is snapshotted and restored. Steps it skips
            (non-finite gradients) still record their (finite) loss. Default None.
        val_loader: a fixed, re-iterable validation set; switches to
            validation-loss mode. Default None (record the training loss).
        val_every: optimizer steps per point in validation-loss mode, int >= 1. Default 1.
        confirm: after the sweep, confirm the LR by short runs (:mod:`torch_lrrange.confirm`):
            from the same snapshot, ``confirm.COUNT`` (6) constant candidate LRs half a
            decade apart below the curve's climb point, ``confirm`` optimizer steps each
            (``True``: ``confirm.STEPS``, 100); the candidate whose last 10 training losses
            are lowest (with ``val_loader``: whose validation loss after its run is lowest)
            becomes ``result.lr``, and ``result.max_lr`` a third of a decade above it. The
            candidates, their scores and the steps are in ``result.metadata["confirmation"]``.
            Costs ``6 * confirm`` more optimizer steps; everything is restored afterwards.
            Default False.
        clip: the largest total gradient norm (2-norm over all of the optimizer's params, a float > 0):
            ``torch.nn.utils.clip_grad_norm_`` before every optimizer step, once per step with
            ``accumulation_steps``, after ``scaler.unscale_(optimizer)`` with a ``scaler``, and inside
            the closure after ``backward()`` for LBFGS. No host sync. Default None (no clipping).
        **options: :class:`RangeTest` keywords (start_lr, end_lr, num_steps, extra_state, ...).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> x = torch.randn(640, 10)
        >>> loader = list(zip(x.split(32), (x[:, 0] > 0).long().split(32)))
        >>> loss_fn = lambda m, batch: nn.functional.cross_entropy(m(batch[0]), batch[1])
        >>> result = range_test(model, opt, loader, loss_fn, start_lr=1e-4, end_lr=10, num_steps=80)
        >>> result.min_lr <= result.lr <= result.max_lr
        True
    """
    accumulation_steps = check_int("accumulation_steps", accumulation_steps, minimum=1)
    val_every = check_int("val_every", val_every, minimum=1)
    confirm_steps = _confirm_steps(confirm)
    max_norm = None if clip is None else check_positive_float("clip", clip)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}")
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    if val_loader is not None and (isinstance(val_loader, Iterator) or not isinstance(val_loader, Iterable)):
        raise TypeError(
            f"val_loader must be a re-iterable collection of batches (a DataLoader, a list), got {type(val_loader).__name__}"
        )
    check_loader("loader", loader)
    if isinstance(device, str):
        try:
            torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"device must name a torch device ('cpu', 'cuda', 'cuda:1', ...), got {device!r}") from err
    allowed = keyword_options(RangeTest)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"range_test() got unknown option(s) {', '.join(unknown)}; the options are {', '.join(allowed)}"
        )
    closure_mode = _needs_closure(optimizer)
    if scaler is not None:
        check_stateful("scaler", scaler)
        if closure_mode:
            raise ValueError(f"scaler cannot be used with {type(optimizer).__name__}, which steps with a closure")
        extra = tuple(options.get("extra_state", ()))
        if not any(obj is scaler for obj in extra):
            options["extra_state"] = (*extra, scaler)
    tester = RangeTest(model, optimizer, **options)

    def train_step(micro_batches: list[Any]) -> torch.Tensor:
        """One optimizer step over ``micro_batches``; returns their mean loss."""
        if closure_mode:
            return optimizer.step(lambda: _closure_loss(model, optimizer, loss_fn, micro_batches, max_norm))
        optimizer.zero_grad()
        total: torch.Tensor | None = None
        last = len(micro_batches) - 1
        no_sync = getattr(model, "no_sync", None)  # DDP: reduce gradients once per optimizer step
        for i, batch in enumerate(micro_batches):
            with no_sync() if i < last and no_sync is not None else contextlib.nullcontext():
                loss = _scalar_loss(loss_fn(model, batch))
                scaled = loss / accumulation_steps if accumulation_steps > 1 else loss
                (scaled if scaler is None else scaler.scale(scaled)).backward()
            loss = loss.detach()
            total = loss if total is None else total + loss
        if max_norm is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            _clip(optimizer, max_norm)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        assert total is not None
        return total / accumulation_steps if accumulation_steps > 1 else total

    def optimizer_steps(batches: Iterator[Any]) -> Iterator[torch.Tensor]:
        """One training step per ``accumulation_steps`` batches; yields each step's loss."""
        micro_batches: list[Any] = []
        for batch in batches:
            micro_batches.append(batch if device is None else to_device(batch, device))
            if len(micro_batches) == accumulation_steps:
                yield train_step(micro_batches)
                micro_batches = []

    with restoring([loader, val_loader], stacklevel=2), tester as rt:
        steps = 0
        for loss in optimizer_steps(rt.batches(_passes(loader))):
            if val_loader is None:
                rt.record(loss)
                continue
            steps += 1
            if steps == val_every:
                rt.record(_validation_loss(model, val_loader, loss_fn, device))
                steps = 0
    result = tester.result
    assert result is not None
    samples = _training_samples(loader)
    if val_loader is None and samples is not None and samples <= SMALL_TRAINING_SET:
        result.suggestion.warnings.append(
            f"small training set ({samples} samples): over-fitting may set the best LR, and a training-loss "
            "sweep cannot see it; pass val_loader= (with confirm=True) to read the validation loss"
        )
    if confirm_steps and result.suggestion.climb_at is not None:
        lrs = confirming.candidates(result.suggestion.climb_at)
        with restoring([loader, val_loader], stacklevel=2):
            scores = _candidate_runs(
                model,
                optimizer,
                tester,
                lrs,
                confirm_steps,
                LoaderState([loader, val_loader]),
                lambda: optimizer_steps(_passes(loader)),
                None if val_loader is None else lambda: _validation_loss(model, val_loader, loss_fn, device),
            )
        _confirmed(result, lrs, scores, confirm_steps, by="validation" if val_loader is not None else "training")
    return result


#: At most this many training samples, ``range_test`` without a ``val_loader`` warns that over-fitting
#: may set the best LR (on the benchmark's tasks of 100 to 353 samples, validation-aware readings came closer).
SMALL_TRAINING_SET = 1000


def _training_samples(loader: Any) -> int | None:
    """Samples in ``loader``'s data set when it says (a DataLoader over a sized data set), else None."""
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an IterableDataset without __len__
        return None


def _confirm_steps(confirm: Any) -> int:
    """Steps per candidate run for ``range_test(confirm=)``: 0 (off), ``STEPS`` for True, or the int given."""
    if confirm is False or confirm is None:
        return 0
    if confirm is True:
        return confirming.STEPS
    try:
        return check_int("confirm", confirm, minimum=1)
    except TypeError as err:
        raise TypeError(f"confirm must be True, False or an int >= 1 (steps per candidate), got {confirm!r}") from err


def _candidate_runs(
    model: nn.Module,
    optimizer: Any,
    tester: RangeTest,
    lrs: list[float],
    steps: int,
    loaders: LoaderState,
    new_steps: Callable[[], Iterator[torch.Tensor]],
    validation: Callable[[], torch.Tensor] | None,
) -> list[list[float]]:
    """Each candidate's run from one snapshot: its losses (or ``[validation loss]``), read once per run.

    Every run starts from the same state and sees the same batches (the loaders'
    generators are put back before each); every param group keeps its LR's
    ratio to group 0's. A run that ends early (a one-shot loader ran out)
    scores as cut short. Model, optimizer, ``extra_state`` and RNGs are
    restored after the last run, also on errors; losses are averaged over the
    ranks of ``process_group``.
    """
    reducer = distributed.LossReducer(tester.process_group)
    snapshot = Snapshot.take(model, optimizer, *tester.extra_state, where=tester.snapshot_where)
    ratios = [float(group["lr"]) / float(optimizer.param_groups[0]["lr"]) for group in optimizer.param_groups]
    runs: list[list[float]] = []
    try:
        for lr in lrs:
            snapshot.restore()
            loaders.restore()
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio if not isinstance(group["lr"], torch.Tensor) else group["lr"].fill_(lr * ratio)
            losses = [loss.detach().float().reshape(()) for _, loss in zip(range(steps), new_steps())]
            if len(losses) < steps:
                runs.append([math.inf])  # cut short: scores infinity either way
                continue
            if validation is not None:
                losses = [validation().detach().float().reshape(())]
            window = reducer.average(torch.stack(losses))
            runs.append([float(v) for v in window.tolist()])  # one host read per run
    finally:
        snapshot.restore()
        snapshot.release()
    return runs


def _confirmed(result: RangeTestResult, lrs: list[float], runs: list[list[float]], steps: int, by: str) -> None:
    """Put the confirmation's choice into ``result`` (lr, max_lr, min_lr <= lr, metadata, warnings)."""
    # a run is judged by its last TAIL training losses, or by the one validation loss after it
    scored, tail = (1, 1) if by == "validation" else (steps, confirming.TAIL)
    suggestion = result.suggestion
    try:
        chosen = confirming.choose(lrs, runs, steps=scored, tail=tail)
    except ValueError as err:
        suggestion.warnings.append(f"confirmation phase: {err}; the curve's own reading is kept")
        return
    if suggestion.lr is None:  # the curve gave no LR; the runs did
        suggestion.confidence = 0.0
        suggestion.warnings.append("the LR comes from the confirmation phase alone: the curve gave none")
    suggestion.lr, suggestion.max_lr = chosen.lr, chosen.max_lr
    suggestion.min_lr = chosen.lr if suggestion.min_lr is None else min(suggestion.min_lr, chosen.lr)
    if chosen.lr in (chosen.candidates[0], chosen.candidates[-1]):
        edge = "smallest" if chosen.lr == chosen.candidates[0] else "largest"
        suggestion.warnings.append(f"the confirmed LR is the {edge} candidate: the best LR may lie beyond them")
    result.metadata["confirmation"] = {
        "by": by,
        "candidates": chosen.candidates,
        "scores": [None if math.isinf(v) else v for v in chosen.scores],
        "steps": steps,
        "lr": chosen.lr,
    }
    logger.info("confirmation phase: lr %.3g of %s (%s loss)", chosen.lr, chosen.candidates, by)


def _scalar_loss(loss: Any) -> torch.Tensor:
    """``loss_fn``'s return value, which must be a one-element tensor (checked from its metadata: no host read)."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got a tensor of shape {tuple(loss.shape)}")
    return loss


def _clip(optimizer: Any, max_norm: float) -> None:
    """Clip the gradients of every param of ``optimizer``'s groups to a total 2-norm of ``max_norm`` (no host read)."""
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_norm)


def _closure_loss(
    model: nn.Module, optimizer: Any, loss_fn: LossFn, micro_batches: list[Any], max_norm: float | None = None
) -> torch.Tensor:
    """The closure of a closure-stepped optimizer: gradients (clipped to ``max_norm``) and mean loss over the micro-batches."""
    optimizer.zero_grad()
    n = len(micro_batches)
    total: torch.Tensor | None = None
    for batch in micro_batches:
        loss = _scalar_loss(loss_fn(model, batch))
        (loss / n if n > 1 else loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    if max_norm is not None:
        _clip(optimizer, max_norm)
    return total / n if n > 1 else total


def _validation_loss(model: nn.Module, val_loader: Iterable[Any], loss_fn: LossFn, device: Any) -> torch.Tensor:
    """Mean per-batch loss over ``val_loader``, in eval mode and without grad; modes restored."""
    total: torch.Tensor | None = None
    count = 0
    with evaluating(model), torch.no_grad():
        for batch in val_loader:
            loss = _scalar_loss(loss_fn(model, batch if device is None else to_device(batch, device))).detach().float()
            total = loss if total is None else total + loss
            count += 1
    if total is None:
        raise ValueError("val_loader is empty: it yielded no batch")
    return total / count
