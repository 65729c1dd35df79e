"""What a spec says can never run as code, nor change what the generated kernels compute.

- Text (description, paper) reaches the module only escaped: importing a module generated from hostile text
  runs nothing and the text reads back unchanged.
- Names: every identifier derived from a spec name is ``<name>__<role>``, so a spec may call its values
  whatever the generator calls its own (``gate_seq``, ``grad_h``, ``o_gate``...): a property test renames the
  values of built-in cells to the generator's own identifiers and checks the numbers do not change.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import GENERATED, import_without_jit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from problems import random_problem

import lstmgen
from lstmgen.codegen.kernel_names import check_namespace
from lstmgen.generate import generate_source, write_source
from lstmgen.loader import load_module
from lstmgen.spec import CellSpec, Gate, SpecError, check_identifier
from lstmgen.variants import GRU, GRU_V3, LSTM, LSTM_FGR, LSTM_PEEPHOLE

#: An LSTM with an intermediate value, so that intermediates are renamed too.
LSTM_U = replace(LSTM, name="lstm_u", equations=(("u", "i*g"), ("c", "f*c_prev + u"), ("h", "o*tanh(c)")))
CELLS = (LSTM, LSTM_U, LSTM_PEEPHOLE, GRU, GRU_V3, LSTM_FGR)

CANARY = "LSTMGEN_PWNED"
HOSTILE = [
    f'x"""; __import__("builtins").{CANARY} = 1; """',
    f"x'''; __import__('builtins').{CANARY} = 1; '''",
    f'"""\n__import__("builtins").{CANARY} = 1\n"""',
    '"',
    '""""""',
    'ends with a quote"',
    "ends with a backslash\\",
    "\\",
    "\\N{bad}",
    "\\x",
    "\\u12",
    "line one\nline two\r\nline three\rfour",
    f"\n\nimport builtins; builtins.{CANARY} = 1\n",
    "NUL \x00 byte",
    "escape \x1b[31m red",
    "separators \u2028 and \u2029 and \x85",
    "lone surrogate \ud800",
    "tab\tand form feed\x0c",
    "{{ variant }} {% if x %} {# jinja #}",
    "# not a comment",
    "Jürgen Schmidhuber, σ(x) ⊙ tanh",
    "x" * 50_000,
]


@pytest.fixture(autouse=True)
def _no_canary():
    assert not hasattr(builtins, CANARY)
    yield
    assert not hasattr(builtins, CANARY), "importing a generated module ran text from its spec"


@pytest.mark.parametrize("k", range(len(HOSTILE)))
def test_hostile_description_and_paper_read_back_unchanged(tmp_path, k):
    text = HOSTILE[k]
    spec = replace(LSTM, name=f"hostile{k}", description=text, paper=text[::-1])
    source = generate_source(spec)
    ast.parse(source)  # a SyntaxError here would be a module that no one can import
    module = load_module(write_source(source, tmp_path, spec.name))
    description, paper = module.DESCRIPTION, module.PAPER
    assert description == text
    assert paper == text[::-1]
    assert text in module.__doc__ and text[::-1] in module.__doc__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["__pycache__", f"{spec.name}.py"]


def test_description_from_a_toml_file_does_not_run(tmp_path, monkeypatch):
    """The exploit of the bug report, through lstmgen.load of a TOML file."""
    monkeypatch.setenv("LSTMGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "f.toml"
    spec.write_text(
        "name = 'evil'\n"
        """description = 'x\"\"\"; __import__("os").system("touch pwned"); \"\"\"'\n"""
        "paper = '\\N{bad}'\n"
        'state = ["h"]\n[[gates]]\nname = "g"\nactivation = "tanh"\n[equations]\nh = "g"\n'
    )
    module = lstmgen.load(spec)
    assert not (tmp_path / "pwned").exists()
    description, paper = module.DESCRIPTION, module.PAPER
    assert description == 'x"""; __import__("os").system("touch pwned"); """'
    assert paper == "\\N{bad}"


# ------------------------------------------------------------------------------------------------- names
def _generator_identifiers() -> list[str]:
    """Every identifier of the committed modules, and the pieces of the <name>__<role> ones."""
    found: set[str] = set()
    for path in sorted(GENERATED.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "id", None) or getattr(node, "arg", None) or getattr(node, "name", None)
            if isinstance(name, str):
                found.add(name)
                found.update(name.split("__"))
    # Also the generator's old names and the ones of the bug report (a name that once collided stays tested).
    found.update(["grad_h", "grad_c", "o_gate", "i_rec", "i_fb", "o_d_gate", "i_d", "early", "gate", "h_seq", "c_row"])
    found.update(["gate_seq_row", "d_gate", "rec", "fb_seq", "hidden", "nb", "j", "t", "real", "steps", "tape"])
    pool = []
    for name in sorted(found):
        try:
            check_identifier(name, "name")
        except SpecError:
            continue
        pool.append(name)
    return pool


POOL = _generator_identifiers()


def _renamed(spec: CellSpec, new: dict[str, str]) -> CellSpec:
    """The same cell with its gates, states, unit parameters and intermediates renamed (equations rewritten)."""
    vocabulary = dict(new)
    for gate in spec.gates:
        for prefix in ("a_", "xW_", "hR_", "gQ_"):
            vocabulary[prefix + gate.name] = prefix + new[gate.name]
    for s in spec.state:
        vocabulary[f"{s}_prev"] = f"{new[s]}_prev"

    class Rename(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.copy_location(ast.Name(vocabulary.get(node.id, node.id), node.ctx), node)

    def text(equation: str) -> str:
        return ast.unparse(Rename().visit(ast.parse(equation, mode="eval"))) if equation else equation

    return replace(
        spec,
        name=f"{spec.name}_renamed",
        gates=tuple(
            Gate(new[g.name], g.activation, text(g.preactivation), text(g.recurrent_source)) for g in spec.gates
        ),
        state=tuple(new[s] for s in spec.state),
        equations=tuple((new[lhs], text(rhs)) for lhs, rhs in spec.equations),
        unit_params=tuple(new[p] for p in spec.unit_params),
        feedback=tuple(new[g] for g in spec.feedback),
    )


def _names_of(spec: CellSpec) -> list[str]:
    names = [*(g.name for g in spec.gates), *spec.state, *spec.unit_params, *(lhs for lhs, _ in spec.equations)]
    return list(dict.fromkeys(names))


def _run_plain_python(spec: CellSpec, directory: Path, dtype=np.float64) -> dict[str, np.ndarray]:
    """Generate, import with numba's JIT off (the same code, run by Python: fast to start) and run once."""
    module = import_without_jit(write_source(generate_source(spec), directory, spec.name))
    x, params, state, dy, dstate = random_problem(module, (3, 2, 3, 4), dtype, seed=5)
    params = dict(zip(module.PARAMS, params.values(), strict=True))
    y, final, tape = module.forward(x, params, state)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    return {
        "y": y,
        "dx": dx,
        **{f"d{k}": v for k, v in enumerate(grads.values())},
        **{f"final{k}": v for k, v in enumerate(final)},
        **{f"dstate0_{k}": v for k, v in enumerate(dstate0)},
    }


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    directory = tmp_path_factory.mktemp("original")
    return {spec.name: _run_plain_python(spec, directory) for spec in CELLS}


