"""``lr_range_test(trainer, ...)``: the LR range test for a Hugging Face ``transformers.Trainer``.

The sweep is a loop of the Trainer's own pieces: its optimizer (built from its arguments by
``create_optimizer()`` when it has none yet), ``get_train_dataloader()``,
``get_batch_samples()`` and ``training_step()`` (so ``compute_loss``, loss scaling for
gradient accumulation, ``num_items_in_batch`` and ``accelerator.backward``), with
``args.gradient_accumulation_steps`` micro-batches per optimizer step, clipping to
``args.max_grad_norm`` and its accelerator's mixed precision. Nothing of the Trainer's own
training loop runs, so no callback, logger, ``log_history`` entry or checkpoint sees it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .._distributed import is_rank_zero
from .._optional import require
from .._range_test import RangeTest
from .._result import RangeTestResult
from ._common import check_options, per_group_range, suggestion

__all__ = ["lr_range_test"]

logger = logging.getLogger("torch_lrrange")

#: Schedules that start at ``args.learning_rate`` and hold it (they take no warm-up).
_CONSTANT_SCHEDULES = ("constant", "reduce_lr_on_plateau", "greedy")
#: Set-ups the sweep's plain optimizer step cannot drive (their engines own the step or the gradients).
_UNSUPPORTED = ("DEEPSPEED", "FSDP", "XLA", "MEGATRON_LM")


def lr_range_test(trainer: Any, *, update_args: bool = False, **options: Any) -> RangeTestResult:
    """Run an LR range test with a ``transformers.Trainer``'s own training step; the Trainer is left as it was.

    One point per optimizer step: ``args.gradient_accumulation_steps`` micro-batches through
    ``trainer.training_step`` (the point is their summed, already scaled losses: the step's
    mean loss, as the Trainer logs it), gradients clipped to ``args.max_grad_norm``, then the
    optimizer step (through the accelerator's ``GradScaler`` with fp16). The optimizer is the
    Trainer's own: the one it holds, or one built by ``create_optimizer()`` from its
    arguments, which is dropped again afterwards (so ``train()`` builds its optimizer and
    schedule with the new LR). Gradients left in ``.grad`` (a backward pass run before) are
    zeroed for the sweep, as ``train()`` does. The model (its gradients too), that optimizer, the scaler and the RNGs are
    restored bit-exactly; ``trainer.state`` (``global_step``, ``epoch``, ``log_history``),
    callbacks and the output directory are never touched.

    Args:
        trainer: a ``transformers.Trainer`` with a ``train_dataset``, not inside ``train()``.
            DeepSpeed, FSDP and XLA set-ups are refused.
        update_args: set ``trainer.args.learning_rate`` afterwards to the LR its schedule
            needs: ``result.lr`` for a constant one (``lr_scheduler_type`` ``"constant"``,
            ``"reduce_lr_on_plateau"``, ``"greedy"``, or ``"constant_with_warmup"`` without
            warm-up), ``result.max_lr`` for one that warms up (``warmup_steps > 0``) or decays
            (``"linear"``, ``"cosine"``, ...); an optimizer the Trainer already holds gets the
            new LR too. Logged, and recorded in ``result.metadata["update_args"]``; a curve
            without a suggestion leaves it unchanged with a warning. Default False.
        **options: :class:`~torch_lrrange.RangeTest` keywords (``start_lr``, ``end_lr``,
            ``num_steps``, ``repeats``, ``extra_state``, ``confirm``, ...). As there, the sweep
            is followed by the confirmation's six short candidate runs by default (each on a
            new train dataloader from ``get_train_dataloader()``, which draws the sweep's
            batches again); ``confirm=False`` gives the sweep alone.

    Returns:
        The :class:`~torch_lrrange.RangeTestResult` (the same on every rank).

    Example:
        >>> import tempfile
        >>> from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
        >>> _ = torch.manual_seed(0)
        >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2))
        >>> tokens = torch.randint(0, 16, (256, 16))      # a tiny language: 16 of the 64 tokens
        >>> data = [{"input_ids": t, "labels": t} for t in tokens]
        >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=16,
        ...                          gradient_accumulation_steps=2, max_grad_norm=1.0, lr_scheduler_type="cosine",
        ...                          report_to="none", use_cpu=True, disable_tqdm=True)
        >>> trainer = Trainer(model=model, args=args, train_dataset=data)
        >>> result = lr_range_test(trainer, num_steps=40, start_lr=1e-5, end_lr=1.0, update_args=True)
        >>> trainer.args.learning_rate == result.max_lr, result.metadata["update_args"]["from"]   # cosine decays
        (True, 'max_lr')
        >>> trainer.optimizer is None, trainer.state.global_step   # train() builds its optimizer at the new LR
        (True, 0)
    """
    transformers = require("transformers", "transformers")
    if not isinstance(trainer, transformers.Trainer):
        raise TypeError(f"trainer must be a transformers.Trainer, got {type(trainer).__name__}")
    if not isinstance(update_args, bool):
        raise TypeError(f"update_args must be True or False, got {type(update_args).__name__} {update_args!r}")
    check_options(options, "lr_range_test")
    if trainer.is_in_train:
        raise RuntimeError("lr_range_test() cannot run inside trainer.train(); call it before or between train() calls")
    setup = str(getattr(trainer.accelerator.distributed_type, "value", trainer.accelerator.distributed_type))
    if setup.upper() in _UNSUPPORTED:
        raise ValueError(
            f"lr_range_test() supports single-device and DDP training, not {setup}: its engine owns the optimizer step"
        )
    if trainer.train_dataset is None:
        raise ValueError("the Trainer has no train_dataset: the range test trains on it")

    created = trainer.optimizer is None
    had_steps = "current_gradient_accumulation_steps" in vars(trainer)
    steps_before = vars(trainer).get("current_gradient_accumulation_steps")
    if created:
        trainer.create_optimizer()
    try:
        optimizer = _unwrapped(trainer.optimizer)
        scaler = trainer.accelerator.scaler
        extra = [*options.pop("extra_state", ()), *([scaler] if scaler is not None else [])]
        test = RangeTest(trainer.model, optimizer, extra_state=extra, **per_group_range(optimizer, options))
        with test:
            _sweep(trainer, test, optimizer, scaler)
    finally:
        if created:
            trainer.optimizer = None
        if had_steps:
            trainer.current_gradient_accumulation_steps = steps_before
        else:
            vars(trainer).pop("current_gradient_accumulation_steps", None)
    assert test.result is not None
    if update_args:
        _update_args(trainer, test.result)
    return test.result


def _unwrapped(optimizer: Any) -> Any:
    """The torch optimizer inside an Accelerate ``AcceleratedOptimizer`` (left by an earlier ``train()``)."""
    from accelerate.optimizer import AcceleratedOptimizer

    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


class _Passes:
    """The Trainer's train dataloader as ``RangeTest.batches`` iterates it: pass after pass of one
    dataloader within a run (its epochs, as ``train()`` draws them), and a new one from
    ``get_train_dataloader()`` for each candidate run of the confirmation, which then draws the
    sweep's batches again (the RNGs are back at the snapshot)."""

    def __init__(self, trainer: Any, test: RangeTest) -> None:
        self.trainer = trainer
        self.test = test
        self.loader: Any = None
        self.run = -1

    def __iter__(self) -> Iterator[Any]:
        if self.loader is None or self.run != self.test.candidate_run:
            self.loader, self.run = self.trainer.get_train_dataloader(), self.test.candidate_run
        loader, finished = self.loader, False
        try:
            yield from loader
            finished = True
        finally:
            end = getattr(loader, "end", None)
            if not finished and callable(end):
                end()  # a pass left unfinished: Accelerate's gradient state forgets this loader


