"""The generated kernels as torch.library operators: opcheck, torch.compile(fullgraph=True) and torch.export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import STRUCTURE_SIZES

from lstmgen.torch_adapter import TorchRecurrent
from lstmgen.torch_ops import backward_op, cell_name, forward_op
from lstmgen.variants import VARIANTS

SIZES = STRUCTURE_SIZES
#: Each structure once (heads, memory blocks, per-step inputs, projection, per-row values on the tape) also runs
#: opcheck's AOT dispatch with dynamic shapes (what torch.compile does with the operator; up to 6 s a cell here,
#: 55 s for all); every built-in runs the schema, fake-implementation and autograd-registration checks.
AOT_CHECKED = ("slstm", "lstm_1997", "zoneout_lstm", "lstmp", "layernorm_lstm")
QUICK_CHECKS = ("test_schema", "test_faketensor", "test_autograd_registration")


def _forward_args(cell, name, dtype=torch.float64):
    T, B, H = 3, 2, 4
    rng = np.random.default_rng(0)
    n_in = H if cell.INPUT_ROW else 2
    params = cell.init_params(n_in, H, dtype=np.float64, seed=1, **SIZES.get(name, {}))
    widths = [3 if name == "lstmp" and k == 0 else H for k in range(len(cell.STATE))]
    return (
        cell_name(cell),
        torch.tensor(rng.standard_normal((T, B, n_in)), dtype=dtype, requires_grad=True),
        [torch.tensor(params[n], dtype=dtype, requires_grad=True) for n in cell.PARAMS],
        # Positive states: the sLSTM's normaliser n is.
        [torch.tensor(0.5 + rng.random((B, w)), dtype=dtype, requires_grad=True) for w in widths],
        [torch.tensor(rng.uniform(0, 1, (T, B, H)), dtype=dtype) for _ in cell.INPUTS],
        torch.tensor([3, 1]),
        True,
    )


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_opcheck_passes(generated_module, name):
    cell = generated_module(name)
    checks = (*QUICK_CHECKS, "test_aot_dispatch_dynamic") if name in AOT_CHECKED else QUICK_CHECKS
    assert torch.library.opcheck(forward_op, _forward_args(cell, name), test_utils=checks) == dict.fromkeys(
        checks, "SUCCESS"
    )


def test_opcheck_of_the_backward_operator(generated_module):
    cell = generated_module("lstm_peephole")
    args = _forward_args(cell, "lstm_peephole")
    name, x, params, _, inputs, lengths, reverse = args
    outputs = forward_op(*args)
    tape = [t.detach() for t in outputs[1 + len(cell.STATE) :]]
    dy, dstate = torch.randn_like(outputs[0]), [torch.randn_like(s) for s in outputs[1 : 1 + len(cell.STATE)]]
    detached = [p.detach() for p in params]
    torch.library.opcheck(backward_op, (name, x.detach(), detached, inputs, lengths, reverse, tape, dy, dstate))


class _Model(torch.nn.Module):
    """The issue's small model: one TorchRecurrent (two layers, both directions) and a linear head."""

    def __init__(self, cell) -> None:
        super().__init__()
        self.rnn = TorchRecurrent(cell, 3, 8, num_layers=2, bidirectional=True, dtype=torch.float64, seed=0)
        self.head = torch.nn.Linear(16, 1, dtype=torch.float64)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, (h_n, _) = self.rnn(x, lengths=lengths)
        return self.head(out[-1]) + h_n.sum()


def _inputs():
    torch.manual_seed(0)
    return torch.randn(5, 4, 3, dtype=torch.float64), torch.tensor([5, 3, 1, 2])


def test_a_model_compiles_with_fullgraph_and_gives_the_eager_results(generated_module):
    """torch.compile(fullgraph=True) traces TorchRecurrent without a graph break (the operators are opaque, their
    fake implementations give the shapes) and gives the eager outputs and gradients. The aot_eager backend: the
    same tracing as inductor without its C++ compilation (see docs/torch.md for inductor's compile times)."""
    torch.manual_seed(0)
    model = _Model(generated_module("lstm_peephole"))
    x, lengths = _inputs()
    eager = model(x, lengths)
    eager.sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x, lengths)
    out.sum().backward()
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


def test_export_keeps_each_layer_and_direction_as_one_node(generated_module):
    model = _Model(generated_module("lstm_peephole"))
    x, lengths = _inputs()
    program = torch.export.export(model, (x, lengths))
    nodes = [n for n in program.graph.nodes if n.op == "call_function"]
    assert sum(n.target == torch.ops.lstmgen.forward.default for n in nodes) == 4  # 2 layers x 2 directions
    torch.testing.assert_close(program.module()(x, lengths), model(x, lengths), rtol=0, atol=0)


def test_an_unknown_cell_name_is_refused():
    x = torch.zeros(2, 1, 2)
    with pytest.raises(ValueError, match="no generated module is registered as 'mine:full:cpu:0' and it names no"):
        forward_op("mine:full:cpu:0", x, [], [], [], None, False)


def test_a_built_in_is_found_by_its_name_alone(generated_module):
    """An exported program names its cells; in a fresh process a built-in's name loads its module."""
    from lstmgen.torch_ops import _CELLS, _cell

    name = cell_name(generated_module("gru"))
    module = _CELLS.pop(name)
    try:
        assert _cell(name).FINGERPRINT == module.FINGERPRINT
    finally:
        _CELLS[name] = module
