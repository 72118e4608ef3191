"""RangeTest(hyperparams=...): param-group keys held at a value for the sweep, checked first, restored after."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _state import Restored

from torch_lrrange import RangeTest, RangeTestResult, range_lr, range_test


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def _data(n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32 * n, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return list(zip(x.split(32), y.split(32)))


def _two_groups(model: torch.nn.Module, **kwargs) -> list[dict]:
    first, second = model[0], model[2]
    return [
        {"params": first.parameters(), "momentum": 0.9, "weight_decay": 1e-3, **kwargs},
        {"params": second.parameters(), "lr": 0.02, "momentum": 0.5, "weight_decay": 0.0, **kwargs},
    ]


def _loss(model: torch.nn.Module, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _sweep(rt, model, optimizer, data, *, check=None, fail_at=None, exc=RuntimeError) -> int:
    """The user's loop; ``check(optimizer)`` before every step. Returns the steps taken."""
    steps = 0
    for batch in rt.batches(data):
        if check is not None:
            check(optimizer)
        optimizer.zero_grad()
        loss = _loss(model, batch)
        loss.backward()
        optimizer.step()
        if steps == fail_at:
            raise exc("boom")
        steps += 1
        rt.record(loss)
    return steps


# --- refusals, before anything changes ---------------------------------------------


def _refused(optimizer_factory, hyperparams, error, match):
    model = _model()
    opt = optimizer_factory(model.parameters())
    before = Restored(model, opt)
    with pytest.raises(error, match=match):
        RangeTest(model, opt, hyperparams=hyperparams, confirm=False)
    with pytest.raises(error, match=match):
        range_test(model, opt, _data(), _loss, hyperparams=hyperparams, confirm=False)
    before.check()


def test_a_key_the_optimizer_lacks_is_refused_naming_the_keys_it_holds():
    _refused(
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        {"beta1": 0.9},
        ValueError,
        r"hyperparams key 'beta1' is not held by every param group of SGD; the keys it holds are dampening, "
        r"differentiable, foreach, .*momentum, nesterov, weight_decay",
    )


def test_momentum_on_adam_says_to_use_betas():
    _refused(
        lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.9, 0.98)),
        {"momentum": 0.95},
        ValueError,
        r"key 'momentum' is not held .* of Adam; the keys it holds are amsgrad, betas, .*"
        r"this optimizer holds momentum as betas\[0\]: use \{'betas': \(0\.9, 0\.98\)\} with the first value changed",
    )


def test_betas_on_sgd_says_to_use_momentum():
    _refused(
        lambda p: torch.optim.SGD(p, lr=0.1),
        {"betas": (0.9, 0.999)},
        ValueError,
        r"key 'betas' is not held .* of SGD; .*this optimizer holds momentum as 'momentum'",
    )


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("lr", r"hyperparams cannot set 'lr': the sweep sets it: use start_lr and end_lr"),
        ("initial_lr", r"hyperparams cannot set 'initial_lr': the sweep sets it"),
        ("params", r"hyperparams cannot set 'params': it is not a hyperparameter"),
    ],
)
def test_keys_the_sweep_owns_are_refused(key, match):
    _refused(lambda p: torch.optim.SGD(p, lr=0.1), {key: 0.1}, ValueError, match)


def test_a_key_held_by_one_group_only_is_refused():
    model = _model()
    groups = _two_groups(model)
    groups[0]["my_scale"] = 2.0
    opt = torch.optim.SGD(groups, lr=0.1)
    before = Restored(model, opt)
    with pytest.raises(ValueError, match=r"key 'my_scale' is not held by every param group of SGD"):
        RangeTest(model, opt, hyperparams={"my_scale": 1.0}, confirm=False)
    before.check()


