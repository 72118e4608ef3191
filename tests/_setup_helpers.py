"""Shared helpers for the tests/test_setups_*.py files: small models and data, loops, curve checks."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from torch_lrrange import range_lr


def check_curve(
    result: Any,
    recorded: list[float],
    *,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    mode: str = "exp",
    lrs_seen: list[float] | None = None,
    lr_dtype: Any = np.float64,
) -> None:
    """The result holds every recorded loss (as float32) at the closed-form LRs, all finite, no divergence."""
    assert not result.diverged, result.warnings
    assert len(result.losses) == len(result.lrs) == num_steps
    expected_lrs = range_lr(np.arange(num_steps), start_lr, end_lr, num_steps, mode)
    np.testing.assert_array_equal(result.lrs, expected_lrs)
    np.testing.assert_array_equal(result.losses, np.asarray(recorded, dtype=np.float32).astype(np.float64))
    assert np.isfinite(result.losses).all()
    if lrs_seen is not None:  # the LR the optimizer really used at each step (float32 for a tensor LR)
        np.testing.assert_array_equal(np.asarray(lrs_seen, dtype=lr_dtype), expected_lrs.astype(lr_dtype))


def group_lr(group: dict[str, Any]) -> float:
    lr = group["lr"]
    return float(lr) if isinstance(lr, torch.Tensor) else lr


def consume_rng() -> None:
    """Draw from every RNG a sweep must restore, so a missing RNG restore shows."""
    random.random()
    np.random.rand()
    torch.rand(1)


def user_loop(
    rt: Any,
    model: nn.Module,
    optimizer: Any,
    loader: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
) -> tuple[list[float], list[float]]:
    """The plain training loop around a RangeTest; returns (LR used, loss recorded) per step."""
    lrs, losses = [], []
    for batch in rt.batches(loader):
        consume_rng()
        lrs.append(group_lr(optimizer.param_groups[0]))
        optimizer.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        rt.record(loss)
        losses.append(loss.item())
    return lrs, losses


def train(model: nn.Module, optimizer: Any, loader: Iterable[Any], loss_fn: Callable[..., torch.Tensor], steps: int):
    """``steps`` ordinary steps (so the optimizer has state), then one more backward (so grads are set)."""
    batches = itertools.cycle(loader)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model, next(batches)).backward()
        optimizer.step()
    optimizer.zero_grad()
    loss_fn(model, next(batches)).backward()


def regression_data(
    n_batches: int = 4, batch: int = 8, features: int = 6, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed small regression batches (x, y)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(features, 1, generator=g)
    data = []
    for _ in range(n_batches):
        x = torch.randn(batch, features, generator=g)
        data.append((x, x @ w + 0.1 * torch.randn(batch, 1, generator=g)))
    return data


def mlp(features: int = 6, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Dropout(0.1), nn.Linear(hidden, 1))


def mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)
