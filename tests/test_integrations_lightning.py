"""torch_lrrange.integrations.lightning: lr_range_test with a real Lightning Trainer and a LeNet module.

Every restore is compared bit for bit; the twin tests train a trainer that ran the test and
one that never did, step for step, and compare losses, weights and what reached the logs.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from integration_scripts import trainer_library

pl = trainer_library("lightning.pytorch")  # the [lightning] extra

from _examples import run_example  # noqa: E402
from _state import Restored, assert_same  # noqa: E402
from integration_scripts.lightning_setup import (  # noqa: E402
    DigitsData,
    LitLeNet,
    Recorder,
    SeenLeNet,
    digits,
    make_module,
    runs_of,
    train_loader,
)

from torch_lrrange import RangeTest, range_lr  # noqa: E402
from torch_lrrange._confirmation import auto_steps  # noqa: E402
from torch_lrrange.integrations.lightning import lr_range_test  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent / "integration_scripts"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(autouse=True)
def _quiet_lightning():
    level = logging.getLogger("lightning.pytorch").level
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        yield
    logging.getLogger("lightning.pytorch").setLevel(level)


def _trainer(tmp_path, name, recorder=None, **kwargs):
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(
        accelerator="cpu",
        default_root_dir=tmp_path / name,
        logger=pl.loggers.CSVLogger(tmp_path / name, name="logs"),
        log_every_n_steps=1,
        callbacks=[recorder] if recorder is not None else [],
        **QUIET,
        **kwargs,
    )


def _files(path):
    return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)


def _rng():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _bookkeeping(trainer):
    """The trainer objects and counters a test must leave as they were (by identity or value)."""
    return {
        "fit_loop": id(trainer.fit_loop),
        "callbacks": (id(trainer.callbacks), [id(c) for c in trainer.callbacks]),
        "loggers": [id(logger) for logger in trainer.loggers],
        "profiler": id(trainer.profiler),
        "datamodule": id(trainer.datamodule),
        "optimizers": [id(o) for o in trainer.optimizers],
        "schedulers": [id(c.scheduler) for c in trainer.lr_scheduler_configs],
        "counters": (
            trainer.global_step,
            trainer.current_epoch,
            trainer.fit_loop.epoch_loop.batch_progress.state_dict(),
        ),
        "limits": (trainer.limit_val_batches, trainer.num_sanity_val_steps, trainer.should_stop),
        "state": (trainer.state.fn, trainer.state.status, trainer.state.stage),
        "metrics": {k: v.item() for k, v in trainer.callback_metrics.items()},
        "logged": {k: v.item() for k, v in trainer.logged_metrics.items()},
    }


def test_twin_trainers_train_identically_after_the_test(tmp_path):
    """Before the first fit, at the defaults (the sweep, then six 100-step candidate runs): module, RNGs,
    loader generator and trainer come back; the fits then match."""
    recorders = [Recorder(), Recorder()]
    tested, twin = _trainer(tmp_path, "tested", recorders[0]), _trainer(tmp_path, "twin", recorders[1])
    models = [make_module(), make_module()]
    loaders = [train_loader(seed=3), train_loader(seed=3)]  # shuffling with a generator of their own

    torch.manual_seed(1)
    before = copy.deepcopy(models[0].state_dict())
    modes = [m.training for m in models[0].modules()]
    rng, generator = _rng(), loaders[0].generator.get_state()
    kept = _bookkeeping(tested)
    result = lr_range_test(tested, models[0], loaders[0], num_steps=24, start_lr=1e-5, end_lr=1.0)

    assert len(result.lrs) == 24 and result.usable, result
    confirmation = result.confirmation
    assert confirmation is not None and result.lr == confirmation.lr and result.max_lr == confirmation.max_lr
    assert confirmation.steps == 100 and len(confirmation.candidates) == 6 and confirmation.by == "training"
    assert_same(before, models[0].state_dict())
    assert [m.training for m in models[0].modules()] == modes
    assert_same(rng, _rng())
    assert torch.equal(generator, loaders[0].generator.get_state())
    assert _bookkeeping(tested) == kept
    assert recorders[0].losses == [] and _files(tmp_path) == []  # no callback saw a step, no file written
    with pytest.raises(RuntimeError, match="not attached"):
        models[0].trainer  # noqa: B018

    for trainer, model, loader in zip((tested, twin), models, loaders):
        torch.manual_seed(1)
        trainer.fit(model, loader)
    assert recorders[0].losses == recorders[1].losses and len(recorders[0].losses) == 8
    assert_same(models[1].state_dict(), models[0].state_dict())
    assert_same(twin.optimizers[0].state_dict(), tested.optimizers[0].state_dict())
    assert (tested.global_step, tested.current_epoch) == (twin.global_step, twin.current_epoch) == (8, 1)
    logs = [(tmp_path / n / "logs" / "version_0" / "metrics.csv").read_text() for n in ("tested", "twin")]
    assert logs[0] == logs[1] and logs[0].count("\n") == 9  # header and the 8 steps of the real fit
    assert _files(tmp_path / "tested") == _files(tmp_path / "twin")


def test_mid_training_restores_the_trainers_optimizer_scheduler_counters_and_metrics(tmp_path):
    """Between two fits (datamodule, OneCycleLR): everything the first fit left is back; the second fit matches."""
    recorders = [Recorder(), Recorder()]
    trainers = [_trainer(tmp_path, name, rec) for name, rec in zip(("tested", "twin"), recorders)]
    models = [make_module(schedule="onecycle", total_steps=16), make_module(schedule="onecycle", total_steps=16)]
    for trainer, model in zip(trainers, models):
        torch.manual_seed(1)
        trainer.fit(model, datamodule=DigitsData())
    tested = trainers[0]
    optimizer, scheduler = tested.optimizers[0], tested.lr_scheduler_configs[0].scheduler
    saved = Restored(models[0], optimizer, scheduler)
    kept, files = _bookkeeping(tested), _files(tmp_path)
    assert kept["counters"][:2] == (8, 1) and kept["metrics"]

    result = lr_range_test(
        tested, models[0], datamodule=DigitsData(), num_steps=20, start_lr=1e-5, end_lr=1.0, confirm=4
    )

    assert len(result.lrs) == 20 and result.confirmation is not None
    saved.check()  # module, the first fit's Adam and OneCycleLR, RNGs: bit-exact
    assert _bookkeeping(tested) == kept
    assert _files(tmp_path) == files and len(recorders[0].losses) == 8
    for trainer, model in zip(trainers, models):
        trainer.fit_loop.max_epochs = 2
        torch.manual_seed(2)
        trainer.fit(model, datamodule=DigitsData())
    assert recorders[0].losses == recorders[1].losses and len(recorders[0].losses) == 16
    assert_same(models[1].state_dict(), models[0].state_dict())
    logs = [(tmp_path / n / "logs" / "version_0" / "metrics.csv").read_text() for n in ("tested", "twin")]
    assert logs[0] == logs[1]


def test_one_point_per_optimizer_step_with_accumulation_and_clipping(tmp_path):
    """The curve equals a plain RangeTest loop doing the same accumulation (2) and clipping (0.5), bit for bit."""
    common = {"num_steps": 16, "start_lr": 1e-5, "end_lr": 0.05, "confirm": False}
    trainer = pl.Trainer(accelerator="cpu", logger=False, accumulate_grad_batches=2, gradient_clip_val=0.5, **QUIET)
    module = make_module()
    twin = copy.deepcopy(module)
    result = lr_range_test(trainer, module, train_loader(shuffle=False), **common)

    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
    batches = list(train_loader(shuffle=False))
    with RangeTest(twin, optimizer, **common) as rt:
        step = 0
        while not rt.done:
            optimizer.zero_grad(set_to_none=True)
            total = None
            for x, y in batches[2 * step % len(batches) : 2 * step % len(batches) + 2]:
                loss = F.cross_entropy(twin(x), y) / 2
                loss.backward()
                total = loss.detach() if total is None else total + loss.detach()
            torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
            optimizer.step()
            rt.record(total)
            step += 1
    np.testing.assert_array_equal(result.lrs, rt.result.lrs)
    np.testing.assert_array_equal(result.losses, rt.result.losses)
    assert len(result.losses) == 16


@pytest.mark.parametrize(("schedule", "name"), [(None, ""), ("onecycle", "OneCycleLR"), ("warmup", "LambdaLR")])
def test_update_attr_sets_lr_or_max_lr_by_the_modules_schedule(tmp_path, schedule, name, caplog):
    """No scheduler: result.lr; a schedule (one-cycle, or a warm-up that starts the LR at 0): result.max_lr."""
    trainer = pl.Trainer(accelerator="cpu", logger=False, **QUIET)
    module = make_module(schedule=schedule)
    with caplog.at_level(logging.INFO, logger="torch_lrrange"):
        result = lr_range_test(
            trainer, module, train_loader(), num_steps=30, start_lr=1e-5, end_lr=1.0, update_attr=True, confirm=4
        )
    assert result.confirmation is not None  # the LR set is the confirmed one
    expected, source = (result.max_lr, "max_lr") if schedule else (result.lr, "lr")
    assert module.hparams.lr == expected
    assert result.metadata["update_attr"]["name"] == "lr" and result.metadata["update_attr"]["from"] == source
    assert f"set model.lr = {expected:.4g} (result.{source}:" in caplog.text
    assert f"schedules the LR ({name})" in caplog.text if schedule else "returns no LR scheduler" in caplog.text
    steps = np.arange(len(result.lrs))  # group 0's sweep, also from the 0 LR a warm-up starts at
    np.testing.assert_array_equal(result.lrs, range_lr(steps, 1e-5, 1.0, 30))


def test_update_attr_plain_attribute_and_attr_name(tmp_path):
    class WithAttr(LitLeNet):
        def __init__(self):
            super().__init__()
            self.learning_rate = 1e-3
            self.head_lr = 1e-3

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.learning_rate, momentum=0.9)

    module = WithAttr()
    del module.hparams["lr"]
    trainer = pl.Trainer(accelerator="cpu", logger=False, **QUIET)
    common = {"num_steps": 30, "update_attr": True, "confirm": False}
    result = lr_range_test(trainer, module, train_loader(), start_lr=1e-5, end_lr=1.0, **common)
    assert module.learning_rate == result.lr and module.head_lr == 1e-3
    lr_range_test(trainer, module, train_loader(), attr_name="head_lr", **common)
    assert module.head_lr != 1e-3


def test_bad_input_is_refused_before_the_trainer_is_touched(tmp_path):
    trainer = pl.Trainer(accelerator="cpu", logger=False, **QUIET)
    module, loader = make_module(), train_loader()
    kept, before = _bookkeeping(trainer), copy.deepcopy(module.state_dict())
    cases = [
        (TypeError, "trainer must be a lightning.pytorch.Trainer", lambda: lr_range_test(object(), module, loader)),
        (TypeError, "model must be a lightning.pytorch.LightningModule", lambda: lr_range_test(trainer, module.net)),
        (TypeError, "update_attr must be True or False", lambda: lr_range_test(trainer, module, loader, update_attr=1)),
        (TypeError, "attr_name must be", lambda: lr_range_test(trainer, module, loader, attr_name="")),
        (
            TypeError,
            r"unknown option\(s\) num_training",
            lambda: lr_range_test(trainer, module, loader, num_training=5),
        ),
        (
            ValueError,
            "confirm=1 cannot tell the candidates apart",
            lambda: lr_range_test(trainer, module, loader, confirm=1),
        ),
        (
            TypeError,
            "confirm_score must be callable",
            lambda: lr_range_test(trainer, module, loader, confirm_score=0.5),
        ),
        (
            ValueError,
            "num_steps must be an int in \\[2, 10000000\\]",
            lambda: lr_range_test(trainer, module, loader, num_steps=1),
        ),
        (
            ValueError,
            "end_lr must be > start_lr",
            lambda: lr_range_test(trainer, module, loader, start_lr=1.0, end_lr=0.1),
        ),
        (
            ValueError,
            "either train_dataloaders or datamodule",
            lambda: lr_range_test(trainer, module, loader, datamodule=DigitsData()),
        ),
        (TypeError, "datamodule must be", lambda: lr_range_test(trainer, module, datamodule=loader)),
        (
            ValueError,
            "update_attr=True needs model.other",
            lambda: lr_range_test(trainer, module, loader, update_attr=True, attr_name="other"),
        ),
    ]
    for error, match, call in cases:
        with pytest.raises(error, match=match):
            call()
    assert _bookkeeping(trainer) == kept and trainer.state.fn is None
    assert_same(before, module.state_dict())


def test_missing_lightning_says_how_to_install_it(monkeypatch):
    for name in ("lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(
        ImportError, match=r'pip install -e "\.\[lightning\]" in a clone .*pip install "torch_lrrange\[lightning\]"'
    ):
        lr_range_test(object(), None)


def test_an_error_inside_the_sweep_restores_everything_and_propagates(tmp_path):
    class Failing(LitLeNet):
        def training_step(self, batch, batch_idx):
            if batch_idx == 5:
                raise ValueError("boom at batch 5")
            return super().training_step(batch, batch_idx)

    trainer = _trainer(tmp_path, "run")
    torch.manual_seed(0)
    module = Failing()
    before, rng, kept = copy.deepcopy(module.state_dict()), _rng(), _bookkeeping(trainer)
    with pytest.raises(ValueError, match="boom at batch 5"):
        lr_range_test(trainer, module, train_loader(), num_steps=20)
    assert_same(before, module.state_dict())
    assert_same(rng, _rng())
    assert _bookkeeping(trainer) == kept
    assert _files(tmp_path) == []


def test_refusals_from_inside_fit_leave_the_trainer_as_it_was(tmp_path):
    """What only the built optimizer or a whole epoch can tell is refused inside fit, then everything is put back."""

    class Silent(LitLeNet):
        def training_step(self, batch, batch_idx):
            return None  # Lightning skips the step: no loss, no optimizer step

    trainer = _trainer(tmp_path, "run")
    module = make_module()
    kept, before = _bookkeeping(trainer), copy.deepcopy(module.state_dict())
    with pytest.raises(ValueError, match="hyperparams key 'momentum' is not held by every param group of Adam"):
        lr_range_test(trainer, module, train_loader(), hyperparams={"momentum": 0.9})
    with pytest.raises(RuntimeError, match="a whole training epoch recorded no point"):
        lr_range_test(trainer, Silent(), train_loader())
    assert _bookkeeping(trainer) == kept and _files(tmp_path) == []
    assert_same(before, module.state_dict())


def test_true_half_precision_gives_back_the_float32_weights(tmp_path):
    trainer = pl.Trainer(accelerator="cpu", logger=False, precision="bf16-true", **QUIET)
    module = make_module()
    params = list(module.parameters())
    before = copy.deepcopy(module.state_dict())
    result = lr_range_test(trainer, module, train_loader(), num_steps=12, start_lr=1e-4, end_lr=1.0, confirm=3)
    assert len(result.lrs) == 12 and result.confirmation is not None
    assert_same(before, module.state_dict())  # float32 again, bit for bit
    assert list(module.parameters()) == params and all(a is b for a, b in zip(module.parameters(), params))


def test_manual_optimization_sweeps_every_optimizer_keeping_their_ratio(tmp_path):
    """Two optimizers (a GAN-like module): both are swept and confirmed, group ratio kept, and both restored."""

    class TwoOptimizers(LitLeNet):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.seen: list[tuple[float, float]] = []

        def training_step(self, batch, batch_idx):
            head, body = self.optimizers()
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            head.zero_grad()
            body.zero_grad()
            self.manual_backward(loss)
            self.seen.append((head.param_groups[0]["lr"], body.param_groups[0]["lr"]))
            head.step()
            body.step()
            return loss

        def configure_optimizers(self):
            head = [p for n, p in self.named_parameters() if n.startswith("net.fc")]
            body = [p for n, p in self.named_parameters() if not n.startswith("net.fc")]
            return torch.optim.Adam(head, lr=1e-3), torch.optim.SGD(body, lr=1e-2)

    trainer = pl.Trainer(accelerator="cpu", logger=False, **QUIET)
    torch.manual_seed(0)
    module = TwoOptimizers()
    before = copy.deepcopy(module.state_dict())
    result = lr_range_test(trainer, module, train_loader(), num_steps=12, start_lr=1e-6, end_lr=1e-2, confirm=3)
    candidates = result.confirmation.candidates
    assert len(result.lrs) == 12 and len(module.seen) == 12 + 3 * len(candidates)
    heads, bodies = (np.asarray(lrs) for lrs in zip(*module.seen))
    np.testing.assert_allclose(heads, [*result.lrs, *np.repeat(candidates, 3)], rtol=1e-12)
    np.testing.assert_allclose(bodies, heads * 10, rtol=1e-12)  # the sweep's ratio, in the candidate runs too
    assert "evaluations" not in result.metadata  # one backward a step: one gradient evaluation
    assert_same(before, module.state_dict())


def test_pytorch_lightning_trainer_works_too(tmp_path):
    ptl = trainer_library("pytorch_lightning")  # installed with lightning

    class Module(ptl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lr = 1e-3
            self.net = LitLeNet().net

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    trainer = ptl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **QUIET)
    torch.manual_seed(0)
    module = Module()
    before = copy.deepcopy(module.state_dict())
    result = lr_range_test(
        trainer, module, train_loader(), num_steps=16, start_lr=1e-5, end_lr=1.0, update_attr=True, confirm=3
    )
    assert len(result.lrs) == 16 and module.lr == result.lr == result.confirmation.lr
    assert_same(before, module.state_dict())
    assert trainer.global_step == 0 and trainer.state.fn is None
    with pytest.raises(TypeError, match=r"model must be a pytorch_lightning\.LightningModule"):
        lr_range_test(trainer, make_module())


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_every_rank_the_same_result(tmp_path):
    """strategy="ddp", 2 processes: one result on both ranks, module restored, twin fits identical."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "lightning_ddp.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["result"] == reports[1]["result"]
    assert len(reports[0]["result"]["lrs"]) == 24 and reports[0]["result"]["lr"] is not None
    confirmation = reports[0]["result"]["metadata"]["confirmation"]
    assert confirmation["lr"] in confirmation["candidates"] and len(confirmation["candidates"]) == 6
    for report in reports:
        sweep, *runs = report["batches"]
        assert len(runs) == 6 and all(run == sweep for run in runs), report["batches"]  # the sweep's batches again
        assert report["lrs"] == [[lr] for lr in confirmation["candidates"]]  # each run at its candidate
    assert reports[0]["batches"][0] != reports[1]["batches"][0]  # each rank its own shard
    for report in reports:
        assert report["restored"] and report["counters_after_test"] == [0, 0]
        assert report["losses"] == report["twin_losses"] and len(report["losses"]) == 4
        assert report["weights"] == report["twin_weights"]
    assert reports[0]["weights"] == reports[1]["weights"]  # DDP kept the ranks in step


