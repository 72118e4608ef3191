"""LRRangeScheduler and range_lr: exact sequences, group ratios, tensor LRs, state round trip."""

import math
import tempfile

import numpy as np
import pytest
import torch
from _state import assert_same, capture
from _statecheck import INF, NAN, POS, ids
from torch.optim.lr_scheduler import LRScheduler

from torch_lrrange import LRRangeScheduler, range_lr


def _sgd(*lrs):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def _stepped(scheduler, n):
    seen = [scheduler.get_last_lr()]
    for _ in range(n - 1):
        scheduler.optimizer.step()
        scheduler.step()
        seen.append(scheduler.get_last_lr())
    return seen


@pytest.mark.parametrize("n", [2, 3, 7, 100])
def test_exp_sequence_is_the_closed_form_with_exact_endpoints(n):
    sched = LRRangeScheduler(_sgd(0.1), start_lr=1e-7, end_lr=10.0, num_steps=n, mode="exp")
    got = [lrs[0] for lrs in _stepped(sched, n)]
    expected = [1e-7 * (10.0 / 1e-7) ** (i / (n - 1)) for i in range(n)]
    expected[0], expected[-1] = 1e-7, 10.0
    assert got == expected
    assert got[0] == 1e-7 and got[-1] == 10.0


@pytest.mark.parametrize("n", [2, 5, 64])
def test_linear_sequence_is_the_closed_form_with_exact_endpoints(n):
    sched = LRRangeScheduler(_sgd(0.1), start_lr=0.01, end_lr=0.3, num_steps=n, mode="linear")
    got = [lrs[0] for lrs in _stepped(sched, n)]
    expected = [0.01 + (0.3 - 0.01) * i / (n - 1) for i in range(n)]
    expected[-1] = 0.3
    assert got == expected


def test_closed_form_equals_stepping_and_writes_the_optimizer():
    opt = _sgd(0.5)
    sched = LRRangeScheduler(opt, start_lr=1e-5, end_lr=1.0, num_steps=30)
    closed = range_lr(np.arange(30), 1e-5, 1.0, 30)
    for i in range(30):
        assert opt.param_groups[0]["lr"] == closed[i] == sched.lrs[i]
        opt.step()
        sched.step()


def test_steps_past_the_end_hold_end_lr():
    sched = LRRangeScheduler(_sgd(0.1), start_lr=1e-3, end_lr=1.0, num_steps=4)
    seen = _stepped(sched, 8)
    assert [s[0] for s in seen[3:]] == [1.0] * 5
    assert range_lr(10, 1e-3, 1.0, 4) == 1.0


def test_other_groups_keep_their_ratio_to_group_zero():
    opt = _sgd(0.1, 0.01, 0.5)
    sched = LRRangeScheduler(opt, start_lr=1e-6, end_lr=1.0, num_steps=20)
    for lrs in _stepped(sched, 20):
        assert lrs[1] / lrs[0] == pytest.approx(0.1, rel=1e-12)
        assert lrs[2] / lrs[0] == pytest.approx(5.0, rel=1e-12)


def test_per_group_lists_sweep_each_group_its_own_range():
    opt = _sgd(0.1, 0.01)
    sched = LRRangeScheduler(opt, start_lr=[1e-4, 1e-3], end_lr=[1.0, 0.1], num_steps=5)
    seen = _stepped(sched, 5)
    assert [s[0] for s in seen] == list(range_lr(np.arange(5), 1e-4, 1.0, 5))
    assert [s[1] for s in seen] == list(range_lr(np.arange(5), 1e-3, 0.1, 5))


