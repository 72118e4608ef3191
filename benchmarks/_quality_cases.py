"""Small versions of the kinds of work where the old suggestion missed (CPU, seconds each).

Each case is a :class:`~_quality_tasks.Task` small enough to train a grid of LRs
half a decade apart in seconds (its ground truth: seed 0's weights and batch
order, the constant protocol, the task's own warm-up or StepLR around the LR),
and the readings docs/suggestion-quality.md recommends for that kind of work
(``range_test(..., confirm=True)``; ``val_loader=`` where over-fitting sets the
best LR). ``suggestion_quality.py --cases`` reports where each reading lands
against the good band (``_quality_rules.band``); ``tests/test_suggestion_cases.py``
asserts only what holds with clear margins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _quality_data as data
import _quality_models as models
import numpy as np
from _quality_options import range_test_of
from _quality_rules import band, case
from _quality_tasks import Task, _mlp, lm_loss, score, train
from torch.nn import functional as F

#: The readings a case can ask for: ``range_test`` keywords (``val_loader`` filled from the task) and sweep length.
READINGS: dict[str, tuple[int, dict[str, Any]]] = {
    "confirm": (100, {"confirm": True}),
    "confirm-200": (200, {"confirm": True}),
    "val": (100, {"val_loader": None, "confirm": False}),  # the validation sweep's own reading
}


def half_decades(lo: float, hi: float) -> np.ndarray:
    """LRs from ``10**lo`` to ``10**hi``, half a decade apart."""
    return 10 ** np.arange(lo, hi + 1e-9, 0.5)


@dataclass
class Case:
    task: Task
    #: The ground-truth LRs.
    grid: np.ndarray
    #: Names in ``READINGS``: the readings recommended for this kind of work.
    readings: tuple[str, ...]
    #: What the case stands for.
    note: str = ""
    _truth: np.ndarray | None = field(default=None, repr=False)

    def truth(self) -> np.ndarray:
        """The score (higher is better: accuracy, or -loss) of training at each grid LR; computed once."""
        if self._truth is None:
            self._truth = np.array([score(self.task, train(self.task, float(lr), "constant", 0)) for lr in self.grid])
        return self._truth

    def band(self) -> np.ndarray:
        """The good band on the grid (``_quality_rules.band``)."""
        return band(self.task.kind, self.truth())

    def best(self) -> float:
        """The grid LR that trained best."""
        return float(self.grid[int(np.argmax(self.truth()))])

    def read(self, how: str) -> Any:
        """The range test of reading ``how`` (a name in ``READINGS``): its result."""
        num_steps, kwargs = READINGS[how]
        if "val_loader" in kwargs:
            kwargs = {**kwargs, "val_loader": self.task.val_loader()}
        return range_test_of(self.task, num_steps, **kwargs)

    def score(self, lr: float | None) -> dict[str, float | bool]:
        """How ``lr`` fares against the grid (``_quality_rules.case``: in band, distances, regret)."""
        return case(self.task.kind, self.grid, self.truth(), lr)


def _prose_lm(model: Callable[[], Any], optimizer: Callable[[Any, float], Any], warmup: float) -> Task:
    """Next-character prediction on Python's prose, 1600 windows of 32: one epoch of 100 steps."""
    return Task(
        "case",
        "loss",
        lambda: data.char_lm(data.prose_text(), 1600, 128, context=32),
        model,
        optimizer,
        lm_loss,
        epochs=1,
        batch_size=16,
        warmup=warmup,
    )


def cases() -> dict[str, Case]:
    """The cases by name (fresh: nothing trained yet)."""
    out = {
        "gpt-prose/adamw-llm": Case(
            _prose_lm(lambda: models.GPT(data.VOCAB, d=32, layers=2, heads=2, context=32), models.adamw_llm, 0.1),
            half_decades(-4, -0.5),
            ("confirm",),
            "GPT-2 layout, AdamW (0.9, 0.95) with weight decay 0.1, warm-up: the old default read 1.8 decades high",
        ),
        "preln-prose/adamw": Case(
            _prose_lm(lambda: models.PreLNLM(data.VOCAB, d=32, layers=1, heads=2, context=32), models.adamw_default, 0),
            half_decades(-4, -0.5),
            ("confirm",),
            "nn.TransformerEncoderLayer(norm_first=True) trained from scratch on prose with AdamW",
        ),
        "overfit-diabetes/adam": Case(
            Task("case", "loss", data.diabetes, _mlp(10, 256, 256, 1), models.adam, F.mse_loss, 40, batch_size=16),
            half_decades(-6, -1),
            ("val", "confirm"),
            "a wide MLP on 353 patients for 40 epochs: over-fitting, not speed, sets the best LR",
        ),
        "mnist-example/adadelta": Case(
            Task(
                "case",
                "accuracy",
                lambda: data.digits(False),
                lambda: models.MnistExampleNet(width=16),
                models.adadelta,
                F.nll_loss,
                epochs=4,
                batch_size=64,
                step_gamma=0.7,
            ),
            half_decades(-2, 1.5),
            ("confirm",),
            "PyTorch's examples/mnist recipe (Adadelta, StepLR 0.7 per epoch): the old default read a decade low",
        ),
        "mlp-digits/adam": Case(
            Task("case", "accuracy", lambda: data.digits(True), _mlp(64, 64, 10), models.adam, F.cross_entropy, 3),
            half_decades(-4, 0),
            ("confirm", "confirm-200"),
            "an MLP on the digits with Adam, read from 100- and 200-step sweeps",
        ),
    }
    for name, c in out.items():
        c.task.name = name
    return out


def report(names: list[str] | None = None) -> None:
    """Print each case's band and where each of its readings lands (figures, not assertions)."""
    for name, c in cases().items():
        if names and name not in names:
            continue
        good = c.grid[c.band()]
        print(f"{name:24s} best={c.best():.1e} band=[{good.min():.1e}, {good.max():.1e}]  ({c.note})")
        print("    grid   " + " ".join(f"{lr:9.1e}" for lr in c.grid))
        print("    score  " + " ".join(f"{v:9.3f}" for v in c.truth()))
        for how in c.readings:
            lr = c.read(how).lr
            s = c.score(lr)
            print(
                f"    {how:12s} lr={lr:.2e} in={s['in_band']!s:5s} dist={s['dist']:.2f} "
                f"to-band={s['band_dist']:.2f} regret={s['regret']:.2f}"
            )
