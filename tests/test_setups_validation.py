"""Validation-loss mode: range_test(val_loader=, val_every=) and a user loop that records the validation loss."""

from __future__ import annotations

import pytest
import torch
from _setup_helpers import check_curve, consume_rng, group_lr, mse, regression_data, train
from _state import Restored
from torch import nn

from torch_lrrange import RangeTest, range_test

START, END, STEPS = 1e-4, 1e-1, 12


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
    model.train()
    model[3].eval()  # a mixed train/eval setup that validation must put back
    return model


@pytest.mark.parametrize("val_every", [1, 3])
@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_range_test_records_the_mean_validation_loss(val_every, accumulation_steps):
    _check_validation_mode(val_every, accumulation_steps)


def _check_validation_mode(val_every: int, accumulation_steps: int) -> None:
    train_data = regression_data(n_batches=5, seed=0)
    val_data = regression_data(n_batches=3, seed=1)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, train_data, mse, steps=2)
    saved = Restored(model, opt)
    modes_before = [m.training for m in model.modules()]
    train_calls: list[float] = []  # LR of each training forward
    val_calls: list[tuple[torch.Tensor, float]] = []

    def loss_fn(m, batch):
        loss = mse(m, batch)
        if any(batch is b for b in val_data):
            assert not torch.is_grad_enabled() and not any(mod.training for mod in m.modules())
            val_calls.append((loss.detach().float().clone(), group_lr(opt.param_groups[0])))
        else:
            assert torch.is_grad_enabled() and [mod.training for mod in m.modules()] == modes_before
            train_calls.append(group_lr(opt.param_groups[0]))
        return loss

    result = range_test(
        model,
        opt,
        train_data,
        loss_fn,
        val_loader=val_data,
        val_every=val_every,
        accumulation_steps=accumulation_steps,
        start_lr=START,
        end_lr=END,
        num_steps=STEPS,
        confirm=False,
    )
    n_val = len(val_data)
    assert len(train_calls) == STEPS * val_every * accumulation_steps
    assert len(val_calls) == STEPS * n_val
    expected, lrs = [], []
    for i in range(STEPS):
        chunk = val_calls[i * n_val : (i + 1) * n_val]
        total = chunk[0][0]
        for loss, _ in chunk[1:]:
            total = total + loss
        expected.append((total / n_val).item())
        lrs.append(chunk[0][1])
        # every optimizer step of the point used the point's LR
        point = train_calls[i * val_every * accumulation_steps : (i + 1) * val_every * accumulation_steps]
        assert point == [chunk[0][1]] * len(point)
    check_curve(result, expected, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs)
    saved.check()


def test_validation_in_a_user_loop():
    train_data = regression_data(n_batches=5, seed=0)
    val_data = regression_data(n_batches=2, seed=1)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    train(model, opt, train_data, mse, steps=2)
    saved = Restored(model, opt)
    recorded, lrs = [], []
    with RangeTest(model, opt, start_lr=START, end_lr=1e-2, num_steps=STEPS, confirm=False) as rt:
        for batch in rt.batches(train_data):
            consume_rng()
            lrs.append(group_lr(opt.param_groups[0]))
            opt.zero_grad()
            mse(model, batch).backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                val = torch.stack([mse(model, b) for b in val_data]).mean()
            model.train()
            rt.record(val)
            recorded.append(val.item())
    check_curve(rt.result, recorded, start_lr=START, end_lr=1e-2, num_steps=STEPS, lrs_seen=lrs)
    saved.check()  # includes model[3] back in eval mode after the loop's model.train()


def test_validation_arguments_are_checked():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    data = regression_data()
    saved = Restored(model, opt)
    with pytest.raises(TypeError, match="val_loader must be a re-iterable collection"):
        range_test(model, opt, data, mse, val_loader=iter(data), num_steps=4, confirm=False)
    with pytest.raises(TypeError, match="val_loader must be a re-iterable collection"):
        range_test(model, opt, data, mse, val_loader=5, num_steps=4, confirm=False)
    with pytest.raises(ValueError, match="val_every must be an int >= 1, got 0"):
        range_test(model, opt, data, mse, val_loader=data, val_every=0, num_steps=4, confirm=False)
    with pytest.raises(ValueError, match="val_loader is empty: it yielded no batch"):
        range_test(model, opt, data, mse, val_loader=[], num_steps=4, confirm=False)
    saved.check()  # the failed sweep restored everything, modes included


def _counting_val_setup(n_val_batches: int = 20):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_data = regression_data(n_batches=5, seed=0)
    x, y = torch.randn(n_val_batches * 4, 6), torch.randn(n_val_batches * 4, 1)
    val = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    seen: list[list[torch.Tensor]] = [[]]  # per validation pass: the first input of each batch

    def loss_fn(m, batch):
        if not m.training:
            seen[-1].append(batch[0][0])
        elif seen[-1]:
            seen.append([])
        return mse(m, batch)

    return model, opt, train_data, val, loss_fn, seen


def test_a_validation_sweep_reads_a_fixed_subset_of_batches_per_point_by_default():
    model, opt, train_data, val, loss_fn, seen = _counting_val_setup()
    generator_state = val.generator.get_state()
    range_test(
        model, opt, train_data, loss_fn, val_loader=val, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
    )
    passes = [p for p in seen if p]
    assert len(passes) == STEPS and all(len(p) == 8 for p in passes)
    assert all(torch.equal(a, b) for p in passes for a, b in zip(p, passes[0]))  # the same batches each point
    assert torch.equal(val.generator.get_state(), generator_state)


def test_val_batches_none_reads_the_whole_validation_set_and_confirmation_runs_always_do():
    model, opt, train_data, val, loss_fn, seen = _counting_val_setup()
    range_test(
        model,
        opt,
        train_data,
        loss_fn,
        val_loader=val,
        val_batches=None,
        start_lr=START,
        end_lr=END,
        num_steps=STEPS,
        confirm=False,
    )
    assert [len(p) for p in seen if p] == [20] * STEPS
    model, opt, train_data, val, loss_fn, seen = _counting_val_setup()
    result = range_test(
        model,
        opt,
        train_data,
        loss_fn,
        val_loader=val,
        val_batches=2,
        num_steps=40,
        start_lr=1e-5,
        end_lr=10,
        confirm=3,
    )
    lengths = [len(p) for p in seen if p]
    runs = 0 if result.confirmation is None else len(result.confirmation.candidates)
    assert runs == 6 and lengths == [2] * (len(lengths) - runs) + [20] * runs


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("8", TypeError)])
def test_a_bad_val_batches_is_refused_before_anything_changes(bad, error):
    model, opt, train_data, val, loss_fn, _ = _counting_val_setup()
    before = Restored(model, opt)
    with pytest.raises(error, match="val_batches must be an int >= 1"):
        range_test(model, opt, train_data, loss_fn, val_loader=val, val_batches=bad, num_steps=STEPS, confirm=False)
    before.check()
