"""Tasks, training and ground truth for ``suggestion_quality.py`` (CPU, seconds each).

Every task is built from data that scikit-learn ships, text that ships with
Python, or data generated here (``_quality_data.py``), so the benchmark needs
no download. A task knows how to build its data, its model (from a seed, so
every LR starts from the same weights; a fine-tuning task starts from weights
pretrained here and cached), its optimizer and its validation metric.
:func:`train` runs the fixed training budget at a constant LR (the task's own
schedule around it: a warm-up, a StepLR) or under ``OneCycleLR``; :class:`Cache`
keeps every result on disk under ``benchmarks/.cache/`` so that reruns only
train what is new.

The split was fixed in this file before any rule of the library was changed
for this benchmark, and is not to be moved: ``Task.split`` is ``"tuning"`` (the
first six tasks, on which the old default was fixed, and nine new ones) or
``"held-out"`` (the seventh, the old rule's hold-out, and ten new ones). Rules
are designed on the tuning tasks only; held-out figures are read once a rule
is final.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _quality_data as data
import _quality_models as models
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")
TUNING, HELD_OUT = "tuning", "held-out"
#: Seeds of the reference grid searches: the ground-truth grids trained again from other weights and batch order.
CEILING_SEEDS = (2, 3)
#: LRs in a ground-truth grid, a third of a decade apart (five decades).
GRID_SIZE = 16
#: How each grid LR is trained: at a constant LR (the task's own warm-up or StepLR around it), or OneCycleLR.
PROTOCOLS = ("constant", "onecycle")
#: Seeds of the ground truth: its scores are the mean over them.
SEEDS = (0, 1)
#: The reference rows: a grid search at each of ``CEILING_SEEDS``.
CEILING_ROWS = {f"grid-search-seed{seed}": seed for seed in CEILING_SEEDS}
CEILING_NOTE = "reference: 16 full training runs per protocol at another seed"


@dataclass
class Task:
    name: str
    kind: str  # "accuracy" (higher is better, in points) or "loss" (lower is better)
    data: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    model: Callable[[], nn.Module]
    optimizer: Callable[[Any, float], torch.optim.Optimizer]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    epochs: int
    batch_size: int = 32
    #: ``TUNING`` or ``HELD_OUT`` (see the module docstring).
    split: str = TUNING
    #: log10 of the smallest LR of the ground-truth grid (``GRID_SIZE`` LRs a third of a decade apart).
    grid_start: float = -5.0
    #: Constant protocol: linear warm-up from 0 over this fraction of the budget, then the constant LR.
    warmup: float = 0.0
    #: Constant protocol: ``StepLR(step_size=1 epoch, gamma=step_gamma)`` around the LR (PyTorch's MNIST example).
    step_gamma: float | None = None
    #: What the task stands for (the kinds of work the benchmark must span).
    tags: tuple[str, ...] = ()

    _cached: tuple[torch.Tensor, ...] | None = None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        if self._cached is None:
            self._cached = self.data()
        return self._cached

    def loader(self, seed: int) -> DataLoader:
        """Shuffled batches, the last partial one dropped; the order is drawn from ``seed``.

        The batches are those of ``DataLoader(..., batch_size, shuffle=True,
        generator=seeded, drop_last=True)``, gathered by one index per batch
        rather than one per sample (the same batches, faster for large ones).
        """
        x, y, _, _ = self.tensors()
        g = torch.Generator().manual_seed(seed)
        batches = BatchSampler(RandomSampler(x, generator=g), self.batch_size, drop_last=True)
        return DataLoader(TensorDataset(x, y), sampler=batches, batch_size=None, generator=g)

    def val_loader(self, batch_size: int = 512) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The validation set as a fixed list of batches (for validation-loss sweeps)."""
        _, _, xv, yv = self.tensors()
        return [(xv[i : i + batch_size], yv[i : i + batch_size]) for i in range(0, len(xv), batch_size)]

    def build(self, seed: int) -> nn.Module:
        torch.manual_seed(1000 + seed)
        return self.model()

    def grid(self) -> np.ndarray:
        """The ground-truth LRs: ``GRID_SIZE`` LRs from ``10**grid_start``, a third of a decade apart."""
        return 10 ** (self.grid_start + np.arange(GRID_SIZE) / 3)

    def steps(self) -> int:
        """Optimizer steps in the training budget."""
        return self.epochs * len(self.loader(0))

    def family(self) -> str:
        """The optimizer's class name (``"SGD"``, ``"AdamW"``, ...)."""
        return type(self.optimizer([nn.Parameter(torch.zeros(1))], 1e-3)).__name__

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """Validation accuracy in points, or validation loss; ``nan`` if training blew up."""
        _, _, xv, yv = self.tensors()
        model.eval()
        out = model(xv)
        model.train()
        if not torch.isfinite(out).all():
            return math.nan
        if self.kind == "accuracy":
            return float((out.argmax(1) == yv).float().mean()) * 100.0
        return float(self.loss(out, yv))


