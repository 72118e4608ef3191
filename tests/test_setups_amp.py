"""torch.autocast with a GradScaler in extra_state: skipped steps, finite curves, the scaler restored."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _setup_helpers import check_curve, consume_rng, mlp, mse, regression_data
from _state import Restored

from torch_lrrange import RangeTest, range_test

START, END, STEPS = 1e-4, 1e-1, 16
SKIP_AT = 5  # the step whose gradients are made infinite

DEVICES = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param(
        "cuda",
        torch.float16,
        id="cuda-fp16",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ),
]


def _setup(device: str):
    data = [(x.to(device), y.to(device)) for x, y in regression_data()]
    model = mlp().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10, growth_interval=3)
    for batch in data[:3]:  # a scaler with a history: scale tensor and growth tracker exist
        opt.zero_grad()
        scaler.scale(mse(model, batch)).backward()
        scaler.step(opt)
        scaler.update()
    return data, model, opt, scaler


@pytest.mark.parametrize(("device", "dtype"), DEVICES)
def test_autocast_user_loop_with_a_skipped_step(device, dtype):
    data, model, opt, scaler = _setup(device)
    saved = Restored(model, opt, scaler)
    losses, skipped = [], []
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, extra_state=[scaler], confirm=False) as rt:
        for i, (x, y) in enumerate(rt.batches(data)):
            consume_rng()
            opt.zero_grad()
            with torch.autocast(device, dtype=dtype):
                out = model(x)
                assert out.dtype == dtype
            loss = torch.nn.functional.mse_loss(out.float(), y)
            scaler.scale(loss).backward()
            if i == SKIP_AT:
                next(model.parameters()).grad[0, 0] = math.inf
            before = [p.detach().clone() for p in model.parameters()]
            scale = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            unchanged = all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
            skipped.append(unchanged)
            if i == SKIP_AT:
                assert scaler.get_scale() == scale * 0.5  # the scaler saw the inf and backed off
            rt.record(loss)
            losses.append(loss.item())
    assert skipped[SKIP_AT] and not any(skipped[:SKIP_AT])
    check_curve(rt.result, losses, start_lr=START, end_lr=END, num_steps=STEPS)
    saved.check()  # the scaler's state_dict (scale, growth tracker) included


@pytest.mark.parametrize(("device", "dtype"), DEVICES)
def test_range_test_with_scaler_and_a_skipped_step(device, dtype):
    data, model, opt, scaler = _setup(device)
    saved = Restored(model, opt, scaler)
    calls = {"n": 0}
    losses = []

    def poison(grad):  # infinite gradient on the SKIP_AT-th backward
        calls["n"] += 1
        return torch.full_like(grad, math.inf) if calls["n"] == SKIP_AT + 1 else grad

    handle = next(model.parameters()).register_hook(poison)
    scales = []

    def loss_fn(m, batch):
        x, y = batch
        scales.append(scaler.get_scale())
        with torch.autocast(device, dtype=dtype):
            out = m(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        losses.append(loss.item())
        return loss

    try:
        result = range_test(
            model, opt, data, loss_fn, scaler=scaler, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
        )
    finally:
        handle.remove()
    assert scales[SKIP_AT + 1] == scales[SKIP_AT] * 0.5  # the step was skipped
    check_curve(result, losses, start_lr=START, end_lr=END, num_steps=STEPS)
    saved.check()


def test_scaler_may_also_be_listed_in_extra_state():
    data, model, opt, scaler = _setup("cpu")
    saved = Restored(model, opt, scaler)
    result = range_test(
        model,
        opt,
        data,
        mse,
        scaler=scaler,
        extra_state=(scaler,),
        start_lr=START,
        end_lr=END,
        num_steps=8,
        confirm=False,
    )
    assert np.isfinite(result.losses).all() and len(result.losses) == 8
    saved.check()


def test_interrupted_between_unscale_and_update_leaves_the_scaler_usable():
    data, model, opt, scaler = _setup("cpu")
    saved = Restored(model, opt, scaler)
    with pytest.raises(KeyboardInterrupt):
        with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, extra_state=[scaler], confirm=False):
            opt.zero_grad()
            scaler.scale(mse(model, data[0])).backward()
            scaler.unscale_(opt)  # the scaler now refuses a second unscale_() until update()
            raise KeyboardInterrupt
    saved.check()
    assert not scaler._per_optimizer_states  # no optimizer half-way through a step
    opt.zero_grad()
    scaler.scale(mse(model, data[1])).backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
