"""Memory blocks: S cells sharing one input and one output gate (the 1997 paper's architecture)."""

from __future__ import annotations

import functools
import operator

import numpy as np
import pytest
from reference_cells import reference_gradients
from test_kernels_vs_autograd import assert_close, module_for

from lstmgen.analysis.derivation import build_derivation
from lstmgen.analysis.derivation_printer import render_derivation
from lstmgen.cli import main
from lstmgen.spec import Gate, SpecError
from lstmgen.spec_file import spec_from_table
from lstmgen.variants import get_variant

# (T, B, I, H, S): two blocks of two (the paper's adding problem), blocks of three, one block of all cells, S = 1.
SIZES = [(5, 3, 2, 4, 2), (4, 2, 3, 6, 3), (3, 2, 2, 4, 4), (3, 2, 2, 3, 1)]


def block_problem(module, sizes, dtype, seed):
    T, B, I, H, S = sizes
    rng = np.random.default_rng(seed)
    params = {k: (1.5 * v).astype(dtype) for k, v in module.init_params(I, H, seed=seed, block_size=S).items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = tuple((0.5 * rng.standard_normal((B, H))).astype(dtype) for _ in module.STATE)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstate = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in module.STATE)
    return x, params, state, dy, dstate


def run(module, x, params, state, dy, dstate, **options):
    y, final, tape = module.forward(x, params, state, **options)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    return {
        "y": y,
        "dx": dx,
        **{f"final[{s}]": v for s, v in zip(module.STATE, final, strict=True)},
        **{f"d{k}": v for k, v in grads.items()},
        **{f"dstate0[{s}]": v for s, v in zip(module.STATE, dstate0, strict=True)},
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "T{}B{}I{}H{}S{}".format(*s))
def test_blocks_match_autograd(generated_module, sizes, gradient, dtype):
    """Against a torch reference whose gates are computed per block and repeated over the block's cells."""
    module = module_for(generated_module, "lstm_1997", gradient)
    x, params, state, dy, dstate = block_problem(module, sizes, dtype, seed=sum(sizes))
    _, _, _, H, S = sizes
    assert params["W"].shape[1] == params["R"].shape[1] == params["b"].shape[0] == H + 2 * H // S
    ref = reference_gradients(
        "lstm_1997_blocks",
        x.astype(np.float64),
        {k: v.astype(np.float64) for k, v in params.items()},
        tuple(s.astype(np.float64) for s in state),
        dy.astype(np.float64),
        tuple(d.astype(np.float64) for d in dstate),
        truncated=gradient == "truncated",
    )
    expected = {
        "y": ref["y"],
        "dx": ref["dx"],
        **{f"final[{s}]": v for s, v in zip(module.STATE, ref["final"], strict=True)},
        **{f"d{k}": v for k, v in ref["grads"].items()},
        **{f"dstate0[{s}]": v for s, v in zip(module.STATE, ref["dstate0"], strict=True)},
    }
    outputs = run(module, x, params, state, dy, dstate)
    assert set(outputs) == set(expected)
    rtol, atol_scale, atol_floor = (1e-9, 1e-12, 1.0) if dtype == np.float64 else (1e-4, 1e-5, 0.0)
    for name, value in outputs.items():
        assert value.dtype == dtype and value.shape == expected[name].shape, name
        assert_close(value, expected[name], rtol, atol_scale, name, atol_floor)


