"""Bad input to every argument of every public function: a ValueError or TypeError
that names the argument and says what is allowed, raised before anything is touched."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from typing import ClassVar

import numpy as np
import pytest
import torch
from _state import assert_same, capture
from _statecheck import (
    assert_nothing_registered,
    make_setup,
)

from torch_lrrange import (
    LRRangeScheduler,
    RangeTest,
    RangeTestResult,
    Snapshot,
    analyze,
    range_lr,
    range_test,
)

NAN, INF = math.nan, math.inf
POS = "must be a finite real number > 0"


class NotAnOptimizer:
    param_groups: ClassVar[list] = [{"lr": 0.1, "params": []}]


class EmptyGroups:
    param_groups: ClassVar[list] = []

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class NoLR(EmptyGroups):
    param_groups: ClassVar[list] = [{"params": []}]


class Stateless:
    pass


# (id, call(model, optimizer, data, loss_fn), exception, message regex)
RANGE_TEST = [
    ("model", lambda m, o, d, f: RangeTest(object(), o), TypeError, "model must be a torch.nn.Module, got object"),
    ("model-none", lambda m, o, d, f: RangeTest(None, o), TypeError, "model must be a torch.nn.Module, got NoneType"),
    (
        "optimizer",
        lambda m, o, d, f: RangeTest(m, object()),
        TypeError,
        "optimizer must be a torch optimizer.*lacks param_groups, state_dict, load_state_dict",
    ),
    (
        "optimizer-partial",
        lambda m, o, d, f: RangeTest(m, NotAnOptimizer()),
        TypeError,
        "optimizer must be .*lacks state_dict, load_state_dict",
    ),
    (
        "optimizer-empty",
        lambda m, o, d, f: RangeTest(m, EmptyGroups()),
        TypeError,
        "optimizer.param_groups must be a non-empty list of dicts that each hold an 'lr'",
    ),
    (
        "optimizer-no-lr",
        lambda m, o, d, f: RangeTest(m, NoLR()),
        TypeError,
        "optimizer.param_groups must be .* hold an 'lr'",
    ),
    ("start_lr-str", lambda m, o, d, f: RangeTest(m, o, start_lr="1e-3"), TypeError, f"start_lr {POS}, got str '1e-3'"),
    ("start_lr-bool", lambda m, o, d, f: RangeTest(m, o, start_lr=True), TypeError, f"start_lr {POS}, got bool"),
    ("start_lr-none", lambda m, o, d, f: RangeTest(m, o, start_lr=None), TypeError, f"start_lr {POS}, got NoneType"),
    ("start_lr-nan", lambda m, o, d, f: RangeTest(m, o, start_lr=NAN), ValueError, f"start_lr {POS}, got nan"),
    ("start_lr-inf", lambda m, o, d, f: RangeTest(m, o, start_lr=INF), ValueError, f"start_lr {POS}, got inf"),
    ("start_lr-zero", lambda m, o, d, f: RangeTest(m, o, start_lr=0.0), ValueError, f"start_lr {POS}, got 0.0"),
    (
        "start_lr-negative",
        lambda m, o, d, f: RangeTest(m, o, start_lr=-1e-3),
        ValueError,
        f"start_lr {POS}, got -0.001",
    ),
    (
        "start_lr-tensor",
        lambda m, o, d, f: RangeTest(m, o, start_lr=torch.tensor([1e-3, 1e-2])),
        TypeError,
        f"start_lr {POS}, got Tensor",
    ),
    ("end_lr-nan", lambda m, o, d, f: RangeTest(m, o, end_lr=NAN), ValueError, f"end_lr {POS}, got nan"),
    ("end_lr-inf", lambda m, o, d, f: RangeTest(m, o, end_lr=INF), ValueError, f"end_lr {POS}, got inf"),
    ("end_lr-negative", lambda m, o, d, f: RangeTest(m, o, end_lr=-1.0), ValueError, f"end_lr {POS}, got -1.0"),
    ("end_lr-str", lambda m, o, d, f: RangeTest(m, o, end_lr="10"), TypeError, f"end_lr {POS}, got str"),
    (
        "end_lr-equal",
        lambda m, o, d, f: RangeTest(m, o, start_lr=0.1, end_lr=0.1),
        ValueError,
        r"end_lr must be > start_lr, got start_lr=0.1 and end_lr=0.1",
    ),
    (
        "end_lr-below",
        lambda m, o, d, f: RangeTest(m, o, start_lr=1.0, end_lr=0.1),
        ValueError,
        r"end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.1",
    ),
    (
        "start_lr-short-list",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3]),
        ValueError,
        r"start_lr must be a float or a list of 2 floats \(one per param group\), got a list of 1",
    ),
    (
        "start_lr-long-list",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3] * 3),
        ValueError,
        r"start_lr must be a float or a list of 2 floats .*got a list of 3",
    ),
    (
        "end_lr-empty-tuple",
        lambda m, o, d, f: RangeTest(m, o, end_lr=()),
        ValueError,
        r"end_lr must be a float or a list of 2 floats .*got a tuple of 0",
    ),
    (
        "start_lr-nan-item",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3, NAN]),
        ValueError,
        rf"start_lr\[1\] {POS}, got nan",
    ),
    (
        "end_lr-str-item",
        lambda m, o, d, f: RangeTest(m, o, end_lr=["1", 1.0]),
        TypeError,
        rf"end_lr\[0\] {POS}, got str",
    ),
    (
        "end_lr-per-group-order",
        lambda m, o, d, f: RangeTest(m, o, start_lr=[1e-3, 1.0], end_lr=[1.0, 0.5]),
        ValueError,
        r"end_lr must be > start_lr \(param group 1\), got start_lr=1.0 and end_lr=0.5",
    ),
    (
        "num_steps-1",
        lambda m, o, d, f: RangeTest(m, o, num_steps=1),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "num_steps-0",
        lambda m, o, d, f: RangeTest(m, o, num_steps=0),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 0",
    ),
    (
        "num_steps-negative",
        lambda m, o, d, f: RangeTest(m, o, num_steps=-10),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got -10",
    ),
    (
        "num_steps-float",
        lambda m, o, d, f: RangeTest(m, o, num_steps=10.0),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float 10.0",
    ),
    (
        "num_steps-nan",
        lambda m, o, d, f: RangeTest(m, o, num_steps=NAN),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float nan",
    ),
    (
        "num_steps-str",
        lambda m, o, d, f: RangeTest(m, o, num_steps="10"),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got str '10'",
    ),
    (
        "num_steps-bool",
        lambda m, o, d, f: RangeTest(m, o, num_steps=True),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got bool",
    ),
    (
        "mode-unknown",
        lambda m, o, d, f: RangeTest(m, o, mode="cosine"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'cosine'",
    ),
    (
        "mode-case",
        lambda m, o, d, f: RangeTest(m, o, mode="EXP"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'EXP'",
    ),
    (
        "mode-none",
        lambda m, o, d, f: RangeTest(m, o, mode=None),
        TypeError,
        "mode must be one of 'exp', 'linear', got NoneType",
    ),
    (
        "extra_state-str",
        lambda m, o, d, f: RangeTest(m, o, extra_state="scaler"),
        TypeError,
        "extra_state must be a tuple or list of objects with state_dict",
    ),
    (
        "extra_state-int",
        lambda m, o, d, f: RangeTest(m, o, extra_state=5),
        TypeError,
        "extra_state must be a tuple or list .*got int",
    ),
    (
        "extra_state-item",
        lambda m, o, d, f: RangeTest(m, o, extra_state=[Stateless()]),
        TypeError,
        r"extra_state\[0\] must have state_dict\(\) and load_state_dict\(\).*got Stateless",
    ),
    (
        "extra_state-second-item",
        lambda m, o, d, f: RangeTest(m, o, extra_state=(o, 3)),
        TypeError,
        r"extra_state\[1\] must have state_dict\(\).*got int",
    ),
    (
        "snapshot-unknown",
        lambda m, o, d, f: RangeTest(m, o, snapshot="gpu"),
        ValueError,
        "snapshot must be one of 'device', 'cpu', 'disk', got 'gpu'",
    ),
    (
        "snapshot-bool",
        lambda m, o, d, f: RangeTest(m, o, snapshot=True),
        TypeError,
        "snapshot must be one of 'device', 'cpu', 'disk', got bool",
    ),
    (
        "diverge_threshold-1",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=1),
        ValueError,
        "diverge_threshold must be a finite real number > 1, got 1",
    ),
    (
        "diverge_threshold-half",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=0.5),
        ValueError,
        "diverge_threshold must be a finite real number > 1, got 0.5",
    ),
    (
        "diverge_threshold-zero",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=0),
        ValueError,
        "diverge_threshold must be a finite real number",
    ),
    (
        "diverge_threshold-nan",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=NAN),
        ValueError,
        "diverge_threshold must be a finite real number .*got nan",
    ),
    (
        "diverge_threshold-inf",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold=INF),
        ValueError,
        "diverge_threshold must be a finite real number .*got inf",
    ),
    (
        "diverge_threshold-str",
        lambda m, o, d, f: RangeTest(m, o, diverge_threshold="4"),
        TypeError,
        "diverge_threshold must be a finite real number .*got str",
    ),
    (
        "method-unknown",
        lambda m, o, d, f: RangeTest(m, o, method="best"),
        ValueError,
        "method must be one of 'default', .*got 'best'",
    ),
    (
        "method-int",
        lambda m, o, d, f: RangeTest(m, o, method=1),
        TypeError,
        "method must be one of 'default', .*got int",
    ),
    ("repeats-0", lambda m, o, d, f: RangeTest(m, o, repeats=0), ValueError, "repeats must be an int >= 1, got 0"),
    (
        "repeats-float",
        lambda m, o, d, f: RangeTest(m, o, repeats=2.0),
        TypeError,
        "repeats must be an int >= 1, got float",
    ),
    (
        "check_every-7",
        lambda m, o, d, f: RangeTest(m, o, check_every=7),
        ValueError,
        "check_every must be an int >= 8, got 7",
    ),
    (
        "check_every-negative",
        lambda m, o, d, f: RangeTest(m, o, check_every=-8),
        ValueError,
        "check_every must be an int >= 8, got -8",
    ),
    (
        "check_every-str",
        lambda m, o, d, f: RangeTest(m, o, check_every="8"),
        TypeError,
        "check_every must be an int >= 8, got str",
    ),
    (
        "progress-str",
        lambda m, o, d, f: RangeTest(m, o, progress="yes"),
        TypeError,
        "progress must be True, False or None, got str",
    ),
    (
        "progress-int",
        lambda m, o, d, f: RangeTest(m, o, progress=1),
        TypeError,
        "progress must be True, False or None, got int",
    ),
    ("unknown-keyword", lambda m, o, d, f: RangeTest(m, o, num_step=10), TypeError, "num_step"),
]


def _enter(rt):
    with rt:
        pytest.fail("the block must not run")


RANGE_TEST_ENTER = [
    (
        "process_group-without-distributed",
        lambda m, o, d, f: _enter(RangeTest(m, o, process_group="group")),
        ValueError,
        "process_group was given but torch.distributed is not initialised",
    ),
]

RUNNER = [
    (
        "accumulation_steps-0",
        lambda m, o, d, f: range_test(m, o, d, f, accumulation_steps=0),
        ValueError,
        "accumulation_steps must be an int >= 1, got 0",
    ),
    (
        "accumulation_steps-float",
        lambda m, o, d, f: range_test(m, o, d, f, accumulation_steps=1.5),
        TypeError,
        "accumulation_steps must be an int >= 1, got float 1.5",
    ),
    (
        "loss_fn",
        lambda m, o, d, f: range_test(m, o, d, "mse"),
        TypeError,
        r"loss_fn must be callable as loss_fn\(model, batch\), got str",
    ),
    (
        "device-int",
        lambda m, o, d, f: range_test(m, o, d, f, device=0),
        TypeError,
        "device must be a str or torch.device, got int",
    ),
    (
        "device-unknown",
        lambda m, o, d, f: range_test(m, o, d, f, device="gpu"),
        ValueError,
        "device must name a torch device .*got 'gpu'",
    ),
    (
        "loader-int",
        lambda m, o, d, f: range_test(m, o, 5, f),
        TypeError,
        "loader must be an iterable of batches .*got int",
    ),
    (
        "loader-str",
        lambda m, o, d, f: range_test(m, o, "data.csv", f),
        TypeError,
        "loader must be an iterable of batches .*got str",
    ),
    (
        "loader-none",
        lambda m, o, d, f: range_test(m, o, None, f),
        TypeError,
        "loader must be an iterable of batches .*got NoneType",
    ),
    (
        "unknown-option",
        lambda m, o, d, f: range_test(m, o, d, f, num_step=10),
        TypeError,
        r"range_test\(\) got unknown option\(s\) num_step; the options are start_lr, end_lr, num_steps, mode",
    ),
    (
        "option-num_steps",
        lambda m, o, d, f: range_test(m, o, d, f, num_steps=1),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "option-mode",
        lambda m, o, d, f: range_test(m, o, d, f, mode="cos"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'cos'",
    ),
    ("model", lambda m, o, d, f: range_test(object(), o, d, f), TypeError, "model must be a torch.nn.Module"),
    ("optimizer", lambda m, o, d, f: range_test(m, None, d, f), TypeError, "optimizer must be a torch optimizer"),
    (
        "val_loader-iterator",
        lambda m, o, d, f: range_test(m, o, d, f, val_loader=iter(d)),
        TypeError,
        "val_loader must be a re-iterable collection of batches",
    ),
    (
        "val_every-0",
        lambda m, o, d, f: range_test(m, o, d, f, val_loader=d, val_every=0),
        ValueError,
        "val_every must be an int >= 1, got 0",
    ),
    (
        "scaler",
        lambda m, o, d, f: range_test(m, o, d, f, scaler=Stateless()),
        TypeError,
        r"scaler must have state_dict\(\) and load_state_dict\(\)",
    ),
]

ANALYZE = [
    (
        "lrs-str",
        lambda: analyze("abc", [1.0, 2.0]),
        TypeError,
        "lrs must be a sequence or array of real numbers, got str",
    ),
    (
        "losses-str-items",
        lambda: analyze([1.0, 2.0], ["a", "b"]),
        TypeError,
        "losses must be a sequence or array of real numbers, got list",
    ),
    (
        "losses-dict",
        lambda: analyze([1.0, 2.0], {"a": 1}),
        TypeError,
        "losses must be a sequence or array of real numbers, got dict",
    ),
    (
        "lengths",
        lambda: analyze([1e-3, 1e-2, 1e-1], [1.0, 2.0]),
        ValueError,
        "lrs and losses must have the same length, got 3 and 2",
    ),
    ("lrs-zero", lambda: analyze([0.0, 1e-2], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-negative", lambda: analyze([-1e-3, 1e-2], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-nan", lambda: analyze([1e-3, NAN], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-inf", lambda: analyze([1e-3, INF], [1.0, 2.0]), ValueError, "lrs must be finite and > 0"),
    ("lrs-decreasing", lambda: analyze([1e-2, 1e-3], [1.0, 2.0]), ValueError, "lrs must be strictly increasing"),
    ("lrs-repeated", lambda: analyze([1e-3, 1e-3], [1.0, 2.0]), ValueError, "lrs must be strictly increasing"),
    (
        "method",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], method="fastai"),
        ValueError,
        "method must be one of 'default', .*got 'fastai'",
    ),
    (
        "method-none",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], method=None),
        TypeError,
        "method must be one of 'default', .*got NoneType",
    ),
    (
        "diverge_threshold-1",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverge_threshold=1.0),
        ValueError,
        "diverge_threshold must be .*> 1",
    ),
    (
        "diverge_threshold-nan",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverge_threshold=NAN),
        ValueError,
        "diverge_threshold must be a finite real number",
    ),
    (
        "diverge_threshold-str",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverge_threshold="4"),
        TypeError,
        "diverge_threshold must be a finite real number",
    ),
    (
        "diverged",
        lambda: analyze([1e-3, 1e-2], [1.0, 2.0], diverged="yes"),
        TypeError,
        "diverged must be True, False or None, got str",
    ),
]

SCHEDULE = [
    ("optimizer", lambda m, o, d, f: LRRangeScheduler(object()), TypeError, "optimizer must be a torch optimizer"),
    ("start_lr-nan", lambda m, o, d, f: LRRangeScheduler(o, start_lr=NAN), ValueError, f"start_lr {POS}, got nan"),
    ("start_lr-zero", lambda m, o, d, f: LRRangeScheduler(o, start_lr=0), ValueError, f"start_lr {POS}, got 0.0"),
    ("end_lr-inf", lambda m, o, d, f: LRRangeScheduler(o, end_lr=INF), ValueError, f"end_lr {POS}, got inf"),
    (
        "end_lr-below",
        lambda m, o, d, f: LRRangeScheduler(o, start_lr=1.0, end_lr=1e-3),
        ValueError,
        "end_lr must be > start_lr",
    ),
    (
        "start_lr-list-length",
        lambda m, o, d, f: LRRangeScheduler(o, start_lr=[1e-3] * 3),
        ValueError,
        "start_lr must be a float or a list of 2 floats",
    ),
    (
        "num_steps",
        lambda m, o, d, f: LRRangeScheduler(o, num_steps=1),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "num_steps-float",
        lambda m, o, d, f: LRRangeScheduler(o, num_steps=5.5),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float",
    ),
    (
        "mode",
        lambda m, o, d, f: LRRangeScheduler(o, mode="log"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'log'",
    ),
    (
        "last_epoch",
        lambda m, o, d, f: LRRangeScheduler(o, last_epoch=-2),
        ValueError,
        "last_epoch must be an int >= -1, got -2",
    ),
    (
        "last_epoch-str",
        lambda m, o, d, f: LRRangeScheduler(o, last_epoch="0"),
        TypeError,
        "last_epoch must be an int >= -1, got str",
    ),
    # as torch's own schedulers: resuming needs 'initial_lr' in every group
    (
        "last_epoch-resume",
        lambda m, o, d, f: LRRangeScheduler(o, last_epoch=5),
        KeyError,
        r"param_groups\[0, 1\] lack 'initial_lr', needed to resume with last_epoch=5",
    ),
]

RANGE_LR = [
    (
        "step-negative",
        lambda: range_lr(-1, 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them, got -1",
    ),
    (
        "step-float",
        lambda: range_lr(1.5, 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them, got 1.5",
    ),
    (
        "step-str",
        lambda: range_lr("3", 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them, got '3'",
    ),
    (
        "step-array-negative",
        lambda: range_lr(np.array([0, -1]), 1e-3, 1.0, 10),
        ValueError,
        "step must be an int >= 0 or an array of them",
    ),
    ("start_lr-list", lambda: range_lr(1, [1e-3, 1e-2], [1.0, 2.0], 10), TypeError, f"start_lr {POS}, got list"),
    ("start_lr-nan", lambda: range_lr(1, NAN, 1.0, 10), ValueError, f"start_lr {POS}, got nan"),
    ("end_lr-zero", lambda: range_lr(1, 1e-3, 0.0, 10), ValueError, f"end_lr {POS}, got 0.0"),
    (
        "end_lr-below",
        lambda: range_lr(1, 1.0, 0.5, 10),
        ValueError,
        "end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.5",
    ),
    (
        "num_steps",
        lambda: range_lr(1, 1e-3, 1.0, 1),
        ValueError,
        "num_steps must be an int in \\[2, 10000000\\], got 1",
    ),
    (
        "num_steps-float",
        lambda: range_lr(1, 1e-3, 1.0, 10.0),
        TypeError,
        "num_steps must be an int in \\[2, 10000000\\], got float",
    ),
    (
        "mode",
        lambda: range_lr(1, 1e-3, 1.0, 10, mode="geometric"),
        ValueError,
        "mode must be one of 'exp', 'linear', got 'geometric'",
    ),
]

SNAPSHOT = [
    ("model", lambda m, o, d, f: Snapshot.take(o, o), TypeError, "model must be a torch.nn.Module, got Adam"),
    (
        "optimizer",
        lambda m, o, d, f: Snapshot.take(m, m),
        TypeError,
        "optimizer must be a torch optimizer .*Sequential lacks param_groups",
    ),
    (
        "extra",
        lambda m, o, d, f: Snapshot.take(m, o, o, 3),
        TypeError,
        r"extra_state\[1\] must have state_dict\(\).*got int",
    ),
    (
        "where-unknown",
        lambda m, o, d, f: Snapshot.take(m, o, where="ram"),
        ValueError,
        "where must be one of 'device', 'cpu', 'disk', got 'ram'",
    ),
    (
        "where-int",
        lambda m, o, d, f: Snapshot.take(m, o, where=0),
        TypeError,
        "where must be one of 'device', 'cpu', 'disk', got int",
    ),
    (
        "extra-disk",
        lambda m, o, d, f: Snapshot.take(m, o, object(), where="disk"),
        TypeError,
        r"extra_state\[0\] must have state_dict\(\)",
    ),
]


def _ids(table):
    return [row[0] for row in table]


@pytest.fixture
def setup():
    model, opt, data, loss_fn, _ = make_setup()
    return model, opt, data, loss_fn


@pytest.mark.parametrize(
    ("name", "call", "error", "message"), RANGE_TEST + RANGE_TEST_ENTER, ids=_ids(RANGE_TEST + RANGE_TEST_ENTER)
)
def test_range_test_arguments(setup, name, call, error, message):
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert_nothing_registered()


@pytest.mark.parametrize(("name", "call", "error", "message"), RUNNER, ids=_ids(RUNNER))
def test_range_test_function_arguments(setup, name, call, error, message):
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert_nothing_registered()


@pytest.mark.parametrize(("name", "call", "error", "message"), SCHEDULE + SNAPSHOT, ids=_ids(SCHEDULE + SNAPSHOT))
def test_scheduler_and_snapshot_arguments(setup, tmp_path, monkeypatch, name, call, error, message):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert not list(tmp_path.glob("torch_lrrange_*"))  # no snapshot directory was created


def test_scheduler_refuses_param_group_lrs_it_cannot_keep_the_ratio_of(setup):
    _, opt, *_ = setup
    opt.param_groups[0]["lr"] = 0.0
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    with pytest.raises(
        ValueError, match=r"param group LRs must be finite, >= 0 and > 0 for group 0 .*got \[0.0, 0.01\]"
    ):
        LRRangeScheduler(opt)
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before


@pytest.mark.parametrize(("name", "call", "error", "message"), ANALYZE + RANGE_LR, ids=_ids(ANALYZE + RANGE_LR))
def test_pure_function_arguments(name, call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_analyze_does_not_modify_its_inputs():
    lrs = np.logspace(-5, 0, 30)
    losses = np.concatenate([np.linspace(2, 1, 25), [NAN] * 5])
    lrs_copy, losses_copy = lrs.copy(), losses.copy()
    analyze(lrs, losses)
    assert np.array_equal(lrs, lrs_copy)
    assert np.array_equal(losses, losses_copy, equal_nan=True)


# --- record() and batches() -------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "error", "message"),
    [
        (torch.ones(2), ValueError, r"loss must be a scalar \(0-dim tensor or float\), got a tensor of shape \(2,\)"),
        (torch.ones(0), ValueError, r"loss must be a scalar .*got a tensor of shape \(0,\)"),
        ("0.5", TypeError, "loss must be a scalar tensor or a real number, got str"),
        (None, TypeError, "loss must be a scalar tensor or a real number, got NoneType"),
        (True, TypeError, "loss must be a scalar tensor or a real number, got bool"),
        ([0.5], TypeError, "loss must be a scalar tensor or a real number, got list"),
    ],
    ids=["vector", "empty", "str", "none", "bool", "list"],
)
def test_record_refuses_bad_losses_without_recording(setup, loss, error, message):
    model, opt, data, loss_fn = setup
    before = capture(model, opt)
    with RangeTest(model, opt, num_steps=10, start_lr=1e-4, end_lr=1e-1) as rt:
        for batch in rt.batches(data):
            opt.zero_grad()
            good = loss_fn(model, batch)
            good.backward()
            opt.step()
            lr = opt.param_groups[0]["lr"]
            step = rt.step
            with pytest.raises(error, match=message):
                rt.record(loss)
            assert rt.step == step and opt.param_groups[0]["lr"] == lr  # the bad point was not taken
            rt.record(good)
    assert len(rt.result.losses) == 10
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_record_and_batches_outside_the_block(setup):
    model, opt, data, _ = setup
    rt = RangeTest(model, opt)
    with pytest.raises(RuntimeError, match=r"record\(\) must be called inside the `with RangeTest\(...\)` block"):
        rt.record(1.0)
    with pytest.raises(RuntimeError, match=r"batches\(\) must be used inside the `with RangeTest\(...\)` block"):
        next(iter(rt.batches(data)))
    assert "initial_lr" not in opt.param_groups[0]


@pytest.mark.parametrize(
    ("loader", "error", "message"),
    [
        (5, TypeError, r"batches\(\)'s argument must be an iterable of batches .*got int"),
        ("abc", TypeError, r"batches\(\)'s argument must be an iterable of batches .*got str"),
        (None, TypeError, r"batches\(\)'s argument must be an iterable of batches .*got NoneType"),
        ([], ValueError, "the loader is empty: it yielded no batch"),
    ],
    ids=["int", "str", "none", "empty"],
)
def test_batches_refuses_bad_loaders_and_restores(setup, loader, error, message):
    model, opt, *_ = setup
    before = capture(model, opt)
    with pytest.raises(error, match=message):
        with RangeTest(model, opt, num_steps=10) as rt:
            for _ in rt.batches(loader):
                pytest.fail("no batch expected")
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_a_pass_that_records_nothing_is_refused(setup):
    model, opt, data, _ = setup
    before = capture(model, opt)
    with pytest.raises(RuntimeError, match=r"a whole pass over the loader recorded no point: call rt.record\(loss\)"):
        with RangeTest(model, opt, num_steps=10) as rt:
            for _ in rt.batches(data):
                pass
    assert_same(before, capture(model, opt))


def test_the_same_range_test_cannot_be_entered_twice(setup):
    model, opt, *_ = setup
    rt = RangeTest(model, opt)
    with rt:
        with pytest.raises(RuntimeError, match="this RangeTest is already running; use a new RangeTest"):
            rt.__enter__()
    assert_nothing_registered()


# --- saved results: RangeTestResult.load / from_dict ----------------------------------


def _saved():
    lrs = np.logspace(-4, 0, 40)
    losses = 2 - np.tanh(np.log10(lrs) + 2) + np.exp(4 * (np.log10(lrs) + 0.3))
    return analyze(lrs, losses).to_dict()


def _with(**changes):
    data = _saved()
    for key, value in changes.items():
        if value is _MISSING:
            del data[key]
        else:
            data[key] = value
    return data


_MISSING = object()

FROM_DICT = [
    (
        "list",
        lambda: [],
        "not a saved RangeTestResult: expected a JSON object with format 'torch_lrrange.RangeTestResult'",
    ),
    ("format", lambda: _with(format="other"), "not a saved RangeTestResult"),
    ("version", lambda: _with(version=99), "unsupported RangeTestResult version 99; this library reads version 1"),
    ("missing-lrs", lambda: _with(lrs=_MISSING), "saved RangeTestResult lacks 'lrs'"),
    ("lrs-type", lambda: _with(lrs="1,2,3"), "field 'lrs' has the wrong type str"),
    ("lrs-items", lambda: _with(lrs=["a"] * 40), "field 'lrs' must be a list of numbers"),
    ("lrs-bools", lambda: _with(lrs=[True] * 40), "field 'lrs' must be a list of numbers"),
    ("lrs-nested", lambda: _with(lrs=[[1.0]] * 40), "field 'lrs' must be a list of numbers"),
    ("lrs-order", lambda: _with(lrs=list(range(40, 0, -1))), "field 'lrs' must be finite, > 0 and strictly increasing"),
    ("lrs-null", lambda: _with(lrs=[None] * 40), "field 'lrs' must be finite, > 0 and strictly increasing"),
    ("lengths", lambda: _with(losses=[1.0]), "lrs, losses and smoothed must have the same length"),
    ("method", lambda: _with(method=3), "field 'method' has the wrong type int"),
    ("lr-negative", lambda: _with(lr=-1.0), r"field 'lr' must be a number > 0 or null, got -1.0"),
    ("lr-str", lambda: _with(min_lr="1e-3"), r"field 'min_lr' must be a number > 0 or null, got '1e-3'"),
    ("diverged", lambda: _with(diverged="no"), "field 'diverged' has the wrong type str"),
    ("confidence-type", lambda: _with(confidence=None), "field 'confidence' has the wrong type NoneType"),
    ("confidence-range", lambda: _with(confidence=2.0), "field 'confidence' must be between 0 and 1, got 2.0"),
    ("warnings", lambda: _with(warnings=[1]), "field 'warnings' has the wrong type int"),
    ("runs", lambda: _with(runs="x"), "runs must be a list of lists of numbers"),
    ("runs-items", lambda: _with(runs=[["x"]]), "field 'runs' must be a list of numbers"),
    ("metadata", lambda: _with(metadata=[]), "field 'metadata' has the wrong type list"),
]


@pytest.mark.parametrize(("name", "make", "message"), FROM_DICT, ids=_ids(FROM_DICT))
def test_from_dict_validates_every_field(name, make, message):
    with pytest.raises(ValueError, match=message):
        RangeTestResult.from_dict(make())


def test_from_dict_round_trip_still_works():
    data = _saved()
    result = RangeTestResult.from_dict(json.loads(json.dumps(data)))
    assert result.to_dict() == data


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "result.json is not valid JSON: "),
        (b"", "result.json is not valid JSON: "),
        (b"\xff\xfe\x00garbage", "result.json is not valid JSON: "),
        (b"[" * 100_000 + b"]" * 100_000, "result.json is not valid JSON: "),
        (pickle.dumps(_Exploit()), "result.json is not valid JSON: "),
        (b'{"format": "torch_lrrange.RangeTestResult", "version": 1, "confidence": NaN}', "NaN is not allowed"),
        (b'{"format": "torch_lrrange.RangeTestResult", "version": 1, "lrs": [Infinity]}', "Infinity is not allowed"),
        (
            b'{"__class__": "os.system", "args": ["touch pwned"]}',
            "not a saved RangeTestResult: expected a JSON object with format",
        ),
        (b'"torch_lrrange.RangeTestResult"', "not a saved RangeTestResult"),
        (b"null", "not a saved RangeTestResult"),
    ],
    ids=["truncated", "empty", "not-utf8", "deep-nesting", "pickle", "nan", "infinity", "class-hint", "string", "null"],
)
def test_load_refuses_malformed_and_hostile_files(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "result.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        RangeTestResult.load(path)
    assert not (tmp_path / "pwned").exists()


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        RangeTestResult.load(tmp_path / "nothing.json")


def test_save_load_round_trip(tmp_path):
    result = RangeTestResult.from_dict(_saved())
    result.save(tmp_path / "r.json")
    loaded = RangeTestResult.load(tmp_path / "r.json")
    assert loaded.to_dict() == result.to_dict()


# --- command line: argparse's exit status 2, naming the option ---------------------------------

CLI = [
    ("no-command", [], "the following arguments are required: {demo,run,plot}"),
    (
        "unknown-command",
        ["train"],
        r"argument {demo,run,plot}: invalid choice: 'train' \(choose from 'demo', 'run', 'plot'\)",
    ),
    ("unknown-option", ["demo", "--foo"], "unrecognized arguments: --foo"),
    ("num-steps-1", ["demo", "--num-steps", "1"], "argument --num-steps: expected an integer >= 2, got 1"),
    (
        "lr-ratio-overflows",
        ["demo", "--start-lr", "1e-7", "--end-lr", "1e302"],
        r"--end-lr / --start-lr overflows a float \(1e\+302 / 1e-07\): narrow the range",
    ),
    ("num-steps-negative", ["demo", "--num-steps", "-3"], "argument --num-steps: expected an integer >= 2, got -3"),
    ("num-steps-text", ["demo", "--num-steps", "many"], "argument --num-steps: expected an integer >= 2, got 'many'"),
    ("num-steps-float", ["demo", "--num-steps", "2.5"], "argument --num-steps: expected an integer >= 2, got '2.5'"),
    ("start-lr-zero", ["demo", "--start-lr", "0"], "argument --start-lr: expected a finite number > 0, got '0'"),
    ("start-lr-nan", ["demo", "--start-lr", "nan"], "argument --start-lr: expected a finite number > 0, got 'nan'"),
    ("start-lr-text", ["demo", "--start-lr", "small"], "argument --start-lr: expected a number > 0, got 'small'"),
    ("end-lr-inf", ["demo", "--end-lr", "inf"], "argument --end-lr: expected a finite number > 0, got 'inf'"),
    ("end-lr-negative", ["demo", "--end-lr", "-1"], "argument --end-lr: expected a finite number > 0, got '-1'"),
    ("end-below-start", ["demo", "--start-lr", "1", "--end-lr", "0.5"], "--end-lr must be greater than --start-lr"),
    ("method", ["demo", "--method", "best"], r"argument --method: invalid choice: 'best' \(choose from 'default'"),
    ("epochs", ["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (
        "dataset",
        ["demo", "--dataset", "cifar"],
        r"argument --dataset: invalid choice: 'cifar' \(choose from 'digits', 'mnist'\)",
    ),
    ("mnist-without-dir", ["demo", "--dataset", "mnist"], "argument --dataset: mnist needs --data-dir"),
    (
        "mnist-missing",
        ["demo", "--dataset", "mnist", "--data-dir", "nowhere"],
        "argument --data-dir: MNIST was not found under",
    ),
    ("seed", ["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    ("run-no-target", ["run"], "the following arguments are required: FILE.py:make"),
    ("run-target-form", ["run", "setup"], "argument target: expected FILE.py:make or package.module:make, got 'setup'"),
    ("run-missing-file", ["run", "nothing.py:make"], "argument target: no such file: 'nothing.py'"),
    ("run-missing-name", ["run", "os.path:nothing"], "argument target: 'os.path' has no 'nothing'"),
    ("run-not-callable", ["run", "setup.py:NOT_CALLABLE"], "argument target: setup.py:NOT_CALLABLE is not callable"),
    (
        "run-not-a-dict",
        ["run", "setup.py:not_a_dict"],
        "make\\(\\) must return a dict with keys model, optimizer, loader, loss_fn, got a list",
    ),
    ("run-missing-key", ["run", "setup.py:missing_key"], "make\\(\\)'s dict lacks 'loss_fn'"),
    (
        "run-unknown-key",
        ["run", "setup.py:unknown_key"],
        "make\\(\\)'s dict has unknown keys 'num_step'; besides model, optimizer, loader, loss_fn it may hold start_lr",
    ),
    (
        "run-num-steps",
        ["run", "setup.py:make", "--num-steps", "0"],
        "argument --num-steps: expected an integer >= 2, got 0",
    ),
    ("plot-missing", ["plot", "nothing.json"], "argument JSON: cannot read 'nothing.json'"),
    ("plot-malformed", ["plot", "bad.json"], "argument JSON: bad.json is not valid JSON: "),
    ("plot-hostile", ["plot", "hostile.json"], "argument JSON: hostile.json: not a saved RangeTestResult"),
    ("plot-method", ["plot", "bad.json", "--method", "m"], r"argument --method: invalid choice: 'm'"),
]

_SETUP_PY = """
import torch

