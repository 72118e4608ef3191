"""Log a range test to TensorBoard through a ``SummaryWriter`` you pass (optional)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["log_to_tensorboard"]


def log_to_tensorboard(result: Any, writer: Any, tag: str = "lr_range", figure: bool = True) -> None:
    """Write ``result``'s curve and suggestion to ``writer``.

    ``writer`` is a ``torch.utils.tensorboard.SummaryWriter`` (or anything with
    its ``add_scalar``/``add_text``/``add_figure``). Per point ``i`` of the sweep
    (the global step): ``{tag}/lr``, ``{tag}/loss`` (raw) and ``{tag}/smoothed``;
    TensorBoard's x axis is the step, so with ``figure=True`` (default, needs
    matplotlib) the loss-against-log-LR plot goes in as ``{tag}/curve`` too.
    ``{tag}/suggestion`` is a line of text: lr, bounds and confidence, or why
    there is none. Non-finite losses are skipped. Flushes the writer.
    """
    for name in ("add_scalar", "add_text"):
        if not callable(getattr(writer, name, None)):
            raise TypeError(
                f"writer must be a SummaryWriter (or have add_scalar and add_text), got {type(writer).__name__}"
            )
    for i, (lr, loss, smoothed) in enumerate(
        zip(result.lrs.tolist(), result.losses.tolist(), result.smoothed.tolist())
    ):
        writer.add_scalar(f"{tag}/lr", lr, global_step=i)
        if math.isfinite(loss):
            writer.add_scalar(f"{tag}/loss", loss, global_step=i)
        if math.isfinite(smoothed):
            writer.add_scalar(f"{tag}/smoothed", smoothed, global_step=i)
    if result.usable:
        text = (
            f"lr {result.lr:.3g}, min_lr {result.min_lr:.3g}, max_lr {result.max_lr:.3g}, "
            f"confidence {result.confidence:.2f} (method {result.method!r})"
        )
    else:
        text = "no usable suggestion: " + "; ".join(result.warnings)
    writer.add_text(f"{tag}/suggestion", text)
    if figure and callable(getattr(writer, "add_figure", None)):
        from .plotting import plot_result

        ax = plot_result(result)
        writer.add_figure(f"{tag}/curve", ax.figure, close=True)
    if callable(getattr(writer, "flush", None)):
        writer.flush()
