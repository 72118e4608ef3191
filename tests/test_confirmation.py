"""The confirmation phase's pure building blocks: candidates, run scores, the choice."""

from __future__ import annotations

import math
import random
from unittest import mock

import numpy as np
import pytest
import torch
from _state import Restored
from torch import nn
from torch.nn import functional as F

from torch_lrrange import RangeTest, RangeTestResult, analyze, range_test, range_test_grid
from torch_lrrange._confirmation import (
    COUNT,
    MAX_FACTOR,
    SPACING,
    STEPS,
    Confirmation,
    auto_steps,
    candidates,
    choose,
    run_score,
)
from torch_lrrange._progress import Progress


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


def _setup(seed: int = 0, samples: int = 640):
    """640 samples: a small training set (range_test judges candidate runs by held-back batches); 1280: not."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(samples, 10)
    y = (x[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    return model, opt, loader, (x[:128], y[:128])


def _loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def test_range_test_confirms_among_candidates_below_the_climb_point_and_restores_everything():
    model, opt, loader, _ = _setup(samples=1280)
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


def test_confirm_false_gives_the_sweeps_reading_alone():
    model, opt, loader, _ = _setup()
    a = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=60)
    b = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=60, confirm=False)
    assert "confirmation" not in b.metadata and b.lr == b.suggestion.lr
    np.testing.assert_array_equal(a.losses, b.losses)  # the same sweep; only the confirmation differs
    assert (a.suggestion.lr, a.suggestion.min_lr, a.suggestion.max_lr) == (b.lr, b.min_lr, b.max_lr)


def test_the_default_confirms_with_six_runs_of_100_steps_within_1000_steps():
    model, opt, loader, _ = _setup(samples=1280)
    before = Restored(model, opt)
    steps = 0

    def counted(m, batch):
        nonlocal steps
        steps += 1
        return _loss(m, batch)

    result = range_test(model, opt, loader, counted)
    before.check()
    confirmed = result.confirmation
    assert confirmed is not None and confirmed.steps == STEPS == 100 and len(confirmed.candidates) == COUNT
    assert confirmed.cost == 600 and confirmed.evaluations is None  # one gradient per step: nothing more to count
    assert 600 < steps <= 700 and "evaluations" not in result.metadata
    assert result.lr == confirmed.lr
    explicit = range_test(model, opt, loader, _loss, confirm=True)
    assert explicit.metadata["confirmation"] == result.metadata["confirmation"]


def test_the_default_in_a_loop_without_rt_batches_gives_the_sweep_with_a_note_and_no_warning(recwarn):
    model, opt, loader, _ = _setup()
    batches = list(loader)
    with RangeTest(model, opt, **SWEEP) as rt:
        i = 0
        while not rt.done:
            opt.zero_grad()
            loss = _loss(model, batches[i % len(batches)])
            loss.backward()
            opt.step()
            rt.record(loss)
            i += 1
    assert not [w for w in recwarn if "confirmation" in str(w.message)]
    assert i <= 80 and rt.result.confirmation is None and rt.result.lr == rt.result.suggestion.lr
    assert any("does not draw its batches from rt.batches" in w for w in rt.result.warnings)


def test_the_default_with_a_one_shot_iterator_gives_the_sweep_with_a_note():
    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    batches = list(loader) * 5  # more than the sweep needs
    one_call = range_test(model, opt, iter(batches), _loss, **SWEEP)
    looped = _loop(model, opt, iter(batches), SWEEP)
    before.check()
    for result in (one_call, looped):
        assert result.confirmation is None and result.lr == result.suggestion.lr
        assert any("one-shot iterator" in w for w in result.warnings)


def _lbfgs_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=8)
    x = torch.randn(256, 10)
    return model, opt, list(zip(x.split(64), (2 * x[:, :1]).split(64)))


def test_the_default_sizes_lbfgs_runs_by_the_closure_calls_it_counts():
    """An LBFGS step calls its closure up to max_iter times: the default confirmation spends at most 600 of them."""
    model, opt, data = _lbfgs_setup()
    before = Restored(model, opt)
    calls = 0

    def counted(m, b):
        nonlocal calls
        calls += 1
        return F.mse_loss(m(b[0]), b[1])

    with mock.patch("torch_lrrange._progress.Progress.resize", autospec=True, side_effect=Progress.resize) as resized:
        result = range_test(model, opt, data, counted, **{**SWEEP, "num_steps": 40})
    before.check()
    sweep_calls = result.metadata["evaluations"]
    confirmed = result.confirmation
    assert confirmed is not None and confirmed.evaluations is not None
    assert sweep_calls + confirmed.evaluations == calls and sweep_calls > 40  # several per step, all counted
    assert 2 <= confirmed.steps < STEPS and confirmed.cost == 6 * confirmed.steps
    assert resized.call_args.args[1] == 40 + 6 * confirmed.steps  # the display's total follows the runs' size
    assert RangeTestResult.from_dict(result.to_dict()).confirmation == confirmed


def test_the_default_takes_an_lbfgs_step_at_max_iter_evaluations_when_the_loop_does_not_count_them():
    model, opt, data = _lbfgs_setup()
    with RangeTest(model, opt, **{**SWEEP, "num_steps": 40}) as rt:
        for x, y in rt.batches(data):

            def closure(x=x, y=y):
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss

            rt.record(opt.step(closure))
    assert rt.result.confirmation is not None and rt.result.confirmation.steps == auto_steps(8) == 12


def test_record_refuses_bad_evaluations():
    model, opt, _, _ = _setup()
    with RangeTest(model, opt, **SWEEP, confirm=False) as rt:
        for bad, error in ((0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)):
            with pytest.raises(error, match="evaluations must be an int >= 1"):
                rt.record(torch.tensor(1.0), evaluations=bad)
        assert rt.step == 0


def test_a_small_training_set_without_a_val_loader_warns():
    model, opt, loader, val = _setup()  # 640 samples
    result = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=40)
    assert any("small training set (640 samples)" in w and "val_loader=" in w for w in result.warnings)
    plain = range_test(model, opt, loader, _loss, start_lr=1e-4, end_lr=10, num_steps=40, confirm=False)
    assert any("small training set (640 samples)" in w and "cannot see it" in w for w in plain.warnings)
    with_val = range_test(model, opt, loader, _loss, val_loader=[val], start_lr=1e-4, end_lr=10, num_steps=40)
    assert not any("small training set" in w for w in with_val.warnings)
    x = torch.randn(2000, 10)
    big = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=50)
    assert not any("small training set" in w for w in range_test(model, opt, big, _loss, num_steps=20).warnings)
    batches = list(loader)  # a plain list has no data set to count: no warning
    assert not any("small training set" in w for w in range_test(model, opt, batches, _loss, num_steps=20).warnings)


def test_a_small_training_set_judges_the_runs_by_batches_held_back_from_them():
    """640 samples in 20 batches: every 5th batch of the sweep's first pass is kept out of the candidate runs,
    which train on the other 16 in their order, and scores each run after it, without gradients."""
    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    generator_state = loader.generator.get_state()
    first_pass = [x[0, 0].item() for x, _ in loader]  # the first sample of each batch names the batch
    loader.generator.set_state(generator_state)
    seen: list[tuple[float, bool]] = []

    def watched(m, batch):
        seen.append((batch[0][0, 0].item(), torch.is_grad_enabled()))
        return _loss(m, batch)

    result = range_test(model, opt, loader, watched, start_lr=1e-4, end_lr=10, num_steps=60, confirm=8)
    before.check()
    assert torch.equal(loader.generator.get_state(), generator_state)
    confirmed = result.confirmation
    assert confirmed is not None and confirmed.by == "held-back" and confirmed.steps == 8
    assert any("judged each run by 4 batches of the first pass held back" in w for w in result.warnings)
    held, kept = first_pass[4::5], [b for i, b in enumerate(first_pass) if i % 5 != 4]
    runs = seen[-6 * (8 + 4) :]  # 8 training steps, then the 4 held-back batches, per run
    for k in range(6):
        run = runs[12 * k : 12 * (k + 1)]
        assert [b for b, grad in run[:8]] == kept[:8] and all(grad for _, grad in run[:8])
        assert [b for b, grad in run[8:]] == held and not any(grad for _, grad in run[8:])
    assert "evaluations" not in result.metadata


def test_held_back_batches_only_where_the_training_set_is_small_and_no_val_loader_is_given():
    model, opt, loader, val = _setup()
    options = {"start_lr": 1e-4, "end_lr": 10, "num_steps": 40, "confirm": 4}
    assert range_test(model, opt, loader, _loss, val_loader=[val], **options).confirmation.by == "validation"
    assert range_test(model, opt, list(loader), _loss, **options).confirmation.by == "training"  # nothing to count
    x = torch.randn(2000, 10)
    big = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=50)
    assert range_test(model, opt, big, _loss, **options).confirmation.by == "training"
    few = torch.utils.data.DataLoader(loader.dataset, batch_size=160)  # 4 batches: too few to hold one back
    assert range_test(model, opt, few, _loss, **options).confirmation.by == "training"


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


# --- the confirmation as one unit: loop form, held values, group ratios, ties, one-shot loaders --------------


def _loop(model, opt, loader, rt_kwargs, on_step=None):
    """The README's loop around a RangeTest; ``on_step(rt)`` is called after each record()."""
    with RangeTest(model, opt, **rt_kwargs) as rt:
        for x, y in rt.batches(loader):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            rt.record(loss)
            if on_step is not None:
                on_step(rt)
    return rt.result


