"""Range test, then one-cycle training (OneCycleLR) up to the found max_lr.

Run from the repository:

    python examples/one_cycle.py
    TORCH_LRRANGE_QUICK=1 python examples/one_cycle.py   # smoke test
"""

import os

import torch

from torch_lrrange import range_test
from torch_lrrange.demo import accuracy, loss_fn, make_setup

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"

setup = make_setup("digits", seed=0)
model, loader = setup.model, setup.loader
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

result = range_test(model, optimizer, loader, loss_fn, num_steps=20 if QUICK else 100)
print(result)
min_lr, max_lr = result.bounds

epochs = 1 if QUICK else 3
# OneCycleLR warms up from max_lr / div_factor to max_lr, then anneals far below;
# div_factor = max_lr / min_lr makes the warm-up start at the found min_lr.
scheduler = result.one_cycle_lr(optimizer, total_steps=epochs * len(loader), div_factor=max_lr / min_lr)
for _epoch in range(epochs):
    for batch in loader:
        optimizer.zero_grad()
        loss_fn(model, batch).backward()
        optimizer.step()
        scheduler.step()  # once per batch
print(
    f"OneCycleLR {min_lr:.3g} -> {max_lr:.3g}, {epochs} epochs: validation accuracy {accuracy(model, setup.val_data):.1%}"
)
