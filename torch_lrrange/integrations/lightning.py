"""``lr_range_test(trainer, model, ...)``: the LR range test for a Lightning ``Trainer``.

The sweep runs through the trainer's own ``fit`` (its strategy, DDP included, precision
plugin, gradient accumulation and clipping, and the module's own ``training_step``,
``configure_optimizers`` and dataloaders), on a fresh fit loop and with the trainer's loggers,
callbacks, profiler and validation set aside; everything is put back afterwards, in memory.
Works with ``lightning.pytorch`` and ``pytorch_lightning`` alike.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import torch

from .._distributed import is_rank_zero
from .._loaders import LoaderState, sampler_epochs
from .._modes import Modes
from .._optional import require
from .._range_test import RangeTest
from .._result import RangeTestResult
from .._rng import isolated, rng_state, set_rng_state
from ._common import check_options, per_group_range, suggestion

__all__ = ["lr_range_test"]

logger = logging.getLogger("torch_lrrange")

_PACKAGES = ("lightning.pytorch", "pytorch_lightning")
_LR_NAMES = ("lr", "learning_rate")


def lr_range_test(
    trainer: Any,
    model: Any,
    train_dataloaders: Any = None,
    *,
    datamodule: Any = None,
    update_attr: bool = False,
    attr_name: str | None = None,
    **options: Any,
) -> RangeTestResult:
    """Run an LR range test with a Lightning trainer and module; the trainer is left as it was.

    The sweep is one ``trainer.fit`` on a fresh fit loop: the trainer's strategy (DDP too),
    precision, ``accumulate_grad_batches`` and gradient clipping apply, and each optimizer
    step records one point (the mean loss of its micro-batches, from ``training_step``'s
    output). The optimizers ``configure_optimizers()`` returns are swept; its LR schedulers are
    built but not stepped. As in :func:`~torch_lrrange.range_test`, the confirmation's candidate
    runs follow by default (``confirm=False``: the sweep alone), each a new epoch of the same
    ``fit`` from the snapshot that draws the sweep's batches again. Loggers, callbacks (checkpoints, early stopping, progress bar and
    the module's ``configure_callbacks()``), the profiler, validation and the sanity check
    are kept out of it. Afterwards the module (its weights bit-exactly, also after a
    ``"*-true"`` precision converted them, and its train/eval modes), the trainer's own
    optimizers and LR schedulers (a range test between two ``fit`` calls leaves them as they
    were), the precision plugin's ``GradScaler``, the global RNGs and the generators of the
    loaders the sweep drew from (``train_dataloaders``, or those of the ``datamodule`` or the
    module's ``train_dataloader()``, such as a generator the data module owns), the fit loop with its counters (``global_step``,
    ``current_epoch``), the trainer's callbacks, loggers, profiler, metrics
    (``callback_metrics``, ``logged_metrics``) and state are as before. No file is written.

    Args:
        trainer: a ``lightning.pytorch.Trainer`` or ``pytorch_lightning.Trainer``, not inside a
            running ``fit`` (call it before or between ``fit`` calls).
        model: the ``LightningModule``.
        train_dataloaders: as for ``trainer.fit`` (a DataLoader, a collection of them, or a
            ``LightningDataModule``). Default None (the datamodule's, or the module's
            ``train_dataloader()``).
        datamodule: a ``LightningDataModule``. Default None.
        update_attr: set the module's LR attribute afterwards (``model.lr`` or
            ``model.learning_rate``, as an attribute, an ``hparams`` key, or both): to
            ``result.lr`` when ``configure_optimizers()`` returns no LR scheduler (or only
            ``ReduceLROnPlateau``), to ``result.max_lr`` when it schedules the LR (warm-up,
            decay, one-cycle). Logged, and recorded in ``result.metadata["update_attr"]``;
            a curve without a suggestion leaves it unchanged with a warning. Default False.
        attr_name: the attribute or hparams key to set instead of ``lr``/``learning_rate``. Default None.
        **options: :class:`~torch_lrrange.RangeTest` keywords (``start_lr``, ``end_lr``,
            ``num_steps``, ``mode``, ``repeats``, ``extra_state``, ``confirm``, ...).

    Returns:
        The :class:`~torch_lrrange.RangeTestResult`, the same on every rank.

    Example:
        >>> import lightning.pytorch as pl
        >>> class Regression(pl.LightningModule):
        ...     def __init__(self, lr=1e-3):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.net = torch.nn.Linear(8, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         return torch.nn.functional.mse_loss(self.net(x), y)
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(512, 8)
        >>> data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
        >>> loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
        >>> model = Regression()
        >>> trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
        ...                      enable_progress_bar=False, enable_model_summary=False)
        >>> result = lr_range_test(trainer, model, loader, num_steps=50, start_lr=1e-4, end_lr=1.0, update_attr=True)
        >>> model.hparams.lr == result.lr, trainer.global_step   # the module's lr is set; the trainer is untouched
        (True, 0)
        >>> result.confirmation.steps, len(result.confirmation.candidates)   # six candidate runs of 100 steps
        (100, 6)
        >>> trainer.fit(model, loader)   # trains from the state before the test, at the found LR
    """
    pl = _lightning_of(trainer)
    if not isinstance(model, pl.LightningModule):
        raise TypeError(f"model must be a {pl.__name__}.LightningModule, got {type(model).__name__}")
    if not isinstance(update_attr, bool):
        raise TypeError(f"update_attr must be True or False, got {type(update_attr).__name__} {update_attr!r}")
    if attr_name is not None and not (isinstance(attr_name, str) and attr_name):
        raise TypeError(f"attr_name must be a non-empty str or None, got {attr_name!r}")
    if isinstance(train_dataloaders, pl.LightningDataModule):
        if datamodule is not None:
            raise ValueError("pass the LightningDataModule once: as train_dataloaders or as datamodule, not both")
        train_dataloaders, datamodule = None, train_dataloaders
    if datamodule is not None and not isinstance(datamodule, pl.LightningDataModule):
        raise TypeError(f"datamodule must be a {pl.__name__}.LightningDataModule, got {type(datamodule).__name__}")
    if datamodule is not None and train_dataloaders is not None:
        raise ValueError("pass either train_dataloaders or datamodule, not both")
    if trainer.state.status.value == "running":
        raise RuntimeError(
            "lr_range_test() cannot run inside a running trainer.fit(); call it before or between fit calls"
        )
    check_options(options, "lr_range_test")
    target = _lr_attribute(model, attr_name) if update_attr else None

    sweep = _Sweep(options)
    callback = _callback_type(pl)(sweep)
    with _set_aside(pl, trainer, model, train_dataloaders, datamodule, callback), sweep.stack:
        trainer.fit(model, train_dataloaders=train_dataloaders, datamodule=datamodule)
    result = sweep.result()
    if target is not None:
        _update_attr(model, target, result, sweep.schedulers)
    return result


# --- which Lightning -------------------------------------------------------------------


def _lightning_of(trainer: Any) -> ModuleType:
    """The Lightning package (``lightning.pytorch`` or ``pytorch_lightning``) ``trainer`` comes from."""
    loaded = [module for name in _PACKAGES if (module := sys.modules.get(name)) is not None]
    if not loaded:
        loaded = [require("lightning.pytorch", "lightning")]  # none imported: then this cannot be a Trainer
    for package in loaded:
        if isinstance(trainer, package.Trainer):
            return package
    raise TypeError(
        f"trainer must be a lightning.pytorch.Trainer or a pytorch_lightning.Trainer, got {type(trainer).__name__}"
    )


_CALLBACK_TYPES: dict[str, type] = {}


def _callback_type(pl: ModuleType) -> type:
    """The sweep's callback class, built on ``pl.Callback`` of the trainer's own package."""
    if pl.__name__ not in _CALLBACK_TYPES:

        class _SweepCallback(pl.Callback):  # type: ignore[name-defined]
            def __init__(self, sweep: _Sweep) -> None:
                self.sweep = sweep

            def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
                # Runs first: callbacks the module attached (configure_callbacks) stay out of the sweep too.
                trainer.callbacks[:] = [self]

            def on_train_start(self, trainer: Any, pl_module: Any) -> None:
                self.sweep.start(trainer, pl_module)

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self.sweep.epoch_start()

            def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
                self.sweep.backwards += 1

            def on_train_batch_end(
                self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
            ) -> None:
                self.sweep.batch_end(trainer, outputs)

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                self.sweep.epoch_end()

        _CALLBACK_TYPES[pl.__name__] = _SweepCallback
    return _CALLBACK_TYPES[pl.__name__]


# --- the sweep inside fit ----------------------------------------------------------------


class _Optimizers:
    """Several optimizers (manual optimization) swept as one: their param groups in order,
    each group keeping its LR ratio to the first; state dicts as a list."""

    def __init__(self, optimizers: list[Any]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"]):
            optimizer.load_state_dict(state)


class _Sweep:
    """The RangeTest driven from the fit loop's hooks: one point per optimizer step."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.stack = contextlib.ExitStack()  # holds the running RangeTest; closed after fit, also on errors
        self.test: RangeTest | None = None
        self.schedulers: list[Any] = []
        self.loaders: LoaderState | None = None  # of the loaders fit built (data module, module): put back after
        self.replay: dict[str, Any] | None = None  # what the first epoch's iterator was created from
        self.run = 0  # the candidate run under way (0: the sweep)
        self.epochs_in_run = 0
        self.backwards = self.micro_batches = 0  # since the last optimizer step: its gradient evaluations

    def capture_loaders(self, loaders: Any, *, before_first_draw: bool = False) -> None:
        """The state of the loaders fit built, taken before fit draws from them (only the first time).

        ``before_first_draw``: taken right before fit creates the first epoch's iterator; each
        candidate run then starts an epoch whose iterator draws the same batches again.
        """
        if self.loaders is None:
            self.loaders = LoaderState(loaders, stacklevel=5)
            if before_first_draw:
                self.replay = {"rng": rng_state(), "one_shot": any(isinstance(d, Iterator) for d in loaders)}
                self.samplers = [sampler for sampler, _ in sampler_epochs(loaders)]

    def restore_loaders(self) -> None:
        """Put back the generators of the loaders fit built, once (also after an error)."""
        loaders, self.loaders = self.loaders, None
        if loaders is not None:
            loaders.restore()

    def start(self, trainer: Any, module: Any) -> None:
        # Fallback when the loop had no hook to capture the loaders before their iterator drew its seed.
        self.capture_loaders(trainer.train_dataloader)
        optimizers = list(trainer.optimizers)
        if not optimizers or not all(g and "lr" in g for o in optimizers for g in o.param_groups):
            raise ValueError("configure_optimizers() returned no optimizer with an 'lr': there is no LR to sweep")
        # The sweep sets the LR each step: the module's schedulers are built but not stepped.
        self.schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        trainer.strategy.lr_scheduler_configs = []
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        extra = [*self.options.get("extra_state", ()), *([scaler] if hasattr(scaler, "state_dict") else [])]
        optimizer = optimizers[0] if len(optimizers) == 1 else _Optimizers(optimizers)
        options = per_group_range(optimizer, {**self.options, "extra_state": extra})
        self.test = RangeTest(module, optimizer, **options)
        self.stack.enter_context(self.test)
        if self.replay is not None and self.loaders is not None:
            self.test._draws_from(self.loaders, one_shot=self.replay["one_shot"])
        self.automatic = module.automatic_optimization
        self.last_step = trainer.global_step
        self.pending: torch.Tensor | None = None
        self.batches = 0
        self.points_this_epoch = 0

    def batch_end(self, trainer: Any, outputs: Any) -> None:
        test = self.test
        if test is None or test.done:
            return
        self.micro_batches += 1
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            # Automatic optimization hands out each micro-batch's loss already divided by
            # accumulate_grad_batches: their sum is the step's mean. Manual: average here.
            loss = loss.detach()
            self.pending = loss if self.pending is None else self.pending + loss
            self.batches += 1
        if trainer.global_step == self.last_step:
            return  # accumulating: no optimizer step yet
        self.last_step = trainer.global_step
        # an LBFGS step evaluates its closure (training_step and backward) several times per micro-batch
        evaluations = max(1, round(self.backwards / self.micro_batches))
        if self.pending is not None:
            loss = self.pending if self.automatic or self.batches == 1 else self.pending / self.batches
            test.record(loss, evaluations=evaluations)
            self.points_this_epoch += 1
        self.pending, self.batches = None, 0
        self.backwards = self.micro_batches = 0
        if test.done:
            trainer.should_stop = True
        elif test.candidate_run != self.run:
            # A candidate run begins (the model and optimizer are back at the snapshot): it starts on a new
            # epoch, whose iterator epoch_start makes draw the sweep's batches again.
            self.run, self.epochs_in_run = test.candidate_run, 0
            trainer.fit_loop.epoch_loop.batch_progress.is_last_batch = True

    def epoch_start(self) -> None:
        """In a candidate run, before fit creates the epoch's iterator: the loaders, samplers and global RNGs as
        they were for the sweep's epoch of the same number, so that the run sees the sweep's batches."""
        if self.run == 0 or self.replay is None or self.loaders is None:
            return
        if self.epochs_in_run == 0:
            set_rng_state(self.replay["rng"])
            self.loaders.restore()  # generators, sampler epochs, and a worker pool started since (its seeds)
        else:  # as the fit loop set them for the sweep's epoch: fresh loop, epoch numbers from 0
            for sampler in self.samplers:
                sampler.set_epoch(self.epochs_in_run)
        self.epochs_in_run += 1

    def epoch_end(self) -> None:
        if self.test is not None and not self.test.done and self.points_this_epoch == 0:
            raise RuntimeError(
                "a whole training epoch recorded no point of the range test: training_step must return the loss "
                "(a tensor, or a dict with 'loss') and the optimizer must step"
            )
        self.points_this_epoch = 0

    def result(self) -> RangeTestResult:
        if self.test is None:
            raise RuntimeError(
                "the range test did not start: trainer.fit ran no training batch (an empty train dataloader, or "
                "limit_train_batches=0?)"
            )
        assert self.test.result is not None
        return self.test.result


