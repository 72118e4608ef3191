"""What a sweep changes in the data loaders it iterates, and putting it back.

Iterating a ``DataLoader`` draws from random generators and may start worker
processes. The global RNGs are part of every :class:`~torch_lrrange.Snapshot`;
this module covers the rest, for the loaders a sweep is given
(``rt.batches(loader)``, ``range_test(..., loader, val_loader=...)``):

* a ``torch.Generator`` of the loader's own (``DataLoader(generator=...)``, or
  its sampler's): its state is put back, so the next epoch draws the order it
  would have drawn without the test;
* a sampler with an epoch (``DistributedSampler.set_epoch``, which a trainer
  calls each epoch): its epoch is put back, so the next pass shuffles as it
  would have;
* ``persistent_workers=True``: a worker pool that the sweep started is shut
  down again, so the next epoch starts its workers (and draws their seeds) as it
  would have. A pool that already existed is reused by the sweep, and the
  random draws made inside those worker processes (random augmentations) cannot
  be put back: :class:`LoaderState` warns when it sees one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

__all__ = ["LoaderState", "Passes", "loader_generators", "sampler_epochs"]


class Passes:
    """A re-iterable loader seen as one endless pass: each iteration chains its passes (until one is empty).

    A sweep step may span more batches than one pass holds (gradient
    accumulation, several steps per validation point); iterating a ``Passes``
    again starts over from a new pass of ``loader``. :class:`LoaderState` sees
    the loader inside.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Any]:
        while True:
            count = 0
            for batch in self.loader:
                count += 1
                yield batch
            if count == 0:
                return


def loader_generators(loaders: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` objects that the DataLoaders in ``loaders`` (one, or a list/dict of them) draw from."""
    found: dict[int, torch.Generator] = {}
    for loader in _data_loaders(loaders):
        for holder in (loader, loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
            generator = getattr(holder, "generator", None)
            if isinstance(generator, torch.Generator):
                found.setdefault(id(generator), generator)
    return list(found.values())


def sampler_epochs(loaders: Any) -> list[tuple[Any, int]]:
    """The samplers with an epoch (``set_epoch()`` and an int ``epoch``, as ``DistributedSampler``) of the
    DataLoaders in ``loaders``, each with its epoch now."""
    found: dict[int, tuple[Any, int]] = {}
    for loader in _data_loaders(loaders):
        for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
            epoch = getattr(sampler, "epoch", None)
            if callable(getattr(sampler, "set_epoch", None)) and type(epoch) is int:
                found.setdefault(id(sampler), (sampler, epoch))
    return list(found.values())


def _data_loaders(loaders: Any) -> list[DataLoader]:
    if isinstance(loaders, Passes):
        return _data_loaders(loaders.loader)
    if isinstance(loaders, DataLoader):
        return [loaders]
    if isinstance(loaders, Mapping):
        return [d for value in loaders.values() for d in _data_loaders(value)]
    if isinstance(loaders, (list, tuple)):
        return [d for value in loaders for d in _data_loaders(value)]
    return []


def _persistent(loader: DataLoader) -> bool:
    return bool(loader.persistent_workers and loader.num_workers > 0)


class LoaderState:
    """The state of ``loaders`` (a DataLoader, or a list/dict of them; anything else is ignored) now.

    :meth:`restore` puts their generators back and shuts down a persistent
    worker pool started since. An existing persistent worker pool gives a
    ``UserWarning`` now, since the draws made in its processes cannot be
    restored; ``stacklevel`` (>= 1) is the warning's, counted from the caller.
    """

    def __init__(self, loaders: Any, *, stacklevel: int = 1) -> None:
        self._generators = [(g, g.get_state()) for g in loader_generators(loaders)]
        self._epochs = sampler_epochs(loaders)
        persistent = [d for d in _data_loaders(loaders) if _persistent(d)]
        # DataLoader keeps a persistent pool in its _iterator between epochs: its only handle on it.
        self._started = [d for d in persistent if getattr(d, "_iterator", None) is None]
        # A Passes is range_test's own wrapper of a loader it captured, and warned about, itself.
        if len(self._started) < len(persistent) and not isinstance(loaders, Passes):
            warnings.warn(
                "the loader's persistent worker processes already run: the range test reuses them, and the "
                "random draws made inside them (random augmentations, a sampler in a worker) cannot be put back, "
                "so later epochs may draw differently than without the test. Pass a loader of its own "
                "(or persistent_workers=False) to the range test to avoid it.",
                UserWarning,
                stacklevel=stacklevel + 1,
            )

    def rewind(self) -> None:
        """Put the generators and sampler epochs back (worker pools stay): the next pass draws as the first one did."""
        for generator, state in self._generators:
            generator.set_state(state)
        for sampler, epoch in self._epochs:
            sampler.set_epoch(epoch)

    def restore(self) -> None:
        """Put the generators back; shut down persistent worker pools started since the capture."""
        self.rewind()
        for loader in self._started:
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None:
                loader._iterator = None
                shutdown = getattr(iterator, "_shutdown_workers", None)
                if callable(shutdown):
                    shutdown()
