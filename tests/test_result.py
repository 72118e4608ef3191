"""RangeTestResult: plain data, JSON round trip, schedulers from the bounds, clear errors."""

import json
import pickle
import sys

import numpy as np
import pytest
import torch
from _statecheck import Exploit, ids

from torch_lrrange import RangeTestResult, UnusableCurveError, analyze


def _curve(n=100):
    lrs = np.logspace(-6, 1, n)
    x = np.log10(lrs)
    losses = 2.3 - 1.5 / (1 + np.exp(-3 * (x + 2.5))) + np.exp(4 * (x - 0.3))
    return lrs, losses + 0.005 * np.random.default_rng(0).standard_normal(n)


def test_bounds_are_ordered_inside_the_sweep_and_below_the_minimum():
    lrs, losses = _curve()
    result = analyze(lrs, losses)
    assert lrs[0] <= result.min_lr <= result.lr <= result.max_lr <= lrs[-1]
    assert result.max_lr < lrs[np.argmin(result.smoothed)] or result.max_lr == lrs[np.argmin(result.smoothed)]
    assert result.bounds == (result.min_lr, result.max_lr)
    assert np.array_equal(result.losses[: len(result.lrs)], losses[: len(result.lrs)])


def test_json_round_trip_keeps_everything(tmp_path):
    lrs, losses = _curve()
    result = analyze(lrs, losses, start_lr=1e-6, end_lr=10.0, mode="exp")
    result.runs = [losses.copy(), losses.copy()]
    path = tmp_path / "r.json"
    result.save(path)
    loaded = RangeTestResult.load(path)
    for name in ("lrs", "losses", "smoothed"):
        assert np.array_equal(getattr(loaded, name), getattr(result, name))
    assert [np.array_equal(a, b) for a, b in zip(loaded.runs, result.runs)] == [True, True]
    assert (loaded.lr, loaded.min_lr, loaded.max_lr) == (result.lr, result.min_lr, result.max_lr)
    assert (loaded.diverged, loaded.confidence, loaded.warnings, loaded.method) == (
        result.diverged,
        result.confidence,
        result.warnings,
        result.method,
    )
    assert loaded.metadata == result.metadata
    json.loads(path.read_text())  # strict JSON: no NaN tokens


def test_schedulers_from_the_bounds():
    lrs, losses = _curve()
    result = analyze(lrs, losses)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    cyclic = result.cyclic_lr(opt, step_size_up=10)
    assert isinstance(cyclic, torch.optim.lr_scheduler.CyclicLR)
    assert cyclic.base_lrs == [result.min_lr] and cyclic.max_lrs == [result.max_lr]
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    one = result.one_cycle_lr(opt2, total_steps=100)
    assert isinstance(one, torch.optim.lr_scheduler.OneCycleLR) and one.total_steps == 100
    assert opt2.param_groups[0]["max_lr"] == result.max_lr