SWEEP = {"start_lr": 1e-4, "end_lr": 10, "num_steps": 80, "progress": False}


def test_the_loop_form_confirms_inside_the_users_loop_like_the_one_call():
    model, opt, loader, _ = _setup(samples=1280)
    before = Restored(model, opt)
    generator_state = loader.generator.get_state()
    phases = []
    looped = _loop(model, opt, loader, {**SWEEP, "confirm": 15}, on_step=lambda rt: phases.append(rt.confirming))
    before.check()
    assert torch.equal(loader.generator.get_state(), generator_state)
    one_call = range_test(model, opt, loader, _loss, **SWEEP, confirm=15)
    assert looped.metadata["confirmation"] == one_call.metadata["confirmation"]
    assert looped.lr == one_call.lr == looped.confirmation.lr
    # after each record(), whether the next step is a candidate run's: the sweep's points (up to 80, until it
    # diverged), then the candidate runs, and the last record() ends the test
    sweep = phases.index(True) + 1
    assert sweep <= 80 and phases == [False] * (sweep - 1) + [True] * (COUNT * 15) + [False]
    assert looped.suggestion.lr is not None and looped.confirmation.cost == COUNT * 15


def test_candidate_runs_hold_the_hyperparams_of_the_sweep():
    model, opt, loader, _ = _setup()
    held = range_test(model, opt, loader, _loss, **SWEEP, confirm=15, hyperparams={"weight_decay": 0.3})
    torch.manual_seed(0)
    twin = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.3)
    own = range_test(twin, twin_opt, loader, _loss, **SWEEP, confirm=15)
    plain = range_test(model, opt, loader, _loss, **SWEEP, confirm=15)
    assert held.metadata["confirmation"] == own.metadata["confirmation"]
    assert held.metadata["confirmation"]["scores"] != plain.metadata["confirmation"]["scores"]


