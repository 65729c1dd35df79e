"""Shared fixtures: the committed generated modules, loaded from generated/ like a user would."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
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


#: Where the background run of benchmarks/gpu_resources.py writes its rows, its output and, once it has finished,
#: its exit status (tests/test_gpu_resources.py waits for that file).
GPU_RESOURCES = REPO / ".pytest_cache" / "lstmgen-gpu-resources.json"
GPU_RESOURCES_LOG = GPU_RESOURCES.with_suffix(".log")
GPU_RESOURCES_STATUS = GPU_RESOURCES.with_suffix(".status")
TESTS = Path(__file__).resolve().parent


def gpu_resources_command() -> tuple[list[str], dict[str, str]]:
    """The command that compiles every built-in's CUDA kernels to PTX and assembles them, and its environment
    (without the simulator, which has no compiler)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return [sys.executable, str(REPO / "benchmarks" / "gpu_resources.py"), "--json", str(GPU_RESOURCES)], env


def start_gpu_resources() -> subprocess.Popen:
    """Start the PTX build in a process of its own; a thread writes its exit status when it ends."""
    GPU_RESOURCES.parent.mkdir(parents=True, exist_ok=True)
    for path in (GPU_RESOURCES, GPU_RESOURCES_LOG, GPU_RESOURCES_STATUS):
        path.unlink(missing_ok=True)
    command, env = gpu_resources_command()
    log = GPU_RESOURCES_LOG.open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)

    def record() -> None:
        status = process.wait()
        log.close()
        GPU_RESOURCES_STATUS.write_text(str(status))

    threading.Thread(target=record, daemon=True).start()
    return process


def _runs(config, test_file: str) -> bool:
    """Whether the session's paths include ``test_file`` (a filter such as -k may still deselect it)."""
    here = config.invocation_params.dir
    for arg in config.args or ["tests"]:
        path = (here / arg.split("::")[0]).resolve()
        if path in (TESTS, REPO, TESTS / test_file):
            return True
    return False


def pytest_sessionstart(session):
    """In the session's main process (not in pytest-xdist's workers): compile the generated modules in a second
    process while the tests run (tests/compile_ahead.py; LSTMGEN_COMPILE_AHEAD=0 turns it off), and start the
    PTX build of every CUDA kernel (minutes of NVVM) when tests/test_gpu_resources.py is among the paths."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    if _runs(config, "test_gpu_resources.py"):
        config.lstmgen_gpu_resources = start_gpu_resources()
    if os.environ.get("LSTMGEN_COMPILE_AHEAD", "1") == "0":
        return
    script = Path(__file__).with_name("compile_ahead.py")
    config.lstmgen_compile_ahead = subprocess.Popen(
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
