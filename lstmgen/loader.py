"""Import generated modules: from a file anywhere, or generated on demand into a user cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from lstmgen import __version__
from lstmgen.derive_backward import GradientMode
from lstmgen.generate import resolve_spec, write_module
from lstmgen.spec import CellSpec


def cache_dir() -> Path:
    """Where :func:`load` writes modules: ``$LSTMGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/lstmgen/<version>``."""
    if os.environ.get("LSTMGEN_CACHE_DIR"):
        return Path(os.environ["LSTMGEN_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lstmgen" / __version__


def load_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a generated module from ``path`` (it needs only numpy and numba, not lstmgen).

    The module is registered in ``sys.modules`` under a name derived from its absolute path, so loading the
    same file twice returns the same module.
    """
    path = Path(path).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise FileNotFoundError(f"path: expected a generated .py module, got {str(path)!r}")
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"lstmgen_generated_{path.stem}_{tag}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(variant: CellSpec | str, gradient: GradientMode = "full") -> ModuleType:
    """Generate ``variant`` into the user cache if needed and import it.

    Args:
        variant: a built-in variant name (see ``lstmgen list``) or a :class:`~lstmgen.spec.CellSpec`.
        gradient: "full" (default) or "truncated".
    """
    spec = resolve_spec(variant)
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return load_module(write_module(spec, directory, gradient))
