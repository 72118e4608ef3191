"""``range_test_grid``: LR range tests at several values of other hyperparameters, and the value to keep.

Smith ("A disciplined approach to neural network hyper-parameters", arXiv
1803.09820, sections 4.3 and 4.4) reads momentum and weight decay off the same
short sweeps as the LR: run the LR range test at a few values of the
hyperparameter, overlay the curves, and keep the value whose curve reaches the
lowest loss and stays stable to the largest LR. :func:`range_test_grid` runs
those sweeps, every one from the same snapshot; :func:`choose` is the reading,
a pure function of the curves; :class:`GridResult` holds the outcome as plain data.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _distributed as distributed
from ._checks import as_float, check_bool, check_optimizer, check_positive_float
from ._files import from_file, write_json
from ._hyperparams import (
    RESERVED_GROUP_KEYS,
    check_hyperparams,
    format_value,
    grid_combinations,
    hyperparam_groups,
    set_hyperparams,
)
from ._one_call import LossFn, range_test
from ._result import RangeTestResult, analyze
from ._snapshot import SnapshotError
from .analysis import UnusableCurveError

__all__ = [
    "LEVEL_FRACTION",
    "LOSS_TOLERANCE",
    "STABILITY_MARGIN",
    "GridResult",
    "choose",
    "lowest_loss",
    "range_test_grid",
]

logger = logging.getLogger("torch_lrrange")

_FORMAT = "torch_lrrange.GridResult"
_VERSION = 1

#: Curves whose lowest loss lies within this fraction of the descent (start level
#: to the lowest loss of all curves) of the lowest are tied on loss: on a
#: range-test plot such differences do not show.
LOSS_TOLERANCE = 0.05
#: A curve counts as stable to a larger LR than another when its ``max_lr`` is at
#: least this factor (half a decade) larger: a smaller gap is within the noise of
#: reading a single curve.
STABILITY_MARGIN = math.sqrt(10.0)
#: Loss levels are moving averages of the raw losses over this fraction of a curve's points.
LEVEL_FRACTION = 0.1


def _levels(result: RangeTestResult) -> np.ndarray:
    """Moving averages of the finite raw losses over ``LEVEL_FRACTION`` of the points (empty without points)."""
    losses = np.asarray(result.losses, dtype=np.float64)
    losses = losses[np.isfinite(losses)]
    if not losses.size:
        return losses
    window = max(1, round(LEVEL_FRACTION * losses.size))
    return np.convolve(losses, np.full(window, 1.0 / window), mode="valid")


def lowest_loss(result: RangeTestResult) -> float:
    """The lowest level a curve reaches: the minimum of the moving average of its raw losses.

    The average runs over a tenth of the curve's points (:data:`LEVEL_FRACTION`).
    Its weights are all positive, so, unlike a fitted smoothing, it never dips
    below the losses just before a blow-up. nan for a curve without points.
    """
    levels = _levels(result)
    return float(levels.min()) if levels.size else math.nan


def choose(
    results: Sequence[RangeTestResult],
    *,
    prefer: int | None = None,
    tolerance: float = LOSS_TOLERANCE,
    labels: Sequence[str] | None = None,
) -> int:
    """Index of the curve Smith's reading keeps: the lowest loss, then stable to a larger LR.

    1. Only usable curves (``result.usable``) compete.
    2. Those whose :func:`lowest_loss` is within ``tolerance`` times the descent
       of the lowest one (from the median starting level of the curves, the
       mean of their first tenth of points, to the lowest loss of all) are tied
       on loss: on a range-test plot such differences do not show.
    3. Among the tied curves the reference is ``prefer`` (the optimizer's own
       setting) if it is one of them, else the one with the lowest loss.
    4. A tied curve replaces the reference only if it stays stable to a
       clearly larger LR: a ``max_lr`` at least :data:`STABILITY_MARGIN` (half a
       decade) above the reference's, beyond the noise of reading one curve;
       the largest such ``max_lr`` wins.

    The curves must share one LR axis (the same sweep settings) to be compared.

    Args:
        results: the curves, e.g. ``RangeTestResult`` from ``range_test`` or ``analyze``.
        prefer: index of the curve of the current setting, kept unless another is
            clearly better. Default None.
        tolerance: fraction of the descent within which losses tie, float >= 0. Default
            :data:`LOSS_TOLERANCE` (0.05).
        labels: names of the curves for the error message. Default their indices.

    Raises:
        UnusableCurveError: when no curve is usable.

    Example:
        >>> from torch_lrrange import analyze
        >>> lrs = np.logspace(-5, 0, 100)
        >>> x = np.log10(lrs)
        >>> early = analyze(lrs, 2 - np.tanh(x + 3) + np.exp(5 * (x + 1.5)))
        >>> late = analyze(lrs, 2 - np.tanh(x + 3) + np.exp(5 * (x + 0.5)))
        >>> choose([early, late])
        1
    """
    tolerance = check_positive_float("tolerance", tolerance, allow_zero=True)
    names = [str(i) for i in range(len(results))] if labels is None else [str(name) for name in labels]
    if len(names) != len(results):
        raise ValueError(f"labels must name each of the {len(results)} curves, got {len(names)} labels")
    if prefer is not None and not (isinstance(prefer, int) and 0 <= prefer < len(results)):
        raise ValueError(f"prefer must be None or an index into the {len(results)} curves, got {prefer!r}")
    usable = [i for i, r in enumerate(results) if r.usable]
    if not usable:
        reasons = "; ".join(f"{names[i]}: {_reason(r)}" for i, r in enumerate(results)) or "no curve was given"
        raise UnusableCurveError(f"no usable curve to choose from ({reasons})")
    levels = {i: _levels(results[i]) for i in usable}
    lows = {i: float(levels[i].min()) for i in usable}
    best = min(lows.values())
    start = float(np.median([levels[i][0] for i in usable]))
    tied = [i for i in usable if lows[i] <= best + tolerance * max(start - best, 0.0)]
    reference = prefer if prefer in tied else min(tied, key=lambda i: (lows[i], i))
    steadier = [i for i in tied if results[i].max_lr >= STABILITY_MARGIN * results[reference].max_lr]
    if not steadier:
        return reference
    return max(steadier, key=lambda i: (results[i].max_lr, -lows[i], -i))


def _confirmed_loss(result: RangeTestResult) -> float | None:
    """The lowest finite score of a result's confirmation runs (``range_test(confirm=)``); None without them."""
    info = result.metadata.get("confirmation")
    scores = info.get("scores", ()) if isinstance(info, Mapping) else ()
    finite = [float(v) for v in scores if v is not None and math.isfinite(v)]
    return min(finite) if finite else None