# --- keeping the trainer as it was -------------------------------------------------------


@contextlib.contextmanager
def _set_aside(
    pl: ModuleType, trainer: Any, model: Any, train_dataloaders: Any, datamodule: Any, callback: Any
) -> Iterator[None]:
    """Give the sweep a fresh fit loop and no loggers, callbacks, profiler or validation; put
    everything back on exit (also after an exception)."""
    fit_loop = trainer.fit_loop
    state = trainer.state
    saved = {
        "fit_loop": fit_loop,
        "callbacks": trainer.callbacks,
        "loggers": trainer.loggers,
        "profiler": trainer.profiler,
        "limit_val_batches": trainer.limit_val_batches,
        "num_sanity_val_steps": trainer.num_sanity_val_steps,
        "should_stop": trainer.should_stop,
        "datamodule": trainer.datamodule,
    }
    states = (state.fn, state.status, state.stage)
    strategy = trainer.strategy
    optimizers, schedulers = strategy.optimizers, strategy.lr_scheduler_configs
    attached = trainer.lightning_module
    try:
        module_trainer = model.trainer
    except RuntimeError:  # not attached to a trainer yet
        module_trainer = None
    datamodule_trainer = getattr(datamodule, "trainer", None)
    metrics = [dict(m) for m in _metric_dicts(trainer)]
    modes = Modes(model)
    # fit sets the grads to None before its first step; a module trained before still holds its last ones
    grads = [(p, p.grad.detach().clone()) for p in model.parameters() if p.grad is not None]
    loaders = LoaderState(train_dataloaders, stacklevel=4)
    weights = _weights_if_converted(trainer, model)

    loop = type(fit_loop)(trainer, min_epochs=0, max_epochs=-1)
    loop.epoch_loop = type(fit_loop.epoch_loop)(trainer, min_steps=None, max_steps=-1)
    _capture_built_loaders(loop, callback.sweep)
    trainer.fit_loop = loop
    trainer.callbacks = [callback]
    trainer.loggers = []
    trainer.profiler = pl.profilers.PassThroughProfiler()
    trainer.limit_val_batches = 0
    trainer.num_sanity_val_steps = 0
    try:
        with isolated():
            yield
    finally:
        for name, value in saved.items():
            setattr(trainer, name, value)
        state.fn, state.status, state.stage = states
        strategy.optimizers, strategy.lr_scheduler_configs = optimizers, schedulers
        if attached is not None:
            strategy.connect(attached)
        model.trainer = module_trainer
        if datamodule is not None:
            datamodule.trainer = datamodule_trainer
        for live, before in zip(_metric_dicts(trainer), metrics):
            live.clear()
            live.update(before)
        if weights is not None:
            _put_back(model, weights)
        modes.restore()
        for param, grad in grads:
            param.grad = grad
        callback.sweep.restore_loaders()
        loaders.restore()


