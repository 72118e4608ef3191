"""plot_result draws what the result says: curves, suggestion, bounds, divergence; and writes a real PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from torch_lrrange import analyze
from torch_lrrange.plotting import plot_result


def _curve(n: int = 80, blow_up: bool = False):
    lrs = np.logspace(-5, 0, n)
    x = np.log10(lrs)
    losses = 2 - np.tanh(x + 3) + np.exp(5 * (x + 0.5)) + 0.01 * np.random.default_rng(0).standard_normal(n)
    if blow_up:
        losses[-10:] = np.linspace(50, 500, 10)
    return lrs, losses


def _line(ax, label_start):
    found = [line for line in ax.get_lines() if line.get_label().startswith(label_start)]
    assert len(found) == 1, [line.get_label() for line in ax.get_lines()]
    return found[0]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_draws_curves_suggestion_and_bounds():
    result = analyze(*_curve())
    assert result.usable
    ax = plot_result(result)
    assert ax.get_xscale() == "log"
    assert np.array_equal(_line(ax, "loss (raw").get_xdata(), result.lrs)
    assert np.array_equal(_line(ax, "loss (raw").get_ydata(), result.losses)
    assert np.array_equal(_line(ax, "loss (smoothed)").get_ydata(), result.smoothed)
    assert list(_line(ax, "lr ").get_xdata()) == [result.lr, result.lr]
    span = [p for p in ax.patches if p.get_label().startswith("bounds")]
    assert len(span) == 1
    left, width = span[0].get_x(), span[0].get_width()
    assert left == pytest.approx(result.min_lr) and left + width == pytest.approx(result.max_lr)
    assert f"{result.lr:.3g}" in ax.get_title() and f"{result.confidence:.2f}" in ax.get_title()
    low, high = ax.get_ylim()
    assert low < np.min(result.smoothed) and high > result.smoothed[0]


def test_marks_divergence_at_the_last_kept_point():
    result = analyze(*_curve(blow_up=True))
    assert result.diverged
    ax = plot_result(result)
    line = _line(ax, "diverged")
    assert list(line.get_xdata()) == [result.lrs[-1], result.lrs[-1]]
    assert ax.get_ylim()[1] < 50  # the blow-up does not squash the curve


def test_unusable_curve_says_why():
    result = analyze(np.logspace(-5, 0, 40), np.full(40, 2.0))
    assert not result.usable
    ax = plot_result(result)
    assert "no usable suggestion" in ax.get_title()
    assert result.warnings[0][:30] in ax.get_title().replace("\n", " ")
    assert not [line for line in ax.get_lines() if line.get_label().startswith("lr ")]


def test_draws_on_given_axes_and_keeps_the_figure_open():
    fig, (left, right) = plt.subplots(1, 2)
    result = analyze(*_curve())
    assert plot_result(result, ax=right, title="mine") is right
    assert right.get_title() == "mine" and not left.get_lines()
    assert plt.fignum_exists(fig.number)


def test_writes_a_png_and_closes_its_own_figure(tmp_path):
    result = analyze(*_curve())
    before = plt.get_fignums()
    result.plot(path=tmp_path / "curve.png")  # RangeTestResult.plot goes through plot_result
    assert plt.get_fignums() == before
    with open(tmp_path / "curve.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(tmp_path / "curve.png")
    assert image.shape[0] > 300 and image.shape[1] > 500 and image[..., :3].std() > 0.05


def test_one_point_curve_still_plots(tmp_path):
    result = analyze(np.array([1e-3]), np.array([1.0]))
    assert not result.usable
    plot_result(result, path=tmp_path / "tiny.png")
    assert (tmp_path / "tiny.png").stat().st_size > 0


class _FakeWriter:
    """Records what a SummaryWriter would be given."""

    def __init__(self):
        self.scalars, self.texts, self.figures, self.flushed = [], [], [], False

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.append((tag, value, global_step))

    def add_text(self, tag, text):
        self.texts.append((tag, text))

    def add_figure(self, tag, figure, close=True):
        self.figures.append((tag, figure))
        if close:
            plt.close(figure)

    def flush(self):
        self.flushed = True


def test_tensorboard_logging_writes_every_point_and_the_suggestion():
    from torch_lrrange.tensorboard import log_to_tensorboard

    result = analyze(*_curve(40))
    result.losses[5] = np.nan  # as a loaded JSON may hold: skipped as a loss, kept as an LR
    writer = _FakeWriter()
    log_to_tensorboard(result, writer, tag="rt")
    by_tag = {}
    for tag, value, step in writer.scalars:
        by_tag.setdefault(tag, []).append((step, value))
    n = len(result.lrs)
    assert [s for s, _ in by_tag["rt/lr"]] == list(range(n))
    assert [v for _, v in by_tag["rt/lr"]] == result.lrs.tolist()
    assert [s for s, _ in by_tag["rt/loss"]] == [i for i in range(n) if i != 5]
    assert [v for _, v in by_tag["rt/smoothed"]] == [v for v in result.smoothed.tolist() if np.isfinite(v)]
    assert writer.texts == [("rt/suggestion", writer.texts[0][1])] and f"lr {result.lr:.3g}" in writer.texts[0][1]
    assert [t for t, _ in writer.figures] == ["rt/curve"] and writer.flushed


def test_tensorboard_rejects_a_non_writer():
    from torch_lrrange.tensorboard import log_to_tensorboard

    with pytest.raises(TypeError, match=r"writer must be a SummaryWriter .* got str"):
        log_to_tensorboard(analyze(*_curve()), "runs/")


def test_a_failed_plot_leaves_the_previous_png_intact(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    lrs = np.logspace(-5, 0, 60)
    result = analyze(lrs, 2 - np.tanh(np.log10(lrs) + 3) + np.exp(5 * (np.log10(lrs) + 0.5)))
    path = tmp_path / "lr_range.png"
    result.plot(path=path)
    saved = path.read_bytes()
    real = Figure.savefig

    def half_written(self, fname, **kwargs):
        real(self, fname, **kwargs)  # the bytes reach the file, then the write fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_written)
    with pytest.raises(OSError, match="No space left on device"):
        result.plot(path=path)
    assert path.read_bytes() == saved and sorted(p.name for p in tmp_path.iterdir()) == ["lr_range.png"]


def test_plot_into_a_missing_folder_names_the_path_given(tmp_path):
    lrs = np.logspace(-5, 0, 50)
    path = tmp_path / "no_such_folder" / "p.png"
    with pytest.raises(FileNotFoundError) as info:
        analyze(lrs, 2 - np.tanh(np.log10(lrs) + 3)).plot(path=path)
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)
    plt.close("all")
