"""``range_test()``: the whole LR range test in one call, for users without a loop."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ._checks import check_int, check_loader, check_positive_float, check_stateful, keyword_options
from ._confirmation import confirm_steps as check_confirm
from ._loaders import LoaderState, Passes
from ._modes import evaluating
from ._range_test import RangeTest
from ._result import RangeTestResult
from ._rng import isolated

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
    val_batches: int | None = 8,
    confirm: bool | int | None = None,
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
      the loss on the first ``val_batches`` batches of ``val_loader`` (the same
      batches at every point: its generator is put back before each), in eval
      mode under ``torch.no_grad()`` (the train/eval mode of every submodule is
      put back after it); the point's loss is the mean of the per-batch
      validation losses. A sweep of ``num_steps`` points then takes
      ``num_steps * val_every`` optimizer steps. Confirmation runs are judged on
      the whole validation set.

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
        val_batches: validation batches per point of the sweep, int >= 1, or None for the
            whole ``val_loader`` at every point. Default 8 (bounds the sweep's validation cost).
        confirm: after the sweep, confirm the LR by short runs (as ``RangeTest(confirm=)``):
            from the same snapshot and on the same batches, six constant candidate LRs half a
            decade apart below the curve's climb point, every param group keeping the sweep's
            ratios and held ``hyperparams``; the candidate whose last 10 training losses are
            lowest (with ``val_loader``: whose validation loss after its run is lowest; on a
            training set of at most 1000 samples without it: whose loss on every 5th batch of
            the first pass, held back from the runs, is lowest) becomes ``result.lr``, and ``result.max_lr`` a third of a decade above it
            (``result.confirmation``; the curve's own reading stays in ``result.suggestion``).
            ``None`` (the default): 100 optimizer steps per run (600 in all, 700 with the
            sweep), fewer for LBFGS, whose closure calls are counted (the runs stay within
            600 gradient evaluations); a one-shot ``loader`` gets the sweep alone, with a
            note in ``result.warnings``. ``True``: 100 steps per run; an int >= 1: that many;
            both need a re-iterable ``loader``. ``False``: the sweep alone. Everything is
            restored afterwards.
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
    if val_batches is not None:
        val_batches = check_int("val_batches", val_batches, minimum=1)
    confirm_steps = check_confirm(confirm)
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
    if confirm_steps and confirm is not None and isinstance(loader, Iterator):
        raise ValueError(
            "confirm= needs a re-iterable loader (a DataLoader, a list): every candidate run starts over from the "
            f"same batches, and a one-shot {type(loader).__name__} cannot"
        )
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
    loaders = LoaderState(loader, stacklevel=2)
    validation = LoaderState(val_loader, stacklevel=2)  # its generator: put back before every validation pass
    held_back = _HeldBack.for_small(loader, loaders) if val_loader is None and confirm_steps else None

    def validation_loss(limit: int | None) -> torch.Tensor:
        assert val_loader is not None
        validation.rewind()  # every point (and every candidate) sees the same validation batches
        return _validation_loss(model, val_loader, loss_fn, device, limit=limit)

    score: Callable[[], torch.Tensor] | None = None
    if val_loader is not None:
        score = lambda: validation_loss(None)  # noqa: E731
    elif held_back is not None:
        score = lambda: _validation_loss(model, held_back.batches, loss_fn, device)  # noqa: E731
    try:
        tester = RangeTest(
            model,
            optimizer,
            confirm=None if confirm is None else confirm_steps or False,
            confirm_score=score,
            **options,
        )
    except BaseException:
        loaders.restore()
        validation.restore()
        raise

    def train_step(micro_batches: list[Any]) -> tuple[torch.Tensor, int]:
        """One optimizer step over ``micro_batches``; returns their mean loss and the gradient evaluations it took."""
        if closure_mode:
            calls = 0

            def closure() -> torch.Tensor:
                nonlocal calls
                calls += 1
                return _closure_loss(model, optimizer, loss_fn, micro_batches, max_norm)

            return optimizer.step(closure), calls
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
        return (total / accumulation_steps if accumulation_steps > 1 else total), 1

    def optimizer_steps(batches: Iterator[Any]) -> Iterator[tuple[torch.Tensor, int]]:
        """One training step per ``accumulation_steps`` batches; yields each step's loss and gradient evaluations."""
        micro_batches: list[Any] = []
        for batch in batches:
            micro_batches.append(batch if device is None else to_device(batch, device))
            if len(micro_batches) == accumulation_steps:
                yield train_step(micro_batches)
                micro_batches = []

    try:
        with tester as rt:
            steps = 0
            # A point may span more batches than one pass holds (accumulation, val_every): Passes chains them.
            evaluations = 0
            source: Iterable[Any] = loader if isinstance(loader, Iterator) else Passes(loader)
            if held_back is not None:
                source = held_back.passes(source, rt)
            for loss, calls in optimizer_steps(rt.batches(source)):
                if val_loader is None or rt.confirming:  # a candidate run records every training step
                    rt.record(loss, evaluations=calls)
                    continue
                steps += 1
                evaluations += calls
                if steps == val_every:
                    # per optimizer step, as the candidate runs (which record every step) are sized by it
                    rt.record(validation_loss(val_batches), evaluations=max(1, round(evaluations / val_every)))
                    steps = evaluations = 0
    finally:
        loaders.restore()
        validation.restore()
    result = tester.result
    assert result is not None
    samples = _training_samples(loader)
    if val_loader is None and samples is not None and samples <= SMALL_TRAINING_SET:
        confirmation = result.metadata.get("confirmation")
        if held_back is not None and confirmation is not None:
            confirmation["by"] = "held-back"
            note = (
                f"small training set ({samples} samples): over-fitting may set the best LR, so the confirmation "
                f"judged each run by {len(held_back.batches)} batches of the first pass held back from the runs; "
                "pass val_loader= to read a validation set"
            )
        else:
            note = (
                f"small training set ({samples} samples): over-fitting may set the best LR, and a training-loss "
                "sweep cannot see it; pass val_loader= to read the validation loss"
            )
        result.suggestion = dataclasses.replace(result.suggestion, warnings=[*result.suggestion.warnings, note])
    return result


