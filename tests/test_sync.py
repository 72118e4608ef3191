"""The sweep's sync budget: at most one host read per ``check_every`` steps, none in between.

Every tensor call that would make the host wait for an accelerator (``item``,
``tolist``, ``cpu``, ``numpy``, ``bool``/``float``/``int`` of a tensor) is counted
with a ``TorchFunctionMode`` around each ``record()`` call (the user's own
training step is not the library's business), and ``divergence.to_host``, the
single place the sweep reads losses, is counted too.

Losses on an accelerator are staged in one device tensor per window and read
with one call. CPU losses are already in host memory, so a CPU sweep reads a
window value by value (no device to wait for); the ``accelerator_path`` fixture
makes a CPU sweep stage its windows like an accelerator's, to hold that path to
its budget here (``benchmarks/cuda_check.py`` checks it on CUDA with
``torch.cuda.set_sync_debug_mode("error")``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _sync_counter import SyncCounter
from torch import nn

from torch_lrrange import LRRangeScheduler, RangeTest, range_lr
from torch_lrrange import _divergence as divergence
from torch_lrrange import _sweep as sweep


@pytest.fixture
def to_host_calls(monkeypatch):
    calls = []
    original = divergence.to_host

    def counting(window):
        calls.append(len(window))
        return original(window)

    monkeypatch.setattr(divergence, "to_host", counting)
    return calls


@pytest.fixture
def accelerator_path(monkeypatch):
    monkeypatch.setattr(sweep, "reads_host_memory", lambda *args: False)


def _setup(lr=0.01, device="cpu"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(10)]
    return model, optimizer, [(x.to(device), y.to(device)) for x, y in data]


def _sweep(num_steps, check_every=8, lr=0.01, end_lr=1e-2):
    """One sweep; returns (tester, sync calls per record() call, sync calls in enter + exit, raw losses)."""
    model, optimizer, data = _setup(lr)
    tester = RangeTest(
        model, optimizer, start_lr=1e-5, end_lr=end_lr, num_steps=num_steps, check_every=check_every, confirm=False
    )
    per_record, outside, raw = [], SyncCounter(), []
    with outside:
        rt = tester.__enter__()
    for x, y in rt.batches(data):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        raw.append(loss.item())  # the test's own read, outside the counter
        with SyncCounter() as counter:
            rt.record(loss)
        per_record.append(counter.total)
    with outside:
        tester.__exit__(None, None, None)
    return tester, per_record, outside.total, raw


@pytest.mark.parametrize("check_every", [8, 16])
def test_one_host_read_per_window_and_none_in_between(to_host_calls, accelerator_path, check_every):
    num_steps = 64
    tester, per_record, _, raw = _sweep(num_steps, check_every)
    assert len(per_record) == num_steps
    assert sum(per_record) <= num_steps // check_every
    # Only the record() that closes a window reads; every other step makes no sync call at all.
    assert [i + 1 for i, n in enumerate(per_record) if n] == list(range(check_every, num_steps + 1, check_every))
    assert all(n <= 1 for n in per_record)
    assert to_host_calls == [check_every] * (num_steps // check_every)
    # The reads lose nothing: the result holds exactly the recorded losses, as float32 values.
    assert tester.result.losses.tolist() == [float(torch.tensor(v, dtype=torch.float32)) for v in raw]


@pytest.mark.parametrize("check_every", [8, 16])
def test_cpu_windows_are_read_from_host_memory_once_per_window(to_host_calls, check_every):
    num_steps = 64
    tester, per_record, _, raw = _sweep(num_steps, check_every)
    # The same windows, read when they close: one float() per CPU value, nothing in between.
    assert [i + 1 for i, n in enumerate(per_record) if n] == list(range(check_every, num_steps + 1, check_every))
    assert set(per_record) == {0, check_every}
    assert to_host_calls == [check_every] * (num_steps // check_every)
    # Read in float64 from the loss tensors themselves: nothing is rounded.
    assert tester.result.losses.tolist() == raw


def test_both_read_paths_find_the_same_divergence(monkeypatch):
    direct = _sweep(100, end_lr=1e4)[0].result
    monkeypatch.setattr(sweep, "reads_host_memory", lambda *args: False)
    staged = _sweep(100, end_lr=1e4)[0].result
    assert direct.diverged and staged.diverged
    assert len(direct.losses) == len(staged.losses)
    np.testing.assert_allclose(direct.losses, staged.losses, rtol=1e-6)


def test_enter_and_exit_cost_a_constant_number_of_syncs(to_host_calls):
    short = _sweep(16)
    long = _sweep(80)
    assert short[2] == long[2] <= 4
    assert len(to_host_calls) == 16 // 8 + 80 // 8


def test_window_size_does_not_change_the_result():
    a, _, _, _ = _sweep(40, check_every=8)
    b, _, _, _ = _sweep(40, check_every=32)  # 40 is not a multiple: the last, partial window is read on exit
    torch.testing.assert_close(torch.as_tensor(a.result.losses), torch.as_tensor(b.result.losses), rtol=0, atol=0)
    assert a.result.lrs.tolist() == b.result.lrs.tolist()
    assert a.result.diverged is b.result.diverged is False


def test_tensor_lr_is_updated_in_place_without_syncs():
    _, optimizer, _ = _setup(lr=torch.tensor(0.01))
    lr = optimizer.param_groups[0]["lr"]
    scheduler = LRRangeScheduler(optimizer, start_lr=1e-4, end_lr=1.0, num_steps=12)
    seen = [lr.clone()]
    with SyncCounter() as counter:
        for _ in range(11):
            scheduler.step()
            seen.append(lr.clone())
    assert counter.total == 0
    assert optimizer.param_groups[0]["lr"] is lr  # same tensor: a compiled step keeps its guard
    expected = torch.tensor([range_lr(i, 1e-4, 1.0, 12) for i in range(12)], dtype=lr.dtype)
    assert torch.equal(torch.stack(seen), expected)


@pytest.mark.parametrize("staged", [False, True])
def test_divergence_stops_within_one_window_on_cpu(to_host_calls, monkeypatch, staged):
    if staged:
        monkeypatch.setattr(sweep, "reads_host_memory", lambda *args: False)
    model, optimizer, _ = _setup()
    bad_at = 19  # 0-based point whose loss is NaN
    with RangeTest(model, optimizer, start_lr=1e-5, end_lr=1.0, num_steps=100, check_every=8, confirm=False) as rt:
        i = 0
        while not rt.done:
            with SyncCounter() as counter:
                rt.record(torch.tensor(math.nan if i == bad_at else 1.0))
            assert counter.total <= (1 if staged else 8)
            i += 1
    # On CPU the window is read when it closes: the sweep stops at the end of the window
    # holding the bad point (on CUDA one window later: at most 2 * check_every - 1 steps past it).
    assert i == (bad_at // 8 + 1) * 8
    assert len(to_host_calls) == bad_at // 8 + 1
    assert rt.result.diverged
    assert len(rt.result.losses) == bad_at


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sweep_makes_one_lagged_read_per_window_and_no_other_sync(to_host_calls):
    model, optimizer, data = _setup(device="cuda")
    per_record = []
    with RangeTest(model, optimizer, start_lr=1e-5, end_lr=1e-2, num_steps=64, confirm=False) as rt:
        for x, y in rt.batches(data):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            closes_window = (rt.step + 1) % 8 == 0
            torch.cuda.synchronize()
            # Only the record() that closes a window may sync (on the previous window's lagged copy).
            torch.cuda.set_sync_debug_mode("default" if closes_window else "error")
            try:
                with SyncCounter() as counter:
                    rt.record(loss)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            per_record.append(counter.total)
    # Each window is read (tolist of its pinned host copy) when the next one closes; the last two on the last step.
    assert [i + 1 for i, n in enumerate(per_record) if n] == list(range(16, 65, 8))
    assert per_record[-1] == 2 and sum(per_record) == 8
    assert to_host_calls == [8] * 8
    assert len(rt.result.losses) == 64