# --- pretrained weights for the fine-tuning tasks -------------------------------------------


def pretrained(name: str, task: Task, lr: float, epochs: int) -> dict[str, torch.Tensor]:
    """Weights of ``task``'s model after one-cycle training at ``lr`` for ``epochs`` (seed 0), cached on disk."""
    path = os.path.join(CACHE_DIR, f"pretrained-{name}.pt")
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    os.makedirs(CACHE_DIR, exist_ok=True)
    model = task.build(0)
    opt = task.optimizer(model.parameters(), lr)
    loader = task.loader(0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            task.loss(model(x), y).backward()
            opt.step()
            sched.step()
    state = model.state_dict()
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return state


def _from_pretrained(build: Callable[[], nn.Module], weights: Callable[[], dict[str, torch.Tensor]]):
    def make() -> nn.Module:
        model = build()
        model.load_state_dict(weights())
        return model

    return make


# --- the tasks ----------------------------------------------------------------------------


def lm_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


def _prose(n_train: int, skip: int = 0):
    return lambda: data.char_lm(data.prose_text(), n_train, 128, skip=skip)


def _code(n_train: int):
    return lambda: data.char_lm(data.code_text(), n_train, 128)


def _mlp(*sizes: int, norm: type[nn.Module] | None = None, act: type[nn.Module] = nn.ReLU) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers += [norm(b)] if norm is not None else []
                layers.append(act())
        return nn.Sequential(*layers)

    return make


def _mixed_text() -> tuple[torch.Tensor, ...]:
    """Pretraining text for the fine-tuned LM: 12000 windows of Python source and 4000 of prose.

    The prose windows are cut after those of every prose task (``skip``), so
    the fine-tuning task's training and validation windows are not among them.
    """
    code = data.char_lm(data.code_text(), 12000, 0)
    prose = data.char_lm(data.prose_text(), 4000, 0, skip=3000)
    return torch.cat([code[0], prose[0]]), torch.cat([code[1], prose[1]]), prose[2], prose[3]


def _gpt_pretraining_task() -> Task:
    """The source of the fine-tuned LM's weights: the held-out GPT, trained for 1000 steps on code and prose."""
    return Task(
        "pretrain-gpt-mix",
        "loss",
        _mixed_text,
        lambda: models.GPT(data.VOCAB, layers=3),
        models.adamw_llm,
        lm_loss,
        epochs=1,
        batch_size=16,
    )


def _digits_cnn_task() -> Task:
    """The source of the fine-tuned CNN's weights: the small CNN trained on the clean digits."""
    return Task(
        "pretrain-cnn-digits", "accuracy", lambda: data.digits(False), models.CNN, models.sgd, F.cross_entropy, 15
    )


def tasks() -> list[Task]:
    ce = F.cross_entropy
    gpt_weights = lambda: pretrained("gpt-mix", _gpt_pretraining_task(), 3e-3, 1)  # noqa: E731
    cnn_weights = lambda: pretrained("cnn-digits", _digits_cnn_task(), 0.1, 15)  # noqa: E731
    return [
        # --- tuning: the old rule's six tuning tasks, unchanged ---
        Task(
            "mlp-digits/sgd",
            "accuracy",
            lambda: data.digits(True),
            _mlp(64, 64, 10),
            models.sgd,
            ce,
            epochs=3,
            tags=("MLP", "SGD+momentum", "no normalisation"),
        ),
        Task(
            "cnn-digits/adam",
            "accuracy",
            lambda: data.digits(False),
            models.CNN,
            models.adam,
            ce,
            epochs=2,
            tags=("CNN", "Adam", "no normalisation"),
        ),
        Task(
            "bn-mlp-digits/sgd",
            "accuracy",
            lambda: data.digits(True),
            _mlp(64, 64, 64, 10, norm=nn.BatchNorm1d),
            models.sgd,
            ce,
            epochs=2,
            tags=("MLP", "BatchNorm", "SGD+momentum"),
        ),
        Task(
            "mlp-diabetes/sgd",
            "loss",
            data.diabetes,
            _mlp(10, 32, 1, act=nn.Tanh),
            models.sgd,
            F.mse_loss,
            epochs=10,
            batch_size=16,
            tags=("MLP", "regression", "small data", "SGD+momentum", "batch 16"),
        ),
        Task(
            "lstm-seq/adamw",
            "accuracy",
            data.majority_sequences,
            models.LSTM,
            models.adamw,
            ce,
            epochs=3,
            tags=("RNN", "AdamW"),
        ),
        Task(
            "transformer-seq/adamw",
            "accuracy",
            data.majority_sequences,
            models.Transformer,
            models.adamw,
            ce,
            3,
            tags=("transformer", "LayerNorm", "AdamW"),
        ),
        # --- held-out: the old rule's hold-out ---
        Task(
            "bn-cnn-digits/adamw",
            "accuracy",
            lambda: data.digits(False),
            models.BNCNN,
            models.adamw,
            ce,
            epochs=2,
            split=HELD_OUT,
            tags=("CNN", "BatchNorm", "AdamW"),
        ),
        # --- tuning: new ---
        Task(
            "gpt-code/adamw-llm",
            "loss",
            _code(2400),
            lambda: models.GPT(data.VOCAB, layers=2),
            models.adamw_llm,
            lm_loss,
            epochs=1,
            batch_size=16,
            warmup=0.1,
            tags=("transformer LM", "real text", "warm-up", "LLM recipe", "LayerNorm", "AdamW"),
        ),
        Task(
            "preln-code/adamw",
            "loss",
            _code(2400),
            lambda: models.PreLNLM(data.VOCAB),
            models.adamw_default,
            lm_loss,
            epochs=1,
            batch_size=16,
            tags=("transformer LM", "real text", "no warm-up", "LayerNorm", "AdamW"),
        ),
        Task(
            "ft-cnn-digits/sgd",
            "accuracy",
            data.shifted_digits,
            _from_pretrained(models.CNN, cnn_weights),
            models.sgd,
            ce,
            epochs=10,
            batch_size=16,
            grid_start=-6.0,
            tags=("fine-tuning", "small data", "CNN", "SGD+momentum", "batch 16"),
        ),
        Task(
            "overfit-friedman/adam",
            "loss",
            lambda: data.friedman(100, 2000, noise=3.0),
            _mlp(10, 256, 256, 1),
            models.adam,
            F.mse_loss,
            epochs=100,
            batch_size=16,
            grid_start=-6.0,
            tags=("small data", "regression", "MLP", "Adam", "batch 16"),
        ),
        Task(
            "vit-digits/adam",
            "accuracy",
            lambda: data.digits(False),
            lambda: models.ViT(8, 2, 10),
            models.adam,
            ce,
            epochs=5,
            tags=("ViT", "LayerNorm", "Adam"),
        ),
        Task(
            "mlp-tabular/sgd-bs1024",
            "accuracy",
            lambda: data.tabular(40960, 4000, seed=1),
            _mlp(20, 64, 64, 4),
            models.sgd_plain,
            ce,
            epochs=10,
            batch_size=1024,
            grid_start=-3.0,
            tags=("MLP", "SGD", "batch 1024", "no normalisation"),
        ),
        Task(
            "gru-seq/rmsprop",
            "accuracy",
            data.majority_sequences,
            lambda: models.GRU(4, 3),
            models.rmsprop,
            ce,
            epochs=3,
            tags=("RNN", "RMSprop"),
        ),
        Task(
            "cnn-digits/adagrad",
            "accuracy",
            lambda: data.digits(False),
            models.CNN,
            models.adagrad,
            ce,
            epochs=20,
            batch_size=16,
            grid_start=-4.0,
            tags=("CNN", "Adagrad", "batch 16", "thousands of steps"),
        ),
        Task(
            "mlp-digits/adadelta",
            "accuracy",
            lambda: data.digits(True),
            _mlp(64, 128, 10),
            models.adadelta,
            ce,
            epochs=4,
            grid_start=-2.0,
            step_gamma=0.7,
            tags=("MLP", "Adadelta", "StepLR"),
        ),
        # --- held-out: new ---
        Task(
            "gpt-prose/adamw-llm",
            "loss",
            _prose(2400),
            lambda: models.GPT(data.VOCAB, layers=3),
            models.adamw_llm,
            lm_loss,
            epochs=1,
            batch_size=16,
            warmup=0.1,
            split=HELD_OUT,
            tags=("transformer LM", "real text", "warm-up", "LLM recipe", "LayerNorm", "AdamW"),
        ),
        Task(
            "preln-prose/adamw",
            "loss",
            _prose(2400),
            lambda: models.PreLNLM(data.VOCAB),
            models.adamw_default,
            lm_loss,
            epochs=1,
            batch_size=16,
            split=HELD_OUT,
            tags=("transformer LM", "real text", "no warm-up", "LayerNorm", "AdamW"),
        ),
        Task(
            "ft-gpt-prose/adamw-llm",
            "loss",
            _prose(320, skip=2528),
            _from_pretrained(lambda: models.GPT(data.VOCAB, layers=3), gpt_weights),
            models.adamw_llm,
            lm_loss,
            epochs=5,
            batch_size=16,
            warmup=0.1,
            grid_start=-6.0,
            split=HELD_OUT,
            tags=("fine-tuning", "transformer LM", "real text", "small data", "LLM recipe", "AdamW"),
        ),
        Task(
            "overfit-diabetes/adam",
            "loss",
            data.diabetes,
            _mlp(10, 256, 256, 1),
            models.adam,
            F.mse_loss,
            epochs=40,
            batch_size=16,
            grid_start=-6.0,
            split=HELD_OUT,
            tags=("small data", "regression", "MLP", "Adam", "batch 16"),
        ),
        Task(
            "mnist-example/adadelta",
            "accuracy",
            lambda: data.digits(False),
            models.MnistExampleNet,
            models.adadelta,
            F.nll_loss,
            epochs=6,
            batch_size=64,
            grid_start=-3.0,
            step_gamma=0.7,
            split=HELD_OUT,
            tags=("CNN", "Adadelta", "StepLR", "dropout"),
        ),
        Task(
            "mlp-tabular/adagrad",
            "accuracy",
            lambda: data.tabular(8000, 2000, seed=4),
            _mlp(20, 128, 128, 4),
            models.adagrad,
            ce,
            epochs=5,
            batch_size=128,
            grid_start=-4.0,
            split=HELD_OUT,
            tags=("MLP", "Adagrad", "no normalisation"),
        ),
        Task(
            "gru-adding/rmsprop",
            "loss",
            data.adding_problem,
            lambda: models.GRU(2, 1),
            models.rmsprop,
            F.mse_loss,
            epochs=6,
            split=HELD_OUT,
            tags=("RNN", "RMSprop", "regression"),
        ),
        Task(
            "mlp-digits/sgd-bs1024",
            "accuracy",
            lambda: data.digits(True),
            _mlp(64, 64, 10),
            models.sgd_plain,
            ce,
            epochs=300,
            batch_size=1024,
            grid_start=-3.0,
            split=HELD_OUT,
            tags=("MLP", "SGD", "batch 1024", "no normalisation"),
        ),
        Task(
            "ln-mlp-tabular/sgd-bs16",
            "accuracy",
            lambda: data.tabular(3200, 2000, seed=2),
            _mlp(20, 64, 64, 4, norm=nn.LayerNorm),
            models.sgd,
            ce,
            epochs=10,
            batch_size=16,
            grid_start=-5.0,
            split=HELD_OUT,
            tags=("MLP", "LayerNorm", "SGD+momentum", "batch 16", "thousands of steps"),
        ),
        Task(
            "vit-shapes/adamw",
            "accuracy",
            data.shapes,
            lambda: models.ViT(16, 4, 4),
            models.adamw,
            ce,
            epochs=4,
            batch_size=64,
            split=HELD_OUT,
            tags=("ViT", "LayerNorm", "AdamW"),
        ),
    ]


def split_of(name: str) -> str:
    return next(t.split for t in tasks() if t.name == name)


# --- training -----------------------------------------------------------------


def _cycles_momentum(opt: torch.optim.Optimizer) -> bool:
    """OneCycleLR cycles momentum only where the optimizer has some (betas, or a non-zero momentum)."""
    defaults = opt.defaults
    return "betas" in defaults or float(defaults.get("momentum", 0.0)) > 0


def schedule(task: Task, opt: torch.optim.Optimizer, lr: float, protocol: str) -> Any:
    """The LR schedule of ``protocol`` for ``task`` (stepped once per optimizer step), or None."""
    total = task.steps()
    if protocol == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=total, cycle_momentum=_cycles_momentum(opt)
        )
    per_epoch = total // task.epochs
    warm = round(task.warmup * total)
    if warm == 0 and task.step_gamma is None:
        return None
    gamma = task.step_gamma if task.step_gamma is not None else 1.0
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / warm if warm else 1.0) * gamma ** (step // per_epoch)
    )


