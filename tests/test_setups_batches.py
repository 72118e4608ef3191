"""Batches of any format, passed through unchanged; to_device moves tensors nested in tuples, lists and dicts."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from _setup_helpers import check_curve, consume_rng, mlp, mse, regression_data
from _state import Restored

from torch_lrrange import RangeTest, range_test
from torch_lrrange._one_call import to_device

START, END, STEPS = 1e-4, 1e-1, 12


@dataclass
class Example:
    features: torch.Tensor
    target: torch.Tensor
    name: str = "x"


class Opaque:
    """A custom batch object with no structure the library could know."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._payload = {"in": x, "out": y}

    def inputs(self) -> torch.Tensor:
        return self._payload["in"]

    def targets(self) -> torch.Tensor:
        return self._payload["out"]


class Pair(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


FORMATS = {
    "tuple": (lambda x, y: (x, y), lambda b: b),
    "list": (lambda x, y: [x, y], lambda b: tuple(b)),
    "dict": (lambda x, y: {"x": x, "y": y, "meta": "m"}, lambda b: (b["x"], b["y"])),
    "namedtuple": (Pair, lambda b: (b.x, b.y)),
    "nested": (lambda x, y: ({"x": [x]}, (y,)), lambda b: (b[0]["x"][0], b[1][0])),
    "dataclass": (Example, lambda b: (b.features, b.target)),
    "custom": (Opaque, lambda b: (b.inputs(), b.targets())),
    "tensor": (lambda x, y: torch.cat([x, y], dim=1), lambda b: (b[:, :-1], b[:, -1:])),
}


def _batches(fmt: str) -> list:
    make, _ = FORMATS[fmt]
    return [make(x, y) for x, y in regression_data()]


def _loss(fmt: str):
    _, unpack = FORMATS[fmt]

    def loss_fn(model, batch):
        x, y = unpack(batch)
        return torch.nn.functional.mse_loss(model(x), y)

    return loss_fn


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_batches_yields_every_format_unchanged(fmt):
    data = _batches(fmt)
    loss_fn = _loss(fmt)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    saved = Restored(model, opt)
    recorded = []
    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        for i, batch in enumerate(rt.batches(data)):
            assert batch is data[i % len(data)]
            consume_rng()
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
            recorded.append(loss.item())
    check_curve(rt.result, recorded, start_lr=START, end_lr=END, num_steps=STEPS)
    saved.check()


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")], ids=["none", "str", "device"])
def test_range_test_passes_every_format_to_loss_fn(fmt, device):
    data = _batches(fmt)
    inner = _loss(fmt)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    saved = Restored(model, opt)
    seen, recorded = [], []

    def loss_fn(m, batch):
        seen.append(batch)
        loss = inner(m, batch)
        recorded.append(loss.item())
        return loss

    result = range_test(
        model, opt, data, loss_fn, device=device, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
    )
    for i, batch in enumerate(seen):
        original = data[i % len(data)]
        if device is None or fmt in ("dataclass", "custom", "tensor"):
            assert batch is original  # nothing to move into (or a tensor already there)
        else:
            assert type(batch) is type(original) and batch is not original
            assert all(torch.equal(a, b) for a, b in zip(FORMATS[fmt][1](batch), FORMATS[fmt][1](original)))
    check_curve(result, recorded, start_lr=START, end_lr=END, num_steps=STEPS)
    saved.check()


def test_to_device_moves_nested_tensors_and_keeps_the_rest():
    x, y = torch.ones(2, 3), torch.zeros(2)
    example = Example(x, y)
    opaque = Opaque(x, y)
    batch = OrderedDict(
        inputs=(x, [y, "label", 3]),
        pair=Pair(x, y),
        example=example,
        opaque=opaque,
        nothing=None,
    )
    moved = to_device(batch, "meta")
    assert type(moved) is OrderedDict and list(moved) == list(batch)
    assert type(moved["inputs"]) is tuple and type(moved["inputs"][1]) is list
    assert moved["inputs"][0].device.type == "meta" and moved["inputs"][0].shape == x.shape
    assert moved["inputs"][1][0].device.type == "meta" and moved["inputs"][1][1:] == ["label", 3]
    assert type(moved["pair"]) is Pair and moved["pair"].x.device.type == "meta" and moved["pair"].y.is_meta
    assert moved["example"] is example and moved["opaque"] is opaque and moved["nothing"] is None
    assert x.device.type == "cpu"  # the input is not modified
    assert to_device(x, torch.device("meta")).is_meta
    counts = defaultdict(list, {"x": x})
    moved = to_device(counts, "meta")
    assert type(moved) is defaultdict and moved.default_factory is list and moved["x"].is_meta
    assert counts["x"] is x and moved is not counts


def test_device_must_be_a_str_or_torch_device():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with pytest.raises(TypeError, match=r"device must be a str or torch\.device, got int"):
        range_test(model, opt, regression_data(), lambda m, b: m(b[0]).sum(), device=0, num_steps=4, confirm=False)


def test_range_test_device_moves_batches_before_loss_fn_sees_them():
    # "meta" stands in for an accelerator: every tensor loss_fn receives has been moved there.
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    saved = Restored(model, opt)
    data = [{"x": x, "y": (y, "tag")} for x, y in regression_data()]
    fixed = regression_data(n_batches=1, seed=3)[0]
    seen = []

    def loss_fn(m, batch):
        seen.append((batch["x"].device.type, batch["y"][0].device.type, batch["y"][1]))
        return mse(m, fixed)

    result = range_test(
        model, opt, data, loss_fn, device="meta", start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
    )
    assert seen == [("meta", "meta", "tag")] * STEPS
    assert len(result.losses) == STEPS
    assert all(b["x"].device.type == "cpu" for b in data)
    saved.check()


class _DictDataset(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 6, generator=g)
        self.y = torch.randn(24, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "id": i}


def test_shuffled_dataloader_of_dicts():
    # A shuffling DataLoader draws its order from the torch RNG: restored, so the next epoch is unaffected.
    loader = torch.utils.data.DataLoader(_DictDataset(), batch_size=8, shuffle=True)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    saved = Restored(model, opt)
    ids, recorded = [], []

    def loss_fn(m, batch):
        ids.append(batch["id"].tolist())
        loss = mse(m, (batch["x"], batch["y"]))
        recorded.append(loss.item())
        return loss

    result = range_test(
        model, opt, loader, loss_fn, device="cpu", start_lr=START, end_lr=END, num_steps=STEPS, confirm=False
    )
    check_curve(result, recorded, start_lr=START, end_lr=END, num_steps=STEPS)
    assert all(sorted(j for b in ids[e : e + 3] for j in b) == list(range(24)) for e in range(0, STEPS, 3))  # epochs
    assert ids[:3] != ids[3:6]  # reshuffled on each pass
    saved.check()
    assert [b["id"].tolist() for b in loader] == ids[:3]  # the RNG is back: the first epoch repeats


@pytest.mark.parametrize(
    ("loss_fn", "error", "message"),
    [
        (lambda m, b: 1.0, TypeError, "loss_fn must return a scalar tensor, got float"),
        (lambda m, b: None, TypeError, "loss_fn must return a scalar tensor, got NoneType"),
        (
            lambda m, b: F.mse_loss(m(b[0]), b[1], reduction="none"),
            ValueError,
            r"loss_fn must return a scalar tensor, got a tensor of shape \(8, 1\)",
        ),
    ],
)
@pytest.mark.parametrize("where", ["training", "validation", "closure"])
def test_a_loss_fn_that_returns_no_scalar_tensor_is_named(loss_fn, error, message, where):
    data = regression_data()
    model = mlp()
    opt = (torch.optim.LBFGS if where == "closure" else torch.optim.SGD)(model.parameters(), lr=1e-2)
    saved = Restored(model, opt)
    if where == "validation":
        fn = lambda m, b: loss_fn(m, b) if not m.training else mse(m, b)  # noqa: E731
        options = {"val_loader": data}
    else:
        fn, options = loss_fn, {}
    with pytest.raises(error, match=message):
        range_test(model, opt, data, fn, num_steps=4, **options, confirm=False)
    saved.check()
