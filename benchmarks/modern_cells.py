"""Side-by-side benchmark of the modern built-ins (modern-cells.md) against the best PyTorch a user would write.

    python benchmarks/modern_cells.py                         # every cell, size and dtype (long)
    python benchmarks/modern_cells.py --cells indrnn,sru --sizes S2,S3 --dtypes float32
    python benchmarks/modern_cells.py --quick                 # seconds: keeps the harness alive in tests

For each cell, size (T, B, I, H) and dtype, forward+backward (loss = sum(y * A), gradients to every parameter
and x), interleaved in one process after warm-up, median of repeated runs (the timing of run.py, each sample
repeating the call for about 20 ms):
  * the generated module;
  * the PyTorch loop a user would write for it (input projection of all steps at once, then the time loop),
    eager and TorchScript, both with autograd, and for `sru` the `sru` package's CPU path when it is
    installed; the fastest is the one compared;
  * the GEMM floor: the cell's BLAS calls alone (input projection, per-step recurrent products, dx, dW, dR),
    no elementwise work; the best PyTorch time over it bounds the speedup any kernel can reach;
  * the generated `lstm` at the same size: a cell without R should take at most half its time, and for
    `layernorm_lstm` the difference is what its three layer norms cost (reported as a share of its step);
  * for the sLSTM's block-diagonal R (4 heads) at S3 and S4: its per-step recurrent products as the generated
    kernels do them (per head: a copy, a GEMM, the spread into gate order), against one dense GEMM.
The RG-LRU reads x_t itself, so it runs with I = H. The layer-normalised LSTM's PyTorch loop normalises x W for all
steps at once with torch.nn.functional.layer_norm, then h R and c per step. The projected LSTM (`lstmp`) runs with
P = H/2 and is also timed against torch.nn.LSTM(proj_size=P) itself (torch's own C++ loop).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _run_py():
    """benchmarks/run.py (a script, not a package module): its sizes, machine facts and timing."""
    spec = importlib.util.spec_from_file_location("lstmgen_benchmark_run", Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RUN = _run_py()
SIZES, machine, time_interleaved = _RUN.SIZES, _RUN.machine, _RUN.time_interleaved

CELLS = (
    "indrnn",
    "sru",
    "mingru",
    "minlstm",
    "janet",
    "ligru",
    "rg_lru",
    "zoneout_lstm",
    "slstm",
    "layernorm_lstm",
    "lstmp",
)
NO_R = ("indrnn", "sru", "mingru", "minlstm", "rg_lru")
#: Cells timed beside the generated `lstm`: those without R (at most half its time) and the layer-normalised
#: LSTM (the share of its time that the normalisation costs).
BESIDE_LSTM = (*NO_R, "layernorm_lstm")
QUICK_SIZES = {"tiny": (12, 2, 8, 8)}


# ------------------------------------------------------------------- the PyTorch loops (TorchScript-able)
def indrnn_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    u = p[0]
    ys = []
    for t in range(xw.shape[0]):
        h = torch.relu(xw[t] + u * h)
        ys.append(h)
    return torch.stack(ys)


def sru_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    v_f, v_r = p[0], p[1]
    c = h
    ys = []
    for t in range(xw.shape[0]):
        n, f, r, s = xw[t].chunk(4, 1)
        f = torch.sigmoid(f + v_f * c)
        r = torch.sigmoid(r + v_r * c)
        c = f * c + (1 - f) * n
        ys.append(r * c + (1 - r) * s)
    return torch.stack(ys)


def mingru_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    ys = []
    for t in range(xw.shape[0]):
        z, n = xw[t].chunk(2, 1)
        z = torch.sigmoid(z)
        h = (1 - z) * h + z * n
        ys.append(h)
    return torch.stack(ys)


def minlstm_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    ys = []
    for t in range(xw.shape[0]):
        f, i, n = xw[t].chunk(3, 1)
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        h = (f * h + i * n) / (f + i)
        ys.append(h)
    return torch.stack(ys)


def janet_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    R = p[0]
    ys = []
    for t in range(xw.shape[0]):
        a_f, a_g = (xw[t] + h @ R).chunk(2, 1)
        h = torch.sigmoid(a_f) * h + (1 - torch.sigmoid(a_f - 1)) * torch.tanh(a_g)
        ys.append(h)
    return torch.stack(ys)


def ligru_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    R = p[0]
    ys = []
    for t in range(xw.shape[0]):
        a_z, a_n = (xw[t] + h @ R).chunk(2, 1)
        z = torch.sigmoid(a_z)
        h = z * h + (1 - z) * torch.relu(a_n)
        ys.append(h)
    return torch.stack(ys)


def rg_lru_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    softplus_lam = torch.nn.functional.softplus(p[0])
    ys = []
    for t in range(xw.shape[0]):
        a, i = xw[t].chunk(2, 1)
        decay = torch.exp(-8 * torch.sigmoid(a) * softplus_lam)
        h = decay * h + torch.sqrt(1 - decay * decay) * (torch.sigmoid(i) * x[t])
        ys.append(h)
    return torch.stack(ys)


def zoneout_lstm_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    R = p[0]
    keep_c, keep_h = masks[0], masks[1]
    c = h
    ys = []
    for t in range(xw.shape[0]):
        a_i, a_f, a_g, a_o = (xw[t] + h @ R).chunk(4, 1)
        c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        h = keep_h[t] * h + (1 - keep_h[t]) * (torch.sigmoid(a_o) * torch.tanh(c_new))
        c = keep_c[t] * c + (1 - keep_c[t]) * c_new
        ys.append(h)
    return torch.stack(ys)


def slstm_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    """The sLSTM with a block-diagonal R (heads, d, 4d): one batched product per step."""
    R = p[0]
    heads, d = R.shape[0], R.shape[1]
    batch = h.shape[0]
    c, n, m = torch.zeros_like(h), torch.zeros_like(h), torch.zeros_like(h)
    ys = []
    for t in range(xw.shape[0]):
        rec = torch.einsum("bkd,kdg->bkg", h.view(batch, heads, d), R)
        rec = rec.view(batch, heads, 4, d).permute(0, 2, 1, 3).reshape(batch, 4 * heads * d)
        a_i, a_f, a_z, a_o = (xw[t] + rec).chunk(4, 1)
        log_f = torch.nn.functional.logsigmoid(a_f)
        empty = n == 0
        m_new = torch.where(empty, a_i, torch.maximum(log_f + m, a_i))
        zero = torch.zeros_like(a_f)
        i = torch.exp(a_i - m_new)
        f = torch.where(empty, zero, torch.exp(torch.where(empty, zero, log_f + m - m_new)))
        c = f * c + i * torch.tanh(a_z)
        n = f * n + i
        m = m_new
        h = torch.sigmoid(a_o) * c / n
        ys.append(h)
    return torch.stack(ys)


def layernorm_lstm_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    """xw is already layer_norm(x W; gamma_x) + b for all steps (see input_projection)."""
    R, gamma_h, gamma_c, beta_c = p[0], p[2], p[3], p[4]
    four_h = R.shape[1]
    c = h
    ys = []
    for t in range(xw.shape[0]):
        a = xw[t] + torch.nn.functional.layer_norm(h @ R, [four_h], gamma_h, None, 1e-5)
        a_i, a_f, a_g, a_o = a.chunk(4, 1)
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        normed = torch.nn.functional.layer_norm(c, [c.shape[1]], gamma_c, beta_c, 1e-5)
        h = torch.sigmoid(a_o) * torch.tanh(normed)
        ys.append(h)
    return torch.stack(ys)


def lstmp_loop(x: Tensor, xw: Tensor, p: list[Tensor], masks: list[Tensor], h: Tensor) -> Tensor:
    """h (B, P) = (o * tanh(c)) W_p with c (B, H); R (P, 4H)."""
    R, W_p = p[0], p[1]
    c = torch.zeros(xw.shape[1], W_p.shape[0], dtype=xw.dtype)
    ys = []
    for t in range(xw.shape[0]):
        a_i, a_f, a_g, a_o = (xw[t] + h @ R).chunk(4, 1)
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        h = (torch.sigmoid(a_o) * torch.tanh(c)) @ W_p
        ys.append(h)
    return torch.stack(ys)


def proj_size(name: str, hidden: int) -> int | None:
    """P of the projected LSTM in this benchmark (H/2, as speech models project to a fraction of the cell)."""
    return max(1, hidden // 2) if name == "lstmp" else None


LOOPS = {name: globals()[f"{name}_loop"] for name in CELLS}


def input_projection(name: str, x: Tensor, tensors: dict[str, Tensor]) -> Tensor:
    """What the loop reads for every step, computed for all steps at once: x W + b, or for the layer-normalised
    LSTM layer_norm(x W; gamma_x) + b (its bias enters after the normalisation)."""
    if name == "layernorm_lstm":
        xw = torch.matmul(x, tensors["W"])
        return torch.nn.functional.layer_norm(xw, xw.shape[-1:], tensors["gamma_x"], None, 1e-5) + tensors["b"]
    return torch.matmul(x, tensors["W"]) + tensors["b"]


# ----------------------------------------------------------------------------------------------- runners
def _problem(name: str, size, dtype):
    T, B, I, H = size
    if name == "rg_lru":
        I = H
    module = importlib.import_module(f"generated.{name}")
    rng = np.random.default_rng(0)
    heads = None if module.HEADS is None else max(k for k in range(1, module.HEADS + 1) if H % k == 0)
    P = proj_size(name, H)
    params = module.init_params(I, H, dtype=dtype, seed=0, heads=heads, **({"proj_size": P} if P else {}))
    x = rng.standard_normal((T, B, I)).astype(dtype)
    a = rng.standard_normal((T, B, P or H)).astype(dtype)
    masks = {m: (rng.uniform(0, 1, (T, B, H)) < 0.15).astype(dtype) for m in module.INPUTS}
    return module, params, x, a, masks


def generated_runner(name: str, size, dtype):
    module, params, x, a, masks = _problem(name, size, dtype)

    def run():
        _y, _, tape = module.forward(x, params, inputs=masks or None)
        module.backward(a, tape)

    return run


@functools.cache  # one compilation per process: numba cannot cache local functions on disk
def _floor_kernels():
    import numba

    @numba.njit
    def dense_calls(x2, W, R, h, gates, rec, grad_h, d_gates):
        steps, batch, hidden = h.shape
        np.dot(x2, W, gates)
        for t in range(steps):
            np.dot(h[t], R, rec)
        d_seq = d_gates.reshape(steps, batch, d_gates.shape[1])
        for t in range(steps - 1, -1, -1):
            np.dot(R, d_seq[t].T, grad_h)  # every built-in with R has a block of it for each gate
        return np.dot(d_gates, W.T), np.dot(x2.T, d_gates), np.dot(h.reshape(steps * batch, hidden).T, d_gates)

    @numba.njit
    def input_calls(x2, W, gates):
        np.dot(x2, W, gates)
        return np.dot(gates, W.T), np.dot(x2.T, gates)

    @numba.njit
    def projection_calls(u, W_p, h, dh, du):
        steps = u.shape[0]
        for t in range(steps):
            np.dot(u[t], W_p, h[t])
        for t in range(steps - 1, -1, -1):
            np.dot(dh[t], W_p.T, du)
        return np.dot(u.reshape(steps * u.shape[1], u.shape[2]).T, dh.reshape(steps * dh.shape[1], dh.shape[2]))

    return dense_calls, input_calls, projection_calls


def floor_runner(name: str, size, dtype):
    """The BLAS calls of the generated cell alone, on preallocated buffers, no elementwise work: the input
    projection, the per-step recurrent GEMMs forward and backward (dense ones of the same size for the sLSTM's
    heads, an upper bound), dx, dW and dR. No implementation built on these products can be faster; the best
    PyTorch loop divided by this time bounds the speedup any kernel can reach."""
    module, params, x, a, _ = _problem(name, size, dtype)
    dense_calls, input_calls, projection_calls = _floor_kernels()
    T, B, I = x.shape
    H, G, Gr = size[3], len(module.GATES), len(module.RECURRENT_GATES)
    rng = np.random.default_rng(0)
    x2, W = x.reshape(T * B, I), params["W"]
    gates = np.empty((T * B, G * H), dtype)
    if not Gr:
        return lambda: input_calls(x2, W, gates)
    P = a.shape[2]  # the width of h: H, or P of a projected output
    R = rng.standard_normal((P, Gr * H)).astype(dtype)
    h = rng.standard_normal((T, B, P)).astype(dtype)
    rec, grad_h = np.empty((B, Gr * H), dtype), np.empty((P, B), dtype)
    if "W_p" not in params:
        return lambda: dense_calls(x2, W, R, h, gates, rec, grad_h, gates)
    # A projected output adds u W_p per step forward, dh W_p^T per step backward and dW_p.
    u, du, W_p = rng.standard_normal((T, B, H)).astype(dtype), np.empty((B, H), dtype), params["W_p"]

    def run():
        dense_calls(x2, W, R, h, gates, rec, grad_h, gates)
        projection_calls(u, W_p, h, a, du)

    return run


def torch_runner(name: str, size, dtype, scripted: bool):
    module, params, x, a, masks = _problem(name, size, dtype)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    ta = torch.tensor(a)
    tmasks = [torch.tensor(masks[m]) for m in module.INPUTS]
    rest = [tensors[k] for k in module.PARAMS if k not in ("W", "b")]
    h0 = torch.zeros(x.shape[1], a.shape[2], dtype=ta.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = torch.jit.script(LOOPS[name]) if scripted else LOOPS[name]

    def run():
        for t in (tx, *tensors.values()):
            t.grad = None
        xw = input_projection(name, tx, tensors)
        (loop(tx, xw, rest, tmasks, h0) * ta).sum().backward()

    return run


def torch_lstm_runner(size, dtype):
    """torch.nn.LSTM(proj_size=P) itself: torch's own loop of the projected LSTM."""
    T, B, I, H = size
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(0)
    net = torch.nn.LSTM(I, H, proj_size=proj_size("lstmp", H), dtype=tdtype)
    x = torch.randn(T, B, I, dtype=tdtype, requires_grad=True)
    a = torch.randn(T, B, proj_size("lstmp", H), dtype=tdtype)

    def run():
        net.zero_grad(set_to_none=True)
        x.grad = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "LSTM with projections is not supported with oneDNN"
            out, _ = net(x)
        (out * a).sum().backward()

    return run


