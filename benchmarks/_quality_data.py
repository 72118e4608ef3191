"""Data sets of the suggestion benchmark: nothing is downloaded.

Every function returns ``(x_train, y_train, x_val, y_val)`` tensors built from
data that scikit-learn ships (digits, diabetes), text that ships with Python
itself (the reference prose of ``pydoc_data/topics.py`` and the standard
library's own source code), or data generated here from a fixed seed.
"""

from __future__ import annotations

import functools
import glob
import os
import sysconfig

import numpy as np
import torch

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def split(x: np.ndarray, y: np.ndarray, y_dtype: torch.dtype, seed: int = 0, train: float = 0.8) -> Tensors:
    """A random ``train`` / rest split of ``(x, y)`` as float32 inputs and ``y_dtype`` targets."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    cut = int(train * len(x))
    tr, va = idx[:cut], idx[cut:]
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=y_dtype)
    return xt[tr], yt[tr], xt[va], yt[va]


# --- scikit-learn's bundled data ----------------------------------------------------


def digits(flat: bool) -> Tensors:
    """scikit-learn's 1797 8x8 digits, centred, 80/20 split (1437 / 360)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data / 16.0
    x = x - x.mean(0)
    if not flat:
        x = x.reshape(-1, 1, 8, 8)
    return split(x, d.target, torch.long)


def shifted_digits(train_size: int = 200) -> Tensors:
    """The digits at 70% contrast with Gaussian noise (sd 0.25): a shifted copy for fine-tuning.

    ``train_size`` images to train on (a small set, as fine-tuning usually has);
    validation on the same 360 held-out images as :func:`digits`, shifted alike.
    """
    x, y, xv, yv = digits(flat=False)

    def shift(images: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return 0.7 * images + 0.25 * torch.randn(images.shape, generator=g)

    return shift(x[:train_size], 11), y[:train_size], shift(xv, 12), yv


def diabetes() -> Tensors:
    """scikit-learn's diabetes regression (442 patients, 10 features), standardised, 80/20 split."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = (d.data - d.data.mean(0)) / d.data.std(0)
    y = (d.target - d.target.mean()) / d.target.std()
    return split(x, y.reshape(-1, 1), torch.float32)


# --- generated data -----------------------------------------------------------------


def majority_sequences(n: int = 2000, length: int = 16, vocab: int = 4) -> Tensors:
    """Sequences of one-hot tokens; the label is the most frequent of tokens 0..2 (ties: lowest)."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, vocab, size=(n, length))
    counts = np.stack([(tokens == k).sum(1) for k in range(3)], 1)
    y = counts.argmax(1)
    x = np.eye(vocab, dtype=np.float32)[tokens]
    return split(x, y, torch.long)


def tabular(n_train: int, n_val: int, seed: int, classes: int = 4, features: int = 20) -> Tensors:
    """scikit-learn's ``make_classification``: Gaussian clusters, 10 informative features, 2% label noise."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n_train + n_val,
        n_features=features,
        n_informative=10,
        n_redundant=4,
        n_classes=classes,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.02,
        random_state=seed,
    )
    x = (x - x.mean(0)) / x.std(0)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    return xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]


def friedman(n_train: int = 200, n_val: int = 2000, noise: float = 1.0) -> Tensors:
    """Friedman's #1 regression (``make_friedman1``, Gaussian noise of sd ``noise``), target standardised on the training set."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n_train + n_val, n_features=10, noise=noise, random_state=3)
    x = (x - 0.5) / np.sqrt(1 / 12)
    y = (y - y[:n_train].mean()) / y[:n_train].std()
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    return xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]


def adding_problem(n_train: int = 2000, n_val: int = 1000, length: int = 30) -> Tensors:
    """Hochreiter & Schmidhuber's adding problem: the sum of the two marked values of a sequence.

    Each step holds ``(value in [0, 1), marker in {0, 1})``; exactly two markers
    per sequence; the target (standardised) is the sum of their values.
    """
    rng = np.random.default_rng(5)
    n = n_train + n_val
    values = rng.random((n, length))
    marks = np.zeros((n, length))
    for i in range(n):
        marks[i, rng.choice(length, 2, replace=False)] = 1.0
    y = (values * marks).sum(1)
    y = (y - 1.0) / np.sqrt(2 / 12)
    x = np.stack([values, marks], -1)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    return xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]


def shapes(n_train: int = 3000, n_val: int = 1000, size: int = 16) -> Tensors:
    """Noisy 16x16 images of four shapes (box outline, disc, plus, diagonal cross) at random places and sizes."""
    rng = np.random.default_rng(9)
    n = n_train + n_val
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    labels = rng.integers(0, 4, n)
    for i in range(n):
        r = rng.integers(2, 5)
        cy, cx = rng.integers(r, size - r, 2)
        dy, dx = yy - cy, xx - cx
        inside = (np.abs(dy) <= r) & (np.abs(dx) <= r)
        if labels[i] == 0:
            mask = inside & ((np.abs(dy) == r) | (np.abs(dx) == r))
        elif labels[i] == 1:
            mask = dy**2 + dx**2 <= r**2
        elif labels[i] == 2:
            mask = inside & ((dy == 0) | (dx == 0))
        else:
            mask = inside & ((dy == dx) | (dy == -dx))
        images[i, 0] = mask * rng.uniform(0.5, 1.0)
    images += rng.normal(0, 0.35, images.shape).astype(np.float32)
    xt, yt = torch.tensor(images), torch.tensor(labels, dtype=torch.long)
    return xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]


# --- text shipped with Python -------------------------------------------------------

#: Character vocabulary: 0 = any other character, 1 = newline, 2.. = printable ASCII.
VOCAB = 2 + 95


def encode(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    out = np.where((codes >= 32) & (codes < 127), codes - 30, 0)
    out[codes == 10] = 1
    return out


@functools.cache
def prose_text() -> str:
    """English prose: the reference topics of ``pydoc_data/topics.py`` (about 460k characters), by topic name."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@functools.cache
def code_text(chars: int = 1_500_000) -> str:
    """Python source: the standard library's top-level modules in name order, the first ``chars`` characters."""
    stdlib = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
        total += len(parts[-1])
        if total >= chars:
            break
    return "".join(parts)[:chars]


def char_lm(text: str, n_train: int, n_val: int, context: int = 64, seed: int = 0, skip: int = 0) -> Tensors:
    """Next-character prediction: windows of ``context + 1`` characters, shuffled, split train / val.

    ``x``: the first ``context`` characters (int64 codes), ``y``: the same shifted
    by one. ``skip`` windows (after shuffling) are passed over first, so two data
    sets cut from one text with different ``skip`` share no window.
    """
    tokens = encode(text)
    count = len(tokens) // (context + 1)
    windows = tokens[: count * (context + 1)].reshape(count, context + 1)
    order = np.random.default_rng(seed).permutation(count)[skip : skip + n_train + n_val]
    if len(order) < n_train + n_val:
        raise ValueError(f"the text holds {count} windows, {skip + n_train + n_val} are needed")
    w = torch.tensor(windows[order])
    x, y = w[:, :-1], w[:, 1:]
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]
