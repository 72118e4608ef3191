"""Models of the suggestion benchmark, all small enough to train in seconds on one CPU thread.

CNNs (with BatchNorm, without, and the layout of PyTorch's ``examples/mnist``),
recurrent nets (LSTM, GRU), transformers (an encoder classifier, a patch-based
vision transformer, a GPT-2-style language model written here, and a pre-LN
language model from ``nn.TransformerEncoderLayer``) and the optimizers they use.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# --- convolutional ----------------------------------------------------------------


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


class BNCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b1(self.c1(x)))
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


class MnistExampleNet(nn.Module):
    """The network of PyTorch's ``examples/mnist/main.py`` (two convs, dropout, log-softmax), for 8x8 inputs."""

    def __init__(self, width: int = 32) -> None:
        """``width``: the first conv's channels (PyTorch's 32); the second has twice as many, ``fc1`` four times."""
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1, padding=1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 4 * width)
        self.fc2 = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


# --- recurrent ------------------------------------------------------------------------


class LSTM(nn.Module):
    def __init__(self, vocab: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.rnn = nn.LSTM(vocab, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class GRU(nn.Module):
    def __init__(self, inputs: int, outputs: int, hidden: int = 32) -> None:
        super().__init__()
        self.rnn = nn.GRU(inputs, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


# --- transformers -------------------------------------------------------------------


class Transformer(nn.Module):
    """One post-LN encoder layer over one-hot tokens, mean-pooled (the sequence classifier)."""

    def __init__(self, vocab: int = 4, d: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(vocab, d)
        self.layer = nn.TransformerEncoderLayer(d, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(self.embed(x)).mean(1))


class Block(nn.Module):
    """A GPT-2 block: pre-LayerNorm multi-head self-attention and a 4x GELU MLP, each on a residual."""

    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.heads = heads
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, 2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


def gpt2_init(model: nn.Module, layers: int) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 layers)."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)


class GPT(nn.Module):
    """A GPT-2-style character language model (Radford et al. 2019's layout, written here).

    Token and learned position embeddings, ``layers`` pre-LN blocks with causal
    attention, a final LayerNorm and an output layer tied to the token
    embedding; GPT-2's initialisation; no dropout. Returns logits ``(B, T, vocab)``.
    """

    def __init__(self, vocab: int, d: int = 64, layers: int = 3, heads: int = 4, context: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.h = nn.ModuleList(Block(d, heads, causal=True) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        gpt2_init(self, layers)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T


class PreLNLM(nn.Module):
    """A character LM as a PyTorch user writes it: ``nn.TransformerEncoderLayer(norm_first=True)``, causal mask.

    Default PyTorch initialisation, learned positions, a final LayerNorm and an
    untied output layer.
    """

    def __init__(self, vocab: int, d: int = 64, layers: int = 2, heads: int = 4, context: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.embed(idx) + self.pos[:t]
        return self.head(self.norm(self.encoder(x, mask=self.mask[:t, :t], is_causal=True)))


class ViT(nn.Module):
    """A patch-based vision transformer: linear patch embedding, class token, pre-LN blocks, LayerNorm head."""

    def __init__(self, image: int, patch: int, classes: int, d: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(patch * patch, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens + 1, d))
        self.blocks = nn.ModuleList(Block(d, heads, causal=False) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        patches = F.unfold(x, p, stride=p).transpose(1, 2)  # (B, tokens, p*p)
        z = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(patches)], 1) + self.pos
        for block in self.blocks:
            z = block(z)
        return self.head(self.norm(z[:, 0]))


# --- optimizers --------------------------------------------------------------------


def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def sgd_plain(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)


def adam(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def adamw(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def adamw_default(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr)


def adamw_llm(params: Any, lr: float) -> torch.optim.Optimizer:
    """The LLM recipe: AdamW, betas (0.9, 0.95), weight decay 0.1 on matrices and embeddings only."""
    params = list(params)
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def rmsprop(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr)


def adagrad(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=lr)


def adadelta(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adadelta(params, lr=lr)
