"""The sweep's sync budget: at most one host read per ``check_every`` steps, none in between.

Every tensor call that would make the host wait for an accelerator (``item``,
``tolist``, ``cpu``, ``numpy``, ``bool``/``float``/``int`` of a tensor) is counted
with a ``TorchFunctionMode`` around each ``record()`` call (the user's own
training step is not the library's business), and ``divergence.to_host``, the
single place the sweep reads losses, is counted too.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_lrrange import LRRangeScheduler, RangeTest, divergence, range_lr
from torch_lrrange.sync_counter import SyncCounter


@pytest.fixture
def to_host_calls(monkeypatch):
    calls = []
    original = divergence.to_host

    def counting(tensor):
        calls.append(tensor.numel())
        return original(tensor)

    monkeypatch.setattr(divergence, "to_host", counting)
    return calls


def _setup(lr=0.01):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(10)]
    return model, optimizer, data


def _sweep(num_steps, check_every=8, lr=0.01, end_lr=1e-2):
    """One sweep; returns (tester, sync calls per record() call, sync calls in enter + exit, raw losses)."""
    model, optimizer, data = _setup(lr)
    tester = RangeTest(model, optimizer, start_lr=1e-5, end_lr=end_lr, num_steps=num_steps, check_every=check_every)
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
def test_one_host_read_per_window_and_none_in_between(to_host_calls, check_every):
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


def test_divergence_stops_within_one_window_on_cpu(to_host_calls):
    model, optimizer, _ = _setup()
    bad_at = 19  # 0-based point whose loss is NaN
    with RangeTest(model, optimizer, start_lr=1e-5, end_lr=1.0, num_steps=100, check_every=8) as rt:
        i = 0
        while not rt.done:
            with SyncCounter() as counter:
                rt.record(torch.tensor(math.nan if i == bad_at else 1.0))
            assert counter.total <= 1
            i += 1
    # On CPU the window is read when it closes: the sweep stops at the end of the window
    # holding the bad point (on CUDA one window later: at most 2 * check_every - 1 steps past it).
    assert i == (bad_at // 8 + 1) * 8
    assert len(to_host_calls) == bad_at // 8 + 1
    assert rt.result.diverged
    assert len(rt.result.losses) == bad_at
