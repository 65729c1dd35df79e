"""RecurrentLayer (stacks, directions, batch_first, lengths) and the torch converters, against torch's own
nn.LSTM / nn.GRU / nn.RNN: outputs, final states and every gradient, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstmgen.interop_torch import PROJECTED_LSTM, TORCH_CELLS, from_torch, to_torch
from lstmgen.layers import RecurrentLayer

CASES = [
    # kind, num_layers, bidirectional, batch_first, with lengths, proj_size (LSTM: 0 for none)
    ("LSTM", 1, False, False, False, 0),
    ("LSTM", 2, True, True, True, 0),
    ("LSTM", 3, True, False, False, 0),
    ("LSTM", 1, False, False, True, 2),
    ("LSTM", 2, True, True, True, 3),
    ("LSTM", 3, True, False, False, 1),
    ("GRU", 1, True, False, True, 0),
    ("GRU", 2, False, True, False, 0),
    ("RNN", 2, True, False, True, 0),
]


def torch_module(kind, num_layers, bidirectional, batch_first, seed=0, dtype=torch.float64, proj_size=0):
    torch.manual_seed(seed)
    extra = {"proj_size": proj_size} if proj_size else {}
    return getattr(torch.nn, kind)(
        4, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=dtype, **extra
    )


def torch_run(module, x, state, lengths, batch_first):
    """torch's outputs and gradients for loss = sum(out * A) + sum over final states of (state * S)."""
    xt = torch.tensor(x, requires_grad=True)
    st = tuple(torch.tensor(s, requires_grad=True) for s in state)
    hx = st if len(st) == 2 else st[0]
    if lengths is None:
        out, final = module(xt, hx)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
        out, final = module(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])
    final = final if isinstance(final, tuple) else (final,)
    rng = np.random.default_rng(1)
    a = rng.standard_normal(out.shape)
    s = [rng.standard_normal(f.shape) for f in final]
    loss = (out * torch.tensor(a)).sum() + sum((f * torch.tensor(w)).sum() for f, w in zip(final, s, strict=True))
    loss.backward()
    finals = [f.detach().numpy() for f in final]
    return out.detach().numpy(), finals, xt.grad.numpy(), [g.grad.numpy() for g in st], a, s


