"""FSDP2 on CUDA: snapshot and restore of sharded parameters and optimizer state, one result on every rank.

The CPU test (tests/test_distributed.py, gloo) covers FSDP2 where this torch
runs it on the CPU; this script checks the same on GPUs with NCCL: a model
sharded with ``fully_shard`` (parameters, grads and Adam state are DTensors,
each rank holding its shard) goes through a range test with each snapshot mode
(``device``, ``cpu``: pinned host copies, ``disk``); after each, every local
shard, grad and optimizer-state tensor must be back bit-exactly, and every rank
must hold the same result.

Run: ``python benchmarks/fsdp_cuda_check.py`` (spawns one rank per GPU, at most
``--ranks``; one GPU still checks DTensor handling, with a one-rank mesh) or
``torchrun --nproc-per-node N benchmarks/fsdp_cuda_check.py``. Exits 0 with a
message where CUDA or NCCL is absent; 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import torch
import torch.distributed as dist
from torch import nn

from torch_lrrange import RangeTest, Snapshot


def _local_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    def local(t: torch.Tensor) -> torch.Tensor:
        return (t.to_local() if hasattr(t, "to_local") else t).detach().clone()

    tensors = [local(v) for v in model.state_dict().values()]
    tensors += [local(p.grad) for p in model.parameters() if p.grad is not None]
    tensors += [local(v) for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return tensors


def _check(rank: int, world: int) -> list[str]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda", (world,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).cuda()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(rank)
    batches = [
        (torch.randn(16, 32, device="cuda", generator=g), torch.randint(0, 10, (16,), device="cuda", generator=g))
        for _ in range(8)
    ]

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    step(*batches[0])
    failures = []
    if type(model[0].weight).__name__ != "DTensor":
        failures.append(f"fully_shard left {type(model[0].weight).__name__} parameters, not DTensors")
    before = _local_state(model, optimizer)
    for where in ("device", "cpu", "disk"):
        with RangeTest(model, optimizer, start_lr=1e-5, end_lr=1.0, num_steps=20, snapshot=where, confirm=False) as rt:
            for x, y in rt.batches(batches):
                rt.record(step(x, y))
        after = _local_state(model, optimizer)
        if len(after) != len(before) or not all(torch.equal(a, b) for a, b in zip(before, after)):
            failures.append(f"snapshot={where}: a shard was not restored bit-exactly")
        results: list = [None] * world
        dist.all_gather_object(results, rt.result.to_dict())
        if any(r != results[0] for r in results):
            failures.append(f"snapshot={where}: the ranks returned different results")
    snapshot = Snapshot.take(model, optimizer, where="cpu")
    optimizer.zero_grad(set_to_none=True)
    snapshot.restore()
    if any(type(p.grad).__name__ != "DTensor" for p in model.parameters()):
        failures.append("grads restored after zero_grad(set_to_none=True) are not DTensors")
    return failures


def _rank_main(rank: int, world: int) -> int:
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        failures = _check(rank, world)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, failures)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        bad = [f"rank {r}: {f}" for r, fs in enumerate(gathered) for f in fs]
        print("\n".join(bad) if bad else f"FSDP2 on {world} GPU rank(s): all checks passed")
    return 1 if any(gathered) else 0


def _spawned(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    if _rank_main(rank, world):
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="most ranks to spawn, one per GPU (default 2)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: this check needs a CUDA GPU and torch.cuda.is_available() is False")
        return 0
    if not (dist.is_available() and dist.is_nccl_available()):
        print("skipped: this check needs NCCL and this torch build has no NCCL backend")
        return 0
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        print(f"skipped: torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard)")
        return 0
    if "RANK" in os.environ:  # started by torchrun
        return _rank_main(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    world = max(1, min(args.ranks, torch.cuda.device_count()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import torch.multiprocessing as mp

    try:
        mp.spawn(_spawned, args=(world, port), nprocs=world)
    except mp.ProcessRaisedException as err:
        print(err)
        return 1
    except mp.ProcessExitedException:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
