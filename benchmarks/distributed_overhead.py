"""What the distributed glue costs: a DDP loop at 2 ranks (gloo, CPU), with and without the range test.

Two processes on the loopback interface each time N DDP training steps (a small
MLP, SGD, its own batches), the methods interleaved in a rotating order,
``--repeats`` times after one warm-up round:

- ``bare``: the plain DDP loop;
- ``RangeTest, per rank``: the loop under ``RangeTest`` with a one-rank
  ``process_group`` (no loss averaging: the range test's own cost);
- ``RangeTest, averaged``: the loop under ``RangeTest`` on the world group
  (losses averaged over the 2 ranks, one ``all_reduce`` per check window).

Each run starts and ends at a barrier and is timed on rank 0, so it covers the
slower rank; it includes the snapshot, the restore and the analysis. The LR
range (1e-6 to 1e-3) is low enough that no sweep stops early. The table gives
the median wall time, min-max, and the ratio of medians to ``bare``; the last
lines count the collectives the glue issued and time them alone (the same
number of ``all_reduce`` calls on windows of 8 losses, no training).

Run: ``python benchmarks/distributed_overhead.py`` (about a minute on 2 cores; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from torch_lrrange import RangeTest
from torch_lrrange._distributed import LossReducer

WORLD = 2
METHODS = ("bare", "RangeTest, per rank", "RangeTest, averaged")


def _run(method: str, model, optimizer, batches, steps: int, groups) -> int:
    def step(x, y) -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    if method == "bare":
        for x, y in batches[:steps]:
            step(x, y)
        return 0
    group = groups[dist.get_rank()] if method == "RangeTest, per rank" else None
    calls = 0
    real = dist.all_reduce

    def counted(*args, **kwargs):  # the collectives RangeTest issues (DDP's own go through its C++ reducer)
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    dist.all_reduce = counted
    try:
        with RangeTest(
            model, optimizer, start_lr=1e-6, end_lr=1e-3, num_steps=steps, process_group=group, confirm=False
        ) as rt:
            for x, y in rt.batches(batches):
                rt.record(step(x, y))
    finally:
        dist.all_reduce = real
    assert len(rt.result.lrs) == steps, "the sweep stopped early"
    return calls


def _worker(rank: int, port: int, steps: int, repeats: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's own connections on the loopback too
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    groups = [dist.new_group([r]) for r in range(WORLD)]  # every rank takes part in creating each group
    torch.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(rank)
    batches = [(torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)) for _ in range(steps)]

    times: dict[str, list[float]] = {m: [] for m in METHODS}
    calls = 0
    for round_ in range(repeats + 1):  # round 0 warms up
        order = METHODS[round_ % 3 :] + METHODS[: round_ % 3]
        for method in order:
            dist.barrier()
            start = time.perf_counter()
            n = _run(method, model, optimizer, batches, steps, groups)
            dist.barrier()
            elapsed = time.perf_counter() - start
            if round_:
                times[method].append(elapsed)
            if method == "RangeTest, averaged":
                calls = n
    # the glue alone: the same collectives as a sweep, without the training steps
    reducer = LossReducer()
    windows = [torch.zeros(min(8, steps - i)) for i in range(0, steps, 8)]
    glue = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        for window in windows:
            reducer.average(window)
        dist.barrier()
        glue.append(time.perf_counter() - start)
    if rank == 0:
        bare = statistics.median(times["bare"])
        print(f"DDP, {WORLD} ranks (gloo, CPU, 1 thread each), {steps} steps, median of {repeats} runs")
        print(f"{'method':<22}{'median s':>10}{'min-max s':>16}{'ratio':>8}{'ms/step':>9}")
        for method in METHODS:
            t = times[method]
            med = statistics.median(t)
            print(
                f"{method:<22}{med:>10.3f}{f'{min(t):.3f}-{max(t):.3f}':>16}{med / bare:>8.3f}{1e3 * med / steps:>9.3f}"
            )
        print(f"collectives issued by the glue per sweep: {calls} (for {steps} steps; check_every=8)")
        med = statistics.median(glue)
        print(
            f"the glue alone ({len(windows)} all_reduce of <= 8 floats, between barriers): "
            f"{1e3 * med:.2f} ms median = {med / bare:.3f} of the bare loop"
        )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per run (default 200)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 steps, 2 rounds")
    args = parser.parse_args()
    steps, repeats = (40, 2) if args.quick else (args.steps, args.repeats)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, steps, repeats), nprocs=WORLD)


if __name__ == "__main__":
    main()
