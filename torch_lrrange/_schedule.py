"""The LR range schedule: a pure function and the ``LRRangeScheduler`` that steps it."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from ._checks import (
    MODES,
    as_float,
    check_choice,
    check_int,
    check_lr_range,
    check_num_steps,
    check_optimizer,
    check_positive_float,
    is_per_group,
)

__all__ = ["LRRangeScheduler", "group_lrs", "lr_table", "range_lr", "set_group_lrs"]


def range_lr(step: Any, start_lr: float, end_lr: float, num_steps: int, mode: str = "exp") -> Any:
    """LR at 0-based ``step`` of a sweep from ``start_lr`` to ``end_lr`` over ``num_steps`` steps.

    ``"exp"``: ``start_lr * (end_lr / start_lr) ** (step / (num_steps - 1))``;
    ``"linear"``: ``start_lr + (end_lr - start_lr) * step / (num_steps - 1)``.
    Both endpoints are exact; steps past the end hold ``end_lr``. ``step`` may be
    an int (returns a float) or an array of ints (returns a float64 array).

    Example:
        >>> range_lr([0, 1, 2], 1e-3, 1e-1, 3)
        array([0.001, 0.01 , 0.1  ])
    """
    check_choice("mode", mode, MODES)
    num_steps = check_num_steps(num_steps)
    check_positive_float("start_lr", start_lr)  # one sweep: a float, not one per param group
    check_positive_float("end_lr", end_lr)
    (start_lr,), (end_lr,) = check_lr_range(start_lr, end_lr)
    steps = np.asarray(step)
    if steps.dtype.kind not in "iu" or np.any(steps < 0):
        raise ValueError(f"step must be an int >= 0 or an array of them, got {step!r}")
    lrs = np.array(_closed_form(steps.reshape(-1).tolist(), start_lr, end_lr, num_steps, mode), dtype=np.float64)
    lrs = lrs.reshape(steps.shape)
    return float(lrs) if lrs.ndim == 0 else lrs


def _closed_form(steps: Any, start_lr: float, end_lr: float, num_steps: int, mode: str) -> list[float]:
    """:func:`range_lr` at each of ``steps`` (ints >= 0, arguments already checked), as Python floats.

    Python floats, one at a time: numpy's vectorised ``pow`` may differ by an ulp.
    """
    last = num_steps - 1
    # Step 0 gives start_lr exactly; steps from the last on hold end_lr exactly. Rounding of
    # end_lr / start_lr (or end_lr - start_lr) may put a late step an ulp above end_lr: clamp.
    if mode == "exp":
        ratio = end_lr / start_lr
        return [end_lr if i >= last or (lr := start_lr * ratio ** (i / last)) > end_lr else lr for i in steps]
    span = end_lr - start_lr
    return [end_lr if i >= last or (lr := start_lr + span * i / last) > end_lr else lr for i in steps]


class LRRangeScheduler(LRScheduler):
    """Grows the LR each step from ``start_lr`` to ``end_lr``, for an LR range test.

    The LR of param group 0 at step ``i`` (0-based, ``i = last_epoch``) is
    :func:`range_lr`\\ ``(i, start_lr, end_lr, num_steps, mode)``. With scalar
    ``start_lr``/``end_lr``, the other groups keep their ratio to group 0 as it
    was at construction; with one value per group (lists), each group sweeps its
    own range. Creating the scheduler sets the step-0 LR; each :meth:`step` moves
    to the next, and steps past ``num_steps - 1`` hold ``end_lr``. A tensor
    ``lr`` is updated in place on its own device (no host sync, no recompiles of
    a compiled step). LR values are precomputed, so a step costs a dict write per
    group.

    Args:
        optimizer: a torch optimizer, or any object with ``param_groups`` whose
            dicts hold ``"lr"``.
        start_lr: first LR (float > 0, or one per param group). Default 1e-7.
        end_lr: last LR (float > start_lr, or one per param group). Default 10.
        num_steps: number of LR values, one per optimizer step (int >= 2). Default 100.
        mode: ``"exp"`` (geometric) or ``"linear"``. Default ``"exp"``.
        last_epoch: index of the last step, ``-1`` to start. Default -1.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = LRRangeScheduler(opt, start_lr=1e-4, end_lr=1.0, num_steps=5)
        >>> for _ in range(5):
        ...     opt.step()  # after loss.backward()
        ...     sched.step()
        >>> [round(lr, 6) for lr in sched.lrs]
        [0.0001, 0.001, 0.01, 0.1, 1.0]
    """

    def __init__(
        self,
        optimizer: Any,
        start_lr: float | list[float] = 1e-7,
        end_lr: float | list[float] = 10.0,
        num_steps: int = 100,
        mode: str = "exp",
        last_epoch: int = -1,
    ) -> None:
        check_optimizer(optimizer)
        groups = optimizer.param_groups
        per_group = is_per_group(start_lr, end_lr)
        starts, ends = check_lr_range(start_lr, end_lr, len(groups) if per_group else None)
        num_steps = check_num_steps(num_steps)
        mode = check_choice("mode", mode, MODES)
        last_epoch = check_int("last_epoch", last_epoch, minimum=-1)
        if last_epoch == -1:
            base = [as_float(g["lr"]) for g in groups]
        else:
            missing = [i for i, g in enumerate(groups) if "initial_lr" not in g]
            if missing:
                raise KeyError(
                    f"param_groups{missing} lack 'initial_lr', needed to resume with last_epoch={last_epoch}"
                )
            base = [as_float(g["initial_lr"]) for g in groups]
        if not per_group:
            if base[0] <= 0 or not all(math.isfinite(b) and b >= 0 for b in base):
                raise ValueError(
                    f"param group LRs must be finite, >= 0 and > 0 for group 0 to keep their ratios, got {base}"
                )
            ratios = [b / base[0] for b in base]
            starts = [starts[0] * r for r in ratios]
            ends = [ends[0] * r for r in ratios]  # ratios[0] == 1.0: group 0's endpoints stay exact
        table = lr_table(starts, ends, num_steps, mode)  # checks the ranges
        if last_epoch == -1:  # only once every check passed: a refused call leaves the groups untouched
            for group in groups:
                lr = group["lr"]
                group.setdefault("initial_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)
        self.optimizer = optimizer
        self.start_lrs = starts
        self.end_lrs = ends
        self.num_steps = num_steps
        self.mode = mode
        self.base_lrs = [as_float(g["initial_lr"]) for g in groups]
        self._table = table
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()

    @property
    def lrs(self) -> list[float]:
        """LRs of param group 0 at every step of the sweep, in order."""
        return [row[0] for row in self._table]

    @property
    def current_lrs(self) -> tuple[float, ...]:
        """The LR of each param group set by the last step, as floats (no tensor is made, unlike ``get_last_lr``)."""
        return self._row

    def get_lr(self) -> list[float | torch.Tensor]:
        """LR of each param group at the current step (``last_epoch``)."""
        return list(self._table[min(self.last_epoch, self.num_steps - 1)])

    def get_last_lr(self) -> list[float | torch.Tensor]:
        """The LR of each param group set by the last step; a tensor LR gives a new tensor (a copy, never an alias)."""
        return [
            torch.tensor(v, dtype=g["lr"].dtype, device=g["lr"].device) if isinstance(g["lr"], torch.Tensor) else v
            for v, g in zip(self._last_lr, self.optimizer.param_groups)
        ]

    def step(self, epoch: int | None = None) -> None:
        """Move every param group to the LR of the next step (or of step ``epoch``)."""
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
        else:
            warnings.warn(
                "passing epoch to step() is deprecated; call step() once per optimizer step", UserWarning, stacklevel=2
            )
            self.last_epoch = check_int("epoch", epoch, minimum=0)
        values = self._table[min(self.last_epoch, self.num_steps - 1)]
        set_group_lrs(self.optimizer, values)
        self._row = values  # the table row: the LR of each group now (floats)
        self._last_lr = list(values)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (everything but the optimizer), as in torch's schedulers."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_table")}
        return {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`; the LR table is rebuilt from it.

        The new table is built (and so the state checked) before anything changes.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"state_dict must be a dict from LRRangeScheduler.state_dict(), got {type(state_dict).__name__}"
            )
        state = {k: v for k, v in state_dict.items() if k != "_table"}
        merged = {**self.__dict__, **state}
        if len(merged["start_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict holds LRs for {len(merged['start_lrs'])} param groups, the optimizer has "
                f"{len(self.optimizer.param_groups)}"
            )
        table = lr_table(merged["start_lrs"], merged["end_lrs"], merged["num_steps"], merged["mode"])
        self.__dict__.update(state)
        self._table = table


def lr_table(starts: list[float], ends: list[float], num_steps: int, mode: str) -> list[tuple[float, ...]]:
    """Row ``i``: the LR of each param group at step ``i``; checks its arguments first.

    Raises ``ValueError`` when a group's range is too narrow for ``num_steps``
    distinct LRs (float rounding would repeat values).
    """
    check_choice("mode", mode, MODES)
    num_steps = check_num_steps(num_steps)
    columns = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        check_lr_range(start, end)
        column = _closed_form(range(num_steps), start, end, num_steps, mode)
        if any(b <= a for a, b in itertools.pairwise(column)):
            where = "" if len(starts) == 1 else f" (param group {i})"
            raise ValueError(
                f"start_lr={start!r} and end_lr={end!r}{where} are too close for {num_steps} distinct LRs: "
                "widen the range or lower num_steps"
            )
        columns.append(column)
    return list(zip(*columns))


def set_group_lrs(optimizer: Any, lrs: Any) -> None:
    """Write one LR per param group: a tensor ``lr`` is filled in place on its device (no host sync, its
    identity kept for a compiled step), a float replaced."""
    for group, lr in zip(optimizer.param_groups, lrs):
        current = group["lr"]
        if isinstance(current, torch.Tensor):
            current.fill_(lr)
        else:
            group["lr"] = lr


def group_lrs(lr: float, starts: list[float], ends: list[float], mode: str) -> list[float]:
    """The LR of each param group when group 0's is ``lr``, keeping the groups' ratios of a sweep.

    The ratios are those of the sweep from ``starts`` to ``ends`` (one per
    group, as :func:`lr_table` takes them) at the point where group 0 reaches
    ``lr``; outside the sweep's range, those of its nearest end. Group 0 gets
    ``lr`` itself.

    Example:
        >>> group_lrs(0.01, [1e-4, 1e-5], [1.0, 0.1], "exp")
        [0.01, 0.001]
    """
    start, end = starts[0], ends[0]
    if mode == "exp":
        t = math.log(lr / start) / math.log(end / start)
    else:
        t = (lr - start) / (end - start)
    t = min(max(t, 0.0), 1.0)
    at = [s * (e / s) ** t if mode == "exp" else s + (e - s) * t for s, e in zip(starts, ends)]
    return [lr] + [lr * a / at[0] for a in at[1:]]