@pytest.mark.slow
def test_example_script(tmp_path):
    stdout = run_example("lightning_range_test.py", tmp_path, timeout=300)
    assert "RangeTestResult(" in stdout and "trained 1 epoch at" in stdout, stdout
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]  # the training's logs, not in the working directory


class _SeededData(pl.LightningDataModule):
    """A data module whose train_dataloader() shuffles with a generator the data module owns."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(3)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(
            train_loader().dataset, batch_size=64, shuffle=True, generator=self.generator
        )


class _SeededLeNet(LitLeNet):
    """A module with its own train_dataloader(), shuffling with a generator it owns."""

    def __init__(self, **kwargs) -> None:
        torch.manual_seed(0)  # the same weights for the tested module and its twin
        super().__init__(**kwargs)
        self.generator = torch.Generator().manual_seed(3)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(
            train_loader().dataset, batch_size=64, shuffle=True, generator=self.generator
        )


@pytest.mark.parametrize("source", ["datamodule", "module"])
def test_generators_of_the_loaders_the_trainer_built_are_put_back(tmp_path, source):
    """Loaders from the data module or the module's own train_dataloader(): the next fit matches a twin's."""
    recorders = [Recorder(), Recorder()]
    trainers = [_trainer(tmp_path, name, rec) for name, rec in zip(("tested", "twin"), recorders)]
    if source == "module":
        models = [_SeededLeNet(), _SeededLeNet()]
        data = [None, None]
    else:
        models = [make_module(), make_module()]
        data = [_SeededData(), _SeededData()]
    owner = data[0] if source == "datamodule" else models[0]
    generator = owner.generator.get_state()

    torch.manual_seed(1)
    result = lr_range_test(
        trainers[0], models[0], datamodule=data[0], num_steps=12, start_lr=1e-5, end_lr=1.0, confirm=3
    )
    assert torch.equal(owner.generator.get_state(), generator) and result.confirmation is not None

    for trainer, model, datamodule in zip(trainers, models, data):
        torch.manual_seed(1)
        trainer.fit(model, datamodule=datamodule)
    assert recorders[0].losses == recorders[1].losses and len(recorders[0].losses) == 8
    assert_same(models[1].state_dict(), models[0].state_dict())


# --- the confirmation inside fit --------------------------------------------------------------


def _five_batch_loader(kind):
    """160 digits in batches of 32: a 8-step candidate run spans two of its epochs."""
    data = torch.utils.data.Subset(train_loader().dataset, range(160))
    if kind == "global RNG":
        return torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    if kind == "own generator":
        return torch.utils.data.DataLoader(
            data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(2)
        )
    if kind == "DistributedSampler":  # shuffles by its epoch, which the fit loop sets each epoch
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, seed=4)
        return torch.utils.data.DataLoader(data, batch_size=32, sampler=sampler)
    # random draws inside the workers (their seeds come from the loader's iterator)
    noisy = torch.utils.data.TensorDataset(*data[:])
    return torch.utils.data.DataLoader(
        _Jittered(noisy), batch_size=32, shuffle=True, num_workers=2, persistent_workers=True
    )


class _Jittered(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x + 0.01 * torch.randn_like(x), y  # a random augmentation, drawn in the worker


@pytest.mark.parametrize("kind", ["global RNG", "own generator", "DistributedSampler", "persistent workers"])
def test_each_candidate_run_trains_on_the_sweeps_batches_at_its_own_lr(tmp_path, kind):
    """Each candidate run starts an epoch whose batches are the sweep's first ones again, into the next epoch."""
    loader = _five_batch_loader(kind)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **QUIET)
    module = make_module(kind=SeenLeNet)
    before, rng = copy.deepcopy(module.state_dict()), _rng()
    generator = loader.generator.get_state() if loader.generator is not None else None

    result = lr_range_test(trainer, module, loader, num_steps=12, start_lr=1e-5, end_lr=1.0, confirm=8)

    sweep, *runs = runs_of(module.seen, 12, 8)
    candidates = result.confirmation.candidates
    assert len(runs) == len(candidates) == 6 and result.lr == result.confirmation.lr in candidates
    for run, lr in zip(runs, candidates):
        assert [x for x, _ in run] == [x for x, _ in sweep]  # the same batches, augmentations included
        assert {step_lr for _, step_lr in run} == {lr}
    assert len({x for x, _ in sweep}) == 8  # two epochs of distinct batches
    assert_same(before, module.state_dict())
    assert_same(rng, _rng())
    if generator is not None:
        assert torch.equal(generator, loader.generator.get_state())
    if kind == "DistributedSampler":
        assert loader.sampler.epoch == 0  # the fit loop set it at each epoch: put back