@pytest.mark.parametrize(
    ("hyperparams", "error", "match"),
    [
        (
            {"weight_decay": -1e-4},
            ValueError,
            r"hyperparams\['weight_decay'\] must be a finite real number in \[0, inf\), got -0\.0001",
        ),
        (
            {"weight_decay": float("nan")},
            ValueError,
            r"hyperparams\['weight_decay'\] must be a finite real number in \[0, inf\), got nan",
        ),
        ({"weight_decay": "1e-4"}, TypeError, r"hyperparams\['weight_decay'\] must be a real number, got str '1e-4'"),
        ({"weight_decay": True}, TypeError, r"hyperparams\['weight_decay'\] must be a real number, got bool True"),
        (
            {"weight_decay": torch.ones(2)},
            TypeError,
            r"hyperparams\['weight_decay'\] must be a real number, got Tensor",
        ),
        (
            {"momentum": 1.5},
            ValueError,
            r"hyperparams\['momentum'\] must be a finite real number in \[0, 1\], got 1\.5",
        ),
        ({"dampening": -0.1}, ValueError, r"hyperparams\['dampening'\] must be a finite real number in \[0, 1\]"),
        (
            {"nesterov": 1},
            TypeError,
            r"hyperparams\['nesterov'\] must be True or False like the optimizer's False, got 1",
        ),
        (
            {"foreach": 0.5},
            TypeError,
            r"hyperparams\['foreach'\]: the optimizer holds None there, which is not a numeric hyperparameter",
        ),
    ],
)
def test_bad_sgd_values_are_refused(hyperparams, error, match):
    _refused(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), hyperparams, error, match)


@pytest.mark.parametrize(
    ("hyperparams", "error", "match"),
    [
        (
            {"betas": 0.9},
            TypeError,
            r"hyperparams\['betas'\] must be a tuple of 2 real numbers like the optimizer's \(0\.9, 0\.999\), got float 0\.9",
        ),
        (
            {"betas": (0.9,)},
            TypeError,
            r"hyperparams\['betas'\] must be a tuple of 2 real numbers .*got tuple \(0\.9,\)",
        ),
        (
            {"betas": (0.9, 1.0)},
            ValueError,
            r"hyperparams\['betas'\]\[1\] must be a finite real number in \[0, 1\), got 1\.0",
        ),
        ({"betas": (-0.1, 0.999)}, ValueError, r"hyperparams\['betas'\]\[0\] must be a finite real number in \[0, 1\)"),
        ({"betas": ("0.9", 0.999)}, TypeError, r"hyperparams\['betas'\]\[0\] must be a real number, got str"),
        ({"eps": 0.0}, ValueError, r"hyperparams\['eps'\] must be a finite real number in \(0, inf\), got 0\.0"),
        ({"amsgrad": 0.0}, TypeError, r"hyperparams\['amsgrad'\] must be True or False like the optimizer's False"),
    ],
)
def test_bad_adam_values_are_refused(hyperparams, error, match):
    _refused(lambda p: torch.optim.Adam(p, lr=1e-3), hyperparams, error, match)


@pytest.mark.parametrize(
    ("hyperparams", "error", "match"),
    [
        (
            0.1,
            TypeError,
            r"hyperparams must be a dict of param-group keys to values, e.g. \{'weight_decay': 1e-4\}, got float 0\.1",
        ),
        ([("weight_decay", 0.1)], TypeError, r"hyperparams must be a dict .*got list"),
        ({1: 0.1}, TypeError, r"hyperparams keys must be strings \(param-group keys\), got int 1"),
    ],
)
def test_hyperparams_must_be_a_dict_of_keys(hyperparams, error, match):
    _refused(lambda p: torch.optim.SGD(p, lr=0.1), hyperparams, error, match)


