"""Weights between torch.nn.LSTM / nn.GRU / nn.RNN and :class:`~lstmgen.layers.RecurrentLayer`.

torch keeps, per layer and direction, ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih`` and ``bias_hh``
with gate blocks in its own order; the generated cells keep ``W (I, G*H)``, ``R (H, G*H)`` and one bias ``b`` with
blocks in ``GATES`` order. Both biases add up, except in the GRU's candidate n, where torch's ``b_hn`` sits inside
the reset product: it becomes the gru cell's ``b_rn``. An LSTM with ``proj_size = P > 0`` is the ``lstmp`` cell:
``weight_hh`` is (4H, P), and ``weight_hr`` (P, H) is the transpose of its ``W_p``.

torch is imported only when these functions run: lstmgen does not depend on it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from lstmgen.gate_blocks import gate_block, reorder_gates
from lstmgen.layers import RecurrentLayer

#: torch class name -> (lstmgen variant, torch's gate order); nn.LSTM with proj_size > 0 is PROJECTED_LSTM.
TORCH_CELLS = {
    "LSTM": ("lstm", ("i", "f", "g", "o")),
    "GRU": ("gru", ("r", "z", "n")),
    "RNN": ("rnn_tanh", ("g",)),
}
PROJECTED_LSTM = "lstmp"


def _torch_kind(module: Any) -> str:
    import torch

    for kind in TORCH_CELLS:
        if type(module) is getattr(torch.nn, kind):
            return kind
    raise TypeError(f"module: expected a torch.nn.LSTM, nn.GRU or nn.RNN, got {type(module).__name__}")


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def from_torch(module: Any, *, cell: ModuleType | None = None) -> RecurrentLayer:
    """A :class:`RecurrentLayer` computing what ``module`` (torch.nn.LSTM, nn.GRU or nn.RNN with tanh) computes.

    Args:
        module: the torch module; float32 or float64 weights. Dropout between layers is not carried over
            (the layer equals the module in eval mode).
        cell: the generated module to run (variant "lstm", "lstmp" for ``proj_size > 0``, "gru" or "rnn_tanh" to
            match ``module``); generated with :func:`lstmgen.load` when None.
    """
    kind = _torch_kind(module)
    variant, torch_order = TORCH_CELLS[kind]
    if kind == "RNN" and module.nonlinearity != "tanh":
        raise ValueError(f"module: expected nn.RNN with nonlinearity 'tanh', got {module.nonlinearity!r}")
    proj_size = module.proj_size if kind == "LSTM" and module.proj_size else None
    if proj_size:
        variant = PROJECTED_LSTM
    if cell is None:
        from lstmgen.loader import load

        cell = load(variant)
    if getattr(cell, "VARIANT", None) != variant:
        raise ValueError(f"cell: expected the generated {variant!r} module for nn.{kind}, got {cell.__name__}")
    hidden = module.hidden_size
    dtype = np.dtype(str(module.weight_ih_l0.dtype).removeprefix("torch."))
    directions = 2 if module.bidirectional else 1
    params = []
    for layer in range(module.num_layers):
        row = []
        for direction in range(directions):
            sfx = _suffix(layer, direction)

            def tensor(name: str, sfx: str = sfx) -> np.ndarray:
                return getattr(module, name + sfx).detach().cpu().numpy().astype(dtype)

            w_ih, w_hh = tensor("weight_ih"), tensor("weight_hh")
            if module.bias:
                b_ih, b_hh = tensor("bias_ih"), tensor("bias_hh")
            else:
                b_ih = b_hh = np.zeros(len(torch_order) * hidden, dtype=dtype)

            if kind == "GRU":  # torch's b_hn sits inside the reset product: it is the cell's b_rn
                b_rn, b_hh = gate_block(b_hh, torch_order, "n").copy(), b_hh.copy()
                gate_block(b_hh, torch_order, "n")[:] = 0
            p = {
                "W": np.ascontiguousarray(reorder_gates(w_ih, torch_order, cell.GATES, axis=0).T),
                "R": np.ascontiguousarray(reorder_gates(w_hh, torch_order, cell.GATES, axis=0).T),
                "b": reorder_gates(b_ih + b_hh, torch_order, cell.GATES),
            }
            if proj_size:
                p["W_p"] = np.ascontiguousarray(tensor("weight_hr").T)
            if kind == "GRU":
                p["b_rn"] = b_rn
            row.append(p)
        params.append(row)
    return RecurrentLayer(
        cell,
        module.input_size,
        hidden,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        batch_first=module.batch_first,
        dtype=dtype,
        params=params,
        proj_size=proj_size,
    )


def to_torch(layer: RecurrentLayer) -> Any:
    """The torch.nn.LSTM / nn.GRU / nn.RNN that computes what ``layer`` (cell lstm, lstmp, gru or rnn_tanh)
    computes.

    The folded bias goes to ``bias_ih``; ``bias_hh`` is zero except the GRU's ``b_hn`` (the cell's ``b_rn``).
    An ``lstmp`` layer becomes nn.LSTM(proj_size=P), which torch allows only for P < H.
    """
    import torch

    variant = getattr(layer.cell, "VARIANT", None)
    kinds = {v: (kind, order) for kind, (v, order) in TORCH_CELLS.items()}
    kinds[PROJECTED_LSTM] = kinds["lstm"]
    if variant not in kinds:
        raise ValueError(f"layer: torch has no module for the {variant!r} cell; expected one of {sorted(kinds)}")
    kind, torch_order = kinds[variant]
    hidden = layer.hidden_size
    projected = variant == PROJECTED_LSTM
    if projected and not 0 < layer.proj_size < hidden:
        raise ValueError(
            f"layer: torch.nn.LSTM takes proj_size < hidden_size only; this lstmp layer has P = {layer.proj_size}, "
            f"H = {hidden}"
        )
    module = getattr(torch.nn, kind)(
        layer.input_size,
        hidden,
        num_layers=layer.num_layers,
        bidirectional=layer.bidirectional,
        batch_first=layer.batch_first,
        dtype=getattr(torch, layer.dtype.name),
        **({"proj_size": layer.proj_size} if projected else {}),
    )
    gates = list(layer.cell.GATES)
    for l_index, row in enumerate(layer.params):
        for direction, p in enumerate(row):
            sfx = _suffix(l_index, direction)

            b_hh = np.zeros(len(gates) * hidden, dtype=layer.dtype)
            if kind == "GRU":
                gate_block(b_hh, torch_order, "n")[:] = p["b_rn"]
            values = {
                "weight_ih": reorder_gates(p["W"], gates, torch_order).T,
                "weight_hh": reorder_gates(p["R"], gates, torch_order).T,
                "bias_ih": reorder_gates(p["b"], gates, torch_order),
                "bias_hh": b_hh,
            }
            if projected:
                values["weight_hr"] = p["W_p"].T
            with torch.no_grad():
                for name, value in values.items():
                    getattr(module, name + sfx).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module
