"""Cells that users declare in TOML: the shipped examples, and every mistake as one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLE_MODULES, REPO
from problems import random_problem
from test_kernels_vs_autograd import assert_close

import lstmgen
from lstmgen import generate_source, load_module, write_module
from lstmgen.cli import main
from lstmgen.spec import SpecError
from lstmgen.spec_file import load_spec_file

EXAMPLES = REPO / "examples"


def hard_sigmoid_lstm(p, x, state, truncated):
    h, c = state
    hr = h.detach() if truncated else h
    a_i, a_f, a_g, a_o = (x @ p["W"] + hr @ p["R"] + p["b"]).chunk(4, dim=-1)

    def hs(a):
        # PyTorch's hardsigmoid, written out: F.hardsigmoid's backward uses a float32 1/6 even in float64.
        return torch.clamp(a / 6 + 0.5, 0, 1)

    c = hs(a_f) * c + hs(a_i) * torch.tanh(a_g)
    return hs(a_o) * torch.tanh(c), c


def mgu(p, x, state, truncated):
    """Zhou et al. (2016): f = σ(x W_f + h R_f + b_f); n = tanh(x W_n + (f ⊙ h) R_n + b_n)."""
    (h,) = state
    hr = h.detach() if truncated else h
    H = h.shape[-1]
    xw = x @ p["W"] + p["b"]
    f = torch.sigmoid(xw[..., :H] + hr @ p["R"][:, :H])
    n = torch.tanh(xw[..., H:] + (f * hr) @ p["R"][:, H:])
    return ((1 - f) * h + f * n,)


def slstm_exp_forget(p, x, state, truncated):
    """sLSTM with exponential input and forget gates (Beck et al. 2024), dense R, stabilised by m."""
    h, c, n, m = state
    hr = h.detach() if truncated else h
    a_i, a_f, a_z, a_o = (x @ p["W"] + hr @ p["R"] + p["b"]).chunk(4, dim=-1)
    # From an empty normaliser m = a_i and nothing is carried (the rule of the built-in slstm).
    empty = n == 0
    m_new = torch.where(empty, a_i, torch.maximum(a_f + m, a_i))
    zero = torch.zeros_like(a_f)
    i, f = torch.exp(a_i - m_new), torch.where(empty, zero, torch.exp(torch.where(empty, zero, a_f + m - m_new)))
    c = f * c + i * torch.tanh(a_z)
    n = f * n + i
    return torch.sigmoid(a_o) * c / n, c, n, m_new


def indrnn_hard_sigmoid(p, x, state, truncated):
    """A hard-sigmoid keep gate over the IndRNN's relu6 candidate; the recurrences are elementwise."""
    (h,) = state
    hr = h.detach() if truncated else h
    xw_f, xw_n = (x @ p["W"] + p["b"]).chunk(2, dim=-1)
    f = torch.clamp((xw_f + p["w_f"] * hr) / 6 + 0.5, 0, 1)
    # min(max(n, 0), 6) as the spec writes it: torch.maximum splits the gradient at a tie, clamp would not.
    n = xw_n + p["u"] * hr
    n = torch.minimum(torch.maximum(n, torch.zeros_like(n)), torch.full_like(n, 6.0))
    return (f * h + (1 - f) * n,)


def gru_layernorm(p, x, state, truncated):
    """A GRU whose h R is layer-normalised over its 3H units (gain gamma_h), torch's own layer_norm."""
    (h,) = state
    hr = h.detach() if truncated else h
    three_h = p["b"].shape[0]
    normed = torch.nn.functional.layer_norm(hr @ p["R"], (three_h,), weight=p["gamma_h"], eps=1e-5)
    xw_r, xw_z, xw_n = (x @ p["W"] + p["b"]).chunk(3, dim=-1)
    hr_r, hr_z, hr_n = normed.chunk(3, dim=-1)
    r, z = torch.sigmoid(xw_r + hr_r), torch.sigmoid(xw_z + hr_z)
    n = torch.tanh(xw_n + r * hr_n)
    return ((1 - z) * n + z * h,)


