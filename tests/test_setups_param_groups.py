"""Several param groups: ratios to group 0 kept, per-group start/end lists, clear errors on a wrong length."""

from __future__ import annotations

import math

import pytest
import torch
from _setup_helpers import check_curve, consume_rng, group_lr, mlp, mse, regression_data, train
from _state import Restored

from torch_lrrange import LRRangeScheduler, RangeTest, range_lr, range_test

START, END, STEPS = 1e-4, 1e-1, 16
GROUP_LRS = [1e-2, 1e-3, 5e-2]


def _grouped(model, opt_cls=torch.optim.SGD, **kwargs):
    first, _, _, last = model
    return opt_cls(
        [
            {"params": first.parameters(), "lr": GROUP_LRS[0], "weight_decay": 1e-4},
            {"params": [last.weight], "lr": GROUP_LRS[1]},
            {"params": [last.bias], "lr": GROUP_LRS[2], "weight_decay": 0.0},
        ],
        lr=GROUP_LRS[0],
        **kwargs,
    )


def _sweep(model, opt, data, **options):
    per_step: list[list[float]] = []
    recorded = []
    with RangeTest(model, opt, num_steps=STEPS, **options, confirm=False) as rt:
        for batch in rt.batches(data):
            consume_rng()
            per_step.append([group_lr(g) for g in opt.param_groups])
            opt.zero_grad()
            loss = mse(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
            recorded.append(loss.item())
    return rt.result, per_step, recorded


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_ratios_to_group_zero_are_kept_at_every_step(opt_cls):
    data = regression_data()
    model = mlp()
    opt = _grouped(model, opt_cls)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    result, per_step, recorded = _sweep(model, opt, data, start_lr=START, end_lr=END)
    for step, lrs in enumerate(per_step):
        for i, lr in enumerate(lrs):
            ratio = GROUP_LRS[i] / GROUP_LRS[0]
            assert math.isclose(lr / lrs[0], ratio, rel_tol=1e-12)
            assert lr == range_lr(step, START * ratio, END * ratio, STEPS)
    check_curve(result, recorded, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=[s[0] for s in per_step])
    saved.check()
    assert [g["lr"] for g in opt.param_groups] == GROUP_LRS
    assert all("initial_lr" not in g for g in opt.param_groups)


@pytest.mark.parametrize("mode", ["exp", "linear"])
def test_per_group_start_and_end_lists(mode):
    starts, ends = [1e-4, 1e-5, 1e-3], [1e-1, 1e-2, 1.0]
    data = regression_data()
    model = mlp()
    opt = _grouped(model, torch.optim.AdamW)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    result, per_step, recorded = _sweep(model, opt, data, start_lr=starts, end_lr=ends, mode=mode)
    for step, lrs in enumerate(per_step):
        assert lrs == [range_lr(step, s, e, STEPS, mode) for s, e in zip(starts, ends)]
    check_curve(
        result,
        recorded,
        start_lr=starts[0],
        end_lr=ends[0],
        num_steps=STEPS,
        mode=mode,
        lrs_seen=[s[0] for s in per_step],
    )
    saved.check()


def test_per_group_start_list_with_a_scalar_end():
    data = regression_data()
    model = mlp()
    opt = _grouped(model)
    saved = Restored(model, opt)
    starts = (1e-5, 1e-4, 1e-3)  # a tuple is accepted like a list
    result = range_test(model, opt, data, mse, start_lr=starts, end_lr=0.1, num_steps=STEPS, confirm=False)
    assert len(result.losses) == STEPS
    saved.check()


@pytest.mark.parametrize(
    ("start_lr", "end_lr", "message"),
    [
        ([1e-4, 1e-4], 1.0, r"start_lr must be a float or a list of 3 floats \(one per param group\), got a list of 2"),
        (1e-4, [1.0] * 4, r"end_lr must be a float or a list of 3 floats \(one per param group\), got a list of 4"),
        ([1e-4] * 3, [1.0, 1.0, 1e-5], r"end_lr must be > start_lr \(param group 2\)"),
    ],
)
def test_wrong_per_group_lists_are_refused_before_anything_changes(start_lr, end_lr, message):
    data = regression_data()
    model = mlp()
    opt = _grouped(model)
    train(model, opt, data, mse, steps=1)
    saved = Restored(model, opt)
    with pytest.raises(ValueError, match=message):
        RangeTest(model, opt, start_lr=start_lr, end_lr=end_lr, num_steps=STEPS, confirm=False)
    with pytest.raises(ValueError, match=message):
        range_test(model, opt, data, mse, start_lr=start_lr, end_lr=end_lr, num_steps=STEPS, confirm=False)
    with pytest.raises(ValueError, match=message):
        LRRangeScheduler(opt, start_lr=start_lr, end_lr=end_lr, num_steps=STEPS)
    saved.check()
