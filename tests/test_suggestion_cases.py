"""Small versions of the kinds of work where the old suggestion missed, each asserting the good band.

Each test trains a small task from the same weights at a grid of LRs half a
decade apart (its ground truth, computed here), takes the good band as the
grid LRs within 2% of the best validation loss (1 point of accuracy), and
checks where the library's suggestion lands: the nearest grid LR must be in
the band. The path each test takes is the one docs/suggestion-quality.md
recommends for that kind of work (``range_test(..., confirm=True)``, with a
``val_loader`` where over-fitting sets the best LR). Everything runs on the
CPU in seconds: tiny models, short budgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from torch_lrrange import range_test

# --- a tiny benchmark harness ---------------------------------------------------------------


class Task:
    """Data, a model factory, an optimizer factory, a loss and a budget (optimizer steps)."""

    def __init__(
        self,
        data: tuple[torch.Tensor, ...],
        model: Callable[[], nn.Module],
        optimizer: Callable[[Any, float], torch.optim.Optimizer],
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        steps: int,
        batch_size: int,
        kind: str = "loss",
        schedule: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> None:
        self.x, self.y, self.xv, self.yv = data
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self.steps, self.batch_size, self.kind, self.schedule = steps, batch_size, kind, schedule

    def build(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = self.model()
        return model, self.optimizer(model.parameters(), 1e-3)

    def loader(self) -> torch.utils.data.DataLoader:
        dataset = torch.utils.data.TensorDataset(self.x, self.y)
        return torch.utils.data.DataLoader(
            dataset, self.batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)
        )

    def val_loader(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.xv, self.yv)]

    def loss_fn(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.loss(model(batch[0]), batch[1])

    def score(self, lr: float) -> float:
        """Validation metric after the budget at constant ``lr`` (the task's own schedule around it); higher is better."""
        model, opt = self.build()
        for group in opt.param_groups:
            group["lr"] = lr
        sched = self.schedule(opt) if self.schedule is not None else None
        step = 0
        while step < self.steps:
            for x, y in self.loader():
                opt.zero_grad()
                loss = self.loss(model(x), y)
                if not torch.isfinite(loss):
                    return -math.inf
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                if step == self.steps:
                    break
        model.eval()
        with torch.no_grad():
            out = model(self.xv)
        if not torch.isfinite(out).all():
            return -math.inf
        if self.kind == "accuracy":
            return float((out.argmax(1) == self.yv).float().mean()) * 100
        return -float(self.loss(out, self.yv))

    def band(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scores at ``grid`` and the good band (within 1 point, or 2% of the loss, of the best; an interval)."""
        scores = np.array([self.score(float(lr)) for lr in grid])
        best = scores.max()
        good = scores >= (best - 1.0 if self.kind == "accuracy" else best - 0.02 * abs(best))
        idx = np.flatnonzero(good)
        band = np.zeros_like(good)
        band[idx.min() : idx.max() + 1] = True
        return scores, band


def nearest_in_band(lr: float, grid: np.ndarray, band: np.ndarray) -> bool:
    return bool(band[int(np.argmin(np.abs(np.log10(grid) - math.log10(lr))))])


def suggest(task: Task, num_steps: int = 100, **kwargs: Any) -> Any:
    model, opt = task.build()
    return range_test(model, opt, task.loader(), task.loss_fn, start_lr=1e-6, end_lr=10, num_steps=num_steps, **kwargs)


def half_decades(lo: float, hi: float) -> np.ndarray:
    return 10 ** np.arange(lo, hi + 1e-9, 0.5)


# --- data -------------------------------------------------------------------------------------


def prose_windows(n: int, context: int = 32) -> tuple[torch.Tensor, ...]:
    """Next-character prediction on the prose that ships with Python (``pydoc_data/topics.py``)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    codes = np.where((codes >= 32) & (codes < 127), codes - 30, np.where(codes == 10, 1, 0))
    count = len(codes) // (context + 1)
    windows = codes[: count * (context + 1)].reshape(count, context + 1)
    order = np.random.default_rng(0).permutation(count)[: n + 128]
    w = torch.tensor(windows[order])
    return w[128:, :-1], w[128:, 1:], w[:128, :-1], w[:128, 1:]


VOCAB = 97


def lm_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


class TinyGPT(nn.Module):
    """GPT-2's layout in miniature: pre-LN causal blocks, GELU MLPs, tied output layer, GPT-2's init."""

    def __init__(self, d: int = 32, layers: int = 2, heads: int = 2, context: int = 32) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers) if "linear2" in name else 0.02)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for block in self.blocks:
            x = block(x, src_mask=self.mask[:t, :t], is_causal=True)
        return self.ln_f(x) @ self.wte.weight.T


