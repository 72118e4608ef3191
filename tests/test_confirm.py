"""The confirmation phase's pure building blocks: candidates, run scores, the choice."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from _state import Restored
from torch import nn
from torch.nn import functional as F

from torch_lrrange import RangeTestResult, analyze, range_test
from torch_lrrange.confirm import COUNT, MAX_FACTOR, SPACING, STEPS, Confirmation, candidates, choose, run_score


def test_candidates_lie_half_a_decade_apart_below_the_climb_point():
    lrs = candidates(0.3)
    assert len(lrs) == COUNT == 6
    assert lrs == sorted(lrs)
    np.testing.assert_allclose(np.diff(np.log10(lrs)), 0.5)
    assert lrs[-1] == pytest.approx(0.3 / SPACING)
    assert lrs[0] == pytest.approx(0.3 / 1000)


def test_candidates_come_from_a_curves_climb_point():
    log_lrs = np.linspace(-6, 1, 100)
    losses = 2 - np.tanh(log_lrs + 3) + np.exp(5 * (log_lrs + 0.5))
    climb = analyze(10**log_lrs, losses).suggestion.climb_at
    assert climb is not None
    assert max(candidates(climb)) < climb


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"climb_at": 0.0}, ValueError, "climb_at"),
        ({"climb_at": math.inf}, ValueError, "climb_at"),
        ({"climb_at": "1"}, TypeError, "climb_at"),
        ({"climb_at": 1.0, "count": 0}, ValueError, "count"),
        ({"climb_at": 1.0, "count": 2.5}, TypeError, "count"),
        ({"climb_at": 1.0, "spacing": 1.0}, ValueError, "spacing must be > 1"),
    ],
)
def test_candidates_refuse_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        candidates(**kwargs)


def test_run_score_is_the_mean_of_the_last_losses():
    losses = list(np.linspace(3, 1, 100))
    assert run_score(losses) == pytest.approx(np.mean(losses[-10:]))
    assert run_score(losses, steps=50, tail=5) == pytest.approx(np.mean(losses[45:50]))
    assert run_score([*losses, float("nan")]) == pytest.approx(np.mean(losses[-10:]))  # past `steps`: ignored


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_run_that_blew_up_scores_infinity(bad):
    losses = [1.0] * STEPS
    losses[37] = bad
    assert run_score(losses) == math.inf


def test_a_run_cut_short_scores_infinity():
    assert run_score([1.0] * (STEPS - 1)) == math.inf


def test_run_score_refuses_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        run_score([1.0], steps=0)
    with pytest.raises(TypeError, match="tail"):
        run_score([1.0], steps=1, tail=1.5)


def test_choose_keeps_the_lowest_score_and_orders_the_candidates():
    lrs = [1.0, 0.01, 0.1]
    runs = [[2.0] * 9 + [float("nan")], [1.5] * 10, [1.0] * 10]
    c = choose(lrs, runs, steps=10, tail=3)
    assert isinstance(c, Confirmation)
    assert c.candidates == [0.01, 0.1, 1.0]
    assert c.scores == [1.5, 1.0, math.inf]
    assert c.lr == 0.1
    assert c.max_lr == pytest.approx(0.1 * MAX_FACTOR)
    assert c.cost == 30


def test_choose_breaks_a_tie_towards_the_smaller_lr():
    assert choose([0.3, 0.03], [[1.0] * 4, [1.0] * 4], steps=4, tail=2).lr == 0.03


def test_choose_refuses_runs_that_all_blew_up_or_do_not_match():
    with pytest.raises(ValueError, match="every candidate run diverged"):
        choose([0.1, 1.0], [[float("nan")], [float("inf")]], steps=1, tail=1)
    with pytest.raises(ValueError, match="same length"):
        choose([0.1, 1.0], [[1.0]], steps=1, tail=1)
    with pytest.raises(ValueError, match="at least one"):
        choose([], [], steps=1, tail=1)


# --- range_test(confirm=) -------------------------------------------------------------------


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(640, 10)
    y = (x[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    return model, opt, loader, (x[:128], y[:128])


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def test_range_test_confirms_among_candidates_below_the_climb_point_and_restores_everything():
    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    generator_state = loader.generator.get_state()
    plain = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=80)
    result = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=80, confirm=20)
    before.check()
    assert torch.equal(loader.generator.get_state(), generator_state)
    info = result.metadata["confirmation"]
    assert info["by"] == "training" and info["steps"] == 20
    assert info["candidates"] == pytest.approx(candidates(plain.suggestion.climb_at))
    assert result.lr == info["lr"] in info["candidates"]
    scores = [math.inf if s is None else s for s in info["scores"]]
    assert result.lr == info["candidates"][int(np.argmin(scores))]
    assert result.max_lr == pytest.approx(result.lr * MAX_FACTOR)
    assert result.min_lr <= result.lr <= result.max_lr
    np.testing.assert_array_equal(result.losses, plain.losses)  # the sweep itself is unchanged
    again = RangeTestResult.from_dict(result.to_dict())
    assert again.lr == result.lr and again.metadata["confirmation"] == info


def test_each_candidate_run_starts_from_the_same_state_and_batches():
    """Two confirmations of one setup choose alike, and a candidate's score does not depend on the others."""
    model, opt, loader, _ = _setup()
    first = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=80, confirm=15)
    second = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=80, confirm=15)
    assert first.metadata["confirmation"] == second.metadata["confirmation"]


