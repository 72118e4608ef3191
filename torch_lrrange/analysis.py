"""Curve analysis: pure functions on numpy arrays, usable on any LR/loss curve.

Every function takes plain arrays (LRs in their own units, losses as recorded)
and returns plain values; nothing here touches torch. The pipeline of
:func:`suggest` (and so of :func:`analyze` and every ``RangeTestResult``):

1. cut the curve before its first diverged point (:func:`divergence_index`, the
   same :class:`~torch_lrrange._divergence.DivergenceRule` a ``RangeTest``
   applies while it sweeps; this is the only place a curve is cut), and read it
   only up to where the loss climbs back above its starting level for good
   (:func:`climb_index`): the points of the blow-up are kept and shown, but
   never smoothed into the part the suggestion is read from;
2. smooth it without lag (:func:`smooth`: Savitzky-Golay over log10(lr), window
   a fixed fraction of the curve); the raw losses are kept;
3. differentiate it with respect to **log10(lr)** (:func:`slope`): ``d loss /
   d log10(lr)``, the natural axis of an exponential sweep, and the only one in
   which "steepest" means the same thing for linear and exponential sweeps;
4. find the descent (where the smoothed loss starts to fall, its minimum) and
   judge the curve (noise, depth of the descent, divergence, length) into
   ``confidence`` and ``warnings``; a curve without a usable descent gives no LR;
5. read ``lr`` with the named rule of :data:`METHODS` and the cyclic bounds
   ``min_lr``/``max_lr`` with Smith's rules (:func:`bounds`).

Every threshold is a fraction of the curve's own descent, noise or length, so a
suggestion is unchanged when all losses are multiplied by a positive constant,
moves with the LRs when they are all multiplied by a constant, and no rule
empties a short curve.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import savgol_coeffs

from ._checks import check_choice, check_int
from ._divergence import DEFAULT_THRESHOLD as DIVERGE_THRESHOLD
from ._divergence import divergence_index

__all__ = [
    "METHODS",
    "Descent",
    "Suggestion",
    "UnusableCurveError",
    "bounds",
    "climb_index",
    "descent",
    "divergence_index",
    "slope",
    "smooth",
    "suggest",
]

#: Fewest sane (pre-divergence) points a suggestion is read from.
MIN_POINTS = 8
#: Savitzky-Golay window as a fraction of the curve's points (at least 5 points).
WINDOW_FRACTION = 0.15
#: The descent must be this many standard errors of the smoothed curve deep to
#: give a suggestion (about the 99th percentile of the same statistic on pure
#: noise); below twice this, the result warns "too noisy".
MIN_SNR = 8.0
#: The descent starts (the flat start ends) once the smoothed loss has made this
#: fraction of its drop from the starting level (:class:`Descent`) to the minimum.
START_FRACTION = 0.1
#: ``max_lr`` is this factor (half a decade) below the LR of the smoothed minimum.
MARGIN = math.sqrt(10.0)
#: Points of the running median :func:`climb_index` compares with the starting level.
CLIMB_MEDIAN = 5


class UnusableCurveError(ValueError):
    """The curve cannot support an LR suggestion; the message says why."""


# --- building blocks ---------------------------------------------------------------


def _vector(name: str, values: Any) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence or array of real numbers, got {type(values).__name__}")
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a sequence or array of real numbers, got {type(values).__name__} ({err})"
        ) from err


def _as_curve(lrs: Any, losses: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("lrs", lrs), _vector("losses", losses)
    if x.shape != y.shape:
        raise ValueError(f"lrs and losses must have the same length, got {x.size} and {y.size}")
    if x.size and (not np.all(np.isfinite(x)) or np.any(x <= 0)):
        raise ValueError("lrs must be finite and > 0")
    if x.size > 1 and np.any(np.diff(x) <= 0):
        raise ValueError("lrs must be strictly increasing")
    return np.log10(x), y


def _window(n: int) -> int:
    return max(5, round(WINDOW_FRACTION * n) | 1)


def smooth(lrs: Any, losses: Any, window: int | None = None, polyorder: int = 2) -> np.ndarray:
    """Zero-phase Savitzky-Golay smoothing of ``losses`` over log10(lr).

    Unlike the causal EMA of the peers, the filter has no lag, so the smoothed
    curve's steepest point and minimum sit where the raw curve's do. The curve
    is resampled on a uniform log10(lr) grid (exact for exponential sweeps; a
    linear sweep is thereby smoothed in the space its slope is read in),
    filtered, and mapped back to the input LRs. ``window`` (points, an odd int
    > ``polyorder``) defaults to ``WINDOW_FRACTION`` (15%) of the curve, at
    least 5; a window longer than the curve is shortened to it, and a curve too
    short to filter comes back unchanged. Non-finite losses are not accepted.

    Returns: float64 array, same length as ``losses``.

    Example:
        >>> lrs = np.logspace(-4, 0, 21)
        >>> parabola = np.log10(lrs) ** 2  # quadratic in log10(lr): kept as it is
        >>> bool(np.allclose(smooth(lrs, parabola), parabola))
        True
        >>> noisy = parabola + np.resize([0.1, -0.1], 21)  # noise of +-0.1 is mostly averaged out
        >>> float(np.abs(smooth(lrs, noisy) - parabola).max()) < 0.08
        True
    """
    polyorder = check_int("polyorder", polyorder, minimum=0)
    if window is not None:
        window = check_int("window", window, minimum=polyorder + 1)
        if window % 2 == 0:
            raise ValueError(f"window must be an odd int > polyorder ({polyorder}), got {window}")
    log_lrs, y = _as_curve(lrs, losses)
    if not np.all(np.isfinite(y)):
        raise ValueError("smooth() needs finite losses; cut the curve at divergence_index() first")
    return _smooth(log_lrs, y, window, polyorder)


def _smooth(log_lrs: np.ndarray, y: np.ndarray, window: int | None = None, polyorder: int = 2) -> np.ndarray:
    n = len(y)
    window = min(int(window or _window(n)), n if n % 2 else n - 1)
    if window <= polyorder or n < 3:
        return y.copy()
    scale = _scale(y)  # filter values of order 1: no overflow for losses near the float64 limit
    grid = np.linspace(log_lrs[0], log_lrs[-1], n)
    filtered = _savgol_interp(np.interp(grid, log_lrs, y / scale), window, polyorder)
    return np.interp(log_lrs, grid, filtered) * scale


def _savgol_interp(y: np.ndarray, window: int, polyorder: int) -> np.ndarray:
    """``scipy.signal.savgol_filter(y, window, polyorder, mode="interp")``, with the edge fits precomputed.

    scipy fits each edge with a fresh least-squares solve per call; the fit is a
    fixed linear map of the edge window, so it is cached per (window, polyorder).
    """
    coeffs, left, right = _savgol_operators(window, polyorder)
    half = window // 2
    out = np.empty_like(y)
    out[half : len(y) - half] = np.convolve(y, coeffs, mode="valid")
    out[:half] = left @ y[:window]
    out[len(y) - half :] = right @ y[len(y) - window :]
    return out


@functools.lru_cache(maxsize=64)
def _savgol_operators(window: int, polyorder: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Least-squares polynomial fit over positions 0..window-1, evaluated at the edge positions.
    positions = np.arange(window, dtype=np.float64)
    vander = np.vander(positions, polyorder + 1)
    fit = vander @ np.linalg.pinv(vander)  # window x window: fitted values from the window's values
    half = window // 2
    operators = (savgol_coeffs(window, polyorder), fit[:half].copy(), fit[window - half :].copy())
    for array in operators:
        array.setflags(write=False)
    return operators


def _scale(y: np.ndarray) -> float:
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    return peak if 0 < peak < math.inf else 1.0


def slope(lrs: Any, values: Any) -> np.ndarray:
    """``d values / d log10(lr)`` by second-order central differences (one-sided at the ends)."""
    log_lrs, y = _as_curve(lrs, values)
    return _slope(log_lrs, y)


def _slope(log_lrs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.gradient(y, log_lrs) if len(y) >= 2 else np.zeros_like(y)


def _running_median(y: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(y, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def climb_index(losses: Any) -> int:
    """Index where the loss climbs above its starting level for good; ``len(losses)`` if it never does.

    The starting level is the mean loss over the first smoothing window (as in
    :class:`Descent`); the loss is judged by its running median over
    ``CLIMB_MEDIAN`` points, so one noisy point neither starts nor ends a climb.
    The index is the first point of the last run of medians above the level
    that reaches the end of the curve: past it the sweep only blows up.

    A zero-phase smoother fed those points rings: the fit of a steep climb dips
    below the raw losses just before it, and that dip can become the curve's
    smoothed minimum, a few points short of divergence. :func:`suggest`
    therefore reads the curve only up to this index.

    Example:
        >>> climb_index([2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.9, 1.8, 2.5, 4.0, 9.0])
        7
    """
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    n = len(y)
    if n == 0:
        return 0
    y = y / _scale(y)  # no overflow in the mean of losses near the float limit
    level = float(np.mean(y[: min(_window(n), n)]))
    below = np.flatnonzero(_running_median(y, CLIMB_MEDIAN) <= level)
    return n if len(below) == 0 else int(below[-1]) + 1


@dataclass
class Descent:
    """Where the smoothed loss falls (indices into the curve).

    ``start``: first point past the flat start (the loss has made
    ``START_FRACTION`` of its drop); ``steepest``: most negative slope from
    ``start`` to the minimum (noise in the flat start cannot win);
    ``minimum``: the smoothed minimum. ``drop``: the fall from the starting
    level (mean raw loss over the first smoothing window) to the smoothed
    minimum (<= 0: no descent); ``noise``: the robust standard deviation
    (1.4826 MAD) of raw minus smoothed losses; ``window``: the smoothing
    window in points.
    """

    start: int
    steepest: int
    minimum: int
    drop: float
    noise: float
    window: int

    @property
    def snr(self) -> float:
        """Depth of the descent in standard errors of the smoothed curve (``noise / sqrt(window)``)."""
        if self.drop <= 0:
            return 0.0
        if self.noise == 0:
            return math.inf
        return self.drop / (self.noise / math.sqrt(self.window))


def descent(losses: np.ndarray, smoothed: np.ndarray, slopes: np.ndarray) -> Descent:
    """Locate the descent of a smoothed curve (see :class:`Descent`); every threshold is relative."""
    y = np.asarray(losses, dtype=np.float64)
    w = min(_window(len(y)), len(y))
    m = int(np.argmin(smoothed))
    level = float(np.mean(y[:w]))
    drop = level - float(smoothed[m])
    resid = y - smoothed
    # floor: float rounding of the smoothing, relative to the loss scale (a flat curve is not a descent)
    noise = max(float(1.4826 * np.median(np.abs(resid - np.median(resid)))), 1e-9 * _scale(y))
    start = int(np.argmax(smoothed[: m + 1] <= level - START_FRACTION * drop)) if drop > 0 else 0
    steepest = start + int(np.argmin(slopes[start : m + 1]))
    return Descent(start, steepest, m, drop, noise, w)


def bounds(lrs: np.ndarray, d: Descent) -> tuple[float, float]:
    """Cyclic bounds ``(min_lr, max_lr)`` by Smith's reading of the range test.

    CLR paper (Smith 2017, arXiv 1506.01186, section 3.3): ``base_lr`` where the
    loss starts to fall, ``max_lr`` where it stops improving (slows, turns
    ragged, rises), or ``base_lr`` a third to a quarter of ``max_lr``; and
    the super-convergence paper (Smith & Topin 2018, arXiv 1708.07120) takes
    one-cycle's large maximum LR from the same test, below where the loss
    turns up. Here ``min_lr`` is the LR at ``Descent.start`` (10% of the drop
    made) and ``max_lr`` is ``MARGIN`` (sqrt(10), half a decade) below the LR
    of the smoothed minimum: a sweep holds each LR for one step, so the LR at
    its minimum overstates the largest LR that trains stably for a whole run.
    ``lrs[0] <= min_lr <= max_lr < lrs[minimum]`` (needs ``minimum >= 1``).
    """
    ceiling = float(lrs[max(d.minimum - 1, 0)])
    max_lr = min(max(float(lrs[d.minimum]) / MARGIN, float(lrs[0])), ceiling)
    return min(float(lrs[d.start]), max_lr), max_lr


# --- the methods -----------------------------------------------------------------

RuleFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Descent], float]


def _rule_steepest(lrs: np.ndarray, s: np.ndarray, g: np.ndarray, d: Descent) -> float:
    """Steepest descent: the LR where ``d loss / d log10(lr)`` of the smoothed curve is most negative.

    The rule of torch-lr-finder (``LRFinder.plot``) and Lightning
    (``_LRFinder.suggestion``), read here off a lag-free curve, against log10(lr)
    and only up to the minimum (they take an EMA and, for Lightning, the linear LR).
    """
    return float(lrs[d.steepest])


def _rule_minimum(lrs: np.ndarray, s: np.ndarray, g: np.ndarray, d: Descent) -> float:
    """fastai's ``minimum``: the LR of the smoothed minimum divided by 10."""
    return max(float(lrs[d.minimum]) / 10.0, float(lrs[0]))