@pytest.mark.parametrize(("kind", "num_layers", "bidirectional", "batch_first", "padded", "proj"), CASES)
def test_layer_from_torch_matches_torch(generated_module, kind, num_layers, bidirectional, batch_first, padded, proj):
    variant, torch_order = TORCH_CELLS[kind]
    variant = PROJECTED_LSTM if proj else variant
    module = torch_module(kind, num_layers, bidirectional, batch_first, proj_size=proj)
    with torch.no_grad():  # non-zero, distinct biases so that a wrong fold shows
        for name, p in module.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    layer = from_torch(module, cell=generated_module(variant))
    T, B, D = 6, 3, 2 if bidirectional else 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, 4) if batch_first else (T, B, 4))
    n_states = len(layer.cell.STATE)
    widths = [proj or 5] + [5] * (n_states - 1)  # a projected h has P units, c keeps H
    state = tuple(0.5 * rng.standard_normal((num_layers * D, B, w)) for w in widths)
    lengths = np.array([6, 2, 4]) if padded else None
    out_t, final_t, dx_t, dstate_t, a, s = torch_run(module, x, state, lengths, batch_first)

    out, final, tape = layer.forward(x, state, lengths=lengths)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(final, final_t, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    dx, grads, dstate0 = layer.backward(a, tape, tuple(s))
    np.testing.assert_allclose(dx, dx_t, rtol=1e-9, atol=1e-11)
    for ours, theirs in zip(dstate0, dstate_t, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)

    H = 5
    for layer_index in range(num_layers):
        for direction in range(D):
            sfx = f"_l{layer_index}" + ("_reverse" if direction else "")
            g = grads[layer_index][direction]

            def tgrad(name, sfx=sfx):
                return getattr(module, name + sfx).grad.numpy()

            def blocks(a, gates):
                return np.concatenate([a[torch_order.index(k) * H : (torch_order.index(k) + 1) * H] for k in gates])

            gates = layer.cell.GATES
            np.testing.assert_allclose(g["W"], blocks(tgrad("weight_ih"), gates).T, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(g["R"], blocks(tgrad("weight_hh"), gates).T, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(g["b"], blocks(tgrad("bias_ih"), gates), rtol=1e-9, atol=1e-11)
            if kind == "GRU":
                np.testing.assert_allclose(g["b_rn"], blocks(tgrad("bias_hh"), ["n"]), rtol=1e-9, atol=1e-11)
            if proj:
                assert g["R"].shape == (proj, 4 * H)
                np.testing.assert_allclose(g["W_p"], tgrad("weight_hr").T, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", [*TORCH_CELLS, "LSTMP"])
def test_to_torch_round_trip(generated_module, kind):
    proj = {"proj_size": 2} if kind == "LSTMP" else {}
    kind, variant = ("LSTM", PROJECTED_LSTM) if proj else (kind, TORCH_CELLS[kind][0])
    layer = RecurrentLayer(
        generated_module(variant), 3, 4, num_layers=2, bidirectional=True, dtype=np.float32, seed=5, **proj
    )
    module = to_torch(layer)
    assert isinstance(module, getattr(torch.nn, kind)) and module.weight_ih_l0.dtype == torch.float32
    assert module.proj_size == proj.get("proj_size", 0) if kind == "LSTM" else True
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    out, final, _ = layer.forward(x)
    with torch.no_grad():
        out_t, final_t = module(torch.from_numpy(x))
    np.testing.assert_allclose(out, out_t.numpy(), rtol=1e-5, atol=1e-6)
    final_t = final_t if isinstance(final_t, tuple) else (final_t,)
    for ours, theirs in zip(final, final_t, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)
    back = from_torch(module, cell=layer.cell)
    for row, row_back in zip(layer.params, back.params, strict=True):
        for p, q in zip(row, row_back, strict=True):
            for name in p:
                np.testing.assert_array_equal(p[name], q[name])


def test_converters_refuse_what_they_cannot_map(generated_module):
    with pytest.raises(ValueError, match="nonlinearity 'tanh', got 'relu'"):
        from_torch(torch.nn.RNN(2, 3, nonlinearity="relu"), cell=generated_module("rnn_tanh"))
    with pytest.raises(ValueError, match=r"expected the generated 'lstmp' module for nn\.LSTM"):
        from_torch(torch.nn.LSTM(2, 3, proj_size=2), cell=generated_module("lstm"))
    with pytest.raises(ValueError, match=r"proj_size < hidden_size only; this lstmp layer has P = 3, H = 3"):
        to_torch(RecurrentLayer(generated_module("lstmp"), 2, 3, seed=0))
    with pytest.raises(ValueError, match=r"proj_size: lstm has no projected output"):
        RecurrentLayer(generated_module("lstm"), 2, 3, proj_size=2)
    with pytest.raises(ValueError, match=r"expected the generated 'lstm' module for nn\.LSTM"):
        from_torch(torch.nn.LSTM(2, 3), cell=generated_module("gru"))
    with pytest.raises(TypeError, match=r"expected a torch\.nn\.LSTM, nn\.GRU or nn\.RNN, got Linear"):
        from_torch(torch.nn.Linear(2, 3))
    layer = RecurrentLayer(generated_module("lstm_peephole"), 2, 3, seed=0)
    with pytest.raises(ValueError, match="torch has no module for the 'lstm_peephole' cell"):
        to_torch(layer)


def test_layer_input_errors(generated_module):
    cell = generated_module("lstm")
    layer = RecurrentLayer(cell, 3, 4, num_layers=2, bidirectional=True, seed=0)
    x = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match=r"x: expected 3 features in the last dimension, got shape \(5, 2, 4\)"):
        layer.forward(np.zeros((5, 2, 4)))
    with pytest.raises(TypeError, match=r"x: expected dtype float64 \(the layer's\), got float32"):
        layer.forward(x.astype(np.float32))
    with pytest.raises(ValueError, match=r"state\['c'\]: expected shape \(4, 2, 4\) \(L\*D, B, H\), got \(2, 2, 4\)"):
        layer.forward(x, (np.zeros((4, 2, 4)), np.zeros((2, 2, 4))))
    out, _, tape = layer.forward(x)
    with pytest.raises(ValueError, match=r"doutput: expected shape \(5, 2, 8\), got \(5, 2, 4\)"):
        layer.backward(out[:, :, :4], tape)
    other = RecurrentLayer(cell, 3, 4, num_layers=2, bidirectional=True, seed=0)
    with pytest.raises(TypeError, match="tape: expected the tape returned by this layer's forward"):
        other.backward(out, tape)
    with pytest.raises(ValueError, match=r"params\[1\]\[0\]\['W'\]: expected shape \(8, 16\), got \(3, 16\)"):
        RecurrentLayer(cell, 3, 4, num_layers=2, bidirectional=True, params=[layer.params[0], layer.params[0]])
    with pytest.raises(ValueError, match="num_layers: expected a positive integer, got 0"):
        RecurrentLayer(cell, 3, 4, num_layers=0)
    with pytest.raises(TypeError, match="bidirectional: expected a bool, got str"):
        RecurrentLayer(cell, 3, 4, bidirectional="yes")


def test_an_empty_inputs_dict_is_no_inputs(generated_module):
    """A cell without per-step inputs takes inputs={} as the generated forward does (it raised StopIteration)."""
    from lstmgen.torch_adapter import TorchRecurrent

    x = np.random.default_rng(0).standard_normal((3, 2, 4))
    layer = RecurrentLayer("lstm", 4, 5)
    np.testing.assert_array_equal(layer.forward(x, inputs={})[0], layer.forward(x)[0])
    model = TorchRecurrent("gru", 4, 5)
    tx = torch.tensor(x, dtype=torch.float32)
    torch.testing.assert_close(model(tx, inputs={})[0], model(tx)[0])
