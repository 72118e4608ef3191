"""torch_lrrange.integrations.transformers: lr_range_test with a real Trainer and a tiny GPT-2.

The GPT-2 is built from a small GPT2Config (nothing downloaded) and trained on byte windows
of Python's own documentation, with gradient_accumulation_steps=2 and max_grad_norm=1.0.
Restores are compared bit for bit; twin Trainers (one ran the test, one never did) train
step for step and their log_history and weights are compared exactly.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import sys
import warnings

import numpy as np
import pytest
import torch
from integration_scripts import trainer_library

transformers = trainer_library("transformers")  # the [transformers] extra

from _examples import run_example  # noqa: E402
from _state import Restored, assert_same  # noqa: E402
from integration_scripts.launch import accelerate_launch  # noqa: E402
from integration_scripts.transformers_setup import ByteText, digest, make_trainer, steps  # noqa: E402

from torch_lrrange import RangeTest  # noqa: E402
from torch_lrrange.integrations.transformers import lr_range_test  # noqa: E402

SWEEP = {"num_steps": 16, "start_lr": 1e-5, "end_lr": 1.0, "confirm": False}


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _rng():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _files(path):
    return sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs)


class StepCounter(transformers.TrainerCallback):
    """A stateful callback: counts the steps it is told about (a sweep must tell it none)."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_twin_trainers_train_identically_after_the_test(tmp_path, precision):
    mixed = {"bf16": True} if precision == "bf16" else {}
    tested, twin = make_trainer(tmp_path / "tested", **mixed), make_trainer(tmp_path / "twin", **mixed)
    counter = StepCounter()
    tested.add_callback(counter)
    twin.add_callback(StepCounter())

    transformers.set_seed(1)
    before, rng = copy.deepcopy(tested.model.state_dict()), _rng()
    modes = [m.training for m in tested.model.modules()]
    files = _files(tmp_path)
    result = lr_range_test(tested, **SWEEP)

    assert len(result.lrs) == 16 and result.usable, result
    assert_same(before, tested.model.state_dict())
    assert_same(rng, _rng())
    assert [m.training for m in tested.model.modules()] == modes
    assert tested.optimizer is None and tested.lr_scheduler is None  # train() builds them from the arguments
    assert "forward" not in vars(tested.model) and "current_gradient_accumulation_steps" not in vars(tested)
    assert tested.state.global_step == 0 and tested.state.log_history == [] and counter.steps == 0
    assert _files(tmp_path) == files == []  # no checkpoint, no log file

    tested.train()
    transformers.set_seed(1)
    twin.train()
    logged = steps(tested.state.log_history)
    assert logged == steps(twin.state.log_history) and len(logged) == 4
    assert digest(tested.model) == digest(twin.model)
    assert counter.steps == 4 and tested.state.global_step == twin.state.global_step == 4
    assert _files(tmp_path / "tested") == _files(tmp_path / "twin")


def test_mid_training_restores_optimizer_scheduler_state_and_log_history(tmp_path):
    tested, twin = make_trainer(tmp_path / "tested"), make_trainer(tmp_path / "twin")
    for trainer in (tested, twin):
        transformers.set_seed(1)
        trainer.train()
    transformers.set_seed(2)
    saved = Restored(tested.model, tested.optimizer, tested.lr_scheduler)
    state = copy.deepcopy(tested.state)
    files = _files(tmp_path)
    optimizer, scheduler = tested.optimizer, tested.lr_scheduler

    result = lr_range_test(tested, **SWEEP)

    assert len(result.lrs) == 16
    saved.check()  # model, the trained AdamW (moments, steps) and its schedule, RNGs: bit-exact
    assert tested.optimizer is optimizer and tested.lr_scheduler is scheduler
    assert tested.state == state and _files(tmp_path) == files
    transformers.set_seed(2)
    tested.train()
    transformers.set_seed(2)
    twin.train()
    assert steps(tested.state.log_history) == steps(twin.state.log_history)
    assert digest(tested.model) == digest(twin.model)


def test_one_point_per_optimizer_step_with_accumulation_and_clipping(tmp_path):
    """The curve equals a plain RangeTest loop over the same batches: 2 micro-batches, loss over their tokens, clip 1.0."""
    settings = {"train_sampling_strategy": "sequential", "dropout": 0.0}
    trainer, twin = make_trainer(tmp_path / "a", **settings), make_trainer(tmp_path / "b", **settings)
    result = lr_range_test(trainer, **SWEEP)

    model, optimizer = twin.model, twin.create_optimizer()  # the same AdamW the Trainer builds from its arguments
    data = ByteText()
    batches = [
        {k: torch.stack([data[i][k] for i in range(j, j + 8)]) for k in ("input_ids", "labels")}
        for j in range(0, len(data), 8)
    ]
    with RangeTest(model, optimizer, **SWEEP) as rt:
        step = 0
        while not rt.done:
            pair, tokens = twin.get_batch_samples(iter(batches[2 * step % len(batches) :]), 2, "cpu")
            total = None
            for batch in pair:
                loss = model(**batch, num_items_in_batch=tokens).loss
                loss.backward()
                total = loss.detach() if total is None else total + loss.detach()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            model.zero_grad()
            rt.record(total)
            step += 1
    np.testing.assert_array_equal(result.lrs, rt.result.lrs)
    np.testing.assert_array_equal(result.losses, rt.result.losses)
    assert len(result.losses) == 16