def test_the_grid_confirms_each_combination_at_its_own_values():
    model, opt, loader, _ = _setup()
    grid = range_test_grid(model, opt, loader, _loss, grid={"weight_decay": [0.0, 0.3]}, **SWEEP, confirm=15)
    scores = [r.metadata["confirmation"]["scores"] for r in grid.results.values()]
    assert scores[0] != scores[1]
    single = range_test(model, opt, loader, _loss, **SWEEP, confirm=15, hyperparams={"weight_decay": 0.3})
    assert grid.results[(0.3,)].metadata["confirmation"] == single.metadata["confirmation"]


def test_candidate_runs_keep_the_sweeps_per_group_ratios_also_with_a_group_at_lr_zero():
    model, _, loader, _ = _setup()
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = torch.optim.SGD([{"params": first, "lr": 0.0}, {"params": second, "lr": 0.1}], momentum=0.9)
    seen = []
    kwargs = {**SWEEP, "start_lr": [1e-4, 1e-5], "end_lr": [10.0, 1.0], "confirm": 10}
    result = _loop(
        model,
        opt,
        loader,
        kwargs,
        on_step=lambda rt: rt.confirming and seen.append([g["lr"] for g in opt.param_groups]),
    )
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.1]  # restored
    # the LRs set for each candidate run's steps
    assert len(seen) == COUNT * 10
    assert sorted({group0 for group0, _ in seen}) == result.confirmation.candidates
    assert all(group1 == pytest.approx(group0 / 10, rel=1e-12) for group0, group1 in seen)


