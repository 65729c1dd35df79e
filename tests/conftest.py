"""Shared fixtures: the committed generated modules, loaded from generated/ like a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstmgen import load_module
from lstmgen.variants import VARIANTS

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"
BUILTIN = tuple(VARIANTS)


@pytest.fixture(scope="session")
def generated_module():
    """A function: variant name -> the committed module in generated/, imported from its file."""

    def get(name: str):
        return load_module(GENERATED / f"{name}.py")

    return get
