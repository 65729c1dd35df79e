"""The generated kernels as PyTorch operators: ``lstmgen::forward`` and ``lstmgen::backward`` (torch.library custom
operators), with fake implementations that give the output shapes and the backward registered as the forward's
derivative. torch.compile (``fullgraph=True``) and torch.export keep one layer's whole sequence as one node.

>>> y, final = recurrent(cell, x, [W, R, b], lengths=lengths)   # differentiable; CPU or CUDA tensors

The operators know a cell by a string (:func:`cell_name`): its variant, gradient mode, target and spec
fingerprint. A name made elsewhere (an exported program loaded in another process) is found again when it names
a built-in; a user's cell is registered by calling :func:`cell_name` on its module first.
"""

import contextlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch

from lstmgen.spec import CellSpec

_CELLS: dict[str, ModuleType] = {}


def cell_name(cell: ModuleType) -> str:
    """The name the operators know ``cell`` (a generated module) by, registering it."""
    name = f"{cell.VARIANT}:{cell.GRADIENT}:{getattr(cell, 'TARGET', 'cpu')}:{cell.FINGERPRINT}"
    _CELLS.setdefault(name, cell)
    return name


def _cell(name: str) -> ModuleType:
    if name not in _CELLS:
        from lstmgen.loader import builtin_spec, load

        variant, gradient, target, fingerprint = [*name.split(":"), "", "", ""][:4]
        builtin = builtin_spec(variant, fingerprint)
        if builtin is None:
            raise ValueError(
                f"cell: no generated module is registered as {name!r} and it names no built-in: call "
                "lstmgen.torch_ops.cell_name(module) with the cell's module first"
            )

        _CELLS[name] = load(builtin, gradient, target=target)
    return _CELLS[name]


def module_on(cell: ModuleType, target: str, spec: CellSpec | None = None) -> ModuleType:
    """``cell``'s module for ``target`` ("cpu" or "cuda"): ``cell`` itself, or the module of its spec and gradient
    mode generated for the other target (``spec``, else the built-in ``cell`` was generated from)."""
    if getattr(cell, "TARGET", "cpu") == target:
        return cell
    from lstmgen.loader import builtin_spec_of

    if spec is None:
        spec = builtin_spec_of(cell, f"its {target} module (TorchRecurrent on {target} tensors)")
    from lstmgen.loader import load

    return load(spec, cell.GRADIENT, target=target)


class _Device:
    """How one call hands tensors of one device to a generated module and takes its results back."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def array(self, t: torch.Tensor, name: str) -> Any:
        """A view the module reads: a numpy array, or the CUDA tensor itself (the module reads it through
        ``__cuda_array_interface__``, which a tensor that requires grad refuses, hence detach)."""
        if t.device != self.device:
            raise ValueError(f"{name}: expected a tensor on {self.device} (the device of x), got {t.device}")
        return t.detach().contiguous() if self.cuda else t.detach().numpy()

    def arrays(self, tensors: Sequence[torch.Tensor], names: Sequence[str], what: str) -> dict[str, Any]:
        return {name: self.array(t, f"{what}[{name!r}]") for name, t in zip(names, tensors, strict=True)}

    def tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device) if self.cuda else torch.from_numpy(a)

    def context(self, cell: ModuleType) -> contextlib.AbstractContextManager:
        """On the GPU: numba on x's device, the module's launches on torch's current stream and its arrays from
        torch's caching allocator (so that torch orders and frees them like its own)."""
        if not self.cuda:
            return contextlib.nullcontext()
        from numba import cuda

        dtypes = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

        def empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtypes.get(dtype, torch.int64), device=self.device)

        stack = contextlib.ExitStack()
        index = torch.cuda.current_device() if self.device.index is None else self.device.index
        stack.enter_context(cuda.gpus[index])  # first: numba's stream below belongs to the current context
        stream = cuda.external_stream(torch.cuda.current_stream(self.device).cuda_stream)
        stack.enter_context(cell.on_stream(stream, empty))
        return stack


def _lengths(lengths: torch.Tensor | None) -> np.ndarray | None:
    return None if lengths is None else lengths.detach().cpu().numpy()


@torch.library.custom_op("lstmgen::forward", mutates_args=())
def forward_op(
    cell: str,
    x: torch.Tensor,
    params: list[torch.Tensor],
    state: list[torch.Tensor],
    inputs: list[torch.Tensor],
    lengths: torch.Tensor | None,
    reverse: bool,
) -> list[torch.Tensor]:
    """One layer and direction: ``[y, *final_state, *tape_arrays]`` (the module's ``forward``, its tape as the
    arrays of ``tape_arrays``). ``params``, ``state`` and ``inputs`` in PARAMS, STATE and INPUTS order; ``state``
    empty for zeros; ``lengths`` a (B,) integer tensor or None."""
    module, on = _cell(cell), _Device(x.device)
    with on.context(module):
        y, final, tape = module.forward(
            on.array(x, "x"),
            on.arrays(params, module.PARAMS, "params"),
            tuple(on.array(s, "state") for s in state) or None,
            inputs=on.arrays(inputs, module.INPUTS, "inputs") or None,
            lengths=_lengths(lengths),
            reverse=reverse,
        )
    return [on.tensor(a) for a in (y, *final, *module.tape_arrays(tape))]