def test_an_unusable_curve_gives_no_number():
    lrs = np.logspace(-6, 1, 50)
    result = analyze(lrs, np.ones(50))
    assert not result.usable and result.warnings and result.confidence == 0.0
    with pytest.raises(UnusableCurveError, match="this curve gives no lr"):
        _ = result.lr
    with pytest.raises(UnusableCurveError, match="no min_lr"):
        _ = result.bounds
    assert isinstance(UnusableCurveError("x"), ValueError)
    assert "no suggestion" in repr(result)


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    lrs, losses = _curve()
    result = analyze(lrs, losses)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        ImportError,
        match=r'pip install -e "\.\[plot\]" in a clone of torch_lrrange \(once it is on PyPI: pip install "torch_lrrange\[plot\]"\)',
    ):
        result.plot()


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    lrs, losses = _curve()
    path = tmp_path / "p.png"
    analyze(lrs, losses).plot(path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "not a saved RangeTestResult"),
        ('{"format": "torch_lrrange.RangeTestResult", "version": 99}', "unsupported RangeTestResult version 99"),
        ('{"format": "torch_lrrange.RangeTestResult", "version": 1}', "lacks 'lrs'"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_load_validates_what_it_reads(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        RangeTestResult.load(path)


def test_load_rejects_wrong_field_types(tmp_path):
    lrs, losses = _curve()
    data = analyze(lrs, losses).to_dict()
    data["losses"] = ["a"] * len(data["losses"])
    with pytest.raises(ValueError, match="'losses' must be a list of numbers"):
        RangeTestResult.from_dict(data)
    data = analyze(lrs, losses).to_dict()
    data["lr"] = -1
    with pytest.raises(ValueError, match="'lr' must be a number > 0 or null"):
        RangeTestResult.from_dict(data)


def test_runs_are_set_by_analyze_and_kept_by_reanalyze():
    lrs, losses = _curve()
    runs = [losses + 0.01, losses - 0.01]
    result = analyze(lrs, losses, runs=runs)
    assert len(result.runs) == 2 and all(np.array_equal(a, b) for a, b in zip(result.runs, runs))
    again = result.reanalyze("steepest")
    assert all(np.array_equal(a, b) for a, b in zip(again.runs, runs)) and again.runs[0] is not result.runs[0]


def test_the_suggestion_has_one_name_for_each_value_in_attributes_and_json():
    lrs, losses = _curve()
    result = analyze(lrs, losses)
    data = result.to_dict()
    for name in ("lr", "min_lr", "max_lr", "confidence", "warnings"):
        assert getattr(result, name) == getattr(result.suggestion, name) == data[name]
    assert np.array_equal(result.smoothed, result.suggestion.smoothed)


def test_save_never_leaves_a_half_written_file(tmp_path):
    """A value JSON cannot hold: the error names the field, and the file saved before is intact."""
    lrs, losses = _curve()
    path = tmp_path / "lr_range.json"
    analyze(lrs, losses, start_lr=1e-6).save(path)
    saved = path.read_bytes()
    bad = analyze(lrs, losses, start_lr=1e-6, note={"gain": float("nan")})
    with pytest.raises(ValueError, match=r"metadata\['note'\]\['gain'\] is nan, which JSON cannot hold"):
        bad.save(path)
    assert path.read_bytes() == saved and sorted(p.name for p in tmp_path.iterdir()) == ["lr_range.json"]


def test_save_interrupted_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    lrs, losses = _curve()
    path = tmp_path / "lr_range.json"
    result = analyze(lrs, losses)
    result.save(path)
    saved = path.read_bytes()
    real_fsync = __import__("os").fsync

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        result.save(path)
    monkeypatch.setattr("os.fsync", real_fsync)
    assert path.read_bytes() == saved and sorted(p.name for p in tmp_path.iterdir()) == ["lr_range.json"]


def test_an_object_json_cannot_hold_is_named():
    lrs, losses = _curve()
    with pytest.raises(TypeError, match=r"metadata\['device'\] is a device, which JSON cannot hold"):
        analyze(lrs, losses, device=torch.device("cpu")).to_dict()


def test_numpy_and_tensor_scalars_come_back_as_numbers(tmp_path):
    lrs, losses = _curve()
    result = analyze(
        lrs,
        losses,
        start_lr=np.float32(1e-4),
        num_steps=np.int64(100),
        flag=np.bool_(True),
        scale=torch.tensor(0.5),
        betas=(np.float64(0.9), 0.99),
    )
    path = tmp_path / "r.json"
    result.save(path)
    meta = RangeTestResult.load(path).metadata
    assert meta["start_lr"] == float(np.float32(1e-4)) and isinstance(meta["start_lr"], float)
    assert meta["num_steps"] == 100 and isinstance(meta["num_steps"], int)
    assert meta["flag"] is True and meta["scale"] == 0.5 and meta["betas"] == [0.9, 0.99]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(lr=d["max_lr"] * 2), r"'lr' .* must lie between 'min_lr' and 'max_lr'"),
        (lambda d: d.update(min_lr=d["lr"] * 2), r"'lr' .* must lie between 'min_lr' and 'max_lr'"),
        (lambda d: d.update(max_lr=None), "'lr', 'min_lr' and 'max_lr' must all be numbers or all null"),
        (lambda d: d.update(method="bogus"), r"'method' must be one of 'default', .*got 'bogus'"),
    ],
)
def test_load_refuses_an_edited_suggestion_naming_the_file_and_field(tmp_path, edit, message):
    lrs, losses = _curve()
    data = analyze(lrs, losses).to_dict()
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as info:
        RangeTestResult.load(path)
    assert str(path) in str(info.value)