def test_range_test_confirms_by_the_validation_loss_when_given_a_val_loader():
    model, opt, loader, val = _setup()
    result = range_test(model, opt, loader, _loss, val_loader=[val], start_lr=1e-4, end_lr=10, num_steps=60, confirm=10)
    info = result.metadata["confirmation"]
    assert info["by"] == "validation" and info["steps"] == 10  # optimizer steps per run; each scored once, after it
    assert len(info["scores"]) == len(info["candidates"]) == COUNT


@pytest.mark.parametrize("bad,error", [("yes", TypeError), (0, ValueError), (-5, ValueError), (2.5, TypeError)])
def test_range_test_refuses_a_bad_confirm_before_touching_anything(bad, error):
    from _state import Restored

    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    with pytest.raises(error, match="confirm"):
        range_test(model, opt, loader, _loss, num_steps=20, confirm=bad)
    before.check()


def test_confirm_false_changes_nothing():
    model, opt, loader, _ = _setup()
    a = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=60)
    b = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=60, confirm=False)
    assert a.lr == b.lr and "confirmation" not in b.metadata


def test_a_small_training_set_without_a_val_loader_warns():
    model, opt, loader, val = _setup()  # 640 samples
    result = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=40)
    assert any("small training set (640 samples)" in w and "val_loader=" in w for w in result.warnings)
    with_val = range_test(model, opt, loader, _loss, val_loader=[val], start_lr=1e-4, end_lr=10, num_steps=40)
    assert not any("small training set" in w for w in with_val.warnings)
    x = torch.randn(2000, 10)
    big = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=50)
    assert not any("small training set" in w for w in range_test(model, opt, big, _loss, num_steps=20).warnings)
    batches = list(loader)  # a plain list has no data set to count: no warning
    assert not any("small training set" in w for w in range_test(model, opt, batches, _loss, num_steps=20).warnings)


def test_confirmation_runs_leave_the_global_rngs_as_they_were():
    """Dropout draws from the global RNG in every candidate run; the draws are put back with everything else."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(320, 10)
    data = list(zip(x.split(32), (x[:, 0] > 0).long().split(32)))
    state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    result = range_test(model, opt, data, _loss, start_lr=1e-5, end_lr=10, num_steps=60, confirm=10)
    assert "confirmation" in result.metadata
    assert torch.equal(torch.get_rng_state(), state)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
