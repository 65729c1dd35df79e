"""Train a generated cell inside PyTorch: a torch.autograd.Function whose forward and backward are the generated
kernels, and an nn.Module over it with torch.nn.LSTM's interface. CPU tensors run the cell's CPU module; CUDA
tensors run its CUDA module (``target="cuda"``) on torch's current stream, with torch's allocator and no copies.

>>> rnn = TorchRecurrent(generated.lstm_peephole, input_size=8, hidden_size=16, num_layers=2, bidirectional=True)
>>> out, (h_n, c_n) = rnn(x)                     # x (T, B, 8) -> out (T, B, 32); loss.backward() works

torch is needed only by this module; lstmgen itself does not import it.
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType
from typing import Any

import numpy as np
import torch

from lstmgen.generate import resolve_spec
from lstmgen.layers import (
    StackArguments,
    StackShape,
    check_input_names,
    run_layers,
    split_stacked_inputs,
    stacked_inputs_shape,
)
from lstmgen.spec import CellSpec
from lstmgen.variants import VARIANTS


def _to_numpy(t: torch.Tensor, name: str) -> np.ndarray:
    if t.device.type != "cpu":
        raise ValueError(f"{name}: expected a CPU tensor (the tensors of a call are on one device), got {t.device}")
    return t.detach().numpy()


class _Device:
    """How one call hands tensors of one device to a generated module and takes its results back."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def array(self, t: torch.Tensor, name: str) -> Any:
        """A view the module reads: a numpy array, or the CUDA tensor itself (the module reads it through
        ``__cuda_array_interface__``, which a tensor that requires grad refuses, hence detach)."""
        if not self.cuda:
            return _to_numpy(t, name)
        if t.device != self.device:
            raise ValueError(f"{name}: expected a tensor on {self.device} (the device of x), got {t.device}")
        return t.detach().contiguous()

    def tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device) if self.cuda else torch.from_numpy(a)

    def context(self, cell: ModuleType) -> contextlib.AbstractContextManager:
        """On the GPU: numba on x's device, the module's launches on torch's current stream and its arrays from
        torch's caching allocator (so that torch orders and frees them like its own)."""
        if not self.cuda:
            return contextlib.nullcontext()
        from numba import cuda

        stream = cuda.external_stream(torch.cuda.current_stream(self.device).cuda_stream)
        dtypes = {
            np.dtype(np.float32): torch.float32,
            np.dtype(np.float64): torch.float64,
            np.dtype(np.int64): torch.int64,
        }

        def empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtypes[dtype], device=self.device)

        stack = contextlib.ExitStack()
        index = torch.cuda.current_device() if self.device.index is None else self.device.index
        stack.enter_context(cuda.gpus[index])
        stack.enter_context(cell.on_stream(stream, empty))
        return stack


def module_on(cell: ModuleType, target: str, spec: CellSpec | None = None) -> ModuleType:
    """``cell``'s module for ``target`` ("cpu" or "cuda"): ``cell`` itself, or the module of its spec and gradient
    mode generated for the other target (``spec``, else the built-in ``cell`` was generated from)."""
    if getattr(cell, "TARGET", "cpu") == target:
        return cell
    if spec is None:
        builtin = VARIANTS.get(cell.VARIANT)
        if builtin is None or builtin.fingerprint() != getattr(cell, "FINGERPRINT", None):
            raise ValueError(
                f"cell: {cell.VARIANT}'s module runs on {getattr(cell, 'TARGET', 'cpu')}, and it is not a built-in's "
                f"module, so its {target} module cannot be generated from it: give TorchRecurrent the cell's spec "
                "(a CellSpec or its TOML path) instead of its module"
            )
        spec = builtin
    from lstmgen.loader import load

    return load(spec, cell.GRADIENT, target=target)


