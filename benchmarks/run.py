"""Side-by-side benchmark: generated kernels against what a user would otherwise run, in one process.

    python benchmarks/run.py                      # every size, float32 and float64 (several minutes)
    python benchmarks/run.py --quick              # seconds: a tiny size, to keep the harness alive in tests
    python benchmarks/run.py --sizes S1,S3 --json out.json --plot out.png

For each size (T, B, I, H) and dtype, interleaved, after warm-up, median of repeated runs, torch and numba
both on the same number of threads:
  * generated `lstm` against torch.nn.LSTM;
  * generated `gru` against torch.nn.GRU;
  * generated `lstm_peephole` against the best PyTorch loop a user could write for a cell torch lacks
    (eager autograd and TorchScript; the faster is reported);
  * JAX (jit of value_and_grad over a lax.scan cell) where it is installed;
  * the machine's GEMM rate, measured in the same run: one GEMM with the forward pass's FLOPs (numba's
    np.dot, the BLAS the kernels use);
  * a floor: only the BLAS calls the generated `lstm` makes, with no elementwise work, against torch.nn.LSTM.
Forward only and forward+backward (loss = sum(y * A) for a fixed random A; gradients to every parameter and
the input). Results also in GFLOP/s (forward 2·T·B·(I+H)·G·H, backward twice that) and % of the GEMM rate.
Also reported: time to generate each module, cold first call (JIT compile, empty numba cache) and warm import
from numba's cache, each in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {
    "S1": (1000, 1, 16, 32),
    "S2": (100, 32, 64, 128),
    "S3": (100, 64, 256, 256),
    "S4": (50, 128, 512, 512),
    "S5": (200, 16, 128, 128),
    "speech": (50, 1, 64, 32),
}
QUICK_SIZES = {"tiny": (20, 2, 8, 16)}
FLOOR = "lstm (GEMM calls alone)"
GATES = {"lstm": 4, "lstm_peephole": 4, "gru": 3, FLOOR: 4}


def flops(size: tuple[int, int, int, int], gates: int, backward: bool) -> float:
    T, B, I, H = size
    forward = 2.0 * T * B * (I + H) * gates * H
    return forward * (3 if backward else 1)


# --------------------------------------------------------------------------------------------- contenders
def generated_runner(variant: str, size, dtype, backward: bool):
    """A zero-argument callable running the generated module once."""

    module = importlib.import_module(f"generated.{variant}")
    T, B, I, H = size
    rng = np.random.default_rng(0)
    params = module.init_params(I, H, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    a = rng.standard_normal((T, B, H)).astype(dtype)  # loss = sum(y * a), so dy = a

    def run():
        _y, _, tape = module.forward(x, params)
        if backward:
            module.backward(a, tape)

    return run


def torch_module_runner(kind: str, size, dtype, backward: bool):
    T, B, I, H = size
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(0)
    net = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(I, H, dtype=tdtype)
    x = torch.randn(T, B, I, dtype=tdtype, requires_grad=backward)
    a = torch.randn(T, B, H, dtype=tdtype)

    def run():
        if backward:
            net.zero_grad(set_to_none=True)
            x.grad = None
            out, _ = net(x)
            (out * a).sum().backward()
        else:
            with torch.no_grad():
                net(x)

    return run


def _peephole_step(x_proj, h, c, R, p_i, p_f, p_o):
    gates = x_proj + h @ R
    a_i, a_f, a_g, a_o = gates.chunk(4, dim=-1)
    i = torch.sigmoid(a_i + p_i * c)
    f = torch.sigmoid(a_f + p_f * c)
    c = f * c + i * torch.tanh(a_g)
    o = torch.sigmoid(a_o + p_o * c)
    return o * torch.tanh(c), c


def _peephole_loop(x, W, R, b, p_i, p_f, p_o, h, c):
    """The best plain-PyTorch peephole LSTM: input projection of all steps at once, then the time loop."""
    x_proj = torch.matmul(x, W) + b
    outputs = []
    for t in range(x.shape[0]):
        h, c = _peephole_step(x_proj[t], h, c, R, p_i, p_f, p_o)
        outputs.append(h)
    return torch.stack(outputs)


def torch_loop_runner(size, dtype, backward: bool, scripted: bool):
    T, B, I, H = size
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    g = torch.Generator().manual_seed(0)
    bound = 1 / H**0.5

    def param(*shape):
        return ((torch.rand(*shape, generator=g, dtype=tdtype) * 2 - 1) * bound).requires_grad_(backward)

    W, R, b = param(I, 4 * H), param(H, 4 * H), param(4 * H)
    p_i, p_f, p_o = param(H), param(H), param(H)
    x = torch.randn(T, B, I, dtype=tdtype, generator=g, requires_grad=backward)
    a = torch.randn(T, B, H, dtype=tdtype, generator=g)
    h0 = torch.zeros(B, H, dtype=tdtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the issue asks for TorchScript, deprecated or not
        loop = torch.jit.script(_peephole_loop) if scripted else _peephole_loop
    tensors = (W, R, b, p_i, p_f, p_o)

    def run():
        if backward:
            for tensor in (x, *tensors):
                tensor.grad = None
            (loop(x, *tensors, h0, h0) * a).sum().backward()
        else:
            with torch.no_grad():
                loop(x, *tensors, h0, h0)

    return run


def jax_runner(size, dtype, backward: bool):
    """JAX: jit of (value_and_grad of) a lax.scan LSTM cell; None when JAX is not installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    T, B, I, H = size
    rng = np.random.default_rng(0)
    params = {
        k: jnp.asarray(rng.uniform(-0.1, 0.1, s).astype(dtype))
        for k, s in {"W": (I, 4 * H), "R": (H, 4 * H), "b": (4 * H,)}.items()
    }
    x = jnp.asarray(rng.standard_normal((T, B, I)).astype(dtype))
    a = jnp.asarray(rng.standard_normal((T, B, H)).astype(dtype))

    def loss(params, x):
        def step(carry, xw):
            h, c = carry
            i, f, gg, o = jnp.split(xw + h @ params["R"], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((B, H), dtype)
        _, ys = jax.lax.scan(step, (zeros, zeros), x @ params["W"] + params["b"])
        return jnp.sum(ys * a)

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)) if backward else loss)

    def run():
        jax.block_until_ready(fn(params, x))

    return run


