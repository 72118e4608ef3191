"""Lazy imports of optional dependencies, with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType


def install_hint(extra: str) -> str:
    """How to install the ``extra`` of torch_lrrange: from a clone today, by name once published.

    Example:
        >>> install_hint("plot")
        'pip install -e ".[plot]" in a clone of torch_lrrange (once it is on PyPI: pip install "torch_lrrange[plot]")'
    """
    return f'pip install -e ".[{extra}]" in a clone of torch_lrrange (once it is on PyPI: pip install "torch_lrrange[{extra}]")'


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is needed for this; install it with: {install_hint(extra)}") from err