def test_refusal_comes_before_other_checks_touch_anything():
    """A bad value next to good ones: nothing is set, not even the good ones."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = Restored(model, opt)
    with pytest.raises(ValueError, match=r"hyperparams\['momentum'\] must be a finite real number in \[0, 1\]"):
        RangeTest(model, opt, hyperparams={"weight_decay": 1e-2, "momentum": 2.0}, confirm=False)
    before.check()
    assert opt.param_groups[0]["weight_decay"] == 0


# --- the values are used during the sweep ------------------------------------------


def test_every_group_holds_the_values_at_every_step_and_gets_its_own_back():
    model = _model()
    opt = torch.optim.SGD(_two_groups(model), lr=0.1)
    before = Restored(model, opt)
    seen = []

    def check(o):
        seen.append([(g["weight_decay"], g["momentum"]) for g in o.param_groups])

    hyperparams = {"weight_decay": 1e-2, "momentum": 0.8}
    with RangeTest(model, opt, num_steps=20, hyperparams=hyperparams, keep_zero_groups=False, confirm=False) as rt:
        steps = _sweep(rt, model, opt, _data(), check=check)
    assert steps == 20
    assert seen == [[(1e-2, 0.8), (1e-2, 0.8)]] * 20
    before.check()
    assert [(g["weight_decay"], g["momentum"]) for g in opt.param_groups] == [(1e-3, 0.9), (0.0, 0.5)]
    assert rt.result.metadata["hyperparams"] == {"weight_decay": 1e-2, "momentum": 0.8}


def test_groups_holding_zero_keep_it_and_the_others_get_the_value():
    """The no-decay group (weight_decay 0) is left alone; so is a group without momentum."""
    model = _model()
    groups = _two_groups(model)
    groups[1]["momentum"] = 0.0
    opt = torch.optim.SGD(groups, lr=0.1)
    before = Restored(model, opt)
    seen = []

    def check(o):
        seen.append([(g["weight_decay"], g["momentum"]) for g in o.param_groups])

    with RangeTest(model, opt, num_steps=16, hyperparams={"weight_decay": 1e-2, "momentum": 0.8}, confirm=False) as rt:
        _sweep(rt, model, opt, _data(), check=check)
    assert seen == [[(1e-2, 0.8), (0.0, 0.0)]] * 16
    before.check()
    assert rt.result.metadata["hyperparams_left"] == {"weight_decay": [1], "momentum": [1]}
    # the same sweep as an optimizer built with those values in the first group only
    twin_model = _model()
    twin_groups = _two_groups(twin_model, momentum=0.8, weight_decay=1e-2)
    twin_groups[1].update(momentum=0.0, weight_decay=0.0)
    twin = torch.optim.SGD(twin_groups, lr=0.1)
    with RangeTest(twin_model, twin, num_steps=16, confirm=False) as twin_rt:
        _sweep(twin_rt, twin_model, twin, _data())
    np.testing.assert_array_equal(rt.result.losses, twin_rt.result.losses)


def test_every_group_gets_the_value_when_every_group_holds_zero():
    model = _model()
    opt = torch.optim.SGD(_two_groups(model, weight_decay=0.0), lr=0.1)
    seen = []
    with RangeTest(model, opt, num_steps=8, hyperparams={"weight_decay": 1e-2}, confirm=False) as rt:
        _sweep(rt, model, opt, _data(), check=lambda o: seen.append([g["weight_decay"] for g in o.param_groups]))
    assert seen == [[1e-2, 1e-2]] * 8
    assert "hyperparams_left" not in rt.result.metadata


def test_a_zero_tensor_counts_as_zero_and_betas_only_when_all_zero():
    model = _model()
    decay = torch.tensor(0.0)
    opt = torch.optim.Adam(
        [
            {"params": model[0].parameters(), "weight_decay": 1e-3, "betas": (0.9, 0.999)},
            {"params": model[2].parameters(), "weight_decay": decay, "betas": (0.0, 0.999)},
        ],
        lr=1e-3,
    )
    seen = []

    def check(o):
        seen.append([(float(g["weight_decay"]), g["betas"]) for g in o.param_groups])

    with RangeTest(
        model, opt, num_steps=8, hyperparams={"weight_decay": 0.5, "betas": (0.8, 0.99)}, confirm=False
    ) as rt:
        _sweep(rt, model, opt, _data(), check=check)
    assert seen == [[(0.5, (0.8, 0.99)), (0.0, (0.8, 0.99))]] * 8
    assert opt.param_groups[1]["weight_decay"] is decay


@pytest.mark.parametrize("value", [None, 0, "yes"])
def test_keep_zero_groups_must_be_a_bool(value):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=f"keep_zero_groups must be True or False, got .*{value!r}"):
        RangeTest(model, opt, hyperparams={"weight_decay": 1e-3}, keep_zero_groups=value, confirm=False)


def _losses(optimizer_factory, hyperparams):
    model = _model()
    opt = optimizer_factory(model.parameters())
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1.0, num_steps=24, hyperparams=hyperparams, confirm=False) as rt:
        _sweep(rt, model, opt, _data())
    return rt.result.losses


@pytest.mark.parametrize(
    ("factory", "twin", "hyperparams"),
    [
        (
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, weight_decay=0.05),
            {"weight_decay": 0.05, "momentum": 0.5},
        ),
        (
            lambda p: torch.optim.Adam(p, lr=1e-3),
            lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.7, 0.95), weight_decay=1e-2),
            {"betas": (0.7, 0.95), "weight_decay": 1e-2},
        ),
        (
            lambda p: torch.optim.AdamW(p, lr=1e-3),
            lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.5, amsgrad=True),
            {"weight_decay": 0.5, "amsgrad": True},
        ),
    ],
)
def test_a_sweep_with_hyperparams_is_the_sweep_of_an_optimizer_built_with_them(factory, twin, hyperparams):
    held = _losses(factory, hyperparams)
    built = _losses(twin, None)
    assert len(held) == 24
    np.testing.assert_array_equal(held, built)
    assert not np.array_equal(held, _losses(factory, None))  # the values matter for this curve


def test_betas_take_a_tuple_or_a_list_and_are_held_as_the_optimizers_type():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = Restored(model, opt)
    seen = []
    with RangeTest(model, opt, num_steps=16, hyperparams={"betas": [0.85, 0.99]}, confirm=False) as rt:
        _sweep(rt, model, opt, _data(), check=lambda o: seen.append(o.param_groups[0]["betas"]))
    assert seen == [(0.85, 0.99)] * 16
    assert all(type(b) is tuple for b in seen)
    before.check()
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_a_tensor_hyperparameter_is_filled_in_place_and_keeps_its_identity():
    model = _model()
    decay = torch.tensor(0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=decay)
    before = Restored(model, opt)  # checks the identity of tensor hyperparameters too
    seen = []

    def check(o):
        assert o.param_groups[0]["weight_decay"] is decay
        seen.append(float(decay))

    with RangeTest(model, opt, num_steps=16, hyperparams={"weight_decay": torch.tensor(1e-3)}, confirm=False) as rt:
        _sweep(rt, model, opt, _data(), check=check)
    assert seen == [pytest.approx(1e-3)] * 16
    before.check()
    assert opt.param_groups[0]["weight_decay"] is decay and float(decay) == 0.0
    assert rt.result.metadata["hyperparams"] == {"weight_decay": pytest.approx(1e-3)}


def test_tensor_betas_keep_their_identity():
    model = _model()
    betas = (torch.tensor(0.9), torch.tensor(0.999))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=betas)
    seen = []
    with RangeTest(model, opt, num_steps=16, hyperparams={"betas": (0.8, 0.99)}, confirm=False) as rt:
        _sweep(rt, model, opt, _data(), check=lambda o: seen.append(o.param_groups[0]["betas"]))
    assert all(b[0] is betas[0] and b[1] is betas[1] for b in seen)
    assert [round(float(b), 6) for b in opt.param_groups[0]["betas"]] == [0.9, 0.999]
    assert [round(float(b), 6) for b in betas] == [0.9, 0.999]
    assert opt.param_groups[0]["betas"][0] is betas[0] and opt.param_groups[0]["betas"][1] is betas[1]


def test_an_integer_hyperparameter_stays_an_integer():
    model = _model()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, history_size=10)
    seen = []
    with RangeTest(model, opt, num_steps=8, hyperparams={"history_size": 3}, confirm=False) as rt:
        for batch in rt.batches(_data()):
            seen.append(opt.param_groups[0]["history_size"])
            loss = opt.step(lambda b=batch: (opt.zero_grad(), _loss(model, b).backward())[0] or _loss(model, b))
            rt.record(loss)
    assert seen == [3] * 8 and all(type(v) is int for v in seen)


# --- restored on every exit path ----------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_restored_bit_exactly_after_an_exception(exc):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(2):  # optimizer state to restore
        opt.zero_grad()
        _loss(model, _data()[0]).backward()
        opt.step()
    before = Restored(model, opt)
    with pytest.raises(exc, match="boom"):
        with RangeTest(
            model, opt, num_steps=20, hyperparams={"betas": (0.5, 0.9), "weight_decay": 0.1}, confirm=False
        ) as rt:
            _sweep(rt, model, opt, _data(), fail_at=5, exc=exc)
    before.check()
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["weight_decay"] == 1e-4


def test_every_repeat_starts_with_the_values_and_the_end_restores_the_originals():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = Restored(model, opt)
    seen = []

    def check(o):
        seen.append(o.param_groups[0]["momentum"])
        o.param_groups[0]["momentum"] = 0.0  # a loop that changes it: the next repeat must set it again

    with RangeTest(model, opt, num_steps=12, repeats=3, hyperparams={"momentum": 0.6}, confirm=False) as rt:
        steps = _sweep(rt, model, opt, _data(), check=check)
    assert steps == 36
    assert seen[0] == seen[12] == seen[24] == 0.6
    assert len(rt.result.runs) == 3
    before.check()
    assert opt.param_groups[0]["momentum"] == 0.9


# --- every other keyword still works next to hyperparams= -----------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "linear", "start_lr": 1e-3, "end_lr": 0.5},
        {"start_lr": [1e-4, 2e-4], "end_lr": [1.0, 2.0]},
        {"snapshot": "cpu"},
        {"snapshot": "disk"},
        {"diverge_threshold": 2.5},
        {"method": "steepest"},
        {"repeats": 2},
        {"check_every": 16},
        {"progress": False},
        {"process_group": None},
        {"extra_state": "scheduler"},
    ],
    ids=lambda o: ",".join(o),
)
def test_every_range_test_keyword_works_with_hyperparams(options):
    model = _model()
    opt = torch.optim.SGD(_two_groups(model), lr=0.1)
    extra = ()
    if options.get("extra_state") == "scheduler":
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
        scheduler.step()
        extra = (scheduler,)
        options = {**options, "extra_state": extra}
    before = Restored(model, opt, *extra)
    seen = []

    def check(o):
        seen.append([g["weight_decay"] for g in o.param_groups])

    with RangeTest(model, opt, num_steps=24, hyperparams={"weight_decay": 3e-3}, **options, confirm=False) as rt:
        steps = _sweep(rt, model, opt, _data(), check=check)
    result = rt.result
    repeats = options.get("repeats", 1)
    assert steps == 24 * repeats and seen == [[3e-3, 0.0]] * steps  # the no-decay group keeps its 0
    before.check()
    assert isinstance(result, RangeTestResult) and result.metadata["hyperparams"] == {"weight_decay": 3e-3}
    start, end = options.get("start_lr", 1e-7), options.get("end_lr", 10.0)
    first = start[0] if isinstance(start, list) else start
    last = end[0] if isinstance(end, list) else end
    expected = range_lr(np.arange(len(result.lrs)), first, last, 24, options.get("mode", "exp"))
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-12)
    assert result.method == options.get("method", "default")
    assert len(result.runs) == (repeats if repeats > 1 else 0)


def test_range_test_passes_hyperparams_through_with_its_own_keywords():
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = Restored(model, opt)
    seen = []

    def loss_fn(m, batch):
        seen.append(opt.param_groups[0]["betas"])
        return _loss(m, batch)

    val = _data(2)
    result = range_test(
        model,
        opt,
        _data(),
        loss_fn,
        accumulation_steps=2,
        val_loader=val,
        val_every=2,
        device="cpu",
        num_steps=10,
        hyperparams={"betas": (0.6, 0.9)},
        confirm=False,
    )
    before.check()
    # 10 points x 2 optimizer steps x 2 micro-batches, plus a validation pass (2 batches) per point
    assert len(seen) == 10 * 2 * 2 + 10 * 2
    assert set(seen) == {(0.6, 0.9)}
    assert result.metadata["hyperparams"] == {"betas": (0.6, 0.9)}


def test_hyperparams_survive_the_json_round_trip(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = range_test(
        model, opt, _data(), _loss, num_steps=16, hyperparams={"betas": (0.8, 0.99), "eps": 1e-6}, confirm=False
    )
    result.save(tmp_path / "r.json")
    loaded = RangeTestResult.load(tmp_path / "r.json")
    assert loaded.metadata["hyperparams"] == {"betas": [0.8, 0.99], "eps": 1e-6}
