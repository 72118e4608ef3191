"""torch_lrrange: Leslie Smith's LR range test for any PyTorch model and optimizer.

Public API: :class:`RangeTest` (context manager around your loop),
:func:`range_test` (one call), :func:`analyze` (any curve), :class:`RangeTestResult`
(with its :class:`Confirmation`), :func:`range_test_grid` (a grid of other
hyperparameters, :class:`GridResult`), :class:`LRRangeScheduler`, :func:`range_lr`,
:class:`Snapshot`. Public modules: :mod:`torch_lrrange.analysis` (the curve analysis,
pure functions on arrays), :mod:`torch_lrrange.grid` (the grid's reading),
:mod:`torch_lrrange.plotting`, :mod:`torch_lrrange.tensorboard`,
:mod:`torch_lrrange.demo` and :mod:`torch_lrrange.integrations`; modules whose name
starts with an underscore are private.
"""

from ._confirmation import Confirmation
from ._one_call import range_test
from ._range_test import RangeTest
from ._result import RangeTestResult, analyze
from ._schedule import LRRangeScheduler, range_lr
from ._snapshot import Snapshot, SnapshotError
from .analysis import METHODS, UnusableCurveError
from .grid import GridResult, range_test_grid

__all__ = [
    "METHODS",
    "Confirmation",
    "GridResult",
    "LRRangeScheduler",
    "RangeTest",
    "RangeTestResult",
    "Snapshot",
    "SnapshotError",
    "UnusableCurveError",
    "analyze",
    "range_lr",
    "range_test",
    "range_test_grid",
]

__version__ = "0.1.0"
