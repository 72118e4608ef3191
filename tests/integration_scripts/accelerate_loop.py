"""A RangeTest around an Accelerate loop: prepared model, optimizer and dataloader,
``accelerator.accumulate`` (2 micro-batches per step) and ``accelerator.backward``.

Run in-process by tests/test_integrations_accelerate.py, and as
``accelerate launch --cpu --num_processes 2 accelerate_loop.py OUT_DIR``, where each rank writes
``rank{R}.json``: its result, whether model, optimizer and RNGs came back bit-exactly, the LR
the optimizer used at each real step, and the losses and weights of one epoch of training
after the test and on a twin that never ran it; once with the sweep on a loader of its own,
once (``shared_loader``) on the training loader itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from torch_lrrange import RangeTest

SWEEP = {"num_steps": 16, "start_lr": 1e-5, "end_lr": 0.1}


def data(n: int = 384) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    return TensorDataset(x, (x @ w).argmax(1))


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def state(net: torch.nn.Module, optimizer: Any) -> Any:
    return (
        copy.deepcopy(net.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
        [p.grad for p in net.parameters()],
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for tensor in net.state_dict().values():
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sweep(accelerator: Accelerator, net: Any, optimizer: Any, loader: Any = None) -> tuple[Any, list[float]]:
    """The range test as a user writes it: one point per real optimizer step.

    ``loader=None``: sweep a loader prepared for the sweep alone, inside the RangeTest (so the
    seed it draws from the global RNG is given back). With several processes Accelerate gives a
    shuffling loader a generator of its own, which a sweep over the training loader advances.
    """
    lrs = []
    with RangeTest(net, optimizer, **SWEEP) as rt:
        if loader is None:
            loader = accelerator.prepare(DataLoader(data(), batch_size=16, shuffle=True))
        for x, y in rt.batches(loader):
            with accelerator.accumulate(net):
                loss = F.cross_entropy(net(x), y)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:  # gradients were reduced and the optimizer stepped
                rt.record(loss)
    return rt.result, lrs


def train_epoch(accelerator: Accelerator, net: Any, optimizer: Any, loader: Any) -> list[float]:
    losses = []
    for x, y in loader:
        with accelerator.accumulate(net):
            loss = F.cross_entropy(net(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def run(own_loader: bool) -> dict[str, Any]:
    """Twin first (never tested), then the tested run; both from seed 1."""
    reports: dict[str, Any] = {}
    for role in ("twin", "tested"):
        accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
        net = model()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        loader = DataLoader(data(), batch_size=16, shuffle=True)
        net, optimizer, loader = accelerator.prepare(net, optimizer, loader)
        torch.manual_seed(1)
        if role == "tested":
            before = state(net, optimizer)
            result, reports["lrs_seen"] = sweep(accelerator, net, optimizer, None if own_loader else loader)
            reports["result"] = result.to_dict()
            reports["restored"] = same(before, state(net, optimizer))
        reports[f"{role}_losses"] = train_epoch(accelerator, net, optimizer, loader)
        reports[f"{role}_weights"] = digest(accelerator.unwrap_model(net))
    reports["rank"] = accelerator.process_index
    return reports


if __name__ == "__main__":
    torch.set_num_threads(1)
    report = run(own_loader=True)
    report["shared_loader"] = run(own_loader=False)
    with open(os.path.join(sys.argv[1], f"rank{report['rank']}.json"), "w") as f:
        json.dump(report, f)
