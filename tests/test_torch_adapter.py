"""The PyTorch adapter: generated kernels inside torch autograd (gradcheck in float64, a training loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lstmgen.torch_adapter import TorchRecurrent
from lstmgen.torch_ops import recurrent


@pytest.mark.parametrize(
    ("name", "lengths", "reverse"),
    [
        ("lstm_peephole", None, False),
        ("gru", np.array([3, 1]), True),
        ("gru_v3", None, True),
        ("lstm_fgr", np.array([2, 3]), False),
        ("rnn_tanh", np.array([0, 2]), True),
    ],
)
def test_gradcheck_passes(generated_module, name, lengths, reverse):
    cell = generated_module(name)
    T, B, I, H = 3, 2, 2, 3
    rng = np.random.default_rng(0)
    params = cell.init_params(I, H, dtype=np.float64, seed=1)
    tensors = [torch.tensor(params[n] * 1.5, requires_grad=True) for n in cell.PARAMS]
    x = torch.tensor(rng.standard_normal((T, B, I)), requires_grad=True)
    state = [torch.tensor(0.5 * rng.standard_normal((B, H)), requires_grad=True) for _ in cell.STATE]

    def f(x, *rest):
        n = len(cell.PARAMS)
        y, final = recurrent(cell, x, rest[:n], rest[n:], lengths=lengths, reverse=reverse)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *tensors, *state), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_module_matches_the_generated_layer_and_trains(generated_module):
    torch.manual_seed(0)
    rnn = TorchRecurrent(
        generated_module("lstm_peephole"), 3, 8, num_layers=2, bidirectional=True, seed=0, batch_first=True
    )
    head = torch.nn.Linear(16, 1)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((16, 12, 3)), dtype=torch.float32)
    target = torch.cumsum(x[:, :, :1], dim=1).tanh()  # a running-sum task needs the recurrence
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.02)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        out, (h_n, c_n) = rnn(x)
        assert out.shape == (16, 12, 16) and h_n.shape == c_n.shape == (4, 16, 8)
        loss = torch.nn.functional.mse_loss(head(out), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rnn.parameters())


def test_one_state_cells_return_the_tensor_like_torch(generated_module):
    rnn = TorchRecurrent(generated_module("gru"), 2, 4, dtype=torch.float64, seed=0)
    out, h_n = rnn(torch.zeros(5, 3, 2, dtype=torch.float64), torch.ones(1, 3, 4, dtype=torch.float64))
    assert isinstance(h_n, torch.Tensor) and h_n.shape == (1, 3, 4) and out.shape == (5, 3, 4)


def test_adapter_errors(generated_module):
    rnn = TorchRecurrent(generated_module("lstm"), 2, 4, seed=0)
    with pytest.raises(TypeError, match=r"x: expected dtype torch\.float32 \(the module's\), got torch\.float64"):
        rnn(torch.zeros(5, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"state: expected 2 tensor\(s\) of shapes \(1, 3, 4\), \(1, 3, 4\)"):
        rnn(torch.zeros(5, 3, 2), (torch.zeros(1, 3, 4),))
    with pytest.raises(ValueError, match=r"x: expected a 3-D tensor, got shape \(5, 2\)"):
        rnn(torch.zeros(5, 2))
    with pytest.raises(TypeError, match=r"x: expected a torch\.Tensor \(T, B, I\), got ndarray"):
        rnn(np.zeros((5, 3, 2), dtype=np.float32))
    with pytest.raises(TypeError, match=r"dtype: expected torch\.float32 or torch\.float64"):
        TorchRecurrent(generated_module("lstm"), 2, 4, dtype=torch.float16)


def test_double_backward_raises_instead_of_dropping_the_second_order_term(generated_module):
    """A gradient penalty needs the derivative of the backward pass, which the kernels do not provide: torch must
    say so (it used to return a gradient without the second-order term, off by 0.034 against nn.LSTM)."""
    rnn = TorchRecurrent(generated_module("lstm"), 2, 3, dtype=torch.float64, seed=0)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    out, _ = rnn(x)
    for loss in (out.sum(), (out**2).sum()):  # dy constant, and dy depending on the parameters
        with pytest.raises(RuntimeError, match=r"lstm: create_graph=True \(double backward\) is not supported"):
            torch.autograd.grad(loss, x, create_graph=True, retain_graph=True)
    (gx,) = torch.autograd.grad(out.sum(), x)  # once-differentiable use is unchanged
    assert gx.shape == x.shape


def test_projected_lstm_module_matches_torch_lstm_with_proj_size(generated_module):
    """TorchRecurrent over lstmp is torch.nn.LSTM(proj_size=P): outputs, h_n (P units), c_n (H) and gradients."""
    from lstmgen.interop_torch import to_torch
    from lstmgen.layers import RecurrentLayer

    cell = generated_module("lstmp")
    rnn = TorchRecurrent(cell, 3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64, seed=4)
    layer = RecurrentLayer(cell, 3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=4)
    reference = to_torch(layer)  # the same weights (the same seed) as torch's own module
    x = torch.tensor(np.random.default_rng(0).standard_normal((6, 4, 3)))
    out, (h_n, c_n) = rnn(x)
    out_t, (h_t, c_t) = reference(x)
    assert out.shape == (6, 4, 4) and h_n.shape == (4, 4, 2) and c_n.shape == (4, 4, 5)
    for ours, theirs in ((out, out_t), (h_n, h_t), (c_n, c_t)):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    (out.sum() + h_n.sum()).backward()
    (out_t.sum() + h_t.sum()).backward()
    np.testing.assert_allclose(
        rnn.W_p_l1_reverse.grad.numpy(), reference.weight_hr_l1_reverse.grad.numpy().T, rtol=1e-10
    )
    # lstmp's GATES are torch's order (i, f, g, o): R is weight_hh transposed, (P, 4H).
    np.testing.assert_allclose(rnn.R_l0.grad.numpy(), reference.weight_hh_l0.grad.numpy().T, rtol=1e-10)
    with pytest.raises(ValueError, match=r"state: expected 2 tensor\(s\) of shapes \(4, 4, 2\), \(4, 4, 5\)"):
        rnn(x, (torch.zeros(4, 4, 5), torch.zeros(4, 4, 5)))


@pytest.mark.parametrize("modified", ["x", "mask", "state", "param"])
def test_an_in_place_change_before_backward_is_refused(modified):
    """As torch.nn.LSTM: the tape reads x, the masks, the state and the parameters in place, so changing one
    between forward and backward must raise, not give other gradients."""
    model = TorchRecurrent("zoneout_lstm", 3, 4, dtype=torch.float64, seed=0)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((5, 2, 3)))
    masks = {k: torch.tensor(rng.uniform(0, 1, (1, 5, 2, 4))) for k in ("keep_c", "keep_h")}
    state = tuple(torch.tensor(rng.standard_normal((1, 2, 4)), requires_grad=True) for _ in range(2))
    out, _ = model(x, state, inputs=masks)
    target = {"x": x, "mask": masks["keep_c"], "state": state[0], "param": model.W_l0}[modified]
    with torch.no_grad():
        target.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_a_state_of_the_wrong_type_is_named():
    model = TorchRecurrent("lstm", 3, 4)
    with pytest.raises(TypeError, match=r"^state: expected a tensor or a tuple of tensors in \('h', 'c'\), got str$"):
        model(torch.zeros(2, 1, 3), "hc")


def test_the_adapter_shares_the_layers_arguments_and_initialisation():
    """TorchRecurrent is made of the same checked arguments (StackShape) as RecurrentLayer, and draws the same
    parameters from the same seed."""
    from lstmgen.layers import RecurrentLayer

    kwargs = {"num_layers": 2, "bidirectional": True, "seed": 3}
    layer = RecurrentLayer("lstmp", 3, 4, dtype=np.float64, proj_size=2, **kwargs)
    model = TorchRecurrent("lstmp", 3, 4, dtype=torch.float64, proj_size=2, **kwargs)
    assert model.shape == layer.shape
    for index, row in enumerate(layer.params):
        for direction, params in enumerate(row):
            for name, value in params.items():
                np.testing.assert_array_equal(getattr(model, model._name(name, index, direction)).detach(), value)
    with pytest.raises(ValueError, match="proj_size: lstm has no projected output"):
        TorchRecurrent("lstm", 3, 4, proj_size=2)