def test_the_one_call_and_the_loop_form_confirm_the_same_lr(tmp_path):
    """Lightning's lr_range_test and a RangeTest loop over rt.batches on the same batches: the same runs, scores, LR."""
    common = {"num_steps": 16, "start_lr": 1e-5, "end_lr": 1.0, "confirm": 5}
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **QUIET)
    module = make_module()
    twin = copy.deepcopy(module)
    result = lr_range_test(trainer, module, train_loader(shuffle=False), **common)

    optimizer = torch.optim.Adam(twin.parameters(), lr=1e-3)
    with RangeTest(twin, optimizer, **common) as rt:
        for x, y in rt.batches(train_loader(shuffle=False)):
            optimizer.zero_grad()
            loss = F.cross_entropy(twin(x), y)
            loss.backward()
            optimizer.step()
            rt.record(loss)
    assert result.confirmation == rt.result.confirmation and result.lr == rt.result.lr
    np.testing.assert_array_equal(result.losses, rt.result.losses)


def test_an_error_inside_a_candidate_run_restores_everything_and_propagates(tmp_path):
    class FailingLater(LitLeNet):
        calls = 0

        def training_step(self, batch, batch_idx):
            FailingLater.calls += 1
            if FailingLater.calls == 12 + 2 * 4 + 3:  # in the third candidate run
                raise ValueError("boom in a candidate run")
            return super().training_step(batch, batch_idx)

    trainer = _trainer(tmp_path, "run")
    module = make_module(kind=FailingLater)
    loader = train_loader(seed=3)
    before, rng, kept = copy.deepcopy(module.state_dict()), _rng(), _bookkeeping(trainer)
    generator = loader.generator.get_state()
    with pytest.raises(ValueError, match="boom in a candidate run"):
        lr_range_test(trainer, module, loader, num_steps=12, confirm=4)
    assert FailingLater.calls == 23
    assert_same(before, module.state_dict())
    assert_same(rng, _rng())
    assert torch.equal(generator, loader.generator.get_state())
    assert _bookkeeping(trainer) == kept and _files(tmp_path) == []


