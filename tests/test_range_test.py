"""RangeTest: the loop API, restore on every exit path, divergence, batches(), argument checks."""

import random
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _state import Restored, assert_same, capture
from _statecheck import INF, NAN, POS, Stateless, assert_nothing_registered, ids

from torch_lrrange import RangeTest, RangeTestResult, range_lr, range_test


def _setup(opt="sgd", lr=0.05):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 3))
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.randn(256, 10)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    data = list(zip(x.split(32), y.split(32)))
    return model, optimizer, data


def _sweep(rt, model, optimizer, data, fail_at=None, exc=RuntimeError):
    for i, (x, y) in enumerate(rt.batches(data)):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if i == fail_at:
            raise exc("boom")
        rt.record(loss)


def test_sweep_records_every_point_and_restores_exactly():
    model, opt, data = _setup()
    before = Restored(model, opt)
    with RangeTest(model, opt, start_lr=1e-5, end_lr=1.0, num_steps=40, confirm=False) as rt:
        lrs_seen = []
        for x, y in rt.batches(data):
            lrs_seen.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            rt.record(loss)
    before.check()
    result = rt.result
    assert isinstance(result, RangeTestResult)
    assert lrs_seen == list(range_lr(np.arange(40), 1e-5, 1.0, 40))
    assert len(result.losses) == len(result.lrs) <= 40
    assert np.array_equal(result.lrs, lrs_seen[: len(result.lrs)])
    assert rt.done


def test_recorded_losses_are_the_raw_losses():
    model, opt, data = _setup()
    seen = []
    with RangeTest(model, opt, start_lr=1e-6, end_lr=1e-3, num_steps=20, confirm=False) as rt:
        for x, y in rt.batches(data):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            seen.append(loss.item())
            rt.record(loss)
    assert np.array_equal(rt.result.losses, np.asarray(seen, dtype=np.float32).astype(np.float64))
    assert not rt.result.diverged


def test_float_losses_are_accepted():
    model, opt, data = _setup()
    with RangeTest(model, opt, num_steps=10, confirm=False) as rt:
        for i, _ in enumerate(rt.batches(data)):
            rt.record(1.0 - 0.01 * i)
    assert rt.result.losses.tolist() == pytest.approx([1.0 - 0.01 * i for i in range(10)])


@pytest.mark.parametrize("where", ["device", "cpu", "disk"])
@pytest.mark.parametrize("fail_at", [0, 17, 29])
def test_an_exception_at_any_step_restores_and_propagates(fail_at, where):
    model, opt, data = _setup()
    before = Restored(model, opt)
    rt = RangeTest(model, opt, num_steps=30, snapshot=where, confirm=False)
    with pytest.raises(RuntimeError, match="boom"), rt:
        _sweep(rt, model, opt, data, fail_at=fail_at)
    before.check()
    assert rt.result is None
    with RangeTest(model, opt, num_steps=2, confirm=False):  # the optimizer is free again
        pass


def test_keyboard_interrupt_restores_and_propagates_unchanged():
    model, opt, data = _setup()
    before = Restored(model, opt)
    with pytest.raises(KeyboardInterrupt) as info, RangeTest(model, opt, num_steps=30, confirm=False) as rt:
        _sweep(rt, model, opt, data, fail_at=12, exc=KeyboardInterrupt)
    assert str(info.value) == "boom"
    before.check()


def test_training_after_the_test_is_bit_identical_to_an_untouched_twin():
    model, opt, data = _setup("adam", lr=1e-3)
    twin, twin_opt, _ = _setup("adam", lr=1e-3)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    with RangeTest(model, opt, num_steps=25, end_lr=1.0, confirm=False) as rt:
        _sweep(rt, model, opt, data)

    def train(m, o):
        for x, y in data * 2:  # dropout draws from the restored RNG
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    train(model, opt)
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])
    train(twin, twin_opt)
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(opt.state.values(), twin_opt.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_tensor_lr_is_swept_in_place_and_restored():
    model, _, data = _setup()
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    before = Restored(model, opt)
    seen = []
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1e-1, num_steps=12, confirm=False) as rt:
        for x, y in rt.batches(data):
            assert opt.param_groups[0]["lr"] is lr
            seen.append(lr.item())
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            rt.record(torch.tensor(1.0))
    assert seen == pytest.approx(list(range_lr(np.arange(12), 1e-4, 1e-1, 12)), rel=1e-6)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.01)
    before.check()


