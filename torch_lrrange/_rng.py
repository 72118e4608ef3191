"""The global random number generators a training step draws from: saved, put back, isolated."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["isolated", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Python's ``random``, numpy's global ``np.random``, torch's CPU generator, and, once
    initialised, every CUDA device's generator (and MPS's), as they are now."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        state["mps"] = mps.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back a state from :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state:
        torch.mps.set_rng_state(state["mps"])


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """The global RNGs are put back when the block ends, also after an exception.

    Example:
        >>> before = torch.rand(1)
        >>> _ = torch.manual_seed(0)
        >>> with isolated():
        ...     drawn = torch.rand(3)
        >>> torch.equal(torch.rand(3), drawn)  # the block's draws did not move the generator
        True
    """
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