def test_save_into_a_missing_folder_names_the_path_given(tmp_path):
    lrs, losses = _curve()
    path = tmp_path / "no_such_folder" / "r.json"
    with pytest.raises(FileNotFoundError) as info:
        analyze(lrs, losses).save(path)
    assert info.value.filename == str(path) and str(path) in str(info.value)
    assert ".tmp" not in str(info.value)


@pytest.mark.parametrize(
    ("make", "cycles"),
    [
        (lambda p: torch.optim.Adadelta(p, lr=1.0), False),
        (lambda p: torch.optim.SGD(p, lr=0.1), False),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), True),
        (lambda p: torch.optim.Adam(p, lr=1e-3), True),
    ],
)
def test_cycle_helpers_cycle_momentum_only_where_the_optimizer_has_it(make, cycles):
    lrs, losses = _curve()
    result = analyze(lrs, losses)
    one = result.one_cycle_lr(make([torch.nn.Parameter(torch.zeros(1))]), total_steps=100)
    cyclic = result.cyclic_lr(make([torch.nn.Parameter(torch.zeros(1))]), step_size_up=10)
    assert one.cycle_momentum is cycles and cyclic.cycle_momentum is cycles
    # the user's explicit choice wins
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    assert result.one_cycle_lr(opt, total_steps=100, cycle_momentum=False).cycle_momentum is False
    plain = make([torch.nn.Parameter(torch.zeros(1))])
    if isinstance(plain, torch.optim.Adadelta):  # asked for explicitly, torch's own refusal stands
        with pytest.raises(ValueError, match="momentum or beta1"):
            result.cyclic_lr(plain, step_size_up=10, cycle_momentum=True)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"method": "steepest"}, r"'metadata' cannot hold 'method'"),
        ({"runs": []}, r"'metadata' cannot hold 'runs'"),
        ({"diverge_threshold": 0.5}, r"'metadata'\['diverge_threshold'\] must be a finite real number > 1"),
        ({"diverge_threshold": "4"}, r"'metadata'\['diverge_threshold'\] must be a finite real number > 1"),
    ],
)
def test_load_refuses_metadata_that_reanalyze_could_not_take(tmp_path, metadata, message):
    lrs, losses = _curve()
    data = analyze(lrs, losses).to_dict()
    data["metadata"].update(metadata)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        RangeTestResult.load(path).reanalyze("steepest")


# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---

# --- saved results: RangeTestResult.load / from_dict ----------------------------------


def _saved():
    lrs = np.logspace(-4, 0, 40)
    losses = 2 - np.tanh(np.log10(lrs) + 2) + np.exp(4 * (np.log10(lrs) + 0.3))
    return analyze(lrs, losses).to_dict()


def _with(**changes):
    data = _saved()
    for key, value in changes.items():
        if value is _MISSING:
            del data[key]
        else:
            data[key] = value
    return data


_MISSING = object()

