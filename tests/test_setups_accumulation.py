"""Gradient accumulation (range_test's accumulation_steps and a user loop) and gradient clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _setup_helpers import check_curve, consume_rng, group_lr, mlp, mse, regression_data, train
from _state import Restored
from torch import nn

from torch_lrrange import RangeTest, range_test

START, END, STEPS = 1e-4, 1e-1, 16


@pytest.mark.parametrize("k", [2, 3])
def test_range_test_point_is_the_mean_of_its_micro_batch_losses(k):
    data = regression_data(n_batches=5)  # 5 is not a multiple of k: points straddle passes
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    micro: list[torch.Tensor] = []
    lrs: list[float] = []
    steps = {"n": 0}
    original_step = opt.step

    def counting_step(*args, **kwargs):
        steps["n"] += 1
        return original_step(*args, **kwargs)

    opt.step = counting_step

    def loss_fn(m, batch):
        loss = mse(m, batch)
        micro.append(loss.detach().clone())
        lrs.append(group_lr(opt.param_groups[0]))
        return loss

    try:
        result = range_test(
            model, opt, data, loss_fn, accumulation_steps=k, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
        )
    finally:
        del opt.step
    assert len(micro) == k * STEPS and steps["n"] == STEPS
    expected = []
    for i in range(STEPS):
        total = micro[i * k]
        for loss in micro[i * k + 1 : (i + 1) * k]:
            total = total + loss
        expected.append((total / k).item())
    check_curve(result, expected, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs[::k])
    assert all(lrs[i * k : (i + 1) * k] == [lrs[i * k]] * k for i in range(STEPS))  # one LR per point
    saved.check()


def test_range_test_accumulation_steps_equals_one_big_batch_for_sgd():
    # Mean loss over k equal micro-batches has the gradient of their concatenation.
    data = regression_data(n_batches=4)
    big = [(torch.cat([x for x, _ in data[i : i + 2]]), torch.cat([y for _, y in data[i : i + 2]])) for i in (0, 2)]
    results = []
    for loader, k in ((data, 2), (big, 1)):
        model = mlp()
        model.eval()  # no dropout: the two runs see one function
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        results.append(
            range_test(
                model, opt, loader, mse, accumulation_steps=k, start_lr=START, end_lr=END, num_steps=8, confirm=False
            )
        )
    torch.testing.assert_close(torch.tensor(results[0].losses), torch.tensor(results[1].losses), rtol=1e-5, atol=1e-7)


def test_accumulation_longer_than_the_loader():
    data = regression_data(n_batches=2)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    saved = Restored(model, opt)
    seen = []
    result = range_test(
        model,
        opt,
        data,
        lambda m, b: (seen.append(b), mse(m, b))[1],
        accumulation_steps=3,
        start_lr=START,
        end_lr=END,
        num_steps=4,
        confirm=False,
    )
    assert len(result.losses) == 4 and len(seen) == 12
    assert all(b is data[i % 2] for i, b in enumerate(seen))
    saved.check()


def test_accumulation_in_a_user_loop():
    k = 4
    data = regression_data(n_batches=8, batch=4)
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt)
    recorded, lrs = [], []
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        total = torch.zeros(())
        for i, batch in enumerate(rt.batches(data)):
            consume_rng()
            loss = mse(model, batch)
            (loss / k).backward()
            total += loss.detach()
            if (i + 1) % k == 0:
                lrs.append(group_lr(opt.param_groups[0]))
                opt.step()
                opt.zero_grad()
                rt.record(total / k)
                recorded.append((total / k).item())
                total = torch.zeros(())
    check_curve(rt.result, recorded, start_lr=START, end_lr=END, num_steps=STEPS, lrs_seen=lrs)
    saved.check()


@pytest.mark.parametrize("use_scaler", [False, True], ids=["plain", "scaler"])
def test_gradient_clipping_in_a_user_loop(use_scaler):
    max_norm = 0.05
    data = regression_data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=use_scaler)
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt, scaler)
    recorded, lrs, norms = [], [], []
    with RangeTest(model, opt, start_lr=START, end_lr=1.0, num_steps=STEPS, extra_state=[scaler], confirm=False) as rt:
        for batch in rt.batches(data):
            consume_rng()
            opt.zero_grad()
            loss = mse(model, batch)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
            norms.append((norm.item(), clipped.item()))
            lrs.append(group_lr(opt.param_groups[0]))
            scaler.step(opt)
            scaler.update()
            rt.record(loss)
            recorded.append(loss.item())
    assert any(before > max_norm for before, _ in norms)  # clipping really acted
    assert all(after <= max_norm * (1 + 1e-5) or math.isclose(after, before) for before, after in norms)
    check_curve(rt.result, recorded, start_lr=START, end_lr=1.0, num_steps=STEPS, lrs_seen=lrs)
    saved.check()


def test_one_shot_iterator_running_out_ends_the_sweep_early():
    data = regression_data(n_batches=7)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    saved = Restored(model, opt)
    with pytest.warns(UserWarning, match="the iterator ran out after 3 of 8 points"):
        result = range_test(
            model, opt, iter(data), mse, accumulation_steps=2, start_lr=START, end_lr=END, num_steps=8, confirm=False
        )
    assert len(result.losses) == 3  # 7 batches: three full points, the seventh batch is dropped
    saved.check()


def test_empty_loader_is_refused():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    saved = Restored(model, opt)
    with pytest.raises(ValueError, match="the loader is empty"):
        range_test(model, opt, [], mse, accumulation_steps=2, num_steps=8, confirm=False)
    saved.check()


def test_range_test_accumulates_under_no_sync_for_all_but_the_last_micro_batch():
    """A DDP-style model: gradients are reduced once per optimizer step."""
    import contextlib

    class NoSyncModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mlp()
            self.in_no_sync = False
            self.backward_in_no_sync: list[bool] = []

        @contextlib.contextmanager
        def no_sync(self):
            self.in_no_sync = True
            try:
                yield
            finally:
                self.in_no_sync = False

        def forward(self, x):
            self.backward_in_no_sync.append(self.in_no_sync)
            return self.inner(x)

    model = NoSyncModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    saved = Restored(model, opt)
    range_test(model, opt, regression_data(), mse, accumulation_steps=3, num_steps=4, end_lr=1e-2, confirm=False)
    saved.check()
    assert model.backward_in_no_sync == [True, True, False] * 4


def _clipped_twin(model, opt, data, k, max_norm, scaler=None, *, clip_norms=None):
    """The curve of a plain RangeTest loop that clips by hand as ``range_test(clip=max_norm)`` should."""
    params = [p for g in opt.param_groups for p in g["params"]]
    with RangeTest(
        model, opt, start_lr=START, end_lr=1.0, num_steps=STEPS, extra_state=[scaler] if scaler else [], confirm=False
    ) as rt:
        batches = rt.batches(data)
        while not rt.done:
            opt.zero_grad()
            total = None
            for _ in range(k):
                loss = mse(model, next(batches))
                scaled = loss / k if k > 1 else loss
                (scaled if scaler is None else scaler.scale(scaled)).backward()
                total = loss.detach() if total is None else total + loss.detach()
            if scaler is not None:
                scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if clip_norms is not None:
                clip_norms.append(norm.item())
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            rt.record(total / k if k > 1 else total)
    return rt.result


@pytest.mark.parametrize(("k", "use_scaler"), [(1, False), (2, False), (1, True), (3, True)])
def test_range_test_clip_equals_a_loop_that_clips_by_hand(k, use_scaler):
    max_norm = 0.05
    data = regression_data(n_batches=5)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if use_scaler else None
    train(model, opt, data, mse, steps=2)
    saved = Restored(model, opt, *([scaler] if scaler else []))
    result = range_test(
        model, opt, data, mse, clip=max_norm, accumulation_steps=k, scaler=scaler,
        start_lr=START, end_lr=1.0, num_steps=STEPS, confirm=False,
    )  # fmt: skip
    saved.check()
    norms: list[float] = []
    twin = _clipped_twin(model, opt, data, k, max_norm, scaler, clip_norms=norms)
    saved.check()
    assert any(n > max_norm for n in norms)  # clipping really acted
    np.testing.assert_array_equal(result.losses, twin.losses)
    np.testing.assert_array_equal(result.lrs, twin.lrs)
    unclipped = range_test(model, opt, data, mse, accumulation_steps=k, scaler=scaler, start_lr=START, end_lr=1.0,
                           num_steps=STEPS, confirm=False)  # fmt: skip
    assert not np.array_equal(unclipped.losses, result.losses)


def test_range_test_clip_with_a_closure_optimizer_clips_inside_the_closure():
    data = regression_data()
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=2)
    seen: list[float] = []
    real_step = opt.step

    def step(closure):
        def watched():
            loss = closure()
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            seen.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            return loss

        return real_step(watched)

    opt.step = step
    saved = Restored(model, opt)
    range_test(model, opt, data, mse, clip=1e-3, start_lr=START, end_lr=END, num_steps=4, confirm=False)
    saved.check()
    assert seen and all(n <= 1e-3 * (1 + 1e-4) for n in seen)


@pytest.mark.parametrize(
    ("clip", "error", "message"),
    [
        (0, ValueError, "clip must be a finite real number > 0, got 0"),
        (-1.0, ValueError, "clip must be a finite real number > 0"),
        (math.inf, ValueError, "clip must be a finite real number > 0"),
        ("1", TypeError, "clip must be a finite real number > 0, got str"),
        (True, TypeError, "clip must be a finite real number > 0, got bool"),
    ],
)
def test_range_test_refuses_a_bad_clip_before_touching_anything(clip, error, message):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    train(model, opt, regression_data(), mse, steps=1)
    saved = Restored(model, opt)
    with pytest.raises(error, match=message):
        range_test(model, opt, regression_data(), mse, clip=clip, num_steps=4, confirm=False)
    saved.check()


def test_range_test_clip_makes_no_host_sync(monkeypatch):
    from _sync_counter import SyncCounter

    from torch_lrrange import _one_call as runner

    syncs: list[int] = []
    real_clip = runner._clip

    def counted(optimizer, max_norm):
        with SyncCounter() as counter:
            real_clip(optimizer, max_norm)
        syncs.append(counter.total)

    monkeypatch.setattr(runner, "_clip", counted)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    range_test(model, opt, regression_data(), mse, clip=0.1, start_lr=START, end_lr=END, num_steps=8, confirm=False)
    assert syncs == [0] * 8