def _capture_built_loaders(loop: Any, sweep: _Sweep) -> None:
    """Have the sweep's own fit loop capture the loaders it builds (``train_dataloaders``, or those of the
    data module or the module's ``train_dataloader()``, which may share a generator with their owner) right
    after building them: ``setup_data`` calls ``_load_combined_loader_states`` between building the loaders and
    creating their iterator, whose base seed is drawn from the loader's generator."""
    load_states = getattr(loop, "_load_combined_loader_states", None)
    if not callable(load_states):
        return  # another Lightning: captured at on_train_start, after that first draw

    def capturing() -> None:
        sweep.capture_loaders(loop._combined_loader.flattened, before_first_draw=True)
        load_states()

    loop._load_combined_loader_states = capturing


def _metric_dicts(trainer: Any) -> list[dict[str, Any]]:
    return [trainer.callback_metrics, trainer.logged_metrics, trainer.progress_bar_metrics]


def _weights_if_converted(trainer: Any, model: Any) -> dict[str, torch.Tensor] | None:
    """A copy of the module's tensors when the precision plugin converts the module itself
    (``"bf16-true"``, ``"16-true"``, ``"64-true"``): the snapshot inside fit sees converted ones."""
    precision = str(trainer.precision)
    if not precision.endswith("-true") or precision == "32-true":
        return None
    return {name: t.detach().clone() for name, t in [*model.named_parameters(), *model.named_buffers()]}


