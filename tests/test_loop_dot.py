"""The per-step product of the CPU kernels: a loop up to LOOP_DOT_LIMIT multiply-adds, np.dot above."""

from __future__ import annotations

import numpy as np
import pytest

from lstmgen.codegen.helper_sources import helper_decorator
from lstmgen.codegen.targets import CPU

# (rows, inner, columns): the 1997 network's two products, both sides of the loop's narrow/wide switch (4 columns),
# the limit, and sizes above it (the loop is still right).
SHAPES = [
    (1, 4, 12),
    (1, 8, 12),
    (4, 12, 1),
    (2, 8, 8),
    (1, 1, 1),
    (2, 3, 3),
    (2, 3, 4),
    (4, 16, 4),
    (3, 43, 1),
    (2, 8, 9),
    (3, 5, 20),
    (1, 16, 16),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True], ids=["b", "b.T"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_loop_dot_is_the_product(generated_module, shape, transposed, dtype):
    loop_dot = generated_module("lstm")._loop_dot
    rows, inner, columns = shape
    rng = np.random.default_rng(rows * 100 + inner * 10 + columns)
    a = rng.standard_normal((rows, inner)).astype(dtype)
    # The backward kernels pass b as a transposed view (F-contiguous); the forward ones a C-contiguous matrix.
    b = rng.standard_normal((columns, inner)).T if transposed else rng.standard_normal((inner, columns))
    b = b.astype(dtype, order="K")
    assert b.flags.c_contiguous != transposed or 1 in b.shape  # a vector is both
    out = np.full((rows, columns), np.nan, dtype=dtype)  # every element must be written
    loop_dot(a, b, out)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    eps = np.finfo(dtype).eps
    bound = 2 * inner * eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert np.all(np.abs(out - exact) <= bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("columns", [2, 6], ids=["narrow", "wide"])
def test_loop_dot_propagates_nan_and_infinity_in_its_loop(generated_module, dtype, columns):
    loop_dot = generated_module("lstm")._loop_dot
    a = np.array([[1.0, np.nan, 2.0], [1.0, 1.0, np.inf]], dtype=dtype)
    b = np.ones((3, columns), dtype=dtype)
    out = np.zeros((2, columns), dtype=dtype)
    loop_dot(a, b, out)
    assert np.all(np.isnan(out[0])) and np.all(out[1] == np.inf)


def test_only_the_loop_product_is_inlined_by_numba():
    """numba inlines it (LLVM does not inline a function of arrays); the scalar helpers keep the module's @_jit."""
    assert helper_decorator("_loop_dot", CPU).endswith('inline="always")')
    assert helper_decorator("_sigmoid", CPU) == "@_jit"
