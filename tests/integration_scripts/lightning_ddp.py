"""Lightning under ``strategy="ddp"`` on 2 CPU processes: ``lr_range_test`` on twin trainers.

Run by tests/test_integrations_lightning.py as ``python lightning_ddp.py OUT_DIR``; Lightning
starts the second rank by running this script again. Each rank writes ``rank{R}.json``: its
range-test result, whether the module came back bit-exactly, the trainer's counters, the
batches and LRs of the sweep's first steps and of each candidate run, and the per-step losses
and final weights of a short ``fit`` after the test and on a twin trainer that never ran it.
"""

import json
import os
import sys
import warnings

import lightning.pytorch as pl
import torch
from lightning_setup import (  # this script's folder is on sys.path
    Recorder,
    SeenLeNet,
    digest,
    make_module,
    runs_of,
    train_loader,
)

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
models = [make_module(seed=0, kind=SeenLeNet), make_module(seed=0, kind=SeenLeNet)]
before = {k: v.clone() for k, v in models[0].state_dict().items()}
torch.manual_seed(1)
# a DistributedSampler of 4 batches a rank: each 6-step candidate run spans two of its epochs
result = lr_range_test(tested, models[0], train_loader(), num_steps=24, start_lr=1e-5, end_lr=0.1, confirm=6)
runs = runs_of(models[0].seen, 24, 6)
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
    "batches": [[x for x, _ in run] for run in runs],
    "lrs": [sorted({lr for _, lr in run}) for run in runs[1:]],
    "counters_after_test": counters,
    "losses": recorders[0].losses,
    "twin_losses": recorders[1].losses,
    "weights": digest(models[0]),
    "twin_weights": digest(models[1]),
}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(report, f)