def batched(runners: dict, sample_seconds: float) -> tuple[dict, dict]:
    """Each runner repeated enough times that one timed sample lasts about ``sample_seconds``: the harness sleeps
    before every sample (so that no thread pool spins into the next contender), and a single sub-millisecond
    call right after a sleep measures the wake-up, not the cell. Returns the repeated runners and the counts."""
    counts, out = {}, {}
    for name, run in runners.items():
        run()
        t0 = time.perf_counter()
        run()
        once = max(time.perf_counter() - t0, 1e-6)
        counts[name] = max(1, min(1000, round(sample_seconds / once)))

        def repeated(run=run, n=counts[name]):
            for _ in range(n):
                run()

        out[name] = repeated
    return out, counts


def sru_package_runner(size, dtype):
    """The `sru` package's SRU (Lei et al.'s code), its CPU training path; None when it is not installed.

    Its cell is lstmgen's `sru` without the biases of n and s (it has the highway projection of the same size
    when I != H): the same products and elementwise work."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sru
    except Exception:
        return None
    T, B, I, H = size
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(0)
    net = sru.SRU(I, H, num_layers=1, rescale=False, layer_norm=False, highway_bias=0.0).to(tdtype)
    x = torch.randn(T, B, I, dtype=tdtype, requires_grad=True)
    a = torch.randn(T, B, H, dtype=tdtype)

    def run():
        net.zero_grad(set_to_none=True)
        x.grad = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Running SRU on CPU with grad_enabled=True"
            out, _ = net(x)
        (out * a).sum().backward()

    return run


def bench(cells, sizes, dtypes, repeats, min_seconds) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for label, size in sizes.items():
            for name in cells:
                runners = {
                    "lstmgen": generated_runner(name, size, dtype),
                    "torch eager": torch_runner(name, size, dtype, scripted=False),
                    "torch TorchScript": torch_runner(name, size, dtype, scripted=True),
                    "lstmgen lstm": generated_runner("lstm", size, dtype) if name in BESIDE_LSTM else None,
                    "GEMM floor": floor_runner(name, size, dtype),
                    "sru package": sru_package_runner(size, dtype) if name == "sru" else None,
                    "torch nn.LSTM": torch_lstm_runner(size, dtype) if name == "lstmp" and size[3] > 1 else None,
                }
                runners = {k: v for k, v in runners.items() if v is not None}
                runners, counts = batched(runners, 0.02)
                times = {k: v / counts[k] for k, v in time_interleaved(runners, repeats, min_seconds).items()}
                contenders = ("torch eager", "torch TorchScript", "sru package", "torch nn.LSTM")
                best = min((k for k in contenders if k in times), key=times.get)
                row = {
                    "cell": name,
                    "size": label,
                    "shape": size,
                    "dtype": np.dtype(dtype).name,
                    "ours_ms": 1e3 * times["lstmgen"],
                    "eager_ms": 1e3 * times["torch eager"],
                    "script_ms": 1e3 * times["torch TorchScript"],
                    "best_torch": best,
                    "speedup": times[best] / times["lstmgen"],
                }
                if "sru package" in times:
                    row["sru_package_ms"] = 1e3 * times["sru package"]
                if "torch nn.LSTM" in times:
                    row["nn_lstm_ms"] = 1e3 * times["torch nn.LSTM"]
                row["floor_ms"] = 1e3 * times["GEMM floor"]
                row["max_speedup"] = times[best] / times["GEMM floor"]
                if "lstmgen lstm" in times:
                    row["lstm_ms"] = 1e3 * times["lstmgen lstm"]
                    row["of_lstm"] = times["lstmgen"] / times["lstmgen lstm"]
                if name == "layernorm_lstm":  # what the three layer norms add to the LSTM's step
                    row["norm_share"] = 1 - times["lstmgen lstm"] / times["lstmgen"]
                rows.append(row)
                extra = f", {row['of_lstm']:.2f} of lstm's time" if "of_lstm" in row else ""
                extra += f" (layer norm: {100 * row['norm_share']:.0f}% of the step)" if "norm_share" in row else ""
                print(
                    f"{name:13s} {label:6s} {row['dtype']:7s} lstmgen {row['ours_ms']:9.2f} ms  "
                    f"{best} {1e3 * times[best]:9.2f} ms  speedup {row['speedup']:6.1f}x  "
                    f"(GEMM floor {row['floor_ms']:.2f} ms: at most {row['max_speedup']:.1f}x){extra}",
                    flush=True,
                )
    return rows


@functools.cache  # one compilation per process, as _floor_kernels
def _head_kernels():
    """numba functions doing what a generated step does for its recurrent products: per head, a copy of the
    head's units, one GEMM and the spread into gate-major order (forward; backward the gather and the GEMM
    computed transposed), and the dense GEMM of the same product."""
    import numba

    @numba.njit
    def heads_forward(h, R, rec_buf, head_in, head_out):
        heads, head_size = R.shape[0], R.shape[1]
        batch, hidden = h.shape[1], h.shape[2]
        for t in range(h.shape[0]):
            head_source = h[t]
            for k in range(heads):
                lo = k * head_size
                for nb in range(batch):
                    for i in range(head_size):
                        head_in[k, nb, i] = head_source[nb, lo + i]
                np.dot(head_in[k], R[k], head_out[k])
                for nb in range(batch):
                    for g in range(4):
                        for i in range(head_size):
                            rec_buf[nb, g * hidden + lo + i] = head_out[k, nb, g * head_size + i]

    @numba.njit
    def heads_backward(d_rec, R, gemm_h_buf, head_grad):
        heads, head_size = R.shape[0], R.shape[1]
        batch, hidden = d_rec.shape[1], gemm_h_buf.shape[0]
        for t in range(d_rec.shape[0]):
            head_source = d_rec[t]
            for k in range(heads):
                lo = k * head_size
                for nb in range(batch):
                    for g in range(4):
                        for i in range(head_size):
                            head_grad[k, nb, g * head_size + i] = head_source[nb, g * hidden + lo + i]
                np.dot(R[k], head_grad[k].T, gemm_h_buf[lo : lo + head_size])

    @numba.njit
    def dense_forward(h, R, rec_buf):
        for t in range(h.shape[0]):
            np.dot(h[t], R, rec_buf)

    @numba.njit
    def dense_backward(d_rec, R, gemm_h_buf):
        for t in range(d_rec.shape[0]):
            np.dot(R, d_rec[t].T, gemm_h_buf)

    return heads_forward, heads_backward, dense_forward, dense_backward


def _product_runners(kernels, shape, heads: int, dtype) -> dict:
    heads_forward, heads_backward, dense_forward, dense_backward = kernels
    T, B, H = shape
    d = H // heads
    rng = np.random.default_rng(0)
    h = rng.standard_normal((T, B, H)).astype(dtype)
    d_rec = rng.standard_normal((T, B, 4 * H)).astype(dtype)
    R_heads = rng.standard_normal((heads, d, 4 * d)).astype(dtype)
    R_dense = rng.standard_normal((H, 4 * H)).astype(dtype)
    rec_buf = np.empty((B, 4 * H), dtype)
    head_in, head_out = np.empty((heads, B, d), dtype), np.empty((heads, B, 4 * d), dtype)
    gemm_h = np.empty((H, B), dtype)
    return {
        "heads fwd": lambda: heads_forward(h, R_heads, rec_buf, head_in, head_out),
        "dense fwd": lambda: dense_forward(h, R_dense, rec_buf),
        "heads bwd": lambda: heads_backward(d_rec, R_heads, gemm_h, head_out),
        "dense bwd": lambda: dense_backward(d_rec, R_dense, gemm_h),
    }


def head_products(sizes, dtypes, heads: int, repeats: int, min_seconds: float) -> list[dict]:
    """Per-step recurrent products of the sLSTM: ``heads`` block-diagonal GEMMs (as the generated kernels do
    them, with their copies) against one dense GEMM (B, H) x (H, 4H), forward and backward, all steps."""
    kernels = _head_kernels()
    rows = []
    for dtype in dtypes:
        for label, (T, B, _I, H) in sizes.items():
            runners = _product_runners(kernels, (T, B, H), heads, dtype)
            times = time_interleaved(runners, repeats, min_seconds)
            row = {"size": label, "dtype": np.dtype(dtype).name, "heads": heads}
            row.update({f"{k.replace(' ', '_')}_ms": 1e3 * v for k, v in times.items()})
            row["ratio"] = (times["heads fwd"] + times["heads bwd"]) / (times["dense fwd"] + times["dense bwd"])
            rows.append(row)
            ours, dense = row["heads_fwd_ms"] + row["heads_bwd_ms"], row["dense_fwd_ms"] + row["dense_bwd_ms"]
            print(
                f"slstm products {label:6s} {row['dtype']:7s} {heads} heads {ours:8.2f} ms  dense {dense:8.2f} ms  "
                f"ratio {row['ratio']:.2f}",
                flush=True,
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| cell | size | dtype | lstmgen ms | best torch ms (which) | speedup | GEMM floor ms (bound) "
        "| of `lstm`'s time |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {"torch eager": "eager", "torch TorchScript": "TorchScript", "sru package": "sru package"}
    names["torch nn.LSTM"] = "nn.LSTM"
    for r in rows:
        torch_ms = {
            "torch eager": r["eager_ms"],
            "torch TorchScript": r["script_ms"],
            "sru package": r.get("sru_package_ms"),
            "torch nn.LSTM": r.get("nn_lstm_ms"),
        }[r["best_torch"]]
        of_lstm = f"{r['of_lstm']:.2f}" if "of_lstm" in r else "–"
        of_lstm += f" (layer norm {100 * r['norm_share']:.0f}%)" if "norm_share" in r else ""
        lines.append(
            f"| `{r['cell']}` | {r['size']} | {r['dtype']} | {r['ours_ms']:.2f} | {torch_ms:.2f} "
            f"({names[r['best_torch']]}) | {r['speedup']:.1f}× | {r['floor_ms']:.2f} ({r['max_speedup']:.1f}×) "
            f"| {of_lstm} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny size and few repeats (seconds)")
    parser.add_argument("--cells", help=f"comma-separated subset of {', '.join(CELLS)}")
    parser.add_argument("--sizes", help=f"comma-separated subset of {', '.join(SIZES)}")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--markdown", action="store_true", help="also print the results as a markdown table")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    cells = args.cells.split(",") if args.cells else list(CELLS)
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        parser.error(f"--cells: unknown {unknown} (expected some of {', '.join(CELLS)})")
    sizes = QUICK_SIZES if args.quick else {k: SIZES[k] for k in (args.sizes.split(",") if args.sizes else SIZES)}
    repeats, min_seconds = (2, 0.0) if args.quick else (args.repeats, 1.0)
    dtypes = [np.dtype(d).type for d in args.dtypes.split(",")]
    rows = bench(cells, sizes, dtypes, repeats, min_seconds)
    product_sizes = sizes if args.quick else {k: v for k, v in sizes.items() if k in ("S3", "S4")}
    products = head_products(product_sizes, dtypes, 4 if not args.quick else 2, repeats, min_seconds)
    result = {"machine": machine(), "threads": torch.get_num_threads(), "results": rows, "slstm_products": products}
    if args.json:  # first: a table that fails to print must not lose the run
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        print(markdown_table(rows))
    return result


if __name__ == "__main__":
    main()
