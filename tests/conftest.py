"""Shared fixtures: the committed generated modules, loaded from generated/ like a user would."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lstmgen.variants import VARIANTS

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"
BUILTIN = tuple(VARIANTS)
#: Per built-in with a structure of its own: the size arguments that make it exercise it (two heads, P != H,
#: memory blocks of two cells).
STRUCTURE_SIZES = {
    "slstm": {"heads": 2},
    "lstmp": {"proj_size": 3},
    "lstm_1997": {"block_size": 2},
    "lstm_1997_net": {"block_size": 2},
}
# The CUDA target's tests run on numba's CUDA simulator where no GPU is present (CI, these machines); the flag
# must be set before anything imports numba.cuda. On a machine with a GPU they run on it.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
#: Where test_spec_files writes the TOML examples' modules: a fixed place, so that numba's cache of them lasts
#: from one run to the next and tests/compile_ahead.py can fill it.
EXAMPLE_MODULES = REPO / ".pytest_cache" / "lstmgen-examples"


#: Where the background run of benchmarks/gpu_resources.py writes its rows (tests/test_gpu_resources.py reads them).
GPU_RESOURCES = REPO / ".pytest_cache" / "lstmgen-gpu-resources.json"


def gpu_resources_command() -> tuple[list[str], dict[str, str]]:
    """The command that compiles every built-in's CUDA kernels to PTX and assembles them, and its environment
    (without the simulator, which has no compiler)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return [sys.executable, str(REPO / "benchmarks" / "gpu_resources.py"), "--json", str(GPU_RESOURCES)], env


def pytest_collection_modifyitems(session, config, items):
    """When tests/test_gpu_resources.py is collected, start the PTX build of every CUDA kernel in a process of its
    own (minutes of NVVM, on the other core) so that the test finds it done."""
    if any(item.path.name == "test_gpu_resources.py" for item in items):
        GPU_RESOURCES.parent.mkdir(parents=True, exist_ok=True)
        GPU_RESOURCES.unlink(missing_ok=True)
        command, env = gpu_resources_command()
        config.lstmgen_gpu_resources = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


def pytest_sessionstart(session):
    """Compile the generated modules in a second process while this one runs (see tests/compile_ahead.py);
    LSTMGEN_COMPILE_AHEAD=0 turns it off."""
    if os.environ.get("LSTMGEN_COMPILE_AHEAD", "1") == "0":
        return
    script = Path(__file__).with_name("compile_ahead.py")
    session.config.lstmgen_compile_ahead = subprocess.Popen(
        [sys.executable, str(script), str(EXAMPLE_MODULES)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def pytest_sessionfinish(session, exitstatus):
    for name in ("lstmgen_compile_ahead", "lstmgen_gpu_resources"):
        process = getattr(session.config, name, None)
        if process is not None and process.poll() is None:
            process.terminate()  # numba writes its cache files atomically: stopping mid-way leaves none half-written
            process.wait()


@pytest.fixture(scope="session")
def generated_module():
    """A function: variant name -> the committed module, imported as ``generated.<name>`` like a user would.

    (numba's on-disk cache records the module name, so the tests use the name users use.)
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    def get(name: str):
        return importlib.import_module(f"generated.{name}")

    return get


def import_without_jit(path):
    """Import a generated module with numba's JIT off: the same code, run by Python (quick to start)."""
    import numba

    from lstmgen.loader import load_module

    jit = numba.config.DISABLE_JIT
    numba.config.DISABLE_JIT = True
    try:
        return load_module(path)
    finally:
        numba.config.DISABLE_JIT = jit
