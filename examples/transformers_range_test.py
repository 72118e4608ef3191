"""LR range test with a Hugging Face Trainer, then training at the found LR.

A small GPT-2 built from a config (nothing is downloaded) learns byte-level text from Python's
own documentation. The sweep uses the Trainer's own optimizer, data, training_step, gradient
accumulation, clipping and mixed precision; ``update_args=True`` sets
``trainer.args.learning_rate`` (``result.max_lr`` here: the default linear schedule decays
the LR), and ``train()`` starts from exactly the state before the test.

    pip install -e ".[transformers]"
    python examples/transformers_range_test.py
    TORCH_LRRANGE_QUICK=1 python examples/transformers_range_test.py   # smoke test
"""

import logging
import os
import shutil
import tempfile
from pydoc_data import topics

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments, set_seed

from torch_lrrange.integrations.transformers import lr_range_test

QUICK = os.environ.get("TORCH_LRRANGE_QUICK") == "1"
logging.basicConfig(format="%(message)s")
logging.getLogger("torch_lrrange").setLevel(logging.INFO)  # says which LR update_args set
SEQ_LEN = 32 if QUICK else 64


class ByteText(torch.utils.data.Dataset):
    """Windows of bytes of the Python docs (pydoc_data.topics), as causal-LM inputs and labels."""

    def __init__(self, count):
        text = "".join(topics.topics[k] for k in sorted(topics.topics)).encode("utf-8")
        self.windows = torch.tensor(list(text[: count * SEQ_LEN]), dtype=torch.long).reshape(count, SEQ_LEN)

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        return {"input_ids": self.windows[i], "labels": self.windows[i]}


set_seed(0)
config = GPT2Config(vocab_size=256, n_positions=SEQ_LEN, n_embd=32 if QUICK else 64, n_layer=2, n_head=2)
args = TrainingArguments(
    output_dir=tempfile.mkdtemp(prefix="torch_lrrange_gpt2_"),  # nothing is saved there (save_strategy="no")
    per_device_train_batch_size=8 if QUICK else 16,
    gradient_accumulation_steps=2,
    max_grad_norm=1.0,
    max_steps=8 if QUICK else 300,
    warmup_steps=0.1,
    logging_steps=4 if QUICK else 50,
    disable_tqdm=QUICK,
    save_strategy="no",
    report_to="none",
    use_cpu=not torch.cuda.is_available(),
    seed=0,
)
trainer = Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=ByteText(256 if QUICK else 4000))

result = lr_range_test(trainer, num_steps=20 if QUICK else 100, update_args=True)
print(result)
print(f"trainer.args.learning_rate = {trainer.args.learning_rate:.3g} ({result.metadata['update_args']['reason']})")

output = trainer.train()  # from exactly the state before the test
print(
    f"trained {output.global_step} steps at peak LR {trainer.args.learning_rate:.3g}: final loss {output.training_loss:.3f}"
)
shutil.rmtree(args.output_dir, ignore_errors=True)
