"""LR range test in an Accelerate loop, then one-cycle training between the found bounds.

No helper is needed: a RangeTest goes around the loop of ``accelerator.prepare``d objects, with
``accelerator.accumulate`` and ``accelerator.backward``; record once per real optimizer step
(``accelerator.sync_gradients``). The same script runs on several processes:

    pip install -e ".[transformers,demo]"      # accelerate comes with transformers
    python examples/accelerate_range_test.py
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_range_test.py   # 2 processes (2 GPUs, or 2 CPU processes on a machine without)
    TORCH_LRRANGE_QUICK=1 python examples/accelerate_range_test.py   # smoke test
"""

import os

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader

from torch_lrrange import RangeTest
from torch_lrrange.demo import LeNet, accuracy, load_data

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"

accelerator = Accelerator(gradient_accumulation_steps=2, cpu=not torch.cuda.is_available())
torch.manual_seed(0)
train_data, val_data = load_data("digits", seed=0)
model = LeNet()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loader = DataLoader(train_data, batch_size=32, shuffle=True)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

with RangeTest(model, optimizer, num_steps=20 if QUICK else 100) as rt:
    # A loader of the sweep's own: with several processes Accelerate shuffles the training loader
    # with a generator of its own, which sweeping it would move on (this one's seed is given back).
    sweep_loader = accelerator.prepare(DataLoader(train_data, batch_size=32, shuffle=True))
    for x, y in rt.batches(sweep_loader):
        with accelerator.accumulate(model):
            loss = F.cross_entropy(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:  # one point per real optimizer step
            rt.record(loss)
result = rt.result  # the same on every process; model and optimizer are back as they were
accelerator.print(result)

epochs = 1 if QUICK else 3
steps = epochs * -(-len(loader) // accelerator.gradient_accumulation_steps)
# Not prepared: stepped here once per real optimizer step (a prepared scheduler steps once per process).
scheduler = result.one_cycle_lr(optimizer.optimizer, total_steps=steps, div_factor=result.max_lr / result.min_lr)
for _epoch in range(epochs):
    for x, y in loader:
        with accelerator.accumulate(model):
            accelerator.backward(F.cross_entropy(model(x), y))
            optimizer.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            scheduler.step()
accelerator.print(
    f"OneCycleLR {result.min_lr:.3g} -> {result.max_lr:.3g}, {epochs} epoch(s): "
    f"validation accuracy {accuracy(accelerator.unwrap_model(model), val_data):.1%}"
)
