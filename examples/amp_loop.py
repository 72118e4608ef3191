"""A range test around your own mixed-precision loop: autocast + GradScaler.

The GradScaler goes into ``extra_state`` so that its scale and growth tracker
are restored with the model and optimizer. float16 on CUDA, bfloat16 on CPU.

    python examples/amp_loop.py
    TORCH_LRRANGE_QUICK=1 python examples/amp_loop.py   # smoke test
"""

import os

import torch
import torch.nn.functional as F

from torch_lrrange import RangeTest
from torch_lrrange.demo import make_setup

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

setup = make_setup("digits", seed=0)
model = setup.model.to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
scaler = torch.amp.GradScaler(device.type)
scale_before = scaler.state_dict()

with RangeTest(model, optimizer, extra_state=[scaler], num_steps=20 if QUICK else 100) as rt:
    for x, y in rt.batches(setup.loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        rt.record(loss)  # stays on the device: no host sync per step

print(rt.result)
assert scaler.state_dict() == scale_before, "the GradScaler was restored"
print(f"GradScaler restored: scale {scaler.get_scale():g}")
if rt.result.usable:
    print(f"lr {rt.result.lr:.3g}, bounds {rt.result.min_lr:.3g} .. {rt.result.max_lr:.3g}")
