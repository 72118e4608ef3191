"""Fault injection: whatever goes wrong during a sweep, the state comes back bit-exactly
(or a SnapshotError says what could not be restored), the exception propagates
unchanged and no RangeTest stays registered."""

from __future__ import annotations

import glob
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import torch
from _state import assert_same, capture
from _statecheck import (
    assert_nothing_registered,
    make_setup,
    train_steps,
)

from torch_lrrange import RangeTest, Snapshot, SnapshotError, range_test
from torch_lrrange import _range_test as context
from torch_lrrange import _sweep as sweep

N = 12  # points per sweep in these tests


class Boom(Exception):
    pass


PHASES = ("before_forward", "after_backward", "after_step", "after_record")


def _sweep(model, opt, data, loss_fn, fail_at=None, phase=None, exc=None, **options):
    options.setdefault("num_steps", N)
    options.setdefault("start_lr", 1e-4)
    options.setdefault("end_lr", 1.0)
    with RangeTest(model, opt, **options, confirm=False) as rt:
        for i, batch in enumerate(rt.batches(data)):
            if i == fail_at and phase == "before_forward":
                raise exc
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            if i == fail_at and phase == "after_backward":
                raise exc
            opt.step()
            if i == fail_at and phase == "after_step":
                raise exc
            rt.record(loss)
            if i == fail_at and phase == "after_record":
                raise exc
    return rt


@pytest.mark.parametrize("position", range(N))
@pytest.mark.parametrize("phase", PHASES)
def test_exception_at_every_step_position_restores_everything(position, phase):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    exc = Boom(f"at {position} {phase}")
    with pytest.raises(Boom) as info:
        _sweep(model, opt, data, loss_fn, fail_at=position, phase=phase, exc=exc)
    assert info.value is exc
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


