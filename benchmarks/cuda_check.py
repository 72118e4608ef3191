"""The overhead figures on a CUDA machine, plus proof that the sweep never syncs between reads.

1. Every training step and ``record()`` runs under
   ``torch.cuda.set_sync_debug_mode("error")``; only the periodic read of a
   window (``WindowReader.drain``) runs with the check off. Any other host sync
   raises. Done for each snapshot mode.
2. The same for a sweep followed by its confirmation phase (``confirm=``): only the
   window reads, each candidate run's one read and the snapshot restore between runs
   may sync.
3. A NaN loss injected at a known step: the sweep stops at most
   ``2 * check_every - 1`` steps past it (the read is lagged one window), and
   the result drops every point from it on.
4. The tables of ``overhead.py`` on ``cuda`` (wall time, device synchronised),
   with each snapshot mode's device memory.

Run: ``python benchmarks/cuda_check.py [--quick]``; without CUDA it says so and exits 0.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torch_lrrange import RangeTest, Snapshot
from torch_lrrange import _confirmation as confirm
from torch_lrrange import _divergence as divergence


def _model(device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def _loop_without_syncs(rt: RangeTest, model: nn.Module, optimizer: torch.optim.Optimizer, data: list[Any]) -> None:
    """The README's loop over ``rt.batches(data)``, every step and record() under sync debug mode "error"."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in rt.batches(data):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            rt.record(loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def sweep_without_syncs(where: str, steps: int = 64) -> int:
    """A sweep whose steps and record() calls run with sync debug mode "error"; returns the reads made."""
    device = torch.device("cuda")
    model, optimizer = _model(device)
    data = [(torch.randn(32, 64, device=device), torch.randint(0, 10, (32,), device=device)) for _ in range(8)]
    reads = 0
    drain = divergence.WindowReader.drain

    def allowed_drain(self: divergence.WindowReader) -> None:  # the one place a sync is expected
        nonlocal reads
        reads += self._pending is not None
        torch.cuda.set_sync_debug_mode("default")
        try:
            drain(self)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    divergence.WindowReader.drain = allowed_drain  # type: ignore[method-assign]
    try:
        with RangeTest(
            model, optimizer, start_lr=1e-6, end_lr=1e-3, num_steps=steps, snapshot=where, confirm=False
        ) as rt:
            _loop_without_syncs(rt, model, optimizer, data)
    finally:
        divergence.WindowReader.drain = drain  # type: ignore[method-assign]
    assert rt.result is not None and len(rt.result.losses) == steps
    return reads


def confirmation_without_syncs(where: str, steps: int = 64, runs: int = 10) -> tuple[int, float]:
    """A sweep and its confirmation phase under sync debug mode "error", but for the reads and restores.

    Returns the syncing calls made (window reads, run reads, restores) and the confirmed LR.
    """
    device = torch.device("cuda")
    model, optimizer = _model(device)
    data = [(torch.randn(32, 64, device=device), torch.randint(0, 10, (32,), device=device)) for _ in range(8)]
    calls = 0
    originals = {
        (divergence.WindowReader, "drain"): divergence.WindowReader.drain,
        (confirm.CandidateRuns, "end_run"): confirm.CandidateRuns.end_run,
        (Snapshot, "restore"): Snapshot.restore,
    }

    def allowed(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("default")
            try:
                return method(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(mode)

        return call

    for (owner, name), method in originals.items():
        setattr(owner, name, allowed(method))
    try:
        with RangeTest(
            model, optimizer, start_lr=1e-6, end_lr=1e-3, num_steps=steps, snapshot=where, confirm=runs
        ) as rt:
            _loop_without_syncs(rt, model, optimizer, data)
    finally:
        for (owner, name), method in originals.items():
            setattr(owner, name, method)
    assert rt.result is not None and rt.result.confirmation is not None, rt.result
    return calls, rt.result.lr


def overshoot(bad_at: int = 21, check_every: int = 8) -> tuple[int, int]:
    """Steps taken past an injected NaN loss, and the points the result kept."""
    model, optimizer = _model(torch.device("cuda"))
    with RangeTest(model, optimizer, num_steps=200, check_every=check_every, confirm=False) as rt:
        step = 0
        while not rt.done:
            loss = torch.full((), math.nan if step == bad_at else 1.0, device="cuda")
            rt.record(loss)
            step += 1
    assert rt.result is not None
    return step - 1 - bad_at, len(rt.result.losses)


def main(argv: list[str]) -> int:
    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device here; nothing to check (run it on a machine with a GPU)")
        return 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    for where in ("cpu", "device", "disk"):
        reads = sweep_without_syncs(where)
        print(f"snapshot={where!r}: 64 steps under set_sync_debug_mode('error'), no sync outside {reads} reads")
    for where in ("cpu", "device"):
        calls, lr = confirmation_without_syncs(where)
        print(
            f"snapshot={where!r}: 64-step sweep + 6 runs of 10 steps under set_sync_debug_mode('error'), "
            f"no sync outside {calls} reads and restores; confirmed lr {lr:.3g}"
        )
    past, kept = overshoot()
    print(f"NaN at step 21 (check_every=8): stopped {past} steps past it (bound 15), result kept {kept} points\n")
    assert 0 <= past <= 15 and kept == 21

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import overhead  # the same tables, on cuda

    return overhead.main(["--device", "cuda", "--clock", "wall", "--threads", "4", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
