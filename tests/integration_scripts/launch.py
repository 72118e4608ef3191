"""Run an integration script on 2 CPU processes with ``accelerate launch`` and read each rank's report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(script: str, out_dir: Path, timeout: float = 300) -> list[dict[str, Any]]:
    """``accelerate launch --multi_gpu --num_processes 2 SCRIPT OUT_DIR`` with no GPU visible: 2 CPU
    processes over gloo (this Accelerate version's ``--cpu`` flag starts a single process).
    Returns the ``rank{R}.json`` reports, by rank."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch"),
        *("--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())),
        *(str(HERE / script), str(out_dir)),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=out_dir, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    reports = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    return reports
