"""Why the recurrent kernels' float32 speed is bounded by the BLAS: the per-step GEMM alone, several ways.

    python benchmarks/per_step_gemm.py            # every benchmark size, 1 and 2 threads (about a minute)
    python benchmarks/per_step_gemm.py --quick    # seconds: tiny shapes, to keep the script alive in tests
    python benchmarks/per_step_gemm.py --tiny     # seconds: where the kernels' loop beats np.dot (ns per product)

Each step of an LSTM forward multiplies the previous hidden state h (B, H) by the recurrent weights R (H, 4H).
For the shapes of benchmarks/run.py this times T such products back to back, each way:
  * `np.dot(h, R)` in numba: SciPy's OpenBLAS, what the generated kernels call;
  * `np.dot(h, RT.T)`: the same product with R stored transposed (OpenBLAS takes another packing path);
  * `np.dot(RT, h.T)`: the transposed product, (4H, H) x (H, B), feature-major result;
  * a register-blocked GEMM written in numba, reading R pre-transposed once (what packed weights, as oneDNN
    keeps them, would buy a numba kernel: no repacking of R per call);
  * `torch.mm(h, R, out=c)` in a Python loop: torch's BLAS (MKL in the x86 CPU wheel), Python overhead included.
Every contender runs in a subprocess per thread count, with OPENBLAS_NUM_THREADS and torch's threads set, so
each pool has the thread count it says. Reported: GFLOP/s (2·B·H·4H per step), median of interleaved rounds.

Back-to-back products are not the kernel: there, elementwise work runs between them. The README records which
findings carried over to the generated kernels when tried there.

``--tiny`` times the products of the 1997 networks and sizes around them (float64, ns per product, each called
inside a numba loop as the kernels call it): `np.dot` against the generated modules' ``_loop_dot``, which the
kernels call for products up to LOOP_DOT_LIMIT multiply-adds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _benchmark_sizes() -> dict[str, tuple[int, int, int]]:
    """The sizes of benchmarks/run.py, as (T, B, H): the input size plays no part in the recurrent product."""
    spec = importlib.util.spec_from_file_location("lstmgen_benchmark_run", Path(__file__).with_name("run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    return {name: (T, B, H) for name, (T, B, _, H) in run.SIZES.items()}


SIZES = _benchmark_sizes()
QUICK_SIZES = {"tiny": (20, 3, 16)}
CONTENDERS = ("np.dot(h, R)", "np.dot(h, RT.T)", "np.dot(RT, h.T)", "numba GEMM, R pre-transposed", "torch.mm")


def _numba_functions():
    import numba

    @numba.njit(cache=False)
    def blas_steps(left, right, out, steps):
        for _ in range(steps):
            np.dot(left, right, out)

    @numba.njit(cache=False, fastmath=True, error_model="numpy")
    def blocked_gemm(h, RT, out):
        # out[i, j] = sum_k h[i, k] RT[j, k]: blocks of 2 rows x 4 columns, eight accumulators that LLVM keeps
        # in vector registers over the k loop; rows and columns left over go one at a time.
        rows, inner = h.shape
        cols = RT.shape[0]
        row_end = rows - rows % 2
        col_end = cols - cols % 4
        for i in range(0, row_end, 2):
            a0 = h[i]
            a1 = h[i + 1]
            for j in range(0, col_end, 4):
                b0 = RT[j]
                b1 = RT[j + 1]
                b2 = RT[j + 2]
                b3 = RT[j + 3]
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = h.dtype.type(0)
                for k in range(inner):
                    x0 = a0[k]
                    x1 = a1[k]
                    s00 += x0 * b0[k]
                    s01 += x0 * b1[k]
                    s02 += x0 * b2[k]
                    s03 += x0 * b3[k]
                    s10 += x1 * b0[k]
                    s11 += x1 * b1[k]
                    s12 += x1 * b2[k]
                    s13 += x1 * b3[k]
                out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
                out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
        for i in range(rows):
            for j in range(cols):
                if i < row_end and j < col_end:
                    continue
                total = h.dtype.type(0)
                for k in range(inner):
                    total += h[i, k] * RT[j, k]
                out[i, j] = total

    @numba.njit(cache=False)
    def blocked_steps(h, RT, out, steps):
        for _ in range(steps):
            blocked_gemm(h, RT, out)

    return blas_steps, blocked_steps


#: (rows, inner, columns) of the tiny study: the 1997 adding network's two products (B = 1, H = 4; Q is (8, 12)),
#: the 6b network's, and sizes on both sides of the kernels' limit (LOOP_DOT_LIMIT, 256 multiply-adds), wide and
#: narrow (backward's R d^T has one column per batch row).
TINY_SHAPES = (
    (1, 4, 12),
    (1, 8, 12),
    (4, 12, 1),
    (1, 6, 18),
    (2, 8, 8),
    (1, 12, 18),
    (2, 8, 12),
    (4, 16, 4),
    (1, 16, 24),
    (1, 16, 64),
    (32, 16, 1),
)
TINY_CONTENDERS = ("np.dot", "_loop_dot")


def measure_tiny(rounds: int, steps: int = 100, repeats: int = 200) -> dict[tuple[int, int, int], dict[str, float]]:
    """ns per product of np.dot and of the kernels' ``_loop_dot``: ``steps`` products of one step's rows,
    ``repeats`` times, inside numba as the kernels call them; the median of ``rounds`` interleaved rounds."""
    import numba

    import lstmgen

    loop_dot = lstmgen.load("lstm")._loop_dot

    @numba.njit
    def loop(seq, b, out, repeats):
        for _ in range(repeats):
            for t in range(seq.shape[0]):
                loop_dot(seq[t], b, out)

    @numba.njit
    def blas(seq, b, out, repeats):
        for _ in range(repeats):
            for t in range(seq.shape[0]):
                np.dot(seq[t], b, out)

    runs = {"np.dot": blas, "_loop_dot": loop}
    rng = np.random.default_rng(0)
    results = {}
    for rows, inner, columns in TINY_SHAPES:
        seq, b = rng.standard_normal((steps, rows, inner)), rng.standard_normal((inner, columns))
        out = np.empty((rows, columns))
        samples: dict[str, list[float]] = {key: [] for key in runs}
        for key, run in runs.items():
            run(seq, b, out, 1)
            if not np.allclose(out, seq[-1] @ b):
                raise AssertionError(f"{key} disagrees with numpy at {(rows, inner, columns)}")
        for _ in range(rounds):
            for key, run in runs.items():
                start = time.perf_counter()
                run(seq, b, out, repeats)
                samples[key].append((time.perf_counter() - start) / (steps * repeats) * 1e9)
        results[(rows, inner, columns)] = {key: statistics.median(values) for key, values in samples.items()}
    return results


def tiny_markdown(results: dict[tuple[int, int, int], dict[str, float]]) -> str:
    lines = [
        "| (rows, inner, columns) | multiply-adds | " + " | ".join(TINY_CONTENDERS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in TINY_CONTENDERS) + " |",
    ]
    for (rows, inner, columns), times in results.items():
        cells = " | ".join(f"{times[key]:.0f}" for key in TINY_CONTENDERS)
        lines.append(f"| ({rows}, {inner}, {columns}) | {rows * inner * columns} | {cells} |")
    return "\n".join(lines)


def measure(sizes: dict[str, tuple[int, int, int]], rounds: int) -> dict[str, dict[str, float]]:
    """GFLOP/s of every contender at every size, in this process (its thread counts as the environment set)."""
    import torch

    blas_steps, blocked_steps = _numba_functions()
    results: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(0)
    for name, (T, B, H) in sizes.items():
        h = rng.standard_normal((B, H)).astype(np.float32)
        R = rng.standard_normal((H, 4 * H)).astype(np.float32)
        RT = np.ascontiguousarray(R.T)
        out = np.empty((B, 4 * H), np.float32)
        out_t = np.empty((4 * H, B), np.float32)
        h_t, R_t, c_t = torch.from_numpy(h), torch.from_numpy(R), torch.from_numpy(out)

        def torch_steps(T=T, h_t=h_t, R_t=R_t, c_t=c_t):
            for _ in range(T):
                torch.mm(h_t, R_t, out=c_t)

        runs = {
            "np.dot(h, R)": lambda T=T, h=h, R=R, out=out: blas_steps(h, R, out, T),
            "np.dot(h, RT.T)": lambda T=T, h=h, RT=RT, out=out: blas_steps(h, RT.T, out, T),
            "np.dot(RT, h.T)": lambda T=T, h=h, RT=RT, out_t=out_t: blas_steps(RT, h.T, out_t, T),
            "numba GEMM, R pre-transposed": lambda T=T, h=h, RT=RT, out=out: blocked_steps(h, RT, out, T),
            "torch.mm": torch_steps,
        }
        reference = h.astype(np.float64) @ R.astype(np.float64)
        blocked_steps(h, RT, out, 1)
        if not np.allclose(out, reference, rtol=1e-4, atol=1e-3):
            raise AssertionError(f"{name}: the numba GEMM disagrees with float64 h @ R")
        samples: dict[str, list[float]] = {key: [] for key in runs}
        for run in runs.values():
            run()
        for _ in range(rounds):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                samples[key].append(time.perf_counter() - start)
        work = 2.0 * T * B * H * 4 * H
        results[name] = {key: work / statistics.median(values) / 1e9 for key, values in samples.items()}
    return results


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    sizes = QUICK_SIZES if args.quick else SIZES
    print(json.dumps(measure(sizes, 3 if args.quick else args.rounds)))


def run_all(quick: bool, rounds: int) -> dict[int, dict[str, dict[str, float]]]:
    """Every contender at every size, once with one thread per pool and once with two, each in a subprocess."""
    by_threads = {}
    for threads in (1, 2):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
        command = [sys.executable, __file__, "--child", "--threads", str(threads), "--rounds", str(rounds)]
        if quick:
            command.append("--quick")
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        by_threads[threads] = json.loads(done.stdout.strip().splitlines()[-1])
    return by_threads


def markdown(by_threads: dict[int, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| size (B, H) | threads | " + " | ".join(CONTENDERS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in CONTENDERS) + " |",
    ]
    sizes = {**SIZES, **QUICK_SIZES}
    for threads, results in by_threads.items():
        for name, rates in results.items():
            _, B, H = sizes[name]
            cells = " | ".join(f"{rates[key]:.0f}" for key in CONTENDERS)
            lines.append(f"| {name} ({B}, {H}) | {threads} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, three rounds (seconds)")
    parser.add_argument("--tiny", action="store_true", help="the products of tiny networks, ns each (seconds)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per size (median reported)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive integer, got {args.rounds}")
    if args.child:
        _child(args)
        return {}
    if args.tiny:
        results = measure_tiny(args.rounds)
        print("ns per product (float64, inside a numba loop, median of interleaved rounds)")
        print(tiny_markdown(results))
        return results
    by_threads = run_all(args.quick, args.rounds)
    print("GFLOP/s of T per-step products (B, H) x (H, 4H), float32, median of interleaved rounds")
    print(markdown(by_threads))
    return by_threads


if __name__ == "__main__":
    main()
