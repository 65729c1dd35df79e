"""Shared fixtures: the committed generated modules, loaded from generated/ like a user would."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from lstmgen.variants import VARIANTS

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"
BUILTIN = tuple(VARIANTS)


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
