"""Curve analysis: pure functions on numpy arrays, usable on any LR/loss curve.

Every function takes plain arrays (LRs in their own units, losses as recorded)
and returns plain values. Slopes are always taken with respect to log10(lr):
``d loss / d log10(lr)``, the natural axis of an exponential sweep, and the only
one in which "steepest" means the same thing for linear and exponential sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import savgol_filter

from ._checks import check_choice, check_positive_float
from .divergence import DEFAULT_BETA, DivergenceRule
from .divergence import DEFAULT_THRESHOLD as DIVERGE_THRESHOLD

__all__ = [
    "METHODS",
    "Suggestion",
    "UnusableCurveError",
    "analyze",
    "divergence_index",
    "slope",
    "smooth",
    "suggest",
]

MIN_POINTS = 8


class UnusableCurveError(ValueError):
    """The curve cannot support an LR suggestion; the message says why."""


def smooth(lrs: Any, losses: Any, window: int | None = None, polyorder: int = 2) -> np.ndarray:
    """Zero-phase Savitzky-Golay smoothing of ``losses`` (no lag, unlike an EMA).

    The curve is resampled on a uniform log10(lr) grid (exact for exponential
    sweeps), filtered, and mapped back. ``window`` (odd number of points) defaults
    to about a fifth of the curve, at least 5; curves too short to filter come
    back unchanged (as float64).
    """
    log_lrs, y = _as_curve(lrs, losses)
    n = len(y)
    if window is None:
        window = max(5, (n // 5) | 1)
    window = min(window, n if n % 2 else n - 1)
    if window <= polyorder or n < 3:
        return y.copy()
    grid = np.linspace(log_lrs[0], log_lrs[-1], n)
    uniform = np.interp(grid, log_lrs, y)
    filtered = savgol_filter(uniform, window, polyorder, mode="interp")
    return np.interp(log_lrs, grid, filtered)


def slope(lrs: Any, values: Any) -> np.ndarray:
    """``d values / d log10(lr)`` by second-order central differences."""
    log_lrs, y = _as_curve(lrs, values)
    if len(y) < 2:
        return np.zeros_like(y)
    return np.gradient(y, log_lrs)


def divergence_index(losses: Any, threshold: float = DIVERGE_THRESHOLD, beta: float = DEFAULT_BETA) -> int:
    """Index of the first point that diverged, or ``len(losses)`` if none did.

    The rule of :class:`~torch_lrrange.divergence.DivergenceRule`, the one a
    :class:`~torch_lrrange.RangeTest` applies while it sweeps: a non-finite loss,
    or a bias-corrected EMA above ``threshold`` times the best EMA so far.
    """
    rule = DivergenceRule(threshold, beta)
    for i, x in enumerate(np.asarray(losses, dtype=np.float64).reshape(-1).tolist()):
        if rule.update(x):
            return i
    return len(np.asarray(losses).reshape(-1))


@dataclass
class Suggestion:
    """What a method reads off a curve. LRs in the curve's units; ``None`` when unusable."""

    lr: float | None
    min_lr: float | None
    max_lr: float | None
    confidence: float
    warnings: list[str] = field(default_factory=list)
    smoothed: np.ndarray | None = None


def _as_curve(lrs: Any, losses: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(lrs, dtype=np.float64).reshape(-1)
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"lrs and losses must have the same length, got {x.size} and {y.size}")
    if x.size and (not np.all(np.isfinite(x)) or np.any(x <= 0)):
        raise ValueError("lrs must be finite and > 0")
    if x.size > 1 and np.any(np.diff(x) <= 0):
        raise ValueError("lrs must be strictly increasing")
    return np.log10(x), y


def _steepest(log_lrs: np.ndarray, s: np.ndarray, g: np.ndarray, m: int) -> int:
    return int(np.argmin(g[: m + 1]))


def _bounds(lrs: np.ndarray, s: np.ndarray, g: np.ndarray, m: int) -> tuple[float, float]:
    """Smith's reading: min_lr where the loss starts to fall fast, max_lr before it stops improving."""
    k = _steepest(np.log10(lrs), s, g, m)
    steep = g[k]
    start = k
    while start > 0 and g[start - 1] < 0.25 * steep:
        start -= 1
    drop = s[0] - s[m]
    end = k
    while end < m and s[end + 1] > s[m] + 0.1 * drop:
        end += 1
    return float(lrs[start]), float(lrs[max(end, k)])


def _rule_steepest(lrs, s, g, m):  # type: ignore[no-untyped-def]
    return float(lrs[_steepest(np.log10(lrs), s, g, m)])


def _rule_minimum(lrs, s, g, m):  # type: ignore[no-untyped-def]
    return float(lrs[m]) / 10.0


