"""The generated files: deterministic, up to date, standalone, readable."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import BUILTIN, GENERATED, REPO

from lstmgen import generate_source, write_module
from lstmgen.codegen.render_module import module_name


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("name", BUILTIN)
def test_committed_module_is_up_to_date(name, gradient):
    stem = module_name(name, gradient)
    committed = (GENERATED / f"{stem}.py").read_text()
    assert committed == generate_source(name, gradient), (
        f"generated/{stem}.py is stale: run `lstmgen generate --gradient both` and commit generated/"
    )


def test_generated_directory_holds_exactly_the_builtin_modules():
    expected = {f"{module_name(n, g)}.py" for n in BUILTIN for g in ("full", "truncated")} | {"__init__.py"}
    assert {p.name for p in GENERATED.glob("*.py")} == expected


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_generation_is_deterministic(name, gradient):
    assert generate_source(name, gradient) == generate_source(name, gradient)


def test_same_bytes_in_a_fresh_interpreter():
    """Hash-seed independence: another process with another PYTHONHASHSEED writes the same text."""
    code = (
        "import sys, lstmgen; sys.stdout.write(''.join(lstmgen.generate_source(v, g) for v in lstmgen.VARIANTS "
        "for g in ('full', 'truncated')))"
    )
    env_outputs = []
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        env_outputs.append(out.stdout)
    everything = "".join(generate_source(v, g) for v in BUILTIN for g in ("full", "truncated"))
    assert env_outputs[0] == env_outputs[1] == everything


@pytest.mark.parametrize("name", BUILTIN)
def test_module_imports_only_numpy_and_numba(name):
    tree = ast.parse(generate_source(name))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"numpy", "numba"}


def test_module_constants(generated_module):
    m = generated_module("lstm_peephole")
    assert m.VARIANT == "lstm_peephole"
    assert m.GATES == ("i", "f", "g", "o")
    assert m.STATE == ("h", "c")
    assert m.PARAMS == ("W", "R", "b", "p_i", "p_f", "p_o")
    assert m.param_shapes(3, 5) == {"W": (3, 20), "R": (5, 20), "b": (20,), "p_i": (5,), "p_f": (5,), "p_o": (5,)}
    assert generated_module("lstm").PARAMS == ("W", "R", "b")


def test_equations_are_comments_above_the_loops():
    source = generate_source("lstm_peephole")
    assert "            # a_o = hR_o + xW_o + c*p_o\n            for j in range(hidden):" in source
    assert "#   d_c_prev = d_a_f*p_f + d_a_i*p_i + d_c*f" in source
    assert "Backward, derived by SymPy" in source  # and in the docstring


def test_generated_package_imports_from_repository_root():
    """The issue's example: `import generated.lstm_peephole` from the repository root."""
    code = "import generated.lstm_peephole as m; print(m.VARIANT, m.GATES, m.PARAMS)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lstm_peephole ('i', 'f', 'g', 'o') ('W', 'R', 'b', 'p_i', 'p_f', 'p_o')"


def test_write_is_atomic_and_idempotent(tmp_path):
    path = write_module("lstm", tmp_path)
    stat = path.stat()
    assert write_module("lstm", tmp_path) == path
    assert path.stat().st_mtime_ns == stat.st_mtime_ns  # unchanged bytes are not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["lstm.py"]  # no temporary left behind


def test_templates_ship_with_the_installed_package():
    """When lstmgen is imported from an installed wheel, the templates come from inside the package."""
    import lstmgen
    from lstmgen.codegen.render_module import templates_dir

    package = __import__("pathlib").Path(lstmgen.__file__).resolve().parent
    if package.parent == REPO:
        pytest.skip("lstmgen is imported from the source checkout (editable install)")
    assert templates_dir() == package / "templates"
    assert (templates_dir() / "module.py.j2").is_file()


def test_load_module_reuses_unchanged_files_and_reloads_rewritten_ones(tmp_path):
    from lstmgen import load_module

    path = write_module("lstm", tmp_path)
    first = load_module(path)
    assert load_module(path) is first
    path.write_text(generate_source("lstm_peephole"))
    second = load_module(path)
    assert second.VARIANT == "lstm_peephole" and first.VARIANT == "lstm"
