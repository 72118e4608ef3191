"""Each submodule's train/eval mode: saved, put back, and switched to eval for a while."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["Modes", "evaluating"]


class Modes:
    """The train/eval mode of every submodule of ``model``, as it is now; :meth:`restore` puts it back.

    ``model.train(flag)`` would set one mode everywhere; a model may mix them (a frozen BatchNorm in eval).
    """

    __slots__ = ("_saved",)

    def __init__(self, model: nn.Module) -> None:
        self._saved = [(module, module.training) for module in model.modules()]

    def restore(self) -> None:
        for module, training in self._saved:
            module.training = training


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every submodule's own mode is put back after (also on errors)."""
    modes = Modes(model)
    try:
        yield model.eval()
    finally:
        modes.restore()