class PreLNLM(nn.Module):
    """A character LM as a PyTorch user writes it: ``nn.TransformerEncoderLayer(norm_first=True)``, default init."""

    def __init__(self, d: int = 32, context: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        layer = nn.TransformerEncoderLayer(d, 2, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(d, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        return self.head(self.encoder(self.embed(idx) + self.pos[:t], mask=self.mask[:t, :t], is_causal=True))


def llm_adamw(params: Any, lr: float) -> torch.optim.Optimizer:
    """The LLM recipe: AdamW, betas (0.9, 0.95), weight decay 0.1 on matrices and embeddings."""
    params = list(params)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def warmup(steps: int) -> Callable[[torch.optim.Optimizer], Any]:
    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))


def digits(images: bool) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    x = x - x.mean(0)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.tensor(d.target)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[idx[:1437]], y[idx[:1437]], x[idx[1437:]], y[idx[1437:]]


def diabetes() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = torch.tensor((d.data - d.data.mean(0)) / d.data.std(0), dtype=torch.float32)
    y = torch.tensor((d.target - d.target.mean()) / d.target.std(), dtype=torch.float32).reshape(-1, 1)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[idx[:353]], y[idx[:353]], x[idx[353:]], y[idx[353:]]


class MnistExampleNet(nn.Module):
    """PyTorch's ``examples/mnist`` network (two convs, dropout, log-softmax), for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1))))
        return F.log_softmax(self.fc2(x), dim=1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic on every machine, and no contention on a shared CPU
    yield
    torch.set_num_threads(threads)


# --- the cases ------------------------------------------------------------------------------


def test_gpt2_style_lm_with_the_llm_recipe_lands_in_band():
    """GPT-2 layout, AdamW (0.9, 0.95) with weight decay 0.1, warm-up: the old default read 1.8 decades high."""
    task = Task(prose_windows(1600), TinyGPT, llm_adamw, lm_loss, steps=100, batch_size=16, schedule=warmup(10))
    grid = half_decades(-4, -0.5)
    _, band = task.band(grid)
    result = suggest(task, confirm=True)
    assert nearest_in_band(result.lr, grid, band), (result.lr, grid[band])
    assert result.metadata["confirmation"]["by"] == "training"


def test_pre_ln_lm_on_english_prose_lands_in_band():
    """``nn.TransformerEncoderLayer(norm_first=True)`` trained from scratch on prose with AdamW."""
    task = Task(
        prose_windows(1600), PreLNLM, lambda p, lr: torch.optim.AdamW(p, lr=lr), lm_loss, steps=100, batch_size=16
    )
    grid = half_decades(-4, -0.5)
    _, band = task.band(grid)
    result = suggest(task, confirm=True)
    assert nearest_in_band(result.lr, grid, band), (result.lr, grid[band])


@pytest.fixture(scope="module")
def overfitting_task() -> tuple[Task, np.ndarray, np.ndarray, np.ndarray]:
    """A wide MLP on 353 patients for 880 steps (40 epochs): over-fitting, not speed, sets the best LR."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = Task(
            diabetes(),
            lambda: nn.Sequential(nn.Linear(10, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)),
            lambda p, lr: torch.optim.Adam(p, lr=lr),
            F.mse_loss,
            steps=880,
            batch_size=16,
        )
        grid = half_decades(-6, -1)
        scores, band = task.band(grid)
    finally:
        torch.set_num_threads(threads)
    return task, grid, scores, band


@pytest.mark.xfail(strict=True, reason="known miss: no reading lands in the band when over-fitting sets the best LR")
def test_small_data_regression_lands_in_band(overfitting_task):
    """The band is 3e-5 here; the validation-loss sweep reads about 2e-4 (docs/suggestion-quality.md)."""
    task, grid, _, band = overfitting_task
    result = suggest(task, val_loader=task.val_loader())
    assert nearest_in_band(result.lr, grid, band), (result.lr, grid[band])


def test_small_data_regression_validation_loss_moves_towards_the_best_lr(overfitting_task):
    """The training loss cannot see over-fitting; a validation-loss sweep can, and reads a decade closer.

    Short runs judged by their training loss (the confirmation phase without a
    ``val_loader``) favour the LR that fits the training set fastest: more than
    two decades too high here. The sweep of the validation loss
    (``range_test(..., val_loader=)``) lands within about a decade of the best.
    """
    task, grid, scores, _ = overfitting_task
    best = math.log10(grid[int(np.argmax(scores))])
    validated = suggest(task, val_loader=task.val_loader())
    by_training = suggest(task, confirm=True)
    assert abs(math.log10(validated.lr) - best) <= 1.0, validated.lr
    assert math.log10(by_training.lr) - best > 2.0, by_training.lr
    assert abs(math.log10(validated.lr) - best) + 1.0 < abs(math.log10(by_training.lr) - best)


@pytest.mark.xfail(
    strict=True,
    reason="known miss (issue 16 open): the band is lr 10 alone; the confirmed LR is 3.2, half a decade below, and "
    "warns that the sweep's end_lr (10) may be too low",
)
def test_mnist_example_with_adadelta_and_steplr_lands_in_band():
    """PyTorch's examples/mnist recipe (Adadelta, StepLR gamma 0.7 per epoch): the old default read a decade low."""
    task = Task(
        digits(images=True),
        MnistExampleNet,
        lambda p, lr: torch.optim.Adadelta(p, lr=lr),
        F.nll_loss,
        steps=88,
        batch_size=64,
        kind="accuracy",
        schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=22, gamma=0.7),
    )
    grid = half_decades(-2, 1.5)
    _, band = task.band(grid)
    result = suggest(task, confirm=True)
    assert nearest_in_band(result.lr, grid, band), (result.lr, grid[band])


def test_a_longer_sweep_does_not_give_a_worse_answer():
    """100- and 200-step sweeps of the same task both land in the band."""
    task = Task(
        digits(images=False),
        lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
        lambda p, lr: torch.optim.Adam(p, lr=lr),
        F.cross_entropy,
        steps=120,
        batch_size=32,
        kind="accuracy",
    )
    grid = half_decades(-4, 0)
    _, band = task.band(grid)
    for num_steps in (100, 200):
        result = suggest(task, num_steps=num_steps, confirm=True)
        assert nearest_in_band(result.lr, grid, band), (num_steps, result.lr, grid[band])