def test_a_one_shot_iterator_gives_the_sweeps_reading_with_a_note(tmp_path):
    """The default says why there is no confirmation in result.warnings; confirm=True warns as well."""
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **QUIET)
    common = {"num_steps": 8, "start_lr": 1e-5, "end_lr": 0.1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", module="lightning")
        result = lr_range_test(trainer, make_module(), iter(train_loader(seed=3)), **common)
    assert result.confirmation is None
    assert any("one-shot iterator" in w for w in result.warnings), result.warnings
    with pytest.warns(UserWarning, match="the confirmation did not run: the batches come from a one-shot iterator"):
        result = lr_range_test(trainer, make_module(), iter(train_loader(seed=3)), confirm=True, **common)
    assert result.confirmation is None


def test_confirm_score_judges_the_candidate_runs_inside_fit(tmp_path):
    """A score of the user's (a held-out loss here) is called after each run; the lowest wins."""
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **QUIET)
    module = make_module()
    x, y = digits(576)[512:]  # digits the training loader does not hold
    scores = []

    def held_out_loss():
        with torch.no_grad():
            scores.append(F.cross_entropy(module(x), y).item())
        return scores[-1]

    result = lr_range_test(
        trainer,
        module,
        train_loader(seed=3),
        num_steps=16,
        start_lr=1e-5,
        end_lr=1.0,
        confirm=4,
        confirm_score=held_out_loss,
    )
    confirmation = result.confirmation
    assert confirmation.by == "validation" and confirmation.scores == scores and len(scores) == 6
    assert result.lr == confirmation.candidates[int(np.argmin(scores))]


def test_lbfgs_closure_calls_are_counted_and_size_the_default_candidate_runs(tmp_path):
    """Each closure call (training_step and backward) is a gradient evaluation: the sweep and the runs record
    them, and the default sizes its runs by the sweep's evaluations per step."""

    class LBFGSLeNet(SeenLeNet):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=4)

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **QUIET)
    module = make_module(kind=LBFGSLeNet)
    result = lr_range_test(trainer, module, train_loader(seed=1), num_steps=12, start_lr=1e-4, end_lr=3.0)
    sweep, runs = result.metadata["evaluations"], result.confirmation.evaluations
    assert sweep > 12 and sweep + runs == len(module.seen)  # every training_step call counted once
    assert result.confirmation.steps == auto_steps(sweep / 12) < 100