def test_a_result_confirmed_without_a_reading_of_its_curve_is_usable_and_says_where_its_lr_comes_from():
    flat = analyze(np.logspace(-5, 0, 50), np.ones(50))
    assert not flat.usable and flat.confidence == 0.0
    confirmed = Confirmation(0.01, 0.01 * MAX_FACTOR, [0.001, 0.01], [2.0, 1.0], steps=20)
    confirmed.warnings.append("the LR comes from the confirmation phase alone: the curve gave none")
    result = analyze(np.logspace(-5, 0, 50), np.ones(50), confirmation=confirmed.to_dict())
    assert result.usable and result.lr == 0.01 and result.bounds == (0.01, confirmed.max_lr)
    assert result.confidence == 0.0  # the curve's: the LR is the confirmation's alone
    assert result.suggestion.lr is None
    assert any("confirmation phase alone" in w for w in result.warnings)
    assert "confirmed" in repr(result)


def test_plot_reanalyze_and_save_keep_the_confirmed_lr(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    model, opt, loader, _ = _setup()
    result = range_test(model, opt, loader, _loss, **SWEEP, confirm=15)
    assert result.lr == result.confirmation.lr
    again = result.reanalyze("steepest")
    assert again.lr == result.lr and again.max_lr == result.max_lr and again.method == "steepest"
    ax = result.plot()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"confirmed lr {result.lr:.2g}" in label for label in labels)
    assert any("method 'default'" in label and f"{result.suggestion.lr:.2g}" in label for label in labels)
    result.save(tmp_path / "r.json")
    loaded = RangeTestResult.load(tmp_path / "r.json")
    assert loaded.lr == result.lr and loaded.confirmation == result.confirmation


def test_runs_that_cannot_tell_the_candidates_apart_keep_the_curves_reading():
    model, opt, loader, _ = _setup()
    result = _loop(model, opt, loader, {**SWEEP, "confirm": 5, "confirm_score": lambda: 1.0})
    assert result.confirmation is None and result.lr == result.suggestion.lr
    assert any("every candidate run scored the same" in w for w in result.warnings)


def test_a_tie_for_the_best_score_is_said():
    c = choose([0.01, 0.1, 1.0], [[3.0, 2.0], [3.0, 1.0], [3.0, 1.0]], steps=2, tail=1)
    assert c.lr == 0.1 and any("scored the same" in w for w in c.warnings)


def test_confirm_1_is_refused_when_runs_are_judged_by_their_training_losses():
    model, opt, loader, val = _setup(samples=1280)
    before = Restored(model, opt)
    with pytest.raises(ValueError, match="confirm=1 cannot tell the candidates apart"):
        range_test(model, opt, loader, _loss, num_steps=20, confirm=1)
    before.check()
    scored = range_test(model, opt, loader, _loss, val_loader=[val], **{**SWEEP, "num_steps": 40}, confirm=1)
    assert scored.confirmation is not None and scored.confirmation.by == "validation"


