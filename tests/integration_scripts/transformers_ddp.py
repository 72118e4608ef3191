"""The Hugging Face Trainer on 2 CPU processes (DDP over gloo): ``lr_range_test`` on twin Trainers.

Run by tests/test_integrations_transformers.py through ``accelerate launch --multi_gpu
--num_processes 2 transformers_ddp.py OUT_DIR``. Each rank writes ``rank{R}.json``: its
result, whether the model and RNGs came back bit-exactly, and the log_history steps and
final weights of a short ``train()`` after the test and on a twin Trainer that never ran it.
"""

import copy
import json
import os
import sys
import warnings

import torch
import transformers
from transformers_setup import digest, make_trainer, steps  # this script's folder is on sys.path

from torch_lrrange.integrations.transformers import lr_range_test

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
out = sys.argv[1]

tested = make_trainer(os.path.join(out, "tested"), save_strategy="no")
twin = make_trainer(os.path.join(out, "twin"), save_strategy="no")
transformers.set_seed(1)
before = copy.deepcopy(tested.model.state_dict())
rng = torch.get_rng_state()
result = lr_range_test(tested, num_steps=16, start_lr=1e-5, end_lr=1.0)
restored = all(torch.equal(before[k], v) for k, v in tested.model.state_dict().items())
restored = restored and torch.equal(rng, torch.get_rng_state()) and tested.optimizer is None
tested.train()
transformers.set_seed(1)
twin.train()
rank = tested.args.process_index
report = {
    "rank": rank,
    "world_size": tested.args.world_size,
    "result": result.to_dict(),
    "restored": restored,
    "steps": steps(tested.state.log_history),
    "twin_steps": steps(twin.state.log_history),
    "weights": digest(tested.model),
    "twin_weights": digest(twin.model),
}
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(report, f)
