"""Any model: resnet18 (BatchNorm), LSTM, TransformerEncoder, frozen and tied parameters, mixed dtypes, eval mode."""

from __future__ import annotations

import pytest
import torch
from _setup_helpers import check_curve, consume_rng, group_lr, train, user_loop
from _state import Restored
from torch import nn

from torch_lrrange import RangeTest, range_test

START, END, STEPS = 1e-5, 1e-2, 12


def _cross_entropy(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _class_data(shape: tuple[int, ...], classes: int, n_batches: int = 3, batch: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *shape, generator=g), torch.randint(classes, (batch,), generator=g))
        for _ in range(n_batches)
    ]


def _token_data(vocab: int, length: int = 7, n_batches: int = 3, batch: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(vocab, (batch, length), generator=g), torch.randint(vocab, (batch,), generator=g))
        for _ in range(n_batches)
    ]


class LSTMClassifier(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


class TiedLM(nn.Module):
    """Embedding and output projection share one weight."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        return self.out(torch.tanh(self.mix(self.embed(tokens).mean(dim=1))))


class MixedDtypes(nn.Module):
    """A float64 submodule between float32 ones, a float16 buffer and a non-persistent int buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(6, 8)
        self.precise = nn.Linear(8, 8).double()
        self.last = nn.Linear(8, 3)
        self.register_buffer("scale", torch.full((8,), 0.5, dtype=torch.float16))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64), persistent=False)

    def forward(self, x):
        self.calls += 1
        h = torch.relu(self.first(x)) * self.scale.float()
        h = torch.relu(self.precise(h.double())).float()
        return self.last(h)


def _run(model, opt, data, loss_fn, *, num_steps=STEPS, end_lr=END):
    train(model, opt, data, loss_fn, steps=2)
    saved = Restored(model, opt)
    with RangeTest(model, opt, start_lr=START, end_lr=end_lr, num_steps=num_steps, confirm=False) as rt:
        lrs, losses = user_loop(rt, model, opt, data, loss_fn)
    check_curve(rt.result, losses, start_lr=START, end_lr=end_lr, num_steps=num_steps, lrs_seen=lrs)
    saved.check()
    return rt.result


def test_resnet18_with_batchnorm():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    data = _class_data((3, 32, 32), 10, n_batches=2)
    bn = model.bn1
    _run(model, opt, data, _cross_entropy, num_steps=8)
    assert int(bn.num_batches_tracked) == 3  # the two training steps and one backward of train(), not the sweep's


def test_lstm():
    torch.manual_seed(0)
    model = LSTMClassifier()
    _run(model, torch.optim.Adam(model.parameters(), lr=1e-3), _token_data(20), _cross_entropy)


def test_transformer_encoder():
    torch.manual_seed(0)
    model = TinyTransformer()
    _run(model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01), _token_data(20), _cross_entropy)


@pytest.mark.parametrize("in_optimizer", [True, False], ids=["frozen-in-optimizer", "frozen-left-out"])
def test_frozen_parameters(in_optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    params = model.parameters() if in_optimizer else model[2].parameters()
    opt = torch.optim.Adam(params, lr=1e-3)
    frozen = [p.detach().clone() for p in model[0].parameters()]
    _run(model, opt, _class_data((6,), 3), _cross_entropy)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[0].parameters()))
    assert all(not p.requires_grad and p.grad is None for p in model[0].parameters())


def test_tied_weights():
    torch.manual_seed(0)
    model = TiedLM()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    assert len(list(model.parameters())) == 3  # the tied weight counts once
    _run(model, opt, _token_data(20), _cross_entropy)
    assert model.out.weight is model.embed.weight


def test_mixed_dtypes():
    torch.manual_seed(0)
    model = MixedDtypes()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _run(model, opt, _class_data((6,), 3), _cross_entropy)
    assert model.precise.weight.dtype == torch.float64 and model.scale.dtype == torch.float16
    assert int(model.calls) == 3  # the non-persistent buffer is back to train()'s 3 forwards


def test_model_in_eval_mode_and_mixed_submodule_modes_come_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    data = _class_data((6,), 3)
    for modes in ([False] * 6, [True, True, False, True, True, True]):  # all eval; train but dropout off
        for module, training in zip(model.modules(), modes):
            module.training = training
        saved = Restored(model, opt)

        losses = []

        def loss_fn(m, batch, losses=losses):
            m.train()  # the user's loss_fn switches modes: restored afterwards anyway
            loss = _cross_entropy(m, batch)
            losses.append(loss.item())
            return loss

        result = range_test(model, opt, data, loss_fn, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False)
        check_curve(result, losses, start_lr=START, end_lr=END, num_steps=STEPS)
        saved.check()
        assert [m.training for m in model.modules()] == modes


def test_model_left_in_eval_mode_trains_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    saved = Restored(model, opt)
    seen = []

    def loss_fn(m, batch):
        seen.append(m.training)
        return _cross_entropy(m, batch)

    with RangeTest(model, opt, start_lr=START, end_lr=END, num_steps=STEPS, confirm=False) as rt:
        for batch in rt.batches(_class_data((6,), 3)):
            consume_rng()
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
            assert group_lr(opt.param_groups[0]) == rt.lr
    assert seen == [False] * STEPS
    saved.check()  # BatchNorm running stats untouched in eval mode and still equal
