"""Find CyclicLR bounds with a range test, then train with them.

LeNet on scikit-learn's digits with SGD + momentum, the setting of Smith's
"Cyclical Learning Rates for Training Neural Networks". Run from the repository:

    python examples/cyclic_training.py            # a few seconds on a CPU
    TORCH_LRRANGE_QUICK=1 python examples/cyclic_training.py   # smoke test
"""

import os

import torch
from torch.optim.lr_scheduler import CyclicLR

from torch_lrrange import range_test
from torch_lrrange.demo import accuracy, loss_fn, make_setup

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"

setup = make_setup("digits", seed=0)  # LeNet, 1437 training / 360 validation images
model, loader = setup.model, setup.loader
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

# The range test starts from the weights training will start from, and puts
# them (and the optimizer, and the RNG) back afterwards.
result = range_test(model, optimizer, loader, loss_fn, start_lr=1e-4, end_lr=3.0, num_steps=20 if QUICK else 100)
print(result)
base_lr, max_lr = result.bounds

# Smith: a half cycle (step_size_up) of 2 to 10 epochs; here 2 epochs, 3 full cycles.
epochs = 1 if QUICK else 12
scheduler = result.cyclic_lr(optimizer, step_size_up=2 * len(loader))  # = CyclicLR(optimizer, base_lr, max_lr, ...)
assert isinstance(scheduler, CyclicLR)
for _epoch in range(epochs):
    for batch in loader:
        optimizer.zero_grad()
        loss_fn(model, batch).backward()
        optimizer.step()
        scheduler.step()  # CyclicLR steps once per batch
print(
    f"CyclicLR {base_lr:.3g} .. {max_lr:.3g}, {epochs} epochs: validation accuracy {accuracy(model, setup.val_data):.1%}"
)