def _sweep(trainer: Any, test: RangeTest, optimizer: Any, scaler: Any) -> None:
    """The Trainer's training step over its train dataloader until ``test`` (sweep and candidate runs) is done."""
    args = trainer.args
    model, undo = _training_model(trainer)
    batches: Any = test.batches(_Passes(trainer, test))  # a generator: closed below
    run = test.candidate_run
    model.zero_grad()  # as train() does before its first step: gradients left from before (restored after) stay out
    try:
        while not test.done:
            samples, num_items = trainer.get_batch_samples(batches, args.gradient_accumulation_steps, args.device)
            if not samples:
                break
            trainer.current_gradient_accumulation_steps = len(samples)  # training_step scales the loss by it
            total = None
            for i, inputs in enumerate(samples):
                last = i == len(samples) - 1
                with contextlib.nullcontext() if last else trainer.accelerator.no_sync(model):
                    loss = trainer.training_step(model, inputs, num_items)
                total = loss if total is None else total + loss
            if scaler is not None:
                scaler.unscale_(optimizer)
            if args.max_grad_norm is not None and args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            model.zero_grad()
            assert total is not None  # samples is not empty
            test.record(total)
            if test.candidate_run != run:  # a candidate run begins from the snapshot: its stale gradients out too
                run = test.candidate_run
                model.zero_grad()
    finally:
        batches.close()  # ends an unfinished pass (Accelerate's gradient state forgets its loader)
        undo()