def _reason(result: RangeTestResult) -> str:
    error = result.metadata.get("error")
    if error is not None:
        return f"the sweep failed: {error}"
    return "; ".join(result.warnings) or "no suggestion"


# --- the result -----------------------------------------------------------------------


@dataclass
class GridResult:
    """The range tests of a grid of hyperparameter values, and the values Smith's reading keeps.

    Attributes:
        keys: the hyperparameter names (param-group keys), in grid order.
        results: ``{values: RangeTestResult}``, one per combination, in grid
            order (the last key varies fastest); ``values`` is a tuple with one
            value per key (a ``betas`` value is itself a tuple). A sweep that
            raised is kept as a curve without points, its error in
            ``result.metadata["error"]``; it is never chosen.
        fixed: hyperparameters held at one value in every sweep (``hyperparams=``).
        current: the optimizer's own values of ``keys`` before the grid, in the param groups
            the grid sets (None when those disagree); when they are one of the combinations,
            that curve is kept unless another is clearly better (see :func:`choose`).
        keep_zero_groups: whether param groups holding 0 for a key were left alone (the
            no-decay groups; see :class:`~torch_lrrange.RangeTest`); :meth:`apply` does the same.

    Example:
        >>> from torch_lrrange import analyze
        >>> lrs = np.logspace(-5, 0, 100)
        >>> x = np.log10(lrs)
        >>> curve = lambda end: analyze(lrs, 2 - np.tanh(x + 3) + np.exp(5 * (x - end)))
        >>> grid = GridResult(("weight_decay",), {(0.0,): curve(-1.5), (1e-4,): curve(-0.5)})
        >>> grid.best[0]
        {'weight_decay': 0.0001}
        >>> opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        >>> _ = grid.apply(opt)  # the chosen weight decay, and the lr of its curve
        >>> opt.param_groups[0]["weight_decay"], opt.param_groups[0]["lr"] == grid.best[1].lr
        (0.0001, True)
    """

    keys: tuple[str, ...]
    results: dict[tuple[Any, ...], RangeTestResult]
    fixed: dict[str, Any] = field(default_factory=dict)
    current: tuple[Any, ...] | None = None
    keep_zero_groups: bool = True

    @property
    def best_index(self) -> int:
        """Position of the chosen combination in :attr:`results` (see :func:`choose`)."""
        order = list(self.results)
        return choose(
            list(self.results.values()),
            prefer=order.index(self.current) if self.current in self.results else None,
            labels=[self._label(v) for v in order],
        )

    @property
    def best(self) -> tuple[dict[str, Any], RangeTestResult]:
        """``({key: value}, result)`` of the chosen combination; raises ``UnusableCurveError`` if none is usable."""
        values = list(self.results)[self.best_index]
        return dict(zip(self.keys, values)), self.results[values]

    def reason(self, values: tuple[Any, ...]) -> str | None:
        """Why the combination ``values`` gives no suggestion (its error or its curve's warnings); None if usable."""
        result = self.results[values]
        return None if result.usable else _reason(result)

    def apply(self, optimizer: Any) -> dict[str, Any]:
        """Set the chosen hyperparameters (and the fixed ones) and ``result.lr`` in the param groups.

        As in the sweeps, a param group holding 0 for a key keeps it (the no-decay groups),
        unless every group holds 0 or the grid ran with ``keep_zero_groups=False``; every
        group gets the LR. Param groups keep their LR ratios to group 0, as during the sweep: group
        ``i`` gets ``result.lr * lr_i / lr_0`` (for one-cycle training use
        ``result.one_cycle_lr`` instead of the LR set here). Everything is
        checked before anything changes. Returns what was set, ``lr`` included.
        """
        check_optimizer(optimizer)
        chosen, result = self.best
        hyperparams = check_hyperparams({**self.fixed, **chosen}, optimizer)
        current = [as_float(g["lr"]) for g in optimizer.param_groups]
        if not (all(math.isfinite(lr) and lr >= 0 for lr in current) and current[0] > 0):
            raise ValueError(
                f"apply() keeps the param groups' LR ratios to group 0, so group 0's LR must be > 0 and every "
                f"LR finite and >= 0, got {current}"
            )
        lr = result.lr
        set_hyperparams(optimizer, hyperparams, hyperparam_groups(optimizer, hyperparams, self.keep_zero_groups))
        for group, group_lr in zip(optimizer.param_groups, current):
            value = lr if group_lr == current[0] else lr * group_lr / current[0]
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value
        return {**hyperparams, "lr": lr}

    # --- reading and plotting -------------------------------------------------------

    def _label(self, values: tuple[Any, ...]) -> str:
        return ", ".join(f"{key}={format_value(v)}" for key, v in zip(self.keys, values))

    def table(self) -> str:
        """One line per combination: values, lr, min_lr, max_lr, lowest loss (:func:`lowest_loss`), confidence.

        The chosen line is marked ``*`` and the optimizer's own setting ``(current)``;
        an unusable line gives its reason instead. When the sweeps ran with
        ``confirm=``, a last column gives each value's best confirmation-run loss
        (training, or validation with a ``val_loader``): what the short runs measured.
        """
        try:
            chosen: int | None = self.best_index
        except UnusableCurveError:
            chosen = None
        cells = [[format_value(v) for v in values] for values in self.results]
        widths = [max([len(k)] + [len(c[j]) for c in cells]) for j, k in enumerate(self.keys)]
        head = "  ".join(k.ljust(w) for k, w in zip(self.keys, widths))
        confirmed = [_confirmed_loss(r) for r in self.results.values()]
        shown = any(v is not None for v in confirmed)
        lines = [
            f"  {head}  {'lr':>9}  {'min_lr':>9}  {'max_lr':>9}  {'lowest loss':>11}  confidence"
            + ("  confirmed loss" if shown else "")
        ]
        for i, (values, result) in enumerate(self.results.items()):
            row = "  ".join(c.ljust(w) for c, w in zip(cells[i], widths))
            if result.usable:
                row += (
                    f"  {result.lr:9.3g}  {result.min_lr:9.3g}  {result.max_lr:9.3g}"
                    f"  {lowest_loss(result):11.4g}  {result.confidence:10.2f}"
                )
                if shown:
                    row += f"  {'-' if confirmed[i] is None else format(confirmed[i], '.4g'):>14}"
            else:
                row += f"  no suggestion: {self.reason(values)}"
            if values == self.current:
                row += "  (current)"
            lines.append(("* " if i == chosen else "  ") + row)
        if chosen is None:
            lines.append("no combination gives a usable curve")
        return "\n".join(lines)

    def plot(self, ax: Any = None, path: str | os.PathLike[str] | None = None, *, all_ranks: bool = False) -> Any:
        """Overlay the smoothed curves, the chosen one marked; needs matplotlib.

        Draws on ``ax`` (a new figure when None), saves to ``path`` when given
        (under ``torch.distributed``: on rank 0 only, unless ``all_ranks=True``),
        and returns the axes.
        """
        from .plotting import plot_grid

        try:
            chosen: int | None = self.best_index
        except UnusableCurveError:
            chosen = None
        return plot_grid(
            list(self.results.values()),
            [self._label(v) for v in self.results],
            chosen,
            ax=ax,
            path=path,
            all_ranks=all_ranks,
        )

    def __repr__(self) -> str:
        try:
            values, result = self.best
            what = f"best {self._label(tuple(values.values()))}, lr={result.lr:.3g}"
        except UnusableCurveError:
            what = "no usable curve"
        return f"GridResult({what}, {len(self.results)} combinations of {', '.join(self.keys)})"

    # --- plain-data round trip ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON-safe plain data (tuples become lists; :meth:`from_dict` turns them back)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "keys": list(self.keys),
            "fixed": {k: _listed(v) for k, v in self.fixed.items()},
            "current": None if self.current is None else _listed(self.current),
            "entries": [{"values": _listed(values), "result": r.to_dict()} for values, r in self.results.items()],
            "keep_zero_groups": self.keep_zero_groups,
        }

    @classmethod
    def from_dict(cls, data: Any) -> GridResult:
        """Rebuild a grid from :meth:`to_dict` output, validating every field."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a saved GridResult: expected a JSON object with format {_FORMAT!r}")
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported GridResult version {data.get('version')!r}; this library reads {_VERSION}")
        keys = data.get("keys")
        if (
            not isinstance(keys, list)
            or not keys
            or not all(isinstance(k, str) for k in keys)
            or len(set(keys)) < len(keys)
        ):
            raise ValueError("saved GridResult field 'keys' must be a non-empty list of distinct strings")
        for key in keys:
            if key in RESERVED_GROUP_KEYS:
                raise ValueError(f"saved GridResult field 'keys' cannot hold {key!r}: it is not a grid hyperparameter")
        fixed = data.get("fixed", {})
        if not isinstance(fixed, dict):
            raise ValueError("saved GridResult field 'fixed' must be an object")
        for key, value in fixed.items():
            if key in RESERVED_GROUP_KEYS:
                raise ValueError(f"saved GridResult field 'fixed' cannot hold {key!r}: it is not a hyperparameter")
            if key in keys:
                raise ValueError(f"saved GridResult field 'fixed' holds {key!r}, one of the grid's keys")
            _saved_value(f"'fixed'[{key!r}]", value)
        entries = data.get("entries")
        if not isinstance(entries, list) or not entries:
            raise ValueError("saved GridResult field 'entries' must be a non-empty list")
        results: dict[tuple[Any, ...], RangeTestResult] = {}
        for i, entry in enumerate(entries):
            values = entry.get("values") if isinstance(entry, dict) else None
            if not isinstance(values, list) or len(values) != len(keys):
                raise ValueError(f"saved GridResult entries[{i}] must hold 'values', a list of {len(keys)} values")
            for j, value in enumerate(values):
                _saved_value(f"entries[{i}] 'values'[{j}]", value)
            values = tuple(_tupled(v) for v in values)
            if values in results:
                raise ValueError(f"saved GridResult entries[{i}] repeats the values {values!r}")
            results[values] = RangeTestResult.from_dict(entry.get("result"))
        current = data.get("current")
        if current is not None and (not isinstance(current, list) or len(current) != len(keys)):
            raise ValueError(f"saved GridResult field 'current' must be null or a list of {len(keys)} values")
        for j, value in enumerate(current or ()):
            _saved_value(f"'current'[{j}]", value)
        keep_zero_groups = data.get("keep_zero_groups", True)  # absent in files of earlier versions
        if not isinstance(keep_zero_groups, bool):
            raise ValueError(
                f"saved GridResult field 'keep_zero_groups' must be true or false, got {keep_zero_groups!r}"
            )
        return cls(
            tuple(keys),
            results,
            {k: _tupled(v) for k, v in fixed.items()},
            None if current is None else tuple(_tupled(v) for v in current),
            keep_zero_groups,
        )

    def save(self, path: str | os.PathLike[str], *, all_ranks: bool = False) -> bool:
        """Write the grid to ``path`` as JSON; returns whether this process wrote it.

        The file is replaced atomically: if anything fails, a file already at
        ``path`` is left as it was. Under ``torch.distributed`` (every rank holds
        the same grid) only rank 0 writes, unless ``all_ranks=True``.
        """
        if not (all_ranks or distributed.is_rank_zero()):
            return False
        write_json(path, self.to_dict())
        return True

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GridResult:
        """Read a grid written by :meth:`save` (plain JSON: nothing is executed); a bad field raises
        ``ValueError`` naming the file and the field."""
        return from_file(cls.from_dict, path)


def _saved_value(where: str, value: Any) -> None:
    """A saved hyperparameter value must be what a grid holds: a number, true/false, or a list of numbers."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    numbers = (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not (number or numbers or isinstance(value, bool)):
        raise ValueError(
            f"saved GridResult field {where} must be a number, true/false or a list of numbers (a tuple such as "
            f"betas), got {type(value).__name__} {value!r:.60}"
        )


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


