"""100 range tests in a row leave nothing behind: no tensors, hooks, open files,
temporary directories, threads or resident memory beyond noise."""

from __future__ import annotations

import gc
import glob
import os
import tempfile
import threading
import warnings

import pytest
import torch
from _state import assert_same, capture
from _statecheck import (
    assert_nothing_registered,
    make_setup,
)
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module

from torch_lrrange import RangeTest, Snapshot, range_test

RUNS = 100
RSS_NOISE = 32 * 2**20  # bytes: allocator and interpreter noise, far below 100 leaked snapshots


class Boom(Exception):
    pass


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some lazy torch objects warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def _hooks(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    per_module = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    )
    count = sum(len(getattr(m, name, {})) for m in model.modules() for name in per_module)
    count += sum(len(p._backward_hooks or {}) for p in model.parameters() if hasattr(p, "_backward_hooks"))
    count += sum(
        len(getattr(nn_module, name, {}))
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
            "_global_buffer_registration_hooks",
            "_global_module_registration_hooks",
            "_global_parameter_registration_hooks",
        )
    )
    count += sum(
        len(getattr(opt, name, {}))
        for name in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        )
    )
    count += len(optim_module._global_optimizer_pre_hooks) + len(optim_module._global_optimizer_post_hooks)
    return count


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _temp_dirs(root: str) -> list[str]:
    return glob.glob(os.path.join(root, "torch_lrrange_*"))


def _measure(model, opt, root):
    return {
        "tensors": _live_tensors(),
        "hooks": _hooks(model, opt),
        "files": _open_files(),
        "temp_dirs": len(_temp_dirs(root)),
        "threads": threading.active_count(),
        "rss": _rss(),
    }


def _one(i, model, opt, data, loss_fn):
    where = ("device", "cpu", "disk")[i % 3]
    options = {"num_steps": 10, "start_lr": 1e-4, "end_lr": 1.0, "snapshot": where}
    if i % 10 == 9:  # some end with an exception half-way
        calls = []

        def failing(m, batch):
            calls.append(1)
            if len(calls) == 5:
                raise Boom
            return loss_fn(m, batch)

        with pytest.raises(Boom):
            range_test(model, opt, data, failing, **options)
    elif i % 10 == 4:  # some use the context manager and stop early
        with RangeTest(model, opt, **options) as rt:
            for j, batch in enumerate(rt.batches(data)):
                opt.zero_grad()
                loss = loss_fn(model, batch)
                loss.backward()
                opt.step()
                rt.record(loss)
                if j == 6:
                    break
        assert len(rt.result.losses) == 7
    else:
        result = range_test(model, opt, data, loss_fn, **options)
        assert len(result.losses) == 10


@pytest.mark.slow
def test_a_hundred_range_tests_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # only this test's temp dirs are counted
    root = str(tmp_path)
    model, opt, data, loss_fn, _ = make_setup(dropout=0.0)
    for i in range(6):  # warm-up: lazy imports, allocator pools, caches
        _one(i, model, opt, data, loss_fn)
    before_state = capture(model, opt)
    before = _measure(model, opt, root)
    for i in range(RUNS):
        _one(i, model, opt, data, loss_fn)
    after = _measure(model, opt, root)
    assert_same(before_state, capture(model, opt))
    assert_nothing_registered()
    assert after["tensors"] <= before["tensors"], (before, after)
    assert after["hooks"] == before["hooks"]
    assert after["files"] <= before["files"]
    assert after["temp_dirs"] == before["temp_dirs"] == 0
    assert after["threads"] <= before["threads"]
    assert after["rss"] - before["rss"] < RSS_NOISE, (before, after)
    assert _temp_dirs(root) == []


@pytest.mark.slow
def test_a_hundred_snapshots_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = str(tmp_path)
    model, opt, *_ = make_setup(dropout=0.0)
    for where in ("device", "cpu", "disk"):
        with Snapshot.take(model, opt, where=where) as snap:
            snap.restore()
    before = _measure(model, opt, root)
    for i in range(RUNS):
        snap = Snapshot.take(model, opt, where=("device", "cpu", "disk")[i % 3])
        snap.restore()
        if i % 2:
            snap.release()
        else:
            del snap  # dropped without release(): the files go with the object
    after = _measure(model, opt, root)
    assert after["tensors"] <= before["tensors"], (before, after)
    assert after["hooks"] == before["hooks"]
    assert after["files"] <= before["files"]
    assert after["temp_dirs"] == 0
    assert after["rss"] - before["rss"] < RSS_NOISE, (before, after)
