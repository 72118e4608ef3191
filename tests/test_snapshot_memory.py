"""What each snapshot mode costs in memory, and where its copies live.

- ``"device"``: one copy of the state beside it, no more than 1.05x its size;
- ``"cpu"``: copies in host memory only (pinned when the model is on CUDA), so
  device memory is unchanged beyond the run itself;
- ``"disk"``: nothing held in memory; taking and restoring hold one tensor at a time.
"""

from __future__ import annotations

import os
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_lrrange import RangeTest, Snapshot

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _trained(device="cpu", width=32, lr=1e-3):
    """A model with parameters, buffers, gradients and Adam state, after one step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 4)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.randn(16, width, device=device)
    F.cross_entropy(model(x), torch.randint(0, 4, (16,), device=device)).backward()
    optimizer.step()
    return model, optimizer


def _state_bytes(model, optimizer):
    tensors = [*model.state_dict().values(), *(p.grad for p in model.parameters() if p.grad is not None)]
    tensors += [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _held(snap):
    """Bytes and devices of the tensors a snapshot's store keeps in memory."""
    tensors = list(snap._store._tensors.values())
    return sum(t.numel() * t.element_size() for t in tensors), {t.device for t in tensors}, tensors


@pytest.mark.parametrize("lr", [1e-3, torch.tensor(1e-3)], ids=["float_lr", "tensor_lr"])
def test_device_snapshot_is_one_copy_of_the_state(lr):
    model, optimizer = _trained(lr=lr)
    state = _state_bytes(model, optimizer)
    with Snapshot.take(model, optimizer, where="device") as snap:
        held, devices, _ = _held(snap)
        assert state <= snap.nbytes <= 1.05 * state
        assert held == snap.nbytes  # nbytes is what is really held
        assert devices == {torch.device("cpu")}


def test_cpu_snapshot_holds_host_copies_only():
    model, optimizer = _trained()
    params = {p.data_ptr() for p in model.parameters()}
    with Snapshot.take(model, optimizer, where="cpu") as snap:
        held, devices, tensors = _held(snap)
        assert held == snap.nbytes >= _state_bytes(model, optimizer)
        assert devices == {torch.device("cpu")}
        assert not params & {t.data_ptr() for t in tensors}  # copies, never aliases


def test_disk_snapshot_holds_nothing_in_memory():
    model, optimizer = _trained()
    with Snapshot.take(model, optimizer, where="disk") as snap:
        assert snap._store._tensors == {}
        files = os.listdir(snap._store.directory)
        assert files and snap.nbytes >= _state_bytes(model, optimizer)


def test_disk_snapshot_has_one_tensor_in_host_memory_at_a_time(monkeypatch):
    """Every tensor the store writes or reads is tracked while alive: the peak is the largest tensor."""
    model, optimizer = _trained(width=64)
    largest = max(
        t.numel() * t.element_size()
        for t in [*model.state_dict().values(), *(s["exp_avg"] for s in optimizer.state.values())]
    )
    alive = {"now": 0, "peak": 0, "count": 0}

    def track(tensor):
        if isinstance(tensor, torch.Tensor):
            size = tensor.numel() * tensor.element_size()
            alive["now"] += size
            alive["count"] += 1
            alive["peak"] = max(alive["peak"], alive["now"])
            weakref.finalize(tensor, lambda: alive.__setitem__("now", alive["now"] - size))
        return tensor

    save, load = torch.save, torch.load
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: save(track(obj), f, *a, **k))
    monkeypatch.setattr(torch, "load", lambda *a, **k: track(load(*a, **k)))
    snap = Snapshot.take(model, optimizer, where="disk")
    written = alive["count"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    snap.restore()
    snap.release()
    assert written > 10 and alive["count"] == 2 * written  # each tensor written once, read back once
    assert alive["peak"] <= largest
    assert alive["now"] == 0


def test_range_test_cpu_snapshot_is_host_side():
    model, optimizer = _trained()
    with RangeTest(model, optimizer, num_steps=8, snapshot="cpu") as rt:
        assert rt.snapshot_where == "cpu"
        assert _held(rt._snapshot)[1] == {torch.device("cpu")}
        for _ in range(8):
            rt.record(1.0)


@cuda
def test_cuda_cpu_snapshot_adds_no_device_memory():
    model, optimizer = _trained("cuda", width=256)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with Snapshot.take(model, optimizer, where="cpu") as snap:
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() == before
        assert _held(snap)[1] == {torch.device("cpu")}
        # Copies of CUDA tensors are pinned (non-blocking transfers); Adam's CPU step counters are plain copies.
        copies = [(h.device.type, snap._store._tensors[h.key]) for h in snap._handles()]
        assert {kind for kind, _ in copies} == {"cuda", "cpu"}
        assert all(t.is_pinned() == (kind == "cuda") for kind, t in copies)
        expected = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
        snap.restore()
        torch.cuda.synchronize()
        assert all(torch.equal(p, e) for p, e in zip(model.parameters(), expected))
        del expected
        assert torch.cuda.memory_allocated() == before


@cuda
def test_cuda_device_snapshot_adds_at_most_1_05x_the_state():
    model, optimizer = _trained("cuda", width=1024)
    state = _state_bytes(model, optimizer)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with Snapshot.take(model, optimizer, where="device"):
        torch.cuda.synchronize()
        assert 0.95 * state <= torch.cuda.memory_allocated() - before <= 1.05 * state
