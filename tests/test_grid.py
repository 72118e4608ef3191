"""range_test_grid and GridResult: one snapshot for every sweep, the choice, JSON, apply, plot, ranks, CLI example."""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _examples import run_example
from _state import Restored
from torch.utils.data import DataLoader, TensorDataset

from torch_lrrange import GridResult, RangeTestResult, UnusableCurveError, analyze, range_test, range_test_grid
from torch_lrrange.grid import LOSS_TOLERANCE, STABILITY_MARGIN, choose, lowest_loss


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 3))


def _tensors(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def _loader(seed: int = 3) -> DataLoader:
    """Shuffled with its own generator: a sweep advances it."""
    return DataLoader(
        TensorDataset(*_tensors()), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def _loss(model, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


OPTIONS = {"start_lr": 1e-4, "end_lr": 3.0, "num_steps": 32, "progress": False}


def _curve(end: float, depth: float = 1.0, n: int = 100) -> RangeTestResult:
    """A clean synthetic curve: flat, falls by ``depth``, blows up from log10(lr) = ``end``."""
    lrs = np.logspace(-5, 0, n)
    x = np.log10(lrs)
    return analyze(lrs, 2 - depth * (1 + np.tanh(4 * (x + 3))) / 2 + np.exp(10 * (x - end)))


# --- the grid runs every sweep from one snapshot --------------------------------------


def test_results_are_keyed_by_value_tuples_in_grid_order_and_match_lone_range_tests():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = _loader()
    torch.manual_seed(5)
    grid = range_test_grid(model, opt, loader, _loss, grid={"weight_decay": [0, 1e-2, 1e-1]}, **OPTIONS)
    assert list(grid.results) == [(0.0,), (0.01,), (0.1,)] and grid.keys == ("weight_decay",)
    for (wd,), result in grid.results.items():
        # the same sweep alone, from a twin: same weights, same global RNG (dropout), same batch order
        twin = _model()
        twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(5)
        alone = range_test(twin, twin_opt, _loader(), _loss, hyperparams={"weight_decay": wd}, **OPTIONS)
        np.testing.assert_array_equal(result.losses, alone.losses)
        assert result.metadata["hyperparams"] == {"weight_decay": wd}
        assert result.confirmation is None and alone.confirmation is not None  # the grid does not confirm unasked
    assert not np.array_equal(grid.results[(0.0,)].losses, grid.results[(0.1,)].losses)


def test_everything_is_bit_exactly_as_before_the_grid():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    for batch in list(_loader())[:2]:  # optimizer and scheduler state to restore
        opt.zero_grad()
        _loss(model, batch).backward()
        opt.step()
        scheduler.step()
    loader = _loader()
    generator_state = loader.generator.get_state()
    before = Restored(model, opt, scheduler)
    grid = range_test_grid(
        model,
        opt,
        loader,
        _loss,
        grid={"betas": [(0.8, 0.99), (0.95, 0.999)], "weight_decay": [0.0, 1e-2]},
        extra_state=(scheduler,),
        **OPTIONS,
    )
    before.check()
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[0]["weight_decay"] == 1e-4
    assert torch.equal(loader.generator.get_state(), generator_state)
    assert len(grid.results) == 4


def test_a_grid_with_confirmation_runs_confirms_each_value_alone_and_restores_everything():
    """``confirm=True, val_loader=`` (what docs/hyperparameter-grid.md advises for weight decay) per value."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader, val = _loader(), [(x[:64], y[:64]) for x, y in [_tensors(128)]]
    options = {**OPTIONS, "confirm": 4, "val_loader": val}
    torch.manual_seed(5)
    before = Restored(model, opt)
    generator_state = loader.generator.get_state()
    grid = range_test_grid(model, opt, loader, _loss, grid={"weight_decay": [0.0, 0.1]}, **options)
    before.check()
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert torch.equal(loader.generator.get_state(), generator_state)
    for (wd,), result in grid.results.items():
        info = result.metadata["confirmation"]
        assert info["by"] == "validation" and info["steps"] == 4 and len(info["candidates"]) == 6
        twin = _model()
        twin_opt = torch.optim.AdamW(twin.parameters(), lr=1e-3)
        torch.manual_seed(5)
        alone = range_test(twin, twin_opt, _loader(), _loss, hyperparams={"weight_decay": wd}, **options)
        np.testing.assert_array_equal(result.losses, alone.losses)
        assert alone.metadata["confirmation"] == info and alone.lr == result.lr
    values, best = grid.best
    assert best is grid.results[(values["weight_decay"],)]
    lines = grid.table().splitlines()  # the short runs' best loss, as a last column
    assert lines[0].split()[-2:] == ["confirmed", "loss"]
    for line, result in zip(lines[1:], grid.results.values()):
        best_run = min(v for v in result.metadata["confirmation"]["scores"] if v is not None)
        assert float(line.split()[-1]) == pytest.approx(best_run, rel=1e-3)


def test_several_keys_run_every_combination_in_product_order_with_the_values_in_use():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen: list[tuple[float, float]] = []

    def loss_fn(m, batch):
        seen.append((opt.param_groups[0]["weight_decay"], opt.param_groups[0]["momentum"]))
        return _loss(m, batch)

    grid = range_test_grid(
        model, opt, _loader(), loss_fn, grid={"weight_decay": [0, 1e-3], "momentum": [0.5, 0.9, 0.95]}, **OPTIONS
    )
    order = [(0.0, 0.5), (0.0, 0.9), (0.0, 0.95), (0.001, 0.5), (0.001, 0.9), (0.001, 0.95)]
    assert list(grid.results) == order
    assert grid.keys == ("weight_decay", "momentum")
    steps = [len(r.lrs) for r in grid.results.values()]
    assert seen[: steps[0]] == [order[0]] * steps[0]
    assert sorted(set(seen), key=order.index) == order
    for values, result in grid.results.items():
        assert result.metadata["hyperparams"] == dict(zip(grid.keys, values))


def test_betas_grid_and_fixed_hyperparams():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen = set()

    def loss_fn(m, batch):
        seen.add((opt.param_groups[0]["betas"], opt.param_groups[0]["weight_decay"]))
        return _loss(m, batch)

    betas = [(0.85, 0.999), (0.9, 0.999), (0.95, 0.999)]
    grid = range_test_grid(
        model, opt, _loader(), loss_fn, grid={"betas": betas}, hyperparams={"weight_decay": 1e-3}, **OPTIONS
    )
    assert list(grid.results) == [(b,) for b in betas]
    assert seen == {(b, 1e-3) for b in betas}
    assert grid.fixed == {"weight_decay": 1e-3}
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["weight_decay"] == 0


# --- failures ------------------------------------------------------------------------------


def test_a_sweep_that_raises_is_kept_with_its_reason_never_chosen_and_leaves_nothing_changed():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = {"n": 0}

    def loss_fn(m, batch):
        if opt.param_groups[0]["weight_decay"] == 1e-3:
            calls["n"] += 1
            if calls["n"] == 6:
                raise RuntimeError("out of memory at step 6")
        return _loss(m, batch)

    torch.manual_seed(5)
    before = Restored(model, opt)
    with pytest.warns(UserWarning, match=r"the sweep at weight_decay=0\.001 failed: RuntimeError: out of memory"):
        grid = range_test_grid(model, opt, _loader(), loss_fn, grid={"weight_decay": [0, 1e-3, 1e-2]}, **OPTIONS)
    before.check()
    failed = grid.results[(1e-3,)]
    assert not failed.usable and len(failed.lrs) == 0
    assert failed.metadata["error"] == "RuntimeError: out of memory at step 6"
    assert grid.reason((1e-3,)) == "the sweep failed: RuntimeError: out of memory at step 6"
    assert grid.best[0] != {"weight_decay": 1e-3}
    # the sweeps after the failure are the ones a clean grid gives
    clean_model = _model()
    clean_opt = torch.optim.SGD(clean_model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(5)
    clean = range_test_grid(clean_model, clean_opt, _loader(), _loss, grid={"weight_decay": [0, 1e-2]}, **OPTIONS)
    for values in [(0.0,), (1e-2,)]:
        np.testing.assert_array_equal(grid.results[values].losses, clean.results[values].losses)
    assert "no suggestion: the sweep failed: RuntimeError: out of memory at step 6" in grid.table()


def test_an_error_before_any_step_is_bad_input_and_propagates():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = Restored(model, opt)
    with pytest.raises(ValueError, match="end_lr must be > start_lr"):
        range_test_grid(model, opt, _loader(), _loss, grid={"weight_decay": [0, 1e-3]}, start_lr=1.0, end_lr=0.1)
    with pytest.raises(TypeError, match=r"range_test\(\) got unknown option\(s\) num_step"):
        range_test_grid(model, opt, _loader(), _loss, grid={"weight_decay": [0, 1e-3]}, num_step=10)
    with pytest.raises(ValueError, match="the loader is empty"):
        range_test_grid(model, opt, [], _loss, grid={"weight_decay": [0, 1e-3]}, **OPTIONS)
    before.check()


def test_keyboard_interrupt_restores_everything_and_propagates():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = _loader()
    state = loader.generator.get_state()
    before = Restored(model, opt)

    def loss_fn(m, batch):
        if opt.param_groups[0]["weight_decay"] == 1e-2 and m.training:
            raise KeyboardInterrupt
        return _loss(m, batch)

    with pytest.raises(KeyboardInterrupt):
        range_test_grid(model, opt, loader, loss_fn, grid={"weight_decay": [0, 1e-2, 1e-1]}, **OPTIONS)
    before.check()
    assert torch.equal(loader.generator.get_state(), state)


def test_no_usable_curve_raises_the_single_tests_error():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def flat(m, batch):
        return _loss(m, batch) * 0 + 1.0  # the loss never falls

    grid = range_test_grid(model, opt, _loader(), flat, grid={"weight_decay": [0, 1e-3]}, **OPTIONS)
    with pytest.raises(
        UnusableCurveError,
        match=r"no usable curve to choose from \(weight_decay=0: no clear descent: .*; weight_decay=0\.001: no clear",
    ):
        _ = grid.best
    with pytest.raises(UnusableCurveError):
        grid.apply(opt)
    assert grid.table().endswith("no combination gives a usable curve")
    assert "no usable curve" in repr(grid)


# --- the choice (a pure function of the curves) -------------------------------------------


def test_the_lowest_loss_wins_when_clearly_lower():
    shallow, deep = _curve(-0.5, depth=0.5), _curve(-1.0, depth=1.0)
    assert choose([shallow, deep]) == 1  # lower, although it blows up half a decade earlier
    assert deep.max_lr < shallow.max_lr


def test_among_tied_losses_the_curve_stable_to_the_largest_lr_wins():
    early, late = _curve(-1.5), _curve(-0.5)
    assert abs(lowest_loss(early) - lowest_loss(late)) < 0.01 and early.max_lr < late.max_lr
    assert choose([early, late]) == 1 and choose([late, early]) == 0
    assert choose([early, early]) == 0  # exact ties: the first


def test_tolerance_decides_what_counts_as_tied():
    a, b = _curve(-1.0, depth=1.0), _curve(-0.5, depth=0.96)  # b: 4% of the descent higher, stable further
    assert choose([a, b]) == 1
    assert choose([a, b], tolerance=0.0) == 0
    assert LOSS_TOLERANCE == 0.05
    with pytest.raises(ValueError, match="tolerance must be a finite real number >= 0"):
        choose([a, b], tolerance=-1)


def test_the_current_setting_is_kept_unless_another_is_clearly_more_stable():
    a, b, c = _curve(-1.5), _curve(-1.2), _curve(-0.5)  # tied losses; b 1.6x, c 37x a's max_lr
    assert b.max_lr / a.max_lr < STABILITY_MARGIN < c.max_lr / a.max_lr
    assert choose([a, b]) == 1  # no current setting: the lowest loss
    assert choose([a, b], prefer=0) == 0 and choose([a, b], prefer=1) == 1
    assert choose([a, b, c], prefer=0) == 2 and choose([a, b, c], prefer=1) == 2
    worse = _curve(-0.5, depth=0.5)  # the current setting, clearly higher: ignored
    assert choose([worse, a], prefer=0) == 1
    with pytest.raises(ValueError, match=r"prefer must be None or an index into the 2 curves, got 2"):
        choose([a, b], prefer=2)


def test_the_grid_records_the_optimizers_own_values_and_keeps_them_when_tied(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    grid = range_test_grid(model, opt, _loader(), _loss, grid={"weight_decay": [0, 1e-5, 2e-5]}, **OPTIONS)
    assert grid.current == (1e-5,)
    lows = [lowest_loss(r) for r in grid.results.values()]
    assert max(lows) - min(lows) < 0.01  # such small decays do not show in a short sweep
    assert grid.best[0] == {"weight_decay": 1e-5}
    assert [line.endswith("(current)") for line in grid.table().splitlines()] == [False, False, True, False]
    grid.save(tmp_path / "g.json")
    assert GridResult.load(tmp_path / "g.json").current == (1e-5,)
    adam = torch.optim.Adam(
        [{"params": model[0].parameters(), "weight_decay": 0.1}, {"params": model[3].parameters()}], lr=1e-3
    )
    one_grid = {"betas": [(0.9, 0.999)], "weight_decay": [0]}
    grid = range_test_grid(model, adam, _loader(), _loss, grid=one_grid, **OPTIONS)
    assert grid.current == ((0.9, 0.999), 0.1)  # the no-decay group is not the grid's: the decayed one is
    grid = range_test_grid(model, adam, _loader(), _loss, grid=one_grid, keep_zero_groups=False, **OPTIONS)
    assert grid.current is None  # every group is the grid's, and they disagree on weight_decay


def test_unusable_curves_never_win_and_labels_name_them():
    noise = analyze(np.logspace(-5, 0, 100), np.random.default_rng(0).normal(2.0, 0.5, 100))
    assert not noise.usable
    assert choose([noise, _curve(-0.5, depth=0.1)]) == 1
    with pytest.raises(UnusableCurveError, match=r"no usable curve to choose from \(wd=0: no clear descent"):
        choose([noise], labels=["wd=0"])
    with pytest.raises(ValueError, match="labels must name each of the 1 curves, got 2 labels"):
        choose([noise], labels=["a", "b"])
    with pytest.raises(UnusableCurveError, match="no curve was given"):
        choose([])


def test_lowest_loss_is_a_moving_average_that_never_undershoots_a_blow_up():
    lrs = np.logspace(-5, 0, 100)
    losses = np.r_[np.full(80, 1.0), np.linspace(1.0, 30.0, 20)]  # flat, then a cliff
    result = analyze(lrs, losses)
    assert lowest_loss(result) >= losses[: len(result.losses)].min()
    assert lowest_loss(result) == pytest.approx(1.0)
    assert np.isnan(lowest_loss(analyze(lrs[:0], losses[:0])))


# --- the result as plain data ----------------------------------------------------------------


def _synthetic_grid() -> GridResult:
    return GridResult(
        ("betas", "weight_decay"),
        {
            ((0.9, 0.999), 0.0): _curve(-1.5),
            ((0.9, 0.999), 1e-2): _curve(-0.5),
            ((0.95, 0.999), 0.0): analyze(np.zeros(0), np.zeros(0), error="RuntimeError: boom"),
        },
        {"eps": 1e-6},
        ((0.95, 0.999), 0.0),
    )


def test_json_round_trip_keeps_tuples_results_and_the_choice(tmp_path):
    grid = _synthetic_grid()
    assert grid.save(tmp_path / "g.json")
    loaded = GridResult.load(tmp_path / "g.json")
    assert list(loaded.results) == list(grid.results)
    assert isinstance(next(iter(loaded.results))[0], tuple)
    assert loaded.keys == grid.keys and loaded.fixed == {"eps": 1e-6} and loaded.current == ((0.95, 0.999), 0.0)
    assert loaded.to_dict() == grid.to_dict()
    assert loaded.best[0] == grid.best[0] == {"betas": (0.9, 0.999), "weight_decay": 1e-2}
    assert loaded.table() == grid.table()
    assert loaded.reason(((0.95, 0.999), 0.0)) == "the sweep failed: RuntimeError: boom"
    for values, result in grid.results.items():
        np.testing.assert_array_equal(loaded.results[values].losses, result.losses)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format="x"), "not a saved GridResult"),
        (lambda d: d.update(version=9), "unsupported GridResult version 9"),
        (lambda d: d.update(keys=[]), "'keys' must be a non-empty list of distinct strings"),
        (lambda d: d.update(keys=["a", "a"]), "'keys' must be a non-empty list of distinct strings"),
        (lambda d: d.update(entries=[]), "'entries' must be a non-empty list"),
        (lambda d: d["entries"][0].update(values=[0.0]), r"entries\[0\] must hold 'values', a list of 2 values"),
        (lambda d: d["entries"][1].update(values=d["entries"][0]["values"]), r"entries\[1\] repeats the values"),
        (lambda d: d["entries"][0]["result"].update(format="y"), "not a saved RangeTestResult"),
        (lambda d: d.update(current=[0.0]), "'current' must be null or a list of 2 values"),
    ],
)
def test_from_dict_refuses_bad_data(edit, match):
    data = json.loads(json.dumps(_synthetic_grid().to_dict()))
    edit(data)
    with pytest.raises(ValueError, match=match):
        GridResult.from_dict(data)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["entries"][0].update(values=[{"a": 1}, 0.0]), r"entries\[0\] 'values'\[0\] must be"),
        (lambda d: d["entries"][0].update(values=[[0.9, 0.999], "0"]), r"entries\[0\] 'values'\[1\] must be"),
        (lambda d: d["entries"][0].update(values=[[0.9, {}], 0.0]), r"entries\[0\] 'values'\[0\] must be"),
        (lambda d: d.update(current=[{"a": 1}, 0.0]), r"'current'\[0\] must be"),
        (lambda d: d.update(fixed={"eps": "1e-6"}), r"'fixed'\['eps'\] must be"),
        (lambda d: d.update(fixed={"eps": {"x": 1}}), r"'fixed'\['eps'\] must be"),
        (lambda d: d.update(fixed={"lr": 0.1}), r"'fixed' cannot hold 'lr'"),
        (lambda d: d.update(fixed={"weight_decay": 0.1}), r"'fixed' holds 'weight_decay', one of the grid's keys"),
        (lambda d: d.update(fixed=[]), r"'fixed' must be an object"),
        (lambda d: d.update(keys=["betas", "lr"]), r"'keys' cannot hold 'lr'"),
    ],
)
def test_load_refuses_bad_values_naming_the_file_and_field(tmp_path, edit, match):
    data = json.loads(json.dumps(_synthetic_grid().to_dict()))
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        GridResult.load(path)
    assert str(path) in str(info.value)


def test_load_refuses_non_finite_constants(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "torch_lrrange.GridResult", "version": 1, "keys": ["a"], "entries": [NaN]}')
    with pytest.raises(ValueError, match="is not valid JSON: NaN is not allowed"):
        GridResult.load(path)


def test_table_has_one_line_per_combination_the_choice_marked():
    lines = _synthetic_grid().table().splitlines()
    assert lines[0].split() == ["betas", "weight_decay", "lr", "min_lr", "max_lr", "lowest", "loss", "confidence"]
    assert len(lines) == 4
    assert lines[2].startswith("* ") and lines[2].split()[1:4] == ["(0.9,", "0.999)", "0.01"]
    assert lines[1].startswith("  ") and lines[1].split()[:3] == ["(0.9,", "0.999)", "0"]
    assert not lines[3].startswith("*")
    assert lines[3].endswith("no suggestion: the sweep failed: RuntimeError: boom  (current)")
    assert "confirmed" not in lines[0]  # no confirmation runs: no column for them


# --- apply ------------------------------------------------------------------------------------


def test_apply_sets_the_chosen_values_and_lr_keeping_group_ratios():
    grid = GridResult(("momentum",), {(0.5,): _curve(-1.5), (0.95,): _curve(-0.5)}, {"weight_decay": 1e-4})
    model = _model()
    lr = torch.tensor(0.1)
    opt = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[3].parameters(), "lr": torch.tensor(0.01)}],
        lr=lr,
        momentum=0.9,
    )
    first = opt.param_groups[0]["lr"]
    applied = grid.apply(opt)
    best = grid.results[(0.95,)].lr
    assert applied == {"weight_decay": 1e-4, "momentum": 0.95, "lr": best}
    assert opt.param_groups[0]["lr"] is first  # a tensor LR is filled in place
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(best)
    assert float(opt.param_groups[1]["lr"]) == pytest.approx(best / 10, rel=1e-6)
    assert [(g["momentum"], g["weight_decay"]) for g in opt.param_groups] == [(0.95, 1e-4)] * 2


def test_apply_refuses_before_changing_anything():
    grid = GridResult(("momentum",), {(0.5,): _curve(-1.5)})
    model = _model()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = Restored(model, adam)
    with pytest.raises(ValueError, match=r"key 'momentum' is not held .* use \{'betas'"):
        grid.apply(adam)
    before.check()
    sgd = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.0}, {"params": model[3].parameters()}], lr=0.1)
    before = Restored(model, sgd)
    with pytest.raises(ValueError, match="group 0's LR must be > 0"):
        grid.apply(sgd)
    before.check()


# --- grid checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        (None, TypeError, r"grid must be a non-empty dict of param-group keys to lists of values"),
        ({}, TypeError, r"grid must be a non-empty dict"),
        ({"weight_decay": 1e-3}, TypeError, r"grid\['weight_decay'\] must be a list of values, got float"),
        ({"weight_decay": "0,1e-3"}, TypeError, r"grid\['weight_decay'\] must be a list of values, got str"),
        ({"weight_decay": []}, ValueError, r"grid\['weight_decay'\] is empty"),
        (
            {"weight_decay": [0, -1]},
            ValueError,
            r"grid\['weight_decay'\]\[1\]: hyperparams\['weight_decay'\] must be a finite real number in \[0, inf\)",
        ),
        ({"weight_decay": [0, 0.0]}, ValueError, r"grid\['weight_decay'\] holds 0 twice \(items 0 and 1\)"),
        (
            {"momentum": [0.9]},
            ValueError,
            r"grid\['momentum'\]\[0\]: hyperparams key 'momentum' is not held .* use \{'betas'",
        ),
        (
            {"betas": (0.9, 0.999)},
            TypeError,
            r"grid\['betas'\] must be a list of values, each a tuple like the optimizer's \(0\.9, 0\.999\)",
        ),
        ({"lr": [0.1]}, ValueError, r"grid\['lr'\]\[0\]: hyperparams cannot set 'lr'"),
        ({"eps": [1e-8]}, ValueError, r"'eps' is both in grid and in hyperparams"),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(grid, error, match):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = Restored(model, opt)
    calls = []
    with pytest.raises(error, match=match):
        range_test_grid(model, opt, _loader(), lambda m, b: calls.append(1), grid=grid, hyperparams={"eps": 1e-6})
    assert calls == []
    before.check()


# --- plot ------------------------------------------------------------------------------------


def test_plot_overlays_the_curves_and_marks_the_choice(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = _synthetic_grid()
    ax = grid.plot(path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1].startswith("betas=(0.9, 0.999), weight_decay=0.01 (chosen: lr ")
    assert labels[2] == "betas=(0.95, 0.999), weight_decay=0 (no suggestion)"
    widths = [line.get_linewidth() for line in ax.get_lines() if len(line.get_xdata()) > 1]
    assert widths == [1.3, 2.6]
    assert "chosen betas=(0.9, 0.999), weight_decay=0.01" in ax.get_title()
    plt.close("all")


def test_repr_names_the_choice():
    assert repr(_synthetic_grid()).startswith("GridResult(best betas=(0.9, 0.999), weight_decay=0.01, lr=")


# --- example --------------------------------------------------------------------------------


@pytest.mark.slow
def test_weight_decay_grid_example(tmp_path):
    stdout = run_example("weight_decay_grid.py", tmp_path, "--out", str(tmp_path))
    assert stdout.splitlines()[0].split()[:2] == ["weight_decay", "lr"]
    assert sum(line.startswith("* ") for line in stdout.splitlines()) == 1
    assert "validation accuracy" in stdout
    assert (tmp_path / "weight_decay_grid.png").exists() and (tmp_path / "weight_decay_grid.json").exists()


# --- torch.distributed: every rank the same GridResult ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=90))
    try:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = _tensors()
        x = x + 0.1 * rank  # different data on each rank
        data = list(zip(x.split(16), y.split(16)))
        before = Restored(model, opt)
        calls = {"n": 0}

        def loss_fn(m, batch):
            if opt.param_groups[0]["weight_decay"] == 1e-3:
                calls["n"] += 1
                if calls["n"] == 4:  # the same step on both ranks: before any all_reduce of the sweep
                    raise RuntimeError(f"boom on rank {rank}")
            return _loss(m, batch)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grid = range_test_grid(model, opt, data, loss_fn, grid={"weight_decay": [0, 1e-3, 1e-2]}, **OPTIONS)
        before.check()
        torch.save(
            {"grid": grid.to_dict(), "saved": grid.save(os.path.join(out, f"g{rank}.json"))},
            os.path.join(out, f"rank{rank}.pt"),
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_gets_the_same_grid(tmp_path):
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail("the ranks did not finish within 240 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    reports = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert reports[0]["grid"] == reports[1]["grid"]
    grid = GridResult.from_dict(reports[0]["grid"])
    assert grid.reason((1e-3,)) == "the sweep failed: RuntimeError: boom on rank 0"  # rank 0's words on every rank
    assert grid.results[(0.0,)].usable
    assert [r["saved"] for r in reports] == [True, False]


def test_the_grid_leaves_no_decay_groups_alone_and_apply_does_too(tmp_path):
    model = _model()
    groups = [{"params": model[0].parameters(), "weight_decay": 1e-4}, {"params": model[3].parameters()}]
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # group 1: weight_decay 0, the no-decay group
    seen: list[list[float]] = []

    def loss_fn(m, batch):
        seen.append([g["weight_decay"] for g in opt.param_groups])
        return _loss(m, batch)

    saved = Restored(model, opt)
    grid = range_test_grid(model, opt, _loader(), loss_fn, grid={"weight_decay": [1e-3, 1e-2]}, **OPTIONS)
    saved.check()
    assert {tuple(s) for s in seen} == {(1e-3, 0.0), (1e-2, 0.0)}
    assert grid.current == (1e-4,)  # group 0's: the group the grid sets
    assert all(r.metadata["hyperparams_left"] == {"weight_decay": [1]} for r in grid.results.values())
    chosen = grid.apply(opt)
    assert [g["weight_decay"] for g in opt.param_groups] == [chosen["weight_decay"], 0.0]
    grid.save(tmp_path / "g.json")
    assert GridResult.load(tmp_path / "g.json").keep_zero_groups is True
    # opted out: every group, in the sweeps and in apply()
    seen.clear()
    everyone = range_test_grid(
        model, opt, _loader(), loss_fn, grid={"weight_decay": [1e-3]}, keep_zero_groups=False, **OPTIONS
    )
    assert {tuple(s) for s in seen} == {(1e-3, 1e-3)}
    assert not everyone.keep_zero_groups and "hyperparams_left" not in everyone.results[(1e-3,)].metadata
    fresh = torch.optim.SGD([{"params": model[0].parameters(), "weight_decay": 1e-4}, {"params": model[3].parameters()}],
                            lr=0.1)  # fmt: skip
    everyone.save(tmp_path / "all.json")
    GridResult.load(tmp_path / "all.json").apply(fresh)
    assert [g["weight_decay"] for g in fresh.param_groups] == [1e-3, 1e-3]


def test_the_grid_over_the_hugging_face_trainers_decay_groups():
    """The groups Trainer.create_optimizer() builds: biases and LayerNorm weights at weight_decay 0 stay there."""
    transformers = pytest.importorskip("transformers")
    import tempfile

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    args = transformers.TrainingArguments(
        output_dir=tempfile.mkdtemp(), weight_decay=0.01, report_to="none", use_cpu=True, learning_rate=1e-3
    )
    trainer = transformers.Trainer(model=model, args=args)
    opt = trainer.create_optimizer()
    decayed = set(trainer.get_decay_parameter_names(model))
    names = {id(p): n for n, p in model.named_parameters()}
    kinds = [{names[id(p)] in decayed for p in g["params"]} for g in opt.param_groups]
    assert kinds == [{True}, {False}] and [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    seen: list[list[float]] = []

    def loss_fn(m, batch):
        seen.append([g["weight_decay"] for g in opt.param_groups])
        return _loss(m, batch)

    saved = Restored(model, opt)
    grid = range_test_grid(model, opt, _loader(), loss_fn, grid={"weight_decay": [0.0, 0.1]}, **OPTIONS)
    saved.check()
    assert {tuple(s) for s in seen} == {(0.0, 0.0), (0.1, 0.0)} and grid.current == (0.01,)
    grid.apply(opt)
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_the_grid_passes_clip_to_every_sweep():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    options = {**OPTIONS, "num_steps": 16}
    grid = range_test_grid(model, opt, _loader(), _loss, grid={"momentum": [0.5, 0.9]}, clip=0.05, **options)
    for (momentum,), result in grid.results.items():
        alone = range_test(model, opt, _loader(), _loss, clip=0.05, hyperparams={"momentum": momentum}, **options)
        np.testing.assert_array_equal(result.losses, alone.losses)
    unclipped = range_test(model, opt, _loader(), _loss, hyperparams={"momentum": 0.9}, **options)
    assert not np.array_equal(unclipped.losses, grid.results[(0.9,)].losses)