def onnx_runner(size, dtype):
    """ONNX Runtime's LSTM operator, forward only; None when onnx or onnxruntime is not installed."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    T, B, I, H = size
    rng = np.random.default_rng(0)
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    weights = {  # ONNX layout: gates (i, o, f, c), W (1, 4H, I), R (1, 4H, H), B (1, 8H)
        "W": rng.uniform(-0.1, 0.1, (1, 4 * H, I)).astype(dtype),
        "R": rng.uniform(-0.1, 0.1, (1, 4 * H, H)).astype(dtype),
        "B": rng.uniform(-0.1, 0.1, (1, 8 * H)).astype(dtype),
    }
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=H)
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("X", elem, [T, B, I])],
        [helper.make_tensor_value_info("Y", elem, [T, 1, B, H])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:
        return None
    x = rng.standard_normal((T, B, I)).astype(dtype)

    def run():
        session.run(None, {"X": x})

    try:
        run()  # ONNX Runtime's CPU LSTM has no float64 kernel: the row then says so
    except Exception:
        return None
    return run


def gemm_runner(size, dtype, gates: int):
    """One GEMM with the forward pass's FLOP count, (T·B, I+H) × (I+H, G·H), through numba's np.dot: the
    BLAS (SciPy's OpenBLAS) and thread pool the generated kernels use, so no third pool joins the run."""
    import numba

    T, B, I, H = size
    rng = np.random.default_rng(0)
    left = rng.standard_normal((T * B, I + H)).astype(dtype)
    right = rng.standard_normal((I + H, gates * H)).astype(dtype)
    out = np.empty((T * B, gates * H), dtype=dtype)
    gemm = numba.njit(lambda a, b, c: np.dot(a, b, c))

    def run():
        gemm(left, right, out)

    return run


def gemm_floor_runner(size, dtype, backward: bool):
    """Only the BLAS calls the generated `lstm` makes, on preallocated buffers, with no elementwise work: forward
    one input GEMM (T·B, I) × (I, 4H) and T recurrent GEMMs (B, H) × (H, 4H); backward T GEMMs (H, 4H) × (4H, B)
    and the three gradient GEMMs over all steps. The time any kernel built on these calls would need at least."""
    import numba

    T, B, I, H = size
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T * B, I)).astype(dtype)
    W = rng.standard_normal((I, 4 * H)).astype(dtype)
    R = rng.standard_normal((H, 4 * H)).astype(dtype)
    h = rng.standard_normal((T, B, H)).astype(dtype)
    gates = np.empty((T * B, 4 * H), dtype=dtype)
    rec = np.empty((B, 4 * H), dtype=dtype)
    grad_h = np.empty((H, B), dtype=dtype)

    @numba.njit
    def forward_calls(x, W, R, h, gates, rec):
        np.dot(x, W, gates)
        for t in range(h.shape[0]):
            np.dot(h[t], R, rec)

    @numba.njit
    def backward_calls(x, W, R, h, d_gates, grad_h):
        steps, batch, hidden = h.shape
        d_seq = d_gates.reshape(steps, batch, 4 * hidden)
        for t in range(steps - 1, -1, -1):
            np.dot(R, d_seq[t].T, grad_h)
        dx = np.dot(d_gates, W.T)
        dW = np.dot(x.T, d_gates)
        dR = np.dot(h.reshape(steps * batch, hidden).T, d_gates)
        return dx, dW, dR

    def run():
        forward_calls(x, W, R, h, gates, rec)
        if backward:
            backward_calls(x, W, R, h, gates, grad_h)

    return run


