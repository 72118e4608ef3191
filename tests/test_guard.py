"""GroupGuard: a scheduler or code of the user's own that moves the LR behind the sweep's back."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _setup_helpers import regression_data
from _state import Restored
from torch.optim import lr_scheduler
from torch.optim.optimizer import _global_optimizer_pre_hooks

from torch_lrrange import RangeTest, range_lr

STEPS = 24


def mse(model, batch):
    x, y = batch
    return ((model(x).squeeze(-1) - y) ** 2).mean()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _sweep(opt, model, after_record=None):
    """The user's loop; returns the LR each optimizer step really used and the warnings."""
    used = []
    hook = opt.register_step_pre_hook(lambda o, args, kwargs: used.append(float(o.param_groups[0]["lr"])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=STEPS, confirm=False) as rt:
            for batch in rt.batches(regression_data()):
                opt.zero_grad()
                loss = mse(model, batch)
                loss.backward()
                opt.step()
                rt.record(loss)
                if after_record is not None:
                    after_record(loss)
    hook.remove()
    return rt.result, used, [w for w in caught if "behind its back" in str(w.message)]


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=1000),
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=5),
    ],
    ids=["OneCycleLR", "CosineAnnealingLR"],
)
def test_a_scheduler_stepped_after_record_cannot_move_the_lr_the_steps_use(make_scheduler):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = make_scheduler(opt)
    before = Restored(model, opt)
    result, used, behind = _sweep(opt, model, after_record=lambda loss: sched.step())
    expected = range_lr(np.arange(STEPS), 1e-4, 1.0, STEPS)
    np.testing.assert_array_equal(np.asarray(used), expected)  # every step used the sweep's LR
    np.testing.assert_array_equal(result.lrs, expected[: len(result.lrs)])
    assert len(behind) == 1 and behind[0].filename == __file__
    assert "group 0 lr" in str(behind[0].message) and "remove scheduler.step()" in str(behind[0].message)
    before.check()  # the scheduler was stepped without being in extra_state: only its state_dict differs


def test_a_tensor_lr_set_in_place_behind_the_sweep_is_put_back_without_a_device_read():
    model = _model()
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    before = Restored(model, opt)
    _, used, behind = _sweep(opt, model, after_record=lambda loss: lr.fill_(0.5))
    expected = range_lr(np.arange(STEPS), 1e-4, 1.0, STEPS).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(used, dtype=np.float32), expected)
    assert len(behind) == 1 and "lr set in place" in str(behind[0].message)
    assert opt.param_groups[0]["lr"] is lr
    before.check()


def test_momentum_cycled_by_a_scheduler_is_held_at_its_value():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99))
    betas = []
    opt.register_step_pre_hook(lambda o, args, kwargs: betas.append(o.param_groups[0]["betas"]))
    _, _, behind = _sweep(opt, model, after_record=lambda loss: opt.param_groups[0].update(betas=(0.5, 0.99)))
    assert len(behind) == 1 and "betas (0.9, 0.99) -> (0.5, 0.99)" in str(behind[0].message)
    assert set(betas) == {(0.9, 0.99)}  # every step used the value the sweep started with


def test_a_clean_loop_warns_nothing_and_leaves_no_hook_behind():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    hooks = len(_global_optimizer_pre_hooks)
    _, used, behind = _sweep(opt, model)
    assert behind == [] and len(_global_optimizer_pre_hooks) == hooks
    np.testing.assert_array_equal(np.asarray(used), range_lr(np.arange(STEPS), 1e-4, 1.0, STEPS))


def test_the_hook_is_removed_after_an_exception_too():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hooks = len(_global_optimizer_pre_hooks)
    with pytest.raises(KeyboardInterrupt), RangeTest(model, opt, num_steps=10, confirm=False) as rt:
        for batch in rt.batches(regression_data()):
            opt.zero_grad()
            mse(model, batch).backward()
            opt.step()
            raise KeyboardInterrupt
    assert len(_global_optimizer_pre_hooks) == hooks


def test_another_optimizer_in_the_same_loop_is_left_alone():
    """A second optimizer (a GAN's other network) keeps its own LR, also when it changes."""
    model, other = _model(), _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.3)
    seen = []
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=STEPS, confirm=False) as rt:
        for i, batch in enumerate(rt.batches(regression_data())):
            for m, o in ((model, opt), (other, other_opt)):
                o.zero_grad()
                mse(m, batch).backward()
                o.step()
            other_opt.param_groups[0]["lr"] = 0.3 / (i + 1)  # its own schedule
            seen.append(other_opt.param_groups[0]["lr"])
            rt.record(mse(model, batch).detach())
    assert seen == [0.3 / (i + 1) for i in range(len(seen))]


def test_an_optimizer_without_hooks_is_checked_at_record():
    """A duck-typed optimizer runs no torch hook: a change is found at record() and reported as possibly used."""

    class Wrapper:
        def __init__(self, inner):
            self.inner = inner

        @property
        def param_groups(self):
            return self.inner.param_groups

        def state_dict(self):
            return self.inner.state_dict()

        def load_state_dict(self, state):
            self.inner.load_state_dict(state)

        def zero_grad(self):
            self.inner.zero_grad()

        def step(self):
            with torch.no_grad():  # a plain SGD step of its own: no torch.optim hook runs
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(p.grad, alpha=-group["lr"])

    model = _model()
    opt = Wrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=STEPS, confirm=False) as rt:
            for batch in rt.batches(regression_data()):
                opt.zero_grad()
                loss = mse(model, batch)
                loss.backward()
                opt.step()
                rt.record(loss)
                opt.param_groups[0]["lr"] = 0.5
    behind = [w for w in caught if "behind its back" in str(w.message)]
    assert len(behind) == 1 and "it may have used it" in str(behind[0].message)