# --- running the grid --------------------------------------------------------------------


def _current(optimizer: Any, keys: tuple[str, ...], keep_zero_groups: bool) -> tuple[Any, ...] | None:
    """The optimizer's values of ``keys``, checked like grid values; None unless the param groups the grid
    sets agree."""
    values = []
    for key, indices in hyperparam_groups(optimizer, keys, keep_zero_groups).items():
        groups = [optimizer.param_groups[i] for i in indices]
        held = [check_hyperparams({key: group[key]}, optimizer)[key] for group in groups]
        if any(v != held[0] for v in held):
            return None
        values.append(held[0])
    return tuple(values)


def _agreed(grid: GridResult, process_group: Any) -> GridResult:
    """Rank 0's grid on every rank (one broadcast), so that all ranks hold the same ``GridResult``."""
    rank, world_size = distributed.world(process_group)
    if world_size == 1:
        return grid
    import torch.distributed as dist

    payload = [grid.to_dict() if rank == 0 else None]
    source = 0 if process_group is None else dist.get_global_rank(process_group, 0)
    dist.broadcast_object_list(payload, src=source, group=process_group)
    return GridResult.from_dict(payload[0])


def range_test_grid(
    model: nn.Module,
    optimizer: Any,
    loader: Iterable[Any],
    loss_fn: LossFn,
    *,
    grid: Mapping[str, Sequence[Any]],
    **options: Any,
) -> GridResult:
    """An LR range test at every combination of ``grid``'s values, each from the same snapshot.

    Each combination is one :func:`~torch_lrrange.range_test` with those
    values held in every param group (``hyperparams=``), so each sweep starts
    from the model, optimizer, extra state and RNG states as they were; a
    DataLoader's own shuffling generator (``generator=``) is put back before
    each sweep, so every curve sees the same batches, and after the grid. A
    sweep that raises an exception (after its first training step) is kept
    with its error, with a warning, and the grid goes on; an exception before
    any training step (bad input), a ``KeyboardInterrupt`` or a failed
    restore propagates, with everything restored. Under ``torch.distributed``
    every rank runs every sweep and returns the same ``GridResult``.

    Args:
        model, optimizer, loader, loss_fn: as for :func:`~torch_lrrange.range_test`.
        grid: param-group key -> list of values, e.g. ``{"weight_decay": [0, 1e-4, 1e-3]}``;
            a ``betas`` value is a tuple: ``{"betas": [(0.9, 0.999), (0.95, 0.999)]}``.
            With several keys, every combination (``itertools.product``, keys in
            the dict's order). Checked against the optimizer before anything runs. A param
            group holding 0 for a key keeps it (the no-decay groups of biases and norms),
            unless every group holds 0; ``keep_zero_groups=False`` sets every group.
        **options: :func:`~torch_lrrange.range_test` and :class:`~torch_lrrange.RangeTest`
            keywords, the same for every sweep (``num_steps``, ``start_lr``, ...);
            ``hyperparams`` holds other keys fixed in every sweep. ``confirm`` is off unless
            given (``confirm=True`` confirms each combination's LR at its own held values,
            ``6 * 100`` more optimizer steps each): the value is picked by the curves either way.

    Returns:
        a :class:`GridResult`: ``best``, ``results``, ``table()``, ``plot()``, ``apply()``, ``save()``.

    Example:
        >>> from torch.nn import functional as F
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> w = torch.randn(8, 3)  # a learnable task: labels from a linear map
        >>> data = [(x, (x @ w).argmax(1)) for x in torch.randn(10, 32, 8)]
        >>> grid = range_test_grid(model, opt, data, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        ...                        grid={"weight_decay": [0, 1e-3, 1e-1]}, num_steps=60, progress=False)
        >>> list(grid.results)
        [(0,), (0.001,), (0.1,)]
        >>> values, result = grid.best  # ({"weight_decay": ...}, the RangeTestResult of that sweep)
    """
    check_optimizer(optimizer)
    options.setdefault("confirm", False)  # the pick is the curves'; confirming every value costs 7 sweeps each
    fixed = check_hyperparams(options.pop("hyperparams", None), optimizer)
    keys, combinations = grid_combinations(grid, optimizer, fixed)
    if len(combinations) > 1 and isinstance(loader, Iterator):
        raise ValueError(
            "range_test_grid needs a re-iterable loader (a DataLoader, a list): every sweep starts over from the "
            f"same batches, and a one-shot {type(loader).__name__} would give each combination other data"
        )
    keep_zero_groups = check_bool("keep_zero_groups", options.get("keep_zero_groups", True))
    try:
        current = _current(optimizer, keys, keep_zero_groups)
    except (TypeError, ValueError):  # the optimizer holds a value a grid could not (None, out of range)
        current = None
    steps = 0

    def counted(m: nn.Module, batch: Any) -> torch.Tensor:
        nonlocal steps
        steps += 1
        return loss_fn(m, batch)

    results: dict[tuple[Any, ...], RangeTestResult] = {}
    for n, values in enumerate(combinations, 1):
        hyperparams = {**fixed, **dict(zip(keys, values))}
        label = ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values))
        logger.info("grid sweep %d/%d: %s", n, len(combinations), label)
        steps = 0
        try:
            results[values] = range_test(model, optimizer, loader, counted, hyperparams=hyperparams, **options)
        except SnapshotError:
            raise
        except Exception as err:
            if steps == 0:  # nothing trained yet: bad input, the same for every combination
                raise
            error = f"{type(err).__name__}: {err}"
            warnings.warn(f"range_test_grid: the sweep at {label} failed: {error}", UserWarning, stacklevel=2)
            results[values] = analyze(np.zeros(0), np.zeros(0), hyperparams=hyperparams, error=error)
    return _agreed(GridResult(keys, results, fixed, current, keep_zero_groups), options.get("process_group"))
