"""torch_lrrange: Leslie Smith's LR range test for any PyTorch model and optimizer.

Public API: :class:`RangeTest` (context manager around your loop),
:func:`range_test` (one call), :func:`analyze` (any curve), :class:`RangeTestResult`,
:func:`range_test_grid` (a grid of other hyperparameters, :class:`GridResult`),
:class:`LRRangeScheduler`, :func:`range_lr`, :class:`Snapshot`.
"""

from .analysis import METHODS, UnusableCurveError
from .context import RangeTest
from .grid import GridResult, range_test_grid
from .result import RangeTestResult, analyze
from .runner import range_test
from .schedule import LRRangeScheduler, range_lr
from .snapshot import Snapshot, SnapshotError

__all__ = [
    "METHODS",
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