def test_wrong_list_length_is_refused_before_anything_changes():
    opt = _sgd(0.1, 0.01)
    with pytest.raises(
        ValueError, match=r"start_lr must be a float or a list of 2 floats \(one per param group\), got a list of 3"
    ):
        LRRangeScheduler(opt, start_lr=[1e-4, 1e-4, 1e-4], end_lr=1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert all("initial_lr" not in g for g in opt.param_groups)


def test_tensor_lr_is_updated_in_place_on_its_device():
    p = torch.nn.Parameter(torch.zeros(2))
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam([p], lr=lr)
    sched = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1e-1, num_steps=4)
    for expected in range_lr(np.arange(4), 1e-4, 1e-1, 4):
        assert opt.param_groups[0]["lr"] is lr
        assert lr.item() == pytest.approx(expected, rel=1e-6)
        last = sched.get_last_lr()[0]  # as torch's schedulers: a tensor like group["lr"], a copy, not an alias
        assert isinstance(last, torch.Tensor) and last is not lr and last.dtype == lr.dtype
        assert torch.equal(last, lr)
        opt.step()
        sched.step()


def test_is_a_torch_lr_scheduler_and_state_dict_round_trips_into_another_configuration():
    sched = LRRangeScheduler(_sgd(0.1), start_lr=1e-6, end_lr=1.0, num_steps=10, mode="exp")
    assert isinstance(sched, LRScheduler)
    _stepped(sched, 4)
    state = sched.state_dict()
    assert "optimizer" not in state
    other = LRRangeScheduler(_sgd(0.2), start_lr=1e-2, end_lr=2.0, num_steps=50, mode="linear")
    other.load_state_dict(state)
    assert other.get_last_lr() == sched.get_last_lr()
    for _ in range(8):
        sched.optimizer.step()
        other.optimizer.step()
        sched.step()
        other.step()
        assert other.get_last_lr() == sched.get_last_lr()
        assert other.optimizer.param_groups[0]["lr"] == sched.optimizer.param_groups[0]["lr"]


def test_resume_with_last_epoch_continues_the_sweep():
    opt = _sgd(0.1)
    LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=9)
    resumed = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=9, last_epoch=3)
    assert resumed.get_last_lr()[0] == range_lr(4, 1e-4, 1.0, 9)


def test_duck_typed_optimizer_is_accepted():
    class Wrapper:
        def __init__(self):
            self.inner = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            self.param_groups = self.inner.param_groups

        def state_dict(self):
            return self.inner.state_dict()

        def load_state_dict(self, state):
            self.inner.load_state_dict(state)

    wrapper = Wrapper()
    sched = LRRangeScheduler(wrapper, start_lr=1e-3, end_lr=1e-1, num_steps=3)
    sched.step()
    assert wrapper.inner.param_groups[0]["lr"] == range_lr(1, 1e-3, 1e-1, 3)


def test_the_optimizer_step_is_not_patched():
    opt = _sgd(0.1)
    LRRangeScheduler(opt, num_steps=5)
    assert "step" not in vars(opt)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start_lr": 0.0}, ValueError, r"start_lr must be a finite real number > 0, got 0.0"),
        ({"start_lr": -1e-3}, ValueError, r"start_lr must be a finite real number > 0"),
        ({"start_lr": math.nan}, ValueError, r"start_lr must be a finite real number > 0, got nan"),
        ({"end_lr": math.inf}, ValueError, r"end_lr must be a finite real number > 0, got inf"),
        ({"start_lr": "1e-3"}, TypeError, r"start_lr must be a finite real number > 0, got str '1e-3'"),
        ({"start_lr": 1.0, "end_lr": 0.5}, ValueError, r"end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.5"),
        ({"num_steps": 1}, ValueError, r"num_steps must be an int in \[2, 10000000\], got 1"),
        ({"num_steps": 10.0}, TypeError, r"num_steps must be an int in \[2, 10000000\], got float 10.0"),
        ({"num_steps": True}, TypeError, r"num_steps must be an int in \[2, 10000000\], got bool"),
        ({"mode": "cosine"}, ValueError, r"mode must be one of 'exp', 'linear', got 'cosine'"),
        ({"mode": None}, TypeError, r"mode must be one of 'exp', 'linear', got NoneType"),
    ],
)
def test_bad_arguments_name_the_argument_and_what_is_allowed(kwargs, error, message):
    opt = _sgd(0.1)
    with pytest.raises(error, match=message):
        LRRangeScheduler(opt, **kwargs)
    assert opt.param_groups[0]["lr"] == 0.1 and "initial_lr" not in opt.param_groups[0]


