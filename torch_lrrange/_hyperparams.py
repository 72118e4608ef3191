"""Param-group hyperparameters held during a sweep: their checks, the groups they go to, and writing them."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ._checks import check_real, short_repr

__all__ = [
    "RESERVED_GROUP_KEYS",
    "check_hyperparams",
    "format_value",
    "grid_combinations",
    "hyperparam_groups",
    "is_zero",
    "set_hyperparams",
]


#: Param-group keys a sweep owns or that are not hyperparameters.
RESERVED_GROUP_KEYS = ("params", "lr", "initial_lr")
#: Allowed intervals of well-known hyperparameters, as written in the error message.
_DOMAINS = {
    "weight_decay": "[0, inf)",
    "momentum": "[0, 1]",
    "dampening": "[0, 1]",
    "alpha": "[0, 1]",
    "rho": "[0, 1]",
    "betas": "[0, 1)",
    "eps": "(0, inf)",
}
_ALTERNATIVES = {"momentum": "betas", "beta1": "betas", "beta2": "betas", "betas": "momentum"}


def check_hyperparams(hyperparams: Any, optimizer: Any) -> dict[str, Any]:
    """Check ``hyperparams`` (param-group key -> value) against ``optimizer``'s groups; return a plain dict.

    Every key must be held by every param group (``lr`` is swept, never set),
    and each value must have the shape of the value it replaces: a real number,
    a bool, or a tuple of as many reals (``betas``).
    """
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, Mapping):
        raise TypeError(
            "hyperparams must be a dict of param-group keys to values, e.g. {'weight_decay': 1e-4}, "
            f"got {type(hyperparams).__name__} {short_repr(hyperparams)}"
        )
    groups = optimizer.param_groups
    held = sorted(set.intersection(*(set(g) for g in groups)) - set(RESERVED_GROUP_KEYS))
    checked: dict[str, Any] = {}
    for key, value in hyperparams.items():
        if not isinstance(key, str):
            raise TypeError(f"hyperparams keys must be strings (param-group keys), got {type(key).__name__} {key!r}")
        if key in RESERVED_GROUP_KEYS:
            what = "the sweep sets it: use start_lr and end_lr" if key != "params" else "it is not a hyperparameter"
            raise ValueError(f"hyperparams cannot set {key!r}: {what}")
        if key not in held:
            hint = ""
            other = _ALTERNATIVES.get(key)
            if other in held:
                hint = (
                    f"; this optimizer holds momentum as betas[0]: use {{'betas': {tuple(groups[0]['betas'])!r}}} "
                    "with the first value changed"
                    if other == "betas"
                    else "; this optimizer holds momentum as 'momentum'"
                )
            raise ValueError(
                f"hyperparams key {key!r} is not held by every param group of {type(optimizer).__name__}; "
                f"the keys it holds are {', '.join(held)}{hint}"
            )
        checked[key] = _check_hyperparam(key, value, groups[0][key])
    return checked


def _check_hyperparam(key: str, value: Any, current: Any) -> Any:
    name = f"hyperparams[{key!r}]"
    if isinstance(current, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(current):
            raise TypeError(
                f"{name} must be a tuple of {len(current)} real numbers like the optimizer's {tuple(current)!r}, "
                f"got {type(value).__name__} {short_repr(value)}"
            )
        return tuple(_check_real(f"{name}[{i}]", key, v) for i, v in enumerate(value))
    if isinstance(current, bool) or (current is None and isinstance(value, bool)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False like the optimizer's {current!r}, got {short_repr(value)}")
        return value
    if current is None or isinstance(current, str):
        raise TypeError(f"{name}: the optimizer holds {current!r} there, which is not a numeric hyperparameter")
    checked = _check_real(name, key, value)
    if isinstance(current, int) and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)  # an int setting (LBFGS history_size) stays an int
    return checked


def _check_real(name: str, key: str, value: Any) -> float:
    value = check_real(name, value)
    domain = _DOMAINS.get(key, "(-inf, inf)")
    low, high = (float(v) for v in domain[1:-1].split(", "))
    inside = (low <= value if domain[0] == "[" else low < value) and (
        value <= high if domain[-1] == "]" else value < high
    )
    if not (math.isfinite(value) and inside):
        where = f" in {domain}" if key in _DOMAINS else ""
        raise ValueError(f"{name} must be a finite real number{where}, got {value!r}")
    return value


def is_zero(value: Any) -> bool:
    """Whether a param-group value is off: a number (not a bool) equal to 0, a tensor of zeros, or a
    tuple/list whose every item is (``betas=(0.0, 0.999)`` is not: its second moment is on)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, torch.Tensor):  # read once per sweep, never in the hot loop
        return value.numel() > 0 and value.dtype != torch.bool and not bool(value.any())
    if isinstance(value, (tuple, list)):
        return bool(value) and all(is_zero(v) for v in value)
    return isinstance(value, numbers.Real) and value == 0


