"""The glue to ``torch.distributed``: losses averaged over ranks, one decision for all.

With an initialised process group of more than one rank, each window of
recorded losses is averaged over the ranks with one ``all_reduce`` (never one
per step), so every rank sees the same losses, takes the same divergence
decision at the same step and returns the same result.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LossReducer", "world"]


def world(process_group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``process_group``; ``(0, 1)`` without torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise ValueError("process_group was given but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(process_group), dist.get_world_size(process_group)


class LossReducer:
    """Averages windows of losses over the ranks of ``process_group``."""

    def __init__(self, process_group: Any = None) -> None:
        self.process_group = process_group
        self.rank, self.world_size = world(process_group)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    def average(self, window: torch.Tensor) -> torch.Tensor:
        """The mean of ``window`` over ranks (in place; one collective)."""
        if self.world_size == 1:
            return window
        import torch.distributed as dist

        dist.all_reduce(window, op=dist.ReduceOp.SUM, group=self.process_group)
        return window.div_(self.world_size)
