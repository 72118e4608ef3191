"""Command line: ``python -m torch_lrrange {demo,run,plot}`` (also the ``torch-lrrange`` script).

The only module of the package that prints. Exit status: 0 on success, 1 when
the curve gives no usable suggestion (the files are still written), 2 on bad
input (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["build_parser", "load_make", "main"]

PNG_NAME = "lr_range.png"
JSON_NAME = "lr_range.json"
GRID_PNG_NAME = "lr_grid.png"
GRID_JSON_NAME = "lr_grid.json"
REQUIRED_KEYS = ("model", "optimizer", "loader", "loss_fn")

_DESCRIPTION = """\
Leslie Smith's LR range test: sweep the learning rate up once, read the loss curve,
get an LR for constant-LR training and (min_lr, max_lr) bounds for CyclicLR / OneCycleLR.
Model, optimizer and RNG states are restored afterwards."""

_EPILOG = """\
examples:
  python -m torch_lrrange demo                    LeNet on scikit-learn's digits, writes lr_range.png/.json
  python -m torch_lrrange demo --train            ... then trains with 1e-3 and with the found LR/bounds
  python -m torch_lrrange run my_setup.py:make    your own model: make() returns a dict with
                                                  model, optimizer, loader, loss_fn
  python -m torch_lrrange run my_setup.py:make --grid weight_decay=0,1e-4,1e-3
                                                  one sweep per weight decay: the one to keep, with its LR
  python -m torch_lrrange plot lr_range.json --method steepest
"""


# --- argument types: argparse turns their errors into "argument --x: ..." and exit 2 ---


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _grid_value(text: str) -> Any:
    """A number, true/false, or a tuple written with colons (``0.9:0.999``)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        numbers = [float(part) for part in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers (a tuple as 0.9:0.999, a flag as true/false), got {text!r}"
        ) from None
    return tuple(numbers) if len(numbers) > 1 else numbers[0]