def test_divergence_ends_the_sweep_and_cuts_the_curve():
    model, opt, data = _setup()
    with RangeTest(model, opt, num_steps=100, confirm=False) as rt:
        steps = 0
        for _ in rt.batches(data):
            steps += 1
            rt.record(1.0 if steps < 40 else 1e3)  # explodes at point 39
    assert rt.result.diverged
    assert len(rt.result.losses) == 39
    assert np.all(rt.result.losses == 1.0)
    assert steps <= 39 + 8  # read back once per 8 points on the CPU


def test_nan_loss_ends_the_sweep():
    model, opt, data = _setup()
    with RangeTest(model, opt, num_steps=50, confirm=False) as rt:
        for i, _ in enumerate(rt.batches(data)):
            rt.record(torch.tensor(float("nan") if i == 20 else 2.0 - i / 100))
    assert rt.result.diverged and len(rt.result.losses) == 20 and np.all(np.isfinite(rt.result.losses))


def test_done_stops_a_loop_that_does_not_use_batches():
    model, opt, _ = _setup()
    calls = 0
    with RangeTest(model, opt, num_steps=20, confirm=False) as rt:
        while not rt.done:
            rt.record(torch.tensor(1.0))
            calls += 1
    assert calls == 20 and len(rt.result.losses) == 20


def test_record_after_the_end_warns_once_and_is_ignored():
    model, opt, _ = _setup()
    with RangeTest(model, opt, num_steps=2, confirm=False) as rt:
        rt.record(1.0)
        rt.record(1.0)
        with pytest.warns(UserWarning, match="record\\(\\) called after the sweep ended"):
            rt.record(1.0)
        rt.record(1.0)
    assert len(rt.result.losses) == 2


def test_batches_reiterates_a_loader_that_runs_out():
    model, opt, data = _setup()
    with RangeTest(model, opt, num_steps=20, confirm=False) as rt:
        items = []
        for item in rt.batches(data[:3]):
            items.append(item)
            rt.record(1.0)
    assert len(items) == 20 and items[3] is data[0]


def test_batches_passes_any_item_unchanged():
    model, opt, _ = _setup()
    batch = {"x": torch.ones(2), "meta": object()}
    with RangeTest(model, opt, num_steps=3, confirm=False) as rt:
        for item in rt.batches([batch]):
            assert item is batch
            rt.record(1.0)


def test_a_one_shot_iterator_that_runs_out_ends_early_with_a_warning():
    model, opt, data = _setup()
    before = Restored(model, opt)
    with (
        pytest.warns(UserWarning, match="the iterator ran out after 8 of 30 points"),
        RangeTest(model, opt, num_steps=30, confirm=False) as rt,
    ):
        _sweep(rt, model, opt, iter(data))
    assert len(rt.result.losses) == 8
    before.check()


def test_an_empty_loader_is_a_value_error():
    model, opt, _ = _setup()
    before = Restored(model, opt)
    with pytest.raises(ValueError, match="the loader is empty"), RangeTest(model, opt, confirm=False) as rt:
        for _ in rt.batches([]):
            pass
    before.check()


def test_a_pass_without_record_is_an_error_not_an_endless_loop():
    model, opt, data = _setup()
    with pytest.raises(RuntimeError, match="recorded no point"), RangeTest(model, opt, confirm=False) as rt:
        for _ in rt.batches(data):
            pass


def test_a_second_range_test_on_the_same_optimizer_is_refused():
    model, opt, _ = _setup()
    with RangeTest(model, opt, num_steps=5, confirm=False):
        with pytest.raises(RuntimeError, match="already under a running RangeTest"):
            with RangeTest(model, opt, num_steps=5, confirm=False):
                pass
        assert opt.param_groups[0]["lr"] == 1e-7  # the outer test is untouched
    assert opt.param_groups[0]["lr"] == 0.05


