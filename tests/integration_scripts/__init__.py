"""Models, data and multi-process scripts of the trainer-integration tests."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def trainer_library(name: str) -> ModuleType:
    """Import ``name``; skipped where it is not installed, but never in CI (``CI`` set), which installs the extras."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)