@pytest.mark.parametrize(
    ("schedule", "warmup", "source"),
    [
        ("constant", 0, "lr"),
        ("constant_with_warmup", 0, "lr"),
        ("constant_with_warmup", 2, "max_lr"),
        ("linear", 0, "max_lr"),
        ("cosine", 1, "max_lr"),
    ],
)
def test_update_args_sets_the_lr_the_schedule_needs(tmp_path, schedule, warmup, source, caplog):
    trainer = make_trainer(tmp_path, lr_scheduler_type=schedule, warmup_steps=warmup)
    with caplog.at_level(logging.INFO, logger="torch_lrrange"):
        result = lr_range_test(trainer, update_args=True, **SWEEP)
    expected = getattr(result, source)
    assert trainer.args.learning_rate == expected
    assert result.metadata["update_args"]["from"] == source
    assert result.metadata["update_args"]["lr_scheduler_type"] == schedule
    assert (
        f"set trainer.args.learning_rate = {expected:.4g} (result.{source}: lr_scheduler_type {schedule!r}"
        in caplog.text
    )
    trainer.train()
    assert max(e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e) == pytest.approx(expected)


def test_update_args_mid_training_sets_the_kept_optimizers_lr(tmp_path):
    trainer = make_trainer(tmp_path, lr_scheduler_type="constant")
    trainer.train()
    result = lr_range_test(trainer, update_args=True, **SWEEP)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [result.lr] * 2
    trainer.train()
    assert trainer.state.log_history[0]["learning_rate"] == pytest.approx(result.lr)


def test_bad_input_is_refused_before_the_trainer_is_touched(tmp_path):
    trainer = make_trainer(tmp_path)
    before = copy.deepcopy(trainer.model.state_dict())
    no_data = make_trainer(tmp_path)
    no_data.train_dataset = None
    cases = [
        (TypeError, "trainer must be a transformers.Trainer", lambda: lr_range_test(trainer.model)),
        (TypeError, "update_args must be True or False", lambda: lr_range_test(trainer, update_args="yes")),
        (TypeError, r"unknown option\(s\) learning_rate", lambda: lr_range_test(trainer, learning_rate=1e-3)),
        (TypeError, "confirm must be None", lambda: lr_range_test(trainer, confirm="yes")),
        (ValueError, "num_steps must be an int in \\[2, 10000000\\]", lambda: lr_range_test(trainer, num_steps=0)),
        (ValueError, "mode must be one of 'exp', 'linear'", lambda: lr_range_test(trainer, mode="cosine")),
        (ValueError, "has no train_dataset", lambda: lr_range_test(no_data)),
    ]
    for error, match, call in cases:
        with pytest.raises(error, match=match):
            call()
    assert trainer.optimizer is None and no_data.optimizer is None
    assert_same(before, trainer.model.state_dict())


def test_confirmation_runs_each_candidate_on_the_sweeps_batches_and_restores_everything(tmp_path):
    """confirm=4: six candidate runs of 4 optimizer steps, each from a new train dataloader that draws the
    sweep's first batches again (the Trainer's own shuffling); then the Trainer trains as its twin does."""
    tested, twin = make_trainer(tmp_path / "tested"), make_trainer(tmp_path / "twin")
    seen: list[list[int]] = []
    step = tested.training_step

    def watched(model, inputs, num_items=None):
        seen.append(inputs["input_ids"][:, 0].tolist())
        return step(model, inputs, num_items)

    tested.training_step = watched
    transformers.set_seed(1)
    before, rng = copy.deepcopy(tested.model.state_dict()), _rng()
    result = lr_range_test(tested, **{**SWEEP, "confirm": 4})
    del tested.training_step

    confirmed = result.confirmation
    assert confirmed is not None and confirmed.steps == 4 and len(confirmed.candidates) == 6
    assert result.lr == confirmed.lr and result.lr != result.suggestion.lr
    sweep, runs = seen[: -6 * 2 * 4], seen[-6 * 2 * 4 :]  # 2 micro-batches per optimizer step
    assert len(sweep) >= 12
    for k in range(6):
        assert runs[8 * k : 8 * (k + 1)] == sweep[:8], k
    assert len({tuple(b) for b in sweep[:12]}) == 12  # a shuffled pass of 12 distinct micro-batches
    assert_same(before, tested.model.state_dict())
    assert_same(rng, _rng())
    assert tested.optimizer is None and tested.state.global_step == 0
    assert "current_gradient_accumulation_steps" not in vars(tested)
    assert not tested.accelerator.gradient_state.in_dataloader  # no pass left registered

    tested.train()
    transformers.set_seed(1)
    twin.train()
    assert steps(tested.state.log_history) == steps(twin.state.log_history)
    assert digest(tested.model) == digest(twin.model)