def _put_back(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Write ``weights`` back with their dtype and device; parameters keep their identity."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.data = weights[name]
        for name in [name for name, _ in model.named_buffers()]:
            owner, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, leaf, weights[name])


# --- update_attr -----------------------------------------------------------------------------


def _lr_attribute(model: Any, attr_name: str | None) -> tuple[str, list[str]]:
    """The LR's name on the module and where it lives (``"attribute"``, ``"hparams"``)."""
    hparams = getattr(model, "hparams", None)
    for name in (attr_name,) if attr_name else _LR_NAMES:
        places = []
        if name in type(model).__dict__ or name in vars(model):
            places.append("attribute")
        if isinstance(hparams, Mapping) and name in hparams:
            places.append("hparams")
        if places:
            return name, places
    wanted = f"model.{attr_name}" if attr_name else "model.lr or model.learning_rate"
    raise ValueError(
        f"update_attr=True needs {wanted}, as an attribute or an hparams key (save_hyperparameters()); "
        f"{type(model).__name__} has none (pass attr_name= to name another)"
    )


def _update_attr(model: Any, target: tuple[str, list[str]], result: RangeTestResult, schedulers: list[Any]) -> None:
    name, places = target
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    constant = all(isinstance(s, plateau) for s in schedulers)
    picked = suggestion(result, constant)
    if picked is None:
        warnings.warn(
            f"update_attr: the curve gives no suggestion ({'; '.join(result.warnings)}); model.{name} is left unchanged",
            UserWarning,
            stacklevel=3,
        )
        return
    value, source = picked
    why = (
        "configure_optimizers() returns no LR scheduler"
        if not schedulers
        else "its only LR scheduler is ReduceLROnPlateau"
        if constant
        else f"configure_optimizers() schedules the LR ({', '.join(type(s).__name__ for s in schedulers)})"
    )
    if "attribute" in places:
        setattr(model, name, value)
    if "hparams" in places:
        model.hparams[name] = value
    result.metadata["update_attr"] = {"name": name, "value": value, "from": source, "reason": why}
    if is_rank_zero():
        logger.info("lr_range_test: set model.%s = %.4g (result.%s: %s)", name, value, source, why)