def _rule_valley(lrs, s, g, m):  # type: ignore[no-untyped-def]
    # Longest run of decreasing smoothed loss up to the minimum; two thirds into it.
    best_len, best_start, run_start = 0, 0, 0
    for i in range(1, m + 1):
        if s[i] >= s[i - 1]:
            run_start = i
        if i - run_start > best_len:
            best_len, best_start = i - run_start, run_start
    return float(lrs[best_start + (2 * best_len) // 3])


def _rule_default(lrs, s, g, m):  # type: ignore[no-untyped-def]
    # Geometric mean of the steepest point and minimum / 10: steepest alone is
    # often too hot for constant-LR training, minimum / 10 often too timid.
    return math.sqrt(_rule_steepest(lrs, s, g, m) * _rule_minimum(lrs, s, g, m))


RuleFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], float]

METHODS: dict[str, RuleFn] = {
    "default": _rule_default,
    "steepest": _rule_steepest,
    "valley": _rule_valley,
    "minimum": _rule_minimum,
}


def suggest(lrs: Any, losses: Any, method: str = "default", *, threshold: float = DIVERGE_THRESHOLD) -> Suggestion:
    """Read an LR and cyclic bounds off a curve with the named ``method``.

    The curve is cut at the first diverged point (:func:`divergence_index`),
    smoothed (:func:`smooth`) and differentiated against log10(lr)
    (:func:`slope`). Never raises for a well-formed curve: an unusable one
    gives ``lr=None`` with the reasons in ``warnings``.
    """
    check_choice("method", method, tuple(METHODS))
    _, y = _as_curve(lrs, losses)
    x = np.asarray(lrs, dtype=np.float64).reshape(-1)
    n = divergence_index(y, threshold)
    x, y = x[:n], y[:n]
    warnings: list[str] = []
    if n < MIN_POINTS:
        warnings.append(f"too few points: {n} sane points, at least {MIN_POINTS} are needed")
        return Suggestion(None, None, None, 0.0, warnings, y.copy())
    s = smooth(x, y)
    g = slope(x, s)
    m = int(np.argmin(s))
    drop = s[0] - s[m]
    spread = float(np.max(s) - np.min(s)) or 1.0
    noise = float(np.std(y - s))
    if m <= 1:
        warnings.append("no descent: the loss rose from the first points (diverged at once, or start_lr too high)")
    elif drop <= 0.05 * max(abs(s[0]), 1e-12):
        warnings.append("no clear descent: the smoothed loss fell by less than 5% before its minimum")
    if noise > 0.5 * max(drop, 1e-12 * spread):
        warnings.append("too noisy: the noise is comparable to the descent (try repeats= or a larger batch)")
    if warnings and (m <= 1 or "no clear" in warnings[0]):
        return Suggestion(None, None, None, 0.0, warnings, s)
    lr = METHODS[method](x, s, g, m)
    min_lr, max_lr = _bounds(x, s, g, m)
    min_lr = min(min_lr, lr)
    max_lr = min(max(max_lr, lr), float(x[m]))
    confidence = float(np.clip(1.0 - noise / max(drop, 1e-12), 0.0, 1.0))
    if warnings:
        confidence = min(confidence, 0.3)
    return Suggestion(lr, min_lr, max_lr, confidence, warnings, s)


def analyze(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    method: str = "default",
    diverge_threshold: float = DIVERGE_THRESHOLD,
    diverged: bool | None = None,
    **metadata: Any,
):
    """Analyse any LR/loss curve and return a :class:`~torch_lrrange.RangeTestResult`.

    Args:
        lrs: the LR of each point (strictly increasing, > 0).
        losses: the raw loss of each point (same length).
        method: ``"default"``, ``"steepest"``, ``"valley"`` or ``"minimum"``.
        diverge_threshold: divergence multiple of the best smoothed loss. Default 4.
        diverged: whether the sweep ended by diverging (default: whether the
            curve itself diverges; it is then cut before that point).
        **metadata: kept on the result (e.g. ``start_lr``, ``mode``).

    Example:
        >>> lrs = np.logspace(-5, 0, 100)
        >>> losses = 2 - np.tanh(np.log10(lrs) + 3) + np.exp(5 * (np.log10(lrs) + 0.5))
        >>> result = analyze(lrs, losses)
        >>> result.min_lr <= result.lr <= result.max_lr
        True
    """
    from .result import RangeTestResult

    check_positive_float("diverge_threshold", diverge_threshold)
    if diverge_threshold <= 1:
        raise ValueError(f"diverge_threshold must be > 1, got {diverge_threshold!r}")
    _as_curve(lrs, losses)
    x = np.asarray(lrs, dtype=np.float64).reshape(-1)
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    n = divergence_index(y, diverge_threshold)
    suggestion = suggest(x[:n], y[:n], method, threshold=diverge_threshold)
    return RangeTestResult(
        lrs=x[:n],
        losses=y[:n],
        smoothed=suggestion.smoothed if suggestion.smoothed is not None else y[:n].copy(),
        method=method,
        suggested_lr=suggestion.lr,
        suggested_min_lr=suggestion.min_lr,
        suggested_max_lr=suggestion.max_lr,
        diverged=bool(n < len(y)) if diverged is None else bool(diverged or n < len(y)),
        confidence=suggestion.confidence,
        warnings=list(suggestion.warnings),
        metadata=dict(metadata, diverge_threshold=diverge_threshold),
    )