def test_record_outside_the_block_and_bad_losses():
    model, opt, _ = _setup()
    rt = RangeTest(model, opt, confirm=False)
    with pytest.raises(RuntimeError, match="inside the `with RangeTest"):
        rt.record(1.0)
    with rt:
        with pytest.raises(
            ValueError, match=r"loss must be a scalar \(0-dim tensor or float\), got a tensor of shape \(3,\)"
        ):
            rt.record(torch.ones(3))
        with pytest.raises(TypeError, match="loss must be a scalar tensor or a real number, got str"):
            rt.record("1.0")


def test_exit_before_the_end_keeps_the_recorded_points():
    model, opt, data = _setup()
    with RangeTest(model, opt, num_steps=50, confirm=False) as rt:
        for i, _ in enumerate(rt.batches(data)):
            rt.record(2.0 - i / 100)
            if i == 12:
                break
    assert len(rt.result.losses) == 13


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start_lr": 0}, ValueError, r"start_lr must be a finite real number > 0, got 0.0"),
        ({"start_lr": float("inf")}, ValueError, r"start_lr must be a finite real number > 0, got inf"),
        ({"end_lr": 1e-8}, ValueError, r"end_lr must be > start_lr, got start_lr=1e-07 and end_lr=1e-08"),
        ({"end_lr": float("nan")}, ValueError, r"end_lr must be a finite real number > 0, got nan"),
        ({"num_steps": 1}, ValueError, r"num_steps must be an int in \[2, 10000000\], got 1"),
        ({"num_steps": "100"}, TypeError, r"num_steps must be an int in \[2, 10000000\], got str '100'"),
        ({"mode": "log"}, ValueError, r"mode must be one of 'exp', 'linear', got 'log'"),
        ({"snapshot": "gpu"}, ValueError, r"snapshot must be one of 'device', 'cpu', 'disk', got 'gpu'"),
        ({"extra_state": [object()]}, TypeError, r"extra_state\[0\] must have state_dict\(\) and load_state_dict\(\)"),
        ({"extra_state": "scaler"}, TypeError, r"extra_state must be a tuple or list"),
        ({"diverge_threshold": 1.0}, ValueError, r"diverge_threshold must be a finite real number > 1, got 1.0"),
        ({"method": "magic"}, ValueError, r"method must be one of 'default', 'steepest', 'valley', 'minimum'"),
        ({"repeats": 0}, ValueError, r"repeats must be an int >= 1, got 0"),
        ({"check_every": 4}, ValueError, r"check_every must be an int >= 8, got 4"),
        (
            {"start_lr": [1e-5, 1e-5]},
            ValueError,
            r"start_lr must be a float or a list of 1 floats \(one per param group\), got a list of 2",
        ),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_touched(kwargs, error, message):
    model, opt, _ = _setup()
    before = Restored(model, opt)
    with pytest.raises(error, match=message):
        RangeTest(model, opt, **kwargs, confirm=False)
    before.check()


def test_model_and_optimizer_types_are_checked():
    model, opt, _ = _setup()
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got dict"):
        RangeTest({}, opt, confirm=False)
    with pytest.raises(TypeError, match="optimizer must be a torch optimizer or an object with param_groups"):
        RangeTest(model, model, confirm=False)


def test_range_test_function_with_accumulation_records_the_mean_of_micro_batches():
    model, opt, data = _setup()
    before = Restored(model, opt)
    micro = []

    def loss_fn(m, batch):
        loss = F.cross_entropy(m(batch[0]), batch[1])
        micro.append(loss.item())
        return loss

    result = range_test(model, opt, data, loss_fn, accumulation_steps=4, num_steps=10, end_lr=1e-2, confirm=False)
    before.check()
    expected = [np.float32(np.float32(sum(np.float32(v) for v in micro[i : i + 4])) / 4) for i in range(0, 40, 4)]
    assert result.losses == pytest.approx(np.asarray(expected, dtype=np.float64), rel=1e-6)
    assert len(result.losses) == 10


def test_done_step_and_lr_are_defined_before_the_block():
    model, opt, _ = _setup()
    rt = RangeTest(model, opt, start_lr=1e-5, end_lr=1.0, num_steps=10, confirm=False)
    assert (rt.done, rt.step, rt.lr) == (False, 0, 1e-5)
    per_group = RangeTest(model, opt, start_lr=[2e-5], end_lr=[1.0], num_steps=10, confirm=False)
    assert per_group.lr == 2e-5


