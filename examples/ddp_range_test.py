"""LR range test of a DDP model on scikit-learn's digits, one process per rank.

    torchrun --nproc-per-node 2 examples/ddp_range_test.py            # CPU (gloo)
    torchrun --nproc-per-node 4 examples/ddp_range_test.py --plot     # one GPU per rank (NCCL) where there are GPUs
    torchrun --nproc-per-node 2 examples/ddp_range_test.py --fsdp     # FSDP2 (fully_shard) instead of DDP

Each rank trains on its own shard of the data (``DistributedSampler``); the
losses are averaged over the ranks once per check window, so every rank stops at
the same step and returns the same result, which this script checks. Only rank
0 prints and writes the plot. Needs scikit-learn (and matplotlib for ``--plot``).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from torch_lrrange import RangeTest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="points in the sweep (default 100)")
    parser.add_argument("--batch-size", type=int, default=32, help="per-rank batch size (default 32)")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 (fully_shard) instead of DDP")
    parser.add_argument(
        "--plot",
        metavar="PNG",
        nargs="?",
        const="outputs/ddp_lr_range.png",
        help="write the plot (rank 0; default outputs/ddp_lr_range.png)",
    )
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    if not use_cuda:
        torch.set_num_threads(1)  # several ranks share this machine's cores

    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    dataset = TensorDataset(x, y)
    # the same number of batches on every rank: a requirement of DDP and of the range test
    sampler = DistributedSampler(dataset, shuffle=True, seed=0, drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    if args.fsdp:  # parameters, grads and optimizer state become DTensors: each rank snapshots its shard
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        model = fully_shard(model, mesh=mesh)
    else:
        model = DDP(model, device_ids=[device.index] if use_cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    with RangeTest(model, optimizer, start_lr=1e-5, end_lr=10.0, num_steps=args.steps) as rt:
        for xb, yb in rt.batches(loader):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            rt.record(loss)
    result = rt.result

    # every rank holds the same result, to the bit
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, result.to_dict())
    identical = all(g == gathered[0] for g in gathered)
    if rank == 0:
        kind = "FSDP2" if args.fsdp else "DDP"
        print(f"{kind}, {dist.get_world_size()} ranks ({dist.get_backend()}), identical results: {identical}")
        print(result)
        if result.usable:
            print(f"constant LR: {result.lr:.3g}   cyclic bounds: ({result.min_lr:.3g}, {result.max_lr:.3g})")
    if args.plot:
        if rank == 0:
            os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
        result.plot(path=args.plot)  # writes on rank 0 only
        if rank == 0:
            print(f"plot written to {args.plot}")
    dist.destroy_process_group()
    if not identical:
        raise SystemExit("the ranks returned different results")


if __name__ == "__main__":
    main()
