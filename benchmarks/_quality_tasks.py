"""Tasks, training and ground truth for ``suggestion_quality.py`` (CPU, seconds each).

Every task is built from data that scikit-learn ships or that is generated here,
so the benchmark needs no download. A task knows how to build its data, its
model (from a seed, so every LR starts from the same weights), its optimizer and
its validation metric. :func:`train` runs the fixed training budget at a constant
LR or under ``OneCycleLR``; :class:`Cache` keeps every result on disk under
``benchmarks/.cache/`` so that reruns only train what is new.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")


@dataclass
class Task:
    name: str
    kind: str  # "accuracy" (higher is better, in points) or "loss" (lower is better)
    data: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    model: Callable[[], nn.Module]
    optimizer: Callable[[Any, float], torch.optim.Optimizer]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    epochs: int
    batch_size: int = 32

    _cached: tuple[torch.Tensor, ...] | None = None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        if self._cached is None:
            self._cached = self.data()
        return self._cached

    def loader(self, seed: int) -> DataLoader:
        x, y, _, _ = self.tensors()
        g = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=True, generator=g, drop_last=True)

    def build(self, seed: int) -> nn.Module:
        torch.manual_seed(1000 + seed)
        return self.model()

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """Validation accuracy in points, or validation loss; ``nan`` if training blew up."""
        _, _, xv, yv = self.tensors()
        model.eval()
        out = model(xv)
        model.train()
        if not torch.isfinite(out).all():
            return math.nan
        if self.kind == "accuracy":
            return float((out.argmax(1) == yv).float().mean()) * 100.0
        return float(self.loss(out, yv))


# --- data -------------------------------------------------------------------


def _split(x: np.ndarray, y: np.ndarray, y_dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    cut = int(0.8 * len(x))
    tr, va = idx[:cut], idx[cut:]
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=y_dtype)
    return xt[tr], yt[tr], xt[va], yt[va]


def _digits(flat: bool) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data / 16.0
    x = x - x.mean(0)
    if not flat:
        x = x.reshape(-1, 1, 8, 8)
    return _split(x, d.target, torch.long)


def _diabetes() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = (d.data - d.data.mean(0)) / d.data.std(0)
    y = (d.target - d.target.mean()) / d.target.std()
    return _split(x, y.reshape(-1, 1), torch.float32)


def _majority_sequences(n: int = 2000, length: int = 16, vocab: int = 4) -> tuple[torch.Tensor, ...]:
    """Sequences of one-hot tokens; the label is the most frequent of tokens 0..2 (ties: lowest)."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, vocab, size=(n, length))
    counts = np.stack([(tokens == k).sum(1) for k in range(3)], 1)
    y = counts.argmax(1)
    x = np.eye(vocab, dtype=np.float32)[tokens]
    return _split(x, y, torch.long)


# --- models -------------------------------------------------------------------


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


class _BNCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


class _LSTM(nn.Module):
    def __init__(self, vocab: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.rnn = nn.LSTM(vocab, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class _Transformer(nn.Module):
    def __init__(self, vocab: int = 4, d: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(vocab, d)
        self.layer = nn.TransformerEncoderLayer(d, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(self.embed(x)).mean(1))


def _sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _adam(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def _adamw(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def tasks() -> list[Task]:
    ce = F.cross_entropy
    return [
        Task(
            "mlp-digits/sgd",
            "accuracy",
            lambda: _digits(True),
            lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
            _sgd,
            ce,
            epochs=3,
        ),
        Task("cnn-digits/adam", "accuracy", lambda: _digits(False), _CNN, _adam, ce, epochs=2),
        Task(
            "bn-mlp-digits/sgd",
            "accuracy",
            lambda: _digits(True),
            lambda: nn.Sequential(
                nn.Linear(64, 64),
                nn.BatchNorm1d(64),
                nn.ReLU(),
                nn.Linear(64, 64),
                nn.BatchNorm1d(64),
                nn.ReLU(),
                nn.Linear(64, 10),
            ),
            _sgd,
            ce,
            epochs=2,
        ),
        Task(
            "mlp-diabetes/sgd",
            "loss",
            _diabetes,
            lambda: nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1)),
            _sgd,
            F.mse_loss,
            epochs=10,
            batch_size=16,
        ),
        Task("lstm-seq/adamw", "accuracy", _majority_sequences, _LSTM, _adamw, ce, epochs=3),
        Task("transformer-seq/adamw", "accuracy", _majority_sequences, _Transformer, _adamw, ce, epochs=3),
        # added after the default rule was fixed, as a hold-out check
        Task("bn-cnn-digits/adamw", "accuracy", lambda: _digits(False), _BNCNN, _adamw, ce, epochs=2),
    ]


# --- training -----------------------------------------------------------------


def train(task: Task, lr: float, protocol: str, seed: int, hyper: dict[str, Any] | None = None) -> float:
    """Validation metric after the fixed budget at constant ``lr`` or OneCycleLR(max_lr=lr).

    ``hyper``: param-group keys set after the task's optimizer is built (``{"weight_decay": 1e-4}``).
    """
    model = task.build(seed)
    opt = task.optimizer(model.parameters(), lr)
    for group in opt.param_groups:
        group.update(hyper or {})
    loader = task.loader(seed)
    total = task.epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total) if protocol == "onecycle" else None
    for _ in range(task.epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = task.loss(model(x), y)
            if not torch.isfinite(loss):
                return math.nan
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    return task.evaluate(model)


def score(task: Task, value: float) -> float:
    """A metric where higher is better and nan (blow-up) is the worst: accuracy, or -loss."""
    if task.kind == "accuracy":
        return 0.0 if math.isnan(value) else value
    return -1e9 if math.isnan(value) else -value


class Cache:
    """A JSON file of results keyed by strings; written after every new entry."""

    def __init__(self, name: str) -> None:
        os.makedirs(CACHE_DIR, exist_ok=True)
        self.path = os.path.join(CACHE_DIR, name)
        self.data: dict[str, Any] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = compute()
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)
        return self.data[key]


def trained(
    cache: Cache, task: Task, lr: float, protocol: str, seeds: tuple[int, ...], hyper: dict[str, Any] | None = None
) -> float:
    """Mean score over ``seeds`` of training at ``lr`` (cached per seed and ``hyper``)."""
    values = []
    suffix = "".join(f"|{k}={v!r}" for k, v in sorted((hyper or {}).items()))
    for seed in seeds:
        key = f"{task.name}|{protocol}|{seed}|{lr:.6g}|e{task.epochs}{suffix}"
        value = cache.get(key, lambda seed=seed: train(task, lr, protocol, seed, hyper))
        values.append(score(task, math.nan if value is None else value))
    return float(np.mean(values))
