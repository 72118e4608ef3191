"""``RangeTestResult``: the outcome of a range test as plain data."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .analysis import UnusableCurveError

__all__ = ["RangeTestResult"]

_FORMAT = "torch_lrrange.RangeTestResult"
_VERSION = 1


@dataclass
class RangeTestResult:
    """An LR range test's curve and what was read off it.

    Attributes:
        lrs: LR of each recorded point (param group 0), float64 array.
        losses: raw recorded loss of each point (the mean over repeats and
            ranks), cut before divergence.
        smoothed: the smoothed losses the suggestion was read from.
        method: the analysis method used (see :data:`torch_lrrange.METHODS`).
        diverged: whether the sweep ended by diverging.
        confidence: 0 (no usable suggestion) to 1 (clean curve).
        warnings: what is wrong with the curve, in words.
        runs: raw losses of each repeat, when there were several.
        metadata: how the sweep was run (start_lr, end_lr, num_steps, mode...).

    ``lr`` (constant-LR training), ``min_lr`` and ``max_lr`` (cyclic training,
    ``min_lr <= lr <= max_lr``) raise :class:`UnusableCurveError` when the curve
    supports no suggestion, rather than return a confident-looking number.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    method: str = "default"
    suggested_lr: float | None = None
    suggested_min_lr: float | None = None
    suggested_max_lr: float | None = None
    diverged: bool = False
    confidence: float = 0.0
    warnings: list[str] = field(default_factory=list)
    runs: list[np.ndarray] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def _get(self, value: float | None, name: str) -> float:
        if value is None:
            reasons = "; ".join(self.warnings) or "no suggestion was computed"
            raise UnusableCurveError(f"this curve gives no {name}: {reasons}")
        return value

    @property
    def lr(self) -> float:
        """A single LR for constant-LR training."""
        return self._get(self.suggested_lr, "lr")

    @property
    def min_lr(self) -> float:
        """Lower bound for cyclic training (CyclicLR's ``base_lr``)."""
        return self._get(self.suggested_min_lr, "min_lr")

    @property
    def max_lr(self) -> float:
        """Upper bound for cyclic / one-cycle training (``max_lr``)."""
        return self._get(self.suggested_max_lr, "max_lr")

    @property
    def bounds(self) -> tuple[float, float]:
        """``(min_lr, max_lr)``."""
        return self.min_lr, self.max_lr

    @property
    def usable(self) -> bool:
        """Whether the curve gave a suggestion."""
        return self.suggested_lr is not None

    def cyclic_lr(self, optimizer: Any, **kwargs: Any):
        """``torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=min_lr, max_lr=max_lr, **kwargs)``."""
        from torch.optim.lr_scheduler import CyclicLR

        return CyclicLR(optimizer, base_lr=self.min_lr, max_lr=self.max_lr, **kwargs)

    def one_cycle_lr(self, optimizer: Any, total_steps: int, **kwargs: Any):
        """``torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, **kwargs)``."""
        from torch.optim.lr_scheduler import OneCycleLR

        return OneCycleLR(optimizer, max_lr=self.max_lr, total_steps=total_steps, **kwargs)

    def reanalyze(self, method: str = "default", **options: Any) -> RangeTestResult:
        """The same curve read with another ``method`` (raw losses, runs and metadata kept)."""
        from .analysis import analyze

        meta = dict(self.metadata)
        meta.pop("diverge_threshold", None)
        options.setdefault("diverge_threshold", self.metadata.get("diverge_threshold", 4.0))
        result = analyze(self.lrs, self.losses, method=method, diverged=self.diverged, **options, **meta)
        result.runs = [r.copy() for r in self.runs]
        return result

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
        """The result as JSON-safe plain data (non-finite numbers become None)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "lrs": _floats(self.lrs),
            "losses": _floats(self.losses),
            "smoothed": _floats(self.smoothed),
            "method": self.method,
            "lr": self.suggested_lr,
            "min_lr": self.suggested_min_lr,
            "max_lr": self.suggested_max_lr,
            "diverged": self.diverged,
            "confidence": self.confidence,
            "warnings": list(self.warnings),
            "runs": [_floats(r) for r in self.runs],
            "metadata": json.loads(json.dumps(self.metadata, default=str, allow_nan=False)),
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
        return cls(
            lrs=lrs,
            losses=losses,
            smoothed=smoothed,
            method=_typed(data, "method", str),
            suggested_lr=_optional_float(data, "lr"),
            suggested_min_lr=_optional_float(data, "min_lr"),
            suggested_max_lr=_optional_float(data, "max_lr"),
            diverged=_typed(data, "diverged", bool),
            confidence=_confidence(data),
            warnings=[_typed({"warnings": w}, "warnings", str) for w in _typed(data, "warnings", list)],
            runs=[_array({"runs": r}, "runs") for r in runs],
            metadata=_typed(data, "metadata", dict),
        )

    def save(self, path: str | os.PathLike[str], *, all_ranks: bool = False) -> bool:
        """Write the result to ``path`` as JSON; returns whether this process wrote it.

        Under ``torch.distributed`` with several ranks (which all hold the same
        result) only rank 0 writes, unless ``all_ranks=True``.
        """
        from .distributed import is_rank_zero

        if not (all_ranks or is_rank_zero()):
            return False
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1, allow_nan=False)
        return True

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RangeTestResult:
        """Read a result written by :meth:`save` (plain JSON: nothing is executed)."""
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f, parse_constant=_reject_constant)
            except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, NaN/Infinity, absurd nesting
                raise ValueError(f"{os.fspath(path)} is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def __repr__(self) -> str:
        if self.usable:
            what = f"lr={self.suggested_lr:.3g}, bounds=({self.suggested_min_lr:.3g}, {self.suggested_max_lr:.3g})"
        else:
            what = "no suggestion"
        return f"RangeTestResult({what}, points={len(self.lrs)}, diverged={self.diverged}, confidence={self.confidence:.2f}, method={self.method!r})"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed (save() writes non-finite numbers as null)")


def _floats(values: Any) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _typed(data: dict[str, Any], key: str, kind: Any) -> Any:
    if key not in data:
        raise ValueError(f"saved RangeTestResult lacks {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind in ((int, float), float) and isinstance(value, bool)):
        raise ValueError(f"saved RangeTestResult field {key!r} has the wrong type {type(value).__name__}")
    return value


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
