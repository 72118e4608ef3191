"""The LeNet ``LightningModule`` and digits data the Lightning integration tests share."""

from __future__ import annotations

import hashlib
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from torch_lrrange.demo import LeNet, load_data

_DATA: dict[str, TensorDataset] = {}


def digits(n: int = 512) -> TensorDataset:
    """The first ``n`` of scikit-learn's digits as 1x28x28 images (cached)."""
    key = str(n)
    if key not in _DATA:
        train, _ = load_data("digits")
        _DATA[key] = TensorDataset(*train[:n])
    return _DATA[key]


def train_loader(shuffle: bool = True, seed: int | None = None, batch_size: int = 64) -> DataLoader:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(digits(), batch_size=batch_size, shuffle=shuffle, generator=generator)


class LitLeNet(pl.LightningModule):
    """LeNet on digits; ``schedule``: None (constant ``lr``), ``"onecycle"`` (OneCycleLR peaking at
    ``lr``) or ``"warmup"`` (linear warm-up from 0 to ``lr`` over 10 steps), stepped per batch."""

    def __init__(self, lr: float = 1e-3, schedule: str | None = None, total_steps: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = LeNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        if self.hparams.schedule is None:
            return optimizer
        if self.hparams.schedule == "onecycle":
            scheduler: Any = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.total_steps
            )
        else:  # sets the LR to 0 at construction
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / 10))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SeenLeNet(LitLeNet):
    """A LitLeNet that notes, for each training step, the sum of its batch's inputs and the LR it trains at."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[float, float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append((batch[0].sum().item(), self.optimizers().param_groups[0]["lr"]))
        return super().training_step(batch, batch_idx)


class DigitsData(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return train_loader()


class Recorder(pl.Callback):
    """The loss of every training batch the trainer runs (a sweep must add none)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(outputs["loss"].item())


def make_module(seed: int = 0, kind: type[LitLeNet] = LitLeNet, **kwargs: Any) -> LitLeNet:
    torch.manual_seed(seed)
    return kind(**kwargs)


def runs_of(seen: list[tuple[float, float]], sweep: int, steps: int) -> list[list[tuple[float, float]]]:
    """``seen`` (of a :class:`SeenLeNet`) cut into the sweep's first ``steps`` steps and each candidate run's."""
    runs = [seen[sweep + k : sweep + k + steps] for k in range(0, len(seen) - sweep, steps)]
    return [seen[:steps], *runs]


def digest(model: torch.nn.Module) -> str:
    """SHA-256 of every tensor's bytes in ``model.state_dict()``, in order."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