class GeneratedCellFunction(torch.autograd.Function):
    """One layer, one direction: ``apply(cell, lengths, reverse, inputs, x, *params_in_PARAMS_order, *state)``.

    ``inputs`` is the dict of the cell's per-step inputs (time-major (T, B, H) tensors, or numpy arrays) or
    None; they get no gradient. Returns the output (T, B, H) followed by the final state tensors in STATE order.

    The kernels' tape reads x, the parameters, the state and the inputs in place (numpy views of the tensors):
    all are saved for backward, so that torch's version counters refuse a backward after one of them was
    modified in place ("modified by an inplace operation"), as they do for torch.nn.LSTM.
    """

    @staticmethod
    def forward(
        ctx: Any,
        cell: ModuleType,
        lengths: np.ndarray | None,
        reverse: bool,
        inputs: dict[str, np.ndarray] | None,
        x: torch.Tensor,
        *rest: Any,
    ):
        n_params = len(cell.PARAMS)
        on = _Device(x.device)
        params = {name: on.array(t, f"params[{name!r}]") for name, t in zip(cell.PARAMS, rest, strict=False)}
        state = tuple(on.array(t, "state") for t in rest[n_params:]) or None
        inputs = inputs or {}
        masks = {k: on.array(v, f"inputs[{k!r}]") if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with on.context(cell):
            y, final, tape = cell.forward(
                on.array(x, "x"), params, state, inputs=masks or None, lengths=lengths, reverse=reverse
            )
        ctx.save_for_backward(x, *rest, *(v for v in inputs.values() if isinstance(v, torch.Tensor)))
        ctx.cell, ctx.tape, ctx.n_state, ctx.on = cell, tape, len(rest) - n_params, on
        return (on.tensor(y), *(on.tensor(f) for f in final))

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor, *dfinal: torch.Tensor):
        # torch runs backward with grad mode on only under create_graph=True (a double backward, a gradient
        # penalty): the kernels' backward is not itself differentiable, so refuse rather than return gradients
        # that silently miss the second-order term. (once_differentiable raises only when dy requires grad.)
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"{ctx.cell.VARIANT}: create_graph=True (double backward) is not supported: the generated "
                "kernels' backward is not differentiable"
            )
        ctx.saved_tensors  # noqa: B018 (unpacking checks that none was modified in place since forward)
        cell, on = ctx.cell, ctx.on
        dstate = tuple(on.array(d, "dstate") for d in dfinal)
        with on.context(cell):
            dx, grads, dstate0 = cell.backward(on.array(dy, "dy"), ctx.tape, dstate)
        dparams = tuple(on.tensor(grads[n]) for n in cell.PARAMS)
        dstate_grads = tuple(on.tensor(d) for d in dstate0) if ctx.n_state else ()
        return (None, None, None, None, on.tensor(dx), *dparams, *dstate_grads)