def test_the_default_confirms_with_six_runs_of_100_steps(tmp_path):
    trainer = make_trainer(tmp_path)
    result = lr_range_test(trainer, **{k: v for k, v in SWEEP.items() if k != "confirm"})
    assert result.confirmation is not None and result.confirmation.cost == 600
    assert result.confirmation.candidates[-1] < result.suggestion.climb_at


def test_missing_transformers_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(
        ImportError,
        match=r'pip install -e "\.\[transformers\]" in a clone .*pip install "torch_lrrange\[transformers\]"',
    ):
        lr_range_test(object())


def test_an_error_inside_the_sweep_restores_everything_and_propagates(tmp_path):
    class Failing(transformers.Trainer):
        calls = 0

        def compute_loss(self, model, inputs, **kwargs):
            Failing.calls += 1
            if Failing.calls == 7:
                raise ValueError("boom in compute_loss")
            return super().compute_loss(model, inputs, **kwargs)

    base = make_trainer(tmp_path)
    trainer = Failing(model=base.model, args=base.args, train_dataset=base.train_dataset)
    before, rng = copy.deepcopy(trainer.model.state_dict()), _rng()
    with pytest.raises(ValueError, match="boom in compute_loss"):
        lr_range_test(trainer, **SWEEP)
    assert_same(before, trainer.model.state_dict())
    assert_same(rng, _rng())
    assert trainer.optimizer is None and trainer.state.global_step == 0


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_every_rank_the_same_result(tmp_path):
    """accelerate launch, 2 processes: one result on both ranks, model restored, twin trainings identical."""
    reports = accelerate_launch("transformers_ddp.py", tmp_path)
    assert [r["world_size"] for r in reports] == [2, 2]
    assert reports[0]["result"] == reports[1]["result"] and len(reports[0]["result"]["lrs"]) == 16
    for report in reports:
        assert report["restored"]
        assert report["steps"] == report["twin_steps"] and len(report["steps"]) == 4
        assert report["weights"] == report["twin_weights"]
    assert reports[0]["weights"] == reports[1]["weights"]


@pytest.mark.slow
def test_example_script(tmp_path):
    stdout = run_example("transformers_range_test.py", tmp_path, timeout=300)
    assert "RangeTestResult(" in stdout and "trained" in stdout, stdout


def test_stale_gradients_do_not_enter_the_sweep_and_are_restored(tmp_path):
    """A backward pass left in .grad (a notebook) is zeroed for the sweep, as train() does, and put back."""
    trainer = make_trainer(tmp_path)
    transformers.set_seed(1)
    clean = lr_range_test(trainer, **SWEEP)
    assert all(p.grad is None for p in trainer.model.parameters())
    g = torch.Generator().manual_seed(0)
    stale = {n: 100 * torch.randn(p.shape, generator=g) for n, p in trainer.model.named_parameters()}
    for n, p in trainer.model.named_parameters():
        p.grad = stale[n].clone()
    transformers.set_seed(1)
    with_stale = lr_range_test(trainer, **SWEEP)
    np.testing.assert_array_equal(with_stale.losses, clean.losses)
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p.grad, stale[n]), n


def test_hyperparams_leave_the_trainers_no_decay_groups_alone(tmp_path):
    """weight_decay through hyperparams= is the sweep of a Trainer built with that weight decay: biases and
    LayerNorm weights (the group create_optimizer() puts at weight_decay 0) get none in either."""
    tested = make_trainer(tmp_path / "tested", weight_decay=0.01)
    twin = make_trainer(tmp_path / "twin", weight_decay=0.3)
    transformers.set_seed(1)
    held = lr_range_test(tested, hyperparams={"weight_decay": 0.3}, **SWEEP)
    transformers.set_seed(1)
    built = lr_range_test(twin, **SWEEP)
    np.testing.assert_array_equal(held.losses, built.losses)
    assert held.metadata["hyperparams_left"] == {"weight_decay": [1]}
    tested.create_optimizer()  # the groups the sweep saw: group 1 holds the biases and LayerNorm weights
    decayed = set(tested.get_decay_parameter_names(tested.model))
    names = {id(p): n for n, p in tested.model.named_parameters()}
    assert not any(names[id(p)] in decayed for p in tested.optimizer.param_groups[1]["params"])
    assert [g["weight_decay"] for g in tested.optimizer.param_groups] == [0.01, 0.0]