@forward_op.register_fake
def _forward_shapes(cell, x, params, state, inputs, lengths, reverse):
    module = _cell(cell)
    y, final, tape = module.forward_shapes(x.shape, dict(zip(module.PARAMS, params, strict=True)))
    return [x.new_empty(shape) for shape in (y, *final, *tape)]


@torch.library.custom_op("lstmgen::backward", mutates_args=())
def backward_op(
    cell: str,
    x: torch.Tensor,
    params: list[torch.Tensor],
    inputs: list[torch.Tensor],
    lengths: torch.Tensor | None,
    reverse: bool,
    tape: list[torch.Tensor],
    dy: torch.Tensor,
    dstate: list[torch.Tensor],
) -> list[torch.Tensor]:
    """``[dx, *dparams (PARAMS order), *dstate0 (STATE order)]`` of the module's ``backward``, its tape made again
    (``tape_from``) from forward's arguments and the ``tape`` arrays forward returned."""
    module, on = _cell(cell), _Device(x.device)
    with on.context(module):
        rebuilt = module.tape_from(
            [on.array(a, "tape") for a in tape],
            on.array(x, "x"),
            on.arrays(params, module.PARAMS, "params"),
            inputs=on.arrays(inputs, module.INPUTS, "inputs") or None,
            lengths=_lengths(lengths),
            reverse=reverse,
        )
        dx, grads, dstate0 = module.backward(on.array(dy, "dy"), rebuilt, tuple(on.array(d, "dstate") for d in dstate))
    return [on.tensor(a) for a in (dx, *(grads[n] for n in module.PARAMS), *dstate0)]


@backward_op.register_fake
def _backward_shapes(cell, x, params, inputs, lengths, reverse, tape, dy, dstate):
    module = _cell(cell)
    _, final, _ = module.forward_shapes(x.shape, dict(zip(module.PARAMS, params, strict=True)))
    return [torch.empty_like(x), *(torch.empty_like(p) for p in params), *(x.new_empty(s) for s in final)]


def _setup_context(ctx: Any, inputs: tuple, output: list[torch.Tensor]) -> None:
    cell, x, params, state, step_inputs, lengths, reverse = inputs
    module = _cell(cell)
    n_out = 1 + len(module.STATE)
    ctx.cell, ctx.reverse, ctx.has_lengths = cell, reverse, lengths is not None
    ctx.counts = len(params), len(step_inputs), len(state)
    # The state is saved only so that torch's version counter refuses a backward after it was changed in place,
    # as for torch.nn.LSTM; the tape keeps its own copy.
    saved = (x, *params, *step_inputs, *([lengths] if lengths is not None else []), *output[n_out:], *state)
    ctx.save_for_backward(*saved)


def _derivative(ctx: Any, grads: list[torch.Tensor | None]) -> tuple:
    # torch runs a backward with grad mode on only under create_graph=True (a double backward, a gradient
    # penalty): the kernels' backward is not itself differentiable, so refuse rather than return gradients that
    # silently miss the second-order term.
    module = _cell(ctx.cell)
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{module.VARIANT}: create_graph=True (double backward) is not supported: the generated kernels' "
            "backward is not differentiable"
        )
    n_params, n_inputs, n_state = ctx.counts
    saved = list(ctx.saved_tensors)
    x, params = saved[0], saved[1 : 1 + n_params]
    step_inputs = saved[1 + n_params : 1 + n_params + n_inputs]
    rest = saved[1 + n_params + n_inputs :]
    lengths = rest.pop(0) if ctx.has_lengths else None
    tape = rest[: len(rest) - n_state]
    y_shape, final_shapes, _ = module.forward_shapes(x.shape, dict(zip(module.PARAMS, params, strict=True)))
    shapes = (y_shape, *final_shapes)
    dy, *dfinal = (g if g is not None else x.new_zeros(s) for g, s in zip(grads, shapes, strict=False))
    result = backward_op(ctx.cell, x, params, step_inputs, lengths, ctx.reverse, tape, dy, dfinal)
    dx, dparams, dstate0 = result[0], result[1 : 1 + n_params], result[1 + n_params :]
    return None, dx, list(dparams), list(dstate0) if n_state else [], [None] * n_inputs, None, None


torch.library.register_autograd("lstmgen::forward", _derivative, setup_context=_setup_context)


def recurrent(
    cell: ModuleType,
    x: torch.Tensor,
    params: Sequence[torch.Tensor],
    state: Sequence[torch.Tensor] | None = None,
    *,
    inputs: Sequence[torch.Tensor] | None = None,
    lengths: torch.Tensor | np.ndarray | None = None,
    reverse: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One layer and direction of ``cell`` (a generated module of the tensors' device) as a differentiable torch
    function: ``(y, final_state)``, y (T, B, P) and the final state in STATE order.

    ``params`` in PARAMS order; ``state`` the initial state in STATE order (zeros when None); ``inputs`` the
    per-step inputs in INPUTS order (they get no gradient); ``lengths`` (B,) integers.
    """
    if isinstance(lengths, np.ndarray):
        lengths = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64))
    outputs = forward_op(
        cell_name(cell), x, list(params), list(state or ()), list(inputs or ()), lengths, bool(reverse)
    )
    return outputs[0], tuple(outputs[1 : 1 + len(cell.STATE)])
