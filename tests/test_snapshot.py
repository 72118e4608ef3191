"""Snapshot: bit-exact, repeatable restore into the existing tensors."""

import os
import random
import stat
import tempfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from _state import Restored, assert_same, capture
from _statecheck import ids

from torch_lrrange import Snapshot, SnapshotError

OPTIMIZERS = {
    "sgd-momentum-nesterov-wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
}


def _resnet():
    return torchvision.models.resnet18(num_classes=5)


def _train(model, opt, steps=1):
    x = torch.randn(2, 3, 16, 16)
    y = torch.randint(0, 5, (2,))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("where", ["device", "cpu", "disk"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resnet18_with_batchnorm_is_restored_bit_exactly(name, where):
    model = _resnet()
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt)  # non-empty optimizer state, grads and BN statistics
    before = Restored(model, opt)
    snap = Snapshot.take(model, opt, where=where)
    _train(model, opt, steps=2)
    model.eval()
    random.random(), np.random.rand(), torch.rand(1)
    snap.restore()
    before.check()
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters()))
    # restoring twice works, and the snapshot holds no alias of live tensors
    _train(model, opt)
    snap.restore()
    before.check()
    snap.release()


def test_fresh_optimizer_state_comes_back_empty_and_training_matches_a_twin():
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    twin = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2)
    )
    twin.load_state_dict(model.state_dict())
    twin_opt = torch.optim.Adam(twin.parameters(), lr=1e-2)
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))

    def train(m, o):
        for _ in range(5):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()

    rng = torch.get_rng_state()
    with Snapshot.take(model, opt) as snap:
        train(model, opt)
        snap.restore()
    assert opt.state_dict()["state"] == {}
    train(model, opt)
    torch.set_rng_state(rng)
    train(twin, twin_opt)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


def test_rng_states_are_restored():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    snap.restore()
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])


def test_parameters_outside_the_model_and_their_grads_are_restored():
    model = torch.nn.Linear(3, 1)
    temperature = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([*model.parameters(), temperature], lr=0.1, momentum=0.9)
    before_t = temperature.detach().clone()
    snap = Snapshot.take(model, opt)
    (model(torch.ones(3)) * temperature).sum().backward()
    opt.step()
    assert not torch.equal(temperature, before_t)
    snap.restore()
    assert torch.equal(temperature, before_t)
    assert temperature.grad is None and model.weight.grad is None


def test_existing_grads_are_restored_in_place():
    model = torch.nn.Linear(3, 2)
    model(torch.ones(3)).sum().backward()
    grad = model.weight.grad
    expected = grad.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt)
    model(torch.full((3,), 5.0)).sum().backward()
    snap.restore()
    assert model.weight.grad is grad and torch.equal(grad, expected)


def test_tensor_hyperparameters_keep_their_identity_and_value():
    model = torch.nn.Linear(3, 2)
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    group = opt.param_groups[0]
    snap = Snapshot.take(model, opt)
    lr.fill_(0.5)
    group["betas"] = (0.1, 0.2)
    group["new_key"] = 1
    snap.restore()
    assert opt.param_groups[0] is group and group["lr"] is lr
    assert lr.item() == pytest.approx(0.01) and group["betas"] == (0.9, 0.999) and "new_key" not in group


def test_extra_objects_with_state_dict_are_restored():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    before = Restored(model, opt, sched)
    snap = Snapshot.take(model, opt, sched)
    for _ in range(5):
        opt.step()
        sched.step()
    snap.restore()
    before.check()
    assert opt.param_groups[0]["lr"] == 0.1


def test_train_eval_modes_and_non_persistent_buffers_are_restored():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    model.register_buffer("cache", torch.zeros(3), persistent=False)
    model[1].eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt)
    model.train()
    model.cache.add_(1)
    snap.restore()
    assert [m.training for m in model.modules()] == [True, True, False]
    assert torch.equal(model.cache, torch.zeros(3))


def test_disk_snapshot_is_private_and_removed_on_release():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt, where="disk")
    directory = snap._store.directory
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.listdir(directory)
    snap.release()
    assert not os.path.exists(directory)
    with pytest.raises(SnapshotError, match="released"):
        snap.restore()


def test_disk_snapshot_with_a_vanished_file_touches_nothing():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt, where="disk")
    os.remove(os.path.join(snap._store.directory, "0.pt"))
    with torch.no_grad():
        model.weight.add_(1.0)
    changed = model.weight.detach().clone()
    with pytest.raises(SnapshotError, match="is gone; nothing was restored"):
        snap.restore()
    assert torch.equal(model.weight, changed)
    snap.release()


def test_nbytes_counts_the_copied_state():
    model = torch.nn.Linear(10, 10)
    opt = torch.optim.Adam(model.parameters())
    assert Snapshot.take(model, opt).nbytes == 110 * 4


