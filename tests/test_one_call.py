"""range_test(): the one-call API's argument checks."""

from __future__ import annotations

import pytest
from _state import assert_same, capture
from _statecheck import Stateless, assert_nothing_registered, ids

from torch_lrrange import range_test

# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---

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


@pytest.mark.parametrize(("name", "call", "error", "message"), RUNNER, ids=ids(RUNNER))
def test_range_test_function_arguments(setup, name, call, error, message):
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert_nothing_registered()
