"""The demo of ``python -m torch_lrrange demo``: LeNet on handwritten digits.

Data: scikit-learn's bundled ``load_digits`` (1797 8x8 images, upscaled to 28x28,
80/20 train/validation split; no download), or torchvision's MNIST when its
files are already on disk. Everything here is deterministic for a given seed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ._modes import evaluating
from ._optional import require

__all__ = [
    "DATASETS",
    "DataMissingError",
    "LeNet",
    "Setup",
    "accuracy",
    "load_data",
    "loss_fn",
    "make_setup",
    "train",
]

DATASETS = ("digits", "mnist")
DEFAULT_LR = 1e-3  # Adam's default, the LR most people leave in place
BATCH_SIZE = 64


class DataMissingError(FileNotFoundError):
    """The requested data set is not on disk; the message says where it was looked for."""


class LeNet(nn.Module):
    """The classic LeNet-5 for 1x28x28 images: conv 1->6 5x5 (padding 2), conv 6->16 5x5, 400->120->84->10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _digits(seed: int) -> tuple[TensorDataset, TensorDataset]:
    datasets = require("sklearn.datasets", "demo")
    digits = datasets.load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(labels))
    train, val = order[:cut], order[cut:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[val], labels[val])


def _mnist(data_dir: str | os.PathLike[str]) -> tuple[TensorDataset, TensorDataset]:
    datasets = require("torchvision.datasets", "vision")
    root = os.fspath(data_dir)
    split = []
    for train in (True, False):
        try:
            ds = datasets.MNIST(root, train=train, download=False)
        except RuntimeError as err:
            raise DataMissingError(
                f"MNIST was not found under {os.path.join(root, 'MNIST', 'raw')!r} (this demo never downloads). "
                "Put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                "t10k-labels-idx1-ubyte there, e.g. with torchvision.datasets.MNIST(DIR, download=True) on a "
                "machine with internet, or run the demo on the bundled digits (--dataset digits)."
            ) from err
        images = ds.data.unsqueeze(1).to(torch.float32) / 255.0
        images = (images - 0.1307) / 0.3081  # the usual MNIST mean and std
        split.append(TensorDataset(images, ds.targets.to(torch.long)))
    return split[0], split[1]


def load_data(
    dataset: str = "digits", data_dir: str | os.PathLike[str] | None = None, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """``(train, validation)`` datasets of 1x28x28 images and int labels.

    ``"digits"``: scikit-learn's bundled digits, split 80/20 by ``seed``.
    ``"mnist"``: torchvision's MNIST train/test files under ``data_dir``
    (never downloaded; :class:`DataMissingError` when missing).
    """
    if dataset == "digits":
        return _digits(seed)
    if dataset == "mnist":
        if data_dir is None:
            raise ValueError("the mnist dataset needs data_dir, the folder that holds MNIST/raw/")
        return _mnist(data_dir)
    raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, got {dataset!r}")


def _loader(data: TensorDataset, seed: int, shuffle: bool = True) -> DataLoader:
    # Its own generator: the batch order does not depend on (or disturb) the global RNG.
    return DataLoader(
        data, batch_size=BATCH_SIZE, shuffle=shuffle, generator=torch.Generator().manual_seed(seed) if shuffle else None
    )


def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
    """Cross-entropy of ``model`` on an ``(images, labels)`` batch."""
    x, y = batch
    return F.cross_entropy(model(x), y)


@dataclass
class Setup:
    """What the demo range-tests and trains: the model in its initial state and the data."""

    model: LeNet
    optimizer: torch.optim.Optimizer
    train_data: TensorDataset
    val_data: TensorDataset
    seed: int

    @property
    def loader(self) -> DataLoader:
        """A fresh shuffled training loader, the same batch order every time."""
        return _loader(self.train_data, self.seed)


def make_setup(dataset: str = "digits", data_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> Setup:
    """LeNet (initialised from ``seed``) with Adam at :data:`DEFAULT_LR`, and the data."""
    train_data, val_data = load_data(dataset, data_dir, seed)
    torch.manual_seed(seed)
    model = LeNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULT_LR)
    return Setup(model, optimizer, train_data, val_data, seed)


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset) -> float:
    """Fraction of ``data`` that ``model`` classifies correctly (eval mode, each submodule's mode restored after)."""
    correct = 0
    with evaluating(model):
        for x, y in _loader(data, 0, shuffle=False):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def train(
    setup: Setup,
    epochs: int,
    lr: float,
    schedule: Callable[[torch.optim.Optimizer, int], Any] | None = None,
) -> float:
    """Train a copy of ``setup.model`` (its initial weights untouched) with Adam at ``lr``; return validation accuracy.

    ``schedule(optimizer, total_steps)`` may build a per-step LR scheduler
    (e.g. OneCycleLR); without it the LR stays constant. Every run sees the same
    batch order.
    """
    model = copy.deepcopy(setup.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = setup.loader
    scheduler = schedule(optimizer, epochs * len(loader)) if schedule is not None else None
    model.train()
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad()
            loss_fn(model, batch).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    return accuracy(model, setup.val_data)
