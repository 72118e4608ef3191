"""RangeTest under torch.distributed: two gloo ranks on the CPU, started from pytest.

Each rank writes what it saw to a file (``torch.save``); the parent process
asserts, so a failure reads like any other test failure. Process start-up is
slow on a shared machine, so each multi-process test runs several scenarios in
one launch; every launch has a deadline, so a hang fails instead of blocking.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import socket
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from torch_lrrange import RangeTest, RangeTestResult, Snapshot
from torch_lrrange._distributed import LossReducer, is_rank_zero, world

WORLD = 2
DEADLINE_S = 240.0


# --- launching -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, worker: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's own connections on the loopback too
    torch.set_num_threads(1)
    # a collective that never completes raises after this, instead of hanging the test
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=90))
    try:
        report = globals()[worker](rank)
        torch.save(report, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _launch(worker: str, tmp_path) -> list[dict]:
    """Run ``worker(rank)`` on two gloo ranks; its reports, by rank."""
    context = mp.start_processes(
        _entry, args=(worker, _free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"{worker} did not finish within {DEADLINE_S:.0f} s (a rank hangs in a collective?)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# --- shared pieces of the workers ------------------------------------------------


def _data(rank: int, n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Different data on each rank."""
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Copies of everything a restore must bring back, the local shard of each DTensor."""

    def local(t):
        return (t.to_local() if hasattr(t, "to_local") else t).detach().clone()

    return {
        "model": {k: local(v) for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else local(p.grad) for n, p in model.named_parameters()},
        "opt": [
            {k: local(v) if isinstance(v, torch.Tensor) else v for k, v in optimizer.state.get(p, {}).items()}
            for g in optimizer.param_groups
            for p in g["params"]
        ],
        "lr": [g["lr"] for g in optimizer.param_groups],
        "rng": torch.get_rng_state(),
    }


def _sweep(
    rt: RangeTest,
    model: nn.Module,
    optimizer,
    x,
    y,
    *,
    accumulate: int = 1,
    nan_at: int | None = None,
    one_shot: int | None = None,
    as_float: bool = False,
):
    """A plain training loop; returns this rank's own losses, one per recorded point.

    ``one_shot``: iterate once over that many batches; ``as_float``: record Python floats.
    """
    own: list[float] = []
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, len(x), 8)]
    micro, total = 0, 0.0
    for xb, yb in rt.batches(batches if one_shot is None else iter(batches[:one_shot])):
        sync = micro == accumulate - 1
        with contextlib.nullcontext() if sync or not hasattr(model, "no_sync") else model.no_sync():
            loss = nn.functional.cross_entropy(model(xb), yb)
            (loss / accumulate).backward()
        total = total + loss.detach()
        micro += 1
        if not sync:
            continue
        optimizer.step()
        optimizer.zero_grad()
        point = total / accumulate
        if nan_at is not None and rt.step == nan_at:
            point = point * float("nan")
        own.append(point.item())
        rt.record(own[-1] if as_float else point)
        micro, total = 0, 0.0
    return own


@contextlib.contextmanager
def _all_reduce_sizes():
    """The sizes of the tensors passed to ``torch.distributed.all_reduce`` inside the block."""
    sizes: list[int] = []
    real = dist.all_reduce

    def counted(tensor, *args, **kwargs):
        sizes.append(tensor.numel())
        return real(tensor, *args, **kwargs)

    dist.all_reduce = counted
    try:
        yield sizes
    finally:
        dist.all_reduce = real


# --- workers (run in the spawned ranks) -------------------------------------------


def _ddp_worker(rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y = _data(rank)
    model = DDP(_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(model(x[:8]), y[:8]).backward()
    optimizer.step()  # non-empty momentum buffers and grads to restore
    report: dict = {"before": _state(model, optimizer)}

    # 1. a sweep that ends by num_steps (20: not a multiple of check_every), with no_sync() accumulation
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        with _all_reduce_sizes() as report["calls"]:
            with RangeTest(
                model, optimizer, start_lr=1e-4, end_lr=1.0, num_steps=20, progress=True, confirm=False
            ) as rt:
                report["own"] = _sweep(rt, model, optimizer, x, y, accumulate=2)
                report["end_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        sys.stderr, report["stderr"] = stderr, sys.stderr.getvalue()
    report["result"] = rt.result.to_dict()
    report["after"] = _state(model, optimizer)
    out = os.environ["LRR_OUT"]
    report["saved"] = rt.result.save(os.path.join(out, f"result{rank}.json"))  # rank 0 only by default
    report["saved_all"] = rt.result.save(os.path.join(out, f"all{rank}.json"), all_ranks=True)

    # 2. NaN on rank 1 only at point 13: both ranks stop together; explicit process_group and repeats
    group = dist.new_group(list(range(WORLD)))
    with _all_reduce_sizes() as report["nan_calls"]:
        with RangeTest(
            model, optimizer, start_lr=1e-4, end_lr=1e-2, num_steps=40, repeats=2, process_group=group, confirm=False
        ) as rt:
            report["nan_own"] = _sweep(rt, model, optimizer, x, y, nan_at=13 if rank == 1 else None)
    report["nan_result"] = rt.result.to_dict()
    report["nan_after"] = _state(model, optimizer)

    # 3. divergence from the averaged losses (huge LRs) stops both ranks at the same step
    with RangeTest(model, optimizer, start_lr=1e-3, end_lr=1e4, num_steps=64, confirm=False) as rt:
        report["div_own"] = _sweep(rt, model, optimizer, x, y)
    report["div_result"] = rt.result.to_dict()
    report["div_after"] = _state(model, optimizer)

    # 4. a one-shot iterator running out at the same step on every rank (11: mid-window; 8: on a
    # window boundary) ends the sweep on every rank without a stray collective; floats recorded
    for n in (11, 8):
        with warnings.catch_warnings(record=True) as caught, _all_reduce_sizes() as report[f"short{n}_calls"]:
            warnings.simplefilter("always")
            with RangeTest(model, optimizer, start_lr=1e-4, end_lr=1e-2, num_steps=40, confirm=False) as rt:
                report[f"short{n}_own"] = _sweep(rt, model, optimizer, x, y, one_shot=n, as_float=True)
        report[f"short{n}_warnings"] = [str(w.message) for w in caught if "ran out" in str(w.message)]
        report[f"short{n}_result"] = rt.result.to_dict()
    report["short_after"] = _state(model, optimizer)

    # 5. a confirmation phase in the same loop (rt.batches starts each run over), with no_sync() accumulation
    with _all_reduce_sizes() as report["confirm_calls"]:
        with RangeTest(model, optimizer, start_lr=1e-4, end_lr=1.0, num_steps=20, confirm=4) as rt:
            report["confirm_own"] = _sweep(rt, model, optimizer, x, y, accumulate=2)
    report["confirm_result"] = rt.result.to_dict()
    report["confirm_after"] = _state(model, optimizer)
    return report


def _local_nbytes(t: torch.Tensor) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _fsdp_worker(rank: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = _model()
    x, y = _data(rank)
    try:  # older torches have fully_shard but not on the CPU: the test then skips with the reason
        mesh = init_device_mesh("cpu", (WORLD,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        loss = nn.functional.cross_entropy(model(x[:8]), y[:8])
    except (NotImplementedError, RuntimeError, AssertionError, ValueError) as err:
        return {"unsupported": f"{type(err).__name__}: {err}"}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss.backward()
    optimizer.step()  # sharded (DTensor) optimizer state and grads to restore
    report: dict = {
        "kinds": sorted({type(t).__name__ for t in [*model.parameters(), *optimizer.state[model[0].weight].values()]}),
        "shapes": {n: (tuple(p.shape), tuple(p.to_local().shape)) for n, p in model.named_parameters()},
        "before": _state(model, optimizer),
    }
    for where in ("device", "cpu", "disk"):
        with RangeTest(model, optimizer, start_lr=1e-4, end_lr=1.0, num_steps=12, snapshot=where, confirm=False) as rt:
            report[f"own_{where}"] = _sweep(rt, model, optimizer, x, y)
        report[f"result_{where}"] = rt.result.to_dict()
        report[f"after_{where}"] = _state(model, optimizer)
    with RangeTest(model, optimizer, start_lr=1e-4, end_lr=1.0, num_steps=12, confirm=3) as rt:
        report["own_confirm"] = _sweep(rt, model, optimizer, x, y)
    report["result_confirm"] = rt.result.to_dict()
    report["after_confirm"] = _state(model, optimizer)
    # grads present at the snapshot and gone at restore come back as DTensors
    snapshot = Snapshot.take(model, optimizer, where="cpu")
    tensors = [
        *model.state_dict().values(),
        *(p.grad for p in model.parameters()),
        *(v for s in optimizer.state.values() for v in s.values()),
    ]
    report["snapshot_nbytes"] = snapshot.nbytes
    report["local_nbytes"] = sum(_local_nbytes(t) for t in tensors)
    report["global_nbytes"] = sum(t.numel() * t.element_size() for t in tensors)
    optimizer.zero_grad(set_to_none=True)
    snapshot.restore()
    report["grad_kinds"] = sorted({type(p.grad).__name__ for p in model.parameters()})
    report["after_regrad"] = _state(model, optimizer)
    return report


# --- tests ------------------------------------------------------------------------


def _same(a, b) -> bool:
    """Exact equality of nested states (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


def _mean_over_ranks(own: list[list[float]]) -> np.ndarray:
    """What the ranks should have recorded: float32 sum over ranks, divided by the world size."""
    stacked = np.asarray(own, dtype=np.float32)
    return (stacked.sum(axis=0, dtype=np.float32) / np.float32(WORLD)).astype(np.float64)


def test_single_process_is_the_identity():
    assert world() == (0, 1) and is_rank_zero()
    reducer = LossReducer()
    window = torch.tensor([1.0, 2.0])
    with _all_reduce_sizes() as sizes:
        assert reducer.average(window) is window and window.tolist() == [1.0, 2.0]
    assert sizes == []
    with pytest.raises(ValueError, match=r"process_group was given but torch\.distributed is not initialised"):
        LossReducer(process_group=object())


@pytest.mark.slow
def test_ddp_two_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("LRR_OUT", str(tmp_path))
    r0, r1 = _launch("_ddp_worker", tmp_path)

    # identical results on both ranks, bit for bit, and the mean of what each rank recorded
    assert r0["own"] != r1["own"]  # the ranks really saw different data
    assert r0["result"] == r1["result"]
    losses = np.array(r0["result"]["losses"], dtype=np.float64)
    assert len(losses) == 20
    np.testing.assert_array_equal(losses, _mean_over_ranks([r0["own"], r1["own"]]))
    # files: rank 0 only by default, every rank with all_ranks=True
    assert (r0["saved"], r1["saved"], r0["saved_all"], r1["saved_all"]) == (True, False, True, True)
    assert not (tmp_path / "result1.json").exists()
    for name in ("result0.json", "all0.json", "all1.json"):
        assert RangeTestResult.load(tmp_path / name).to_dict() == r0["result"]
    assert r0["calls"] == r1["calls"] == [8, 8, 4]  # one all_reduce per window and the final partial one
    # no_sync() accumulation: DDP still synchronised the weights at every optimizer step
    assert _same(r0["end_weights"], r1["end_weights"])
    # each rank restored bit-exactly (weights, grads, momentum, LR, RNG)
    for r in (r0, r1):
        for key in ("after", "nan_after", "div_after", "short_after", "confirm_after"):
            assert _same(r["before"], r[key]), key
    # progress on rank 0 only
    assert "LR range test" in r0["stderr"] and r1["stderr"] == ""

    # NaN on rank 1 only: both ranks stop together and return the same cut curve
    assert r0["nan_result"] == r1["nan_result"]
    assert r0["nan_result"]["diverged"] is True
    assert len(r0["nan_result"]["losses"]) == 13
    assert len(r0["nan_own"]) == len(r1["nan_own"]) == 2 * 16  # both stopped after the window of 8..15, twice
    assert len(r0["nan_result"]["runs"]) == 2
    assert r0["nan_calls"] == r1["nan_calls"] == [8, 8, 8, 8]

    # divergence read from the averaged curve: the same stop step on both ranks
    assert r0["div_result"] == r1["div_result"]
    assert r0["div_result"]["diverged"] is True
    assert len(r0["div_own"]) == len(r1["div_own"]) < 64
    n = len(r0["div_result"]["losses"])
    assert 0 < n < len(r0["div_own"])
    np.testing.assert_array_equal(r0["div_result"]["losses"], _mean_over_ranks([r0["div_own"][:n], r1["div_own"][:n]]))

    # a one-shot iterator that runs out on every rank at once: the same curve, no hang
    for n, calls in ((11, [8, 3]), (8, [8])):
        assert r0[f"short{n}_result"] == r1[f"short{n}_result"]
        assert len(r0[f"short{n}_warnings"]) == len(r1[f"short{n}_warnings"]) == 1
        assert r0[f"short{n}_calls"] == r1[f"short{n}_calls"] == calls
        np.testing.assert_array_equal(
            r0[f"short{n}_result"]["losses"], _mean_over_ranks([r0[f"short{n}_own"], r1[f"short{n}_own"]])
        )
        assert len(r0[f"short{n}_result"]["losses"]) == n and r0[f"short{n}_result"]["diverged"] is False

    # the confirmation: one result on every rank, read from losses averaged over the ranks (one all_reduce per run)
    assert r0["confirm_own"] != r1["confirm_own"]
    assert r0["confirm_result"] == r1["confirm_result"]
    confirmation = r0["confirm_result"]["metadata"]["confirmation"]
    assert len(confirmation["candidates"]) == 6 and confirmation["steps"] == 4
    assert r0["confirm_calls"] == r1["confirm_calls"] == [8, 8, 4] + [4] * 6


def _fsdp2_cpu_skip_reason() -> str | None:
    try:
        from torch.distributed.device_mesh import init_device_mesh  # noqa: F401
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as err:
        return f"this torch has no FSDP2 (torch.distributed.fsdp.fully_shard): {err}; see benchmarks/fsdp_cuda_check.py"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_fsdp2_cpu_skip_reason() is not None, reason=str(_fsdp2_cpu_skip_reason()))
