"""Exact snapshots of a model, its optimizer, extra stateful objects and the RNGs.

A :class:`Snapshot` copies every tensor on capture and copies back *into the
existing tensors* on restore, so parameters, buffers, optimizer state tensors and
tensor hyperparameters keep their identity (hooks, compiled graphs and the
optimizer's references stay valid) and the snapshot can be restored any number
of times. ``state_dict()`` and ``load_state_dict()`` alias live tensors, so no
alias is ever kept or handed out.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_optimizer, check_stateful
from ._modes import Modes
from ._rng import rng_state, set_rng_state

__all__ = ["WHERE", "Snapshot", "SnapshotError"]

WHERE = ("device", "cpu", "disk")


class SnapshotError(RuntimeError):
    """A snapshot could not be restored; the message says which part."""


class _Handle:
    """A stored tensor: its key in the store and what it was.

    ``dtensor``: a DTensor's (mesh, placements, global shape, global stride), so
    fresh copies are rewrapped; None for a plain tensor.
    """

    __slots__ = ("device", "dtensor", "dtype", "key", "shape")

    def __init__(
        self, key: int, device: torch.device, dtype: torch.dtype, shape: torch.Size, dtensor: tuple[Any, ...] | None
    ) -> None:
        self.key, self.device, self.dtype, self.shape, self.dtensor = key, device, dtype, shape, dtensor


@functools.cache
def _dtensor_type() -> tuple[type, ...]:
    """``(DTensor,)`` where torch.distributed has it, else ``()`` (``isinstance(x, ())`` is False)."""
    if not torch.distributed.is_available():
        return ()
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch < 2.4
        from torch.distributed._tensor import DTensor
    return (DTensor,)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor holding this process's data (the local shard of a DTensor)."""
    return tensor.to_local() if isinstance(tensor, _dtensor_type()) else tensor  # type: ignore[attr-defined]


def _dtensor_spec(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    if not isinstance(tensor, _dtensor_type()):
        return None
    return (tensor.device_mesh, tuple(tensor.placements), tensor.shape, tensor.stride())  # type: ignore[attr-defined]


class _Store:
    """Holds tensor copies on the device, in (pinned) host memory or in files."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._tensors: dict[int, torch.Tensor] = {}
        self._sizes: dict[int, int] = {}
        self._cuda_pending = False
        self.nbytes = 0
        self.directory: str | None = None
        self._finalizer: weakref.finalize | None = None
        if where == "disk":
            self.directory = tempfile.mkdtemp(prefix="torch_lrrange_")  # private: mode 0700
            self._finalizer = weakref.finalize(self, shutil.rmtree, self.directory, True)

    def put(self, tensor: torch.Tensor) -> _Handle:
        source = _local(tensor.detach())
        handle = _Handle(len(self._sizes), source.device, source.dtype, source.shape, _dtensor_spec(tensor))
        self._sizes[handle.key] = -1
        self.nbytes += source.numel() * source.element_size()
        if self.where == "device" or (self.where == "cpu" and source.device.type == "cpu"):
            self._tensors[handle.key] = source.clone()
        elif self.where == "cpu":
            pinned = torch.empty_like(source, device="cpu", pin_memory=source.is_cuda)
            self._tensors[handle.key] = pinned.copy_(source, non_blocking=source.is_cuda)
            self._cuda_pending |= source.is_cuda
        else:  # disk: one tensor in host memory at a time
            path = self._path(handle.key)
            torch.save(source.cpu().clone(), path)
            self._sizes[handle.key] = os.path.getsize(path)
        return handle

    def flush(self) -> None:
        """Wait for pending device-to-host copies."""
        if self._cuda_pending:
            torch.cuda.synchronize()
            self._cuda_pending = False

    def _path(self, key: int) -> str:
        assert self.directory is not None
        return os.path.join(self.directory, f"{key}.pt")

    def check_files(self, handles: list[_Handle]) -> None:
        """Raise before any write if a disk snapshot's file vanished or changed size."""
        for handle in handles:
            path = self._path(handle.key)
            try:
                size = os.path.getsize(path)
            except OSError as err:
                raise SnapshotError(f"disk snapshot file {path} is gone; nothing was restored") from err
            if size != self._sizes[handle.key]:
                raise SnapshotError(
                    f"disk snapshot file {path} was truncated or changed ({size} bytes, written {self._sizes[handle.key]}); nothing was restored"
                )

    def get(self, handle: _Handle) -> torch.Tensor:
        """The stored value (may alias the store: copy before handing it out)."""
        if self.where != "disk":
            return self._tensors[handle.key]
        path = self._path(handle.key)
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise SnapshotError(
                f"disk snapshot file {path} was corrupted and could not be read "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); restore stopped "
                "part-way: the model and optimizer are only partly restored"
            ) from err
        if not isinstance(value, torch.Tensor) or value.dtype != handle.dtype or value.shape != handle.shape:
            raise SnapshotError(
                f"disk snapshot file {path} does not hold the tensor written to it; restore stopped part-way"
            )
        return value

    def fresh(self, handle: _Handle) -> torch.Tensor:
        """A new tensor with the stored value, on the device it came from (a DTensor again if it was one)."""
        value = self.get(handle)
        if value.device != handle.device:
            value = value.to(handle.device, non_blocking=value.is_pinned())
        elif self.where != "disk":
            value = value.clone()
        if handle.dtensor is None:
            return value
        (dtensor,) = _dtensor_type()
        mesh, placements, shape, stride = handle.dtensor
        return dtensor.from_local(value, mesh, placements, run_check=False, shape=shape, stride=stride)  # type: ignore[attr-defined]

    def copy_into(self, handle: _Handle, live: torch.Tensor) -> None:
        """Write the stored value into ``live`` in place; call under ``torch.no_grad()``."""
        target = _local(live)
        if target.shape != handle.shape:
            raise SnapshotError(
                f"a tensor changed shape from {tuple(handle.shape)} to {tuple(target.shape)}; it cannot be restored in place"
            )
        value = self.get(handle)
        target.copy_(value, non_blocking=self.where == "cpu" and value.is_pinned())

    def close(self) -> None:
        self._tensors.clear()
        if self._finalizer is not None:
            self._finalizer()