def test_numpy_and_tensor_scalars_are_numbers_everywhere(tmp_path):
    model, opt, data = _setup()
    with RangeTest(
        model, opt, start_lr=np.float32(1e-4), end_lr=torch.tensor(1.0), num_steps=np.int64(12), confirm=False
    ) as rt:
        for batch in rt.batches(data):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
            loss.backward()
            opt.step()
            rt.record(np.float32(loss.item()) if rt.step % 2 else loss)  # numpy scalars are losses too
    assert len(rt.result.lrs) == 12 and rt.result.lrs[0] == float(np.float32(1e-4))
    rt.result.save(tmp_path / "r.json")
    meta = RangeTestResult.load(tmp_path / "r.json").metadata
    assert (meta["start_lr"], meta["end_lr"], meta["num_steps"]) == (float(np.float32(1e-4)), 1.0, 12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"start_lr": 1e-7, "end_lr": 1e302},
            r"end_lr / start_lr must be a finite ratio, got start_lr=1e-07 and end_lr=1e\+302",
        ),
        (
            {"start_lr": 1.0, "end_lr": 1.0 + 1e-15},
            r"start_lr=1.0 and end_lr=1.000000000000001 are too close for 100 distinct LRs",
        ),
        ({"num_steps": 10**8}, r"num_steps must be an int in \[2, 10000000\], got 100000000"),
    ],
)
def test_ranges_that_cannot_give_a_sweep_are_refused_at_construction(kwargs, message):
    model, opt, _ = _setup()
    with pytest.raises(ValueError, match=message):
        RangeTest(model, opt, **kwargs, confirm=False)


# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---


class NotAnOptimizer:
    param_groups: ClassVar[list] = [{"lr": 0.1, "params": []}]


class EmptyGroups:
    param_groups: ClassVar[list] = []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class NoLR(EmptyGroups):
    param_groups: ClassVar[list] = [{"params": []}]


