"""Cell specs that users declare in TOML files.

    name = "lstm_hard"
    description = "LSTM with hard-sigmoid gates"
    paper = "..."                       # optional
    state = ["h", "c"]                  # the hidden output first
    unit_params = []                    # optional: per-unit vectors such as peepholes
    feedback = []                       # optional: gates fed back through Q
    feedback_into = []                  # optional: the gates they feed (default: the feedback gates)
    inputs = []                         # optional: per-step (T, B, H) inputs such as zoneout masks
    gate_params = []                    # optional: (G*H,) vectors, block k read as <name>_<gate k>
    input_bias = true                   # optional: false when the equations place b_<gate> themselves
    projection = false                  # optional: true for h = (its equation) W_p, W_p (H, P)
    heads = 4                           # optional: a block-diagonal R of 4 heads (default: dense)
    block_gates = []                    # optional: gates a memory block of block_size cells shares
    [init]                              # optional: parameters init_params fills with a constant
    gamma = 1.0

    [[gates]]                           # one table per gate, in column order
    name = "i"
    activation = "hard_sigmoid"
    preactivation = "xW_i + hR_i"       # optional (this is the default)
    recurrent_source = "h_prev"         # optional (this is the default)

    [equations]                         # in order; every state gets one
    c = "f*c_prev + i*g"
    h = "o*tanh(c)"

Every mistake is one :class:`~lstmgen.spec.SpecError` line that starts with the file and names the field.
The equations are parsed against the vocabulary only (see :mod:`lstmgen.symbolic.equation_parser`); nothing is
evaluated.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.symbolic.forward_equations import build_forward_equations

_TOP_LEVEL = {
    "name": True,
    "description": False,
    "paper": False,
    "state": True,
    "gates": True,
    "equations": True,
    "unit_params": False,
    "feedback": False,
    "feedback_into": False,
    "inputs": False,
    "gate_params": False,
    "input_bias": False,
    "projection": False,
    "init": False,
    "heads": False,
    "block_gates": False,
}
_GATE_FIELDS = {"name": True, "activation": True, "preactivation": False, "recurrent_source": False}
MAX_SPEC_BYTES = 100_000


def load_spec_file(path: str | os.PathLike[str]) -> CellSpec:
    """Read, check and return the cell spec in a TOML file.

    The equations are parsed and ordered here, so a spec that loads is a spec that generates.

    Raises:
        SpecError: ``"<file>: <field>: <what was expected>"``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc.strerror or exc})") from None
    try:
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"file larger than {MAX_SPEC_BYTES} bytes")
        try:
            table = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SpecError(f"not valid TOML: {exc}") from None
        spec = spec_from_table(table)
        build_forward_equations(spec)  # parse every equation now, with the file named in the error
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    return spec


def spec_from_table(table: dict[str, object]) -> CellSpec:
    """Build a :class:`CellSpec` from parsed TOML, checking field names and types."""
    _check_fields(table, _TOP_LEVEL, "")
    gates = table["gates"]
    if not isinstance(gates, list) or not all(isinstance(g, dict) for g in gates):
        raise SpecError("gates: expected an array of tables ([[gates]] with name and activation)")
    parsed_gates = []
    for k, gate in enumerate(gates):
        _check_fields(gate, _GATE_FIELDS, f"gates[{k}].")
        parsed_gates.append(Gate(**{key: _string(gate[key], f"gates[{k}].{key}") for key in gate}))
    equations = table["equations"]
    if not isinstance(equations, dict):
        raise SpecError('equations: expected a table of name = "expression"')
    return CellSpec(
        name=_string(table["name"], "name"),
        description=_string(table.get("description", ""), "description"),
        paper=_string(table.get("paper", ""), "paper"),
        gates=tuple(parsed_gates),
        state=_strings(table["state"], "state"),
        equations=tuple((lhs, _string(rhs, f"equations.{lhs}")) for lhs, rhs in equations.items()),
        unit_params=_strings(table.get("unit_params", []), "unit_params"),
        feedback=_strings(table.get("feedback", []), "feedback"),
        feedback_into=_strings(table.get("feedback_into", []), "feedback_into"),
        inputs=_strings(table.get("inputs", []), "inputs"),
        gate_params=_strings(table.get("gate_params", []), "gate_params"),
        input_bias=table.get("input_bias", True),
        projection=table.get("projection", False),
        init=_init(table.get("init", {})),
        heads=_heads(table.get("heads")),
        block_gates=_strings(table.get("block_gates", []), "block_gates"),
    )


def _check_fields(table: dict[str, object], fields: dict[str, bool], prefix: str) -> None:
    for key in table:
        if key not in fields:
            raise SpecError(f"{prefix}{key}: unknown field (expected one of: {', '.join(fields)})")
    for key, required in fields.items():
        if required and key not in table:
            raise SpecError(f"{prefix}{key}: missing field")


def _init(value: object) -> tuple[tuple[str, object], ...]:
    if not isinstance(value, dict):
        raise SpecError("init: expected a table of parameter = number")
    return tuple(value.items())


def _heads(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise SpecError(f"heads: expected an integer, got {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: expected an array of strings")
    return tuple(value)
