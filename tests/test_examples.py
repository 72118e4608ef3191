"""The examples/ scripts run end to end (quick mode: TORCH_LRRANGE_QUICK=1, a 20-step sweep and one epoch)."""

from __future__ import annotations

import re

import pytest
from _examples import run_example


@pytest.mark.slow
def test_cyclic_training(tmp_path):
    out = run_example("cyclic_training.py", tmp_path)
    assert "RangeTestResult(" in out
    acc = re.search(r"CyclicLR (\S+) \.\. (\S+), 1 epochs: validation accuracy ([\d.]+)%", out)
    assert acc is not None, out
    assert 0 < float(acc.group(1)) <= float(acc.group(2))


@pytest.mark.slow
def test_one_cycle(tmp_path):
    out = run_example("one_cycle.py", tmp_path)
    acc = re.search(r"OneCycleLR (\S+) -> (\S+), 1 epochs: validation accuracy ([\d.]+)%", out)
    assert acc is not None, out
    assert 0 < float(acc.group(1)) <= float(acc.group(2))


@pytest.mark.slow
def test_amp_loop_restores_the_grad_scaler(tmp_path):
    out = run_example("amp_loop.py", tmp_path)  # the script asserts the scaler's state_dict is back
    assert "GradScaler restored: scale" in out and "RangeTestResult(" in out


@pytest.mark.slow
def test_analyze_torch_lr_finder_history(tmp_path):
    pytest.importorskip("torch_lr_finder")
    out = run_example("analyze_torch_lr_finder.py", tmp_path)
    assert "RangeTestResult(" in out
    assert re.search(r"^(lr \S+, bounds|no usable suggestion)", out, flags=re.M), out
