"""Gate blocks of the converters' arrays: one helper for every layout (torch, ONNX, Keras, the generated cells).

Every framework stores a cell's gates as equal blocks along one axis, each in its own gate order (given here
in the generated cells' gate names). The cells' own order is their spec's (``GATES`` of the module).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lstmgen.variants import VARIANTS


def cell_gates(variant: str) -> tuple[str, ...]:
    """The gate order of a built-in cell: its spec's (the column blocks of its W, R and b)."""
    return tuple(g.name for g in VARIANTS[variant].gates)


def gate_block(array: np.ndarray, order: Sequence[str], gate: str, axis: int = -1) -> np.ndarray:
    """The block of ``gate`` in ``array``, whose ``axis`` holds ``len(order)`` equal blocks in ``order``."""
    if array.shape[axis] % len(order):
        raise ValueError(
            f"expected {len(order)} equal gate blocks ({', '.join(order)}) along an axis of size {array.shape[axis]}"
        )
    width = array.shape[axis] // len(order)
    k = list(order).index(gate)
    index = [slice(None)] * array.ndim
    index[axis] = slice(k * width, (k + 1) * width)
    return array[tuple(index)]


def reorder_gates(array: np.ndarray, source: Sequence[str], target: Sequence[str], axis: int = -1) -> np.ndarray:
    """``array``'s gate blocks, laid out in ``source`` order along ``axis``, rearranged into ``target`` order."""
    return np.concatenate([gate_block(array, source, gate, axis) for gate in target], axis=axis)