def test_blocks_match_finite_differences(generated_module):
    """A second oracle for the full gradient: central differences on the shared columns, ε = 1e-6."""
    module = generated_module("lstm_1997")
    x, params, state, dy, dstate = block_problem(module, (4, 2, 2, 4, 2), np.float64, seed=3)

    def loss():
        y, final, _ = module.forward(x, params, state)
        return float(np.sum(y * dy) + sum(np.sum(f * d) for f, d in zip(final, dstate, strict=True)))

    grads = run(module, x, params, state, dy, dstate)
    for name, array in params.items():
        numeric = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            saved = array[idx]
            array[idx] = saved + 1e-6
            up = loss()
            array[idx] = saved - 1e-6
            numeric[idx] = (up - loss()) / 2e-6
            array[idx] = saved
        np.testing.assert_allclose(grads[f"d{name}"], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_a_block_is_its_cells_with_the_gate_columns_repeated(generated_module):
    """With padding and reverse: the block cell equals the per-cell cell whose gate columns are repeated by hand,
    and its gradients are the per-cell ones summed over each block's cells."""
    module = generated_module("lstm_1997")
    x, params, state, dy, dstate = block_problem(module, (6, 3, 2, 6, 3), np.float64, seed=5)
    H, n = 6, 2
    i, g, o = np.split(np.arange(H + 2 * n), [n, n + H])
    columns = np.concatenate([np.repeat(i, 3), g, np.repeat(o, 3)])
    per_cell = {k: v[..., columns] for k, v in params.items()}
    options = {"lengths": np.array([6, 2, 4]), "reverse": True}
    blocks = run(module, x, params, state, dy, dstate, **options)
    cells = run(module, x, per_cell, state, dy, dstate, **options)
    for name in ("y", "dx", "final[h]", "final[c]", "dstate0[h]", "dstate0[c]"):
        np.testing.assert_allclose(blocks[name], cells[name], rtol=1e-13, atol=1e-13, err_msg=name)
    for name in ("dW", "dR", "db"):
        summed = np.zeros_like(blocks[name])
        np.add.at(summed.T, columns, cells[name].T)  # column c of the per-cell layout adds into column columns[c]
        np.testing.assert_allclose(blocks[name], summed, rtol=1e-13, atol=1e-13, err_msg=name)


def test_every_cell_of_a_block_sees_the_same_gate_value(generated_module):
    module = generated_module("lstm_1997")
    x, params, state, _, _ = block_problem(module, (3, 2, 2, 4, 2), np.float64, seed=1)
    _, _, tape = module.forward(x, params, state)
    i, g, o = np.split(tape.gate_seq, 3, axis=-1)
    for gate in (i, o):
        assert np.array_equal(gate[..., 0], gate[..., 1]) and np.array_equal(gate[..., 2], gate[..., 3])
        assert not np.array_equal(gate[..., 1], gate[..., 2])
    assert not np.array_equal(g[..., 0], g[..., 1])


def test_block_sizes_are_checked(generated_module):
    module = generated_module("lstm_1997")
    with pytest.raises(ValueError, match="block_size: H = 6 is not divisible by block_size = 4"):
        module.init_params(2, 6, block_size=4)
    with pytest.raises(ValueError, match="block_size: expected a positive integer"):
        module.param_shapes(2, 6, block_size=0)
    with pytest.raises(ValueError, match="block_size: lstm has no gates a memory block shares"):
        generated_module("lstm").init_params(2, 4, block_size=2)
    params = module.init_params(2, 6, block_size=3)
    params["b"] = np.zeros(6 + 2 * 4)  # no S divides H = 6 with H/S = 4
    with pytest.raises(ValueError, match=r"params\['b'\]: expected shape \(1\*H \+ 2\*H/S,\) with H = 6"):
        module.forward(np.zeros((2, 1, 2)), params)
    params["b"] = np.zeros(6 + 2 * 3)
    message = r"params\['W'\]: expected shape \(2, 12\) \(H = 6 .*, S = 2 from params\['b'\] of shape \(12,\)\), got "
    with pytest.raises(ValueError, match=message):
        module.forward(np.zeros((2, 1, 2)), params)


def test_a_replaced_block_size_on_the_tape_is_refused(generated_module):
    module = generated_module("lstm_1997")
    x, params, state, dy, _ = block_problem(module, (2, 1, 2, 4, 2), np.float64, seed=0)
    _, _, tape = module.forward(x, params, state)
    tape.block_size = 3
    with pytest.raises(ValueError, match="tape: its arrays do not match"):
        module.backward(dy, tape)


def test_block_gates_in_a_spec_are_checked():
    spec = get_variant("lstm_1997")
    assert spec.block_gates == ("i", "o")
    table = {
        "name": "blocked",
        "state": ["h", "c"],
        "gates": [{"name": "i", "activation": "sigmoid"}, {"name": "g", "activation": "tanh"}],
        "equations": {"c": "c_prev + i*g", "h": "tanh(c)"},
        "block_gates": ["i"],
    }
    assert spec_from_table(table).block_gates == ("i",)
    with pytest.raises(SpecError, match="block_gates\\[0\\]: expected a distinct gate name"):
        spec_from_table({**table, "block_gates": ["f"]})
    peephole = {**table, "gates": [{"name": "i", "activation": "sigmoid", "preactivation": "xW_i + hR_i + c_prev"}]}
    peephole["gates"].append({"name": "g", "activation": "tanh"})
    refusal = r"block_gates\[0\] \(i\): a gate a memory block shares needs the pre-activation 'xW_i \+ hR_i'"
    with pytest.raises(SpecError, match=refusal):
        spec_from_table(peephole)
    with pytest.raises(SpecError, match="block_gates: memory blocks are not supported together with heads"):
        spec_from_table({**table, "heads": 2})
    assert Gate("i", "sigmoid").preactivation_text == "xW_i + hR_i"


def test_derivation_shows_the_block_sum():
    text = render_derivation(build_derivation(get_variant("lstm_1997"), "truncated"), "text")
    assert "Memory blocks (block_size = S): i, o are shared by the S cells" in text
    assert "dL/dθ_i[k] = Σ_(j in B_k) dL/dθ_i[j]" in text and "dL/dθ_o[k] = Σ_(j in B_k) dL/dθ_o[j]" in text
    latex = render_derivation(build_derivation(get_variant("lstm_1997"), "full"), "latex")
    assert r"\sum_{j \in \mathcal{B}_k}" in latex
    assert "B_k" not in render_derivation(build_derivation(get_variant("lstm"), "full"), "text")


def test_cec_measures_memory_blocks(capsys):
    command = ["cec", "lstm_1997", "--gradient", "truncated", "--steps", "4"]
    assert main([*command, "--block-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "lstm_1997 (truncated) S=2" in out
    rows = [line.split() for line in out.splitlines()[-5:]]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    # The truncated rule keeps the carousel with shared gates: the error on c stays what it was one step back.
    flow = [float(r[1]) for r in rows[1:]]
    assert flow[0] > 0 and all(f == flow[0] for f in flow)
    assert main([*command, "--block-size", "5"]) == 2
    assert "--block-size: expected a divisor of the measured H = 32, got 5" in capsys.readouterr().err
    assert main([*command[:-2], "--block-size", "2"]) == 2
    assert "--block-size: sets the memory blocks of the measurement; give --steps" in capsys.readouterr().err
    assert main(["cec", "lstm", "--steps", "4", "--block-size", "2"]) == 2
    assert "--block-size: lstm has no gates a memory block shares" in capsys.readouterr().err


def test_a_stack_of_layers_with_memory_blocks():
    from lstmgen.layers import RecurrentLayer

    layer = RecurrentLayer("lstm_1997", 3, 4, num_layers=2, bidirectional=True, block_size=2, seed=0)
    assert [p["W"].shape for row in layer.params for p in row] == [(3, 8), (3, 8), (8, 8), (8, 8)]
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    y, _, tape = layer.forward(x)
    dx, grads, _ = layer.backward(np.ones_like(y), tape)
    assert y.shape == (5, 2, 8) and dx.shape == x.shape
    pairs = [(g, p) for gs, ps in zip(grads, layer.params, strict=True) for g, p in zip(gs, ps, strict=True)]
    assert all(g[k].shape == p[k].shape for g, p in pairs for k in p)
    with pytest.raises(ValueError, match="block_size: lstm has no gates a memory block shares"):
        RecurrentLayer("lstm", 3, 4, block_size=2)


def test_torch_adapter_with_memory_blocks(generated_module):
    import torch

    from lstmgen.torch_adapter import TorchRecurrent
    from lstmgen.torch_ops import recurrent

    cell = generated_module("lstm_1997")
    rng = np.random.default_rng(0)
    params = cell.init_params(2, 4, seed=1, block_size=2)
    tensors = [torch.tensor(params[n] * 1.5, requires_grad=True) for n in cell.PARAMS]
    x = torch.tensor(rng.standard_normal((3, 2, 2)), requires_grad=True)
    state = [torch.tensor(0.5 * rng.standard_normal((2, 4)), requires_grad=True) for _ in cell.STATE]

    def f(x, *rest):
        n = len(cell.PARAMS)
        y, final = recurrent(cell, x, rest[:n], rest[n:], lengths=np.array([3, 2]), reverse=True)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *tensors, *state), eps=1e-6, atol=1e-7, rtol=1e-6)
    rnn = TorchRecurrent(cell, 2, 4, num_layers=2, block_size=2, seed=0)
    assert {n: tuple(p.shape) for n, p in rnn.named_parameters() if n.startswith("W")} == {
        "W_l0": (2, 8),
        "W_l1": (4, 8),
    }
    out, _ = rnn(torch.zeros(5, 3, 2))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in rnn.parameters())