def _training_model(trainer: Any) -> tuple[Any, Callable[[], None]]:
    """The model to step (DDP-wrapped, with the accelerator's autocast) and how to undo the wrapping.

    A Trainer that trained before holds its prepared model; otherwise the accelerator
    prepares one (for several processes or mixed precision), and what that set on the model
    is taken off again.
    """
    model = trainer.model
    accelerator = trainer.accelerator
    if trainer.model_wrapped is not model:
        return trainer.model_wrapped, lambda: None
    if accelerator.num_processes == 1 and accelerator.mixed_precision == "no":
        return model, lambda: None
    # prepare_model sets attributes on the model itself (an autocast forward, the mark that it was
    # prepared, which would make train() skip its own preparation): put its attributes back after.
    before = dict(vars(model))
    wrapped = accelerator.prepare_model(model)

    def undo() -> None:
        attributes = vars(model)
        for name in [name for name in attributes if name not in before]:
            del attributes[name]
        attributes.update(before)

    return wrapped, undo


def _update_args(trainer: Any, result: RangeTestResult) -> None:
    args = trainer.args
    schedule = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    warmup = (args.warmup_steps or 0) > 0
    constant = schedule in _CONSTANT_SCHEDULES or (schedule == "constant_with_warmup" and not warmup)
    picked = suggestion(result, constant)
    if picked is None:
        warnings.warn(
            f"update_args: the curve gives no suggestion ({'; '.join(result.warnings)}); "
            f"trainer.args.learning_rate is left at {args.learning_rate}",
            UserWarning,
            stacklevel=3,
        )
        return
    value, source = picked
    why = (
        f"lr_scheduler_type {schedule!r} holds the LR"
        if constant
        else f"lr_scheduler_type {schedule!r} warms up"
        if warmup
        else f"lr_scheduler_type {schedule!r} decays the LR"
    )
    args.learning_rate = value
    optimizer = _unwrapped(trainer.optimizer) if trainer.optimizer is not None else None
    if optimizer is not None:  # train() goes on with it: its groups get the new LR, keeping their ratios
        first = float(optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"]))
        for group in optimizer.param_groups:
            ratio = float(group.get("initial_lr", group["lr"])) / first
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] = value * ratio
    if trainer.lr_scheduler is not None and not getattr(trainer, "_created_lr_scheduler", False):
        warnings.warn(
            "update_args: the Trainer was given its own LR scheduler, which keeps the LRs it was built with",
            UserWarning,
            stacklevel=3,
        )
    result.metadata["update_args"] = {
        "learning_rate": value,
        "from": source,
        "lr_scheduler_type": schedule,
        "warmup_steps": args.warmup_steps,
        "reason": why,
    }
    if is_rank_zero():
        logger.info("lr_range_test: set trainer.args.learning_rate = %.4g (result.%s: %s)", value, source, why)
