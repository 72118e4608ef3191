"""Progress display: backends, silence rules, and how RangeTest feeds it (once per window, no extra host reads)."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import torch
from torch import nn

from torch_lrrange import RangeTest
from torch_lrrange import _divergence as divergence
from torch_lrrange import _range_test as context
from torch_lrrange._progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_backend_draws_one_line_in_place():
    stream = io.StringIO()
    bar = Progress(40, enabled=True, stream=stream, backend="plain")
    assert bar.backend == "plain"
    bar.update(8, 1e-5, 2.3)
    bar.update(40, 0.5, float("nan"))
    bar.close()
    text = stream.getvalue()
    first, second = text.split("\r")[1:]
    assert "8/40" in first and "lr=1e-05" in first and "loss=2.3" in first and "[#####......" in first
    assert "40/40" in second and "loss=nan" in second and "." not in second.split("]")[0].split("[")[1]
    assert text.endswith("\n")
    bar.update(41, 1.0, 1.0)  # ignored after close
    assert stream.getvalue() == text


def test_positions_never_go_back_or_past_total():
    stream = io.StringIO()
    bar = Progress(16, enabled=True, stream=stream, backend="plain")
    bar.update(10, 1.0, 1.0)
    bar.update(4, 1.0, 1.0)
    assert bar.position == 10
    bar.update(99, 1.0, 1.0)
    assert bar.position == 16


def test_tqdm_backend_shows_lr_and_loss():
    pytest.importorskip("tqdm")
    stream = _Terminal()
    bar = Progress(32, enabled=None, stream=stream)  # auto: a terminal, tqdm installed
    assert bar.backend == "tqdm"
    bar.update(16, 0.001, 1.25)
    bar.update(32, 0.01, 1.0)
    bar.close()
    text = stream.getvalue()
    assert "LR range test" in text and "lr=0.01" in text and "loss=1" in text and "32/32" in text


def test_plain_fallback_without_tqdm(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError("no tqdm here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    assert Progress(8, enabled=True, stream=io.StringIO()).backend == "plain"
    with pytest.raises(
        ImportError, match=r'pip install -e "\.\[progress\]" in a clone .*pip install "torch_lrrange\[progress\]"'
    ):
        Progress(8, enabled=True, stream=io.StringIO(), backend="tqdm")


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"enabled": None}, "not a terminal"),
        ({"enabled": False}, "disabled"),
        ({"enabled": True, "rank_zero": False}, "not rank 0"),
    ],
)
def test_silent_cases(kwargs, why):
    stream = io.StringIO()
    bar = Progress(8, stream=stream, **kwargs)
    bar.update(8, 1.0, 1.0)
    bar.close()
    assert bar.backend is None, why
    assert stream.getvalue() == "", why


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'tqdm', 'plain', got 'fancy'"):
        Progress(8, backend="fancy")


def _sweep(num_steps: int, **options) -> RangeTest:
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    with RangeTest(model, optimizer, start_lr=1e-4, end_lr=1e-1, num_steps=num_steps, **options, confirm=False) as rt:
        for i in range(num_steps):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x[i % 8 :: 8]), y[i % 8 :: 8])
            loss.backward()
            optimizer.step()
            rt.record(loss)
    return rt


def test_range_test_updates_once_per_window_without_extra_host_reads(monkeypatch):
    calls: list[tuple[int, float, float]] = []
    reads: list[int] = []

    class Recording(Progress):
        def update(self, position, lr, smoothed, phase=""):
            calls.append((position, lr, smoothed))
            super().update(position, lr, smoothed, phase)

    real_to_host = divergence.to_host

    def counting_to_host(window):
        reads.append(len(window))
        return real_to_host(window)

    monkeypatch.setattr(context, "Progress", Recording)
    monkeypatch.setattr(divergence, "to_host", counting_to_host)
    rt = _sweep(40, check_every=8, progress=False)
    assert rt.result is not None and len(rt.result.losses) == 40
    positions = [c[0] for c in calls]
    assert positions == sorted(positions) and positions[-1] == 40
    assert len(calls) <= 40 // 8 + 1  # one per window (plus the end), never one per step
    assert len(reads) <= 40 // 8 + 1 and sum(reads) == 40  # the values shown are the ones read anyway
    lrs = [c[1] for c in calls]
    assert lrs == sorted(lrs) and 1e-4 <= lrs[0] and lrs[-1] <= 1e-1 * (1 + 1e-9)


def test_library_logs_and_never_prints(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="torch_lrrange"):
        rt = _sweep(16, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert any("range test done" in r.getMessage() for r in caplog.records)
    assert rt.result is not None


def test_progress_true_draws_on_stderr(capsys):
    _sweep(16, check_every=8, progress=True)
    err = capsys.readouterr().err
    assert "LR range test" in err and "16/16" in err


def test_the_confirmation_phase_shows_its_runs_and_counts_in_the_total(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # the plain bar: it draws every update
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(x, x.sum(1, keepdim=True)) for x in torch.randn(6, 16, 4)]
    with RangeTest(model, opt, start_lr=1e-4, end_lr=10, num_steps=40, confirm=5, progress=True) as rt:
        for x, y in rt.batches(data):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            rt.record(loss)
    err = capsys.readouterr().err
    assert rt.result.confirmation is not None
    lines = err.split("\r")
    assert any("confirmed 1/6" in line for line in lines) and "70/70  confirmed 6/6" in lines[-1]


def test_steps_that_cost_several_gradients_show_what_they_cost_and_the_default_resizes_the_total(capsys, monkeypatch):
    """LBFGS through range_test: closure calls are counted; the default confirmation's runs shrink to fit its
    budget, and the plain bar's total follows them."""
    from torch_lrrange import range_test

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=6)
    data = [(x, x.sum(1, keepdim=True)) for x in torch.randn(6, 16, 4)]
    result = range_test(
        model, opt, data, lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), num_steps=40, progress=True
    )
    confirmed = result.confirmation
    assert confirmed is not None and confirmed.steps < 100
    total = 40 + 6 * confirmed.steps
    last = capsys.readouterr().err.split("\r")[-1]
    evaluations = result.metadata["evaluations"] + confirmed.evaluations
    assert f"{total}/{total}  confirmed 6/6, {evaluations} gradient evaluations" in last


def test_a_default_confirmation_that_cannot_run_ends_the_display_with_the_sweep(capsys, monkeypatch):
    """A loop without rt.batches: the default gives the sweep alone, and the bar's total shrinks back to it."""
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(x, x.sum(1, keepdim=True)) for x in torch.randn(6, 16, 4)]
    with RangeTest(model, opt, start_lr=1e-4, end_lr=1e-2, num_steps=24, progress=True) as rt:
        i = 0
        while not rt.done:
            x, y = data[i % len(data)]
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            rt.record(loss)
            i += 1
    assert rt.result.confirmation is None
    assert "24/24" in capsys.readouterr().err.split("\r")[-1]