def test_lbfgs_candidates_are_told_apart():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=5)
    x = torch.randn(256, 10)
    data = list(zip(x.split(64), (2 * x[:, :1]).split(64)))
    before = Restored(model, opt)
    result = range_test(
        model, opt, data, lambda m, b: F.mse_loss(m(b[0]), b[1]), **{**SWEEP, "num_steps": 40}, confirm=10
    )
    before.check()
    scores = result.confirmation.scores
    assert max(scores) > 2 * min(scores)  # the runs differ by far more than rounding


def test_one_shot_iterators_are_refused_for_a_confirmation_and_a_grid():
    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    with pytest.raises(ValueError, match="confirm= needs a re-iterable loader"):
        range_test(model, opt, iter(list(loader)), _loss, num_steps=20, confirm=10)
    with pytest.raises(ValueError, match="confirm= needs a re-iterable loader"):
        _loop(model, opt, iter(list(loader)), {**SWEEP, "confirm": 10})
    with pytest.raises(ValueError, match="range_test_grid needs a re-iterable loader"):
        range_test_grid(model, opt, iter(list(loader)), _loss, grid={"weight_decay": [0.0, 0.1]}, num_steps=20)
    before.check()


def test_a_loop_without_rt_batches_keeps_the_sweep_and_says_why_it_did_not_confirm():
    model, opt, loader, _ = _setup()
    batches = list(loader)
    with pytest.warns(UserWarning, match="does not draw its batches from rt.batches"):
        with RangeTest(model, opt, **SWEEP, confirm=10) as rt:
            i = 0
            while not rt.done:
                x, y = batches[i % len(batches)]
                i += 1
                opt.zero_grad()
                loss = _loss(model, (x, y))
                loss.backward()
                opt.step()
                rt.record(loss)
    assert i <= 80 and rt.result.confirmation is None and rt.result.lr == rt.result.suggestion.lr
    assert any("the confirmation did not run" in w for w in rt.result.warnings)


def test_stopping_during_the_confirmation_keeps_the_sweep_and_restores_everything():
    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    with RangeTest(model, opt, **SWEEP, confirm=10) as rt:
        for x, y in rt.batches(loader):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            rt.record(loss)
            if rt.confirming and rt.step == 5:
                break
    before.check()
    assert rt.result.confirmation is None and rt.result.suggestion.lr is not None
    assert any("the confirmation stopped after 0 of 6" in w for w in rt.result.warnings)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_during_a_candidate_run_restores_everything_and_propagates(error):
    model, opt, loader, _ = _setup()
    before = Restored(model, opt)
    generator_state = loader.generator.get_state()
    state = torch.get_rng_state()
    calls = 0

    def failing(m, batch):
        nonlocal calls
        calls += 1
        if calls == 80 + 25:  # in the third candidate run
            raise error("boom")
        return _loss(m, batch)

    with pytest.raises(error, match="boom"):
        range_test(model, opt, loader, failing, **SWEEP, confirm=10)
    before.check()
    assert torch.equal(loader.generator.get_state(), generator_state)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("where", ["device", "cpu"])
def test_a_cuda_confirmation_restores_everything_and_matches_the_loop_form(where):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(320, 10, device="cuda")
    data = list(zip(x.split(32), (x[:, 0] > 0).long().split(32)))
    before = Restored(model, opt)
    kwargs = {**SWEEP, "snapshot": where, "confirm": 10}
    one_call = range_test(model, opt, data, _loss, **kwargs)
    before.check()
    looped = _loop(model, opt, data, kwargs)
    before.check()
    assert one_call.confirmation is not None and looped.metadata["confirmation"] == one_call.metadata["confirmation"]