# (id, call(model, optimizer, data, loss_fn), exception, message regex)
RANGE_TEST = [
    (
        "model",
        lambda m, o, d, f: RangeTest(object(), o, confirm=False),
        TypeError,
        "model must be a torch.nn.Module, got object",
    ),
    (
        "model-none",
        lambda m, o, d, f: RangeTest(None, o, confirm=False),
        TypeError,
        "model must be a torch.nn.Module, got NoneType",
    ),
    (
        "optimizer",
        lambda m, o, d, f: RangeTest(m, object(), confirm=False),
        TypeError,
        "optimizer must be a torch optimizer.*lacks param_groups, state_dict, load_state_dict",
    ),
    (
        "optimizer-partial",
        lambda m, o, d, f: RangeTest(m, NotAnOptimizer(), confirm=False),
        TypeError,
        "optimizer must be .*lacks state_dict, load_state_dict",
    ),
    (
        "optimizer-empty",
        lambda m, o, d, f: RangeTest(m, EmptyGroups(), confirm=False),
        TypeError,
        "optimizer.param_groups must be a non-empty list of dicts that each hold an 'lr'",
    ),
    (
        "optimizer-no-lr",
        lambda m, o, d, f: RangeTest(m, NoLR(), confirm=False),
        TypeError,
        "optimizer.param_groups must be .* hold an 'lr'",
    ),
    (
        "start_lr-str",
        lambda m, o, d, f: RangeTest(m, o, start_lr="1e-3", confirm=False),
        TypeError,
        f"start_lr {POS}, got str '1e-3'",
    ),
    (
        "start_lr-bool",
        lambda m, o, d, f: RangeTest(m, o, start_lr=True, confirm=False),
        TypeError,
        f"start_lr {POS}, got bool",
    ),
    (
        "start_lr-none",
        lambda m, o, d, f: RangeTest(m, o, start_lr=None, confirm=False),
        TypeError,
        f"start_lr {POS}, got NoneType",
    ),
    (
        "start_lr-nan",
        lambda m, o, d, f: RangeTest(m, o, start_lr=NAN, confirm=False),
        ValueError,
        f"start_lr {POS}, got nan",
    ),
    (
        "start_lr-inf",
        lambda m, o, d, f: RangeTest(m, o, start_lr=INF, confirm=False),
        ValueError,
        f"start_lr {POS}, got inf",
    ),
    (
        "start_lr-zero",
        lambda m, o, d, f: RangeTest(m, o, start_lr=0.0, confirm=False),
        ValueError,
        f"start_lr {POS}, got 0.0",
    ),
    (
        "start_lr-negative",
        lambda m, o, d, f: RangeTest(m, o, start_lr=-1e-3, confirm=False),
        ValueError,
        f"start_lr {POS}, got -0.001",
    ),
    (
        "start_lr-tensor",
        lambda m, o, d, f: RangeTest(m, o, start_lr=torch.tensor([1e-3, 1e-2]), confirm=False),
        TypeError,
        f"start_lr {POS}, got Tensor",
    ),
    ("end_lr-nan", lambda m, o, d, f: RangeTest(m, o, end_lr=NAN, confirm=False), ValueError, f"end_lr {POS}, got nan"),
    ("end_lr-inf", lambda m, o, d, f: RangeTest(m, o, end_lr=INF, confirm=False), ValueError, f"end_lr {POS}, got inf"),
    (
        "end_lr-negative",
        lambda m, o, d, f: RangeTest(m, o, end_lr=-1.0, confirm=False),
        ValueError,
        f"end_lr {POS}, got -1.0",
    ),
    ("end_lr-str", lambda m, o, d, f: RangeTest(m, o, end_lr="10", confirm=False), TypeError, f"end_lr {POS}, got str"),
    (
        "end_lr-equal",
        lambda m, o, d, f: RangeTest(m, o, start_lr=0.1, end_lr=0.1, confirm=False),
        ValueError,
        r"end_lr must be > start_lr, got start_lr=0.1 and end_lr=0.1",
    ),
    (
        "end_lr-below",
        lambda m, o, d, f: RangeTest(m, o, start_lr=1.0, end_lr=0.1, confirm=False),
        ValueError,
        r"end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.1",
    ),
    (
        "start_lr-short-list",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3], confirm=False),
        ValueError,
        r"start_lr must be a float or a list of 2 floats \(one per param group\), got a list of 1",
    ),
    (
        "start_lr-long-list",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3] * 3, confirm=False),
        ValueError,
        r"start_lr must be a float or a list of 2 floats .*got a list of 3",
    ),
    (
        "end_lr-empty-tuple",
        lambda m, o, d, f: RangeTest(m, o, end_lr=(), confirm=False),
        ValueError,
        r"end_lr must be a float or a list of 2 floats .*got a tuple of 0",
    ),
    (
        "start_lr-nan-item",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3, NAN], confirm=False),
        ValueError,
        rf"start_lr\[1\] {POS}, got nan",
    ),
    (
        "end_lr-str-item",
        lambda m, o, d, f: RangeTest(m, o, end_lr=["1", 1.0], confirm=False),
        TypeError,
        rf"end_lr\[0\] {POS}, got str",
    ),
    (
        "end_lr-per-group-order",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3, 1.0], end_lr=[1.0, 0.5], confirm=False),
        ValueError,
        r"end_lr must be > start_lr \(param group 1\), got start_lr=1.0 and end_lr=0.5",
    ),
    (
        "num_steps-1",
        lambda m, o, d, f: RangeTest(m, o, num_steps=1, confirm=False),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "num_steps-0",
        lambda m, o, d, f: RangeTest(m, o, num_steps=0, confirm=False),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 0",
    ),
    (
        "num_steps-negative",
        lambda m, o, d, f: RangeTest(m, o, num_steps=-10, confirm=False),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got -10",
    ),
    (
        "num_steps-float",
        lambda m, o, d, f: RangeTest(m, o, num_steps=10.0, confirm=False),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float 10.0",
    ),
    (
        "num_steps-nan",
        lambda m, o, d, f: RangeTest(m, o, num_steps=NAN, confirm=False),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float nan",
    ),
    (
        "num_steps-str",
        lambda m, o, d, f: RangeTest(m, o, num_steps="10", confirm=False),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got str '10'",
    ),
    (
        "num_steps-bool",
        lambda m, o, d, f: RangeTest(m, o, num_steps=True, confirm=False),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got bool",
    ),
    (
        "mode-unknown",
        lambda m, o, d, f: RangeTest(m, o, mode="cosine", confirm=False),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'cosine'",
    ),
    (
        "mode-case",
        lambda m, o, d, f: RangeTest(m, o, mode="EXP", confirm=False),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'EXP'",
    ),
    (
        "mode-none",
        lambda m, o, d, f: RangeTest(m, o, mode=None, confirm=False),
        TypeError,
        "mode must be one of 'exp', 'linear', got NoneType",
    ),
    (
        "extra_state-str",
        lambda m, o, d, f: RangeTest(m, o, extra_state="scaler", confirm=False),
        TypeError,
        "extra_state must be a tuple or list of objects with state_dict",
    ),
    (
        "extra_state-int",
        lambda m, o, d, f: RangeTest(m, o, extra_state=5, confirm=False),
        TypeError,
        "extra_state must be a tuple or list .*got int",
    ),
    (
        "extra_state-item",
        lambda m, o, d, f: RangeTest(m, o, extra_state=[Stateless()], confirm=False),
        TypeError,
        r"extra_state\[0\] must have state_dict\(\) and load_state_dict\(\).*got Stateless",
    ),
    (
        "extra_state-second-item",
        lambda m, o, d, f: RangeTest(m, o, extra_state=(o, 3), confirm=False),
        TypeError,
        r"extra_state\[1\] must have state_dict\(\).*got int",
    ),
    (
        "snapshot-unknown",
        lambda m, o, d, f: RangeTest(m, o, snapshot="gpu", confirm=False),
        ValueError,
        "snapshot must be one of 'device', 'cpu', 'disk', got 'gpu'",
    ),
    (
        "snapshot-bool",
        lambda m, o, d, f: RangeTest(m, o, snapshot=True, confirm=False),
        TypeError,
        "snapshot must be one of 'device', 'cpu', 'disk', got bool",
    ),
    (
        "diverge_threshold-1",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=1, confirm=False),
        ValueError,
        "diverge_threshold must be a finite real number > 1, got 1",
    ),
    (
        "diverge_threshold-half",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=0.5, confirm=False),
        ValueError,
        "diverge_threshold must be a finite real number > 1, got 0.5",
    ),
    (
        "diverge_threshold-zero",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=0, confirm=False),
        ValueError,
        "diverge_threshold must be a finite real number",
    ),
    (
        "diverge_threshold-nan",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=NAN, confirm=False),
        ValueError,
        "diverge_threshold must be a finite real number .*got nan",
    ),
    (
        "diverge_threshold-inf",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=INF, confirm=False),
        ValueError,
        "diverge_threshold must be a finite real number .*got inf",
    ),
    (
        "diverge_threshold-str",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold="4", confirm=False),
        TypeError,
        "diverge_threshold must be a finite real number .*got str",
    ),
    (
        "method-unknown",
        lambda m, o, d, f: RangeTest(m, o, method="best", confirm=False),
        ValueError,
        "method must be one of 'default', .*got 'best'",
    ),
    (
        "method-int",
        lambda m, o, d, f: RangeTest(m, o, method=1, confirm=False),
        TypeError,
        "method must be one of 'default', .*got int",
    ),
    (
        "repeats-0",
        lambda m, o, d, f: RangeTest(m, o, repeats=0, confirm=False),
        ValueError,
        "repeats must be an int >= 1, got 0",
    ),
    (
        "repeats-float",
        lambda m, o, d, f: RangeTest(m, o, repeats=2.0, confirm=False),
        TypeError,
        "repeats must be an int >= 1, got float",
    ),
    (
        "check_every-7",
        lambda m, o, d, f: RangeTest(m, o, check_every=7, confirm=False),
        ValueError,
        "check_every must be an int >= 8, got 7",
    ),
    (
        "check_every-negative",
        lambda m, o, d, f: RangeTest(m, o, check_every=-8, confirm=False),
        ValueError,
        "check_every must be an int >= 8, got -8",
    ),
    (
        "check_every-str",
        lambda m, o, d, f: RangeTest(m, o, check_every="8", confirm=False),
        TypeError,
        "check_every must be an int >= 8, got str",
    ),
    (
        "progress-str",
        lambda m, o, d, f: RangeTest(m, o, progress="yes", confirm=False),
        TypeError,
        "progress must be True, False or None, got str",
    ),
    (
        "progress-int",
        lambda m, o, d, f: RangeTest(m, o, progress=1, confirm=False),
        TypeError,
        "progress must be True, False or None, got int",
    ),
    ("unknown-keyword", lambda m, o, d, f: RangeTest(m, o, num_step=10, confirm=False), TypeError, "num_step"),
]