def test_not_an_optimizer_is_a_type_error():
    with pytest.raises(
        TypeError, match=r"optimizer must be a torch optimizer or an object with param_groups.*lacks param_groups"
    ):
        LRRangeScheduler(object())


def test_range_lr_rejects_negative_steps():
    with pytest.raises(ValueError, match=r"step must be an int >= 0"):
        range_lr(-1, 1e-3, 1.0, 5)


def test_an_overflowing_or_too_narrow_range_is_refused_before_the_groups_change():
    opt = _sgd(0.1)
    with pytest.raises(
        ValueError, match=r"end_lr / start_lr must be a finite ratio, got start_lr=1e-07 and end_lr=1e\+302"
    ):
        LRRangeScheduler(opt, start_lr=1e-7, end_lr=1e302, num_steps=10)
    with pytest.raises(ValueError, match="are too close for 100 distinct LRs"):
        LRRangeScheduler(opt, start_lr=1.0, end_lr=1.0 + 1e-15, num_steps=100)
    assert opt.param_groups[0]["lr"] == 0.1 and "initial_lr" not in opt.param_groups[0]
    with pytest.raises(ValueError, match="end_lr / start_lr must be a finite ratio"):
        range_lr(3, 1e-7, 1e302, 10)


def test_current_lrs_are_the_floats_of_each_group_set_by_the_last_step():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(
        [{"params": [model.weight], "lr": torch.tensor(0.1)}, {"params": [model.bias], "lr": 0.01}], lr=0.1
    )
    sched = LRRangeScheduler(opt, start_lr=1e-3, end_lr=1.0, num_steps=4)
    for step in range(4):
        assert sched.current_lrs == tuple(sched._table[step])
        assert all(type(v) is float for v in sched.current_lrs)
        assert sched.current_lrs[1] == pytest.approx(sched.current_lrs[0] / 10)
        opt.step()
        sched.step()


# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---

