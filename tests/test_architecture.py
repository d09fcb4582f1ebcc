"""The layers of the package (docs/architecture.md) and the imports each may make.

Every import in every module, at the top or inside a function, is read from the
source; a module may import only from its own unit and the units its row allows.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_crfgan"

#: unit (first name under napari_crfgan) -> the units it may import; lowest first
ALLOWED = {
    "_lazy": set(),
    "files": set(),
    "messages": set(),
    "distributed": set(),
    "model": {"distributed"},
    "evaluation": {"messages"},
    "data": {"files", "_lazy"},
    "runtime": {"model", "distributed", "files", "messages"},
    "training": {"model", "distributed", "data", "runtime", "files"},
    "sampling": {"model", "data", "runtime"},
    "synthesis": {"model", "data", "runtime", "sampling"},
    "experiments": {"model", "evaluation", "data", "runtime", "training", "sampling", "synthesis", "files",
                    "messages", "distributed"},
    "cli": {"model", "evaluation", "data", "runtime", "training", "sampling", "synthesis", "experiments", "files",
            "messages", "distributed"},
    "_reader": {"data"},
    "_writer": {"data"},
    "_sample_data": {"data", "_reader"},
    "widgets": {"_reader", "model", "data", "runtime", "training", "sampling", "synthesis", "experiments",
                "messages"},
    "__init__": {"_lazy"},
}
#: third-party packages a unit may import besides the standard library (None: any)
THIRD_PARTY = {"model": {"torch"}, "distributed": {"torch"}, "evaluation": {"numpy", "scipy", "torch"},
               "files": set(), "messages": set(),
               "_lazy": set()}
GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt"}
GUI_UNITS = {"widgets", "_reader", "_writer", "_sample_data"}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), is_package, path


def _imports(module: str, is_package: bool, path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module
            if node.level and not node.module:  # "from . import x": x is a submodule
                found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((target, node.lineno))
    return found


def _graph():
    return {module: (is_package, _imports(module, is_package, path)) for module, is_package, path in _modules()}


def test_every_unit_has_a_row():
    units = {_unit(m) for m in _graph()}
    assert units <= set(ALLOWED), f"add a row to ALLOWED (and docs/architecture.md) for {units - set(ALLOWED)}"


def test_imports_follow_the_layers():
    broken = []
    stdlib = set(sys.stdlib_module_names)
    for module, (_, imports) in _graph().items():
        unit = _unit(module)
        for target, line in imports:
            top = target.split(".")[0]
            if top == "napari_crfgan":
                other = _unit(target)
                if other != unit and other not in ALLOWED[unit]:
                    broken.append(f"{module}:{line} imports {target} ({unit} may not use {other})")
            elif top not in stdlib:
                allowed = THIRD_PARTY.get(unit)
                if allowed is not None and top not in allowed:
                    broken.append(f"{module}:{line} imports {target} ({unit} may only use {sorted(allowed)})")
                if top in GUI and unit not in GUI_UNITS:
                    broken.append(f"{module}:{line} imports {target} (napari / Qt only in widgets and contributions)")
    assert not broken, "\n".join(broken)


def test_no_import_cycle_between_modules():
    """Imports between modules of the package (at any level) form no cycle."""
    graph = _graph()
    edges = {}
    for module, (_, imports) in graph.items():
        edges[module] = {t for t, _ in imports if t in graph and t != module}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1 and not (m.startswith(n + ".") or n.startswith(m + ".")):
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_the_rule_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: a model module importing training is reported."""
    fake = tmp_path / "napari_crfgan"
    (fake / "model").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "model" / "__init__.py").write_text("")
    (fake / "model" / "bad.py").write_text("def f():\n    from ..training import train\n    import numpy\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"model may not use training[\s\S]*model may only use \['torch'\]"):
        test_imports_follow_the_layers()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_reader_and_package_import_without_torch():
    out = _run("import sys, napari_crfgan, napari_crfgan._reader, napari_crfgan._writer\n"
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'napari', 'qtpy')))")
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr + out.stdout


def test_no_qt_at_import_time():
    """Everything but the widget and napari-contribution modules imports without napari or Qt."""
    code = r"""
import importlib, pkgutil, sys
BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Block())
import napari_crfgan
skip = ("napari_crfgan.widgets", "napari_crfgan._reader", "napari_crfgan._writer", "napari_crfgan._sample_data")
for m in pkgutil.walk_packages(napari_crfgan.__path__, "napari_crfgan."):
    if not m.name.startswith(skip):
        importlib.import_module(m.name)
print("ok")
"""
    out = _run(code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_public_api_names_resolve():
    import napari_crfgan

    for name in napari_crfgan.__all__:
        assert getattr(napari_crfgan, name) is not None
    with pytest.raises(AttributeError):
        napari_crfgan.__getattr__("not_a_name")
