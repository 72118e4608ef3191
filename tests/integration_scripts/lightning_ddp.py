"""Lightning under ``strategy="ddp"`` on 2 CPU processes: ``lr_range_test`` on twin trainers.

Run by tests/test_integrations_lightning.py as ``python lightning_ddp.py OUT_DIR``; Lightning
starts the second rank by running this script again. Each rank writes ``rank{R}.json``: its
range-test result, whether the module came back bit-exactly, the trainer's counters, and the
per-step losses and final weights of a short ``fit`` after the test and on a twin trainer
that never ran it.
"""

import json
import os
import sys
import warnings

import lightning.pytorch as pl
import torch
from lightning_setup import Recorder, digest, make_module, train_loader  # this script's folder is on sys.path

from torch_lrrange.integrations.lightning import lr_range_test

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
out = sys.argv[1]


def trainer(recorder):
    return pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )


recorders = [Recorder(), Recorder()]
tested, twin = trainer(recorders[0]), trainer(recorders[1])
models = [make_module(seed=0), make_module(seed=0)]
before = {k: v.clone() for k, v in models[0].state_dict().items()}
torch.manual_seed(1)
result = lr_range_test(tested, models[0], train_loader(), num_steps=24, start_lr=1e-5, end_lr=0.1)
restored = all(torch.equal(before[k], v) for k, v in models[0].state_dict().items())
counters = [tested.global_step, tested.current_epoch]
torch.manual_seed(1)
tested.fit(models[0], train_loader())
torch.manual_seed(1)
twin.fit(models[1], train_loader())
rank = tested.global_rank
report = {
    "rank": rank,
    "result": result.to_dict(),
    "restored": restored,
    "counters_after_test": counters,
    "losses": recorders[0].losses,
    "twin_losses": recorders[1].losses,
    "weights": digest(models[0]),
    "twin_weights": digest(models[1]),
}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(report, f)