def _linear_and_sgd():
    model = torch.nn.Linear(1, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("make_args", "kwargs", "error", "message"),
    [
        (lambda m, o: (object(), o), {}, TypeError, r"model must be a torch.nn.Module, got object"),
        (lambda m, o: (m, object()), {}, TypeError, r"optimizer must be a torch optimizer"),
        (
            lambda m, o: (m, o, object()),
            {},
            TypeError,
            r"extra_state\[0\] must have state_dict\(\) and load_state_dict\(\)",
        ),
        (lambda m, o: (m, o), {"where": "gpu"}, ValueError, r"where must be one of 'device', 'cpu', 'disk', got 'gpu'"),
    ],
)
def test_bad_arguments(make_args, kwargs, error, message):
    with pytest.raises(error, match=message):
        Snapshot.take(*make_args(*_linear_and_sgd()), **kwargs)


def test_a_model_tensor_that_changed_shape_is_refused_before_anything_is_written():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].bias = torch.nn.Parameter(torch.zeros(5))
    changed = model[0].weight.detach().clone()
    with pytest.raises(
        SnapshotError, match=r"model tensors changed shape since the snapshot \(\['1.bias'\]\); nothing was restored"
    ):
        snap.restore()
    assert torch.equal(model[0].weight, changed)


def test_a_removed_non_persistent_buffer_is_a_snapshot_error_before_anything_is_written():
    model = torch.nn.Linear(3, 2)
    model.register_buffer("tmp", torch.ones(2), persistent=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = Snapshot.take(model, opt)
    with torch.no_grad():
        model.weight.add_(1.0)
    changed = model.weight.detach().clone()
    del model.tmp
    with pytest.raises(
        SnapshotError,
        match=r"non-persistent buffers were removed since the snapshot \(\['tmp'\]\); nothing was restored",
    ):
        snap.restore()
    assert torch.equal(model.weight, changed)  # not written


def test_a_reshaped_non_persistent_buffer_is_a_snapshot_error_before_anything_is_written():
    model = torch.nn.Linear(3, 2)
    model.register_buffer("tmp", torch.ones(2), persistent=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = Snapshot.take(model, opt)
    with torch.no_grad():
        model.weight.add_(1.0)
    changed = model.weight.detach().clone()
    model.tmp = torch.ones(5)
    with pytest.raises(SnapshotError, match=r"changed shape since the snapshot \(\['tmp'\]\); nothing was restored"):
        snap.restore()
    assert torch.equal(model.weight, changed)


def test_per_optimizer_stages_are_read_only_from_a_grad_scaler():
    class EMA:  # any object of the user's own that happens to have the attribute
        def __init__(self):
            self._per_optimizer_states = {"mine": 1}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = EMA()
    scaler = torch.amp.GradScaler("cpu")
    snap = Snapshot.take(model, opt, ema, scaler)
    ema._per_optimizer_states = {"mine": 2}
    scaler._per_optimizer_states[id(opt)]["stage"] = "changed"
    snap.restore()
    assert ema._per_optimizer_states == {"mine": 2}  # not the library's to restore
    assert scaler._per_optimizer_states[id(opt)]["stage"] != "changed"


# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---

SNAPSHOT = [
    ("model", lambda m, o, d, f: Snapshot.take(o, o), TypeError, "model must be a torch.nn.Module, got Adam"),
    (
        "optimizer",
        lambda m, o, d, f: Snapshot.take(m, m),
        TypeError,
        "optimizer must be a torch optimizer .*Sequential lacks param_groups",
    ),
    (
        "extra",
        lambda m, o, d, f: Snapshot.take(m, o, o, 3),
        TypeError,
        r"extra_state\[1\] must have state_dict\(\).*got int",
    ),
    (
        "where-unknown",
        lambda m, o, d, f: Snapshot.take(m, o, where="ram"),
        ValueError,
        "where must be one of 'device', 'cpu', 'disk', got 'ram'",
    ),
    (
        "where-int",
        lambda m, o, d, f: Snapshot.take(m, o, where=0),
        TypeError,
        "where must be one of 'device', 'cpu', 'disk', got int",
    ),
    (
        "extra-disk",
        lambda m, o, d, f: Snapshot.take(m, o, object(), where="disk"),
        TypeError,
        r"extra_state\[0\] must have state_dict\(\)",
    ),
]


@pytest.mark.parametrize(("name", "call", "error", "message"), SNAPSHOT, ids=ids(SNAPSHOT))
def test_snapshot_arguments(setup, tmp_path, monkeypatch, name, call, error, message):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = capture(*setup[:2])
    with pytest.raises(error, match=message):
        call(*setup)
    assert_same(before, capture(*setup[:2]))
    assert not list(tmp_path.glob("torch_lrrange_*"))  # no snapshot directory was created