#: At most this many training samples, ``range_test`` without a ``val_loader`` warns that over-fitting
#: may set the best LR (on the benchmark's tasks of 100 to 353 samples, validation-aware readings came closer).
SMALL_TRAINING_SET = 1000


#: On a small training set without ``val_loader``, every this-many-th batch of the first pass is held
#: back from the confirmation's runs to judge them (benchmarks/suggestion_quality.py --design: holdout-small).
HOLD_BACK_EVERY = 5


class _HeldBack:
    """Batches held back from the candidate runs: every ``HOLD_BACK_EVERY``-th of the loader's first pass.

    The sweep draws from the loader as it is; each candidate run trains on the first
    pass's other batches, cycled in their order, and is judged by the held-back ones.
    The pass is kept the first time a candidate run begins: the RNGs and the loader's
    generator are then back at the snapshot, so it is the sweep's own first pass.
    """

    def __init__(self, loader: Any, state: LoaderState) -> None:
        self.loader = loader
        self.state = state
        self.batches: list[Any] = []
        self.training: list[Any] = []
        self.sweep: Iterable[Any] = ()
        self.rt: Any = None

    @classmethod
    def for_small(cls, loader: Any, state: LoaderState) -> _HeldBack | None:
        """One for a re-iterable loader of at most ``SMALL_TRAINING_SET`` samples in
        ``HOLD_BACK_EVERY`` batches or more; None otherwise."""
        samples = _training_samples(loader)
        if isinstance(loader, Iterator) or samples is None or samples > SMALL_TRAINING_SET:
            return None
        try:
            return cls(loader, state) if len(loader) >= HOLD_BACK_EVERY else None
        except TypeError:
            return None

    def passes(self, sweep: Iterable[Any], rt: RangeTest) -> _HeldBack:
        """What ``rt.batches`` iterates: ``sweep`` during the sweep, the kept training batches in candidate runs."""
        self.sweep, self.rt = sweep, rt
        return self

    def __iter__(self) -> Iterator[Any]:
        if self.rt.candidate_run == 0:
            return iter(self.sweep)
        if not self.batches:
            self.state.rewind()  # the sweep's first pass again; no draw left behind for the runs
            with isolated():
                first = list(self.loader)
            self.state.rewind()
            self.batches = first[HOLD_BACK_EVERY - 1 :: HOLD_BACK_EVERY]
            self.training = [b for i, b in enumerate(first) if i % HOLD_BACK_EVERY != HOLD_BACK_EVERY - 1]
        return itertools.cycle(self.training)


def _training_samples(loader: Any) -> int | None:
    """Samples in ``loader``'s data set when it says (a DataLoader over a sized data set), else None."""
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an IterableDataset without __len__
        return None


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


def _validation_loss(
    model: nn.Module, val_loader: Iterable[Any], loss_fn: LossFn, device: Any, limit: int | None = None
) -> torch.Tensor:
    """Mean per-batch loss over ``val_loader`` (its first ``limit`` batches), in eval mode, without grad; modes restored."""
    total: torch.Tensor | None = None
    count = 0
    with evaluating(model), torch.no_grad():
        for batch in val_loader if limit is None else itertools.islice(val_loader, limit):
            loss = _scalar_loss(loss_fn(model, batch if device is None else to_device(batch, device))).detach().float()
            total = loss if total is None else total + loss
            count += 1
    if total is None:
        raise ValueError("val_loader is empty: it yielded no batch")
    return total / count
