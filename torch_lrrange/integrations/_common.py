"""What the trainer integrations share: option checks made before any state is touched, and
which suggested LR a schedule needs."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .._checks import keyword_options
from .._range_test import RangeTest
from .._result import RangeTestResult
from ..analysis import UnusableCurveError

__all__ = ["check_options", "per_group_range", "suggestion"]


def check_options(options: dict[str, Any], caller: str) -> None:
    """Refuse unknown :class:`RangeTest` keywords and bad values before the trainer is touched.

    The values go through RangeTest's own checks on a stand-in model and optimizer (with as
    many param groups as a per-group ``start_lr``/``end_lr`` list names); ``hyperparams``
    depends on the real optimizer's groups and is checked once the trainer has built it.
    """
    allowed = keyword_options(RangeTest)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{caller}() got unknown option(s) {', '.join(unknown)}; the options are {', '.join(allowed)}")
    sizes = [len(v) for k in ("start_lr", "end_lr") if isinstance(v := options.get(k), (list, tuple))]
    groups = [{"params": [nn.Parameter(torch.zeros(1))]} for _ in range(max([1, *sizes]))]
    stand_in = torch.optim.SGD(groups, lr=1.0)
    RangeTest(nn.Identity(), stand_in, **{k: v for k, v in options.items() if k != "hyperparams"})


def per_group_range(optimizer: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with one ``start_lr``/``end_lr`` per param group when the groups' current LRs
    cannot give their ratios (a warm-up from 0 or a finished decay leaves them at 0): the ratios of the
    LRs the schedule started from (``initial_lr``), or 1."""
    groups = optimizer.param_groups
    if isinstance(options.get("start_lr"), (list, tuple)) or isinstance(options.get("end_lr"), (list, tuple)):
        return options
    if all(float(g["lr"]) > 0 for g in groups):
        return options
    initial = [float(g.get("initial_lr", 0.0)) for g in groups]
    ratios = [i / initial[0] for i in initial] if initial[0] > 0 else [1.0] * len(groups)
    defaults = inspect.signature(RangeTest).parameters
    start = options.get("start_lr", defaults["start_lr"].default)
    end = options.get("end_lr", defaults["end_lr"].default)
    return {**options, "start_lr": [start * r for r in ratios], "end_lr": [end * r for r in ratios]}


def suggestion(result: RangeTestResult, constant: bool) -> tuple[float, str] | None:
    """``(result.lr, "lr")`` for a constant schedule, ``(result.max_lr, "max_lr")`` for one that
    warms up or decays; None when the curve gives no suggestion."""
    name = "lr" if constant else "max_lr"
    try:
        return getattr(result, name), name
    except UnusableCurveError:
        return None
