"""``range_test()``: the whole LR range test in one call, for users without a loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ._checks import check_int
from .context import RangeTest
from .result import RangeTestResult

__all__ = ["range_test", "to_device"]


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor nested in tuples, lists and dicts moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return type(batch)((k, to_device(v, device)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _needs_closure(optimizer: Any) -> bool:
    return isinstance(optimizer, torch.optim.LBFGS)


def range_test(
    model: nn.Module,
    optimizer: Any,
    loader: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    *,
    accumulation_steps: int = 1,
    device: torch.device | str | None = None,
    **options: Any,
) -> RangeTestResult:
    """Run an LR range test with a standard training step and return its result.

    Each point is one optimizer step over ``accumulation_steps`` micro-batches;
    its loss is their mean. ``loss_fn(model, batch)`` returns the scalar loss and
    receives each batch unchanged (or with its tensors moved to ``device``).
    LBFGS is stepped with a closure. Everything is restored afterwards.

    Args:
        model, optimizer: as for :class:`RangeTest`.
        loader: an iterable of batches (re-iterated if it runs out).
        loss_fn: ``loss_fn(model, batch) -> loss``.
        accumulation_steps: micro-batches per optimizer step, int >= 1. Default 1.
        device: move tensors in each batch there first. Default None (leave as is).
        **options: :class:`RangeTest` keywords (start_lr, end_lr, num_steps, ...).

    Example:
        >>> result = range_test(model, opt, loader, lambda m, b: F.cross_entropy(m(b[0]), b[1]))
        >>> result.lr, result.bounds
    """
    accumulation_steps = check_int("accumulation_steps", accumulation_steps, minimum=1)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}")
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    tester = RangeTest(model, optimizer, **options)
    closure_mode = _needs_closure(optimizer)
    with tester as rt:
        total: torch.Tensor | None = None
        micro = 0
        optimizer.zero_grad()
        for batch in rt.batches(loader):
            if device is not None:
                batch = to_device(batch, device)
            if closure_mode:
                rt.record(_closure_step(model, optimizer, loss_fn, batch))
                continue
            loss = loss_fn(model, batch)
            (loss / accumulation_steps).backward() if accumulation_steps > 1 else loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
            micro += 1
            if micro == accumulation_steps:
                optimizer.step()
                optimizer.zero_grad()
                rt.record(total / accumulation_steps if accumulation_steps > 1 else total)
                total, micro = None, 0
    assert tester.result is not None
    return tester.result


def _closure_step(
    model: nn.Module, optimizer: Any, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any
) -> torch.Tensor:
    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        return loss

    return optimizer.step(closure)