FROM_DICT = [
    (
        "list",
        lambda: [],
        "not a saved RangeTestResult: expected a JSON object with format 'torch_lrrange.RangeTestResult'",
    ),
    ("format", lambda: _with(format="other"), "not a saved RangeTestResult"),
    ("version", lambda: _with(version=99), "unsupported RangeTestResult version 99; this library reads version 1"),
    ("missing-lrs", lambda: _with(lrs=_MISSING), "saved RangeTestResult lacks 'lrs'"),
    ("lrs-type", lambda: _with(lrs="1,2,3"), "field 'lrs' has the wrong type str"),
    ("lrs-items", lambda: _with(lrs=["a"] * 40), "field 'lrs' must be a list of numbers"),
    ("lrs-bools", lambda: _with(lrs=[True] * 40), "field 'lrs' must be a list of numbers"),
    ("lrs-nested", lambda: _with(lrs=[[1.0]] * 40), "field 'lrs' must be a list of numbers"),
    ("lrs-order", lambda: _with(lrs=list(range(40, 0, -1))), "field 'lrs' must be finite, > 0 and strictly increasing"),
    ("lrs-null", lambda: _with(lrs=[None] * 40), "field 'lrs' must be finite, > 0 and strictly increasing"),
    ("lengths", lambda: _with(losses=[1.0]), "lrs, losses and smoothed must have the same length"),
    ("method", lambda: _with(method=3), "field 'method' has the wrong type int"),
    ("lr-negative", lambda: _with(lr=-1.0), r"field 'lr' must be a number > 0 or null, got -1.0"),
    ("lr-str", lambda: _with(min_lr="1e-3"), r"field 'min_lr' must be a number > 0 or null, got '1e-3'"),
    ("diverged", lambda: _with(diverged="no"), "field 'diverged' has the wrong type str"),
    ("confidence-type", lambda: _with(confidence=None), "field 'confidence' has the wrong type NoneType"),
    ("confidence-range", lambda: _with(confidence=2.0), "field 'confidence' must be between 0 and 1, got 2.0"),
    ("warnings", lambda: _with(warnings=[1]), "field 'warnings' has the wrong type int"),
    ("runs", lambda: _with(runs="x"), "runs must be a list of lists of numbers"),
    ("runs-items", lambda: _with(runs=[["x"]]), "field 'runs' must be a list of numbers"),
    ("metadata", lambda: _with(metadata=[]), "field 'metadata' has the wrong type list"),
]


@pytest.mark.parametrize(("name", "make", "message"), FROM_DICT, ids=ids(FROM_DICT))
def test_from_dict_validates_every_field(name, make, message):
    with pytest.raises(ValueError, match=message):
        RangeTestResult.from_dict(make())


def test_from_dict_round_trip_still_works():
    data = _saved()
    result = RangeTestResult.from_dict(json.loads(json.dumps(data)))
    assert result.to_dict() == data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "result.json is not valid JSON: "),
        (b"", "result.json is not valid JSON: "),
        (b"\xff\xfe\x00garbage", "result.json is not valid JSON: "),
        (b"[" * 100_000 + b"]" * 100_000, "result.json is not valid JSON: "),
        (pickle.dumps(Exploit()), "result.json is not valid JSON: "),
        (b'{"format": "torch_lrrange.RangeTestResult", "version": 1, "confidence": NaN}', "NaN is not allowed"),
        (b'{"format": "torch_lrrange.RangeTestResult", "version": 1, "lrs": [Infinity]}', "Infinity is not allowed"),
        (
            b'{"__class__": "os.system", "args": ["touch pwned"]}',
            "not a saved RangeTestResult: expected a JSON object with format",
        ),
        (b'"torch_lrrange.RangeTestResult"', "not a saved RangeTestResult"),
        (b"null", "not a saved RangeTestResult"),
    ],
    ids=["truncated", "empty", "not-utf8", "deep-nesting", "pickle", "nan", "infinity", "class-hint", "string", "null"],
)
def test_load_refuses_malformed_and_hostile_files(tmp_path, monkeypatch, content, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "result.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        RangeTestResult.load(path)
    assert not (tmp_path / "pwned").exists()


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        RangeTestResult.load(tmp_path / "nothing.json")


def test_save_load_round_trip(tmp_path):
    result = RangeTestResult.from_dict(_saved())
    result.save(tmp_path / "r.json")
    loaded = RangeTestResult.load(tmp_path / "r.json")
    assert loaded.to_dict() == result.to_dict()


def test_reanalyze_refuses_an_unknown_method():
    result = RangeTestResult.from_dict(_saved())
    with pytest.raises(ValueError, match=r"method must be one of 'default', .*got 'fast'"):
        result.reanalyze("fast")
