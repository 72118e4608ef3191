"""Count the tensor calls that make the host wait for an accelerator.

Used by the tests (and ``benchmarks/overhead.py``) to hold the sweep to its sync budget.

Example:
    >>> with SyncCounter() as syncs:
    ...     loss.item()
    >>> syncs.total
    1
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.overrides import TorchFunctionMode

__all__ = ["SYNC_CALLS", "SyncCounter"]

# Tensor calls that wait for the device when the tensor lives on an accelerator.
SYNC_CALLS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__complex__"}
)


class SyncCounter(TorchFunctionMode):
    """Counts calls of :data:`SYNC_CALLS` made while active (on any device, so CPU runs count too)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in SYNC_CALLS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """All counted calls."""
        return sum(self.calls.values())
