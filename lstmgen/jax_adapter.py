"""A generated cell as a JAX function: ``jax.custom_vjp`` whose forward and backward call the generated kernels
through ``jax.pure_callback`` (shapes and dtypes declared), so that ``jax.jit`` and ``jax.grad`` work.

>>> f = jax_recurrent("lstm")                  # or a generated module, a CellSpec, a TOML path
>>> y, final = f(x, params)                    # x (T, B, I); params a dict keyed by PARAMS; y (T, B, H)
>>> grads = jax.grad(lambda p: f(x, p)[0].sum())(params)

The kernels run on the host (numba, CPU): a callback hands them the arrays and takes their results back. float64
needs ``jax.config.update("jax_enable_x64", True)``, as everything float64 in JAX does. Needs ``pip install
"lstmgen[jax]"``; lstmgen itself does not import jax.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstmgen.spec import CellSpec


def _host(a: Any) -> np.ndarray:
    return np.asarray(a)


def jax_recurrent(
    cell: ModuleType | CellSpec | str | os.PathLike[str], gradient: str = "full", *, reverse: bool = False
) -> Callable[..., tuple[jax.Array, tuple[jax.Array, ...]]]:
    """``f(x, params, state=None, *, lengths=None, inputs=None) -> (y, final_state)`` over ``cell``'s generated
    kernels, differentiable with respect to x, params and state.

    Args:
        cell: a generated module (CPU target), or anything :func:`lstmgen.load` accepts (loaded in ``gradient``
            mode).
        reverse: run each sequence from its last valid step to its first (y stays in input order).

    ``f``'s arguments: x (T, B, I) float32 or float64; params a dict keyed by the cell's PARAMS (its
    ``param_shapes``); state a tuple in STATE order of (B, H) arrays (zeros when None); lengths (B,) integers
    (every sequence T long when None); inputs the cell's per-step inputs, a dict keyed by INPUTS of (T, B, H)
    arrays (no gradient). Returns y (T, B, P) and the final state, a tuple in STATE order.
    """
    if not isinstance(cell, ModuleType):
        from lstmgen.loader import load

        cell = load(cell, gradient)
    if getattr(cell, "TARGET", "cpu") != "cpu":
        raise ValueError(f"cell: expected a module of the CPU target (JAX calls it on the host), got {cell.TARGET}")
    n_state = len(cell.STATE)

    def shapes(x: Any, params: dict[str, Any]) -> tuple:
        y, final, tape = cell.forward_shapes(x.shape, params)
        return tuple(jax.ShapeDtypeStruct(s, x.dtype) for s in (y, *final, *tape))

    def host_forward(x, params, state, lengths, inputs):
        y, final, tape = cell.forward(
            _host(x),
            {k: _host(v) for k, v in params.items()},
            tuple(_host(s) for s in state),
            inputs={k: _host(v) for k, v in inputs.items()} or None,
            lengths=None if lengths is None else _host(lengths),
            reverse=reverse,
        )
        return (y, *final, *cell.tape_arrays(tape))

    def host_backward(x, params, lengths, inputs, tape, dy, dfinal):
        rebuilt = cell.tape_from(
            [_host(a) for a in tape],
            _host(x),
            {k: _host(v) for k, v in params.items()},
            inputs={k: _host(v) for k, v in inputs.items()} or None,
            lengths=None if lengths is None else _host(lengths),
            reverse=reverse,
        )
        dx, grads, dstate0 = cell.backward(_host(dy), rebuilt, tuple(_host(d) for d in dfinal))
        return dx, grads, tuple(dstate0)

    def run(x, params, state, lengths, inputs):
        results = jax.pure_callback(host_forward, shapes(x, params), x, params, state, lengths, inputs)
        return results[0], tuple(results[1 : 1 + n_state]), results[1 + n_state :]

    @jax.custom_vjp
    def recurrent(x, params, state, lengths, inputs):
        y, final, _ = run(x, params, state, lengths, inputs)
        return y, final

    def recurrent_fwd(x, params, state, lengths, inputs):
        y, final, tape = run(x, params, state, lengths, inputs)
        return (y, final), (x, params, lengths, inputs, tape, [s.shape for s in final])

    def recurrent_bwd(residuals, cotangents):
        x, params, lengths, inputs, tape, _ = residuals
        dy, dfinal = cotangents
        result_shapes = (
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()},
            tuple(jax.ShapeDtypeStruct(d.shape, d.dtype) for d in dfinal),
        )
        dx, dparams, dstate0 = jax.pure_callback(
            host_backward, result_shapes, x, params, lengths, inputs, tape, dy, dfinal
        )
        return dx, dparams, dstate0, None, None

    recurrent.defvjp(recurrent_fwd, recurrent_bwd)

    def f(x, params, state=None, *, lengths=None, inputs=None):
        x = jnp.asarray(x)
        if x.ndim != 3:
            raise ValueError(f"x: expected a 3-D array (T, B, I), got shape {x.shape}")
        if not isinstance(params, dict) or set(params) != set(cell.PARAMS):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"params: expected a dict keyed by {cell.PARAMS}, got {got}")
        params = {k: jnp.asarray(params[k]) for k in cell.PARAMS}
        _, widths, _ = cell.forward_shapes(x.shape, params)
        if state is None:
            state = tuple(jnp.zeros(w, x.dtype) for w in widths)
        state = tuple(jnp.asarray(s) for s in state)
        if len(state) != n_state or any(s.shape != w for s, w in zip(state, widths, strict=True)):
            raise ValueError(f"state: expected {n_state} array(s) of shapes {widths} in {cell.STATE}")
        lengths = None if lengths is None else jnp.asarray(lengths)
        inputs = {k: jnp.asarray(v) for k, v in (inputs or {}).items()}
        return recurrent(x, params, state, lengths, inputs)

    return f
