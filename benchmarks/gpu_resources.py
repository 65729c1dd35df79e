"""What each built-in's CUDA kernels cost a GPU: registers, spills and shared memory per kernel, from ptxas.

No GPU needed: each step kernel is compiled to PTX by numba-cuda (NVVM, for compute capability 8.0) and assembled
by the CUDA toolkit's ``ptxas -v`` for sm_80 (A100) and sm_90 (H100). The argument types are read off a launch
of the CUDA module's host function with host arrays in place of device ones (the same dtypes, dimensions and
layouts), built from the CPU module's own kernel arguments (the CPU module run by Python, not compiled).

    python benchmarks/gpu_resources.py [VARIANT ...] [--gradient full|truncated] [--json FILE]

Run it without NUMBA_ENABLE_CUDASIM (the simulator has no compiler).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ARCHS = ("sm_80", "sm_90")
#: The sizes the launch is typed at (types do not depend on them).
T, B, H = 2, 2, 4


class _LaunchCapturedError(Exception):
    def __init__(self, args: tuple) -> None:
        self.args_ = args


class _Launch:
    """Stands for a step kernel: ``kernel[grid, block](*args)`` records the arguments and stops the host side."""

    def __getitem__(self, config):
        def launch(*args):
            raise _LaunchCapturedError(args)

        return launch


def _cpu_module(path: Path):
    """The committed CPU module, run by Python (numba's JIT off while it is imported): its kernels' arguments are
    all this script needs, and compiling them would cost minutes on a cold cache."""
    import numba

    from lstmgen.loader import load_module

    numba.config.DISABLE_JIT = True
    try:
        return load_module(path)
    finally:
        numba.config.DISABLE_JIT = False


def _kernel_arguments(cpu, dtype) -> tuple[tuple, tuple]:
    """The CPU module's forward and backward kernel arguments (host arrays) for a tiny problem."""
    n_in = H if cpu.INPUT_ROW else 3
    params = cpu.init_params(n_in, H, dtype=dtype, seed=0)  # default sizes: the types do not depend on them
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    inputs = {k: np.ones((T, B, H), dtype) for k in cpu.INPUTS} or None
    y, _, tape = cpu.forward(x, params, inputs=inputs)
    captured = []
    run = cpu._run

    def capture(kernel, *args):
        captured.append(args)
        return run(kernel, *args)

    cpu._run = capture
    try:
        cpu.forward(x, params, inputs=inputs)
        cpu.backward(np.ones_like(y), tape)
    finally:
        cpu._run = run
    return captured[0], captured[1]


def _step_types(gpu, host_function: str, steps_kernel: str, args: tuple) -> tuple:
    """The numba types of the step kernel's arguments, from a launch by the host function on host arrays."""
    import numba

    replaced = {
        "_to_device": lambda *a: a,
        "_to_host": lambda devices, hosts: None,
        "_device_empty": lambda shape, dtype: np.empty(shape, dtype),
        "_device_zeros": lambda shape, dtype: np.zeros(shape, dtype),
        "_input_projection": lambda *a: None,
        steps_kernel: _Launch(),
    }
    saved = {name: getattr(gpu, name) for name in replaced}
    for name, value in replaced.items():
        setattr(gpu, name, value)
    try:
        getattr(gpu, host_function)(*(a.copy() if isinstance(a, np.ndarray) else a for a in args))
    except _LaunchCapturedError as launch:
        return tuple(numba.typeof(a) for a in launch.args_)
    finally:
        for name, value in saved.items():
            setattr(gpu, name, value)
    raise RuntimeError(f"{host_function} did not launch {steps_kernel}")  # pragma: no cover


def _assemble(ptx: str, arch: str) -> dict[str, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    out = subprocess.run(["ptxas", f"-arch={arch}", "-v", f.name, "-o", "/dev/null"], capture_output=True, text=True)
    Path(f.name).unlink()
    if out.returncode != 0:
        raise RuntimeError(f"ptxas -arch={arch} failed: {out.stderr.strip()}")
    text = out.stdout + out.stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        return int(found.group(1)) if found else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "shared_bytes": number(r"(\d+) bytes smem"),
        "stack_bytes": number(r"(\d+) bytes stack frame"),
    }


def measure(variant: str, gradient: str = "full") -> list[dict]:
    """One row per step kernel, dtype and architecture."""
    from numba import cuda

    import lstmgen
    from lstmgen.codegen.render_module import module_name

    cpu = _cpu_module(Path(__file__).resolve().parent.parent / "generated" / f"{module_name(variant, gradient)}.py")
    with tempfile.TemporaryDirectory() as directory:
        gpu = lstmgen.load_module(lstmgen.write_module(variant, directory, gradient, target="cuda"))
        rows = []
        for dtype in (np.float32, np.float64):
            forward, backward = _kernel_arguments(cpu, dtype)
            for host, steps, args in (
                ("_forward_kernel", "_forward_steps", forward),
                ("_backward_kernel", "_backward_steps", backward),
            ):
                types = _step_types(gpu, host, steps, args)
                ptx, _ = cuda.compile_ptx(getattr(gpu, steps).py_func, types, cc=(8, 0))
                for arch in ARCHS:
                    rows.append(
                        {"variant": variant, "gradient": gradient, "kernel": steps, "dtype": np.dtype(dtype).name}
                        | {"arch": arch}
                        | _assemble(ptx, arch)
                    )
    return rows


def main(argv: list[str] | None = None) -> int:
    from lstmgen.variants import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--gradient", choices=("full", "truncated"), default="full")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = [row for variant in args.variants for row in measure(variant, args.gradient)]
    header = ("variant", "kernel", "dtype", "arch", "registers", "spill_stores", "spill_loads", "shared_bytes")
    widths = [max(len(str(r[k])) for r in [dict(zip(header, header, strict=True)), *rows]) for k in header]
    for row in [dict(zip(header, header, strict=True)), *rows]:
        print("  ".join(str(row[k]).ljust(w) for k, w in zip(header, widths, strict=True)).rstrip())
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