_counter = itertools.count()


@pytest.mark.parametrize("cell", CELLS, ids=lambda s: s.name)
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_names_drawn_from_the_generators_own_identifiers_change_nothing(cell, data, originals, tmp_path):
    names = _names_of(cell)
    drawn = data.draw(st.lists(st.sampled_from(POOL), min_size=len(names), max_size=len(names), unique=True))
    renamed = _renamed(cell, dict(zip(names, drawn, strict=True)))
    directory = tmp_path / f"case{next(_counter)}"
    directory.mkdir()
    got = _run_plain_python(renamed, directory)
    for key, value in originals[cell.name].items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=f"{key} with names {drawn}")


@pytest.mark.parametrize(
    "names",
    [
        # The collisions of the bug report, each once against the compiled original.
        {"i": "i", "f": "f", "g": "i_d", "o": "o", "h": "h", "c": "c"},
        {"i": "early", "f": "gate", "g": "o_gate", "o": "o", "h": "grad_c", "c": "grad_h"},
        {"i": "i_rec", "f": "i_fb", "g": "o_d_gate", "o": "o", "h": "hout", "c": "h"},
    ],
)
def test_the_reported_collisions_compute_the_cell(names, originals, tmp_path):
    got = _run_plain_python(_renamed(LSTM, names), tmp_path)
    for key, value in originals["lstm"].items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_any_output_state_name_works(originals, tmp_path):
    """The recurrent product reads the output state, whatever it is called (it used to read h_seq)."""
    rnn = CellSpec("one_state", "", "", (Gate("g", "tanh"),), ("s",), (("s", "g"),))
    module_dir = tmp_path / "a"
    module_dir.mkdir()
    got = _run_plain_python(rnn, module_dir)
    reference = _run_plain_python(replace(rnn, name="one_state_h", state=("h",), equations=(("h", "g"),)), tmp_path)
    for key, value in reference.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_a_gate_named_early_with_a_recurrent_source_keeps_its_own_block(tmp_path, originals):
    """GRU as published, its candidate gate renamed 'early' (the kernel's R_early used to be overwritten)."""
    new = {"r": "r", "z": "z", "n": "early", "h": "h"}
    got = _run_plain_python(_renamed(GRU_V3, new), tmp_path)
    for key, value in originals["gru_v3"].items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_namespace_check_refuses_an_identifier_built_by_hand():
    source = generate_source(LSTM)
    owners = {"i", "f", "g", "o", "h", "c"}
    check_namespace(source.replace("h__seq", "h__seq"), owners | _all_owners(source))
    with pytest.raises(ValueError, match="is not <known owner>__<role>"):
        check_namespace(source.replace("c__seq", "c__sequence"), _all_owners(source))
    with pytest.raises(ValueError, match="binds 'h__grad_buf' twice"):
        check_namespace(
            source.replace(
                "h__grad_buf = _copy_of(final[0])",
                "h__grad_buf = _copy_of(final[0])\n    h__grad_buf = _copy_of(final[1])",
                1,
            ),
            _all_owners(source),
        )


def _all_owners(source: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"\b([A-Za-z][A-Za-z0-9_]*?)__[a-z]", source)}
