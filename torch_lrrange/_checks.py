"""Argument checks shared by the public API.

Every check raises before any state is touched, with a message that names the
argument, says what is allowed and shows what was given (einops style).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

MODES = ("exp", "linear")
#: Most points a sweep may have: its LR table is precomputed (8 bytes per point and param group).
MAX_STEPS = 10_000_000


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def scalar(value: Any) -> Any:
    """A one-element tensor or a 0-d numpy array as a Python number (read once, off any hot path); else ``value``.

    numpy scalars (``np.float32(1e-3)``) pass through: they are ``numbers.Real`` already.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return value.item()
    return value


def check_real(name: str, value: Any) -> float:
    """Return ``value`` (a real number, numpy scalar or one-element tensor; not a bool) as a float."""
    value = scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {short_repr(value)}")
    return float(value)


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float; it must be a finite real number > 0 (or >= 0).

    A numpy scalar or a one-element tensor is accepted and read as a Python float.
    """
    bound = ">= 0" if allow_zero else "> 0"
    value = scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number {bound}, got {type(value).__name__} {short_repr(value)}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite real number {bound}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int; it must be an integer (not a bool) >= ``minimum`` (and <= ``maximum``).

    numpy integers and one-element integer tensors are accepted.
    """
    value = scalar(value)
    allowed = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {short_repr(value)}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_num_steps(value: Any) -> int:
    """``num_steps``: an int in [2, :data:`MAX_STEPS`]."""
    return check_int("num_steps", value, minimum=2, maximum=MAX_STEPS)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value``; it must be one of ``choices``."""
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {allowed}, got {type(value).__name__} {short_repr(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_threshold(value: Any, name: str = "diverge_threshold") -> float:
    """Return ``value`` as a float; it must be a finite real number > 1 (a multiple of the best loss)."""
    try:
        threshold = check_positive_float(name, value)
    except ValueError:
        threshold = math.nan
    if not threshold > 1:
        raise ValueError(f"{name} must be a finite real number > 1, got {value!r}")
    return threshold


def check_loader(name: str, value: Any) -> None:
    """``value`` must be an iterable of batches (or indexable, like a Dataset), not a string."""
    if isinstance(value, (str, bytes)) or not (isinstance(value, Iterable) or hasattr(value, "__getitem__")):
        raise TypeError(f"{name} must be an iterable of batches (a DataLoader, a list...), got {type(value).__name__}")


def keyword_options(*functions: Callable[..., Any]) -> list[str]:
    """Names of the keyword-only parameters of ``functions`` (of a class: its ``__init__``), in order, once each."""
    names: list[str] = []
    for function in functions:
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.name not in names:
                names.append(parameter.name)
    return names


def is_per_group(start_lr: Any, end_lr: Any) -> bool:
    """Whether ``start_lr``/``end_lr`` give one value per param group (a list or tuple) rather than one sweep."""
    return isinstance(start_lr, (list, tuple)) or isinstance(end_lr, (list, tuple))


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
        where = "" if n == 1 else f" (param group {i})"
        if not e > s:
            raise ValueError(f"end_lr must be > start_lr{where}, got start_lr={s!r} and end_lr={e!r}")
        if not math.isfinite(e / s):
            raise ValueError(
                f"end_lr / start_lr{where} must be a finite ratio, got start_lr={s!r} and end_lr={e!r}, whose "
                "ratio overflows a float: narrow the range"
            )
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


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {short_repr(value)}")
    return value


def as_float(value: Any) -> float:
    """A float or a one-element tensor (an LR) as a Python float; one host read for a tensor, never per step."""
    return float(value.detach().cpu()) if isinstance(value, torch.Tensor) else float(value)