REFERENCES = {
    "lstm_hard_sigmoid.toml": hard_sigmoid_lstm,
    "mgu.toml": mgu,
    "slstm_exp_forget.toml": slstm_exp_forget,
    "indrnn_hard_sigmoid.toml": indrnn_hard_sigmoid,
    "gru_layernorm.toml": gru_layernorm,
}


@pytest.fixture(scope="module")
def example_modules():
    out = EXAMPLE_MODULES  # a fixed place: numba's cache of these modules outlives the run
    out.mkdir(parents=True, exist_ok=True)
    return {
        (name, mode): load_module(write_module(EXAMPLES / name, out, mode))
        for name in REFERENCES
        for mode in ("full", "truncated")
    }


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.toml")} == set(REFERENCES)


@pytest.mark.parametrize("mode", ["full", "truncated"])
@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_example_matches_autograd(example_modules, name, mode, dtype):
    module = example_modules[(name, mode)]
    x, params, state, dy, dstate = random_problem(module, (6, 3, 4, 5), dtype, seed=7)
    if "n" in module.STATE:  # the sLSTM's normaliser starts positive, as it stays
        k = module.STATE.index("n")
        state = (*state[:k], np.abs(state[k]) + dtype(0.5), *state[k + 1 :])
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ts = tuple(torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in state)
    current, ys = ts, []
    for t in range(x.shape[0]):
        current = REFERENCES[name](tp, tx[t], current, mode == "truncated")
        ys.append(current[0])
    loss = (torch.stack(ys) * torch.tensor(dy, dtype=torch.float64)).sum()
    loss = loss + sum((f * torch.tensor(d, dtype=torch.float64)).sum() for f, d in zip(current, dstate, strict=True))
    loss.backward()

    y, final, tape = module.forward(x, params, state)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    rtol, atol, floor = (1e-9, 1e-12, 1.0) if dtype == np.float64 else (1e-4, 1e-5, 0.0)
    assert_close(y, torch.stack(ys).detach().numpy(), rtol, atol, "y", floor)
    assert_close(dx, tx.grad.numpy(), rtol, atol, "dx", floor)
    for k in module.PARAMS:
        assert_close(grads[k], tp[k].grad.numpy(), rtol, atol, f"d{k}", floor)
    for s, g, ref in zip(module.STATE, dstate0, ts, strict=True):
        # Truncated: an initial h that only enters the pre-activations gets no gradient (None in torch).
        expected = np.zeros_like(g) if ref.grad is None else ref.grad.numpy()
        assert_close(g, expected, rtol, atol, f"dstate0[{s}]", floor)
    assert all(f.dtype == dtype for f in final)


def test_load_accepts_a_spec_path(tmp_path, monkeypatch):
    import lstmgen

    monkeypatch.setenv("LSTMGEN_CACHE_DIR", str(tmp_path))
    module = lstmgen.load(str(EXAMPLES / "mgu.toml"))
    assert module.VARIANT == "mgu" and module.GATES == ("f", "n") and module.STATE == ("h",)
    assert (tmp_path / module_spec_fingerprint(module) / "mgu.py").is_file()


