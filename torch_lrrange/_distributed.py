"""The glue to ``torch.distributed``: losses averaged over ranks, one decision for all.

With an initialised process group of more than one rank, each window of
recorded losses is averaged over the ranks with one ``all_reduce`` (never one
per step; the final partial window is the last one), so every rank reads the
same losses, takes the same divergence decision at the same step and returns
the same result, identical to the bit: every rank receives the same sum and
divides it by the same world size.

Contract: every rank records the same number of points per sweep, with the
same ``num_steps``, ``check_every`` and ``repeats``. Divergence (also a NaN on
one rank only: it makes the average NaN) and ``num_steps`` end the sweep on
every rank at the same step, so no rank is left in a collective. A one-shot
iterator that runs out on *some* ranks only breaks the contract: the ranks
that stop issue no further ``all_reduce``, and the others block in their next
one until the process group's timeout raises (DDP's own gradient all_reduce
blocks there too). Give every rank the same number of batches
(``DistributedSampler``, or a re-iterable loader, which is iterated again).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LossReducer", "is_rank_zero", "world"]


def world(process_group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``process_group``; ``(0, 1)`` without torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise ValueError("process_group was given but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(process_group), dist.get_world_size(process_group)


def is_rank_zero(process_group: Any = None) -> bool:
    """True on rank 0 of ``process_group`` (default: the world) and without torch.distributed."""
    return world(process_group)[0] == 0


def _collective_device(process_group: Any, device: torch.device) -> torch.device:
    """Where a tensor on ``device`` must be for the group's backend (NCCL takes CUDA tensors only)."""
    import torch.distributed as dist

    if device.type != "cpu":
        return device
    backend = str(dist.get_backend(process_group)).lower()
    if "gloo" in backend or "mpi" in backend or not torch.cuda.is_available():
        return device
    return torch.device("cuda", torch.cuda.current_device())


class LossReducer:
    """Averages windows of losses over the ranks of ``process_group`` (default: the world).

    ``rank`` and ``world_size`` are read once, at construction; with one rank
    :meth:`average` is the identity and issues no collective.
    """

    def __init__(self, process_group: Any = None) -> None:
        self.process_group = process_group
        self.rank, self.world_size = world(process_group)

    def average(self, window: torch.Tensor) -> torch.Tensor:
        """The mean of ``window`` over ranks, written into ``window`` (one ``all_reduce``).

        Asynchronous on CUDA like any collective: no host sync here.
        """
        if self.world_size == 1:
            return window
        import torch.distributed as dist

        target = window
        device = _collective_device(self.process_group, window.device)
        if device != window.device:
            target = window.to(device)
        dist.all_reduce(target, op=dist.ReduceOp.SUM, group=self.process_group)
        target.div_(self.world_size)
        if target is not window:
            window.copy_(target)
        return window