def _enter(rt):
    with rt:
        pytest.fail("the block must not run")


RANGE_TEST_ENTER = [
    (
        "process_group-without-distributed",
        lambda m, o, d, f: _enter(RangeTest(m, o, process_group="group", confirm=False)),
        ValueError,
        "process_group was given but torch.distributed is not initialised",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "error", "message"), RANGE_TEST + RANGE_TEST_ENTER, ids=ids(RANGE_TEST + RANGE_TEST_ENTER)
)
def test_range_test_arguments(setup, name, call, error, message):
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert_nothing_registered()


# --- record() and batches() -------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "error", "message"),
    [
        (torch.ones(2), ValueError, r"loss must be a scalar \(0-dim tensor or float\), got a tensor of shape \(2,\)"),
        (torch.ones(0), ValueError, r"loss must be a scalar .*got a tensor of shape \(0,\)"),
        ("0.5", TypeError, "loss must be a scalar tensor or a real number, got str"),
        (None, TypeError, "loss must be a scalar tensor or a real number, got NoneType"),
        (True, TypeError, "loss must be a scalar tensor or a real number, got bool"),
        ([0.5], TypeError, "loss must be a scalar tensor or a real number, got list"),
    ],
    ids=["vector", "empty", "str", "none", "bool", "list"],
)
def test_record_refuses_bad_losses_without_recording(setup, loss, error, message):
    model, opt, data, loss_fn = setup
    before = capture(model, opt)
    with RangeTest(model, opt, num_steps=10, start_lr=1e-4, end_lr=1e-1, confirm=False) as rt:
        for batch in rt.batches(data):
            opt.zero_grad()
            good = loss_fn(model, batch)
            good.backward()
            opt.step()
            lr = opt.param_groups[0]["lr"]
            step = rt.step
            with pytest.raises(error, match=message):
                rt.record(loss)
            assert rt.step == step and opt.param_groups[0]["lr"] == lr  # the bad point was not taken
            rt.record(good)
    assert len(rt.result.losses) == 10
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_record_and_batches_outside_the_block(setup):
    model, opt, data, _ = setup
    rt = RangeTest(model, opt, confirm=False)
    with pytest.raises(RuntimeError, match=r"record\(\) must be called inside the `with RangeTest\(...\)` block"):
        rt.record(1.0)
    with pytest.raises(RuntimeError, match=r"batches\(\) must be used inside the `with RangeTest\(...\)` block"):
        next(iter(rt.batches(data)))
    assert "initial_lr" not in opt.param_groups[0]


