"""Argument checks shared by the public API.

Every check raises before any state is touched, with a message that names the
argument, says what is allowed and shows what was given (einops style).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

MODES = ("exp", "linear")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float; it must be a finite real number > 0 (or >= 0)."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number {bound}, got {type(value).__name__} {_shown(value)}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite real number {bound}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value``; it must be an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {_shown(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value``; it must be one of ``choices``."""
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed}, got {type(value).__name__} {_shown(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_lr_range(start_lr: Any, end_lr: Any, num_groups: int | None = None) -> tuple[list[float], list[float]]:
    """Check ``start_lr``/``end_lr`` (floats, or one per param group) and return per-group lists.

    With ``num_groups=None`` a list is accepted at any length; scalars come back
    as one-element lists. With both scalars, the caller applies group ratios.
    """
    starts = _per_group("start_lr", start_lr, num_groups)
    ends = _per_group("end_lr", end_lr, num_groups)
    if len(starts) != len(ends) and len(starts) > 1 and len(ends) > 1:
        raise ValueError(f"start_lr and end_lr must have the same length, got {len(starts)} and {len(ends)}")
    n = max(len(starts), len(ends))
    starts = starts * n if len(starts) == 1 else starts
    ends = ends * n if len(ends) == 1 else ends
    for i, (s, e) in enumerate(zip(starts, ends)):
        if not e > s:
            where = "" if n == 1 else f" (param group {i})"
            raise ValueError(f"end_lr must be > start_lr{where}, got start_lr={s!r} and end_lr={e!r}")
    return starts, ends


def _per_group(name: str, value: Any, num_groups: int | None) -> list[float]:
    if isinstance(value, (list, tuple)):
        if num_groups is not None and len(value) != num_groups:
            raise ValueError(
                f"{name} must be a float or a list of {num_groups} floats (one per param group), "
                f"got a {type(value).__name__} of {len(value)}"
            )
        if len(value) == 0:
            raise ValueError(
                f"{name} must be a float or a non-empty list of floats, got an empty {type(value).__name__}"
            )
        return [check_positive_float(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check_positive_float(name, value)]


def check_optimizer(optimizer: Any, name: str = "optimizer") -> None:
    """Accept anything optimizer-shaped: ``param_groups``, ``state_dict``, ``load_state_dict``."""
    missing = [a for a in ("param_groups", "state_dict", "load_state_dict") if not hasattr(optimizer, a)]
    if missing:
        raise TypeError(
            f"{name} must be a torch optimizer or an object with param_groups, state_dict() and "
            f"load_state_dict(); {type(optimizer).__name__} lacks {', '.join(missing)}"
        )
    groups = optimizer.param_groups
    if (
        not isinstance(groups, (list, tuple))
        or not groups
        or not all(isinstance(g, dict) and "lr" in g for g in groups)
    ):
        raise TypeError(f"{name}.param_groups must be a non-empty list of dicts that each hold an 'lr'")


def check_stateful(name: str, value: Any) -> None:
    """An extra object must have ``state_dict()`` and ``load_state_dict()``."""
    if not (callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None))):
        raise TypeError(
            f"{name} must have state_dict() and load_state_dict() (a GradScaler, an LR scheduler, an EMA...), "
            f"got {type(value).__name__}"
        )