# ----------------------------------------------------------------------------------------------- timing
def time_interleaved(
    runners: dict[str, object], repeats: int, min_seconds: float, settle: float | None = None
) -> dict[str, float]:
    """Median seconds per call of each runner: every round times each runner once, after a warm-up call each.
    The order is shuffled every round (seeded), so that no contender always runs after the same one: whatever a
    predecessor leaves behind (a spinning pool, evicted caches) does not fall on one contender only. ``settle``:
    seconds of sleep before each call; by default 0.1, and none for a quick run (``min_seconds`` 0), whose times
    only show that the harness works."""
    if settle is None:
        settle = 0.1 if min_seconds > 0 else 0.0
    for run in runners.values():
        run()
        run()
    order = random.Random(0)
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_seconds and rounds < 10 * repeats):
        order.shuffle(names)
        for name in names:
            run = runners[name]
            # Let the previous contender's thread pool (torch's OpenMP, numpy's or SciPy's OpenBLAS) stop
            # spinning: on two cores a spinning pool slows the next contender several times over.
            time.sleep(settle)
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_size(label, size, dtype, repeats, min_seconds, include_jax=True) -> list[dict]:
    rows = []
    for backward in (False, True):
        mode = "fwd+bwd" if backward else "fwd"
        runners = {
            "lstmgen lstm": generated_runner("lstm", size, dtype, backward),
            "torch.nn.LSTM": torch_module_runner("lstm", size, dtype, backward),
            "lstmgen gru": generated_runner("gru", size, dtype, backward),
            "torch.nn.GRU": torch_module_runner("gru", size, dtype, backward),
            "lstmgen lstm_peephole": generated_runner("lstm_peephole", size, dtype, backward),
            "torch peephole loop (eager)": torch_loop_runner(size, dtype, backward, scripted=False),
            "torch peephole loop (TorchScript)": torch_loop_runner(size, dtype, backward, scripted=True),
            "GEMM (same FLOPs as fwd)": gemm_runner(size, dtype, 4),
            FLOOR: gemm_floor_runner(size, dtype, backward),
        }
        jax = jax_runner(size, dtype, backward) if include_jax else None
        if jax is not None:
            runners["JAX lax.scan LSTM"] = jax
        onnx = onnx_runner(size, dtype) if include_jax and not backward else None
        if onnx is not None:
            runners["ONNX Runtime LSTM"] = onnx
        times = time_interleaved(runners, repeats, min_seconds)
        gemm_rate = flops(size, 4, False) / times.pop("GEMM (same FLOPs as fwd)")
        loops = ("torch peephole loop (eager)", "torch peephole loop (TorchScript)")
        best_loop = min(loops, key=times.__getitem__)
        pairs = [
            ("lstm", "lstmgen lstm", "torch.nn.LSTM"),
            ("gru", "lstmgen gru", "torch.nn.GRU"),
            ("lstm_peephole", "lstmgen lstm_peephole", best_loop),
            (FLOOR, FLOOR, "torch.nn.LSTM"),
        ]
        missing = {"JAX": jax is None}
        if not backward:
            missing["ONNX Runtime"] = onnx is None
        if jax is not None:
            pairs.append(("lstm", "lstmgen lstm", "JAX lax.scan LSTM"))
        if onnx is not None:
            pairs.append(("lstm", "lstmgen lstm", "ONNX Runtime LSTM"))
        for name, absent in missing.items():
            if absent:
                note = f"{name}: not installed, no {np.dtype(dtype).name} kernel, or not run (--quick)"
                rows.append(
                    {
                        "size": label,
                        "shape": size,
                        "dtype": np.dtype(dtype).name,
                        "mode": mode,
                        "variant": "lstm",
                        "ours": "lstmgen lstm",
                        "theirs": name,
                        "note": note,
                    }
                )
        for variant, ours, theirs in pairs:
            work = flops(size, GATES[variant], backward)
            rows.append(
                {
                    "size": label,
                    "shape": size,
                    "dtype": np.dtype(dtype).name,
                    "mode": mode,
                    "variant": variant,
                    "ours": ours,
                    "theirs": theirs,
                    "ours_ms": 1e3 * times[ours],
                    "theirs_ms": 1e3 * times[theirs],
                    "speedup": times[theirs] / times[ours],
                    "ours_gflops": work / times[ours] / 1e9,
                    "gemm_gflops": gemm_rate / 1e9,
                    "percent_of_gemm": 100 * (work / times[ours]) / gemm_rate,
                    "other_loop_ms": {name: 1e3 * times[name] for name in loops}
                    if variant == "lstm_peephole"
                    else None,
                }
            )
    return rows


