"""The converters' one gate-block helper."""

import numpy as np
import pytest

from lstmgen.gate_blocks import cell_gates, gate_block, reorder_gates
from lstmgen.variants import VARIANTS


def test_reorder_moves_whole_blocks_and_round_trips():
    hidden = 3
    onnx, cell = ("i", "o", "f", "g"), cell_gates("lstm")
    a = np.arange(2 * 4 * hidden).reshape(2, 4 * hidden)  # the gate of column c is onnx[c // hidden]
    moved = reorder_gates(a, onnx, cell)
    for k, gate in enumerate(cell):
        assert np.array_equal(moved[:, k * hidden : (k + 1) * hidden], gate_block(a, onnx, gate))
    assert np.array_equal(reorder_gates(moved, cell, onnx), a)
    assert np.array_equal(reorder_gates(a.T, onnx, cell, axis=0), moved.T)


def test_cell_order_is_the_spec_order():
    for name, spec in VARIANTS.items():
        assert cell_gates(name) == tuple(g.name for g in spec.gates)


def test_blocks_that_do_not_divide_are_refused():
    with pytest.raises(ValueError, match="4 equal gate blocks"):
        gate_block(np.zeros((2, 10)), "ifgo", "f")