def test_cli_generates_from_a_spec(tmp_path, capsys):
    assert main(["generate", "--spec", str(EXAMPLES / "mgu.toml"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "mgu.py").read_text() == generate_source(EXAMPLES / "mgu.toml")


GOOD = """
name = "cell"
state = ["h"]
[[gates]]
name = "f"
activation = "sigmoid"
[equations]
h = "f*h_prev"
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('h = "f*h_prev"', 'h = "f*q"'), "equations[0] (h): unknown name 'q'"),
        (('name = "cell"\n', ""), "name: missing field"),
        (('activation = "sigmoid"', 'activation = "swish"'), "gates[0].activation: unknown activation 'swish'"),
        (('h = "f*h_prev"', 'h = "tanh(f, h_prev)"'), "equations[0] (h): tanh takes exactly one argument"),
        (('state = ["h"]', 'state = ["h", "c"]'), "equations: state 'c' is never updated"),
        (('name = "cell"', 'name = "my cell"'), "name: 'my cell' is not a valid name"),
        (('name = "f"\n', 'name = "class"\n'), "gates[0].name: 'class' is reserved"),
        (('state = ["h"]', 'state = "h"'), "state: expected an array of strings"),
        (('name = "cell"', 'name = "cell"\ncolour = "red"'), "colour: unknown field"),
        (('activation = "sigmoid"', 'activation = "sigmoid"\nbias = 1'), "gates[0].bias: unknown field"),
        (('h = "f*h_prev"', "h = \"__import__('os').getcwd()\""), "equations[0] (h): unknown function"),
        (('h = "f*h_prev"', 'h = "h_prev.__class__"'), "is not allowed in an equation"),
        (("[equations]", "[equations"), "not valid TOML"),
        (('state = ["h"]', 'state = ["h"]\nheads = "4"'), "heads: expected an integer, got str"),
        (('state = ["h"]', 'state = ["h"]\nheads = 0'), "heads: expected a positive integer"),
        (('state = ["h"]', 'state = ["h"]\ninputs = "mask"'), "inputs: expected an array of strings"),
        (('state = ["h"]', 'state = ["h"]\ninputs = ["d_h"]'), "inputs[0]: 'd_h' uses a reserved prefix"),
        (('h = "f*h_prev"', 'h = "select(f, h_prev)"'), "equations[0] (h): select takes exactly 3 arguments"),
    ],
)
def test_bad_spec_file(tmp_path, capsys, change, message):
    path = tmp_path / "cell.toml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(SpecError) as exc:
        load_spec_file(path)
    text = str(exc.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    out = tmp_path / "out"
    out.mkdir()
    assert main(["generate", "--spec", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"lstmgen: error: {text}"
    assert list(out.iterdir()) == []


def test_good_spec_file_loads(tmp_path):
    path = tmp_path / "cell.toml"
    path.write_text(GOOD)
    assert load_spec_file(path).name == "cell"


def test_a_spec_file_declares_inputs_and_heads(tmp_path):
    path = tmp_path / "cell.toml"
    text = GOOD.replace('state = ["h"]', 'state = ["h"]\ninputs = ["keep"]\nheads = 2')
    path.write_text(text.replace('h = "f*h_prev"', 'h = "keep*h_prev + (1 - keep)*select(f - 0.5, f, hR_f)"'))
    spec = load_spec_file(path)
    assert spec.inputs == ("keep",) and spec.heads == 2 and spec.recurrent_gates == ("f",)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec_file(tmp_path / "none.toml")


def test_one_bad_spec_among_good_ones_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("f*h_prev", "f*"))
    assert (
        main(["generate", "lstm", "--spec", str(EXAMPLES / "mgu.toml"), "--spec", str(bad), "--out", str(tmp_path)])
        == 2
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_a_user_cell_named_like_a_builtin_has_its_own_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTMGEN_CACHE_DIR", str(tmp_path))
    spec = tmp_path / "lstm.toml"
    spec.write_text('name = "lstm"\nstate = ["h"]\n[[gates]]\nname = "g"\nactivation = "tanh"\n[equations]\nh = "g"\n')
    mine, builtin = lstmgen.load(spec), lstmgen.load("lstm")
    assert mine.STATE == ("h",) and builtin.STATE == ("h", "c")
    assert Path(mine.__file__).parent != Path(builtin.__file__).parent
    assert lstmgen.load(spec).STATE == ("h",)  # loading the built-in did not overwrite the user's cell


@pytest.mark.parametrize("below", [False, True])
def test_cache_dir_that_is_a_file(tmp_path, monkeypatch, below):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("LSTMGEN_CACHE_DIR", str(tmp_path / "f" / "sub" if below else tmp_path / "f"))
    with pytest.raises(OSError, match=r"LSTMGEN_CACHE_DIR: cannot create .* set LSTMGEN_CACHE_DIR to a writable"):
        lstmgen.load("rnn_tanh")


def module_spec_fingerprint(module) -> str:
    """The spec fingerprint a generated module's banner records."""
    return re.search(r"from spec ([0-9a-f]{16})", module.__doc__).group(1)
