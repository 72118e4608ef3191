"""Exact state capture and comparison, shared by every test that checks a restore.

``capture`` copies everything a range test may touch (comparable across twins:
no object ids); ``assert_same`` compares two captures byte for byte; ``Restored``
and ``assert_restored`` also check that parameters and tensor hyperparameters
kept their identity.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch
from torch import nn


def _all_params(model: nn.Module, optimizer: Any) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p)
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


def _cuda_rng() -> list[torch.Tensor]:
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []


def capture(model: nn.Module, optimizer: Any, *extra: Any) -> dict[str, Any]:
    """A deep copy of everything a range test may touch."""
    params = _all_params(model, optimizer)
    return {
        "model": copy.deepcopy(model.state_dict()),
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": [p.requires_grad for p in params],
        "params": [p.detach().clone() for p in params],
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in params],
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "groups": [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
        "group_sizes": [len(g["params"]) for g in optimizer.param_groups],
        "extra": [copy.deepcopy(obj.state_dict()) for obj in extra],
        "rng": (random.getstate(), np.random.get_state(), torch.get_rng_state(), _cuda_rng()),
    }


def identities(model: nn.Module, optimizer: Any) -> list[int]:
    """ids of the parameters and tensor hyperparameters (a restore must keep them)."""
    ids = [id(p) for p in _all_params(model, optimizer)]
    for group in optimizer.param_groups:
        ids += [id(v) for v in group.values() if isinstance(v, torch.Tensor)]
    return ids


def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Recursive bit-exact equality: tensors byte for byte (dtype, shape, device too), NaNs included."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{path}: tensor became {type(b).__name__}"
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), (
            f"{path}: {a.dtype} {tuple(a.shape)} {a.device} became {b.dtype} {tuple(b.shape)} {b.device}"
        )
        bytes_a = a.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        bytes_b = b.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(bytes_a, bytes_b), f"{path}: tensor values differ"
        return
    assert type(a) is type(b), f"{path}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{path}: array differs"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} became {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} became {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == b or (a != a and b != b), f"{path}: {a!r} became {b!r}"
    else:
        assert a == b, f"{path}: {a!r} became {b!r}"


class Restored:
    """Capture on construction; :meth:`check` asserts everything is back bit-exactly.

    Example:
        >>> saved = Restored(model, opt, scaler)
        >>> ...  # range test
        >>> saved.check()
    """

    def __init__(self, model: nn.Module, optimizer: Any, *extra: Any) -> None:
        self.model, self.optimizer, self.extra = model, optimizer, extra
        self.before = capture(model, optimizer, *extra)
        self.ids = identities(model, optimizer)

    def check(self) -> None:
        assert_same(self.before, capture(self.model, self.optimizer, *self.extra))
        assert identities(self.model, self.optimizer) == self.ids, "a parameter or tensor hyperparameter was replaced"
