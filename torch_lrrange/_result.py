"""``RangeTestResult``: the outcome of a range test as plain data, and :func:`analyze`, which builds one."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._checks import check_threshold
from ._confirmation import Confirmation
from ._divergence import DEFAULT_THRESHOLD
from ._files import from_file, write_json
from .analysis import METHODS, Suggestion, UnusableCurveError, suggest

__all__ = ["RangeTestResult", "analyze"]

_FORMAT = "torch_lrrange.RangeTestResult"
_VERSION = 1


@dataclass
class RangeTestResult:
    """An LR range test's curve and what was read off it.

    Attributes:
        lrs: LR of each point read (param group 0), float64 array, cut before divergence.
        losses: raw loss of each of those points (the mean over repeats and ranks).
        suggestion: what :func:`~torch_lrrange.analysis.suggest` read off the
            curve; its fields are also the result's own: ``smoothed`` (the
            smoothed losses), ``confidence`` (0: no usable suggestion, to 1: clean
            curve), ``warnings`` (what is wrong with the curve, in words), and
            ``lr``, ``min_lr``, ``max_lr`` (below).
        method: the analysis method used (see :data:`torch_lrrange.METHODS`).
        diverged: whether the sweep ended by diverging.
        runs: raw losses of each repeat, when there were several (each as recorded, also past divergence).
        metadata: how the sweep was run (start_lr, end_lr, num_steps, mode...);
            ``metadata["confirmation"]`` holds the confirmation phase's outcome, as plain data.

    ``lr`` (constant-LR training), ``min_lr`` and ``max_lr`` (cyclic training,
    ``min_lr <= lr <= max_lr``) are the confirmed ones when the test ran a
    confirmation phase (:attr:`confirmation`), else the curve's
    (:attr:`suggestion`). They raise :class:`UnusableCurveError` when neither
    gives an LR, rather than return a confident-looking number
    (``result.suggestion.lr`` is then None). The JSON of :meth:`save` uses the
    same names for the curve's reading.
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: Suggestion
    method: str = "default"
    diverged: bool = False
    runs: list[np.ndarray] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def _get(self, value: float | None, name: str) -> float:
        if value is None:
            reasons = "; ".join(self.warnings) or "no suggestion was computed"
            raise UnusableCurveError(f"this curve gives no {name}: {reasons}")
        return value

    @property
    def confirmation(self) -> Confirmation | None:
        """The confirmation phase's reading (``confirm=``): candidates, scores, steps; None without one."""
        data = self.metadata.get("confirmation")
        return None if data is None else Confirmation.from_dict(data, "metadata['confirmation']")

    @property
    def lr(self) -> float:
        """A single LR for constant-LR training: the confirmed one when there is a confirmation."""
        confirmed = self.confirmation
        return confirmed.lr if confirmed is not None else self._get(self.suggestion.lr, "lr")

    @property
    def min_lr(self) -> float:
        """Lower bound for cyclic training (CyclicLR's ``base_lr``); at most the confirmed ``lr``."""
        confirmed = self.confirmation
        if confirmed is None:
            return self._get(self.suggestion.min_lr, "min_lr")
        return confirmed.lr if self.suggestion.min_lr is None else min(self.suggestion.min_lr, confirmed.lr)

    @property
    def max_lr(self) -> float:
        """Upper bound for cyclic / one-cycle training (``max_lr``): the confirmation's when there is one."""
        confirmed = self.confirmation
        return confirmed.max_lr if confirmed is not None else self._get(self.suggestion.max_lr, "max_lr")

    @property
    def bounds(self) -> tuple[float, float]:
        """``(min_lr, max_lr)``."""
        return self.min_lr, self.max_lr

    @property
    def usable(self) -> bool:
        """Whether the result gives an LR: the curve's suggestion, or a confirmation phase."""
        return self.suggestion.lr is not None or "confirmation" in self.metadata

    @property
    def smoothed(self) -> np.ndarray:
        """The smoothed losses the suggestion was read from (same length as ``losses``)."""
        return self.suggestion.smoothed

    @property
    def confidence(self) -> float:
        """How clean the swept curve is: 0 (the curve alone gives no LR) to 1 (clean curve)."""
        return self.suggestion.confidence

    @property
    def warnings(self) -> list[str]:
        """What is wrong with the curve, then what limits the confirmation, in words (a new list)."""
        confirmed = self.confirmation
        return [*self.suggestion.warnings, *([] if confirmed is None else confirmed.warnings)]

    def cyclic_lr(self, optimizer: Any, **kwargs: Any):
        """``torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=min_lr, max_lr=max_lr, **kwargs)``.

        ``cycle_momentum`` defaults to whether ``optimizer`` has momentum to cycle (see
        :func:`has_momentum`); a ``cycle_momentum=`` given wins.
        """
        from torch.optim.lr_scheduler import CyclicLR

        kwargs.setdefault("cycle_momentum", has_momentum(optimizer))
        return CyclicLR(optimizer, base_lr=self.min_lr, max_lr=self.max_lr, **kwargs)

    def one_cycle_lr(self, optimizer: Any, total_steps: int, **kwargs: Any):
        """``torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, **kwargs)``.

        ``cycle_momentum`` defaults to whether ``optimizer`` has momentum to cycle (see
        :func:`has_momentum`); a ``cycle_momentum=`` given wins.
        """
        from torch.optim.lr_scheduler import OneCycleLR

        kwargs.setdefault("cycle_momentum", has_momentum(optimizer))
        return OneCycleLR(optimizer, max_lr=self.max_lr, total_steps=total_steps, **kwargs)

    def reanalyze(self, method: str = "default", **options: Any) -> RangeTestResult:
        """The same curve read with another ``method`` (raw losses, runs and metadata kept).

        ``options``: :func:`analyze` keywords (``diverge_threshold``; default the one saved in ``metadata``).
        """
        meta = dict(self.metadata)
        options.setdefault("diverge_threshold", meta.pop("diverge_threshold", DEFAULT_THRESHOLD))
        runs = [r.copy() for r in self.runs]
        return analyze(self.lrs, self.losses, method=method, diverged=self.diverged, runs=runs, **options, **meta)

    def plot(self, ax: Any = None, path: str | os.PathLike[str] | None = None, *, all_ranks: bool = False) -> Any:
        """Plot loss against LR (log axis) with the suggestion and bounds; needs matplotlib.

        Draws on ``ax`` (a new figure when None), saves to ``path`` when given
        (under ``torch.distributed``: on rank 0 only, unless ``all_ranks=True``),
        and returns the axes.
        """
        from .plotting import plot_result

        return plot_result(self, ax=ax, path=path, all_ranks=all_ranks)

    # --- plain-data round trip -------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-safe plain data (non-finite losses become None).

        Raises ``TypeError``/``ValueError`` naming the ``metadata`` entry that JSON cannot hold
        (numpy and 0-dim tensor scalars become numbers, tuples lists, paths strings).
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "lrs": _floats(self.lrs),
            "losses": _floats(self.losses),
            "smoothed": _floats(self.smoothed),
            "method": self.method,
            "lr": self.suggestion.lr,
            "min_lr": self.suggestion.min_lr,
            "max_lr": self.suggestion.max_lr,
            "diverged": self.diverged,
            "confidence": self.confidence,
            "warnings": list(self.warnings),
            "runs": [_floats(r) for r in self.runs],
            "metadata": json_value(self.metadata, "metadata"),
        }

    @classmethod
    def from_dict(cls, data: Any) -> RangeTestResult:
        """Rebuild a result from :meth:`to_dict` output, validating every field."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a saved RangeTestResult: expected a JSON object with format {_FORMAT!r}")
        if data.get("version") != _VERSION:
            raise ValueError(
                f"unsupported RangeTestResult version {data.get('version')!r}; this library reads version {_VERSION}"
            )
        lrs = _array(data, "lrs")
        losses = _array(data, "losses")
        smoothed = _array(data, "smoothed")
        if not (len(lrs) == len(losses) == len(smoothed)):
            raise ValueError("lrs, losses and smoothed must have the same length")
        if not (np.all(np.isfinite(lrs)) and np.all(lrs > 0) and np.all(np.diff(lrs) > 0)):
            raise ValueError("saved RangeTestResult field 'lrs' must be finite, > 0 and strictly increasing")
        runs = data.get("runs", [])
        if not isinstance(runs, list):
            raise ValueError("runs must be a list of lists of numbers")
        lr, min_lr, max_lr = (_optional_float(data, key) for key in ("lr", "min_lr", "max_lr"))
        if lr is None or min_lr is None or max_lr is None:
            if (lr, min_lr, max_lr) != (None, None, None):
                raise ValueError(
                    "saved RangeTestResult fields 'lr', 'min_lr' and 'max_lr' must all be numbers or all null, "
                    f"got {lr!r}, {min_lr!r} and {max_lr!r}"
                )
        elif not min_lr <= lr <= max_lr:
            raise ValueError(
                f"saved RangeTestResult field 'lr' ({lr!r}) must lie between 'min_lr' and 'max_lr' "
                f"(min_lr <= lr <= max_lr), got min_lr={min_lr!r} and max_lr={max_lr!r}"
            )
        method = _typed(data, "method", str)
        if method not in METHODS:
            raise ValueError(
                f"saved RangeTestResult field 'method' must be one of {', '.join(map(repr, METHODS))}, got {method!r}"
            )
        suggestion = Suggestion(
            lr=lr,
            min_lr=min_lr,
            max_lr=max_lr,
            confidence=_confidence(data),
            warnings=[_typed({"warnings": w}, "warnings", str) for w in _typed(data, "warnings", list)],
            smoothed=smoothed,
            points=len(lrs),
        )
        metadata = _metadata(data)
        return cls(
            lrs=lrs,
            losses=losses,
            suggestion=suggestion,
            method=method,
            diverged=_typed(data, "diverged", bool),
            runs=[_array({"runs": r}, "runs") for r in runs],
            metadata=metadata,
        )

    def save(self, path: str | os.PathLike[str], *, all_ranks: bool = False) -> bool:
        """Write the result to ``path`` as JSON; returns whether this process wrote it.

        The file is replaced atomically (written beside it, then renamed): if
        anything fails, a file already at ``path`` is left as it was. Under
        ``torch.distributed`` with several ranks (which all hold the same
        result) only rank 0 writes, unless ``all_ranks=True``.
        """
        from ._distributed import is_rank_zero

        if not (all_ranks or is_rank_zero()):
            return False
        write_json(path, self.to_dict())
        return True

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RangeTestResult:
        """Read a result written by :meth:`save` (plain JSON: nothing is executed); a bad field raises
        ``ValueError`` naming the file and the field."""
        return from_file(cls.from_dict, path)

    def __repr__(self) -> str:
        if self.usable:
            what = f"lr={self.lr:.3g}, bounds=({self.min_lr:.3g}, {self.max_lr:.3g})"
            if self.confirmation is not None:
                what += ", confirmed"
        else:
            what = "no suggestion"
        return (
            f"RangeTestResult({what}, points={len(self.lrs)}, diverged={self.diverged}, "
            f"confidence={self.confidence:.2f}, method={self.method!r})"
        )


def analyze(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    method: str = "default",
    diverge_threshold: float = DEFAULT_THRESHOLD,
    diverged: bool | None = None,
    runs: Sequence[Sequence[float] | np.ndarray] = (),
    **metadata: Any,
) -> RangeTestResult:
    """Analyse any LR/loss curve and return a :class:`RangeTestResult`.

    The curve is read by :func:`~torch_lrrange.analysis.suggest` (cut at its
    first diverged point, smoothed, differentiated against log10(lr)); the
    result keeps the points before the cut.

    Args:
        lrs: the LR of each point (strictly increasing, > 0).
        losses: the raw loss of each point (same length).
        method: a name in :data:`~torch_lrrange.METHODS`: ``"default"``, ``"steepest"``,
            ``"valley"`` or ``"minimum"``. Default ``"default"``.
        diverge_threshold: divergence multiple of the best smoothed loss, > 1. Default 4.
        diverged: whether the sweep ended by diverging (default: whether the
            curve itself diverges; it is then cut before that point).
        runs: the raw losses of each repeat the curve averages, kept as ``result.runs``. Default none.
        **metadata: kept on the result (e.g. ``start_lr``, ``mode``).

    Example:
        >>> lrs = np.logspace(-5, 0, 100)
        >>> losses = 2 - np.tanh(np.log10(lrs) + 3) + np.exp(5 * (np.log10(lrs) + 0.5))
        >>> result = analyze(lrs, losses)
        >>> result.min_lr <= result.lr <= result.max_lr
        True
    """
    diverge_threshold = check_threshold(diverge_threshold)
    if diverged is not None and not isinstance(diverged, (bool, np.bool_)):
        raise TypeError(f"diverged must be True, False or None, got {type(diverged).__name__} {diverged!r}")
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence):
        raise TypeError(f"runs must be a list of loss sequences, got {type(runs).__name__}")
    suggestion = suggest(lrs, losses, method, threshold=diverge_threshold, diverged=bool(diverged))
    x = np.asarray(lrs, dtype=np.float64).reshape(-1)
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    n = suggestion.points
    return RangeTestResult(
        lrs=x[:n],
        losses=y[:n],
        suggestion=suggestion,
        method=method,
        diverged=bool(n < len(y)) if diverged is None else bool(diverged or n < len(y)),
        runs=[np.asarray(r, dtype=np.float64).reshape(-1) for r in runs],
        metadata=dict(metadata, diverge_threshold=diverge_threshold),
    )


def has_momentum(optimizer: Any) -> bool:
    """Whether ``optimizer`` has momentum a cyclic schedule can cycle: ``betas`` in its defaults (Adam),
    or ``momentum`` in its defaults and non-zero in a param group (SGD with momentum; not SGD without
    it, where cycling would switch momentum on, nor Adadelta, which has neither)."""
    defaults = getattr(optimizer, "defaults", {})
    if "betas" in defaults:
        return True
    return "momentum" in defaults and any(group.get("momentum", 0) != 0 for group in optimizer.param_groups)


def json_value(value: Any, where: str) -> Any:
    """``value`` as JSON-safe plain data; raises naming ``where`` (e.g. ``metadata['x']``) if it cannot be.

    numpy and one-element tensor scalars become Python numbers, tuples and arrays
    lists, paths strings; non-finite numbers and other objects are refused.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{where} is a tensor of shape {tuple(value.shape)}; JSON holds numbers and lists")
        value = value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {float(value)!r}, which JSON cannot hold (store it as None or a string)")
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}; JSON object keys must be strings")
            out[key] = json_value(item, f"{where}[{key!r}]")
        return out
    raise TypeError(f"{where} is a {type(value).__name__}, which JSON cannot hold (use numbers, strings, lists, dicts)")


