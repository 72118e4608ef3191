"""What a range test adds to the training steps it runs, in executed instructions (deterministic).

Timing on a shared machine is noisy (identical runs of a 400-step loop spread by
tens of percent on a 2-core VM), too noisy to resolve a few percent of
overhead. This script counts instructions instead, with valgrind's callgrind:
the same methods and models as ``overhead.py`` (bare loop, ``RangeTest``,
``range_test()``, torch-lr-finder, Lightning's ``lr_find``), each run once
untimed to warm up, then once with instruction counting switched on around the
whole test (snapshot, N steps, restore and, where the library does it, the
analysis). A count does not weigh cache misses, so it complements the timings
of ``overhead.py`` rather than replacing them; it is the same on every run and
every machine with the same builds.

Counting is switched on and off from Python through callgrind's client requests,
in a tiny C library compiled on the fly (needs ``cc`` and valgrind's headers);
the script re-runs itself under ``valgrind --tool=callgrind --instr-atstart=no``.
Run: ``python benchmarks/instructions.py`` (about 5 minutes on 2 cores: every
instruction is simulated). By default it counts the tiny MLP, the overhead-bound
case where the library's share is largest; ``--models mlp,lenet,resnet18`` adds
the convolutional models (resnet18 at ``--resnet-steps``, default 4, so its fixed
costs weigh four times more than in ``overhead.py``), but their oneDNN
convolutions run some hundred times slower under valgrind: about 10 minutes per
LeNet method on 2 cores, longer for resnet18.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

_CLIENT = r"""
#include <valgrind/callgrind.h>
void lrrange_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void lrrange_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
int lrrange_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
"""


def _build_client(directory: str) -> str:
    source, library = os.path.join(directory, "client.c"), os.path.join(directory, "libclient.so")
    with open(source, "w") as f:
        f.write(_CLIENT)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", library, source], check=True)
    return library


def _inner(args: argparse.Namespace) -> None:
    """Under callgrind: warm each method up, then count its instructions once."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import overhead
    import torch

    client = ctypes.CDLL(args.client)
    if not client.lrrange_on_valgrind():
        raise SystemExit("--inner runs under valgrind only")
    torch.set_num_threads(1)
    root = tempfile.mkdtemp(prefix="lrrange_instr_")
    for name in args.models.split(","):
        steps = args.resnet_steps if name == "resnet18" else None
        _count_model(client, overhead, overhead.Bench(name, torch.device("cpu"), steps=steps), root)
    shutil.rmtree(root, ignore_errors=True)


def _count_model(client: Any, overhead: Any, bench: Any, root: str) -> None:
    for method, prepare in overhead.method_runners(bench, root).items():
        with overhead._quiet():
            prepare()()  # warm-up: first-call costs (imports, caches) are not the method's
            run = prepare()  # setup (optimizer, Lightning's Trainer) outside the count
            client.lrrange_start()
            steps = run()
            client.lrrange_stop(f"{bench.name}|{bench.steps}|{method}".encode())
        if steps != bench.steps:
            raise RuntimeError(f"{method} on {bench.name} took {steps} steps, not {bench.steps}")


def _read_dumps(directory: str) -> list[tuple[str, int, str, int]]:
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "callgrind.out.*")), key=_dump_number):
        with open(path) as f:
            text = f.read()
        trigger = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.M)
        totals = re.search(r"^totals: (\d+)", text, re.M)
        if trigger and totals:
            model, steps, method = trigger.group(1).split("|")
            rows.append((model, int(steps), method, int(totals.group(1))))
    return rows


def _dump_number(path: str) -> int:
    tail = path.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp", help="comma-separated: mlp, lenet, resnet18 (default mlp)")
    parser.add_argument("--resnet-steps", type=int, default=4, help="steps for resnet18 (default 4)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args)
        return 0
    if shutil.which("valgrind") is None or shutil.which("cc") is None:
        print("instructions.py needs valgrind (with its headers) and a C compiler; nothing measured")
        return 0
    with tempfile.TemporaryDirectory(prefix="lrrange_callgrind_") as directory:
        try:
            client = _build_client(directory)
        except subprocess.CalledProcessError:
            print("could not build the callgrind client (are valgrind's headers installed?); nothing measured")
            return 0
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={directory}/callgrind.out.%p",
            sys.executable,
            os.path.abspath(__file__),
            "--inner",
            "--client",
            client,
            "--models",
            args.models,
            "--resnet-steps",
            str(args.resnet_steps),
        ]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        rows = _read_dumps(directory)
    import torch

    print(f"torch {torch.__version__}, one thread; instructions executed by the whole test (callgrind)\n")
    print("| model | steps | method | instructions (M) | added to bare (M) | ratio to bare |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    bare = {model: count for model, _, method, count in rows if method == "bare"}
    for model, steps, method, count in rows:
        base = bare[model]
        print(
            f"| {model} | {steps} | {method} | {count / 1e6:.1f} | {(count - base) / 1e6:.2f} | {count / base:.4f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