NOT_CALLABLE = 5


def make():
    model = torch.nn.Linear(2, 1)
    return {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loader": [(torch.ones(4, 2), torch.ones(4))],
        "loss_fn": lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean(),
    }


def not_a_dict():
    return [make()]


def missing_key():
    setup = make()
    del setup["loss_fn"]
    return setup


def unknown_key():
    return dict(make(), num_step=5)


def bad_optimizer():
    return dict(make(), optimizer="sgd")


def bad_num_steps():
    return dict(make(), num_steps=1)
"""


@pytest.fixture
def cli_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "setup.py").write_text(_SETUP_PY)
    (tmp_path / "bad.json").write_text('{"lrs": [')
    (tmp_path / "hostile.json").write_bytes(pickle.dumps(_Exploit()).hex().join(['{"payload": "', '"}']).encode())
    return tmp_path


@pytest.mark.parametrize(("name", "argv", "message"), CLI, ids=_ids(CLI))
def test_cli_options(cli_folder, capsys, name, argv, message):
    from torch_lrrange._cli import main

    files = sorted(os.listdir(cli_folder))
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert sorted(os.listdir(cli_folder)) == files  # nothing written
    assert_nothing_registered()


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("setup.py:bad_optimizer", TypeError, "optimizer must be a torch optimizer"),
        ("setup.py:bad_num_steps", ValueError, "num_steps must be an int in \\[2, 10000000\\], got 1"),
    ],
    ids=["optimizer", "num_steps"],
)
def test_cli_run_reports_bad_values_from_make(cli_folder, capsys, target, error, message):
    """Values make() returns are checked by the library: a usage error (exit 2) or its own TypeError/ValueError, naming the argument."""
    from torch_lrrange._cli import main

    try:
        main(["run", target])
    except SystemExit as exit_:
        assert exit_.code == 2
        assert re.search(message, capsys.readouterr().err)
    except error as err:
        assert re.search(message, str(err))
    else:
        pytest.fail("no error")
    assert not {"lr_range.png", "lr_range.json"} & set(os.listdir(cli_folder))  # nothing written
    assert_nothing_registered()


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ([], TypeError, r"state_dict must be a dict from LRRangeScheduler.state_dict\(\), got list"),
        ({"num_steps": 1}, ValueError, "num_steps must be an int in \\[2, 10000000\\], got 1"),
        ({"mode": "cos"}, ValueError, "mode must be one of 'exp', 'linear', got 'cos'"),
        (
            {"start_lrs": [1.0, 1.0], "end_lrs": [0.5, 0.5]},
            ValueError,
            "end_lr must be > start_lr, got start_lr=1.0 and end_lr=0.5",
        ),
        (
            {"start_lrs": [1e-3], "end_lrs": [1.0]},
            ValueError,
            "state_dict holds LRs for 1 param groups, the optimizer has 2",
        ),
    ],
    ids=["not-a-dict", "num_steps", "mode", "order", "groups"],
)
def test_scheduler_load_state_dict_checks_before_changing_anything(setup, state, error, message):
    _, opt, *_ = setup
    sched = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=10)
    sched.step()
    before = sched.state_dict()
    with pytest.raises(error, match=message):
        sched.load_state_dict(state)
    assert sched.state_dict() == before
    sched.step()
    assert opt.param_groups[0]["lr"] == range_lr(2, 1e-4, 1.0, 10)


@pytest.mark.parametrize(
    ("epoch", "error", "message"),
    [(-1, ValueError, "epoch must be an int >= 0, got -1"), (1.5, TypeError, "epoch must be an int >= 0, got float")],
    ids=["negative", "float"],
)
def test_scheduler_step_epoch(setup, epoch, error, message):
    _, opt, *_ = setup
    sched = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=10)
    with pytest.warns(UserWarning, match="passing epoch to step"), pytest.raises(error, match=message):
        sched.step(epoch)


def test_reanalyze_refuses_an_unknown_method():
    result = RangeTestResult.from_dict(_saved())
    with pytest.raises(ValueError, match=r"method must be one of 'default', .*got 'fast'"):
        result.reanalyze("fast")
