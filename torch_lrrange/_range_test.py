"""``RangeTest``: the LR range test as a context manager around the user's own loop."""

from __future__ import annotations

import dataclasses
import logging
import numbers
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from . import _distributed as distributed
from ._checks import (
    MODES,
    check_bool,
    check_choice,
    check_int,
    check_loader,
    check_lr_range,
    check_num_steps,
    check_optimizer,
    check_stateful,
    check_threshold,
    is_per_group,
)
from ._confirmation import COUNT, CandidateRuns, Confirmation, auto_steps, confirm_steps
from ._divergence import DEFAULT_THRESHOLD
from ._hyperparams import check_hyperparams, hyperparam_groups, set_hyperparams
from ._loaders import LoaderState
from ._progress import Progress
from ._result import RangeTestResult, analyze
from ._schedule import lr_table
from ._snapshot import WHERE, Snapshot
from ._sweep import Sweep
from .analysis import METHODS

__all__ = ["RangeTest"]

logger = logging.getLogger("torch_lrrange")

T = TypeVar("T")

_active_lock = threading.Lock()
_active_optimizers: set[int] = set()


class RangeTest:
    """An LR range test around your own training loop; everything is restored on exit.

    On entry the model, optimizer, ``extra_state`` objects and RNG states are
    snapshotted and the LR is set to ``start_lr``. Call :meth:`record` once per
    optimizer step, after ``optimizer.step()``: it stores the loss (on its
    device, no host sync) and moves the LR to the next value. The sweep ends
    after ``num_steps`` points, or once it diverges (see
    :mod:`torch_lrrange._divergence`); :meth:`batches` and :attr:`done` tell
    the loop when to stop. On exit (also on an exception or KeyboardInterrupt,
    which then propagates) everything is restored bit-exactly, and after a
    normal exit :attr:`result` holds the :class:`RangeTestResult`.

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: a torch optimizer, or any object with ``param_groups``,
            ``state_dict()`` and ``load_state_dict()``.
        start_lr: first LR, float > 0 (or one per param group). Default 1e-7.
        end_lr: last LR, float > start_lr (or one per param group). Default 10.
        num_steps: points in the sweep, one per optimizer step, int >= 2. Default 100.
        mode: ``"exp"`` or ``"linear"`` LR growth. Default ``"exp"``.
        extra_state: objects with ``state_dict()``/``load_state_dict()`` to restore
            too (``GradScaler``, an LR scheduler, an EMA). Default none.
        snapshot: where the snapshot lives: ``"device"`` (clones beside the
            originals: fastest, one more copy of the state in device memory),
            ``"cpu"`` (pinned host copies: no device memory beyond the run's own;
            use it when the GPU is full) or ``"disk"`` (files: host memory bounded
            by the largest tensor). See :class:`Snapshot`. Default ``"device"``;
            on a CPU model ``"device"`` and ``"cpu"`` are the same.
        diverge_threshold: the sweep stops once the smoothed loss exceeds this
            multiple of the best smoothed loss, float > 1. Default 4.
        method: how the result reads the curve (see :data:`METHODS`). Default ``"default"``.
        repeats: sweeps to average, each from the same snapshot, int >= 1. Default 1.
        check_every: points per host read (divergence check), int >= 8. Default 8.
        process_group: the ``torch.distributed`` group to average losses over
            (one ``all_reduce`` per check window, so every rank stops at the same
            step and gets the same result; every rank must record the same number
            of points, see :mod:`torch_lrrange._distributed`); default the world
            group when one is initialised.
        progress: show a progress bar (None: when stderr is a terminal, on rank 0). Default None.
        hyperparams: param-group keys held at a value for the sweep (and every
            repeat), e.g. ``{"weight_decay": 1e-4}`` or ``{"betas": (0.95, 0.999)}``;
            restored with everything else. Every group must hold each key
            (``lr`` is swept and cannot be set). Default none.
        confirm: after the sweep, confirm the LR by short runs inside the same
            loop (:class:`~torch_lrrange.Confirmation`). Each of the 6 candidate
            LRs, half a decade apart below where the curve climbs back above its
            start, trains from the snapshot on the same batches: the loop must
            draw them from :meth:`batches`, which starts each run over. The one
            whose last 10 losses are lowest (or, with ``confirm_score``, whose
            score is lowest) gives ``result.lr``; the result keeps both readings
            (``result.suggestion``, ``result.confirmation``). ``None`` (the
            default): 100 optimizer steps per run, fewer when a step costs several
            gradient evaluations (the runs stay within 600 of them, see
            :meth:`record`'s ``evaluations``; LBFGS without counts is taken at its
            ``max_iter``), and only where it can run: a loop that does not draw from
            :meth:`batches`, or draws from a one-shot iterator, gets the sweep's
            reading with a note in ``result.warnings``. ``True``: 100 steps per
            run, and a ``UserWarning`` (or, for a one-shot iterator, a
            ``ValueError``) where it cannot run. An int >= 1: that many steps per
            run, as ``True``. ``False``: the sweep alone.
        confirm_score: called with no argument at the end of each candidate run
            (the model holds the run's weights), returns the run's score, lower
            is better (e.g. a validation loss, a tensor or a float); restore any
            state it changes. Default None (the run's last training losses).
            (``lr`` is swept and cannot be set). A group whose value for a key is 0 keeps it
            (the no-decay groups of biases and norms, a group without momentum; a tensor of
            zeros counts, a tuple only when every item is 0), unless every group holds 0; the
            groups left are in ``result.metadata["hyperparams_left"]``. Default none.
        keep_zero_groups: leave the param groups holding 0 alone as above. False writes
            ``hyperparams`` into every group. Default True.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> x = torch.randn(640, 10)
        >>> train_loader = list(zip(x.split(32), (x[:, 0] > 0).long().split(32)))
        >>> with RangeTest(model, optimizer, start_lr=1e-4, end_lr=10, num_steps=80) as rt:
        ...     for inputs, targets in rt.batches(train_loader):
        ...         optimizer.zero_grad()
        ...         loss = nn.functional.cross_entropy(model(inputs), targets)
        ...         loss.backward()
        ...         optimizer.step()
        ...         rt.record(loss)
        >>> lo, hi = rt.result.bounds  # model, optimizer and RNGs are back as they were
        >>> scheduler = rt.result.cyclic_lr(optimizer, step_size_up=2000)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        *,
        start_lr: float | list[float] = 1e-7,
        end_lr: float | list[float] = 10.0,
        num_steps: int = 100,
        mode: str = "exp",
        extra_state: Iterable[Any] = (),
        snapshot: str = "device",
        diverge_threshold: float = DEFAULT_THRESHOLD,
        method: str = "default",
        repeats: int = 1,
        check_every: int = 8,
        process_group: Any = None,
        progress: bool | None = None,
        hyperparams: dict[str, Any] | None = None,
        confirm: bool | int | None = None,
        confirm_score: Callable[[], torch.Tensor | float] | None = None,
        keep_zero_groups: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_optimizer(optimizer)
        per_group = is_per_group(start_lr, end_lr)
        starts, ends = check_lr_range(start_lr, end_lr, len(optimizer.param_groups) if per_group else None)
        self.num_steps = check_num_steps(num_steps)
        self.mode = check_choice("mode", mode, MODES)
        lr_table(starts, ends, self.num_steps, self.mode)  # refuses ranges too narrow for distinct LRs, now
        if isinstance(extra_state, (str, bytes)) or not isinstance(extra_state, Iterable):
            raise TypeError(
                f"extra_state must be a tuple or list of objects with state_dict(), got {type(extra_state).__name__}"
            )
        self.extra_state = tuple(extra_state)
        for i, obj in enumerate(self.extra_state):
            check_stateful(f"extra_state[{i}]", obj)
        self.snapshot_where = check_choice("snapshot", snapshot, WHERE)
        self.diverge_threshold = check_threshold(diverge_threshold)
        self.method = check_choice("method", method, tuple(METHODS))
        self.repeats = check_int("repeats", repeats, minimum=1)
        self.check_every = check_int("check_every", check_every, minimum=8)
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, got {type(progress).__name__}")
        self.hyperparams = check_hyperparams(hyperparams, optimizer)
        self.confirm_steps = self._asked_steps = confirm_steps(confirm)
        self._confirm_auto = confirm is None  # the default: confirm where it can, within the budget
        if confirm_score is not None and not callable(confirm_score):
            raise TypeError(f"confirm_score must be callable with no argument, got {type(confirm_score).__name__}")
        if self.confirm_steps == 1 and confirm_score is None:
            raise ValueError(
                "confirm=1 cannot tell the candidates apart: a run's only loss is taken before its update; "
                "give confirm >= 2 (or a confirm_score)"
            )
        self.confirm_score = confirm_score
        self.keep_zero_groups = check_bool("keep_zero_groups", keep_zero_groups)
        self._hyperparam_groups = hyperparam_groups(optimizer, self.hyperparams, self.keep_zero_groups)
        self.model = model
        self.optimizer = optimizer
        # as checked Python floats (also from numpy or tensor scalars): plain data in result.metadata
        self.start_lr: float | list[float] = starts if per_group else starts[0]
        self.end_lr: float | list[float] = ends if per_group else ends[0]
        self.process_group = process_group
        self.progress = progress
        self.result: RangeTestResult | None = None
        self._first_lr = starts[0]
        self._sweep: Sweep | None = None  # the repeat running now (the last one, after the block)
        self._recorder: Sweep | CandidateRuns | None = None  # what record() feeds: the sweep, then the candidate runs
        self._candidates: CandidateRuns | None = None
        self._curve: RangeTestResult | None = None  # the sweep's own reading, once the sweep is over
        self._notes: list[str] = []  # what limited the confirmation, for the result's warnings
        self._restarts = 0  # candidate runs begun: batches() starts its pass over at each
        self._one_shot = False  # the batches come from a one-shot iterator: no candidate run can start over
        self._extra_evaluations = 0  # gradient evaluations beyond one per recorded point (record(evaluations=))
        self._sweep_extra: int | None = None  # _extra_evaluations when the sweep ended (before any candidate run)
        self._runs: list[tuple[list[float], bool]] = []  # finished repeats: (losses, diverged)
        self._finished = False
        self._snapshot: Snapshot | None = None
        self._progress: Progress | None = None
        self._loaders: list[LoaderState] = []  # of batches(): put back on exit
        self._reducer: distributed.LossReducer | None = None
        self._active = False
        self._recording = False  # _active and not _finished, kept as one flag for record()'s hot path

    # --- context manager ------------------------------------------------------

    def __enter__(self) -> RangeTest:
        if self._active:
            raise RuntimeError("this RangeTest is already running; use a new RangeTest for another sweep")
        with _active_lock:
            if id(self.optimizer) in _active_optimizers:
                raise RuntimeError(
                    "this optimizer is already under a running RangeTest; nested tests on one optimizer are not supported"
                )
            _active_optimizers.add(id(self.optimizer))
        try:
            self._reducer = distributed.LossReducer(self.process_group)
            self._snapshot = Snapshot.take(self.model, self.optimizer, *self.extra_state, where=self.snapshot_where)
            self._progress = Progress(
                self.num_steps * self.repeats + COUNT * self.confirm_steps,
                enabled=self.progress,
                rank_zero=distributed.is_rank_zero(),
            )
            self.result = None
            self._runs = []
            self._finished = False
            self._warned_after_end = False
            self._loaders = []
            self._sweep = self._recorder = self._candidates = self._curve = None
            self._notes = []
            self._restarts = 0
            self.confirm_steps = self._asked_steps  # the default sizes its runs anew for each sweep
            self._one_shot = False
            self._extra_evaluations = 0
            self._sweep_extra = None
            self._sweep = self._recorder = self._new_sweep()
        except BaseException:
            try:
                if self._snapshot is not None:
                    self._snapshot.restore()  # the scheduler may already have set the LR
            finally:
                self._release()
            raise
        self._active = self._recording = True
        logger.debug(
            "range test started: %s to %s over %d steps (%s)", self.start_lr, self.end_lr, self.num_steps, self.mode
        )
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and not self._finished:
                self._end_early()  # the loop stopped early (a break): keep what was recorded
        finally:
            self._active = self._recording = False
            try:
                assert self._snapshot is not None
                self._snapshot.restore()
            finally:
                self._release()
        if exc_type is None:
            self.result = self._build_result()
            if distributed.is_rank_zero():  # global rank 0: one line per job, not one per rank
                logger.info("range test done: %r", self.result)

    def _release(self) -> None:
        """Free what the block holds and put the loaders back; each step runs even if one before it fails."""
        loaders, self._loaders = self._loaders, []
        try:
            if self._sweep is not None:
                self._sweep.release()
            if self._candidates is not None:
                self._candidates.release()
            if self._snapshot is not None:
                self._snapshot.release()
                self._snapshot = None
            if self._progress is not None:
                self._progress.close()
                self._progress = None
        finally:
            with _active_lock:
                _active_optimizers.discard(id(self.optimizer))
            for loader in loaders:
                loader.restore()

    # --- the sweep ----------------------------------------------------------

    def _new_sweep(self) -> Sweep:
        reducer, progress = self._reducer, self._progress
        assert reducer is not None and progress is not None, "only inside the block"
        set_hyperparams(self.optimizer, self.hyperparams, self._hyperparam_groups)
        done = len(self._runs) * self.num_steps
        return Sweep(
            self.optimizer,
            self.start_lr,
            self.end_lr,
            self.num_steps,
            self.mode,
            threshold=self.diverge_threshold,
            check_every=self.check_every,
            reducer=reducer,
            on_window=lambda step, lr, smoothed: progress.update(done + step, lr, smoothed, self._cost_label()),
            hold=tuple(self.hyperparams),
        )

    @property
    def done(self) -> bool:
        """True once every point is recorded or the sweep diverged (False before the block)."""
        return self._finished

    @property
    def confirming(self) -> bool:
        """True while the candidate runs of ``confirm=`` are under way (after the sweep, before :attr:`done`)."""
        return self._candidates is not None and not self._finished

    @property
    def candidate_run(self) -> int:
        """0 during the sweep; ``k`` during the ``k``-th candidate run of the confirmation (1 to 6).

        When it changes (inside :meth:`record`), the model and optimizer are back at
        the snapshot with the next candidate's LR: :meth:`batches` then starts its pass
        over, so that every run sees the same batches.
        """
        return self._restarts

    @property
    def step(self) -> int:
        """Points recorded so far in the current repeat, or steps in the current candidate run (0 before the block)."""
        return 0 if self._recorder is None else self._recorder.step

    @property
    def lr(self) -> float:
        """The LR of param group 0 for the next step (before the block: the first LR of the sweep)."""
        return self._first_lr if self._recorder is None else self._recorder.lr

    def record(self, loss: torch.Tensor | float, evaluations: int = 1) -> None:
        """Add the loss of the step just taken, then move the LR to the next value.

        Call once per optimizer step, after ``optimizer.step()``. ``loss`` is a
        0-dim (or one-element) tensor, kept on its device, or a float.
        ``evaluations``: gradient evaluations the step took, int >= 1 (an LBFGS
        step calls its closure several times; count them in the closure). The
        default confirmation sizes its runs by them, and the result records
        them. Default 1.
        """
        if evaluations != 1 or type(evaluations) is not int:
            self._count_evaluations(evaluations)
        # Hot path: a running sweep and a 0-dim tensor, checked with the fewest calls; no op beyond detach().
        if self._recording and type(loss) is torch.Tensor and loss.ndim == 0:
            ended = self._recorder.push(loss.detach())  # type: ignore[union-attr]
        else:
            value = self._take(loss)
            if value is None:
                return
            ended = self._recorder.push(value)  # type: ignore[union-attr]
        if ended:
            if self._candidates is None:
                self._end_repeat()
            else:
                self._end_candidate()

    def _count_evaluations(self, evaluations: Any) -> None:
        if isinstance(evaluations, bool) or not isinstance(evaluations, numbers.Integral):
            raise TypeError(f"evaluations must be an int >= 1 (gradient evaluations of the step), got {evaluations!r}")
        if evaluations < 1:
            raise ValueError(f"evaluations must be an int >= 1 (gradient evaluations of the step), got {evaluations!r}")
        if self._recording:
            self._extra_evaluations += int(evaluations) - 1

    def _take(self, loss: Any) -> torch.Tensor | float | None:
        """The checks and conversions of :meth:`record` off its hot path; None if the point is ignored."""
        if not self._active:
            raise RuntimeError("record() must be called inside the `with RangeTest(...)` block")
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(
                    f"loss must be a scalar (0-dim tensor or float), got a tensor of shape {tuple(loss.shape)}"
                )
            loss = loss.detach() if loss.dim() == 0 else loss.detach().reshape(())
        elif isinstance(loss, (bool, np.bool_)) or not isinstance(loss, numbers.Real):
            raise TypeError(f"loss must be a scalar tensor or a real number, got {type(loss).__name__}")
        else:
            loss = float(loss)  # numpy scalars too
        if self._finished:
            if not self._warned_after_end:
                warnings.warn(
                    "record() called after the sweep ended; the point is ignored (stop when rt.done is True)",
                    UserWarning,
                    stacklevel=3,
                )
                self._warned_after_end = True
            return None
        if not isinstance(loss, torch.Tensor):
            assert self._recorder is not None
            self._recorder.has_floats = True
        return loss

    def _end_repeat(self) -> None:
        """The sweep ran to ``num_steps`` or diverged: keep it, then start the next repeat from the snapshot."""
        sweep, snapshot, progress = self._sweep, self._snapshot, self._progress
        assert sweep is not None and snapshot is not None and progress is not None, "only inside the block"
        self._runs.append((sweep.close(), sweep.diverged))
        last = len(self._runs) == self.repeats
        started = last and self._start_confirmation()  # first: it sizes the display's total
        progress.update(len(self._runs) * self.num_steps, sweep.lr, sweep.reader.rule.smoothed, self._cost_label())
        if not last:
            snapshot.restore()
            self._sweep = self._recorder = self._new_sweep()
        elif not started:
            self._finished = True
            self._recording = False

    # --- the confirmation phase -----------------------------------------------

    def _start_confirmation(self) -> bool:
        """After the last repeat: begin the first candidate run, if ``confirm=`` asks and it can run."""
        self._sweep_extra = self._extra_evaluations
        started = self._begin_confirmation()
        if not started and self._progress is not None:
            self._progress.resize(self.num_steps * self.repeats)  # the display ends with the sweep
        return started

    def _begin_confirmation(self) -> bool:
        if not self.confirm_steps:
            return False
        curve = self._curve = self._build_curve()
        if curve.suggestion.climb_at is None:
            self._notes.append("the confirmation did not run: the curve has too few sane points to place candidates")
            return False
        if not self._loaders or self._one_shot:
            self._notes.append(
                "the confirmation did not run: the loop does not draw its batches from rt.batches(loader), "
                "so the candidate runs could not start over from the same batches"
                if not self._loaders
                else "the confirmation did not run: the batches come from a one-shot iterator, so the candidate "
                "runs could not start over from the same batches (pass the loader itself)"
            )
            if not self._confirm_auto:
                warnings.warn(self._notes[-1], UserWarning, stacklevel=4)
            return False
        if self._confirm_auto:
            self.confirm_steps = auto_steps(self._evaluations_per_step())
            assert self._progress is not None
            self._progress.resize(self.num_steps * self.repeats + COUNT * self.confirm_steps)
        sweep = self._sweep
        assert sweep is not None
        self._candidates = CandidateRuns(
            self.optimizer,
            curve.suggestion.climb_at,
            self.confirm_steps,
            starts=sweep.scheduler.start_lrs,
            ends=sweep.scheduler.end_lrs,
            mode=self.mode,
            reducer=self._reducer,  # type: ignore[arg-type]
            by="training" if self.confirm_score is None else "validation",
            hold=tuple(self.hyperparams),
        )
        self._begin_candidate()
        return True

    def _cost_label(self) -> str:
        """What the steps so far cost, for the progress display, when a step costs several gradients (LBFGS)."""
        if not self._extra_evaluations:
            return ""
        recorded = sum(len(losses) for losses, _ in self._runs)  # finished repeats, as recorded (also cut short)
        candidates = self._candidates
        if candidates is None:
            recorded += self._sweep.step if self._sweep is not None else 0  # the repeat under way
        else:  # a finished run's steps are in runs; the one under way has fewer than confirm_steps
            recorded += len(candidates.runs) * self.confirm_steps
            recorded += candidates.step if candidates.step < self.confirm_steps else 0
        return f"{recorded + self._extra_evaluations} gradient evaluations"

    def _evaluations_per_step(self) -> float:
        """The sweep's gradient evaluations per step: counted (``record(evaluations=)``), else LBFGS's
        ``max_iter`` (the closure calls a step may take), else 1."""
        if self._extra_evaluations:
            points = sum(len(losses) for losses, _ in self._runs)
            return (points + self._extra_evaluations) / max(points, 1)
        if isinstance(self.optimizer, torch.optim.LBFGS):
            return float(self.optimizer.param_groups[0].get("max_iter", 1))
        return 1.0

    def _begin_candidate(self) -> None:
        """Restore the snapshot and start the next candidate run; batches() then starts its pass over."""
        candidates, snapshot = self._candidates, self._snapshot
        assert candidates is not None and snapshot is not None
        snapshot.restore()
        set_hyperparams(self.optimizer, self.hyperparams, self._hyperparam_groups)
        candidates.begin()
        self._recorder = candidates
        self._restarts += 1

    def _end_candidate(self) -> None:
        """A candidate run has its steps: score it, then begin the next or finish."""
        candidates, progress = self._candidates, self._progress
        assert candidates is not None and progress is not None
        candidates.end_run(None if self.confirm_score is None else self.confirm_score())
        runs = len(candidates.runs)
        last = candidates.runs[-1][-1]  # already on the host: the run's last loss (or its score)
        position = self.num_steps * self.repeats + runs * self.confirm_steps
        cost = self._cost_label()
        phase = f"confirmed {runs}/{len(candidates.lrs)}" + (f", {cost}" if cost else "")
        progress.update(position, candidates.lrs[runs - 1], last, phase)
        if candidates.finished:
            self._finished = True
            self._recording = False
        else:
            self._begin_candidate()

    def _end_early(self) -> None:
        """The loop stopped before the last repeat ended: keep the finished repeats, or the partial first one.

        A partial repeat beside finished ones is dropped: averaging it in would
        shorten every finished curve to its length.
        """
        if self._candidates is not None:  # the sweep is complete; the confirmation is not
            self._candidates.release()
            self._notes.append(
                f"the confirmation stopped after {len(self._candidates.runs)} of {len(self._candidates.lrs)} "
                "candidate runs; the curve's own reading is kept"
            )
            self._finished = True
            self._recording = False
            return
        sweep = self._sweep
        assert sweep is not None
        losses = sweep.close()
        if not self._runs:
            self._runs.append((losses, sweep.diverged))
        elif losses:
            logger.info(
                "repeat %d stopped after %d of %d points and was dropped; the result averages the %d finished repeats",
                len(self._runs) + 1,
                len(losses),
                self.num_steps,
                len(self._runs),
            )
        self._finished = True
        self._recording = False

    def batches(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield the items of ``iterable`` unchanged until the sweep is done.

        A re-iterable loader that runs out is iterated again; a one-shot iterator
        that runs out ends the sweep early with a ``UserWarning``. Raises
        ``ValueError`` if ``iterable`` is empty.
        """
        if not self._active:
            raise RuntimeError("batches() must be used inside the `with RangeTest(...)` block")
        check_loader("batches()'s argument", iterable)
        one_shot = isinstance(iterable, Iterator)  # not iter(): that would start a DataLoader's workers
        if one_shot and self.confirm_steps and not self._confirm_auto:
            raise ValueError(
                "confirm= needs a re-iterable loader (a DataLoader, a list): every candidate run starts over from "
                f"the same batches, and a one-shot {type(iterable).__name__} cannot; pass the loader itself"
            )
        state = LoaderState(iterable, stacklevel=2)
        self._draws_from(state, one_shot=one_shot)
        while not self._finished:
            recorded, restarts = self._points(), self._restarts
            count = 0
            for item in iterable:
                count += 1
                yield item
                if self._finished:
                    return
                if self._restarts != restarts:
                    break
            if self._restarts != restarts:  # a candidate run began: the same batches again, from the start
                state.restore()
                continue
            if count == 0:
                raise ValueError(
                    "the loader is empty: it yielded no batch"
                    if recorded == 0
                    else "the loader yielded no batch on a new pass"
                )
            if one_shot:
                points = self._points()
                self._end_early()
                kept = len(self._runs)
                what = f"the {kept} finished repeat(s) are kept" if points >= self.num_steps else "its points are kept"
                warnings.warn(
                    f"the iterator ran out after {points} of {self.num_steps * self.repeats} points; the sweep "
                    f"ended early and {what} (pass a re-iterable loader)",
                    UserWarning,
                    stacklevel=2,
                )
                return
            if self._points() == recorded:
                raise RuntimeError(
                    "a whole pass over the loader recorded no point: call rt.record(loss) once per optimizer step"
                )

    def _draws_from(self, loaders: LoaderState, *, one_shot: bool) -> None:
        """The block's batches come from ``loaders``, put back on exit; their passes start over at each candidate
        run (:meth:`batches` does it; a trainer integration that drives its own loop does it itself), unless
        ``one_shot``, which leaves the confirmation out."""
        self._one_shot = self._one_shot or one_shot
        self._loaders.append(loaders)

    def _points(self) -> int:
        done = 0 if self._candidates is None else len(self._candidates.runs) * self.confirm_steps
        return len(self._runs) * self.num_steps + done + self.step

    # --- result -------------------------------------------------------------

    def _build_result(self) -> RangeTestResult:
        """The sweep's reading, with the confirmation's beside it when the candidate runs finished."""
        curve = self._curve if self._curve is not None else self._build_curve()
        notes = list(self._notes)
        candidates = self._candidates
        if candidates is not None and candidates.finished:
            try:
                chosen: Confirmation | None = candidates.choose()
            except ValueError as err:
                chosen = None
                notes.append(f"confirmation phase: {err}; the curve's own reading is kept")
            if chosen is not None:
                if self._extra_evaluations:
                    assert self._sweep_extra is not None  # set when the candidate runs began
                    chosen.evaluations = chosen.cost + self._extra_evaluations - self._sweep_extra
                if curve.suggestion.lr is None:
                    chosen.warnings.append("the LR comes from the confirmation phase alone: the curve gave none")
                curve.metadata["confirmation"] = chosen.to_dict()
                logger.info("confirmation phase: lr %.3g of %s (%s loss)", chosen.lr, chosen.candidates, chosen.by)
        if notes:
            curve.suggestion = dataclasses.replace(curve.suggestion, warnings=[*curve.suggestion.warnings, *notes])
        return curve

    def _build_curve(self) -> RangeTestResult:
        """The mean of the kept repeats over their common length, analysed (which cuts it at divergence)."""
        assert self._sweep is not None
        runs = [np.asarray(losses, dtype=np.float64) for losses, _ in self._runs]
        length = min(len(r) for r in runs)
        losses = np.mean([r[:length] for r in runs], axis=0) if length else np.zeros(0)
        return analyze(
            np.asarray(self._sweep.lrs[:length], dtype=np.float64),
            losses,
            method=self.method,
            diverge_threshold=self.diverge_threshold,
            diverged=any(diverged for _, diverged in self._runs),
            runs=runs if len(runs) > 1 else [],
            start_lr=self.start_lr,
            end_lr=self.end_lr,
            num_steps=self.num_steps,
            mode=self.mode,
            repeats=len(runs),
            **({"evaluations": sum(len(r) for r in runs) + extra} if (extra := self._sweep_extra_now()) else {}),
            **({"hyperparams": dict(self.hyperparams)} if self.hyperparams else {}),
            **({"hyperparams_left": left} if (left := self._groups_left()) else {}),
        )

    def _sweep_extra_now(self) -> int:
        return self._extra_evaluations if self._sweep_extra is None else self._sweep_extra

    def _groups_left(self) -> dict[str, list[int]]:
        """Per ``hyperparams`` key, the param groups that kept their own value (they held 0)."""
        everyone = range(len(self.optimizer.param_groups))
        return {
            key: [i for i in everyone if i not in chosen]
            for key, chosen in self._hyperparam_groups.items()
            if len(chosen) < len(everyone)
        }
