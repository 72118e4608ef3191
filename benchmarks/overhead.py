"""What a range test adds to the training steps it runs, side by side with the peers.

For a tiny MLP (overhead-bound), the article's LeNet and torchvision's resnet18
(32x32 input), one process times N training steps (Adam, cross-entropy, the same
batches through the same ``DataLoader``) as:

- ``bare``: the plain loop;
- ``RangeTest``: the same loop under ``with RangeTest(...)`` with ``rt.record(loss)``;
- ``range_test()``: the one-call runner;
- ``RangeTest(confirm=)``: the loop under a RangeTest with a confirmation phase, the same N
  steps split between a sweep of N - 6 * (N // 8) points and 6 candidate runs of N // 8 steps
  (each from the snapshot, restored between runs): the confirmation's cost beside the bare steps
  (benches of at least 64 steps);
- ``torch-lr-finder``: ``LRFinder(...).range_test(...)`` then ``reset()``;
- ``lightning``: ``Tuner(trainer).lr_find(...)`` (Trainer built outside the timer).

Each timed run covers the whole test: snapshot, N steps, restore and (for the libraries
that do it) the analysis; its setup (a fresh optimizer from the same initial state,
Lightning's Trainer) and a ``gc.collect()`` happen just before it, outside the timer,
the same for every method. After one untimed warm-up run of each method, the objects
alive then (the imports', the models') are frozen out of the collector
(``gc.freeze()``), so that collection costs microseconds, not the ~0.2 s a full pass
over them takes, and no timed run pays for one. Then ``--repeats`` rounds each run every
method in a rotating order, and every run of a method is paired with a bare run right
next to it: bare then method on odd rounds, method then bare on even ones (so neither
the first nor the second place of a pair is favoured over the rounds). A method's ratio
is the median over rounds of (its run / the bare run of its pair), shown with the
interquartile range of those ratios; adjacent pairs see nearly the same machine load, so
the slow drifts of a shared machine mostly cancel. The ``bare`` row is the null pair:
bare paired with a second bare run by the same rule, so its ratio (ideally 1.000x) and
IQR show how much spread the measurement alone gives; its median and min–max time are
over all bare runs of the model (every pair's). The table also gives each method's
median time and min–max, and the ratio of its fastest run to the fastest bare run (the
least disturbed runs). On CPU the clock is this process's CPU time
(``time.process_time``), which other processes on a shared machine disturb far less than
wall time; on CUDA it is wall time with the device synchronised (``--clock`` overrides).
The LR range is kept low enough (1e-6 to 1e-3) that no sweep stops early, and every run
is checked to have taken N steps. Then: the bytes each snapshot mode holds against the
size of model + gradients + optimizer state (and the peak resident memory a take +
restore adds), and the host-sync calls the library makes per step.

Run: ``python benchmarks/overhead.py`` (about 7 minutes on 2 cores; ``--quick`` for a smoke run).
``benchmarks/instructions.py`` counts instructions instead: deterministic, where timings are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import torch_lrrange
from torch_lrrange import RangeTest, Snapshot, range_test
from torch_lrrange import _divergence as divergence
from torch_lrrange._confirmation import COUNT
from torch_lrrange.demo import LeNet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from _sync_counter import SyncCounter

START_LR, END_LR = 1e-6, 1e-3
#: Benches of fewer steps skip ``RangeTest(confirm=)``: its sweep would be too short to place candidates.
CONFIRMED_MIN_STEPS = 64
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = time.process_time


def _resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


# name: (model factory, input shape, batch size, steps, rounds); an even count of rounds puts bare first in half
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, int, int]] = {
    "mlp": (lambda: nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)), (32,), 64, 400, 30),
    "lenet": (LeNet, (1, 28, 28), 32, 64, 20),
    "resnet18": (_resnet18, (3, 32, 32), 16, 16, 6),
}


class Bench:
    """One model, its fixed initial state, batches and loader; each method starts from the same state."""

    def __init__(self, name: str, device: torch.device, steps: int | None = None) -> None:
        factory, shape, batch, default_steps, _ = MODELS[name]
        self.name, self.device, self.steps = name, device, steps or default_steps
        torch.manual_seed(0)
        self.model = factory().to(device)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        batches = [(torch.randn(batch, *shape), torch.randint(0, 10, (batch,))) for _ in range(self.steps)]
        self.batches = [(x.to(device), y.to(device)) for x, y in batches]
        self.loader = DataLoader(self.batches, batch_size=None, shuffle=False)

    def fresh_optimizer(self) -> torch.optim.Optimizer:
        self.model.to(self.device)  # Lightning's teardown moves the model to the CPU
        self.model.load_state_dict(self.initial)
        self.model.zero_grad(set_to_none=True)
        return torch.optim.Adam(self.model.parameters(), lr=START_LR)

    def state_bytes(self, optimizer: torch.optim.Optimizer) -> int:
        """Bytes of parameters, buffers, gradients and optimizer state."""
        tensors = [*self.model.state_dict().values()]
        tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
        tensors += [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def train_step(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    # --- the methods: each runs the whole test and returns the number of steps taken

    def bare(self, optimizer: torch.optim.Optimizer) -> int:
        steps = 0
        for x, y in self.loader:
            self.train_step(optimizer, x, y)
            steps += 1
        return steps

    def range_test_context(self, optimizer: torch.optim.Optimizer, snapshot: str = "device") -> int:
        with RangeTest(
            self.model,
            optimizer,
            start_lr=START_LR,
            end_lr=END_LR,
            num_steps=self.steps,
            snapshot=snapshot,
            confirm=False,
        ) as rt:
            for x, y in rt.batches(self.loader):
                rt.record(self.train_step(optimizer, x, y))
        assert rt.result is not None
        return len(rt.result.losses)

    def range_test_confirmed(self, optimizer: torch.optim.Optimizer) -> int:
        """A sweep and a confirmation phase in N steps in all (see the module docstring)."""
        runs = self.steps // 8
        with RangeTest(
            self.model,
            optimizer,
            start_lr=START_LR,
            end_lr=END_LR,
            num_steps=self.steps - COUNT * runs,
            confirm=runs,
        ) as rt:
            for x, y in rt.batches(self.loader):
                rt.record(self.train_step(optimizer, x, y))
        assert rt.result is not None and rt.result.confirmation is not None, rt.result
        return len(rt.result.losses) + rt.result.confirmation.cost

    def range_test_call(self, optimizer: torch.optim.Optimizer) -> int:
        result = range_test(
            self.model,
            optimizer,
            self.loader,
            lambda m, b: F.cross_entropy(m(b[0]), b[1]),
            start_lr=START_LR,
            end_lr=END_LR,
            num_steps=self.steps,
            confirm=False,
        )
        return len(result.losses)

    def lr_finder(self, optimizer: torch.optim.Optimizer) -> int:
        from torch_lr_finder import LRFinder

        finder = LRFinder(self.model, optimizer, nn.CrossEntropyLoss(), device=self.device)
        finder.range_test(self.loader, start_lr=START_LR, end_lr=END_LR, num_iter=self.steps, diverge_th=1e30)
        finder.reset()
        return len(finder.history["lr"])

    def lightning(self, optimizer: torch.optim.Optimizer, trainer: Any) -> int:
        from pytorch_lightning.tuner import Tuner

        finder = Tuner(trainer).lr_find(
            _lightning_module(self.model, optimizer),
            train_dataloaders=self.loader,
            min_lr=START_LR,
            max_lr=END_LR,
            num_training=self.steps,
            early_stop_threshold=None,
            update_attr=False,
        )
        return len(finder.results["lr"])


def _lightning_module(model: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
    import pytorch_lightning as pl

    class Wrapped(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return optimizer

    return Wrapped()


def _lightning_trainer(root: str, device: torch.device) -> Any:
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=1,
    )


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings(NamedTuple):
    """One model's timed rounds: each method's run times, and its ratios to the bare run it was paired with."""

    times: dict[str, list[float]]  # "bare": every bare run of every pair
    ratios: dict[str, list[float]]  # per round: method run / its adjacent bare run
    rounds: int


def _timed(bench: Bench, name: str, prepare: Callable[[], Callable[[], int]]) -> float:
    """One timed run of a method: set up and collect garbage outside the timer, check the steps taken."""
    run = prepare()
    gc.collect()
    _synchronize(bench.device)
    start = _clock()
    with _quiet():
        steps = run()
    _synchronize(bench.device)
    elapsed = _clock() - start
    if steps != bench.steps:
        raise RuntimeError(f"{name} on {bench.name} took {steps} steps, not {bench.steps}")
    return elapsed


def method_runners(bench: Bench, root: str) -> dict[str, Callable[[], Callable[[], int]]]:
    """Per method (the peers' when installed), a setup that returns the run: setup stays outside any measure.

    Each run does the whole test from the bench's initial state and returns the steps it took;
    ``root`` holds Lightning's files.
    """

    def plain(method: Callable[[torch.optim.Optimizer], int]) -> Callable[[], Callable[[], int]]:
        def prepare() -> Callable[[], int]:
            optimizer = bench.fresh_optimizer()
            return lambda: method(optimizer)

        return prepare

    def lightning() -> Callable[[], int]:  # the Trainer is built in the setup
        trainer = _lightning_trainer(root, bench.device)
        optimizer = bench.fresh_optimizer()
        return lambda: bench.lightning(optimizer, trainer)

    methods: dict[str, Callable[[], Callable[[], int]]] = {
        "bare": plain(bench.bare),
        "RangeTest": plain(bench.range_test_context),
        "range_test()": plain(bench.range_test_call),
    }
    if bench.steps >= CONFIRMED_MIN_STEPS:
        methods["RangeTest(confirm=)"] = plain(bench.range_test_confirmed)
    if _available("torch_lr_finder"):
        methods["torch-lr-finder"] = plain(bench.lr_finder)
    if _available("pytorch_lightning"):
        methods["lightning"] = lightning
    return methods


def time_methods(bench: Bench, repeats: int) -> Timings:
    """Each method paired with a bare run next to it, in a rotating order; one unpaired warm-up round first.

    Within a round every pair has the same order, bare first on odd rounds and the method first on even
    ones. ``bare`` is paired with a second bare run (the null pair: its ratios show the spread of the
    measurement itself).
    """
    methods = method_runners(bench, tempfile.mkdtemp(prefix="lrrange_bench_"))
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: every method once, untimed
        _timed(bench, name, methods[name])
    gc.collect()
    gc.freeze()  # the imports' and the warm-up's long-lived objects: later collections skip them
    try:
        for rnd in range(1, repeats + 1):
            shift = rnd % len(names)
            for name in names[shift:] + names[:shift]:
                slots = ("bare", name) if rnd % 2 else (name, "bare")
                first, second = (_timed(bench, slot, methods[slot]) for slot in slots)
                bare_t, method_t = (first, second) if rnd % 2 else (second, first)
                times["bare"].append(bare_t)
                times[name].append(method_t)  # for "bare": the second bare run of the null pair
                ratios[name].append(method_t / bare_t)
    finally:
        gc.unfreeze()
    return Timings(times, ratios, repeats)


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the peers' progress bars, prints and warnings (the same for every method)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        warnings.simplefilter("ignore")
        yield


def _rss() -> tuple[int, int]:
    """(current, peak) resident bytes of this process, from /proc (Linux); (0, 0) elsewhere."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
    except OSError:
        return 0, 0
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def snapshot_memory(bench: Bench) -> list[tuple[str, int, int, int, int]]:
    """Per mode: (mode, state bytes, snapshot bytes, bytes held on the model's device, peak RSS added)."""
    optimizer = bench.fresh_optimizer()
    x, y = bench.batches[0]
    bench.train_step(optimizer, x, y)  # gradients and Adam state exist
    state = bench.state_bytes(optimizer)
    rows = []
    for mode in ("device", "cpu", "disk"):
        on_device = 0
        if bench.device.type == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
        peak_ok = _reset_peak_rss()
        rss_before, _ = _rss()
        snap = Snapshot.take(bench.model, optimizer, where=mode)
        snap.restore()
        _, peak = _rss()
        if bench.device.type == "cuda":
            on_device = torch.cuda.memory_allocated() - before
        else:
            store = snap._store
            on_device = sum(t.numel() * t.element_size() for t in store._tensors.values()) if store else 0
        rows.append((mode, state, snap.nbytes, on_device, peak - rss_before if peak_ok else -1))
        snap.release()
    return rows


def library_costs(bench: Bench) -> tuple[float, int, int, float, float, float]:
    """Two sweeps: one counting the library's host-sync calls, one timing its own work apart from the steps.

    Returns (host-sync calls per step inside record(), such calls in enter + exit,
    divergence.to_host reads, seconds in enter, mean seconds per record() call,
    seconds in exit). The counted sweep takes the accelerator's read path (one staged
    tensor per window) also on CPU, where windows are otherwise read straight from host
    memory (value by value: calls that wait for nothing there). The timed sweep runs
    the default path without the counting mode, which slows every torch call.
    """
    to_host_calls = 0
    original = divergence.to_host

    def counting(window: Any) -> list[float]:
        nonlocal to_host_calls
        to_host_calls += 1
        return original(window)

    def sweep(in_steps: Any, outside: Any) -> tuple[float, float, float]:
        optimizer = bench.fresh_optimizer()
        record_s = 0.0
        tester = RangeTest(
            bench.model, optimizer, start_lr=START_LR, end_lr=END_LR, num_steps=bench.steps, confirm=False
        )
        with outside:
            start = _clock()
            rt = tester.__enter__()
            enter_s = _clock() - start
        for x, y in rt.batches(bench.loader):
            loss = bench.train_step(optimizer, x, y)
            _synchronize(bench.device)
            with in_steps:
                start = time.perf_counter()  # µs intervals: the cheap clock (process CPU time is a syscall)
                rt.record(loss)
                record_s += time.perf_counter() - start
        with outside:
            start = _clock()
            tester.__exit__(None, None, None)
            exit_s = _clock() - start
        return enter_s, record_s / bench.steps, exit_s

    in_steps, outside = SyncCounter(), SyncCounter()
    reads_host_memory = torch_lrrange._sweep.reads_host_memory
    divergence.to_host = counting
    torch_lrrange._sweep.reads_host_memory = lambda *args: False
    try:
        sweep(in_steps, outside)
    finally:
        divergence.to_host = original
        torch_lrrange._sweep.reads_host_memory = reads_host_memory
    timed = sweep(contextlib.nullcontext(), contextlib.nullcontext())
    return (in_steps.total / bench.steps, outside.total, to_host_calls, *timed)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); with one value, that value three times."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _fmt_mib(n: int) -> str:
    return "n/a" if n < 0 else f"{n / 2**20:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per model (default: per model)")
    parser.add_argument("--quick", action="store_true", help="few steps and rounds: a smoke run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=list(CLOCKS), default=None, help="cpu: process CPU time, wall: wall time")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: less noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCKS[args.clock or ("wall" if args.device.startswith("cuda") else "cpu")]
    device = torch.device(args.device)
    if _available("pytorch_lightning"):  # its loggers hold the real stderr: silence them by level
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(("pytorch_lightning", "lightning")):
                logging.getLogger(name).setLevel(logging.ERROR)
    print(
        f"torch {torch.__version__}, torch_lrrange {torch_lrrange.__version__}, device {device}, threads {args.threads}"
    )
    print(
        f"Adam, cross-entropy, LR {START_LR:g} -> {END_LR:g}; {'CPU' if _clock is time.process_time else 'wall'} time of the whole test (snapshot, steps, restore)\n"
    )

    table = []
    extras = []
    for name in args.models.split(","):
        repeats = args.repeats or (2 if args.quick else MODELS[name][4])
        bench = Bench(name, device, steps=16 if args.quick else None)
        timings = time_methods(bench, repeats)
        bare = timings.times["bare"]
        base = statistics.median(bare)
        for method, ts in timings.times.items():
            q1, ratio, q3 = _quartiles(timings.ratios[method])
            fastest = min(ts) / min(bare)
            table.append(
                (
                    name,
                    bench.steps,
                    method,
                    statistics.median(ts),
                    min(ts),
                    max(ts),
                    ratio,
                    q1,
                    q3,
                    fastest,
                    timings.rounds,
                )
            )
        extras.append((bench, snapshot_memory(bench), library_costs(bench), base))

    print(
        "| model | steps | method | median ms | min–max ms | ratio to adjacent bare run: median (IQR) "
        "| fastest / fastest bare | rounds |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, steps, method, med, lo, hi, ratio, q1, q3, fastest, rounds in table:
        print(
            f"| {name} | {steps} | {method} | {med * 1e3:.1f} | {lo * 1e3:.1f}–{hi * 1e3:.1f} "
            f"| {ratio:.3f}x ({q1:.3f}–{q3:.3f}) | {fastest:.3f}x | {rounds} |"
        )

    print(
        "\n| model | snapshot | state MiB | snapshot MiB | on model's device MiB | peak RSS added MiB | snapshot / state |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for bench, rows, _, _ in extras:
        for mode, state, held, on_device, peak in rows:
            print(
                f"| {bench.name} | {mode} | {_fmt_mib(state)} | {_fmt_mib(held)} | {_fmt_mib(on_device)} | {_fmt_mib(peak)} | {held / state:.3f} |"
            )

    print(
        "\n| model | steps | host-sync calls per step in record() (accelerator path) | in enter + exit | to_host reads "
        "| record() µs/step | enter + exit ms | library time / bare loop |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for bench, _, (per_step, outside, reads, enter_s, record_s, exit_s), base in extras:
        share = (enter_s + exit_s + record_s * bench.steps) / base
        print(
            f"| {bench.name} | {bench.steps} | {per_step:.4f} | {outside} | {reads} "
            f"| {record_s * 1e6:.1f} | {(enter_s + exit_s) * 1e3:.1f} | {share:.2%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
