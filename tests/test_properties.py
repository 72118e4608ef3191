"""Property tests (hypothesis) for the schedule and the curve analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from torch_lrrange import LRRangeScheduler, RangeTestResult, UnusableCurveError, analyze, range_lr

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

modes = st.sampled_from(["exp", "linear"])
num_steps = st.integers(min_value=2, max_value=300)


@st.composite
def lr_ranges(draw):
    start = draw(st.floats(min_value=1e-10, max_value=10.0))
    # ranges wide enough for distinct LRs at every step (narrower ones are refused: test_schedule.py)
    end = draw(st.floats(min_value=start, max_value=1e4).filter(lambda e: e > start * (1 + 1e-6)))
    return start, end


# --- schedules ---------------------------------------------------------------------


@FAST
@given(lr_ranges(), num_steps, modes)
def test_range_lr_is_monotone_with_exact_endpoints(span, n, mode):
    start, end = span
    lrs = range_lr(np.arange(n + 5), start, end, n, mode)
    assert lrs.dtype == np.float64 and lrs.shape == (n + 5,)
    assert lrs[0] == start
    assert np.all(lrs[n - 1 :] == end)  # steps past the end hold end_lr
    assert np.all(np.diff(lrs) >= 0)
    assert np.all((lrs >= start) & (lrs <= end))
    assert range_lr(0, start, end, n, mode) == start and range_lr(n - 1, start, end, n, mode) == end
    if mode == "exp" and n > 2:  # equal ratios between neighbours (up to rounding)
        ratios = lrs[1:n] / lrs[: n - 1]
        assert np.allclose(ratios, (end / start) ** (1 / (n - 1)), rtol=1e-9)


@FAST
@given(lr_ranges(), st.integers(min_value=2, max_value=60), modes, st.floats(min_value=0.01, max_value=100))
def test_stepping_the_scheduler_equals_the_closed_form(span, n, mode, group_ratio):
    start, end = span
    weights = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [weights[0]], "lr": 1.0}, {"params": [weights[1]], "lr": group_ratio}])
    sched = LRRangeScheduler(opt, start, end, n, mode)
    expected = range_lr(np.arange(n + 3), start, end, n, mode)
    seen0, seen1 = [], []
    for _ in range(n + 3):
        seen0.append(opt.param_groups[0]["lr"])
        seen1.append(opt.param_groups[1]["lr"])
        opt.step()
        sched.step()
    assert seen0 == expected.tolist()  # exactly, every step
    assert sched.lrs == expected[:n].tolist()
    assert np.allclose(seen1, expected * group_ratio, rtol=1e-12)  # the other group keeps its ratio
    assert seen1[0] == start * group_ratio


@FAST
@given(lr_ranges(), st.integers(min_value=2, max_value=60), modes)
def test_tensor_lr_follows_the_closed_form_in_place(span, n, mode):
    start, end = span
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([w], lr=torch.tensor(0.5, dtype=torch.float64))
    lr_tensor = opt.param_groups[0]["lr"]
    sched = LRRangeScheduler(opt, start, end, n, mode)
    for i in range(n):
        assert opt.param_groups[0]["lr"] is lr_tensor
        assert lr_tensor.item() == range_lr(i, start, end, n, mode)
        sched.step()


@FAST
@given(lr_ranges(), lr_ranges(), st.integers(2, 40), st.integers(2, 40), modes, modes, st.integers(0, 50))
def test_state_dict_round_trip_into_a_differently_configured_scheduler(span_a, span_b, n_a, n_b, mode_a, mode_b, k):
    def make(span, n, mode):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, LRRangeScheduler(opt, *span, n, mode)

    opt_a, a = make(span_a, n_a, mode_a)
    opt_b, b = make(span_b, n_b, mode_b)
    for _ in range(k):
        a.step()
    b.load_state_dict(a.state_dict())
    assert b.lrs == a.lrs
    assert b.get_last_lr() == a.get_last_lr()
    assert b.state_dict() == a.state_dict()
    for _ in range(max(n_a, n_b) + 2):
        a.step()
        b.step()
        assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]


# --- analyze() ----------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
anything = st.floats(allow_nan=True, allow_infinity=True)
normal = st.one_of(
    st.just(0.0), st.floats(min_value=1e-60, max_value=1e60), st.floats(min_value=-1e60, max_value=-1e-60)
)


@st.composite
def smith_curves(draw, n_min=8, n_max=120):
    """Flat, then a descent, then a blow-up, with noise: the shape of a real range test."""
    n = draw(st.integers(n_min, n_max))
    lo = draw(st.floats(-8, -2))
    hi = lo + draw(st.floats(1, 8))
    lrs = np.logspace(lo, hi, n)
    t = np.linspace(0, 1, n)
    centre = draw(st.floats(0.2, 0.7))
    depth = draw(st.floats(0.1, 5))
    base = draw(st.floats(0.1, 10))
    noise = draw(st.floats(0, 0.2)) * depth
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    losses = base + depth * (1 - np.tanh(12 * (t - centre))) / 2 + np.exp(draw(st.floats(3, 15)) * (t - 1))
    return lrs, losses + noise * rng.standard_normal(n)


@st.composite
def adversarial_curves(draw):
    n = draw(st.integers(0, 60))
    lo = draw(st.floats(-10, 1))
    lrs = np.logspace(lo, lo + draw(st.floats(0.01, 10)), n) if n > 1 else np.array([10.0**lo] * n)
    kind = draw(
        st.sampled_from(
            ["random", "anything", "constant", "up", "down", "nan-laden", "huge", "tiny", "negative", "steps"]
        )
    )
    if kind == "random":
        losses = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    elif kind == "anything":
        losses = np.array(draw(st.lists(anything, min_size=n, max_size=n)))
    elif kind == "constant":
        losses = np.full(n, draw(finite))
    elif kind == "up":
        losses = np.sort(np.array(draw(st.lists(finite, min_size=n, max_size=n))))
    elif kind == "down":
        losses = -np.sort(np.array(draw(st.lists(finite, min_size=n, max_size=n))))
    elif kind == "nan-laden":
        losses = np.array(draw(st.lists(st.one_of(finite, st.just(math.nan)), min_size=n, max_size=n)))
    elif kind == "huge":
        losses = np.array(draw(st.lists(st.floats(1e300, 1.7e308), min_size=n, max_size=n)))
    elif kind == "tiny":
        losses = np.array(draw(st.lists(st.floats(0, 1e-300), min_size=n, max_size=n)))
    elif kind == "negative":
        losses = -np.abs(np.array(draw(st.lists(finite, min_size=n, max_size=n)))) - 1
    else:
        losses = np.repeat(np.array(draw(st.lists(finite, min_size=1, max_size=4))), n)[:n]
        losses = np.resize(losses, n) if n else losses
    return lrs, losses


def _check_result(result: RangeTestResult, lrs: np.ndarray) -> None:
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) <= len(lrs)
    assert np.array_equal(result.lrs, lrs[: len(result.lrs)])
    assert 0.0 <= result.confidence <= 1.0
    if result.usable:
        lo, hi = result.bounds
        assert result.lrs[0] <= lo <= result.lr <= hi <= result.lrs[-1]
        assert all(math.isfinite(v) for v in (lo, result.lr, hi))
    else:
        assert result.warnings
        for name in ("lr", "min_lr", "max_lr", "bounds"):
            with pytest.raises(
                UnusableCurveError, match=f"this curve gives no {name if name != 'bounds' else 'min_lr'}"
            ):
                getattr(result, name)
    RangeTestResult.from_dict(result.to_dict())  # always savable


@settings(max_examples=150, deadline=None)
@given(adversarial_curves(), st.sampled_from(["default", "steepest", "valley", "minimum"]))
def test_analyze_never_raises_on_a_well_formed_curve(curve, method):
    lrs, losses = curve
    with np.errstate(all="ignore"):
        result = analyze(lrs, losses, method=method)
    _check_result(result, lrs)


@FAST
@given(smith_curves(), st.sampled_from(["default", "steepest", "valley", "minimum"]))
def test_analyze_reads_smith_curves_inside_the_sweep(curve, method):
    lrs, losses = curve
    result = analyze(lrs, losses, method=method)
    _check_result(result, lrs)


@st.composite
def malformed(draw):
    n = draw(st.integers(2, 20))
    lrs = np.logspace(-5, 0, n)
    losses = np.linspace(2, 1, n)
    kind = draw(st.sampled_from(["length", "zero", "negative", "nan", "inf", "order", "repeat"]))
    i = draw(st.integers(0, n - 1))
    if kind == "length":
        losses = losses[: draw(st.integers(0, n - 1))]
    elif kind == "zero":
        lrs[i] = 0.0
    elif kind == "negative":
        lrs[i] = -lrs[i]
    elif kind == "nan":
        lrs[i] = math.nan
    elif kind == "inf":
        lrs[i] = math.inf
    elif kind == "order":
        lrs = lrs[::-1].copy()
    else:
        j = min(i + 1, n - 1)
        lrs[j] = lrs[i] if j != i else lrs[i - 1]
    return lrs, losses


@FAST
@given(malformed())
def test_analyze_refuses_malformed_curves_with_a_value_error(curve):
    lrs, losses = curve
    with pytest.raises(ValueError, match="lrs"):
        analyze(lrs, losses)


def _suggestion(result):
    return (result.suggestion.lr, result.suggestion.min_lr, result.suggestion.max_lr, result.diverged, len(result.lrs))


@FAST
@given(st.one_of(smith_curves(), adversarial_curves()), st.integers(-30, 30))
def test_scaling_losses_by_a_positive_constant_leaves_the_suggestion_unchanged(curve, k):
    lrs, losses = curve
    assume(np.all((losses == 0) | ~np.isfinite(losses) | ((np.abs(losses) > 1e-200) & (np.abs(losses) < 1e200))))
    scale = 2.0**k  # exact in floating point, so the suggestion must be identical, not just close
    with np.errstate(all="ignore"):
        a = analyze(lrs, losses)
        b = analyze(lrs, losses * scale)
    assert _suggestion(a) == _suggestion(b)
    assert a.confidence == pytest.approx(b.confidence, abs=1e-12)


@FAST
@given(st.one_of(smith_curves(), adversarial_curves()), st.floats(min_value=-6, max_value=6))
def test_scaling_lrs_scales_the_suggestion(curve, log_c):
    lrs, losses = curve
    c = 10.0**log_c
    assume(len(lrs) < 2 or np.all(np.diff(lrs * c) > 0))
    with np.errstate(all="ignore"):
        a = analyze(lrs, losses)
        b = analyze(lrs * c, losses)
    assert a.usable == b.usable
    assert a.diverged == b.diverged and len(a.lrs) == len(b.lrs)
    if a.usable:
        for x, y in zip(_suggestion(a)[:3], _suggestion(b)[:3]):
            assert y == pytest.approx(x * c, rel=1e-9)
