"""Import generated modules: from a file anywhere, or generated on demand into a user cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from lstmgen.generate import resolve_spec, write_module
from lstmgen.spec import CellSpec
from lstmgen.symbolic.derive_backward import GradientMode
from lstmgen.version import __version__


def cache_dir() -> Path:
    """Where :func:`load` writes modules (one folder per spec fingerprint): ``$LSTMGEN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lstmgen/<version>``."""
    if os.environ.get("LSTMGEN_CACHE_DIR"):
        return Path(os.environ["LSTMGEN_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lstmgen" / __version__


def load_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a generated module from ``path`` (it needs only numpy and numba, not lstmgen).

    The module's name is derived from its absolute path and stays the same across processes, because numba's
    on-disk cache records it: a file that one process compiled is reused by the next. Loading an unchanged
    file again returns the same module; a file rewritten since is executed again under the same name.
    Import a given file one way only (always ``load_module``, or always ``import package.module``): numba's
    cache of a file compiled under one module name cannot be read under another.
    """
    path = Path(path).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise FileNotFoundError(f"path: expected a generated .py module, got {str(path)!r}")
    source = path.read_bytes()
    name = f"lstmgen_generated_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    digest = hashlib.sha256(source).hexdigest()
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__lstmgen_source_sha256__", None) == digest:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__lstmgen_source_sha256__ = digest
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(
    variant: CellSpec | str | os.PathLike[str], gradient: GradientMode = "full", target: str = "cpu"
) -> ModuleType:
    """Generate ``variant`` into the user cache if needed and import it.

    Args:
        variant: a built-in variant name (see ``lstmgen list``), a :class:`~lstmgen.spec.CellSpec`, or the
            path of a TOML spec file (a ``str`` ending in ``.toml`` or a ``pathlib.Path``).
        gradient: "full" (default) or "truncated".
        target: "cpu" (default, numba) or "cuda" (numba.cuda: needs ``pip install "lstmgen[cuda]"``, and a GPU or
            ``NUMBA_ENABLE_CUDASIM=1`` to run).
    """
    spec = resolve_spec(variant)
    # Keyed by the spec's fingerprint: a user's cell named like a built-in never shares its file.
    directory = cache_dir() / spec.fingerprint()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        setting = "LSTMGEN_CACHE_DIR" if os.environ.get("LSTMGEN_CACHE_DIR") else "the cache directory"
        raise OSError(
            f"{setting}: cannot create {str(directory)!r} ({exc.strerror or exc}); set LSTMGEN_CACHE_DIR to a "
            "writable directory"
        ) from None
    return load_module(write_module(spec, directory, gradient, shadow_check=False, target=target))


def builtin_spec(variant: object, fingerprint: object) -> CellSpec | None:
    """The built-in named ``variant`` if its spec has ``fingerprint`` (a user's cell named like a built-in is never
    taken for it), else None."""
    from lstmgen.variants import VARIANTS

    builtin = VARIANTS.get(variant) if isinstance(variant, str) else None
    return builtin if builtin is not None and builtin.fingerprint() == fingerprint else None


def builtin_spec_of(module: ModuleType, needed_for: str) -> CellSpec:
    """The built-in spec ``module`` was generated from (:func:`builtin_spec`); a module of a user's spec does not
    carry its spec, and is refused, naming ``needed_for``."""
    builtin = builtin_spec(getattr(module, "VARIANT", None), getattr(module, "FINGERPRINT", None))
    if builtin is None:
        raise ValueError(
            f"cell: {getattr(module, 'VARIANT', module.__name__)}'s module is not a built-in's, and a module does "
            f"not carry its spec, which {needed_for} needs: give the cell's spec (a CellSpec or its TOML path) "
            "instead of its module"
        )
    return builtin
