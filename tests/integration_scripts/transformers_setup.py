"""A tiny GPT-2 (built from a config, nothing downloaded) and byte-level text from Python's own docs."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

SEQ_LEN = 32


class ByteText(torch.utils.data.Dataset):
    """Windows of ``SEQ_LEN`` bytes of ``pydoc_data.topics`` (shipped with Python), as GPT-2 inputs."""

    def __init__(self, count: int = 96) -> None:
        from pydoc_data import topics

        text = "".join(topics.topics[k] for k in sorted(topics.topics)).encode("utf-8")
        ids = torch.tensor(list(text[: count * SEQ_LEN]), dtype=torch.long)
        self.windows = ids.reshape(count, SEQ_LEN)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.windows[i], "labels": self.windows[i]}


def tiny_gpt2(seed: int = 0, dropout: float = 0.1) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=256,
        n_positions=SEQ_LEN,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    return GPT2LMHeadModel(config)


def make_trainer(output_dir: Any, seed: int = 0, dropout: float = 0.1, **overrides: Any) -> Trainer:
    """A Trainer on CPU with accumulation (2) and clipping (1.0); nothing reported outside ``output_dir``."""
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2,
        "max_grad_norm": 1.0,
        "learning_rate": 5e-4,
        "max_steps": 4,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "report_to": "none",
        "use_cpu": True,
        "seed": seed,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    settings.update(overrides)
    return Trainer(model=tiny_gpt2(seed, dropout), args=TrainingArguments(**settings), train_dataset=ByteText())


def steps(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step entries of ``log_history`` (loss, grad_norm, learning_rate, epoch, step), no timings."""
    keys = ("loss", "grad_norm", "learning_rate", "epoch", "step")
    return [{k: e[k] for k in keys if k in e} for e in log_history if "loss" in e]


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