@pytest.mark.parametrize("where", ["device", "cpu", "disk"])
@pytest.mark.parametrize("position", [0, N + 3])  # first repeat, then second repeat
def test_exception_in_any_repeat_and_any_snapshot_store(where, position, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    with pytest.raises(Boom):
        _sweep(model, opt, data, loss_fn, fail_at=position, phase="after_step", exc=Boom(), snapshot=where, repeats=2)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()
    assert glob.glob(str(tmp_path / "torch_lrrange_*")) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("where", ["device", "cpu", "disk"])
@pytest.mark.parametrize(
    ("position", "phase"), [(0, "before_forward"), (N // 2, "after_step"), (N - 1, "after_record")]
)
def test_exception_restores_a_cuda_model_from_every_snapshot_store(where, position, phase):
    model, opt, data, loss_fn, _ = make_setup(device="cuda")
    torch.cuda.synchronize()
    before = capture(model, opt)
    with pytest.raises(Boom):
        _sweep(model, opt, data, loss_fn, fail_at=position, phase=phase, exc=Boom(), snapshot=where)
    torch.cuda.synchronize()
    assert_same(before, capture(model, opt))
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert_nothing_registered()


def test_keyboard_interrupt_propagates_unchanged_and_restores():
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        _sweep(model, opt, data, loss_fn, fail_at=5, phase="after_step", exc=interrupt)
    assert info.value is interrupt
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_a_range_test_can_be_run_again_after_a_failure():
    model, opt, data, loss_fn, _ = make_setup(dropout=0.0)
    rt = RangeTest(model, opt, num_steps=N, start_lr=1e-4, end_lr=1.0, confirm=False)
    with pytest.raises(Boom):
        with rt:
            raise Boom
    assert rt.result is None
    before = capture(model, opt)
    with rt:
        for batch in rt.batches(data):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
    assert len(rt.result.losses) == N
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_a_completed_sweep_restores_everything_too():
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    rt = _sweep(model, opt, data, loss_fn)
    assert len(rt.result.lrs) == N
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


@pytest.mark.parametrize("kind", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("accumulation_steps", [1, 3])
def test_range_test_restores_after_loss_fn_raises_midway(kind, accumulation_steps):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    calls = []
    exc = kind("loss_fn")

    def failing(m, batch):
        calls.append(1)
        if len(calls) == 7:
            raise exc
        return loss_fn(m, batch)

    with pytest.raises(kind) as info:
        range_test(
            model,
            opt,
            data,
            failing,
            num_steps=N,
            start_lr=1e-4,
            end_lr=1.0,
            accumulation_steps=accumulation_steps,
            confirm=False,
        )
    assert info.value is exc
    assert len(calls) == 7
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


# --- inside __enter__, after the snapshot -------------------------------------


@pytest.mark.parametrize(
    ("module", "target"), [(sweep, "LRRangeScheduler"), (sweep, "WindowReader"), (context, "Progress")]
)
def test_failure_inside_enter_after_the_snapshot_restores(module, target, monkeypatch):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    real = getattr(module, target)

    def failing(*args, **kwargs):
        if target == "LRRangeScheduler":
            real(*args, **kwargs)  # the LR is set (and initial_lr added) before the failure
        raise Boom(target)

    monkeypatch.setattr(module, target, failing)
    rt = RangeTest(model, opt, num_steps=N, confirm=False)
    with pytest.raises(Boom, match=target):
        rt.__enter__()
    assert_same(before, capture(model, opt))
    assert "initial_lr" not in opt.param_groups[0]
    assert_nothing_registered()
    monkeypatch.setattr(module, target, real)
    _sweep(model, opt, data, loss_fn)  # the optimizer is usable again


def test_failure_while_taking_the_snapshot_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, opt, _data, _loss_fn, _ = make_setup()

    class BadExtra:
        def state_dict(self):
            raise Boom("state_dict")

        def load_state_dict(self, state):
            pass

    before = capture(model, opt)
    with pytest.raises(Boom, match="state_dict"):
        with RangeTest(model, opt, num_steps=N, extra_state=[BadExtra()], snapshot="disk", confirm=False):
            pytest.fail("the block must not run")
    assert_same(before, capture(model, opt))
    assert_nothing_registered()
    assert glob.glob(str(tmp_path / "torch_lrrange_*")) == []


# --- loaders ------------------------------------------------------------------


class FailingLoader:
    """Yields ``good`` batches of ``data``, then raises."""

    def __init__(self, data, good):
        self.data, self.good = data, good

    def __iter__(self):
        for i, batch in enumerate(self.data):
            if i == self.good:
                raise OSError("disk read failed")
            yield batch


@pytest.mark.parametrize("good", [0, 3, 7])
def test_loader_raising_midway_restores(good):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    with pytest.raises(OSError, match="disk read failed"):
        _sweep(model, opt, FailingLoader(data, good), loss_fn)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_loader_failing_on_second_pass_via_range_test():
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)

    class SecondPassFails:
        passes = 0

        def __iter__(self):
            SecondPassFails.passes += 1
            if SecondPassFails.passes == 2:
                raise OSError("second pass")
            return iter(data)

    with pytest.raises(OSError, match="second pass"):
        range_test(model, opt, SecondPassFails(), loss_fn, num_steps=20, start_lr=1e-4, end_lr=1.0, confirm=False)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_empty_loader_raises_and_restores():
    model, opt, _data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    with pytest.raises(ValueError, match="loader is empty"):
        _sweep(model, opt, [], loss_fn)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


# --- the flushes (host reads of the loss window) ------------------------------


@pytest.mark.parametrize("failing_call", [1, 2])  # 1: the in-loop flush at step 8; 2: the final flush at step N
def test_failure_in_a_flush_restores(failing_call, monkeypatch):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    real_push = sweep.WindowReader.push
    calls = []

    def push(self, window):
        calls.append(len(window))
        if len(calls) == failing_call:
            raise Boom("flush")
        return real_push(self, window)

    monkeypatch.setattr(sweep.WindowReader, "push", push)
    with pytest.raises(Boom, match="flush"):
        _sweep(model, opt, data, loss_fn, check_every=8)
    assert calls[-1] == (8 if failing_call == 1 else N - 8)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_failure_in_the_flush_on_exit_after_an_early_stop(monkeypatch):
    """The loop breaks early; __exit__ flushes what was recorded, and that flush fails."""
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)

    def push(self, window):
        raise Boom("flush on exit")

    monkeypatch.setattr(sweep.WindowReader, "push", push)
    rt = RangeTest(model, opt, num_steps=N, start_lr=1e-4, end_lr=1.0, confirm=False)
    with pytest.raises(Boom, match="flush on exit"):
        with rt:
            for i, batch in enumerate(rt.batches(data)):
                opt.zero_grad()
                loss = loss_fn(model, batch)
                loss.backward()
                opt.step()
                rt.record(loss)
                if i == 4:
                    break
    assert rt.result is None
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


def test_failure_while_reading_the_result_still_restores(monkeypatch):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)

    def analyze(*args, **kwargs):
        raise Boom("analysis")

    monkeypatch.setattr(context, "analyze", analyze)
    with pytest.raises(Boom, match="analysis"):
        _sweep(model, opt, data, loss_fn)
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


# --- losses that turn NaN or inf ----------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("where", ["device", "disk"])
def test_non_finite_loss_ends_the_sweep_as_diverged_and_restores(bad, where):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    turn = 5
    steps = []
    with RangeTest(model, opt, num_steps=40, start_lr=1e-4, end_lr=1e-2, snapshot=where, confirm=False) as rt:
        for batch in rt.batches(data):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            if rt.step >= turn:
                loss = loss * bad  # poisons the gradients and then the parameters
            loss.backward()
            opt.step()
            rt.record(loss)
            steps.append(rt.step)
    result = rt.result
    assert result.diverged
    assert len(result.lrs) == len(result.losses) == turn  # the curve is cut before the first bad point
    assert torch.isfinite(torch.as_tensor(result.losses)).all()
    assert len(steps) < 40  # the sweep stopped early (within a window of check_every points)
    assert_same(before, capture(model, opt))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert_nothing_registered()


# --- Snapshot.restore() failing half-way --------------------------------------


def _disk_files(snapshot):
    directory = snapshot._store.directory
    return directory, sorted(glob.glob(os.path.join(directory, "*.pt")), key=lambda p: int(os.path.basename(p)[:-3]))


@pytest.mark.parametrize("damage", ["vanished", "truncated", "grown"])
@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_disk_snapshot_with_a_damaged_file_restores_nothing_and_says_so(damage, which, tmp_path):
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    snap = Snapshot.take(model, opt, where="disk")
    directory, files = _disk_files(snap)
    assert len(files) > 10
    train_steps(model, opt, data, loss_fn)
    changed = capture(model, opt)
    path = files[{"first": 0, "middle": len(files) // 2, "last": -1}[which]]
    backup = tmp_path / "backup.pt"
    shutil.copy(path, backup)
    if damage == "vanished":
        os.remove(path)
        expected = f"disk snapshot file {path} is gone; nothing was restored"
    else:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2) if damage == "truncated" else f.seek(0, 2)
            if damage == "grown":
                f.write(b"\0")
        expected = f"disk snapshot file {path} was truncated or changed .*nothing was restored"
    with pytest.raises(SnapshotError, match=expected):
        snap.restore()
    assert_same(changed, capture(model, opt))  # not one tensor (nor the RNG) was written
    shutil.copy(backup, path)
    snap.restore()  # the file is back: the snapshot is whole again
    assert_same(before, capture(model, opt))
    snap.release()
    assert not os.path.exists(directory)


def test_disk_snapshot_file_corrupted_in_place_fails_loudly():
    """Same size, other bytes: found only while reading; the error names the file and says restore stopped part-way."""
    model, opt, data, loss_fn, _ = make_setup()
    snap = Snapshot.take(model, opt, where="disk")
    _, files = _disk_files(snap)
    train_steps(model, opt, data, loss_fn)
    path = files[len(files) // 2]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.write(b"\xff" * size)
    with pytest.raises(
        SnapshotError,
        match=rf"(?s)disk snapshot file {path} was corrupted and could not be read .*part-way: the model and optimizer are only partly restored",
    ):
        snap.restore()
    snap.release()


def test_disk_snapshot_file_replaced_by_another_tensor_is_refused():
    model, opt, _data, _loss_fn, _ = make_setup()
    snap = Snapshot.take(model, opt, where="disk")
    _, files = _disk_files(snap)
    first = torch.load(files[0], weights_only=True)
    torch.save(torch.zeros(first.shape, dtype=torch.float64), files[0])  # other dtype, other size
    with pytest.raises(SnapshotError, match="truncated or changed"):
        snap.restore()
    snap.release()


def test_restore_after_release_is_refused():
    model, opt, *_ = make_setup()
    snap = Snapshot.take(model, opt)
    snap.release()
    snap.release()  # idempotent
    with pytest.raises(SnapshotError, match="was released"):
        snap.restore()


def test_restore_refuses_a_model_whose_keys_changed_before_writing_anything():
    model, opt, data, loss_fn, _ = make_setup()
    snap = Snapshot.take(model, opt)
    train_steps(model, opt, data, loss_fn)
    model.add_module("extra", torch.nn.Linear(1, 1))
    changed = capture(model, opt)
    with pytest.raises(SnapshotError, match=r"state_dict keys changed.*extra\.bias.*not restored"):
        snap.restore()
    assert_same(changed, capture(model, opt))
    snap.release()


def test_vanished_disk_file_during_a_range_test_raises_snapshot_error_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, opt, data, loss_fn, _ = make_setup()
    with pytest.raises(SnapshotError, match="is gone; nothing was restored"):
        with RangeTest(model, opt, num_steps=N, snapshot="disk", confirm=False) as rt:
            (directory,) = glob.glob(str(tmp_path / "torch_lrrange_*"))
            os.remove(os.path.join(directory, "0.pt"))
            for batch in rt.batches(data):
                opt.zero_grad()
                loss = loss_fn(model, batch)
                loss.backward()
                opt.step()
                rt.record(loss)
    assert glob.glob(str(tmp_path / "torch_lrrange_*")) == []
    assert_nothing_registered()


def test_snapshot_error_keeps_the_original_exception_as_context(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, opt, _data, _loss_fn, _ = make_setup()
    with pytest.raises(SnapshotError) as info:
        with RangeTest(model, opt, num_steps=N, snapshot="disk", confirm=False):
            (directory,) = glob.glob(str(tmp_path / "torch_lrrange_*"))
            os.remove(os.path.join(directory, "3.pt"))
            raise Boom("user code")
    chain, err = [], info.value
    while err is not None:
        chain.append(type(err))
        err = err.__context__
    assert Boom in chain  # the user's exception is not lost
    assert glob.glob(str(tmp_path / "torch_lrrange_*")) == []
    assert_nothing_registered()


# --- disk snapshots: private, and removed on release, exceptions and interrupts ---


def test_disk_snapshot_directory_is_private_and_removed_on_release(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, opt, *_ = make_setup()
    snap = Snapshot.take(model, opt, where="disk")
    (directory,) = glob.glob(str(tmp_path / "torch_lrrange_*"))
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.listdir(directory)
    snap.release()
    assert not os.path.exists(directory)


def test_disk_snapshot_removed_when_garbage_collected(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model, opt, *_ = make_setup()
    snap = Snapshot.take(model, opt, where="disk")
    (directory,) = glob.glob(str(tmp_path / "torch_lrrange_*"))
    del snap
    import gc

    gc.collect()
    assert not os.path.exists(directory)


_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from _statecheck import make_setup
    from torch_lrrange import RangeTest

    model, opt, data, loss_fn, _ = make_setup()
    with RangeTest(model, opt, num_steps=10_000, snapshot="disk", end_lr=1e-3) as rt:
        for i, batch in enumerate(rt.batches(data)):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
            if i == 3:
                print("ready", flush=True)
            if i >= 3:
                time.sleep(0.01)
    """
)


@pytest.mark.slow
def test_disk_snapshot_removed_when_the_process_gets_sigint(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    script = _CHILD.format(tests=os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        (directory,) = glob.glob(str(tmp / "torch_lrrange_*"))
        assert os.listdir(directory)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert "KeyboardInterrupt" in err
    deadline = time.monotonic() + 5
    while os.path.exists(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(directory)
    assert os.listdir(tmp) == []


# --- torch.load only with weights_only=True -------------------------------------


def test_torch_load_is_only_called_with_weights_only():
    import re

    import torch_lrrange

    package = os.path.dirname(torch_lrrange.__file__)
    calls = []
    for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            source = f.read()
        for match in re.finditer(r"torch\.load\(", source):
            call = source[match.start() : source.find(")", match.end()) + 1]
            calls.append(call)
            assert "weights_only=True" in call, f"{path}: {call}"
        assert "pickle" not in source, f"{path} uses pickle"
    assert calls  # the disk snapshot does read files back


def test_disk_snapshot_reads_with_weights_only(monkeypatch):
    model, opt, data, loss_fn, _ = make_setup()
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with Snapshot.take(model, opt, where="disk") as snap:
        train_steps(model, opt, data, loss_fn)
        snap.restore()
    assert seen and all(w is True for w in seen)


# --- the README's "What is restored" -----------------------------------------------


def test_param_group_added_during_the_sweep_is_dropped():
    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    extra = torch.nn.Parameter(torch.zeros(2))
    with RangeTest(model, opt, num_steps=N, confirm=False) as rt:
        opt.add_param_group({"params": [extra], "lr": 1.0})
        for batch in rt.batches(data):
            opt.zero_grad()
            loss = loss_fn(model, batch) + extra.sum()
            loss.backward()
            opt.step()
            rt.record(loss)
    assert len(opt.param_groups) == 2 and extra not in opt.state
    assert_same(before, capture(model, opt))


def test_param_group_removed_is_refused_before_anything_is_written():
    model, opt, data, loss_fn, _ = make_setup()
    snap = Snapshot.take(model, opt)
    train_steps(model, opt, data, loss_fn)
    changed = capture(model, opt)
    removed = opt.param_groups.pop()
    with pytest.raises(
        SnapshotError, match=r"the optimizer has 1 param groups, the snapshot 2: .*nothing was restored"
    ):
        snap.restore()
    opt.param_groups.append(removed)
    assert_same(changed, capture(model, opt))
    snap.release()


def test_a_tensor_that_changed_shape_is_refused():
    model, opt, *_ = make_setup()
    snap = Snapshot.take(model, opt)
    model[4].scale.data = torch.ones(3)  # a non-persistent buffer replaced by one of another shape
    with torch.no_grad():
        model[0].weight.add_(1.0)
    changed = model[0].weight.detach().clone()
    with pytest.raises(
        SnapshotError, match=r"changed shape since the snapshot \(\['4\.scale'\]\); nothing was restored"
    ):
        snap.restore()
    assert torch.equal(model[0].weight, changed)  # found before any write
    snap.release()


def test_next_epoch_of_a_shuffling_loader_is_unchanged_by_a_test():
    dataset = torch.utils.data.TensorDataset(torch.arange(32.0).unsqueeze(1), torch.zeros(32))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(7)
    untouched = [x.flatten().tolist() for x, _ in loader]
    torch.manual_seed(7)
    range_test(model, opt, loader, lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean(), num_steps=12, confirm=False)
    assert [x.flatten().tolist() for x, _ in loader] == untouched


def test_what_is_not_restored_is_as_documented():
    model, opt, data, loss_fn, _ = make_setup()
    generator = torch.Generator().manual_seed(0)
    generator_state = generator.get_state()
    with RangeTest(model, opt, num_steps=N, confirm=False) as rt:
        model[0].weight.requires_grad_(False)
        model.note = "set during the test"
        torch.rand(2, generator=generator)
        for batch in rt.batches(data):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
    assert model[0].weight.requires_grad is False
    assert model.note == "set during the test"
    assert not torch.equal(generator.get_state(), generator_state)


class Counter:
    """An extra_state object; ``refuse`` makes its load_state_dict fail."""

    def __init__(self):
        self.count, self.refuse = 0, False

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        if self.refuse:
            raise RuntimeError("refused")
        self.count = state["count"]


def test_an_extra_object_refusing_its_state_is_named_and_everything_else_restored():
    model, opt, data, loss_fn, _ = make_setup()
    good_before, good_after, bad = Counter(), Counter(), Counter()
    before = capture(model, opt)
    with pytest.raises(
        SnapshotError,
        match=r"could not restore extra_state\[1\] \(Counter\): RuntimeError: refused; the model, optimizer, RNG states and the other extra_state objects were restored",
    ):
        with RangeTest(model, opt, num_steps=N, extra_state=[good_before, bad, good_after], confirm=False) as rt:
            for batch in rt.batches(data):
                opt.zero_grad()
                loss = loss_fn(model, batch)
                loss.backward()
                opt.step()
                rt.record(loss)
                for counter in (good_before, bad, good_after):
                    counter.count += 1
            bad.refuse = True
    assert good_before.count == good_after.count == 0 and bad.count == N
    assert_same(before, capture(model, opt))
    assert_nothing_registered()


@pytest.mark.parametrize("where", ["device", "disk"])
def test_ctrl_c_during_a_restore_is_held_until_the_restore_is_complete(where, monkeypatch):
    from torch_lrrange import _snapshot as snapshot_module

    model, opt, data, loss_fn, _ = make_setup()
    before = capture(model, opt)
    snap = Snapshot.take(model, opt, where=where)
    train_steps(model, opt, data, loss_fn)
    real_copy = snapshot_module._Store.copy_into
    copies = []

    def copy_into(self, handle, live):
        copies.append(handle)
        if len(copies) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right in the middle of the restore
            time.sleep(0.05)  # let the interpreter run the signal handler here, mid-restore
        return real_copy(self, handle, live)

    monkeypatch.setattr(snapshot_module._Store, "copy_into", copy_into)
    with pytest.raises(KeyboardInterrupt):
        snap.restore()
    assert len(copies) > 10  # the restore went on to the end
    assert_same(before, capture(model, opt))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    snap.release()