SCHEDULE = [
    ("optimizer", lambda m, o, d, f: LRRangeScheduler(object()), TypeError, "optimizer must be a torch optimizer"),
    ("start_lr-nan", lambda m, o, d, f: LRRangeScheduler(o, start_lr=NAN), ValueError, f"start_lr {POS}, got nan"),
    ("start_lr-zero", lambda m, o, d, f: LRRangeScheduler(o, start_lr=0), ValueError, f"start_lr {POS}, got 0.0"),
    ("end_lr-inf", lambda m, o, d, f: LRRangeScheduler(o, end_lr=INF), ValueError, f"end_lr {POS}, got inf"),
    (
        "end_lr-below",
        lambda m, o, d, f: LRRangeScheduler(o, start_lr=1.0, end_lr=1e-3),
        ValueError,
        "end_lr must be > start_lr",
    ),
    (
        "start_lr-list-length",
        lambda m, o, d, f: LRRangeScheduler(o, start_lr=[1e-3] * 3),
        ValueError,
        "start_lr must be a float or a list of 2 floats",
    ),
    (
        "num_steps",
        lambda m, o, d, f: LRRangeScheduler(o, num_steps=1),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "num_steps-float",
        lambda m, o, d, f: LRRangeScheduler(o, num_steps=5.5),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float",
    ),
    (
        "mode",
        lambda m, o, d, f: LRRangeScheduler(o, mode="log"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'log'",
    ),
    (
        "last_epoch",
        lambda m, o, d, f: LRRangeScheduler(o, last_epoch=-2),
        ValueError,
        "last_epoch must be an int >= -1, got -2",
    ),
    (
        "last_epoch-str",
        lambda m, o, d, f: LRRangeScheduler(o, last_epoch="0"),
        TypeError,
        "last_epoch must be an int >= -1, got str",
    ),
    # as torch's own schedulers: resuming needs 'initial_lr' in every group
    (
        "last_epoch-resume",
        lambda m, o, d, f: LRRangeScheduler(o, last_epoch=5),
        KeyError,
        r"param_groups\[0, 1\] lack 'initial_lr', needed to resume with last_epoch=5",
    ),
]


RANGE_LR = [
    (
        "step-negative",
        lambda: range_lr(-1, 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them, got -1",
    ),
    (
        "step-float",
        lambda: range_lr(1.5, 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them, got 1.5",
    ),
    (
        "step-str",
        lambda: range_lr("3", 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them, got '3'",
    ),
    (
        "step-array-negative",
        lambda: range_lr(np.array([0, -1]), 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them",
    ),
    ("start_lr-list", lambda: range_lr(1, [1e-3, 1e-2], [1.0, 2.0], 10), TypeError, f"start_lr {POS}, got list"),
    ("start_lr-nan", lambda: range_lr(1, NAN, 1.0, 10), ValueError, f"start_lr {POS}, got nan"),
    ("end_lr-zero", lambda: range_lr(1, 1e-3, 0.0, 10), ValueError, f"end_lr {POS}, got 0.0"),
    (
        "end_lr-below",
        lambda: range_lr(1, 1.0, 0.5, 10),
        ValueError,
        "end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.5",
    ),
    (
        "num_steps",
        lambda: range_lr(1, 1e-3, 1.0, 1),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "num_steps-float",
        lambda: range_lr(1, 1e-3, 1.0, 10.0),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float",
    ),
    (
        "mode",
        lambda: range_lr(1, 1e-3, 1.0, 10, mode="geometric"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'geometric'",
    ),
]


@pytest.mark.parametrize(("name", "call", "error", "message"), SCHEDULE, ids=ids(SCHEDULE))
def test_scheduler_arguments(setup, tmp_path, monkeypatch, name, call, error, message):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert not list(tmp_path.glob("torch_lrrange_*"))  # no snapshot directory was created


def test_scheduler_refuses_param_group_lrs_it_cannot_keep_the_ratio_of(setup):
    _, opt, *_ = setup
    opt.param_groups[0]["lr"] = 0.0
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    with pytest.raises(
        ValueError, match=r"param group LRs must be finite, >= 0 and > 0 for group 0 .*got \[0.0, 0.01\]"
    ):
        LRRangeScheduler(opt)
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before


@pytest.mark.parametrize(("name", "call", "error", "message"), RANGE_LR, ids=ids(RANGE_LR))
def test_range_lr_arguments(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ([], TypeError, r"state_dict must be a dict from LRRangeScheduler.state_dict\(\), got list"),
        ({"num_steps": 1}, ValueError, "num_steps must be an int in \\[2, 10000000\\], got 1"),
        ({"mode": "cos"}, ValueError, "mode must be one of 'exp', 'linear', got 'cos'"),
        (
            {"start_lrs": [1.0, 1.0], "end_lrs": [0.5, 0.5]},
            ValueError,
            "end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.5",
        ),
        (
            {"start_lrs": [1e-3], "end_lrs": [1.0]},
            ValueError,
            "state_dict holds LRs for 1 param groups, the optimizer has 2",
        ),
    ],
    ids=["not-a-dict", "num_steps", "mode", "order", "groups"],
)
def test_scheduler_load_state_dict_checks_before_changing_anything(setup, state, error, message):
    _, opt, *_ = setup
    sched = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=10)
    sched.step()
    before = sched.state_dict()
    with pytest.raises(error, match=message):
        sched.load_state_dict(state)
    assert sched.state_dict() == before
    sched.step()
    assert opt.param_groups[0]["lr"] == range_lr(2, 1e-4, 1.0, 10)


@pytest.mark.parametrize(
    ("epoch", "error", "message"),
    [(-1, ValueError, "epoch must be an int >= 0, got -1"), (1.5, TypeError, "epoch must be an int >= 0, got float")],
    ids=["negative", "float"],
)
def test_scheduler_step_epoch(setup, epoch, error, message):
    _, opt, *_ = setup
    sched = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=10)
    with pytest.warns(UserWarning, match="passing epoch to step"), pytest.raises(error, match=message):
        sched.step(epoch)
