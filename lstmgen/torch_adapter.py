"""Train a generated cell inside PyTorch: an nn.Module with torch.nn.LSTM's interface over the generated kernels
as torch operators (:mod:`lstmgen.torch_ops`), so that torch.compile and torch.export keep each layer as one
node. CPU tensors run the cell's CPU module; CUDA tensors run its CUDA module (``target="cuda"``) on torch's
current stream, with torch's allocator and no copies.

>>> rnn = TorchRecurrent(generated.lstm_peephole, input_size=8, hidden_size=16, num_layers=2, bidirectional=True)
>>> out, (h_n, c_n) = rnn(x)                     # x (T, B, 8) -> out (T, B, 32); loss.backward() works

torch is needed only by this module; lstmgen itself does not import it.
"""

from __future__ import annotations

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
from lstmgen.torch_ops import module_on, recurrent


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
        if isinstance(lengths, np.ndarray):
            lengths = torch.from_numpy(lengths)  # the operator takes a tensor (checked by the generated forward)
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
            masks = [step_inputs[k][name] for name in cell.INPUTS] if step_inputs[k] else None
            y, final = recurrent(
                cell, layer_input, params, initial or None, inputs=masks, lengths=lengths, reverse=direction == 1
            )
            return y, list(final), None

        output, finals, _ = run_layers(x, self.num_layers, self.num_directions, run, lambda ys: torch.cat(ys, dim=2))
        output = output.transpose(0, 1) if self.batch_first else output
        final_state = tuple(torch.stack([f[i] for f in finals]) for i in range(n_states))
        return output, final_state[0] if n_states == 1 else final_state