@pytest.mark.parametrize(
    ("loader", "error", "message"),
    [
        (5, TypeError, r"batches\(\)'s argument must be an iterable of batches .*got int"),
        ("abc", TypeError, r"batches\(\)'s argument must be an iterable of batches .*got str"),
        (None, TypeError, r"batches\(\)'s argument must be an iterable of batches .*got NoneType"),
        ([], ValueError, "the loader is empty: it yielded no batch"),
    ],
    ids=["int", "str", "none", "empty"],
)
def test_batches_refuses_bad_loaders_and_restores(setup, loader, error, message):
    model, opt, *_ = setup
    before = capture(model, opt)
    with pytest.raises(error, match=message):
        with RangeTest(model, opt, num_steps=10, confirm=False) as rt:
            for _ in rt.batches(loader):
                pytest.fail("no batch expected")
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_a_pass_that_records_nothing_is_refused(setup):
    model, opt, data, _ = setup
    before = capture(model, opt)
    with pytest.raises(RuntimeError, match=r"a whole pass over the loader recorded no point: call rt.record\(loss\)"):
        with RangeTest(model, opt, num_steps=10, confirm=False) as rt:
            for _ in rt.batches(data):
                pass
    assert_same(before, capture(model, opt))


def test_the_same_range_test_cannot_be_entered_twice(setup):
    model, opt, *_ = setup
    rt = RangeTest(model, opt, confirm=False)
    with rt:
        with pytest.raises(RuntimeError, match="this RangeTest is already running; use a new RangeTest"):
            rt.__enter__()
    assert_nothing_registered()