def _grid_option(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` as ``(key, [values])``."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or not values.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=V1,V2,... such as weight_decay=0,1e-4,1e-3, got {text!r}")
    return key, [_grid_value(v.strip()) for v in values.split(",")]


def _methods() -> list[str]:
    from .analysis import METHODS

    return list(METHODS)


def _methods_help(default: str) -> str:
    """Each method's rule, from the first line of its docstring: the help can never describe another rule."""
    from .analysis import METHODS

    lines = {name: (rule.__doc__ or "").strip().splitlines()[0].replace("``", "") for name, rule in METHODS.items()}
    rules = "; ".join(f"{name}: {line.rstrip('.')}" for name, line in lines.items())
    return f"how to read the curve (default: {default}). {rules}"


def _add_sweep_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Options shared by ``demo`` and ``run``; for ``run`` they override make()'s own keys only when given."""
    kept = " (default: make()'s value, else RangeTest's)" if not defaults else ""
    p.add_argument(
        "--out", default=".", metavar="DIR", help=f"folder for {PNG_NAME} and {JSON_NAME} (default: current folder)"
    )
    p.add_argument(
        "--num-steps",
        type=_int_at_least(2),
        default=100 if defaults else None,
        metavar="N",
        help="points in the sweep, one per optimizer step" + (" (default: 100)" if defaults else kept),
    )
    p.add_argument(
        "--start-lr",
        type=_positive_float,
        default=1e-7 if defaults else None,
        metavar="LR",
        help="first LR of the sweep" + (" (default: 1e-7)" if defaults else kept),
    )
    p.add_argument(
        "--end-lr",
        type=_positive_float,
        default=10.0 if defaults else None,
        metavar="LR",
        help="last LR of the sweep" + (" (default: 10)" if defaults else kept),
    )
    p.add_argument(
        "--method",
        choices=_methods(),
        default=None,
        help=_methods_help("default"),
    )
    p.add_argument(
        "--seed", type=int, default=0 if defaults else None, help="torch seed" + (" (default: 0)" if defaults else "")
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The ``torch-lrrange`` argument parser (sub-commands demo, run, plot)."""
    parser = argparse.ArgumentParser(
        prog="torch-lrrange",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,run,plot}")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="range test of LeNet on handwritten digits (no download)",
        description="Range test of LeNet (Adam) on scikit-learn's 8x8 digits upscaled to 28x28 (80/20 "
        "train/validation split), or on MNIST files already on disk. Prints lr, min_lr and max_lr, writes "
        f"{PNG_NAME} and {JSON_NAME}. With --train, then trains from the same initial weights with Adam at "
        "the common default 1e-3, at the found lr, and with OneCycleLR between the found bounds, and prints "
        "the validation accuracies side by side.",
    )
    _add_sweep_options(demo, defaults=True)
    demo.set_defaults(handler=_demo, parser=demo)
    demo.add_argument("--train", action="store_true", help="then train and compare with the default LR 1e-3")
    demo.add_argument(
        "--epochs", type=_int_at_least(1), default=3, metavar="N", help="epochs per training run (default: 3)"
    )
    demo.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=1,
        metavar="N",
        help="torch CPU threads (default: 1; LeNet's small batches gain little from more, and on a busy "
        "machine extra threads mostly wait for each other)",
    )
    demo.add_argument("--dataset", choices=["digits", "mnist"], default="digits", help="(default: digits)")
    demo.add_argument(
        "--data-dir", metavar="DIR", help="with --dataset mnist: the folder holding MNIST/raw/ (never downloaded)"
    )

    run = sub.add_parser(
        "run",
        help="range test of your own model: run FILE.py:make or package.module:make",
        description="Range test of your own setup without writing a loop. make() takes no arguments and "
        "returns a dict with model, optimizer, loader and loss_fn (loss_fn(model, batch) -> scalar loss), "
        "and optionally range-test keywords (start_lr, end_lr, num_steps, accumulation_steps, device, "
        "extra_state, ...). Command-line options override make()'s keys. Prints lr, min_lr and max_lr, "
        f"writes {PNG_NAME} and {JSON_NAME}. With --grid: one range test per value of other "
        "hyperparameters (weight decay, momentum), every one from the same snapshot; prints a table and "
        "the values to keep with their LRs (Smith's reading: the lowest loss, then stable to a larger LR), "
        f"writes {GRID_PNG_NAME} (the curves overlaid) and {GRID_JSON_NAME}.",
    )
    run.add_argument("target", metavar="FILE.py:make | package.module:make", help="where make() is")
    _add_sweep_options(run, defaults=False)
    confirming = run.add_mutually_exclusive_group()
    confirming.add_argument(
        "--confirm",
        nargs="?",
        const=True,
        type=_int_at_least(1),
        metavar="STEPS",
        help="after the sweep, confirm the LR by short runs from the same snapshot (range_test(confirm=)): six "
        "candidate LRs, STEPS optimizer steps each (100 when no number is given), judged by the validation loss "
        "when make() returns a val_loader, else by the training loss (default: make()'s value, else "
        "range_test's default, which confirms with 100 steps per run where it can; off with --grid)",
    )
    confirming.add_argument(
        "--no-confirm",
        dest="confirm",
        action="store_const",
        const=False,
        help="the sweep's own reading alone, without the confirmation runs (range_test(confirm=False))",
    )
    run.add_argument(
        "--grid",
        action="append",
        type=_grid_option,
        metavar="KEY=V1,V2,...",
        help="sweep again at each value of this param-group key, e.g. weight_decay=0,1e-4,1e-3 or "
        "betas=0.9:0.999,0.95:0.999 (a tuple with colons); repeat the option for more keys (every "
        "combination is swept)",
    )
    run.set_defaults(handler=_run, parser=run)

    plot = sub.add_parser(
        "plot",
        help="re-analyse and re-plot a saved lr_range.json",
        description=f"Re-read a saved curve ({JSON_NAME}) with --method, print lr, min_lr, max_lr, and plot it.",
    )
    plot.add_argument("json", metavar="JSON", help=f"a {JSON_NAME} written by demo, run or RangeTestResult.save")
    plot.add_argument("--method", choices=_methods(), default=None, help=_methods_help("the method it was saved with"))
    plot.add_argument("--out", metavar="PNG", help="image to write (default: the JSON's path with .png)")
    plot.set_defaults(handler=_plot, parser=plot)
    return parser


# --- run: finding make() ----------------------------------------------------------------


def load_make(target: str) -> Any:
    """The callable named by ``FILE.py:NAME`` or ``package.module:NAME``.

    Raises ``ValueError`` (bad form, missing file or name); errors raised while
    importing the user's code propagate unchanged.
    """
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"expected FILE.py:make or package.module:make, got {target!r}")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = os.path.abspath(where)
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {where!r}")
        module_name = "_torch_lrrange_user_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {where!r} as a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        sys.path.insert(0, os.path.dirname(path))  # as when the file is run: its neighbours are importable
        spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as err:
            if err.name is not None and where.startswith(err.name):
                raise ValueError(f"no module named {where!r} (looked in the current folder and sys.path)") from err
            raise
    make = getattr(module, name, None)
    if make is None:
        raise ValueError(f"{where!r} has no {name!r}")
    if not callable(make):
        raise ValueError(f"{where}:{name} is not callable (a {type(make).__name__})")
    return make


def _allowed_options() -> list[str]:
    from ._checks import keyword_options
    from ._one_call import range_test
    from ._range_test import RangeTest

    return keyword_options(RangeTest, range_test)


def _check_setup(setup: Any) -> dict[str, Any]:
    if not isinstance(setup, Mapping):
        raise ValueError(
            f"make() must return a dict with keys {', '.join(REQUIRED_KEYS)}, got a {type(setup).__name__}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in setup]
    if missing:
        raise ValueError(f"make()'s dict lacks {', '.join(map(repr, missing))} (needs {', '.join(REQUIRED_KEYS)})")
    allowed = _allowed_options()
    unknown = [k for k in setup if k not in REQUIRED_KEYS and k not in allowed]
    if unknown:
        raise ValueError(
            f"make()'s dict has unknown keys {', '.join(map(repr, unknown))}; besides "
            f"{', '.join(REQUIRED_KEYS)} it may hold {', '.join(allowed)}"
        )
    _check_required(setup)
    return dict(setup)


def _check_required(setup: Mapping[str, Any]) -> None:
    """make()'s model, optimizer, loader and loss_fn must be what range_test takes (ValueError, a usage error)."""
    from torch import nn

    from ._checks import check_loader, check_optimizer

    if not isinstance(setup["model"], nn.Module):
        raise ValueError(f"make()'s model must be a torch.nn.Module, got {type(setup['model']).__name__}")
    if not callable(setup["loss_fn"]):
        raise ValueError(
            f"make()'s loss_fn must be callable as loss_fn(model, batch), got {type(setup['loss_fn']).__name__}"
        )
    try:
        check_optimizer(setup["optimizer"], "make()'s optimizer")
        check_loader("make()'s loader", setup["loader"])
    except TypeError as err:
        raise ValueError(str(err)) from None


# --- output -------------------------------------------------------------------------


def _report(result: Any, png: str, json_path: str | None) -> int:
    """Print the suggestion and write the files; 0 if usable, 1 if not."""
    if result.usable:
        confirmed = result.confirmation
        source = f"method {result.method!r}" if confirmed is None else "confirmed"
        print(f"lr      {result.lr:.3g}    constant-LR training ({source})")
        print(f"min_lr  {result.min_lr:.3g}    CyclicLR base_lr")
        print(f"max_lr  {result.max_lr:.3g}    CyclicLR / OneCycleLR max_lr")
        if confirmed is not None:
            curve = "none" if result.suggestion.lr is None else f"{result.suggestion.lr:.3g}"
            print(
                f"confirmed by {len(confirmed.candidates)} runs of {confirmed.steps} steps ({confirmed.by} loss); "
                f"the curve alone read lr {curve} (method {result.method!r})"
            )
        print(
            f"confidence {result.confidence:.2f} (0: the curve gives no LR, 1: clean curve), {len(result.lrs)} points"
            + (", stopped at divergence" if result.diverged else "")
        )
    else:
        print("no usable suggestion from this curve")
    for warning in result.warnings:
        print(f"warning: {warning}")
    _write(result, png, json_path)
    return 0 if result.usable else 1


def _write(result: Any, png: str, json_path: str | None) -> None:
    """Save ``result`` (a RangeTestResult or GridResult) as JSON and its plot as PNG, and say what was written."""
    written = []
    if json_path is not None:
        result.save(json_path)
        written.append(json_path)
    try:
        result.plot(path=png)
    except ImportError as err:
        print(f"no plot: {err}")
    else:
        written.append(png)
    print("wrote " + " and ".join(written))


def _sweep_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {
        "num_steps": args.num_steps,
        "start_lr": args.start_lr,
        "end_lr": args.end_lr,
        "method": args.method,
        "progress": False if args.quiet else None,
    }
    return {k: v for k, v in options.items() if v is not None}


def _check_lrs(parser: argparse.ArgumentParser, options: Mapping[str, Any]) -> None:
    start, end = options.get("start_lr"), options.get("end_lr")
    if isinstance(start, float) and isinstance(end, float) and not end > start:
        parser.error(f"--end-lr must be greater than --start-lr, got --start-lr {start:g} and --end-lr {end:g}")
    if isinstance(start, float) and isinstance(end, float) and not math.isfinite(end / start):
        parser.error(f"--end-lr / --start-lr overflows a float ({end:g} / {start:g}): narrow the range")


def _out_dir(parser: argparse.ArgumentParser, out: str) -> str:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        parser.error(f"argument --out: cannot create folder {out!r}: {err.strerror}")
    return out


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import torch

    from . import demo
    from ._one_call import range_test

    if args.dataset == "mnist" and args.data_dir is None:
        parser.error("argument --dataset: mnist needs --data-dir DIR, the folder holding MNIST/raw/")
    if args.data_dir is not None and args.dataset != "mnist":
        parser.error("argument --data-dir: only used with --dataset mnist")
    options = _sweep_options(args)
    _check_lrs(parser, options)
    out = _out_dir(parser, args.out)
    torch.set_num_threads(args.threads)
    try:
        setup = demo.make_setup(args.dataset, args.data_dir, args.seed)
    except demo.DataMissingError as err:
        parser.error(f"argument --data-dir: {err}")
    print(
        f"LR range test: LeNet, Adam, {args.dataset} ({len(setup.train_data)} training / {len(setup.val_data)} "
        f"validation images), {options['num_steps']} steps from {options['start_lr']:g} to {options['end_lr']:g}"
    )
    initial = {k: v.clone() for k, v in setup.model.state_dict().items()}
    result = range_test(setup.model, setup.optimizer, setup.loader, demo.loss_fn, **options)
    # The test restores the model: training below starts from exactly these weights.
    if not all(torch.equal(v, setup.model.state_dict()[k]) for k, v in initial.items()):
        raise RuntimeError("the range test did not restore LeNet's initial weights")
    result.metadata["source"] = f"demo: LeNet, Adam, {args.dataset}, seed {args.seed}"
    status = _report(result, os.path.join(out, PNG_NAME), os.path.join(out, JSON_NAME))
    if args.train:
        if not result.usable:
            print("--train skipped: no usable suggestion to compare")
        else:
            _train(setup, result, args.epochs)
    return status


def _train(setup: Any, result: Any, epochs: int) -> None:
    from . import demo

    lo, hi = result.bounds
    runs = [
        (f"constant {demo.DEFAULT_LR:g} (the common default)", demo.DEFAULT_LR, None),
        (f"constant {result.lr:.3g} (found lr)", result.lr, None),
        (
            f"OneCycleLR {lo:.3g} -> {hi:.3g} (found bounds)",
            hi,
            lambda opt, total: result.one_cycle_lr(opt, total, div_factor=hi / lo),
        ),
    ]
    print(f"\ntraining LeNet with Adam for {epochs} epochs, each run from the same initial weights and batch order:")
    width = max(len(name) for name, _, _ in runs)
    for name, lr, schedule in runs:
        acc = demo.train(setup, epochs, lr, schedule)
        print(f"  {name:<{width}}  validation accuracy {100 * acc:5.1f}%", flush=True)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import torch

    from ._one_call import range_test

    try:
        make = load_make(args.target)
    except ValueError as err:
        parser.error(f"argument target: {err}")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    made = make()  # errors in the user's own code propagate with their traceback
    try:
        setup = _check_setup(made)
    except ValueError as err:
        parser.error(str(err))
    options = {k: v for k, v in setup.items() if k not in REQUIRED_KEYS}
    options.update(_sweep_options(args))
    if args.confirm is not None:
        options["confirm"] = args.confirm
    _check_lrs(parser, options)
    out = _out_dir(parser, args.out)
    if args.grid:
        return _run_grid(parser, args.grid, setup, options, out)
    result = range_test(setup["model"], setup["optimizer"], setup["loader"], setup["loss_fn"], **options)
    result.metadata["source"] = f"run {args.target}"
    return _report(result, os.path.join(out, PNG_NAME), os.path.join(out, JSON_NAME))


def _run_grid(
    parser: argparse.ArgumentParser,
    specs: list[tuple[str, list[Any]]],
    setup: Mapping[str, Any],
    options: dict[str, Any],
    out: str,
) -> int:
    """``run --grid``: the grid of range tests, its table and choice; 0 if a curve is usable, 1 if none."""
    from ._checks import check_optimizer
    from ._hyperparams import check_hyperparams, format_value, grid_combinations
    from .analysis import UnusableCurveError
    from .grid import range_test_grid

    grid: dict[str, list[Any]] = {}
    for key, values in specs:
        if key in grid:
            parser.error(f"argument --grid: {key} is given twice; give all its values in one --grid {key}=...")
        grid[key] = values
    try:  # the grid's own checks, as a usage error, before anything runs
        check_optimizer(setup["optimizer"])
        grid_combinations(grid, setup["optimizer"], check_hyperparams(options.get("hyperparams"), setup["optimizer"]))
    except (TypeError, ValueError) as err:
        parser.error(f"argument --grid: {err}")
    result = range_test_grid(
        setup["model"], setup["optimizer"], setup["loader"], setup["loss_fn"], grid=grid, **options
    )
    print(result.table())
    try:
        chosen, best = result.best
    except UnusableCurveError as err:
        print(f"no usable suggestion: {err}")
        status = 1
    else:
        print("best    " + ", ".join(f"{k}={format_value(v)}" for k, v in chosen.items()))
        print(f"lr      {best.lr:.3g}    constant-LR training")
        print(f"min_lr  {best.min_lr:.3g}    CyclicLR base_lr")
        print(f"max_lr  {best.max_lr:.3g}    CyclicLR / OneCycleLR max_lr")
        status = 0
    _write(result, os.path.join(out, GRID_PNG_NAME), os.path.join(out, GRID_JSON_NAME))
    return status


def _plot(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._result import RangeTestResult

    try:
        saved = RangeTestResult.load(args.json)
    except OSError as err:
        parser.error(f"argument JSON: cannot read {args.json!r}: {err.strerror}")
    except ValueError as err:
        parser.error(f"argument JSON: {err}")
    result = saved.reanalyze(args.method or saved.method)
    png = args.out or os.path.splitext(args.json)[0] + ".png"
    folder = os.path.dirname(os.path.abspath(png))
    if not os.path.isdir(folder):
        parser.error(f"argument --out: no such folder {folder!r} (create it first)")
    return _report(result, png, None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    try:
        return args.handler(args.parser, args)
    except BrokenPipeError:  # e.g. `... | head`: the reader left; exit quietly (Python docs' recipe)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
