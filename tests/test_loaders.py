"""Loaders a sweep iterates come back as they were: their own generators, sampler epochs, persistent worker pools."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from torch_lrrange import RangeTest, range_test
from torch_lrrange._loaders import LoaderState, loader_generators, sampler_epochs


class NoisyDigits(Dataset):
    """Items with a random draw inside the worker (a random augmentation): shows the workers' RNG."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor([float(i)]), torch.rand(1)


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _epoch(loader):
    """The order and the in-worker draws of one epoch."""
    return [(x.flatten().tolist(), y.flatten().tolist()) for x, y in loader]


def _loader(**kwargs):
    return DataLoader(NoisyDigits(), batch_size=8, shuffle=True, **kwargs)


def _sweep(model, opt, loader, how):
    if how == "range_test":
        return range_test(model, opt, loader, loss_fn, num_steps=12)
    with RangeTest(model, opt, num_steps=12) as rt:  # 1.5 epochs: the sweep stops mid-epoch
        for batch in rt.batches(loader):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            loss.backward()
            opt.step()
            rt.record(loss)
    return rt.result


@pytest.mark.slow
@pytest.mark.parametrize("how", ["RangeTest", "range_test"])
def test_persistent_workers_started_by_the_test_are_shut_down_so_the_next_epoch_is_the_twins(how):
    """As PyTorch's MNIST example on an accelerator: num_workers=1, persistent_workers=True, shuffle=True."""
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(7)
    twin = _epoch(_loader(num_workers=1, persistent_workers=True))
    torch.manual_seed(7)
    tested = _loader(num_workers=1, persistent_workers=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the pool was the test's own
        _sweep(model, opt, tested, how)
    assert tested._iterator is None
    assert _epoch(tested) == twin  # same order, same draws inside the (new) worker


@pytest.mark.slow
def test_a_running_persistent_pool_keeps_the_order_and_warns_about_the_draws_in_its_workers():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(7)
    twin_loader = _loader(num_workers=1, persistent_workers=True)
    _epoch(twin_loader)
    twin = _epoch(twin_loader)
    torch.manual_seed(7)
    tested = _loader(num_workers=1, persistent_workers=True)
    _epoch(tested)
    with pytest.warns(UserWarning, match=r"persistent worker processes already run: .*cannot be put back") as caught:
        _sweep(model, opt, tested, "RangeTest")
    assert caught[0].filename == __file__
    after = _epoch(tested)
    assert [order for order, _ in after] == [order for order, _ in twin]  # the order is kept
    assert after != twin  # the draws made inside the reused worker moved on, as the warning says


@pytest.mark.parametrize("how", ["RangeTest", "range_test"])
@pytest.mark.parametrize("where", ["loader", "sampler"])
def test_a_generator_of_the_loaders_own_is_put_back(how, where):
    def make():
        g = torch.Generator().manual_seed(3)
        if where == "loader":
            return DataLoader(TensorDataset(torch.arange(64.0).unsqueeze(1), torch.zeros(64, 1)), 8, True, generator=g)
        sampler = torch.utils.data.RandomSampler(range(64), generator=g)
        return DataLoader(TensorDataset(torch.arange(64.0).unsqueeze(1), torch.zeros(64, 1)), 8, sampler=sampler)

    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    twin, tested = make(), make()
    _sweep(model, opt, tested, how)
    assert _epoch(tested) == _epoch(twin)


def test_loader_generators_finds_each_generator_once_in_nested_loaders():
    g = torch.Generator()
    a = DataLoader(range(8), shuffle=True, generator=g)
    b = DataLoader(range(8), sampler=torch.utils.data.RandomSampler(range(8), generator=g))
    assert loader_generators({"train": [a, b], "other": "not a loader"}) == [g]
    saved = g.get_state()
    state = LoaderState([a, b, iter(range(3))])  # anything else is ignored
    g.manual_seed(1)
    state.restore()
    assert torch.equal(g.get_state(), saved)


def test_range_test_warns_once_about_a_running_persistent_pool_at_the_callers_line():
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tested = _loader(num_workers=1, persistent_workers=True)
    _epoch(tested)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _sweep(model, opt, tested, "range_test")
    running = [w for w in caught if "persistent worker processes already run" in str(w.message)]
    assert len(running) == 1 and running[0].filename == __file__


def test_a_samplers_epoch_is_put_back():
    """A DistributedSampler's epoch (a trainer sets it each epoch) comes back, and with it the next pass's order."""
    data = range(64)
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, seed=5)
    loader = DataLoader(data, batch_size=8, sampler=sampler)
    plain = DataLoader(data, batch_size=8, sampler=torch.utils.data.SequentialSampler(data))
    assert sampler_epochs({"train": [loader, loader], "plain": plain}) == [(sampler, 0)]  # once, with its epoch
    first = [b.tolist() for b in loader]
    state = LoaderState(loader)
    sampler.set_epoch(3)
    assert [b.tolist() for b in loader] != first
    state.rewind()
    assert sampler.epoch == 0 and [b.tolist() for b in loader] == first
