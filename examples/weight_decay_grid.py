"""Pick weight decay and the LR together: range tests at several weight decays, from one snapshot.

Smith's "A disciplined approach to neural network hyper-parameters": run the LR
range test at a few weight decays, overlay the curves, and keep the weight
decay whose curve reaches the lowest loss and stays stable to the largest LR.
LeNet on scikit-learn's digits with Adam (L2 weight decay). Run from the repository:

    python examples/weight_decay_grid.py            # under a minute on a CPU; writes outputs/weight_decay_grid.*
    python examples/weight_decay_grid.py --out DIR  # the plot and the JSON in DIR instead
    TORCH_LRRANGE_QUICK=1 python examples/weight_decay_grid.py   # smoke test
"""

import argparse
import os
from pathlib import Path

import torch

from torch_lrrange import GridResult, range_test_grid
from torch_lrrange.demo import accuracy, loss_fn, make_setup

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--out", type=Path, default=Path("outputs"), help="folder of the plot and the JSON (default: outputs)"
)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)
png, json_path = out / "weight_decay_grid.png", out / "weight_decay_grid.json"

setup = make_setup("digits", seed=0)  # LeNet, 1437 training / 360 validation images
model, loader = setup.model, setup.loader
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

# One sweep per weight decay, each from the same weights, optimizer state, RNG
# states and batch order; everything is put back afterwards.
grid = range_test_grid(
    model,
    optimizer,
    loader,
    loss_fn,
    grid={"weight_decay": [0, 1e-5, 1e-4, 1e-3, 1e-2]},
    start_lr=1e-6,
    end_lr=1.0,
    num_steps=20 if QUICK else 100,
)
print(grid.table())
grid.plot(path=png)
grid.save(json_path)
assert GridResult.load(json_path).to_dict() == grid.to_dict()

values, result = grid.best
grid.apply(optimizer)  # the chosen weight decay and its curve's lr, in every param group
epochs = 1 if QUICK else 3
for _epoch in range(epochs):
    for batch in loader:
        optimizer.zero_grad()
        loss_fn(model, batch).backward()
        optimizer.step()
print(
    f"weight_decay {values['weight_decay']:g}, lr {result.lr:.3g}, {epochs} epochs: "
    f"validation accuracy {accuracy(model, setup.val_data):.1%}"
)
print(f"wrote {png} and {json_path}")
