"""Curve analysis: smoothing, slopes, divergence, descent, methods, quality signal, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _statecheck import INF, NAN, ids
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_lrrange import METHODS, RangeTestResult, UnusableCurveError, analyze
from torch_lrrange._divergence import DivergenceRule
from torch_lrrange.analysis import (
    MIN_POINTS,
    _savgol_interp,
    bounds,
    climb_index,
    descent,
    divergence_index,
    slope,
    smooth,
    suggest,
)


def curve(n=100, lo=-6.0, hi=0.0, center=-3.0, width=0.6, blow=-0.7, noise=0.0, seed=0, level=2.0):
    """A range-test-like curve: flat, a tanh descent centred at 10**center, then a blow-up past 10**blow."""
    log_lrs = np.linspace(lo, hi, n)
    losses = level - np.tanh((log_lrs - center) / width) + np.exp(6 * (log_lrs - blow))
    if noise:
        losses = losses + np.random.default_rng(seed).normal(0, noise, n)
    return 10**log_lrs, losses


# --- building blocks -------------------------------------------------------------


@pytest.mark.parametrize("n,window,polyorder", [(5, 5, 2), (20, 5, 2), (100, 15, 2), (400, 61, 2), (101, 31, 3)])
def test_savgol_interp_matches_scipy(n, window, polyorder):
    from scipy.signal import savgol_filter

    y = np.random.default_rng(n).normal(size=n).cumsum()
    expected = savgol_filter(y, window, polyorder, mode="interp")
    np.testing.assert_allclose(_savgol_interp(y, window, polyorder), expected, rtol=0, atol=1e-12 * np.abs(y).max())


def test_smooth_is_zero_phase_and_keeps_length():
    lrs, losses = curve(noise=0.05)
    s = smooth(lrs, losses)
    assert s.shape == losses.shape and s.dtype == np.float64
    clean = curve()[1]
    # no lag: the smoothed curve's steepest point is where the clean curve's is (an EMA lands late)
    g_clean, g_s = slope(lrs, clean), slope(lrs, s)
    k_clean, k_s = int(np.argmin(g_clean[:70])), int(np.argmin(g_s[:70]))
    assert abs(k_clean - k_s) <= 2
    assert np.std((s - clean)[:70]) < 0.5 * np.std((losses - clean)[:70])


def test_smooth_is_exact_on_quadratics_and_short_curves_unchanged():
    lrs = np.logspace(-4, 0, 31)
    quad = (np.log10(lrs) + 2) ** 2
    np.testing.assert_allclose(smooth(lrs, quad), quad, atol=1e-9)
    np.testing.assert_array_equal(smooth(lrs[:2], quad[:2]), quad[:2])
    with pytest.raises(ValueError, match="finite losses"):
        smooth(lrs, np.where(np.arange(31) == 5, np.nan, quad))


def test_slope_is_taken_against_log10_lr():
    lrs = np.logspace(-5, -1, 41)
    np.testing.assert_allclose(slope(lrs, 3 * np.log10(lrs) + 1), 3.0, atol=1e-9)
    # a linear sweep: d(lr)/d log10(lr) = lr * ln(10)
    lin = np.linspace(0.1, 1.0, 200)
    np.testing.assert_allclose(slope(lin, lin)[1:-1], lin[1:-1] * math.log(10), rtol=1e-3)


@pytest.mark.parametrize(
    ("lrs", "losses", "match"),
    [
        ([1e-3, 1e-2], [1.0], "same length"),
        ([1e-3, -1.0], [1.0, 2.0], "finite and > 0"),
        ([1e-2, 1e-3], [1.0, 2.0], "strictly increasing"),
    ],
)
def test_bad_curves_are_rejected(lrs, losses, match):
    with pytest.raises(ValueError, match=match):
        analyze(lrs, losses)


def test_divergence_index_applies_the_live_rule():
    rng = np.random.default_rng(3)
    losses = np.concatenate([np.linspace(2, 1, 40) + rng.normal(0, 0.01, 40), np.geomspace(1, 100, 20)])
    rule = DivergenceRule(4.0)
    expected = next(i for i, v in enumerate(losses) if rule.update(float(v)))
    assert divergence_index(losses) == expected
    assert 40 < expected < 60
    assert divergence_index([1.0, 0.9, math.nan, 0.5]) == 2
    assert divergence_index([1.0, 0.9, math.inf]) == 2
    assert divergence_index(np.linspace(2, 1, 30)) == 30
    assert divergence_index(losses, threshold=1e6) == 60


def test_descent_finds_flat_start_steepest_and_minimum():
    lrs, losses = curve()
    s = smooth(lrs, losses)
    d = descent(losses, s, slope(lrs, s))
    log_lrs = np.log10(lrs)
    assert d.start < d.steepest < d.minimum == int(np.argmin(s))
    assert log_lrs[d.steepest] == pytest.approx(-3.0, abs=0.15)
    # the flat start ends where 10% of the drop is made: tanh((x + 3) / 0.6) = -0.8 at x = -3.66
    assert log_lrs[d.start] == pytest.approx(-3.66, abs=0.1)
    assert d.drop == pytest.approx(np.mean(losses[: d.window]) - s.min())
    assert d.snr > 1000  # noiseless: only the smoothing residual remains
    lo, hi = bounds(lrs, d)
    assert lo == lrs[d.start]
    assert hi == pytest.approx(lrs[d.minimum] / math.sqrt(10))


def test_descent_depth_is_measured_in_standard_errors():
    lrs, losses = curve(noise=0.1, seed=5)
    s = smooth(lrs, losses)
    d = descent(losses, s, slope(lrs, s))
    assert d.noise == pytest.approx(0.1, rel=0.3)
    assert d.snr == pytest.approx(d.drop / (d.noise / math.sqrt(d.window)))


# --- methods ------------------------------------------------------------------------


def test_methods_are_named_and_documented():
    assert {"default", "steepest", "valley", "minimum"} <= set(METHODS)
    for name, rule in METHODS.items():
        assert rule.__doc__ and len(rule.__doc__) > 40, name


def test_each_method_reads_its_own_rule():
    lrs, losses = curve()
    s = smooth(lrs, losses)
    g = slope(lrs, s)
    m = int(np.argmin(s))
    steepest = analyze(lrs, losses, method="steepest")
    assert steepest.lr == lrs[int(np.argmin(g[: m + 1]))]
    assert math.log10(steepest.lr) == pytest.approx(-3.0, abs=0.15)
    assert analyze(lrs, losses, method="minimum").lr == pytest.approx(lrs[m] / 10)
    v = int(np.searchsorted(lrs, analyze(lrs, losses, method="valley").lr))
    # inside the longest falling run, which ends at the minimum, about halfway into it
    assert np.all(np.diff(s[v : m + 1]) <= 0) and m // 4 <= v < m
    run = v
    while run > 0 and s[run - 1] >= s[run]:
        run -= 1
    assert v == run + (m - run) // 2
    d = descent(losses, s, g)
    assert analyze(lrs, losses).lr == pytest.approx(lrs[d.minimum] / 10)


def test_default_never_goes_below_where_the_loss_starts_to_fall():
    # a sharp, late descent: L*/10 lies on the flat start, where the sweep saw no progress
    lrs, losses = curve(center=-2.0, width=0.1, blow=-1.3)
    default, minimum = analyze(lrs, losses), analyze(lrs, losses, method="minimum")
    assert minimum.lr == pytest.approx(default.lrs[int(np.argmin(default.smoothed))] / 10)
    assert default.lr == default.min_lr > minimum.lr
    assert default.max_lr == minimum.max_lr


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        analyze(*curve(), method="fastest")


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("noise", [0.0, 0.03])
@pytest.mark.parametrize("n", [12, 40, 100, 400])
def test_every_method_orders_its_bounds(method, noise, n):
    lrs, losses = curve(n=n, noise=noise, seed=n)
    r = analyze(lrs, losses, method=method)
    assert isinstance(r, RangeTestResult) and r.method == method
    m_lr = r.lrs[int(np.argmin(r.smoothed))]
    assert r.lrs[0] <= r.min_lr <= r.lr <= r.max_lr < m_lr <= r.lrs[-1]
    assert r.bounds == (r.min_lr, r.max_lr)
    assert 0 < r.confidence <= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(MIN_POINTS, 150),
    center=st.floats(-5, -2),
    width=st.floats(0.2, 1.5),
    blow=st.floats(-1.5, 1.0),
    noise=st.floats(0, 0.2),
    seed=st.integers(0, 10**6),
    method=st.sampled_from(sorted(METHODS)),
)
def test_bounds_hold_on_any_curve(n, center, width, blow, noise, seed, method):
    lrs, losses = curve(n=n, center=center, width=width, blow=blow, noise=noise, seed=seed)
    r = analyze(lrs, losses, method=method)
    if not r.usable:
        assert r.confidence == 0 and r.warnings
        with pytest.raises(UnusableCurveError):
            _ = r.lr
        return
    m_lr = r.lrs[int(np.argmin(r.smoothed))]
    assert lrs[0] <= r.min_lr <= r.lr <= r.max_lr <= lrs[-1]
    assert r.max_lr < m_lr
    assert 0 < r.confidence <= 1


# --- invariances --------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("factor", [1e-3, 0.5, 7.0, 1e4])
def test_scaling_losses_leaves_the_suggestion(method, factor):
    lrs, losses = curve(noise=0.02, seed=1)
    a = analyze(lrs, losses, method=method)
    b = analyze(lrs, losses * factor, method=method)
    assert (b.lr, b.min_lr, b.max_lr) == pytest.approx((a.lr, a.min_lr, a.max_lr), rel=1e-12)
    assert b.confidence == pytest.approx(a.confidence) and b.warnings == a.warnings


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("factor", [1e-4, 0.3, 10.0, 1e3])
def test_scaling_lrs_scales_the_suggestion(method, factor):
    lrs, losses = curve(noise=0.02, seed=2)
    a = analyze(lrs, losses, method=method)
    b = analyze(lrs * factor, losses, method=method)
    assert (b.lr, b.min_lr, b.max_lr) == pytest.approx((a.lr * factor, a.min_lr * factor, a.max_lr * factor), rel=1e-9)


# --- the quality signal ------------------------------------------------------------


def assert_unusable(result, match):
    assert not result.usable and result.confidence == 0
    assert result.suggestion.lr is result.suggestion.min_lr is result.suggestion.max_lr is None
    for name in ("lr", "min_lr", "max_lr"):
        with pytest.raises(UnusableCurveError, match=match):
            getattr(result, name)
    with pytest.raises(ValueError, match=match):  # UnusableCurveError is a ValueError
        _ = result.bounds


def test_clean_curve_is_confident_without_warnings():
    r = analyze(*curve(noise=0.005))
    assert r.warnings == [] and r.confidence > 0.9


def test_flat_noisy_curve_gives_no_number():
    lrs = np.logspace(-6, 0, 100)
    losses = 2.0 + np.random.default_rng(0).normal(0, 0.05, 100)
    assert_unusable(analyze(lrs, losses), "no clear descent")


@pytest.mark.parametrize("level", [1e-300, 1.0, 1e300])
def test_flat_noiseless_curve_gives_no_number(level):
    assert_unusable(analyze(np.logspace(-6, 1, 50), np.full(50, level)), "no clear descent")


def test_losses_near_the_float_limit_do_not_overflow():
    lrs, losses = curve(noise=0.02, blow=2.0)
    big = analyze(lrs, losses * 1e307)
    assert np.all(np.isfinite(big.smoothed))
    assert big.lr == pytest.approx(analyze(lrs, losses).lr, rel=1e-12)


def test_rising_curve_gives_no_number():
    lrs = np.logspace(-6, 0, 100)
    assert_unusable(analyze(lrs, 1 + 0.5 * np.log10(lrs / 1e-6)), "no descent")


def test_immediate_divergence_gives_no_number():
    lrs = np.logspace(-6, 0, 100)
    losses = np.concatenate([[2.0, 1.9, 1.95], np.full(97, np.nan)])
    r = analyze(lrs, losses)
    assert_unusable(r, "diverged at once")
    assert r.diverged and len(r.lrs) == 3
    # a RangeTest hands over the curve already cut, and says it diverged
    assert_unusable(analyze(lrs[:3], losses[:3], diverged=True), "diverged at once")
    assert "diverged at once" not in " ".join(analyze(lrs[:3], losses[:3]).warnings)


def test_too_few_points_gives_no_number():
    lrs, losses = curve(n=MIN_POINTS - 1)
    assert_unusable(analyze(lrs, losses), "too few points")
    assert analyze(*curve(n=MIN_POINTS, blow=2.0)).usable


def test_noisy_descent_warns_and_lowers_confidence():
    clean = analyze(*curve(noise=0.005))
    noisy = analyze(*curve(noise=0.7, seed=0))
    assert noisy.usable and any("too noisy" in w for w in noisy.warnings)
    assert noisy.confidence < 0.5 < clean.confidence


def test_curve_still_falling_at_the_end_warns():
    lrs = np.logspace(-6, -2, 60)
    losses = 2 - np.tanh(np.log10(lrs) + 3)
    r = analyze(lrs, losses)
    assert r.usable and r.max_lr < lrs[-1]
    assert any("still falling" in w for w in r.warnings) and r.confidence <= 0.5


def test_curve_is_cut_at_divergence_and_raw_losses_kept():
    lrs, losses = curve(blow=-1.5)
    n = divergence_index(losses)
    assert n < len(losses)
    r = analyze(lrs, losses)
    assert r.diverged and len(r.lrs) == len(r.losses) == len(r.smoothed) == n
    np.testing.assert_array_equal(r.losses, losses[:n])
    assert not np.array_equal(r.smoothed, r.losses)
    assert r.max_lr < lrs[n - 1]


def lm_like_curve(n=100, seed=0):
    """A transformer-LM-like sweep: a descent to a minimum at 10**-2.2, a ragged plateau, then a steep blow-up.

    The blow-up rises tenfold over its last ten points before the live divergence
    rule stops the sweep: the points a zero-phase smoother rings on.
    """
    log_lrs = np.linspace(-6, 0.3, n)
    rng = np.random.default_rng(seed)
    descent_part = 4.4 - 1.2 * (1 + np.tanh((log_lrs + 3.0) / 0.5)) / 2
    plateau = 0.25 * np.clip(log_lrs + 2.2, 0, None)
    losses = descent_part + plateau + rng.normal(0, 0.06, n)
    blow = log_lrs > -0.4
    losses[blow] *= np.exp(4.5 * (log_lrs[blow] + 0.4))
    return 10**log_lrs, losses


def test_climb_index_finds_the_final_climb_above_the_starting_level():
    assert climb_index([2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.9, 1.8, 2.5, 4.0, 9.0]) == 7
    assert climb_index([2.0, 1.9, 1.5, 1.0, 0.8, 0.7, 0.7, 0.6]) == 8  # never climbs: the whole curve
    # one noisy point above the level neither starts nor ends a climb
    assert climb_index([2.0, 2.0, 1.9, 1.0, 5.0, 0.9, 0.8, 0.9, 0.8, 0.9]) == 10
    # a climb that falls back below the level is not the final one
    assert climb_index([2.0, 2.0, 1.8, 1.2, 3.0, 3.0, 3.0, 1.0, 0.8, 0.9, 3.0, 4.0, 6.0]) == 10
    assert climb_index([]) == 0


def test_climb_index_is_scale_free():
    _, losses = lm_like_curve()
    assert climb_index(losses) == climb_index(losses * 1e-6) == climb_index(losses * 1e6)


def test_blow_up_does_not_pull_the_minimum_to_the_edge_of_divergence():
    """The smoother never sees the blow-up: the minimum stays where the raw losses bottom out."""
    for seed in range(5):
        lrs, losses = lm_like_curve(seed=seed)
        n = divergence_index(losses)
        assert n < len(losses)
        s = suggest(lrs, losses)
        assert s.minimum_at is not None and s.lr is not None
        # the raw curve's running minimum region, not the last points before divergence
        assert -2.9 <= math.log10(s.minimum_at) <= -1.5, seed
        assert s.climb_at is not None and math.log10(s.climb_at) > -0.7
        # every point before the climb is smoothed from points before it: no dip below the raw curve there
        read = climb_index(losses[:n])
        assert np.min(s.smoothed[:read]) >= np.min(losses[:read]) - 0.1
        assert len(s.smoothed) == n


def test_climb_point_is_reported_even_without_a_clear_descent():
    flat = 2.0 + np.random.default_rng(0).normal(0, 0.05, 100)
    lrs = np.logspace(-6, 1, 100)
    s = suggest(lrs, flat)
    assert s.lr is None and s.minimum_at is None
    assert s.climb_at is not None and lrs[0] <= s.climb_at <= lrs[-1]
    assert suggest(lrs[:5], flat[:5]).climb_at is None  # too few points: nothing is read


def test_minimum_and_climb_are_the_curves_own_points():
    lrs, losses = curve(noise=0.02, seed=2)
    s = suggest(lrs, losses)
    assert s.minimum_at in lrs and s.climb_at in lrs
    assert s.lr <= s.max_lr < s.minimum_at <= s.climb_at


def test_short_curve_keeps_its_points():
    # no fixed [a:-b] trimming: 10 points still give a full suggestion from all of them
    lrs, losses = curve(n=10, lo=-5, hi=-1)
    s = suggest(lrs, losses)
    assert s.lr is not None and len(s.smoothed) == 10


def test_result_round_trips_with_quality_signal():
    r = analyze(*curve(noise=0.7, seed=0), start_lr=1e-6)
    back = RangeTestResult.from_dict(r.to_dict())
    assert back.confidence == r.confidence and back.warnings == r.warnings
    assert (back.lr, back.min_lr, back.max_lr) == (r.lr, r.min_lr, r.max_lr)
    assert back.metadata["start_lr"] == 1e-6
    assert r.reanalyze("steepest").lr == analyze(r.lrs, r.losses, method="steepest").lr


@pytest.mark.parametrize("window", [4, 6, 10])
def test_smooth_refuses_an_even_window(window):
    lrs = np.logspace(-4, 0, 30)
    with pytest.raises(ValueError, match=rf"window must be an odd int > polyorder \(2\), got {window}"):
        smooth(lrs, np.linspace(2, 1, 30), window=window)


def test_smooth_refuses_a_window_not_above_polyorder():
    with pytest.raises(ValueError, match="window must be an int >= 3, got 1"):
        smooth(np.logspace(-4, 0, 30), np.linspace(2, 1, 30), window=1)


def test_smooth_with_an_odd_window_matches_savgol_filter():
    from scipy.signal import savgol_filter

    lrs = np.logspace(-4, 0, 41)  # exponential sweep: the log grid is uniform, so no resampling
    losses = np.random.default_rng(3).standard_normal(41) + np.linspace(3, 1, 41)
    np.testing.assert_allclose(smooth(lrs, losses, window=7), savgol_filter(losses, 7, 2, mode="interp"), atol=1e-12)


# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---

ANALYZE = [
    (
        "lrs-str",
        lambda: analyze("abc", [1.0, 2.0]),
        TypeError,
        "lrs must be a sequence or array of real numbers, got str",
    ),
    (
        "losses-str-items",
        lambda: analyze([1.0, 2.0], ["a", "b"]),
        TypeError,
        "losses must be a sequence or array of real numbers, got list",
    ),
    (
        "losses-dict",
        lambda: analyze([1.0, 2.0], {"a": 1}),
        TypeError,
        "losses must be a sequence or array of real numbers, got dict",
    ),
    (
        "lengths",
        lambda: analyze([1e-3, 1e-2, 1e-1], [1.0, 2.0]),
        ValueError,
        "lrs and losses must have the same length, got 3 and 2",
    ),
    ("lrs-zero", lambda: analyze([0.0, 1e-2], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-negative", lambda: analyze([-1e-3, 1e-2], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-nan", lambda: analyze([1e-3, NAN], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-inf", lambda: analyze([1e-3, INF], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-decreasing", lambda: analyze([1e-2, 1e-3], [1.0, 2.0]), ValueError, "lrs must be strictly increasing"),
    ("lrs-repeated", lambda: analyze([1e-3, 1e-3], [1.0, 2.0]), ValueError, "lrs must be strictly increasing"),
    (
        "method",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], method="fastai"),
        ValueError,
        "method must be one of 'default', .*got 'fastai'",
    ),
    (
        "method-none",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], method=None),
        TypeError,
        "method must be one of 'default', .*got NoneType",
    ),
    (
        "diverge_threshold-1",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverge_threshold=1.0),
        ValueError,
        "diverge_threshold must be .*> 1",
    ),
    (
        "diverge_threshold-nan",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverge_threshold=NAN),
        ValueError,
        "diverge_threshold must be a finite real number",
    ),
    (
        "diverge_threshold-str",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverge_threshold="4"),
        TypeError,
        "diverge_threshold must be a finite real number",
    ),
    (
        "diverged",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverged="yes"),
        TypeError,
        "diverged must be True, False or None, got str",
    ),
]


@pytest.mark.parametrize(("name", "call", "error", "message"), ANALYZE, ids=ids(ANALYZE))
def test_analyze_arguments(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_analyze_does_not_modify_its_inputs():
    lrs = np.logspace(-5, 0, 30)
    losses = np.concatenate([np.linspace(2, 1, 25), [NAN] * 5])
    lrs_copy, losses_copy = lrs.copy(), losses.copy()
    analyze(lrs, losses)
    assert np.array_equal(lrs, lrs_copy)
    assert np.array_equal(losses, losses_copy, equal_nan=True)