def test_a_toml_cell_with_a_shared_forget_gate_matches_autograd(tmp_path):
    """Gers et al. (2000) keep the memory blocks with the forget gate: i, f and o per block, from a TOML table."""
    import torch
    from conftest import import_without_jit

    from lstmgen.generate import generate_source, write_source

    spec = spec_from_table(
        {
            "name": "lstm_blocks",
            "state": ["h", "c"],
            "gates": [{"name": n, "activation": "tanh" if n == "g" else "sigmoid"} for n in "ifgo"],
            "equations": {"c": "f*c_prev + i*g", "h": "o*tanh(c)"},
            "block_gates": ["i", "f", "o"],
        }
    )
    module = import_without_jit(write_source(generate_source(spec), tmp_path, "lstm_blocks"))
    x, params, state, dy, dstate = block_problem(module, (3, 2, 2, 6, 3), np.float64, seed=2)
    assert params["b"].shape == (6 + 3 * 2,)  # g per cell, i, f, o one unit per block of 3

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    h, c = (torch.tensor(s, requires_grad=True) for s in state)
    ts = (h, c)
    loss = 0
    for t in range(3):
        a_i, a_f, a_g, a_o = (tx[t] @ tp["W"] + h @ tp["R"] + tp["b"]).split([2, 2, 6, 2], dim=-1)
        i, f, o = (torch.sigmoid(a).repeat_interleave(3, dim=-1) for a in (a_i, a_f, a_o))
        c = f * c + i * torch.tanh(a_g)
        h = o * torch.tanh(c)
        loss = loss + (h * torch.tensor(dy[t])).sum()
    loss = loss + (h * torch.tensor(dstate[0])).sum() + (c * torch.tensor(dstate[1])).sum()
    expected = dict(
        zip(
            ["dx", *(f"d{k}" for k in tp), "dstate0[h]", "dstate0[c]"],
            torch.autograd.grad(loss, [tx, *tp.values(), *ts]),
            strict=True,
        )
    )
    outputs = run(module, x, params, state, dy, dstate)
    for name, value in expected.items():
        assert_close(outputs[name], value.numpy(), 1e-9, 1e-12, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_block_gates_array_operations_are_numpys_to_the_bit(generated_module, dtype):
    """The repetition and the block sums of the wrappers (array methods and a compiled loop, for speed) give what
    fancy indexing gives, and each run's sum in order, first column first (np.add.reduceat adds the first column to
    the sum of the others: a last bit apart from three columns on); signed zeros, NaN and inf kept."""
    m = generated_module("lstm_1997")
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((3, 12)) * 10.0 ** rng.integers(-6, 6, (3, 12))).astype(dtype)
    a[0, :2], a[1, 5], a[2, 7] = -0.0, np.nan, np.inf
    starts, columns, rows = np.array([0, 2, 3, 6, 7, 11]), np.array([0, 0, 3, 1, 11, 11]), np.array([2, 0])
    ends = [*starts[1:], a.shape[1]]
    for array in (a, a[0]):
        runs = [array[..., lo:hi] for lo, hi in zip(starts, ends, strict=True)]
        expected = np.stack([functools.reduce(operator.add, run.T) for run in runs], axis=-1)
        sums = m._sum_columns(array, starts)
        np.testing.assert_array_equal(sums, expected)
        np.testing.assert_array_equal(np.signbit(sums), np.signbit(expected))
        np.testing.assert_allclose(
            sums, np.add.reduceat(array, starts, axis=array.ndim - 1), rtol=4 * np.finfo(dtype).eps
        )
        assert sums.dtype == dtype
        np.testing.assert_array_equal(m._take_columns(array, columns), array[..., columns])
    np.testing.assert_array_equal(m._take_rows(a, rows), a[rows])
