"""End-to-end tests of ``python -m torch_lrrange`` (demo, run, plot, --help) and its error handling."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _statecheck import Exploit, assert_nothing_registered, ids

from torch_lrrange import METHODS, RangeTestResult, analyze
from torch_lrrange._cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A tiny user setup for `run`: a linear regression whose range test has a clean descent.
SETUP_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def loss_fn(model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    def make():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        y = x @ torch.randn(8, 1, generator=g) + 0.01 * torch.randn(256, 1, generator=g)
        model = nn.Linear(8, 1)
        batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
        return {
            "model": model,
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
            "loader": batches,
            "loss_fn": loss_fn,
            "start_lr": 1e-4,
            "end_lr": 10.0,
            "num_steps": 40,
        }
    """
)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The demo sets torch's thread count (for its own process); keep the test process as it was."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _run_cli(*args: str, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "torch_lrrange", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _printed(stdout: str) -> dict[str, float]:
    found = dict(re.findall(r"^(lr|min_lr|max_lr)\s+(\S+)", stdout, flags=re.M))
    return {k: float(v) for k, v in found.items()}


def _check_png(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def _check_outputs(out: str | os.PathLike[str], stdout: str) -> RangeTestResult:
    _check_png(os.path.join(out, "lr_range.png"))
    result = RangeTestResult.load(os.path.join(out, "lr_range.json"))
    printed = _printed(stdout)
    if result.usable:
        for key, value in (("lr", result.lr), ("min_lr", result.min_lr), ("max_lr", result.max_lr)):
            assert printed[key] == pytest.approx(value, rel=5e-3), key
    else:
        assert "no usable suggestion" in stdout
    return result


# --- demo ---------------------------------------------------------------------------------


def test_demo_subprocess_writes_png_and_json(tmp_path):
    out = tmp_path / "out" / "nested"  # created on demand
    proc = _run_cli("demo", "--out", str(out), "--num-steps", "24", "--start-lr", "1e-4", "--end-lr", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = _check_outputs(out, proc.stdout)
    assert result.usable
    assert result.metadata["num_steps"] == 24 and result.metadata["start_lr"] == 1e-4
    assert result.lrs[0] == pytest.approx(1e-4) and len(result.lrs) <= 24
    assert result.metadata["source"].startswith("demo: LeNet")
    assert proc.stderr.strip() == ""  # --quiet: no progress bar, and nothing else on stderr


@pytest.mark.slow
def test_demo_train_compares_default_lr_with_found_bounds(tmp_path, capsys):
    status = main(
        ["demo", "--out", str(tmp_path), "--num-steps", "24", "--start-lr", "1e-4", "--end-lr", "1",
         "--train", "--epochs", "1", "--quiet"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    result = _check_outputs(tmp_path, out)
    rows = re.findall(r"^\s+(constant|OneCycleLR) (\S+) .*validation accuracy\s+([\d.]+)%$", out, flags=re.M)
    assert [r[0] for r in rows] == ["constant", "constant", "OneCycleLR"]
    assert float(rows[0][1]) == 1e-3
    assert float(rows[1][1]) == pytest.approx(result.lr, rel=5e-3)
    assert float(rows[2][1]) == pytest.approx(result.min_lr, rel=5e-3)
    for _, _, acc in rows:
        assert 0.0 <= float(acc) <= 100.0


def test_demo_is_deterministic_for_a_seed(tmp_path, capsys):
    args = ["demo", "--num-steps", "12", "--start-lr", "1e-4", "--end-lr", "1", "--quiet", "--seed", "3"]
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    capsys.readouterr()
    a = RangeTestResult.load(tmp_path / "a" / "lr_range.json")
    b = RangeTestResult.load(tmp_path / "b" / "lr_range.json")
    assert np.array_equal(a.losses, b.losses)


def _write_idx(path, data: np.ndarray, code: int) -> None:
    header = struct.pack(">HBB", 0, code, data.ndim) + b"".join(struct.pack(">I", n) for n in data.shape)
    with open(path, "wb") as f:
        f.write(header + data.astype(np.uint8).tobytes())


def test_demo_mnist_reads_files_on_disk(tmp_path, capsys):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 96), ("t10k", 32)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        images[np.arange(n), labels * 2 + 4, 4:24] = 255  # a learnable stripe per class
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 0x08)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 0x08)
    status = main(
        ["demo", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path),
         "--num-steps", "16", "--start-lr", "1e-4", "--end-lr", "1", "--quiet"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status in (0, 1)
    assert "mnist (96 training / 32 validation images)" in out
    _check_outputs(tmp_path, out)


def test_demo_mnist_missing_files_says_where(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "MNIST was not found" in err and "never downloads" in err
    assert not (tmp_path / "lr_range.json").exists()


# --- run ------------------------------------------------------------------------------------


def test_run_file_target(tmp_path, capsys):
    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    status = main(["run", f"{tmp_path / 'my_setup.py'}:make", "--out", str(tmp_path / "o"), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    result = _check_outputs(tmp_path / "o", out)
    assert result.metadata["num_steps"] == 40 and result.metadata["start_lr"] == 1e-4  # make()'s own options
    assert result.metadata["source"].endswith("my_setup.py:make")


@pytest.mark.parametrize(("flag", "steps"), [(["--confirm"], 100), (["--confirm", "7"], 7)])
def test_run_confirm_confirms_the_lr_by_short_runs(tmp_path, capsys, flag, steps):
    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    target = f"{tmp_path / 'my_setup.py'}:make"
    status = main(["run", target, "--out", str(tmp_path / "o"), "--quiet", *flag])
    assert status == 0
    stdout = capsys.readouterr().out
    result = _check_outputs(tmp_path / "o", stdout)
    info = result.metadata["confirmation"]
    assert info["by"] == "training" and info["steps"] == steps and len(info["candidates"]) == 6
    assert result.lr == info["lr"]
    assert f"confirmed by 6 runs of {steps} steps (training loss); the curve alone read lr" in stdout
    assert main(["run", target, "--out", str(tmp_path / "plain"), "--quiet", "--no-confirm"]) == 0
    assert "confirmation" not in RangeTestResult.load(tmp_path / "plain" / "lr_range.json").metadata


def test_run_confirms_by_default_and_no_confirm_and_confirm_exclude_each_other(tmp_path, capsys):
    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    target = f"{tmp_path / 'my_setup.py'}:make"
    assert main(["run", target, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert RangeTestResult.load(tmp_path / "o" / "lr_range.json").confirmation is not None
    with pytest.raises(SystemExit) as info:
        main(["run", target, "--out", str(tmp_path / "x"), "--confirm", "--no-confirm"])
    assert info.value.code == 2
    assert "argument --no-confirm: not allowed with argument --confirm" in capsys.readouterr().err


def test_run_confirm_refuses_a_bad_step_count(tmp_path, capsys):
    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    with pytest.raises(SystemExit) as info:
        main(["run", f"{tmp_path / 'my_setup.py'}:make", "--out", str(tmp_path), "--confirm", "0"])
    assert info.value.code == 2
    assert "argument --confirm: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "lr_range.json").exists()


def test_run_module_target_and_cli_overrides(tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "userpkg_cli_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "setups.py").write_text(SETUP_SOURCE)
    monkeypatch.chdir(tmp_path)  # package.module targets are found from the current folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    status = main(["run", "userpkg_cli_test.setups:make", "--num-steps", "24", "--method", "steepest", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    result = _check_outputs(tmp_path, out)
    assert result.metadata["num_steps"] == 24  # the option beats make()'s 40
    assert result.method == "steepest"


def _setup_with(**given: str) -> str:
    """A make() returning real objects, but for the entries ``given`` (as source text)."""
    entries = {"model": "model", "optimizer": "opt", "loader": "[(x, x)]", "loss_fn": "loss_fn", **given}
    return (
        "import torch\n"
        "def loss_fn(m, b):\n    return m(b[0]).sum()\n"
        "def make():\n"
        "    model = torch.nn.Linear(2, 1)\n    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    x = torch.ones(4, 2)\n"
        f"    return {{{', '.join(f'{k!r}: {v}' for k, v in entries.items())}}}\n"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "def make():\n    return [1, 2]\n",
            "make\\(\\) must return a dict with keys model, optimizer, loader, loss_fn",
        ),
        ("def make():\n    return {'model': 1}\n", "lacks 'optimizer', 'loader', 'loss_fn'"),
        (
            "def make():\n    return {'model': 1, 'optimizer': 1, 'loader': 1, 'loss_fn': 1, 'lr_start': 1}\n",
            "unknown keys 'lr_start'.*start_lr",
        ),
        ("make = 3\n", "is not callable"),
        ("", "has no 'make'"),
        (_setup_with(model="1"), r"make\(\)'s model must be a torch.nn.Module, got int"),
        (_setup_with(optimizer="object()"), r"make\(\)'s optimizer must be a torch optimizer"),
        (_setup_with(loader="'data.csv'"), r"make\(\)'s loader must be an iterable of batches"),
        (_setup_with(loss_fn="'mse'"), r"make\(\)'s loss_fn must be callable as loss_fn\(model, batch\)"),
    ],
)
def test_run_bad_setup_is_a_usage_error(tmp_path, capsys, body, message):
    (tmp_path / "bad.py").write_text(body)
    with pytest.raises(SystemExit) as info:
        main(["run", f"{tmp_path / 'bad.py'}:make", "--out", str(tmp_path)])
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon_here", "expected FILE.py:make or package.module:make"),
        ("missing_file.py:make", "no such file: 'missing_file.py'"),
        ("no_such_package_xyz.mod:make", "no module named 'no_such_package_xyz.mod'"),
    ],
)
def test_run_bad_target(tmp_path, capsys, monkeypatch, target, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["run", target])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_errors_in_user_code_propagate(tmp_path):
    (tmp_path / "boom.py").write_text("def make():\n    raise KeyError('from the user')\n")
    with pytest.raises(KeyError, match="from the user"):
        main(["run", f"{tmp_path / 'boom.py'}:make", "--out", str(tmp_path)])


# --- plot -----------------------------------------------------------------------------------


def _saved_curve(path) -> RangeTestResult:
    lrs = np.logspace(-5, 0, 80)
    x = np.log10(lrs)
    losses = 2 - np.tanh(x + 3) + np.exp(5 * (x + 0.5)) + 0.01 * np.random.default_rng(0).standard_normal(80)
    result = analyze(lrs, losses, mode="exp")
    result.save(path)
    return result


def test_plot_reanalyzes_with_method(tmp_path, capsys):
    saved = _saved_curve(tmp_path / "curve.json")
    # a method that reads this curve differently from the saved one
    method = next(
        m for m in METHODS if m != saved.method and saved.reanalyze(m).lr != pytest.approx(saved.lr, rel=0.01)
    )
    assert main(["plot", str(tmp_path / "curve.json"), "--method", method]) == 0
    out = capsys.readouterr().out
    _check_png(tmp_path / "curve.png")  # default: the JSON's path with .png
    assert _printed(out)["lr"] == pytest.approx(saved.reanalyze(method).lr, rel=5e-3)
    assert f"method {method!r}" in out
    assert RangeTestResult.load(tmp_path / "curve.json").method == saved.method  # the JSON is left alone


def test_plot_out_and_unusable_curve_exits_1(tmp_path, capsys):
    flat = analyze(np.logspace(-5, 0, 40), np.full(40, 2.0))
    assert not flat.usable
    flat.save(tmp_path / "flat.json")
    status = main(["plot", str(tmp_path / "flat.json"), "--out", str(tmp_path / "pic.png")])
    out = capsys.readouterr().out
    assert status == 1
    assert "no usable suggestion" in out and "warning: " in out
    _check_png(tmp_path / "pic.png")


def test_plot_rejects_files_that_are_not_results(tmp_path, capsys):
    (tmp_path / "other.json").write_text(json.dumps({"lrs": [1, 2]}))
    (tmp_path / "broken.json").write_text("{not json")
    for name, message in (("other.json", "not a saved RangeTestResult"), ("missing.json", "cannot read")):
        with pytest.raises(SystemExit) as info:
            main(["plot", str(tmp_path / name)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "argument JSON" in err and message in err
    with pytest.raises(SystemExit) as info:
        main(["plot", str(tmp_path / "broken.json")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        "argument JSON" in err and "broken.json" in err and re.search("not a saved RangeTestResult|not valid JSON", err)
    )


# --- help and bad options -----------------------------------------------------------------------


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("demo", "run", "plot", "FILE.py:make"):
        assert word in out


@pytest.mark.parametrize("command", ["demo", "run", "plot"])
def test_help_of_each_command(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: torch-lrrange {command}")
    assert "--method" in out
    flat = " ".join(out.split())
    for name, rule in METHODS.items():  # the help states the rule each method really uses
        first_line = rule.__doc__.strip().splitlines()[0].replace("``", "").rstrip(".")
        assert f"{name}: {first_line}" in flat


def test_console_script_is_installed():
    script = shutil.which("torch-lrrange")
    if script is None:
        pytest.skip("the torch-lrrange script is not on PATH (package not installed with pip)")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "demo" in proc.stdout and "plot" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required"),
        (["demo", "--method", "best"], "argument --method: invalid choice: 'best' (choose from 'default'"),
        (["demo", "--num-steps", "1"], "argument --num-steps: expected an integer >= 2, got 1"),
        (["demo", "--num-steps", "ten"], "argument --num-steps: expected an integer >= 2, got 'ten'"),
        (["demo", "--start-lr", "-1"], "argument --start-lr: expected a finite number > 0, got '-1'"),
        (["demo", "--end-lr", "nan"], "argument --end-lr: expected a finite number > 0, got 'nan'"),
        (["demo", "--start-lr", "1", "--end-lr", "0.1"], "--end-lr must be greater than --start-lr"),
        (["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
        (["demo", "--threads", "0"], "argument --threads: expected an integer >= 1, got 0"),
        (["demo", "--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar' (choose from 'digits', 'mnist')"),
        (["demo", "--dataset", "mnist"], "mnist needs --data-dir DIR"),
        (["demo", "--data-dir", "x"], "argument --data-dir: only used with --dataset mnist"),
        (["plot", "x.json", "--method", "fast"], "argument --method: invalid choice: 'fast'"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_input_exits_2_naming_the_option(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "lr_range.json").exists()


# --- run --grid ------------------------------------------------------------------------------


def test_run_grid_prints_the_table_and_choice_and_writes_json_and_plot(tmp_path, capsys):
    from torch_lrrange import GridResult

    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    argv = ["run", f"{tmp_path / 'my_setup.py'}:make", "--out", str(tmp_path / "o"), "--quiet"]
    status = main([*argv, "--grid", "weight_decay=0,1e-3,0.1", "--grid", "momentum=0,0.9"])
    out = capsys.readouterr().out
    assert status == 0
    grid = GridResult.load(tmp_path / "o" / "lr_grid.json")
    _check_png(tmp_path / "o" / "lr_grid.png")
    assert grid.keys == ("weight_decay", "momentum")
    assert list(grid.results) == [(0.0, 0.0), (0.0, 0.9), (1e-3, 0.0), (1e-3, 0.9), (0.1, 0.0), (0.1, 0.9)]
    assert grid.current == (0.0, 0.0)
    assert all(r.metadata["num_steps"] == 40 for r in grid.results.values())  # make()'s own options
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["weight_decay", "momentum", "lr"]
    assert sum(line.startswith("* ") for line in lines[1:7]) == 1
    values, best = grid.best
    assert lines[7] == "best    " + ", ".join(f"{k}={v:g}" for k, v in values.items())
    printed = _printed(out)
    for key, value in (("lr", best.lr), ("min_lr", best.min_lr), ("max_lr", best.max_lr)):
        assert printed[key] == pytest.approx(value, rel=5e-3), key
    assert not (tmp_path / "o" / "lr_range.json").exists()


def test_run_grid_with_confirm_confirms_every_value(tmp_path, capsys):
    from torch_lrrange import GridResult

    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    argv = ["run", f"{tmp_path / 'my_setup.py'}:make", "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--grid", "weight_decay=0,0.1", "--confirm", "5"]) == 0
    grid = GridResult.load(tmp_path / "o" / "lr_grid.json")
    for result in grid.results.values():
        info = result.metadata["confirmation"]
        assert info["steps"] == 5 and result.lr == info["lr"]
    printed = _printed(capsys.readouterr().out)
    assert printed["lr"] == pytest.approx(grid.best[1].lr, rel=5e-3)


def test_run_grid_with_tuple_values(tmp_path, capsys):
    from torch_lrrange import GridResult

    (tmp_path / "adam_setup.py").write_text(
        SETUP_SOURCE.replace("torch.optim.SGD(model.parameters(), lr=0.1)", "torch.optim.Adam(model.parameters())")
    )
    status = main(
        [
            "run",
            f"{tmp_path / 'adam_setup.py'}:make",
            "--out",
            str(tmp_path),
            "--quiet",
            "--num-steps",
            "24",
            "--grid",
            "betas=0.85:0.999,0.95:0.999",
        ]
    )
    assert status == 0
    grid = GridResult.load(tmp_path / "lr_grid.json")
    assert list(grid.results) == [((0.85, 0.999),), ((0.95, 0.999),)]
    assert "(0.85, 0.999)" in capsys.readouterr().out


def test_run_grid_without_a_usable_curve_exits_1(tmp_path, capsys):
    flat = SETUP_SOURCE.replace("return nn.functional.mse_loss(model(x), y)", "return (model(x) * 0).sum() + 1.0")
    (tmp_path / "flat.py").write_text(flat)
    status = main(
        ["run", f"{tmp_path / 'flat.py'}:make", "--out", str(tmp_path), "--quiet", "--grid", "weight_decay=0,1e-3"]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert (
        "no combination gives a usable curve" in out and "no usable suggestion: no usable curve to choose from" in out
    )
    assert (tmp_path / "lr_grid.json").exists()


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            ["weight_decay"],
            "argument --grid: expected KEY=V1,V2,... such as weight_decay=0,1e-4,1e-3, got 'weight_decay'",
        ),
        (["weight_decay="], "argument --grid: expected KEY=V1,V2,..."),
        (["=0,1"], "argument --grid: expected KEY=V1,V2,..."),
        (
            ["weight_decay=0,x"],
            "argument --grid: expected numbers (a tuple as 0.9:0.999, a flag as true/false), got 'x'",
        ),
        (["weight_decay=0", "--grid", "weight_decay=1e-3"], "argument --grid: weight_decay is given twice"),
        (
            ["weight_decay=0,-1"],
            "argument --grid: grid['weight_decay'][1]: hyperparams['weight_decay'] must be a finite real number in [0, inf)",
        ),
        (
            ["betas=0.9:0.99"],
            "argument --grid: grid['betas'][0]: hyperparams key 'betas' is not held by every param group of SGD",
        ),
        (["lr=0.1"], "argument --grid: grid['lr'][0]: hyperparams cannot set 'lr'"),
    ],
)
def test_run_bad_grid_exits_2_naming_the_option(tmp_path, capsys, grid, message):
    (tmp_path / "my_setup.py").write_text(SETUP_SOURCE)
    with pytest.raises(SystemExit) as info:
        main(["run", f"{tmp_path / 'my_setup.py'}:make", "--out", str(tmp_path), "--quiet", "--grid", *grid])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "lr_grid.json").exists()


def test_plot_out_into_a_missing_folder_is_a_usage_error_naming_it(tmp_path, capsys):
    _saved_curve(tmp_path / "curve.json")
    target = tmp_path / "no_such_folder" / "pic.png"
    with pytest.raises(SystemExit) as info:
        main(["plot", str(tmp_path / "curve.json"), "--out", str(target)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and str(target.parent) in err and ".tmp" not in err


def test_plot_of_a_result_with_an_unknown_method_is_a_usage_error(tmp_path, capsys):
    saved = _saved_curve(tmp_path / "curve.json")
    data = saved.to_dict()
    data["method"] = "bogus"
    (tmp_path / "curve.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as info:
        main(["plot", str(tmp_path / "curve.json")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument JSON" in err and "'method'" in err and "bogus" in err and "Traceback" not in err


def test_run_takes_clip_from_make(tmp_path, capsys):
    setup = tmp_path / "setup_clip.py"
    setup.write_text(SETUP_SOURCE.replace('"num_steps": 40,', '"num_steps": 40, "clip": 0.01,'))
    assert main(["run", f"{setup}:make", "--out", str(tmp_path / "o"), "--quiet", "--seed", "3"]) in (0, 1)
    saved = RangeTestResult.load(tmp_path / "o" / "lr_range.json")
    import torch

    from torch_lrrange import range_test
    from torch_lrrange._cli import load_make

    torch.manual_seed(3)
    made = load_make(f"{setup}:make")()
    options = {k: v for k, v in made.items() if k not in ("model", "optimizer", "loader", "loss_fn")}
    expected = range_test(made["model"], made["optimizer"], made["loader"], made["loss_fn"], **options, progress=False)
    np.testing.assert_array_equal(saved.losses, expected.losses)
    assert options["clip"] == 0.01


# --- bad input: a ValueError or TypeError that names the argument, raised before anything is touched ---

# --- command line: argparse's exit status 2, naming the option ---------------------------------

CLI = [
    ("no-command", [], "the following arguments are required: {demo,run,plot}"),
    (
        "unknown-command",
        ["train"],
        r"argument {demo,run,plot}: invalid choice: 'train' \(choose from 'demo', 'run', 'plot'\)",
    ),
    ("unknown-option", ["demo", "--foo"], "unrecognized arguments: --foo"),
    ("num-steps-1", ["demo", "--num-steps", "1"], "argument --num-steps: expected an integer >= 2, got 1"),
    (
        "lr-ratio-overflows",
        ["demo", "--start-lr", "1e-7", "--end-lr", "1e302"],
        r"--end-lr / --start-lr overflows a float \(1e\+302 / 1e-07\): narrow the range",
    ),
    ("num-steps-negative", ["demo", "--num-steps", "-3"], "argument --num-steps: expected an integer >= 2, got -3"),
    ("num-steps-text", ["demo", "--num-steps", "many"], "argument --num-steps: expected an integer >= 2, got 'many'"),
    ("num-steps-float", ["demo", "--num-steps", "2.5"], "argument --num-steps: expected an integer >= 2, got '2.5'"),
    ("start-lr-zero", ["demo", "--start-lr", "0"], "argument --start-lr: expected a finite number > 0, got '0'"),
    ("start-lr-nan", ["demo", "--start-lr", "nan"], "argument --start-lr: expected a finite number > 0, got 'nan'"),
    ("start-lr-text", ["demo", "--start-lr", "small"], "argument --start-lr: expected a number > 0, got 'small'"),
    ("end-lr-inf", ["demo", "--end-lr", "inf"], "argument --end-lr: expected a finite number > 0, got 'inf'"),
    ("end-lr-negative", ["demo", "--end-lr", "-1"], "argument --end-lr: expected a finite number > 0, got '-1'"),
    ("end-below-start", ["demo", "--start-lr", "1", "--end-lr", "0.5"], "--end-lr must be greater than --start-lr"),
    ("method", ["demo", "--method", "best"], r"argument --method: invalid choice: 'best' \(choose from 'default'"),
    ("epochs", ["demo", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (
        "dataset",
        ["demo", "--dataset", "cifar"],
        r"argument --dataset: invalid choice: 'cifar' \(choose from 'digits', 'mnist'\)",
    ),
    ("mnist-without-dir", ["demo", "--dataset", "mnist"], "argument --dataset: mnist needs --data-dir"),
    (
        "mnist-missing",
        ["demo", "--dataset", "mnist", "--data-dir", "nowhere"],
        "argument --data-dir: MNIST was not found under",
    ),
    ("seed", ["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    ("run-no-target", ["run"], "the following arguments are required: FILE.py:make"),
    ("run-target-form", ["run", "setup"], "argument target: expected FILE.py:make or package.module:make, got 'setup'"),
    ("run-missing-file", ["run", "nothing.py:make"], "argument target: no such file: 'nothing.py'"),
    ("run-missing-name", ["run", "os.path:nothing"], "argument target: 'os.path' has no 'nothing'"),
    ("run-not-callable", ["run", "setup.py:NOT_CALLABLE"], "argument target: setup.py:NOT_CALLABLE is not callable"),
    (
        "run-not-a-dict",
        ["run", "setup.py:not_a_dict"],
        "make\\(\\) must return a dict with keys model, optimizer, loader, loss_fn, got a list",
    ),
    ("run-missing-key", ["run", "setup.py:missing_key"], "make\\(\\)'s dict lacks 'loss_fn'"),
    (
        "run-unknown-key",
        ["run", "setup.py:unknown_key"],
        "make\\(\\)'s dict has unknown keys 'num_step'; besides model, optimizer, loader, loss_fn it may hold start_lr",
    ),
    (
        "run-num-steps",
        ["run", "setup.py:make", "--num-steps", "0"],
        "argument --num-steps: expected an integer >= 2, got 0",
    ),
    ("plot-missing", ["plot", "nothing.json"], "argument JSON: cannot read 'nothing.json'"),
    ("plot-malformed", ["plot", "bad.json"], "argument JSON: bad.json is not valid JSON: "),
    ("plot-hostile", ["plot", "hostile.json"], "argument JSON: hostile.json: not a saved RangeTestResult"),
    ("plot-method", ["plot", "bad.json", "--method", "m"], r"argument --method: invalid choice: 'm'"),
]

_SETUP_PY = """
import torch

NOT_CALLABLE = 5


def make():
    model = torch.nn.Linear(2, 1)
    return {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loader": [(torch.ones(4, 2), torch.ones(4))],
        "loss_fn": lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean(),
    }


def not_a_dict():
    return [make()]


def missing_key():
    setup = make()
    del setup["loss_fn"]
    return setup


def unknown_key():
    return dict(make(), num_step=5)


def bad_optimizer():
    return dict(make(), optimizer="sgd")


def bad_num_steps():
    return dict(make(), num_steps=1)
"""


@pytest.fixture
def cli_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "setup.py").write_text(_SETUP_PY)
    (tmp_path / "bad.json").write_text('{"lrs": [')
    (tmp_path / "hostile.json").write_bytes(pickle.dumps(Exploit()).hex().join(['{"payload": "', '"}']).encode())
    return tmp_path


@pytest.mark.parametrize(("name", "argv", "message"), CLI, ids=ids(CLI))
def test_cli_options(cli_folder, capsys, name, argv, message):
    from torch_lrrange._cli import main

    files = sorted(os.listdir(cli_folder))
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert sorted(os.listdir(cli_folder)) == files  # nothing written
    assert_nothing_registered()


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ("setup.py:bad_optimizer", TypeError, "optimizer must be a torch optimizer"),
        ("setup.py:bad_num_steps", ValueError, "num_steps must be an int in \\[2, 10000000\\], got 1"),
    ],
    ids=["optimizer", "num_steps"],
)
def test_cli_run_reports_bad_values_from_make(cli_folder, capsys, target, error, message):
    """Values make() returns are checked by the library: a usage error (exit 2) or its own TypeError/ValueError, naming the argument."""
    from torch_lrrange._cli import main

    try:
        main(["run", target])
    except SystemExit as exit_:
        assert exit_.code == 2
        assert re.search(message, capsys.readouterr().err)
    except error as err:
        assert re.search(message, str(err))
    else:
        pytest.fail("no error")
    assert not {"lr_range.png", "lr_range.json"} & set(os.listdir(cli_folder))  # nothing written
    assert_nothing_registered()
