"""Fixtures for every test: fixed seeds, one intra-op thread; ``setup`` for the bad-input tests.

``benchmarks/`` is importable: the suggestion-case tests share the benchmark's harness.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _statecheck import make_setup

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a small shared machine: one intra-op thread is many times faster than several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def setup():
    """A model, optimizer, data and loss function with everything a restore must handle (``make_setup``)."""
    model, opt, data, loss_fn, _ = make_setup()
    return model, opt, data, loss_fn
