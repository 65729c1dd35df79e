"""The targets a module is generated for: what differs between a CPU module and a CUDA module, in one place.

Everything else (the symbol table, the kernel IR, the wrappers, the module's prose) is shared; a target names
its kernel printer, where its helpers come from, the lines its modules start with and the runtime they inline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lstmgen.codegen.cuda_printer import print_cuda_kernels
from lstmgen.codegen.kernel_ir import ModulePlan
from lstmgen.codegen.kernel_printer import PrintedKernels, print_kernels

_CODEGEN = Path(__file__).resolve().parent

_JIT_OPTIONS = 'cache=True, error_model="numpy", nogil=True'
_CPU_POLICY = (
    "# One policy for every compiled function: cached on disk, NumPy's error model (no zero-division checks that",
    "# block vectorization), IEEE semantics kept (no fastmath). LLVM inlines the small scalar helpers by itself;",
    "# forcing inlining at numba's level only lengthened compilation.",
    f"_jit = numba.njit({_JIT_OPTIONS})",
)
_IMPORTS = ("import contextlib", "import functools", "import operator", "import traceback", "import warnings", "")


@dataclass(frozen=True)
class Target:
    """One target: its name (``--target``), how its kernels are printed, and the fixed lines of its modules.

    ``runtimes``: (file in ``codegen/``, the marker below which a module inlines it), in order.
    ``inlined_helper_decorator``: the decorator of the helpers numba must inline itself
    (:data:`~lstmgen.codegen.kernel_helpers.NUMBA_INLINED`).
    """

    name: str
    print_kernels: Callable[[ModulePlan], PrintedKernels]
    imports: tuple[str, ...]
    compile_policy: tuple[str, ...]
    helper_decorator: str
    inlined_helper_decorator: str
    kernel_decorator: str
    runtimes: tuple[tuple[str, str], ...]
    note: str

    def runtime_source(self) -> str:
        """The static half its modules inline: each runtime file below its marker."""
        parts = []
        for file, marker in self.runtimes:
            text = (_CODEGEN / file).read_text(encoding="utf-8")
            start = text.index("\n" + marker + "\n") + len(marker) + 2
            parts.append(text[start:].strip("\n") + "\n")
        return "\n\n".join(parts)


CPU = Target(
    name="cpu",
    print_kernels=print_kernels,
    imports=(*_IMPORTS, "import numpy as np", "import numba"),
    compile_policy=_CPU_POLICY,
    helper_decorator="@_jit",
    # LLVM does not inline a function that takes arrays: each call of the per-step product cost about 40 ns.
    inlined_helper_decorator=f'@numba.njit({_JIT_OPTIONS}, inline="always")',
    kernel_decorator="@_jit\n",
    runtimes=(("module_runtime.py", "# ---- generated modules inline this file from here ----"),),
    note="",
)

CUDA = Target(
    name="cuda",
    print_kernels=print_cuda_kernels,
    imports=(
        *_IMPORTS[:-1],
        "import math",
        "import threading",
        "",
        "import numpy as np",
        "import numba",
        "from numba import cuda",
    ),
    compile_policy=(
        *_CPU_POLICY,
        "# The CUDA kernels' helpers are inlined device functions: numba's CUDA target compiles a call of another",
        "# device function without a GPU only when it is inlined (PTX is built on machines without one).",
        "_device = cuda.jit(device=True, inline=True)",
    ),
    helper_decorator="@_device",
    inlined_helper_decorator="@_device",
    kernel_decorator="",
    runtimes=(
        *CPU.runtimes,
        ("cuda_runtime.py", "# ---- generated CUDA modules inline this file from here ----"),
    ),
    note=" for the GPU (numba.cuda: one block per batch row, the time loop inside the kernel)",
)

TARGETS: dict[str, Target] = {"cpu": CPU, "cuda": CUDA}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"target: expected one of {tuple(TARGETS)}, got {name!r}")
    return TARGETS[name]
