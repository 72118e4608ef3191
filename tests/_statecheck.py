"""Helpers shared by the fault, bad-input, leak and concurrency tests.

A small model with everything a restore must handle (``make_setup``); state
capture and comparison live in ``_state``. The bad-input tables of each module's
tests (``ids``, ``POS``, ...) share the pieces at the end.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from torch_lrrange import _range_test as context


class WithExtra(nn.Module):
    """A linear layer with a non-persistent buffer and extra state."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.register_buffer("scale", torch.ones(n_out), persistent=False)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.scale.mul_(1.001)
        return self.linear(x) * self.scale

    def get_extra_state(self) -> Any:
        return {"calls": self.calls}

    def set_extra_state(self, state: Any) -> None:
        self.calls = state["calls"]


def make_setup(seed: int = 0, dropout: float = 0.2, optimizer: str = "adam", device: str = "cpu"):
    """A small model (BatchNorm, Dropout, extra state, non-persistent buffer), an
    optimizer with two param groups (one holding a parameter outside the model),
    stepped twice so it has state and gradients, and a fixed data set."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(dropout), WithExtra(8, 1))
    model.to(device)
    loose = nn.Parameter(torch.randn(1, generator=g).to(device))
    groups = [
        {"params": list(model[0].parameters()) + list(model[1].parameters())},
        {"params": [*model[4].parameters(), loose], "lr": 0.01},
    ]
    if optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=0.001)
    else:
        opt = torch.optim.SGD(groups, lr=0.001, momentum=0.9)
    xs = torch.randn(64, 4, generator=g)
    ys = xs @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=g)
    data = [(xs[i : i + 8].to(device), ys[i : i + 8].to(device)) for i in range(0, 64, 8)]

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return ((m(x).squeeze(-1) + loose - y) ** 2).mean()

    for batch in data[:2]:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
    model[0].eval()  # a mixed train/eval state must come back as it was
    return model, opt, data, loss_fn, loose


def assert_nothing_registered() -> None:
    assert not context._active_optimizers, "a RangeTest is still registered"


def train_steps(model: nn.Module, opt: Any, data: list[Any], loss_fn: Any, n: int = 3) -> None:
    """Change the state (as a half-done sweep would) without a RangeTest."""
    for batch in data[:n]:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
    torch.rand(3)
    random.random()
    np.random.rand()


# --- bad input ---------------------------------------------------------------------------

NAN, INF = math.nan, math.inf
#: What the checks of a positive real argument say it must be.
POS = "must be a finite real number > 0"


class Stateless:
    """An object without ``state_dict``: refused wherever state must be saved."""


class Exploit:
    """Pickles to a call of ``os.system``: a file that holds it must never be unpickled."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def ids(table: list[tuple[Any, ...]]) -> list[str]:
    """The test IDs of a bad-input table: each row's first item."""
    return [row[0] for row in table]
