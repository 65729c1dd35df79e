"""Forward + backward on a GPU, side by side in one run: lstmgen's CUDA modules, cuDNN (torch.nn.LSTM / GRU) and
the PyTorch loop of the same cell (eager, and under torch.compile with its compile time). FlashRNN is not wired
in yet: it must travel to the GPU machine as a wheel.

    python benchmarks/gpu.py [--cells lstm,gru,...] [--sizes S1,speech,...] [--tf32] [--json FILE]

Needs a CUDA GPU, PyTorch with CUDA and lstmgen[cuda]. Sizes (T, B, I, H) are benchmarks/run.py's, plus
"large" (256, 64, 1024, 1024). float32; TF32 off unless --tf32 (PyTorch allows it by default for cuDNN). Each
time is the median of ``--repeats`` runs after a warm-up, synchronised on the device. lstmgen's arrays are torch
CUDA tensors passed as they are (``__cuda_array_interface__``): nothing is copied to the host.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.run import SIZES  # noqa: E402

GPU_SIZES = {**SIZES, "large": (256, 64, 1024, 1024)}
DEFAULT_CELLS = ("lstm", "gru", "lstm_peephole", "layernorm_lstm", "slstm", "mingru", "indrnn", "lstmp")
#: torch.nn modules that run the same cell (cuDNN), with their gate order relative to lstmgen's.
CUDNN = {"lstm": "LSTM", "gru": "GRU"}


def _time(run, repeats: int) -> float:
    import torch

    run()  # warm-up (compilation, allocation)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def lstmgen_runner(cell: str, size, repeats: int):
    import torch

    import lstmgen

    module = lstmgen.load(cell, target="cuda")
    T, B, I, H = size
    n_in = H if module.INPUT_ROW else I
    host = module.init_params(n_in, H, dtype=np.float32, seed=0)
    params = {k: torch.as_tensor(v, device="cuda") for k, v in host.items()}
    x = torch.randn(T, B, n_in, device="cuda")
    inputs = {k: torch.ones(T, B, H, device="cuda") for k in module.INPUTS} or None
    width = module.param_shapes(n_in, H)["W_p"][1] if module.PROJECTED else H
    dy = torch.randn(T, B, width, device="cuda")

    def run():
        _, _, tape = module.forward(x, params, inputs=inputs)
        module.backward(dy, tape)

    return _time(run, repeats)


def cudnn_runner(cell: str, size, repeats: int):
    import torch

    if cell not in CUDNN:
        return None
    T, B, I, H = size
    rnn = getattr(torch.nn, CUDNN[cell])(I, H).cuda()
    x = torch.randn(T, B, I, device="cuda", requires_grad=True)
    dy = torch.randn(T, B, H, device="cuda")

    def run():
        y, _ = rnn(x)
        y.backward(dy)

    return _time(run, repeats)


def torch_loop_runner(cell: str, size, repeats: int, compiled: bool):
    """The cell's PyTorch reference (tests/reference_cells.py) unrolled on the GPU: (time, compile seconds)."""
    import torch

    import lstmgen
    from tests.reference_cells import run_reference

    module = lstmgen.load(cell)
    T, B, I, H = size
    n_in = H if module.INPUT_ROW else I
    host = module.init_params(n_in, H, dtype=np.float32, seed=0)
    params = {k: torch.as_tensor(v, device="cuda").requires_grad_() for k, v in host.items()}
    x = torch.randn(T, B, n_in, device="cuda", requires_grad=True)
    state = tuple(torch.zeros(B, w, device="cuda") for w in module._widths(host))
    inputs = {k: torch.ones(T, B, H, device="cuda") for k in module.INPUTS} or None

    def forward(x, params, state):
        return run_reference(cell, x, params, state, inputs=inputs)[0]

    loop = torch.compile(forward) if compiled else forward
    start = time.perf_counter()
    y = loop(x, params, state)
    y.sum().backward()
    torch.cuda.synchronize()
    compile_seconds = time.perf_counter() - start if compiled else 0.0

    def run():
        loop(x, params, state).sum().backward()

    return _time(run, repeats), compile_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(DEFAULT_CELLS))
    parser.add_argument("--sizes", default=",".join(GPU_SIZES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in cuDNN and matmuls")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes per cell)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu.py: needs PyTorch with CUDA", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu.py: no CUDA GPU available to PyTorch; nothing to measure", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    rows = []
    for cell in args.cells.split(","):
        for name in args.sizes.split(","):
            size = GPU_SIZES[name]
            row = {"cell": cell, "size": name, "shape": size, "tf32": args.tf32}
            row["lstmgen_s"] = lstmgen_runner(cell, size, args.repeats)
            row["cudnn_s"] = cudnn_runner(cell, size, args.repeats)
            row["torch_loop_s"], _ = torch_loop_runner(cell, size, args.repeats, compiled=False)
            if not args.no_compile:
                row["torch_compile_s"], row["torch_compile_compile_s"] = torch_loop_runner(
                    cell, size, args.repeats, compiled=True
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