class TorchRecurrent(torch.nn.Module, StackArguments):
    """A stack of generated cells as an ``nn.Module``: torch.nn.LSTM's arguments and return values.

    On CUDA tensors (``.to("cuda")``) it runs the cell's CUDA module (needs ``pip install "lstmgen[cuda]"``),
    generated on first use; on CPU tensors its CPU module.

    Args:
        cell: a generated module (of either target; a built-in's, or give the spec), or anything
            :func:`lstmgen.load` accepts.
        input_size, hidden_size, num_layers, bidirectional, batch_first: as in torch.nn.LSTM.
        dtype: torch.float32 or torch.float64.
        seed: seed of the initialisation (the generated ``init_params``: uniform in ±1/sqrt(H)).
        heads: the number of heads of a cell with a block-diagonal R (its HEADS when None).
        proj_size: P of a cell with a projected output (``lstmp``; H when None), as torch.nn.LSTM's proj_size:
            then h and each direction's output have P units.
        block_size: S, the cells of a memory block of a cell with block gates (``lstm_1997``; 1 when None).

    Parameters are named ``<param>_l<layer>[_reverse]`` with the generated module's layouts (W (I, G*H), ...).
    ``forward(x, state=None, lengths=None, inputs=None)`` returns ``(output, final_state)``; ``final_state`` is a
    tuple in STATE order of (L*D, B, H) tensors, (L*D, B, P) for a projected h (for a one-state cell like the GRU,
    the tensor itself, as torch does). ``inputs``: the cell's per-step inputs (its INPUTS, such as zoneout masks),
    a dict of (L*D, T, B, H) tensors ((L*D, B, T, H) with batch_first), index ``layer * D + direction``; they get
    no gradient.
    """

    def __init__(
        self,
        cell: ModuleType | CellSpec | str | os.PathLike[str],
        input_size: int,
        hidden_size: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = False,
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
        heads: int | None = None,
        proj_size: int | None = None,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self._spec = None if isinstance(cell, ModuleType) else resolve_spec(cell)
        self._modules_on: dict[str, ModuleType] = {}
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        # The stack's arguments are checked where RecurrentLayer's are; the parameters become torch Parameters.
        self.shape = StackShape.of(
            cell,
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            batch_first=batch_first,
            dtype=np.float32 if dtype == torch.float32 else np.float64,
            heads=heads,
            proj_size=proj_size,
            block_size=block_size,
        )
        for index, row in enumerate(self.shape.init_params(seed)):
            for direction, params in enumerate(row):
                for name in self.cell.PARAMS:
                    parameter = torch.nn.Parameter(torch.from_numpy(params[name]))
                    setattr(self, self._name(name, index, direction), parameter)

    def _step_inputs(self, inputs: Any, steps: int, batch: int) -> list[dict[str, torch.Tensor]]:
        """Per (layer, direction) per-step inputs as time-major views of the tensors (the generated forward checks
        their values; views, so that an in-place change of the tensor is seen by torch's version counter)."""
        count = self.num_layers * self.num_directions
        expected = stacked_inputs_shape(count, steps, batch, self.hidden_size, self.batch_first)
        if not check_input_names(inputs, self.cell.INPUTS):
            return [{} for _ in range(count)]
        for name, value in inputs.items():
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"inputs[{name!r}]: expected a tensor of shape {expected}, got {got}")
        return split_stacked_inputs(inputs, self.batch_first)

    def module_for(self, device: torch.device) -> ModuleType:
        """The generated module that runs on ``device`` (its CUDA module, generated once, for a CUDA device)."""
        target = "cuda" if device.type == "cuda" else "cpu"
        if target not in self._modules_on:
            self._modules_on[target] = module_on(self.cell, target, self._spec)
        return self._modules_on[target]

    @staticmethod
    def _name(param: str, layer: int, direction: int) -> str:
        return f"{param}_l{layer}" + ("_reverse" if direction else "")

    def forward(
        self,
        x: torch.Tensor,
        state: Any = None,
        lengths: np.ndarray | torch.Tensor | None = None,
        inputs: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor (T, B, I), got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"x: expected a 3-D tensor, got shape {tuple(x.shape)}")
        if x.dtype != self.W_l0.dtype:
            raise TypeError(f"x: expected dtype {self.W_l0.dtype} (the module's), got {x.dtype}")
        if self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[1]
        n_states = len(self.cell.STATE)
        if isinstance(lengths, torch.Tensor):
            lengths = lengths.cpu().numpy()
        if state is not None:
            state = (state,) if isinstance(state, torch.Tensor) else state
            if not isinstance(state, tuple | list) or not all(isinstance(s, torch.Tensor) for s in state):
                raise TypeError(
                    f"state: expected a tensor or a tuple of tensors in {self.cell.STATE}, got {type(state).__name__}"
                )
            state = tuple(state)
            count = self.num_layers * self.num_directions
            expected = [(count, batch, w) for w in self.state_widths()]
            if len(state) != n_states or any(tuple(s.shape) != e for s, e in zip(state, expected, strict=False)):
                got = [tuple(s.shape) for s in state]
                shapes = ", ".join(map(str, expected))
                raise ValueError(
                    f"state: expected {n_states} tensor(s) of shapes {shapes} in {self.cell.STATE}, got {got}"
                )
        step_inputs = self._step_inputs(inputs, x.shape[0], batch)
        cell = self.module_for(x.device)

        def run(layer: int, direction: int, k: int, layer_input: torch.Tensor) -> tuple[Any, ...]:
            params = [getattr(self, self._name(n, layer, direction)) for n in self.cell.PARAMS]
            initial = [] if state is None else [s[k] for s in state]
            y, *final = GeneratedCellFunction.apply(
                cell, lengths, direction == 1, step_inputs[k] or None, layer_input, *params, *initial
            )
            return y, final, None

        output, finals, _ = run_layers(x, self.num_layers, self.num_directions, run, lambda ys: torch.cat(ys, dim=2))
        output = output.transpose(0, 1) if self.batch_first else output
        final_state = tuple(torch.stack([f[i] for f in finals]) for i in range(n_states))
        return output, final_state[0] if n_states == 1 else final_state