# ------------------------------------------------------------------------------------ compile and import
_FIRST_CALL = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {directory!r})
import {module} as m
import numpy as np
t1 = time.perf_counter()
p = m.init_params(8, 16, dtype=np.float32, seed=0)
x = np.ones((5, 2, 8), np.float32)
y, s, tape = m.forward(x, p)
m.backward(np.ones_like(y), tape)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def compile_times(variants: list[str]) -> list[dict]:
    """Generation time, cold first call (empty numba cache) and warm import + first call, per module."""
    from lstmgen import write_module

    rows = []
    for variant in variants:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = write_module(variant, tmp)
            generate_s = time.perf_counter() - start
            env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba_cache")}
            code = _FIRST_CALL.format(directory=tmp, module=path.stem)
            cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            cold_import, cold_call = map(float, cold.stdout.split())
            warm_import, warm_call = map(float, warm.stdout.split())
            rows.append(
                {
                    "variant": variant,
                    "generate_s": generate_s,
                    "cold_first_call_s": cold_import + cold_call,
                    "warm_import_and_first_call_s": warm_import + warm_call,
                    "warm_import_s": warm_import,
                }
            )
    return rows


# ------------------------------------------------------------------------------------------------ output
def machine() -> dict:
    import numba

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def print_table(rows: list[dict], compile_rows: list[dict]) -> None:
    print(
        f"{'size':7} {'dtype':8} {'mode':8} {'variant':25} {'lstmgen ms':>11} {'vs':34} {'their ms':>9} "
        f"{'speedup':>8} {'GFLOP/s':>8} {'% GEMM':>7}"
    )
    for r in rows:
        if "note" in r:
            print(f"{r['size']:7} {r['dtype']:8} {r['mode']:8} {r['variant']:25} {'':>11} {r['theirs']:34} {r['note']}")
            continue
        print(
            f"{r['size']:7} {r['dtype']:8} {r['mode']:8} {r['variant']:25} {r['ours_ms']:11.3f} "
            f"{r['theirs']:34} {r['theirs_ms']:9.3f} {r['speedup']:7.2f}x {r['ours_gflops']:8.1f} "
            f"{r['percent_of_gemm']:6.0f}%"
        )
    print()
    print(
        f"{'module':14} {'generate s':>10} {'cold first call s':>18} {'warm import s':>14} {'warm import+call s':>19}"
    )
    for r in compile_rows:
        print(
            f"{r['variant']:14} {r['generate_s']:10.2f} {r['cold_first_call_s']:18.2f} {r['warm_import_s']:14.2f} "
            f"{r['warm_import_and_first_call_s']:19.2f}"
        )


