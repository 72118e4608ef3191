"""Two range tests at once stay independent; one optimizer under two tests is refused."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _state import assert_same, capture
from _statecheck import (
    assert_nothing_registered,
    make_setup,
)

from torch_lrrange import RangeTest, range_test

OPTIONS = {"num_steps": 24, "start_lr": 1e-4, "end_lr": 1.0}


def _setup(seed):
    # No dropout: the RNG is process-wide, and each test restores it on exit.
    model, opt, data, loss_fn, _ = make_setup(seed=seed, dropout=0.0)
    model.train()
    return model, opt, data, loss_fn


def _step(model, opt, batch, loss_fn):
    opt.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    opt.step()
    return loss


def _alone(seed):
    model, opt, data, loss_fn = _setup(seed)
    return range_test(model, opt, data, loss_fn, **OPTIONS)


def test_nested_range_tests_on_different_models_are_independent():
    expected_a, expected_b = _alone(1), _alone(2)
    model_a, opt_a, data_a, loss_a = _setup(1)
    model_b, opt_b, data_b, loss_b = _setup(2)
    before_a, before_b = capture(model_a, opt_a), capture(model_b, opt_b)
    with RangeTest(model_a, opt_a, **OPTIONS) as outer:
        for i, batch in enumerate(outer.batches(data_a)):
            if i == 5:  # a whole inner test in the middle of the outer one
                with RangeTest(model_b, opt_b, **OPTIONS) as inner:
                    for batch_b in inner.batches(data_b):
                        inner.record(_step(model_b, opt_b, batch_b, loss_b))
                assert_same(before_b, capture(model_b, opt_b))
            outer.record(_step(model_a, opt_a, batch, loss_a))
    assert np.array_equal(outer.result.losses, expected_a.losses)
    assert np.array_equal(inner.result.losses, expected_b.losses)
    assert np.array_equal(outer.result.lrs, expected_a.lrs)
    assert_same(before_a, capture(model_a, opt_a))
    assert_same(before_b, capture(model_b, opt_b))
    assert_nothing_registered()


def test_interleaved_range_tests_are_independent():
    expected_a, expected_b = _alone(1), _alone(2)
    model_a, opt_a, data_a, loss_a = _setup(1)
    model_b, opt_b, data_b, loss_b = _setup(2)
    before_a, before_b = capture(model_a, opt_a), capture(model_b, opt_b)
    with RangeTest(model_a, opt_a, **OPTIONS) as a, RangeTest(model_b, opt_b, **OPTIONS) as b:
        for batch_a, batch_b in zip(a.batches(data_a), b.batches(data_b)):
            a.record(_step(model_a, opt_a, batch_a, loss_a))
            b.record(_step(model_b, opt_b, batch_b, loss_b))
            assert opt_a.param_groups[0]["lr"] == a.lr and opt_b.param_groups[0]["lr"] == b.lr
    assert np.array_equal(a.result.losses, expected_a.losses)
    assert np.array_equal(b.result.losses, expected_b.losses)
    assert_same(before_a, capture(model_a, opt_a))
    assert_same(before_b, capture(model_b, opt_b))
    assert_nothing_registered()


def test_range_tests_in_two_threads_are_independent():
    expected = {seed: _alone(seed) for seed in (1, 2)}
    setups = {seed: _setup(seed) for seed in (1, 2)}
    before = {seed: capture(*setups[seed][:2]) for seed in (1, 2)}
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def run(seed):
        try:
            model, opt, data, loss_fn = setups[seed]
            with RangeTest(model, opt, **OPTIONS) as rt:
                barrier.wait(timeout=30)  # both tests are running now
                for batch in rt.batches(data):
                    rt.record(_step(model, opt, batch, loss_fn))
            results[seed] = rt.result
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for seed in (1, 2):
        assert np.array_equal(results[seed].losses, expected[seed].losses)
        assert np.array_equal(results[seed].lrs, expected[seed].lrs)
        assert_same(before[seed], capture(*setups[seed][:2]))
    assert_nothing_registered()


def test_the_same_optimizer_twice_is_refused_and_the_first_test_carries_on():
    model, opt, data, loss_fn = _setup(1)
    expected = _alone(1)
    before = capture(model, opt)
    with RangeTest(model, opt, **OPTIONS) as outer:
        for i, batch in enumerate(outer.batches(data)):
            if i == 3:
                lr = opt.param_groups[0]["lr"]
                with pytest.raises(RuntimeError, match="this optimizer is already under a running RangeTest"):
                    with RangeTest(model, opt, **OPTIONS):
                        pytest.fail("the block must not run")
                assert opt.param_groups[0]["lr"] == lr  # the refused test touched nothing
            outer.record(_step(model, opt, batch, loss_fn))
        with pytest.raises(RuntimeError, match="already under a running RangeTest"):
            range_test(model, opt, data, loss_fn, **OPTIONS)
    assert np.array_equal(outer.result.losses, expected.losses)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()
    # once the first test is over, the optimizer can be tested again
    again = range_test(model, opt, data, loss_fn, **OPTIONS)
    assert np.array_equal(again.losses, expected.losses)


def test_the_same_optimizer_in_two_threads_is_refused():
    model, opt, *_ = _setup(1)
    before = capture(model, opt)
    entered, tried = threading.Event(), threading.Event()
    errors = []

    def first():
        try:
            with RangeTest(model, opt, **OPTIONS):
                entered.set()
                tried.wait(timeout=60)
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(timeout=60)
        with pytest.raises(RuntimeError, match="this optimizer is already under a running RangeTest"):
            RangeTest(model, opt, **OPTIONS).__enter__()
    finally:
        tried.set()
        thread.join(timeout=60)
    assert not errors
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_a_refused_test_does_not_unregister_the_running_one():
    model, opt, data, loss_fn = _setup(1)
    with RangeTest(model, opt, **OPTIONS) as rt:
        for _ in range(3):
            with pytest.raises(RuntimeError, match="already under a running RangeTest"):
                RangeTest(torch.nn.Linear(1, 1), opt).__enter__()
        with pytest.raises(RuntimeError, match="already under a running RangeTest"):
            RangeTest(model, opt).__enter__()  # still registered after the refusals
        for batch in rt.batches(data):
            rt.record(_step(model, opt, batch, loss_fn))
    assert_nothing_registered()
