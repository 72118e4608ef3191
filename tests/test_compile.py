"""``torch.compile`` under a sweep: a tensor LR means no recompilation per step, and a
compiled model is swept and restored exactly.

Recompilations are counted with ``torch._dynamo``'s own counters. The ``"eager"``
backend keeps these tests quick: whether a frame recompiles is decided by
dynamo's guards, before and independently of the backend.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _state import Restored
from torch import nn

from torch_lrrange import RangeTest, Snapshot

dynamo = pytest.importorskip("torch._dynamo")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    dynamo.reset()
    dynamo.utils.counters.clear()
    yield
    dynamo.reset()


def _graphs() -> int:
    return dynamo.utils.counters["stats"]["unique_graphs"]


def _data(n=4):
    return [(torch.randn(8, 5), torch.randint(0, 3, (8,))) for _ in range(n)]


def _sweep_with_compiled_step(lr):
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    @torch.compile(backend="eager")
    def optimizer_step():
        optimizer.step()

    def train_step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer_step()
        return loss

    data = _data()
    train_step(*data[0])  # compile once, before the sweep
    before = _graphs()
    with RangeTest(model, optimizer, start_lr=1e-4, end_lr=1e-1, num_steps=24, confirm=False) as rt:
        for x, y in rt.batches(data):
            rt.record(train_step(x, y))
    return before, _graphs(), rt


def test_tensor_lr_sweep_does_not_recompile_a_compiled_optimizer_step():
    lr = torch.tensor(0.01)
    before, after, rt = _sweep_with_compiled_step(lr)
    assert before >= 1
    assert after == before, f"{after - before} recompilations during a 24-step sweep"
    assert rt.step == 24 and len(rt.result.losses) == 24
    optimizer_lr = rt.optimizer.param_groups[0]["lr"]
    assert optimizer_lr is lr and torch.equal(lr, torch.tensor(0.01))  # restored in place


def test_float_lr_is_what_recompiles():
    # The contrast that makes the previous test meaningful: a Python-float LR is a
    # guarded constant, so each new LR value compiles a new graph (up to dynamo's cache limit).
    before, after, _ = _sweep_with_compiled_step(0.01)
    assert after > before


def test_compiled_model_is_swept_and_restored_exactly():
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(compiled.parameters(), lr=torch.tensor(0.05), momentum=0.9)
    data = _data()
    x, y = data[0]
    F.cross_entropy(compiled(x), y).backward()
    optimizer.step()  # momentum buffers and gradients exist before the test
    before, inner = Restored(compiled, optimizer), Restored(model, optimizer)
    graphs = _graphs()
    with RangeTest(compiled, optimizer, start_lr=1e-3, end_lr=1.0, num_steps=16, confirm=False) as rt:
        for x, y in rt.batches(data):
            optimizer.zero_grad()
            loss = F.cross_entropy(compiled(x), y)
            loss.backward()
            optimizer.step()
            rt.record(loss)
    assert rt.step == 16
    before.check()
    inner.check()  # the wrapped module is the one restored
    # Restored in place: the compiled forward still runs on its graph, no recompilation.
    compiled(data[1][0])
    assert _graphs() == graphs


def test_snapshot_of_compiled_model_keeps_parameter_identity():
    model = nn.Linear(5, 3)
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.Adam(compiled.parameters(), lr=torch.tensor(0.01))
    params = list(model.parameters())
    snap = Snapshot.take(compiled, optimizer, where="cpu")
    with torch.no_grad():
        for p in params:
            p.add_(1.0)
    snap.restore()
    assert all(p is q for p, q in zip(params, model.parameters()))
    assert all(p is q for p, q in zip(params, optimizer.param_groups[0]["params"]))