def _floats(values: Any) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _typed(data: dict[str, Any], key: str, kind: Any) -> Any:
    if key not in data:
        raise ValueError(f"saved RangeTestResult lacks {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind in ((int, float), float) and isinstance(value, bool)):
        raise ValueError(f"saved RangeTestResult field {key!r} has the wrong type {type(value).__name__}")
    return value


#: Names ``reanalyze`` passes to :func:`analyze` itself, so that ``metadata`` cannot hold them.
_ANALYZE_NAMES = ("lrs", "losses", "method", "diverged", "runs")


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    """``metadata``, as :meth:`RangeTestResult.reanalyze` can take it back into :func:`analyze`."""
    metadata = _typed(data, "metadata", dict)
    for key in _ANALYZE_NAMES:
        if key in metadata:
            raise ValueError(f"saved RangeTestResult field 'metadata' cannot hold {key!r}: it is a field of its own")
    if "diverge_threshold" in metadata:
        try:
            check_threshold(metadata["diverge_threshold"])
        except (TypeError, ValueError):
            raise ValueError(
                "saved RangeTestResult field 'metadata'['diverge_threshold'] must be a finite real number > 1, "
                f"got {metadata['diverge_threshold']!r}"
            ) from None
    if "confirmation" in metadata:
        Confirmation.from_dict(metadata["confirmation"], "saved RangeTestResult field metadata['confirmation']")
    return metadata


def _confidence(data: dict[str, Any]) -> float:
    value = float(_typed(data, "confidence", (int, float)))
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"saved RangeTestResult field 'confidence' must be between 0 and 1, got {value!r}")
    return value


def _optional_float(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"saved RangeTestResult field {key!r} must be a number > 0 or null, got {value!r}")
    return float(value)


def _array(data: dict[str, Any], key: str) -> np.ndarray:
    values = _typed(data, key, list)
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        raise ValueError(f"saved RangeTestResult field {key!r} must be a list of numbers")
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
