"""Every optimizer family: torch's (plain, foreach, fused), tensor LRs, LBFGS, third-party and duck-typed ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _setup_helpers import check_curve, group_lr, mlp, mse, regression_data, train, user_loop
from _state import Restored
from torch import nn

from torch_lrrange import RangeTest, range_test

START, END, STEPS = 1e-4, 1e-1, 16

_FAMILIES = {
    "SGD-momentum": (torch.optim.SGD, {"momentum": 0.9, "weight_decay": 1e-4}),
    "SGD-nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "Adam": (torch.optim.Adam, {"amsgrad": True}),
    "AdamW": (torch.optim.AdamW, {"weight_decay": 0.05}),
    "RMSprop": (torch.optim.RMSprop, {"momentum": 0.5, "centered": True}),
    "Adagrad": (torch.optim.Adagrad, {}),
    "Adamax": (torch.optim.Adamax, {}),
    "NAdam": (torch.optim.NAdam, {"decoupled_weight_decay": True, "weight_decay": 0.01}),
    "RAdam": (torch.optim.RAdam, {}),
}
_FUSED_ON_CPU = {"SGD-momentum", "SGD-nesterov", "Adam", "AdamW", "Adagrad"}
CASES = [
    pytest.param(name, impl, id=f"{name}-{impl}")
    for name in _FAMILIES
    for impl in ("foreach", "for-loop", *(["fused"] if name in _FUSED_ON_CPU else []))
]


def _make(name: str, impl: str, params, lr: float | torch.Tensor = 1e-2) -> torch.optim.Optimizer:
    cls, kwargs = _FAMILIES[name]
    flag = {"foreach": {"foreach": True}, "for-loop": {"foreach": False}, "fused": {"fused": True}}[impl]
    return cls(params, lr=lr, **kwargs, **flag)


@pytest.mark.parametrize(("name", "impl"), CASES)
def test_torch_optimizer_sweeps_and_restores(name, impl):
    data = regression_data()
    model = mlp()
    opt = _make(name, impl, model.parameters())
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        lrs, losses = user_loop(rt, model, opt, data, mse)
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs)
    saved.check()


@pytest.mark.parametrize(
    ("name", "impl"), [("Adam", "fused"), ("AdamW", "for-loop"), ("SGD-momentum", "fused"), ("Adagrad", "foreach")]
)
def test_tensor_lr_is_updated_in_place_and_restored(name, impl):
    data = regression_data()
    model = mlp()
    opt = _make(name, impl, model.parameters(), lr=torch.tensor(1e-2))
    train(model, opt, data, mse, steps=2)
    lr_tensor = opt.param_groups[0]["lr"]
    saved = Restored(model, opt)  # also checks the lr tensor is the same object afterwards
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        lrs, losses = user_loop(rt, model, opt, data, mse)
        assert opt.param_groups[0]["lr"] is lr_tensor
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs, lr_dtype=np.float32)
    assert opt.param_groups[0]["lr"] is lr_tensor
    saved.check()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="capturable optimizers need CUDA")
@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_capturable_tensor_lr_on_cuda(cls):
    data = [(x.cuda(), y.cuda()) for x, y in regression_data()]
    model = mlp().cuda()
    opt = cls(model.parameters(), lr=torch.tensor(1e-2, device="cuda"), capturable=True)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        lrs, losses = user_loop(rt, model, opt, data, mse)
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs, lr_dtype=np.float32)
    saved.check()


# --- LBFGS -------------------------------------------------------------------------------------


def _lbfgs(model: nn.Module) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3, history_size=4)


def _closure(opt: torch.optim.Optimizer, model: nn.Module, batch, calls: list[float] | None = None):
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = mse(model, batch)
        loss.backward()
        if calls is not None:
            calls.append(loss.item())
        return loss

    return closure


@pytest.mark.parametrize("snapshot", ["device", "cpu", "disk"])
def test_lbfgs_user_loop_records_the_closure_loss(snapshot):
    data = regression_data()
    model = mlp()
    opt = _lbfgs(model)
    for batch in data[:2]:  # history (old_dirs, old_stps lists) exists before the test
        opt.step(_closure(opt, model, batch))
    assert opt.state[next(iter(opt.state))]["old_dirs"], "LBFGS should have a history before the test"
    saved = Restored(model, opt)
    first_closure_losses, recorded = [], []
    with RangeTest(model, opt, start_lr=START, end_lr=1.0, num_steps=STEPS, snapshot=snapshot, confirm=False) as rt:
        for batch in rt.batches(data):
            calls: list[float] = []
            loss = opt.step(_closure(opt, model, batch, calls))
            rt.record(loss)
            first_closure_losses.append(calls[0])
            recorded.append(loss.item())
            assert len(calls) >= 1
    assert recorded == first_closure_losses
    check_curve(rt.result, first_closure_losses, start_lr=START, end_lr=1.0, num_steps=STEPS)
    saved.check()


def test_lbfgs_in_range_test_records_the_first_closure_loss_of_each_step():
    data = regression_data()
    model = mlp()
    model.eval()  # no dropout: the closure's repeated evaluations see one function
    opt = _lbfgs(model)
    opt.step(_closure(opt, model, data[0]))  # the history starts before the test
    saved = Restored(model, opt)
    calls: list[tuple[int, float]] = []

    def loss_fn(m, batch):
        loss = mse(m, batch)
        calls.append((id(batch), loss.item()))
        return loss

    result = range_test(model, opt, data, loss_fn, start_lr=START, end_lr=1.0, num_steps=STEPS, confirm=False)
    # A new step starts whenever the batch changes (the loader yields each batch once per step).
    firsts = [loss for i, (b, loss) in enumerate(calls) if i == 0 or calls[i - 1][0] != b]
    assert len(firsts) == STEPS and len(calls) > STEPS  # max_iter=3: several evaluations per step
    check_curve(result, firsts, start_lr=START, end_lr=1.0, num_steps=STEPS)
    saved.check()


def test_lbfgs_with_accumulation_steps_evaluates_every_micro_batch_in_the_closure():
    data = regression_data(n_batches=4)
    model = mlp()
    model.eval()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=1)
    saved = Restored(model, opt)
    seen: list[int] = []

    def loss_fn(m, batch):
        seen.append(next(i for i, b in enumerate(data) if b is batch))
        return mse(m, batch)

    result = range_test(
        model, opt, data, loss_fn, accumulation_steps=2, start_lr=START, end_lr=1.0, num_steps=4, confirm=False
    )
    assert seen == [0, 1, 2, 3, 0, 1, 2, 3]  # max_iter=1: one closure call per step, over both micro-batches
    assert len(result.losses) == 4
    saved.check()


def test_scaler_with_lbfgs_is_refused():
    model = mlp()
    opt = _lbfgs(model)
    with pytest.raises(ValueError, match="scaler cannot be used with LBFGS"):
        range_test(model, opt, regression_data(), mse, scaler=torch.amp.GradScaler("cpu"), num_steps=4, confirm=False)


# --- third-party and duck-typed optimizers --------------------------------------------------------


class SignMomentum(torch.optim.Optimizer):
    """A small third-party optimizer: sign of a momentum buffer, with a python-int counter and a list state."""

    def __init__(self, params, lr=1e-3, beta=0.9):
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["count"] = 0
                    state["buf"] = torch.zeros_like(p)
                    state["history"] = []
                state["count"] += 1
                state["buf"].mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                state["history"] = [*state["history"][-1:], p.grad.norm().reshape(1)]
                p.add_(state["buf"].sign(), alpha=-group["lr"])


class AveragingWrapper:
    """Schedule-free style wrapper: not an Optimizer, holds an inner optimizer and state of its own.

    Keeps a running average of the weights (``z``), a step count ``k`` and per-group keys
    (``lr_max``, ``weight_sum``) in the param groups, like schedulefree's optimizers.
    """

    def __init__(self, inner: torch.optim.Optimizer):
        self.inner = inner
        self.k = 0
        self.z = [p.detach().clone() for g in inner.param_groups for p in g["params"]]
        for g in inner.param_groups:
            g.setdefault("lr_max", 0.0)
            g.setdefault("weight_sum", 0.0)

    @property
    def param_groups(self):
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        self.k += 1
        for g in self.param_groups:
            g["lr_max"] = max(g["lr_max"], g["lr"])
            g["weight_sum"] += g["lr"] ** 2
        params = [p for g in self.param_groups for p in g["params"]]
        for z, p in zip(self.z, params):
            z.lerp_(p, 1.0 / self.k)

    def state_dict(self):
        return {"inner": self.inner.state_dict(), "k": self.k, "z": [z.clone() for z in self.z]}

    def load_state_dict(self, state):
        self.inner.load_state_dict(state["inner"])
        self.k = state["k"]
        for z, saved in zip(self.z, state["z"]):
            z.copy_(saved)


def test_third_party_optimizer():
    data = regression_data()
    model = mlp()
    opt = SignMomentum(model.parameters(), lr=1e-3)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        lrs, losses = user_loop(rt, model, opt, data, mse)
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs)
    saved.check()


@pytest.mark.parametrize("snapshot", ["device", "disk"])
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "trained"])
def test_duck_typed_wrapper(fresh, snapshot):
    data = regression_data()
    model = mlp()
    opt = AveragingWrapper(torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))
    assert not isinstance(opt, torch.optim.Optimizer)
    if not fresh:
        train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)  # compares state_dict(): inner state, k and z
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, snapshot=snapshot, confirm=False) as rt:
        lrs, losses = user_loop(rt, model, opt, data, mse)
        assert opt.k >= STEPS
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs)
    saved.check()
    assert group_lr(opt.param_groups[0]) == 1e-2


def test_duck_typed_wrapper_in_range_test():
    data = regression_data()
    model = mlp()
    opt = AveragingWrapper(torch.optim.Adam(model.parameters(), lr=1e-3))
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    losses = []

    def loss_fn(m, batch):
        loss = mse(m, batch)
        losses.append(loss.item())
        return loss

    result = range_test(model, opt, data, loss_fn, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False)
    check_curve(result, losses, start_lr=START, end_lr=END, num_steps=STEPS)
    saved.check()
