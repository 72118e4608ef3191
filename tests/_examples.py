"""Running an examples/ script end to end in quick mode (TORCH_LRRANGE_QUICK=1: a short sweep, one epoch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, cwd: Path, *args: str, timeout: float = 600) -> str:
    """Run ``examples/<name> *args`` in ``cwd``; assert it exits 0 (showing the end of its stderr) and return its stdout."""
    env = dict(os.environ, TORCH_LRRANGE_QUICK="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