def hyperparam_groups(optimizer: Any, keys: Iterable[str], keep_zero_groups: bool = True) -> dict[str, list[int]]:
    """For each of ``keys``, the indices of the param groups a ``hyperparams``/grid value is written into.

    With ``keep_zero_groups`` (the default), a group whose value is 0 (:func:`is_zero`: the no-decay
    groups of the usual transformer set-up, a group without momentum) keeps it, unless every group
    holds 0: then nothing sets a group apart and every group gets the value. False: every group.
    """
    groups = optimizer.param_groups
    chosen: dict[str, list[int]] = {}
    for key in keys:
        zero = [is_zero(group[key]) for group in groups]
        left = keep_zero_groups and not all(zero)
        chosen[key] = [i for i, z in enumerate(zero) if not (left and z)]
    return chosen


def set_hyperparams(optimizer: Any, hyperparams: dict[str, Any], groups: dict[str, list[int]]) -> None:
    """Write checked ``hyperparams`` into the param groups ``groups[key]`` lists (see
    :func:`hyperparam_groups`); tensors are filled in place (identity kept)."""
    for key, value in hyperparams.items():
        for i in groups[key]:
            group = optimizer.param_groups[i]
            current = group[key]
            if isinstance(value, tuple):
                group[key] = type(current)(filled_in(c, v) for c, v in zip(current, value))
            else:
                group[key] = filled_in(current, value)


def filled_in(current: Any, value: Any) -> Any:
    if isinstance(current, torch.Tensor):
        return current.fill_(value)
    return value


def format_value(value: Any) -> str:
    """A hyperparameter value as tables and labels show it: floats in ``%g``, tuples in parentheses."""
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def grid_combinations(
    grid: Any, optimizer: Any, fixed: dict[str, Any]
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Check ``grid`` against ``optimizer`` (before anything runs); its keys and value tuples in grid order."""
    if not isinstance(grid, Mapping) or not grid:
        raise TypeError(
            "grid must be a non-empty dict of param-group keys to lists of values, e.g. "
            f"{{'weight_decay': [0, 1e-4, 1e-3]}}, got {type(grid).__name__} {grid!r:.60}"
        )
    columns: list[list[Any]] = []
    for key, values in grid.items():
        if key in fixed:
            raise ValueError(f"{key!r} is both in grid and in hyperparams; give it in one of them")
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise TypeError(f"grid[{key!r}] must be a list of values, got {type(values).__name__} {values!r:.60}")
        values = list(values)
        if not values:
            raise ValueError(f"grid[{key!r}] is empty: give at least one value")
        current = optimizer.param_groups[0].get(key)
        if isinstance(current, (tuple, list)) and all(isinstance(v, (int, float)) for v in values):
            raise TypeError(
                f"grid[{key!r}] must be a list of values, each a tuple like the optimizer's {tuple(current)!r}, "
                f"e.g. {{{key!r}: [{tuple(current)!r}, ...]}}, got {values!r:.60}"
            )
        checked = []
        for i, value in enumerate(values):
            try:
                checked.append(check_hyperparams({key: value}, optimizer)[key])
            except (TypeError, ValueError) as err:
                raise type(err)(f"grid[{key!r}][{i}]: {err}") from None
        for i, value in enumerate(checked):
            if value in checked[:i]:
                raise ValueError(
                    f"grid[{key!r}] holds {format_value(value)} twice (items {checked.index(value)} and {i})"
                )
        columns.append(checked)
    return tuple(grid), list(itertools.product(*columns))