def _rule_valley(lrs: np.ndarray, s: np.ndarray, g: np.ndarray, d: Descent) -> float:
    """fastai's ``valley`` (its default): halfway into the longest run of falling smoothed loss."""
    best_len, best_start, run_start = 0, 0, 0
    for i in range(1, len(s)):
        if s[i] > s[i - 1]:
            run_start = i
        if i - run_start > best_len:
            best_len, best_start = i - run_start, run_start
    return float(lrs[best_start + best_len // 2])


def _rule_default(lrs: np.ndarray, s: np.ndarray, g: np.ndarray, d: Descent) -> float:
    """This library's rule: half a decade below ``max_lr``, a decade below the smoothed minimum.

    ``max_lr`` (:func:`bounds`) is already half a decade under the LR of the
    smoothed minimum, the largest LR at which the sweep still improved the
    loss. One-cycle training visits ``max_lr`` only briefly, after a warm-up
    (super-convergence paper, arXiv 1708.07120); a constant LR must be stable
    for the whole run, so it keeps the same margin once more: ``max_lr /
    sqrt(10)``, a decade under the minimum, clamped into ``[min_lr, max_lr]``.
    The point is that of fastai's ``minimum`` rule, except on a sharp, late
    descent, where a decade under the minimum lies on the flat start (the sweep
    saw no progress there): the default then rises to ``min_lr``.
    """
    min_lr, max_lr = bounds(lrs, d)
    return min(max(max_lr / MARGIN, min_lr), max_lr)


METHODS: dict[str, RuleFn] = {
    "default": _rule_default,
    "steepest": _rule_steepest,
    "valley": _rule_valley,
    "minimum": _rule_minimum,
}
"""Named rules for ``lr``; see each function's docstring for the rule and its source."""


# --- suggestion ----------------------------------------------------------------------


@dataclass
class Suggestion:
    """What a method reads off a curve. LRs in the curve's units; ``None`` when unusable."""

    lr: float | None
    min_lr: float | None
    max_lr: float | None
    confidence: float
    warnings: list[str] = field(default_factory=list)
    #: The smoothed losses of the points read (raw losses when too few to smooth).
    smoothed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Points read: those before the first diverged point (the rest are cut).
    points: int = 0
    #: LR of the smoothed minimum (``None`` when unusable).
    minimum_at: float | None = None
    #: LR where the loss climbed back above its starting level for good (:func:`climb_index`),
    #: or the last LR read when it never did; also set when the descent is unclear, as the top of
    #: the confirmation phase's candidates (``None`` only below ``MIN_POINTS`` sane points).
    climb_at: float | None = None


def suggest(
    lrs: Any, losses: Any, method: str = "default", *, threshold: float = DIVERGE_THRESHOLD, diverged: bool = False
) -> Suggestion:
    """Read an LR and cyclic bounds off a curve with the named ``method``.

    The curve is cut at its first diverged point, smoothed and differentiated
    against log10(lr) (see the module docstring). Never raises for a well-formed
    curve: an unusable one gives ``lr=None`` with the reasons in ``warnings``.
    ``diverged``: the sweep ended by diverging (a ``RangeTest`` hands over the
    curve already cut), so a short curve is reported as "diverged at once".
    ``confidence`` (0 to 1) grows with the descent-to-noise ratio and is capped
    when the curve is suspect; it is 0 exactly when there is no suggestion.
    Always ``lrs[0] <= min_lr <= lr <= max_lr < lr at the smoothed minimum``.
    """
    check_choice("method", method, tuple(METHODS))
    log_x, y = _as_curve(lrs, losses)
    x = np.asarray(lrs, dtype=np.float64).reshape(-1)
    n, total = divergence_index(y, threshold), len(y)
    x, y, log_x = x[:n], y[:n], log_x[:n]
    warnings: list[str] = []
    if n < MIN_POINTS:
        if diverged or n < total:
            warnings.append(f"diverged at once: only {n} points before divergence (lower start_lr)")
        warnings.append(f"too few points: {n} sane points, at least {MIN_POINTS} are needed")
        return Suggestion(None, None, None, 0.0, warnings, y.copy(), n)
    scale = _scale(y)  # the analysis runs on losses / max|loss|: scale-free, and no overflow
    read = max(climb_index(y), MIN_POINTS)  # the blow-up is shown, not read
    s = _smooth(log_x[:read], y[:read] / scale)
    g = _slope(log_x[:read], s)
    d = descent(y[:read] / scale, s, g)
    shown = np.concatenate([s, _smooth(log_x[read:], y[read:] / scale)]) * scale
    snr = d.snr
    if d.minimum == 0 or d.drop <= 0:
        warnings.append("no descent: the loss never fell (start_lr too high, or the model does not learn)")
    elif snr < MIN_SNR:
        warnings.append(
            f"no clear descent: the loss fell by {snr:.1f} standard errors, at least {MIN_SNR:g} are needed "
            "(flat or noisy curve: try repeats=, a larger batch, or a wider LR range)"
        )
    climb_at = float(x[read - 1])
    if warnings:
        return Suggestion(None, None, None, 0.0, warnings, shown, n, climb_at=climb_at)
    confidence = 1.0 - MIN_SNR / snr
    if snr < 2 * MIN_SNR:
        warnings.append(f"too noisy: the loss fell by only {snr:.1f} standard errors (try repeats= or a larger batch)")
    if d.minimum < 2:
        warnings.append("the minimum is at the start: start_lr may be too high")
        confidence = min(confidence, 0.3)
    if d.minimum == n - 1:
        warnings.append("the loss was still falling at the end of the sweep: end_lr may be too low")
        confidence = min(confidence, 0.5)
    x_read = x[:read]
    lr = METHODS[method](x_read, s, g, d)
    min_lr, max_lr = bounds(x_read, d)
    ceiling = float(x[d.minimum - 1])
    lr = min(max(lr, float(x[0])), ceiling)
    min_lr = min(min_lr, lr)
    max_lr = min(max(max_lr, lr), ceiling)
    return Suggestion(lr, min_lr, max_lr, confidence, warnings, shown, n, float(x[d.minimum]), climb_at)
