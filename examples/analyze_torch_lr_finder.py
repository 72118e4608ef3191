"""Read a torch-lr-finder sweep with torch_lrrange's ``analyze()``.

torch-lr-finder (``pip install torch-lr-finder``) keeps only its smoothed
losses unless ``smooth_f=0``; with the raw losses, ``analyze()`` smooths them
without lag, reads the LR and the cyclic bounds, and says how much to trust them.

    python examples/analyze_torch_lr_finder.py
    TORCH_LRRANGE_QUICK=1 python examples/analyze_torch_lr_finder.py   # smoke test
"""

import os

import torch
from torch import nn

from torch_lrrange import analyze
from torch_lrrange.demo import make_setup

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"
try:
    from torch_lr_finder import LRFinder
except ImportError as err:
    raise SystemExit(f"this example needs torch-lr-finder: pip install torch-lr-finder ({err})") from None

setup = make_setup("digits", seed=0)
optimizer = torch.optim.Adam(setup.model.parameters(), lr=1e-7)
finder = LRFinder(setup.model, optimizer, nn.CrossEntropyLoss(), device="cpu")
finder.range_test(setup.loader, start_lr=1e-7, end_lr=10, num_iter=20 if QUICK else 100, smooth_f=0)  # raw losses
history = finder.history  # {"lr": [...], "loss": [...]}
finder.reset()  # torch-lr-finder restores model and optimizer only on request

result = analyze(history["lr"], history["loss"], mode="exp", source="torch-lr-finder")
print(result)
if result.usable:
    print(f"lr {result.lr:.3g}, bounds {result.min_lr:.3g} .. {result.max_lr:.3g}, confidence {result.confidence:.2f}")
else:
    print("no usable suggestion: " + "; ".join(result.warnings))
for warning in result.warnings:
    print("warning:", warning)
if os.environ.get("TORCH_LRRANGE_PLOT"):
    result.plot(path=os.environ["TORCH_LRRANGE_PLOT"])