def test_fsdp2_two_ranks(tmp_path):
    r0, r1 = _launch("_fsdp_worker", tmp_path)
    if "unsupported" in r0:
        pytest.skip(
            f"FSDP2 does not run on the CPU with gloo in torch {torch.__version__} ({r0['unsupported']}); run benchmarks/fsdp_cuda_check.py on a CUDA machine"
        )
    # parameters and Adam state are DTensors, each rank holding only its shard
    assert r0["kinds"] == r1["kinds"] == ["DTensor", "Tensor"]  # "step" is a plain tensor
    for name, (full, shard0) in r0["shapes"].items():
        shard1 = r1["shapes"][name][1]
        assert shard0[0] + shard1[0] == full[0] and shard0[1:] == shard1[1:] == full[1:]
        assert shard0[0] < full[0]
    assert not _same(r0["before"]["model"], r1["before"]["model"])
    for where in ("device", "cpu", "disk"):
        assert r0[f"result_{where}"] == r1[f"result_{where}"], where
        np.testing.assert_array_equal(
            r0[f"result_{where}"]["losses"], _mean_over_ranks([r0[f"own_{where}"], r1[f"own_{where}"]])
        )
        for r in (r0, r1):
            assert _same(r["before"], r[f"after_{where}"]), where
    assert r0["result_confirm"] == r1["result_confirm"] and "confirmation" in r0["result_confirm"]["metadata"]
    for r in (r0, r1):
        assert _same(r["before"], r["after_confirm"])
    for r in (r0, r1):
        # the snapshot holds this rank's shards only
        assert r["snapshot_nbytes"] == r["local_nbytes"] < r["global_nbytes"]
        assert r["grad_kinds"] == ["DTensor"]
        assert _same(r["before"], r["after_regrad"])