def markdown_table(rows: list[dict]) -> str:
    """The README's table: ms of lstmgen and of the baseline, speedup, % of the GEMM rate (fwd+bwd)."""
    lines = [
        "| size (T, B, I, H) | dtype | cell: baseline | fwd ms (ours / theirs) | fwd+bwd ms (ours / theirs) "
        "| fwd+bwd speedup | fwd+bwd % of GEMM rate |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    keyed = {
        (r["size"], r["dtype"], r["variant"], r["mode"]): r
        for r in rows
        if "speedup" in r and not r["theirs"].startswith(("JAX", "ONNX"))
    }
    for (size, dtype, variant, mode), r in keyed.items():
        if mode != "fwd":
            continue
        b = keyed[(size, dtype, variant, "fwd+bwd")]
        shape = ", ".join(str(v) for v in r["shape"])
        lines.append(
            f"| {size} ({shape}) | {dtype} | {variant}: {b['theirs']} | {r['ours_ms']:.2f} / "
            f"{r['theirs_ms']:.2f} | {b['ours_ms']:.2f} / {b['theirs_ms']:.2f} | {b['speedup']:.2f}x | "
            f"{b['percent_of_gemm']:.0f}% |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars: per size, the speedup of each generated cell over its torch baseline, fwd and fwd+bwd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [("lstm", "torch.nn.LSTM"), ("gru", "torch.nn.GRU"), ("lstm_peephole", "torch peephole loop")]
    measured = {
        (r["size"], r["dtype"], r["variant"], r["mode"]): r["speedup"]
        for r in rows
        if "speedup" in r and (r["variant"], r["theirs"].split(" (")[0]) in pairs
    }
    sizes = list(dict.fromkeys(r["size"] for r in rows if "speedup" in r))
    bars = [(variant, mode) for variant, _ in pairs for mode in ("fwd", "fwd+bwd")]
    width = 0.8 / len(bars)
    fig, axes = plt.subplots(2, 1, figsize=(11, 7.5), dpi=100, sharex=True)
    for ax, dtype in zip(axes, ("float32", "float64"), strict=True):
        for k, (variant, mode) in enumerate(bars):
            values = [measured.get((size, dtype, variant, mode), float("nan")) for size in sizes]
            ax.bar(
                [i + (k - (len(bars) - 1) / 2) * width for i in range(len(sizes))],
                values,
                width,
                color=f"C{k // 2}",
                alpha=0.55 if mode == "fwd" else 1.0,
                label=f"{variant} vs {dict(pairs)[variant]}, {mode}",
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("speedup (x, log scale)")
        ax.set_title(f"{dtype}: lstmgen over the torch baseline (above 1: lstmgen faster)")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[-1].set_xticks(range(len(sizes)), sizes)
    axes[0].legend(fontsize=7, ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny size and few repeats (seconds)")
    parser.add_argument("--sizes", help=f"comma-separated subset of {', '.join(SIZES)}")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--plot", type=Path, help="write a bar chart of the speedups here (PNG)")
    parser.add_argument("--no-compile-times", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="also print the README's markdown table")
    parser.add_argument("--compile-times-only", action="store_true", help="only generation, cold and warm times")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    sizes = QUICK_SIZES if args.quick else {k: SIZES[k] for k in (args.sizes.split(",") if args.sizes else SIZES)}
    if args.compile_times_only:
        sizes = {}
    repeats, min_seconds = (2, 0.0) if args.quick else (args.repeats, 1.0)
    rows = []
    for label, size in sizes.items():
        for dtype in args.dtypes.split(","):
            rows += bench_size(label, size, np.dtype(dtype).type, repeats, min_seconds, include_jax=not args.quick)
    compile_rows = [] if (args.quick or args.no_compile_times) else compile_times(["lstm", "lstm_peephole", "gru"])
    print_table(rows, compile_rows)
    if args.markdown:
        print(markdown_table(rows))
    result = {
        "machine": machine(),
        "command": " ".join(["python benchmarks/run.py", *(argv or sys.argv[1:])]),
        "results": rows,
        "compile": compile_rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.plot:
        plot(rows, args.plot)
    return result


if __name__ == "__main__":
    main()
