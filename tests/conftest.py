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
#: Where test_spec_files writes the TOML examples' modules: a fixed place, so that numba's cache of them lasts
#: from one run to the next and tests/compile_ahead.py can fill it.
EXAMPLE_MODULES = REPO / ".pytest_cache" / "lstmgen-examples"


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
    process = getattr(session.config, "lstmgen_compile_ahead", None)
    if process is not None:
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
