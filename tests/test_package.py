"""The package as a whole: its modules import each other without a cycle; a missing extra says how to install it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import torch_lrrange
from torch_lrrange import demo
from torch_lrrange._optional import install_hint, require

PACKAGE = Path(torch_lrrange.__file__).parent


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (also inside functions)."""
    modules = {_module_name(path)[0]: path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = _module_name(path)[1]
        here = name.split(".") if is_package else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                parent = here[: len(here) - node.level + 1] if node.level else []
                base = ".".join([*parent, node.module] if node.module else parent)
                for alias in node.names:  # `from . import rng` imports the submodule, not the package's own names
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {dep for dep in deps if dep in modules and dep != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


def test_the_package_has_no_import_cycle():
    graph = _imports()
    assert "torch_lrrange._result" in graph["torch_lrrange"]  # the graph is read at all
    assert _cycles(graph) == []


def test_the_cycle_check_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def _hint(extra: str) -> str:
    return (
        re.escape(f'pip install -e ".[{extra}]" in a clone of torch_lrrange')
        + ".*"
        + re.escape(f'pip install "torch_lrrange[{extra}]"')
    )


def test_the_install_hint_gives_the_clone_form_and_the_published_name():
    assert install_hint("demo") == (
        'pip install -e ".[demo]" in a clone of torch_lrrange (once it is on PyPI: pip install "torch_lrrange[demo]")'
    )
    with pytest.raises(ImportError, match=r"^torch_lrrange_no_such_module is needed for this; install it with: "):
        require("torch_lrrange_no_such_module", "plot")


@pytest.mark.parametrize(
    ("module", "extra", "load"),
    [("sklearn.datasets", "demo", lambda path: demo._digits(0)), ("torchvision.datasets", "vision", demo._mnist)],
)
def test_the_demo_without_its_data_set_library_says_how_to_install_it(monkeypatch, tmp_path, module, extra, load):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError, match=_hint(extra)):
        load(tmp_path)


#: The modules users import: the package, the ones docs/api.md names, and the integrations.
PUBLIC_MODULES = {
    "torch_lrrange",
    "torch_lrrange.analysis",
    "torch_lrrange.demo",
    "torch_lrrange.grid",
    "torch_lrrange.plotting",
    "torch_lrrange.tensorboard",
    "torch_lrrange.integrations",
    "torch_lrrange.integrations.lightning",
    "torch_lrrange.integrations.transformers",
}
API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_public_modules_are_the_documented_ones_and_every_other_is_private():
    modules = set(_imports())
    public = {m for m in modules if not any(part.startswith("_") for part in m.split("."))}
    assert public == PUBLIC_MODULES
    api = API_DOC.read_text(encoding="utf-8")
    for module in sorted(PUBLIC_MODULES - {"torch_lrrange"}):
        assert f"`{module}" in api, module


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_docs_api_names_every_public_name(module):
    import importlib

    names = getattr(importlib.import_module(module), "__all__", [])
    api = API_DOC.read_text(encoding="utf-8")
    missing = [name for name in names if not re.search(rf"`[\w.]*\b{re.escape(name)}\b", api)]
    assert missing == [], f"{module}: {missing} not in docs/api.md"


def _private_names_imported() -> list[str]:
    """``from <package module> import _name`` where ``_name`` is not a module: a reach into another module."""
    modules = {_module_name(path)[0]: path for path in PACKAGE.rglob("*.py")}
    found = []
    for name, path in modules.items():
        is_package = _module_name(path)[1]
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("torch_lrrange")):
                parent = here[: len(here) - node.level + 1] if node.level else []
                base = ".".join([*parent, node.module] if node.module else parent)
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and f"{base}.{alias.name}" not in modules:
                        found.append(f"{name} imports {base}.{alias.name}")
    return found


def test_no_module_imports_a_private_name_of_another():
    assert _private_names_imported() == []
