"""Specs and equation text: every mistake is a one-line SpecError naming the field; nothing is evaluated."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.symbolic.forward_equations import build_forward_equations
from lstmgen.variants import LSTM


def cell(**changes):
    return replace(LSTM, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "my-cell"}, "name: 'my-cell' is not a valid name"),
        ({"name": "import"}, "name: 'import' is reserved"),
        ({"name": "_private"}, "name: '_private' is not a valid name"),
        ({"gates": ()}, "gates: expected at least one gate"),
        ({"gates": (Gate("i", "softmax"),)}, "gates[0].activation: unknown activation 'softmax'"),
        ({"gates": (Gate("i", "sigmoid"), Gate("i", "tanh"))}, "gates[1].name: 'i' is already defined"),
        ({"gates": (Gate("d_x", "sigmoid"),)}, "gates[0].name: 'd_x' uses a reserved prefix"),
        ({"state": ("h", "c", "m")}, "equations: state 'm' is never updated"),
        ({"equations": (("c", "c_prev"), ("c", "c_prev"), ("h", "c"))}, "state 'c' is updated twice"),
        ({"unit_params": ("x",)}, "unit_params[0]: 'x' is reserved"),
        ({"inputs": ("d_c",)}, "inputs[0]: 'd_c' uses a reserved prefix"),
        ({"inputs": ("c",)}, "inputs[0]: 'c' is already defined by state[1]"),
        ({"inputs": ("mask", "mask")}, "inputs[1]: 'mask' is already defined by inputs[0]"),
        ({"heads": 0}, "heads: expected a positive integer (the default number of heads), got 0"),
        ({"heads": True}, "heads: expected a positive integer"),
        ({"heads": 2, "feedback": ("i",)}, "heads: not supported together with feedback"),
        (
            {"heads": 2, "gates": (Gate("i", "sigmoid", "xW_i"),), "equations": (("c", "c_prev"), ("h", "i"))},
            "heads: a block-diagonal R needs a gate whose pre-activation reads hR_k",
        ),
    ],
)
def test_bad_spec_fields(changes, message):
    with pytest.raises(SpecError) as exc:
        cell(**changes)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("equation", "message"),
    [
        ("f*c_prev + i*q", "unknown name 'q'"),
        ("__import__('os').system('true')", "unknown function"),
        ("c_prev.real", "'c_prev.real' is not allowed"),
        ("f*c_prev + i*g[0]", "is not allowed"),
        ("c_prev**2", "operator Pow is not allowed"),
        ("'text'", "unexpected constant 'text'"),
        ("True * c_prev", "unexpected constant True"),
        ("tanh(c_prev, c_prev)", "tanh takes exactly one argument"),
        ("sigmoid(x=c_prev)", "sigmoid takes exactly one argument"),
        ("(lambda: 0)()", "unknown function"),
        ("f*c_prev +", "cannot parse"),
        ("c", "c is defined in terms of itself (use c_prev"),
    ],
)
def test_bad_equation_text(equation, message):
    spec = cell(equations=(("c", equation), ("h", "o*tanh(c)")))
    with pytest.raises(SpecError) as exc:
        build_forward_equations(spec)
    assert message in str(exc.value)
    assert str(exc.value).startswith("equations[0] (c):") or "equations (c)" in str(exc.value)


def test_circular_intermediates():
    spec = cell(equations=(("u", "v + 1"), ("v", "u + 1"), ("c", "u*c_prev"), ("h", "o*tanh(c)")))
    with pytest.raises(SpecError, match="circular definitions among u, v"):
        build_forward_equations(spec)


def test_equations_are_ordered_by_dependency():
    """The output gate peeping at the new state is computed after it, whatever the declaration order."""
    spec = CellSpec(
        name="late",
        description="",
        paper="",
        state=("h", "c"),
        gates=(Gate("o", "sigmoid", "xW_o + hR_o + p*c"), Gate("g", "tanh")),
        equations=(("h", "o*tanh(c)"), ("c", "c_prev + g")),
        unit_params=("p",),
    )
    order = [str(a.lhs) for a in build_forward_equations(spec).equations]
    assert order.index("c") < order.index("a_o") < order.index("o") < order.index("h")


def test_nested_activations_are_hoisted_once():
    spec = cell(equations=(("c", "f*c_prev + i*g"), ("h", "o*tanh(c) + tanh(c)")))
    eqs = build_forward_equations(spec).equations
    hoisted = [str(a) for a in eqs if a.role == "hoisted"]
    assert hoisted == ["tanh_c = tanh(c)"]


def test_long_or_deep_equations_are_refused_or_parsed_never_crash():
    for text in ["+".join(["g"] * 999), "(" * 300 + "g" + ")" * 300, "-" * 1999 + "g", "g+" * 1100 + "g"]:
        spec = cell(equations=(("c", text), ("h", "o*tanh(c)")))
        try:
            build_forward_equations(spec)
        except SpecError as exc:
            assert str(exc).startswith("equations[0] (c):")


@pytest.mark.parametrize(
    ("equation", "message"),
    [
        ("f*c_prev + 1e999*g", "equations[0] (c): constant 1e999 is not finite"),
        ("f*c_prev + i*g/0", "equations[0] (c): 'f*c_prev + i*g/0' divides by zero"),
        ("f*c_prev + (i - i)/(g - g)", "divides by zero"),
        ("f*c_prev + 9223372036854775808*g", "integer constant 9223372036854775808 is too large"),
        ("f*c_prev + g*1180591620717411303424", "integer constant 1180591620717411303424 is too large"),
        ("f*c_prev + 1e39*g", "constant 1e+39 is outside the float32 range"),
        ("f*c_prev + 1e20*1e20*g", "constant 1e+40 is outside the float32 range"),
        ("ｇ*i + f*c_prev", "non-ASCII character 'ｇ' (U+FF47) at position 0"),
        ("f*c_prev + i*\U0001d420", "non-ASCII character '\U0001d420' (U+1D420) at position 13"),
    ],
)
def test_constants_and_characters_the_kernels_cannot_hold_are_refused(equation, message):
    with pytest.raises(SpecError) as exc:
        build_forward_equations(cell(equations=(("c", equation), ("h", "o*tanh(c)"))))
    assert message in str(exc.value)


def test_constants_within_range_are_kept_exactly():
    spec = cell(equations=(("c", "f*c_prev + 9223372036854775807*i*g/9223372036854775807"), ("h", "o*tanh(c)")))
    build_forward_equations(spec)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "n" * 300}, "name: name of 300 characters (expected at most 64)"),
        ({"gates": (Gate("g" * 1500, "tanh"),)}, "gates[0].name: name of 1500 characters (expected at most 64)"),
        ({"gates": (Gate("ｇ", "tanh"),)}, "gates[0].name: 'ｇ' is not a valid name"),
    ],
)
def test_names_too_long_or_not_ascii_blame_the_name(changes, message):
    with pytest.raises(SpecError) as exc:
        cell(**changes)
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize("name", ["hidden", "gate_seq", "grad_h", "real", "t", "nb", "numba", "tape", "i_d"])
def test_the_generators_own_identifiers_are_valid_spec_names(name):
    """Only the vocabulary is reserved: generated code keeps spec names in their own namespace."""
    cell(gates=(Gate(name, "sigmoid"), *LSTM.gates[1:]), equations=(("c", f"f*c_prev + {name}*g"), ("h", "o*tanh(c)")))


def test_a_gate_field_of_the_wrong_type_is_named():
    gates = (Gate("i", "sigmoid", 5), *LSTM.gates[1:])
    with pytest.raises(SpecError, match=r"^gates\[0\]\.preactivation: expected a string, got int 5$"):
        replace(LSTM, name="other", gates=gates)


@pytest.mark.parametrize("text", ["xW_i+hR_i", "hR_i + xW_i", "(xW_i + hR_i)"])
def test_a_block_gate_default_preactivation_is_compared_as_an_expression(text):
    from lstmgen.variants import LSTM_1997

    gates = tuple(Gate(g.name, g.activation, text if g.name == "i" else g.preactivation) for g in LSTM_1997.gates)
    assert replace(LSTM_1997, name="other", gates=gates).block_gates == ("i", "o")
    other = tuple(Gate(g.name, g.activation, "xW_i + 2*hR_i" if g.name == "i" else "") for g in LSTM_1997.gates)
    refusal = r"block_gates\[0\] \(i\): a gate a memory block shares needs the pre-activation 'xW_i \+ hR_i'"
    with pytest.raises(SpecError, match=refusal):
        replace(LSTM_1997, name="other", gates=other)