def _pack(store: _Store, value: Any) -> Any:
    """Copy a nested structure, storing every tensor in ``store``."""
    if isinstance(value, torch.Tensor):
        return store.put(value)
    if isinstance(value, dict):
        return {k: _pack(store, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_pack(store, v) for v in value)
    return copy.deepcopy(value)


def _unpack(store: _Store, value: Any) -> Any:
    """A fresh copy of a packed structure (never an alias of the store)."""
    if isinstance(value, _Handle):
        return store.fresh(value)
    if isinstance(value, dict):
        return {k: _unpack(store, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_unpack(store, v) for v in value)
    return copy.deepcopy(value)


def _restore_into(store: _Store, saved: Any, live: Any) -> Any:
    """``saved``'s values, copied into the tensors of ``live`` where they fit (identity kept), else fresh."""
    if isinstance(saved, _Handle):
        if isinstance(live, torch.Tensor) and _fits(live, saved):
            store.copy_into(saved, live)
            return live
        return store.fresh(saved)
    if (
        isinstance(saved, (list, tuple))
        and not hasattr(saved, "_fields")
        and type(live) is type(saved)
        and len(live) == len(saved)
    ):
        return type(saved)(_restore_into(store, s, v) for s, v in zip(saved, live))
    return _unpack(store, saved)


def _scaler_stages(obj: Any) -> Any:
    """A GradScaler's per-optimizer stage (unscaled, stepped), which its state_dict() leaves out.

    Without it, a test interrupted between ``scaler.unscale_()`` and ``scaler.update()``
    would leave the scaler refusing the next ``unscale_()``.
    """
    if not isinstance(obj, _grad_scaler_types()):
        return None
    stages = getattr(obj, "_per_optimizer_states", None)
    return copy.deepcopy(stages) if isinstance(stages, dict) else None


@functools.cache
def _grad_scaler_types() -> tuple[type, ...]:
    """torch's GradScaler classes (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp.GradScaler`` before)."""
    found = [getattr(torch.amp, "GradScaler", None), getattr(torch.cuda.amp, "GradScaler", None)]
    return tuple(c for c in found if isinstance(c, type))


def _optimizer_params(optimizer: Any) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


class Snapshot:
    """The exact state of a model, its optimizer, extra objects and the RNGs.

    Take one with :meth:`take`; :meth:`restore` puts everything back bit-exactly
    (as often as needed); :meth:`release` frees the copies (and the files of a
    ``"disk"`` snapshot). Also a context manager that releases on exit.

    Captured: ``model.state_dict()`` (parameters, persistent buffers, extra
    state), non-persistent buffers, each module's train/eval mode, every
    parameter the optimizer holds (also ones outside the model) and its
    ``.grad``, the optimizer state and param-group hyperparameters, each extra
    object's ``state_dict()``, and the python, numpy, torch CPU and every CUDA
    device's RNG states.

    ``where``: ``"device"`` (default; clones beside the originals, fastest),
    ``"cpu"`` (pinned host copies, no device memory) or ``"disk"`` (files in a
    private temporary directory, host memory bounded by one tensor).

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.Adam(model.parameters())
        >>> snap = Snapshot.take(model, opt)
        >>> model(torch.ones(3)).sum().backward(); opt.step()
        >>> snap.restore()   # model, optimizer and RNGs are back
    """

    model: nn.Module
    optimizer: Any
    extra: tuple[Any, ...]
    where: str
    _model_state: dict[str, Any]
    _buffers: dict[str, _Handle]
    _modes: Modes
    _loose: list[tuple[torch.Tensor, _Handle]]
    _grads: list[tuple[torch.Tensor, _Handle | None]]
    _groups: list[tuple[dict[str, Any], dict[str, Any]]]
    _opt_state: dict[Any, Any] | None
    _opt_state_dict: Any
    _extra: list[Any]
    _scaler_stages: list[Any]
    _rng: dict[str, Any]

    def __init__(self) -> None:  # use Snapshot.take
        self._store: _Store | None = None

    @classmethod
    def take(cls, model: nn.Module, optimizer: Any, *extra: Any, where: str = "device") -> Snapshot:
        """Capture ``model``, ``optimizer``, each of ``extra`` and the RNG states.

        Args:
            model: the ``nn.Module`` under test.
            optimizer: a torch optimizer or an object with ``param_groups``,
                ``state_dict()`` and ``load_state_dict()``.
            *extra: objects with ``state_dict()``/``load_state_dict()``
                (``GradScaler``, an LR scheduler, an EMA...).
            where: ``"device"``, ``"cpu"`` or ``"disk"``. Default ``"device"``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_optimizer(optimizer)
        for i, obj in enumerate(extra):
            check_stateful(f"extra_state[{i}]", obj)
        check_choice("where", where, WHERE)

        self = cls()
        self.model, self.optimizer, self.extra, self.where = model, optimizer, tuple(extra), where
        store = self._store = _Store(where)
        try:
            state = model.state_dict(keep_vars=True)
            self._model_state = {k: _pack(store, v) for k, v in state.items()}
            persistent = set(state)
            self._buffers = {n: store.put(b) for n, b in model.named_buffers() if n not in persistent and b is not None}
            self._modes = Modes(model)
            in_model = {id(t) for t in state.values() if isinstance(t, torch.Tensor)}
            params = _optimizer_params(optimizer)
            self._loose = [(p, store.put(p)) for p in params if id(p) not in in_model]
            unique = {id(p): p for p in [*model.parameters(), *params]}.values()
            self._grads = [(p, None if p.grad is None else store.put(p.grad)) for p in unique]
            self._groups = [
                (g, {k: _pack(store, v) for k, v in g.items() if k != "params"}) for g in optimizer.param_groups
            ]
            if isinstance(optimizer, torch.optim.Optimizer):
                self._opt_state = {p: _pack(store, dict(s)) for p, s in optimizer.state.items()}
                self._opt_state_dict = None
            else:
                self._opt_state, self._opt_state_dict = None, _pack(store, optimizer.state_dict())
            self._extra = [_pack(store, obj.state_dict()) for obj in extra]
            self._scaler_stages = [_scaler_stages(obj) for obj in extra]
            self._rng = rng_state()
            store.flush()
        except BaseException:
            store.close()
            raise
        return self

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data held by this snapshot."""
        return 0 if self._store is None else self._store.nbytes

    def restore(self) -> None:
        """Put everything back exactly as it was when the snapshot was taken.

        Raises:
            SnapshotError: the snapshot was released, or part of it could not be
                read back; the message names what was not restored.

        A Ctrl-C (SIGINT) during the restore is held until it is complete, then
        raised as ``KeyboardInterrupt``: a restore is never cut in half by it.
        """
        with _sigint_deferred():
            self._restore()

    def _restore(self) -> None:
        store = self._store
        if store is None:
            raise SnapshotError("this snapshot was released and cannot be restored")
        if store.where == "disk":
            store.check_files(self._handles())
        if len(self.optimizer.param_groups) < len(self._groups):
            raise SnapshotError(
                f"the optimizer has {len(self.optimizer.param_groups)} param groups, the snapshot "
                f"{len(self._groups)}: a group was removed since; nothing was restored"
            )
        with torch.no_grad():
            self._restore_model(store)
            self._restore_optimizer(store)
        set_rng_state(self._rng)
        failed = []
        for i, (obj, state, stages) in enumerate(zip(self.extra, self._extra, self._scaler_stages)):
            try:  # user objects may refuse their own state: restore the others, then say which
                obj.load_state_dict(_unpack(store, state))
            except Exception as err:
                failed.append((i, obj, err))
                continue
            if stages is not None:
                obj._per_optimizer_states = copy.deepcopy(stages)
        if failed:
            what = "; ".join(
                f"extra_state[{i}] ({type(obj).__name__}): {type(err).__name__}: {err}" for i, obj, err in failed
            )
            raise SnapshotError(
                f"could not restore {what}; the model, optimizer, RNG states and the other extra_state objects were restored"
            ) from failed[0][2]

    def _handles(self) -> list[_Handle]:
        found: list[_Handle] = []

        def walk(value: Any) -> None:
            if isinstance(value, _Handle):
                found.append(value)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    walk(v)

        walk([self._model_state, self._buffers, [h for _, h in self._loose], [h for _, h in self._grads]])
        walk([s for _, s in self._groups])
        walk([self._opt_state, self._opt_state_dict, self._extra])
        return found

    def _restore_model(self, store: _Store) -> None:
        live = self.model.state_dict(keep_vars=True)
        if set(live) != set(self._model_state):
            changed = sorted(set(live) ^ set(self._model_state))
            raise SnapshotError(
                f"the model's state_dict keys changed since the snapshot ({changed[:5]}); it was not restored"
            )
        tensors = {
            k: h for k, h in self._model_state.items() if isinstance(h, _Handle) and isinstance(live[k], torch.Tensor)
        }
        # Metadata only, before any write: a tensor that changed shape, or a non-persistent
        # buffer that was removed, leaves the model untouched.
        buffers = dict(self.model.named_buffers())
        removed = [name for name in self._buffers if buffers.get(name) is None]
        if removed:
            raise SnapshotError(
                f"non-persistent buffers were removed since the snapshot ({removed[:5]}); nothing was restored"
            )
        reshaped = [k for k, h in tensors.items() if _local(live[k].detach()).shape != h.shape]
        reshaped += [n for n, h in self._buffers.items() if _local(buffers[n].detach()).shape != h.shape]
        if reshaped:
            raise SnapshotError(
                f"model tensors changed shape since the snapshot ({reshaped[:5]}); nothing was restored"
            )
        for key, handle in tensors.items():
            try:
                store.copy_into(handle, live[key])
            except SnapshotError as err:
                raise SnapshotError(f"model state {key!r} could not be restored: {err}") from err
        other = {k: _unpack(store, v) for k, v in self._model_state.items() if k not in tensors}
        if other:
            self.model.load_state_dict(other, strict=False)
        for name, handle in self._buffers.items():
            store.copy_into(handle, buffers[name])
        self._modes.restore()
        for param, handle in self._loose:
            store.copy_into(handle, param)
        for param, grad in self._grads:
            if grad is None:
                param.grad = None
            elif param.grad is not None and param.grad.shape == param.shape:
                store.copy_into(grad, param.grad)
            else:
                param.grad = store.fresh(grad)

    def _restore_optimizer(self, store: _Store) -> None:
        optimizer = self.optimizer
        if self._opt_state is not None:
            state = optimizer.state
            for param in [p for p in state if p not in self._opt_state]:
                del state[param]
            for param, saved in self._opt_state.items():
                current = state.get(param)
                if current is not None and _same_layout(current, saved):
                    for key, value in saved.items():
                        if isinstance(value, _Handle):
                            store.copy_into(value, current[key])
                        else:  # may nest tensors (LBFGS's old_dirs, al, ...)
                            current[key] = _unpack(store, value)
                else:
                    state[param] = _unpack(store, saved)
        else:
            optimizer.load_state_dict(_unpack(store, self._opt_state_dict))
        groups = optimizer.param_groups
        for i, (group, saved) in enumerate(self._groups):
            current = groups[i]
            params = current["params"]
            live = dict(group)
            group.clear()
            group["params"] = params
            for key, value in saved.items():
                group[key] = _restore_into(store, value, live.get(key))
            groups[i] = group
        del groups[len(self._groups) :]  # groups added since the snapshot (their state is gone above)

    def release(self) -> None:
        """Free the copies (and remove a disk snapshot's files). Idempotent."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT until the block ends (main thread, default handler only), then raise KeyboardInterrupt."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def _fits(live: torch.Tensor, handle: _Handle) -> bool:
    live = _local(live)
    return live.shape == handle.shape and live.dtype == handle.dtype and live.device == handle.device


def _same_layout(current: dict[str, Any], saved: dict[str, Any]) -> bool:
    if set(current) != set(saved):
        return False
    for key, value in saved.items():
        live = current[key]
        if isinstance(value, _Handle) != isinstance(live, torch.Tensor):
            return False
        if isinstance(value, _Handle) and not _fits(live, value):
            return False
    return True
