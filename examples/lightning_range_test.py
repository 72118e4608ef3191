"""LR range test with a Lightning Trainer, then training at the found LR.

The module's own training_step, configure_optimizers and datamodule run the sweep and the
confirmation's candidate runs, through the trainer's own fit loop; afterwards the trainer, module and RNGs are as before the test (no
checkpoint or log of the sweep is written) and ``update_attr=True`` has set ``hparams.lr``.

    pip install -e ".[lightning,demo]"
    python examples/lightning_range_test.py              # the training's logs and checkpoint in outputs/
    python examples/lightning_range_test.py --out DIR    # ... in DIR instead
    TORCH_LRRANGE_QUICK=1 python examples/lightning_range_test.py   # smoke test
"""

import argparse
import logging
import os

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from torch_lrrange.demo import LeNet, accuracy, load_data
from torch_lrrange.integrations.lightning import lr_range_test

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="outputs", help="folder of the training's lightning_logs/ (default: outputs)")
out = parser.parse_args().out
logging.basicConfig(format="%(message)s")
logging.getLogger("torch_lrrange").setLevel(logging.INFO)  # says which LR update_attr set


class LitLeNet(pl.LightningModule):
    def __init__(self, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = LeNet()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class Digits(pl.LightningDataModule):
    def setup(self, stage):
        self.train_data, self.val_data = load_data("digits", seed=0)

    def train_dataloader(self):
        return DataLoader(self.train_data, batch_size=64, shuffle=True)


pl.seed_everything(0)
model, dm = LitLeNet(), Digits()
trainer = pl.Trainer(accelerator="cpu", max_epochs=1 if QUICK else 3, enable_model_summary=False, default_root_dir=out)

result = lr_range_test(trainer, model, datamodule=dm, num_steps=20 if QUICK else 100, update_attr=True)
print(result)
print(f"model.hparams.lr = {model.hparams.lr:.3g}; trainer.global_step = {trainer.global_step}")

trainer.fit(model, datamodule=dm)  # from exactly the state before the test, at the found LR
model.eval()
print(
    f"trained {trainer.current_epoch} epoch{'s' if trainer.current_epoch > 1 else ''} at {model.hparams.lr:.3g}: "
    f"validation accuracy {accuracy(model, dm.val_data):.1%}"
)
