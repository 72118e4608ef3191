"""``repeats=``: several sweeps from the same snapshot, averaged; everything restored after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _state import Restored
from torch import nn

from torch_lrrange import RangeTest, analyze, range_test


def make(dropout: float = 0.0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # a step before the test, so the optimizer has momentum state to restore
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return model, opt


def batches(count: int = 5, size: int = 16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(count)]


def loss_fn(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_each_repeat_starts_from_the_same_snapshot(dropout):
    # one batch, the same LRs: runs from the same weights, optimizer state and RNG are identical
    model, opt = make(dropout)
    before = Restored(model, opt)
    result = range_test(model, opt, batches(1), loss_fn, start_lr=1e-4, end_lr=1.0, num_steps=20, repeats=3)
    assert len(result.runs) == 3
    for run in result.runs[1:]:
        np.testing.assert_array_equal(run, result.runs[0])
    before.check()
    # and the same as a single sweep from that state
    single = range_test(model, opt, batches(1), loss_fn, start_lr=1e-4, end_lr=1.0, num_steps=20)
    np.testing.assert_array_equal(single.losses, result.runs[0])
    assert single.runs == []


def test_each_repeat_first_loss_is_the_snapshot_model_on_its_batch():
    # the loader continues across repeats (new batches average the noise), the weights do not
    model, opt = make()
    data = batches(7)
    with torch.no_grad():
        start_losses = [float(loss_fn(model, b)) for b in data]
    seen = []

    def recording_loss(m, b):
        seen.append(b)
        return loss_fn(m, b)

    result = range_test(model, opt, data, recording_loss, start_lr=1e-4, end_lr=1.0, num_steps=10, repeats=3)
    for i, run in enumerate(result.runs):
        first = next(j for j, b in enumerate(data) if b is seen[10 * i])
        assert run[0] == pytest.approx(start_losses[first], rel=1e-6)
    assert len({id(seen[10 * i]) for i in range(3)}) == 3  # different batches per repeat


def test_losses_are_the_mean_of_the_runs_and_analysed_as_such():
    model, opt = make()
    before = Restored(model, opt)
    result = range_test(model, opt, batches(5), loss_fn, start_lr=1e-4, end_lr=1.0, num_steps=24, repeats=4)
    runs = np.stack(result.runs)
    assert runs.shape == (4, len(result.lrs))
    assert not np.array_equal(runs[0], runs[1])  # different batches: different noise
    np.testing.assert_allclose(result.losses, runs.mean(axis=0), rtol=0, atol=1e-12)
    again = analyze(result.lrs, runs.mean(axis=0))
    assert (again.suggestion.lr, again.suggestion.max_lr) == (result.suggestion.lr, result.suggestion.max_lr)
    assert result.metadata["repeats"] == 4
    before.check()


def test_a_diverging_repeat_cuts_the_mean_at_its_divergence():
    model, opt = make()
    before = Restored(model, opt)
    losses = iter([1.0] * 16 + [1.0] * 8 + [float("nan")] * 8 + [1.0] * 16)
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=16, repeats=3) as rt:
        while not rt.done:
            rt.record(next(losses))
    result = rt.result
    # each run keeps every point it recorded; the mean is cut once, by the analysis, at its first NaN
    assert [len(r) for r in result.runs] == [16, 16, 16]
    assert np.isnan(result.runs[1][8:]).all()
    assert len(result.losses) == len(result.lrs) == 8 and result.diverged
    np.testing.assert_array_equal(result.losses, np.mean([r[:8] for r in result.runs], axis=0))
    before.check()


def test_a_repeat_that_diverges_early_shortens_the_mean_to_its_length():
    model, opt = make()
    losses = iter([1.0 - 0.01 * i for i in range(32)] + [float("nan")] * 8 + [1.0] * 32)
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=32, repeats=3) as rt:
        while not rt.done:
            rt.record(next(losses))
    # the second repeat stops at the end of the window holding its first NaN (8 points): the mean has 8 points
    assert [len(r) for r in rt.result.runs] == [32, 8, 32]
    assert len(rt.result.losses) == 0 and rt.result.diverged and not rt.result.usable


def test_repeats_restore_exactly_after_an_exception_mid_repeat():
    model, opt = make(0.5)
    before = Restored(model, opt)
    data = batches(3)
    with pytest.raises(KeyboardInterrupt), RangeTest(model, opt, num_steps=10, repeats=3) as rt:
        for step, batch in enumerate(rt.batches(data)):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
            if step == 14:  # inside the second repeat
                raise KeyboardInterrupt
    assert rt.result is None
    before.check()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_repeats_must_be_a_positive_int(bad):
    model, opt = make()
    with pytest.raises((TypeError, ValueError), match="repeats"):
        RangeTest(model, opt, repeats=bad)


def _loop(rt, model, opt, data, stop_at=None):
    for i, batch in enumerate(rt.batches(data)):
        opt.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        rt.record(loss)
        if i + 1 == stop_at:
            break


def test_a_break_in_a_later_repeat_keeps_the_finished_repeats_and_restores_once_per_repeat(monkeypatch):
    """3 x 20 points stopped at point 25: the first repeat is kept whole, the partial second one dropped."""
    from torch_lrrange import _snapshot as snapshot

    restores = []
    real = snapshot.Snapshot.restore
    monkeypatch.setattr(snapshot.Snapshot, "restore", lambda self: (restores.append(1), real(self))[1])
    model, opt = make()
    before = Restored(model, opt)
    data = batches(7)
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=20, repeats=3) as rt:
        _loop(rt, model, opt, data, stop_at=25)
    assert len(rt.result.lrs) == 20 and rt.result.runs == [] and rt.result.metadata["repeats"] == 1
    assert len(restores) == 2  # between repeats 1 and 2, then on exit
    before.check()
    single = range_test(model, opt, data, loss_fn, start_lr=1e-4, end_lr=1.0, num_steps=20)
    np.testing.assert_array_equal(rt.result.losses, single.losses)  # the first repeat, untouched


def test_a_break_in_the_first_repeat_keeps_its_points():
    model, opt = make()
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=20, repeats=3) as rt:
        _loop(rt, model, opt, batches(7), stop_at=12)
    assert len(rt.result.lrs) == 12 and rt.result.metadata["repeats"] == 1


def test_a_range_test_used_twice_runs_every_repeat_both_times():
    model, opt = make()
    tester = RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=10, repeats=3)
    with tester as rt:
        _loop(rt, model, opt, batches(7), stop_at=15)  # cut short in the second repeat
    with tester as rt:
        _loop(rt, model, opt, batches(7))
    assert tester.repeats == 3 and len(rt.result.runs) == 3 and rt.result.metadata["repeats"] == 3


def _one_shot_sweep(batch_count, num_steps=10, repeats=3):
    model, opt = make()
    before = Restored(model, opt)
    data = iter(batches(batch_count))  # a one-shot iterator, as a generator expression or iter(loader) gives
    with pytest.warns(UserWarning, match=r"the iterator ran out after .* points; the sweep ended early"):
        result = range_test(model, opt, data, loss_fn, start_lr=1e-4, end_lr=1.0, num_steps=num_steps, repeats=repeats)
    before.check()
    return result


def test_a_one_shot_iterator_that_runs_out_mid_repeat_keeps_the_finished_repeats_whole():
    result = _one_shot_sweep(25)  # 2 finished repeats of 10, then 5 points of the third
    assert len(result.lrs) == 10 and len(result.runs) == 2 and result.metadata["repeats"] == 2
    np.testing.assert_array_equal(result.losses, np.mean(result.runs, axis=0))


def test_a_one_shot_iterator_that_runs_out_at_a_repeat_boundary_keeps_every_finished_repeat():
    result = _one_shot_sweep(20)
    assert len(result.lrs) == 10 and len(result.runs) == 2


def test_a_one_shot_iterator_that_runs_out_in_the_first_repeat_keeps_its_points():
    result = _one_shot_sweep(7)
    assert len(result.lrs) == 7 and result.runs == []
