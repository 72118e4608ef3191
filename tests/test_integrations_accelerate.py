"""A plain RangeTest around an Accelerate loop: prepared model, optimizer (AcceleratedOptimizer)
and dataloader, ``accelerator.accumulate`` and ``accelerator.backward``; no helper needed.

The loop lives in integration_scripts/accelerate_loop.py, run here in-process and under
``accelerate launch`` with 2 CPU processes (``--multi_gpu`` on a machine without GPUs: the
``--cpu`` flag of this Accelerate version starts a single process).
"""

from __future__ import annotations

import pytest
from _examples import run_example
from integration_scripts import trainer_library

trainer_library("accelerate")  # comes with the [transformers] extra

from integration_scripts import accelerate_loop  # noqa: E402
from integration_scripts.launch import accelerate_launch  # noqa: E402


def _check(report, batches):
    assert report["restored"]  # model, AcceleratedOptimizer state and groups, grads, RNGs: bit-exact
    assert len(report["result"]["lrs"]) == 16
    assert report["lrs_seen"][:16] == report["result"]["lrs"]  # one point per real (synced) optimizer step
    confirmed = report["result"]["metadata"]["confirmation"]  # the default: six runs in the same loop
    assert len(report["lrs_seen"]) == 16 + 6 * confirmed["steps"] and confirmed["steps"] == 100
    assert report["lrs_seen"][16::100] == confirmed["candidates"]  # each run at its candidate's LR
    assert report["tested_losses"] == report["twin_losses"] and len(report["tested_losses"]) == batches
    assert report["tested_weights"] == report["twin_weights"]


@pytest.mark.parametrize("own_loader", [False, True])
def test_range_test_around_an_accelerate_loop(own_loader):
    """One process: restored bit-exactly, and the epoch trained afterwards matches a twin's exactly."""
    _check(accelerate_loop.run(own_loader=own_loader), batches=24)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_gives_every_rank_the_same_result(tmp_path):
    reports = accelerate_launch("accelerate_loop.py", tmp_path)
    assert reports[0]["result"] == reports[1]["result"]  # losses averaged over ranks once per window
    for report in reports:
        _check(report, batches=12)  # each rank trains on its half of the 24 batches
    assert reports[0]["tested_weights"] == reports[1]["tested_weights"]
    # Swept on the training loader itself, model and optimizer still come back and the ranks still
    # agree, but the loader's own shuffling generator moved on: the next epoch's order differs.
    shared = [r["shared_loader"] for r in reports]
    assert shared[0]["result"] == shared[1]["result"] and all(s["restored"] for s in shared)
    assert shared[0]["tested_losses"] != shared[0]["twin_losses"]


@pytest.mark.slow
def test_example_script(tmp_path):
    stdout = run_example("accelerate_range_test.py", tmp_path, timeout=300)
    assert "RangeTestResult(" in stdout and "validation accuracy" in stdout, stdout
