"""The package's layers, read from its import statements: nothing imports upward, and no module imports itself
back through others.

Layers, bottom up: the specs and the vocabulary every stage shares (``functions``, ``version``, ``spec``,
``spec_file``, ``variants``) and the ``symbolic`` stage; code generation (``codegen``); the analysis of a cell
(``analysis``); what a user calls (``generate``, ``loader``, the CLI, the runtime layers and converters). An
import under ``if TYPE_CHECKING:`` is a type annotation, not a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lstmgen"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The lstmgen modules ``path`` imports (at any depth of the file, TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lstmgen")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lstmgen"):
            found.add(node.module)
            # `from lstmgen.codegen import kernel_helpers` imports a module, not a name
            found |= {
                f"{node.module}.{a.name}"
                for a in node.names
                if (PACKAGE.parent / node.module.replace(".", "/") / f"{a.name}.py").exists()
            }
    return found


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


#: The specs and the vocabulary: what every stage reads.
GROUND = ("lstmgen.functions", "lstmgen.version", "lstmgen.spec", "lstmgen.spec_file", "lstmgen.variants")


def layer(module: str) -> int:
    if module in GROUND or module.startswith("lstmgen.symbolic"):
        return 0
    if module.startswith("lstmgen.codegen"):
        return 1
    if module.startswith("lstmgen.analysis"):
        return 2
    return 3


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_upward(module):
    upward = sorted(m for m in MODULES[module] if m in MODULES and layer(m) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "lstmgen"))
def test_no_module_imports_the_package_root(module):
    """The package's __init__ imports the modules; a module importing it back is a cycle waiting to happen."""
    assert "lstmgen" not in MODULES[module]


def test_no_import_cycles():
    graph = {m: {i for i in imports if i in MODULES} for m, imports in MODULES.items() if m != "lstmgen"}
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                cycles.append([*path[path.index(other) :], other] if other in path else [module, other])
            elif other not in state:
                visit(other, [*path, other])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"
