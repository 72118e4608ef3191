"""Keeps the sweep's LR in force when the loop's own objects change it behind the sweep's back.

A scheduler left in the training loop (``OneCycleLR``, ``CosineAnnealingLR``,
``ReduceLROnPlateau``...) or code of the user's own may write the param groups'
``lr`` (and, cycling momentum, ``momentum``/``betas``) between ``rt.record()``
and the next ``optimizer.step()``. The step would then use an LR the curve does
not show. :class:`GroupGuard` checks the groups right before every step of the
optimizer (a global optimizer step pre-hook, so also through wrappers such as
Accelerate's, whose inner torch optimizer shares the groups) and puts the
sweep's values back: ``result.lrs`` stays the LRs actually used, and the sweep
warns once, at the next ``rt.record()``, saying what moved.

Float LRs are compared by value. A tensor LR is compared by its in-place
version counter (``Tensor._version``), so nothing is read from the device.
Optimizers that are not ``torch.optim.Optimizer`` instances (and steps a
``GradScaler`` skips) run no hook: for them the groups are checked at
``rt.record()``, after the step, and a change is reported as possibly used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["GUARDED_KEYS", "GroupGuard"]

#: Param-group keys besides ``lr`` that schedulers move (cycle_momentum); others via ``hyperparams=``.
GUARDED_KEYS = ("momentum", "betas")


def _register_step_pre_hook(hook: Any) -> Any:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    # A plain function: a compiled optimizer.step() runs its hooks eagerly, around the graph
    # (tests/test_compile.py holds a compiled step with a tensor LR to one graph through a sweep).
    return register_optimizer_step_pre_hook(hook)


class GroupGuard:
    """Watches ``optimizer.param_groups`` during one sweep; :meth:`close` removes the hook.

    ``keys``: the non-LR group keys to hold at their current values (those
    every group has; tensor values are not watched). The sweep sets :attr:`row`
    (the LR of each group for the next step) after each of its LR changes, and
    calls :meth:`after_step` from ``record()`` unless the hook has seen the step
    (:attr:`stepped`), then :meth:`warn` once something :attr:`moved`.
    """

    def __init__(self, optimizer: Any, keys: tuple[str, ...] = GUARDED_KEYS) -> None:
        self.groups = optimizer.param_groups
        # per group: the group, the (key, value) pairs to hold, whether its LR is a tensor
        self._plan = [
            (g, tuple((k, g[k]) for k in keys if k in g and not _holds_tensor(g[k])), isinstance(g["lr"], torch.Tensor))
            for g in self.groups
        ]
        self.tensor_lr = any(tensor for _, _, tensor in self._plan)
        self.row: Sequence[float] = ()
        self.versions: list[int] = []
        self.stepped = False  # the hook saw a step since the last record()
        self.moved: list[str] = []
        self.warned = False
        self._handle = _register_step_pre_hook(self._pre_step)

    def expect(self, row: Sequence[float]) -> None:
        """The LRs the sweep just wrote (one per group), for the next step."""
        self.row = row
        if self.tensor_lr:
            self.versions = [g["lr"]._version if tensor else 0 for g, _, tensor in self._plan]

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if optimizer.param_groups is self.groups:  # not another optimizer
            self.stepped = True
            self._enforce("before a step")

    def after_step(self) -> None:
        """A step the hook did not see (no torch hook, or skipped by a GradScaler): check the groups now."""
        self._enforce("before a step that ran no optimizer hook (it may have used it)")

    def recorded(self, stacklevel: int) -> None:
        """A step was recorded: check the groups if no hook saw it, then warn once about what moved.

        ``stacklevel`` counts from the caller, as for :meth:`warn`.
        """
        if self.stepped:
            self.stepped = False
        else:
            self.after_step()
        if self.moved and not self.warned:
            self.warn(stacklevel + 1)

    def warn(self, stacklevel: int) -> None:
        """Warn once about what moved; ``stacklevel`` counts from the caller."""
        self.warned = True
        warnings.warn(
            f"the range test's param-group values were changed behind its back ({'; '.join(self.moved[:3])}): "
            "a scheduler stepped in the loop, or code of your own? The sweep put its own values back before "
            "each optimizer step, so result.lrs holds the LRs used; remove scheduler.step() from the loop "
            "while the range test runs.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )

    def _enforce(self, when: str) -> None:
        for i, ((group, held, tensor), lr) in enumerate(zip(self._plan, self.row)):
            current = group["lr"]
            if tensor and isinstance(current, torch.Tensor):
                if current._version != self.versions[i]:
                    self.moved.append(f"group {i} lr set in place {when}")
                    current.fill_(lr)
                    self.versions[i] = current._version
            elif isinstance(current, torch.Tensor) or current != lr:
                self.moved.append(f"group {i} lr {lr:.4g} -> {_described(current)} {when}")
                group["lr"] = lr
            for key, value in held:
                if group[key] != value:
                    self.moved.append(f"group {i} {key} {value!r} -> {group[key]!r} {when}")
                    group[key] = value

    def close(self) -> None:
        self._handle.remove()


def _described(value: Any) -> str:
    return "a tensor" if isinstance(value, torch.Tensor) else f"{value!r}"


def _holds_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (
        isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value)
    )
