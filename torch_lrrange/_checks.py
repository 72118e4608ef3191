"""Argument checks shared by the public API.

Every check raises before any state is touched, with a message that names the
argument, says what is allowed and shows what was given (einops style).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

MODES = ("exp", "linear")
#: Most points a sweep may have: its LR table is precomputed (8 bytes per point and param group).
MAX_STEPS = 10_000_000


def _shown(value: Any) -> str:
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
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {_shown(value)}")
    return float(value)


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float; it must be a finite real number > 0 (or >= 0).

    A numpy scalar or a one-element tensor is accepted and read as a Python float.
    """
    bound = ">= 0" if allow_zero else "> 0"
    value = scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number {bound}, got {type(value).__name__} {_shown(value)}")
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
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {_shown(value)}")
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
        raise TypeError(f"{name} must be one of {allowed}, got {type(value).__name__} {_shown(value)}")
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
            f"got {type(hyperparams).__name__} {_shown(hyperparams)}"
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
                f"got {type(value).__name__} {_shown(value)}"
            )
        return tuple(_check_real(f"{name}[{i}]", key, v) for i, v in enumerate(value))
    if isinstance(current, bool) or (current is None and isinstance(value, bool)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False like the optimizer's {current!r}, got {_shown(value)}")
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


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {_shown(value)}")
    return value


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