def fit(
    task: Task,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    seed: int,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> float:
    """Train ``model`` for the task's budget (``on_step(loss)`` after each step); the validation metric."""
    loader = task.loader(seed)
    train_mode = getattr(opt, "train", None)  # schedule-free optimizers switch weights for training / evaluation
    if callable(train_mode):
        train_mode()
    for _ in range(task.epochs):
        for x, y in loader:
            opt.zero_grad()
            loss = task.loss(model(x), y)
            if not torch.isfinite(loss):
                return math.nan
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if on_step is not None:
                on_step(loss.detach())
    eval_mode = getattr(opt, "eval", None)
    if callable(eval_mode):
        eval_mode()
    return task.evaluate(model)


def train(task: Task, lr: float, protocol: str, seed: int, hyper: dict[str, Any] | None = None) -> float:
    """Validation metric after the fixed budget at constant ``lr`` or OneCycleLR(max_lr=lr).

    "constant" keeps the task's own schedule around ``lr`` (a warm-up, a StepLR).
    ``hyper``: param-group keys set after the task's optimizer is built (``{"weight_decay": 1e-4}``).
    """
    model = task.build(seed)
    opt = task.optimizer(model.parameters(), lr)
    for group in opt.param_groups:
        group.update(hyper or {})
    return fit(task, model, opt, schedule(task, opt, lr, protocol), seed)


def score(task: Task, value: float) -> float:
    """A metric where higher is better and nan (blow-up) is the worst: accuracy, or -loss."""
    if task.kind == "accuracy":
        return 0.0 if math.isnan(value) else value
    return -1e9 if math.isnan(value) else -value


class Cache:
    """A JSON file of results keyed by strings; written after every new entry.

    Several processes may fill one cache at once (``--tasks`` shards): each
    write takes a lock, merges what the others wrote, and replaces the file.
    """

    def __init__(self, name: str) -> None:
        os.makedirs(CACHE_DIR, exist_ok=True)
        self.path = os.path.join(CACHE_DIR, name)
        self.data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if not os.path.exists(self.path):
            return {}
        with open(self.path, encoding="utf-8") as f:
            return json.load(f)

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.data:
            value = compute()
            with open(self.path + ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.data = {**self._read(), **self.data, key: value}
                tmp = self.path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(self.data, f)
                os.replace(tmp, self.path)
        return self.data[key]


def trained(
    cache: Cache, task: Task, lr: float, protocol: str, seeds: tuple[int, ...], hyper: dict[str, Any] | None = None
) -> float:
    """Mean score over ``seeds`` of training at ``lr`` (cached per seed and ``hyper``)."""
    values = []
    suffix = "".join(f"|{k}={v!r}" for k, v in sorted((hyper or {}).items()))
    for seed in seeds:
        key = f"{task.name}|{protocol}|{seed}|{lr:.6g}|e{task.epochs}{suffix}"
        value = cache.get(key, lambda seed=seed: train(task, lr, protocol, seed, hyper))
        values.append(score(task, math.nan if value is None else value))
    return float(np.mean(values))


# --- ground truth ---------------------------------------------------------------


def truth(cache: Cache, task: Task, seeds: tuple[int, ...] = SEEDS) -> dict[str, np.ndarray]:
    """``{protocol: mean score at each grid LR}``."""
    return {p: np.array([trained(cache, task, lr, p, seeds) for lr in task.grid()]) for p in PROTOCOLS}


def grid_search(cache: Cache, task: Task) -> dict[str, dict[str, float | None]]:
    """``{row: {protocol: lr}}``: the best LR of the whole grid trained at each seed of ``CEILING_ROWS``.

    Scored against the ground truth of ``SEEDS`` like any suggestion, they show how
    often the best LR of one seed is in the band of others: the ceiling that
    seed-to-seed noise puts on any method, at 16 times the training budget.
    """
    grid, out = task.grid(), {}
    for row, seed in CEILING_ROWS.items():
        scores = truth(cache, task, (seed,))
        out[row] = {p: float(grid[int(np.argmax(scores[p]))]) for p in PROTOCOLS}
    return out
