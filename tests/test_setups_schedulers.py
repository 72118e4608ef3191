"""A range test in the middle of training with a user LR scheduler: everything comes back, training continues identically."""

from __future__ import annotations

import warnings

import pytest
import torch
from _setup_helpers import check_curve, consume_rng, mlp, mse, regression_data
from _state import Restored, assert_same, capture
from torch.optim import lr_scheduler

from torch_lrrange import RangeTest, range_test

START, END, STEPS = 1e-4, 1e-1, 16
BEFORE, AFTER = 5, 6  # training steps before the range test and after it

SCHEDULERS = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=BEFORE + STEPS + AFTER),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=8),
    "LinearLR+ExponentialLR": lambda opt: lr_scheduler.SequentialLR(
        opt,
        [lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3), lr_scheduler.ExponentialLR(opt, gamma=0.9)],
        milestones=[3],
    ),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
}
OPTIMIZERS = {
    "SGD": lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
    "Adam": lambda params: torch.optim.Adam(params, lr=1e-3),
}


def _build(sched_name: str, opt_name: str):
    model = mlp(seed=0)
    opt = OPTIMIZERS[opt_name](model.parameters())
    return model, opt, SCHEDULERS[sched_name](opt)


def _step_scheduler(sched, loss: torch.Tensor) -> None:
    if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
        sched.step(loss.item())
    else:
        sched.step()


def _train(model, opt, sched, data, steps: int, seed: int) -> list[float]:
    torch.manual_seed(seed)  # dropout draws the same masks in both twins
    lrs = []
    for i in range(steps):
        opt.zero_grad()
        loss = mse(model, data[i % len(data)])
        loss.backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        _step_scheduler(sched, loss)
    return lrs


@pytest.mark.parametrize("where", ["paused", "before-record", "after-record"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("sched_name", list(SCHEDULERS))
def test_range_test_mid_training_with_a_scheduler(sched_name, opt_name, where):
    """The user's scheduler paused, or left in the loop before or after ``rt.record()``.

    The sweep's LRs are the ones every step uses (read by a hook that runs right
    before the step); a scheduler that changes what the next step would use warns.
    """
    data = regression_data()
    model, opt, sched = _build(sched_name, opt_name)
    twin_model, twin_opt, twin_sched = _build(sched_name, opt_name)
    _train(model, opt, sched, data, BEFORE, seed=1)
    _train(twin_model, twin_opt, twin_sched, data, BEFORE, seed=1)
    group_keys = [set(g) for g in opt.param_groups]
    assert all("initial_lr" in keys for keys in group_keys) or sched_name == "ReduceLROnPlateau"
    saved = Restored(model, opt, sched)  # compares the scheduler's state_dict and every param-group key

    lrs, losses = [], []
    hook = opt.register_step_pre_hook(lambda o, args, kwargs: lrs.append(o.param_groups[0]["lr"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with RangeTest(
            model, opt, start_lr=START, end_lr=END, num_steps=STEPS, extra_state=[sched], confirm=False
        ) as rt:
            for batch in rt.batches(data):
                consume_rng()
                opt.zero_grad()
                loss = mse(model, batch)
                loss.backward()
                opt.step()
                if where == "before-record":  # record() then sets the sweep's LR for the next step
                    _step_scheduler(sched, loss)
                rt.record(loss)
                if where == "after-record":  # would set the next step's LR: the sweep puts its own back
                    _step_scheduler(sched, loss)
                losses.append(loss.item())
    hook.remove()
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs)
    saved.check()
    assert [set(g) for g in opt.param_groups] == group_keys
    behind = [w for w in caught if "changed behind its back" in str(w.message)]
    moves_lr = where == "after-record"
    cycles_momentum = where != "paused" and sched_name == "OneCycleLR"
    assert len(behind) == (1 if moves_lr or cycles_momentum else 0), [str(w.message) for w in caught]
    if behind:
        assert behind[0].filename == __file__  # points at the user's rt.record() line
        assert ("group 0 lr " in str(behind[0].message)) == moves_lr

    after = _train(model, opt, sched, data, AFTER, seed=2)
    twin_after = _train(twin_model, twin_opt, twin_sched, data, AFTER, seed=2)
    assert after == twin_after
    assert_same(capture(twin_model, twin_opt, twin_sched), capture(model, opt, sched))


def test_range_test_call_with_a_scheduler_in_extra_state():
    data = regression_data()
    model, opt, sched = _build("OneCycleLR", "Adam")
    twin_model, twin_opt, twin_sched = _build("OneCycleLR", "Adam")
    _train(model, opt, sched, data, BEFORE, seed=1)
    _train(twin_model, twin_opt, twin_sched, data, BEFORE, seed=1)
    saved = Restored(model, opt, sched)
    result = range_test(
        model, opt, data, mse, extra_state=[sched], start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
    )
    assert len(result.losses) == STEPS
    saved.check()
    assert _train(model, opt, sched, data, AFTER, seed=2) == _train(
        twin_model, twin_opt, twin_sched, data, AFTER, seed=2
    )
    assert_same(capture(twin_model, twin_opt, twin_sched), capture(model, opt, sched))


def test_scheduler_left_out_of_extra_state_keeps_working_on_the_restored_optimizer():
    # The scheduler keeps no state the test touches: only the optimizer's groups, which are restored.
    data = regression_data()
    model, opt, sched = _build("StepLR", "SGD")
    twin_model, twin_opt, twin_sched = _build("StepLR", "SGD")
    _train(model, opt, sched, data, BEFORE, seed=1)
    _train(twin_model, twin_opt, twin_sched, data, BEFORE, seed=1)
    range_test(model, opt, data, mse, start_lr=START, end_lr=END, num_steps=8, confirm=False)
    assert _train(model, opt, sched, data, AFTER, seed=2) == _train(
        twin_model, twin_opt, twin_sched, data, AFTER, seed=2
    )
    assert_same(capture(twin_model, twin_opt, twin_sched), capture(model, opt, sched))
