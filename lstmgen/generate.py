"""The pipeline driver: spec → forward equations → derived BPTT → expression lists → kernel IR → printed kernels →
module text → file. :func:`stages` runs it and returns every stage."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lstmgen.codegen.kernel_ir import ModulePlan
from lstmgen.codegen.kernel_printer import PrintedKernels
from lstmgen.codegen.lower_kernel import lower
from lstmgen.codegen.module_text import ModuleText, build_module_text
from lstmgen.codegen.render_module import module_name, render_module
from lstmgen.codegen.targets import get_target
from lstmgen.spec import CellSpec
from lstmgen.spec_file import load_spec_file
from lstmgen.symbolic.derive_backward import GRADIENT_MODES, BackwardEquations, GradientMode, derive_backward
from lstmgen.symbolic.expression_lists import KernelExpressions, build_kernel_expressions
from lstmgen.symbolic.forward_equations import ForwardEquations, build_forward_equations
from lstmgen.symbolic.layout import Layout, build_layout
from lstmgen.variants import get_variant


def resolve_spec(variant: CellSpec | str | os.PathLike[str]) -> CellSpec:
    """A spec given as itself, as the name of a built-in variant, or as the path of a TOML spec file."""
    if isinstance(variant, CellSpec):
        return variant
    if isinstance(variant, os.PathLike) or (isinstance(variant, str) and variant.endswith(".toml")):
        return load_spec_file(variant)
    if isinstance(variant, str):
        return get_variant(variant)
    raise TypeError(f"variant: expected a variant name, a CellSpec or a .toml spec path, got {type(variant).__name__}")


@dataclass(frozen=True)
class Stages:
    """Every stage of the pipeline for one cell and gradient mode, each the value its stage returned.

    Attributes:
        spec: the cell (:class:`~lstmgen.spec.CellSpec`).
        forward: its forward equations (:class:`~lstmgen.symbolic.forward_equations.ForwardEquations`).
        backward: the derived BPTT equations (:class:`~lstmgen.symbolic.derive_backward.BackwardEquations`).
        expressions: the CSE'd expression lists (:class:`~lstmgen.symbolic.expression_lists.KernelExpressions`).
        layout: the symbol table of both loops (:class:`~lstmgen.symbolic.layout.Layout`).
        plan: the kernel IR (:class:`~lstmgen.codegen.kernel_ir.ModulePlan`).
        kernels: the printed kernels (:class:`~lstmgen.codegen.kernel_printer.PrintedKernels`).
        text: the module's prose and structure lines (:class:`~lstmgen.codegen.module_text.ModuleText`).
        module: the generated module's text.
    """

    spec: CellSpec
    forward: ForwardEquations
    backward: BackwardEquations
    expressions: KernelExpressions
    layout: Layout
    plan: ModulePlan
    kernels: PrintedKernels
    text: ModuleText
    module: str


def stages(variant: CellSpec | str | os.PathLike[str], gradient: GradientMode = "full", target: str = "cpu") -> Stages:
    """Run the pipeline on ``variant`` and return every stage's result, so that a test, a notebook or another
    target can stop at any of them. ``target``: "cpu" (numba) or "cuda" (numba.cuda). One line per stage:"""
    chosen = get_target(target)
    spec = resolve_spec(variant)
    forward = build_forward_equations(spec)  # spec -> forward equations
    backward = derive_backward(forward, gradient)  # forward -> derived BPTT equations
    expressions = build_kernel_expressions(backward)  # BPTT -> CSE'd expression lists
    layout = build_layout(expressions)  # expression lists -> symbol table
    plan = lower(layout)  # symbol table -> kernel IR
    kernels = chosen.print_kernels(plan)  # kernel IR -> kernel source
    text = build_module_text(layout)  # symbol table -> the module's prose and structure lines
    module = render_module(layout, plan, kernels, text, target=chosen)  # -> module text
    return Stages(spec, forward, backward, expressions, layout, plan, kernels, text, module)


def generate_source(
    variant: CellSpec | str | os.PathLike[str], gradient: GradientMode = "full", target: str = "cpu"
) -> str:
    """The source text of the generated module for ``variant``; the same input always gives the same text."""
    return stages(variant, gradient, target).module


def write_module(
    variant: CellSpec | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    gradient: GradientMode = "full",
    *,
    shadow_check: bool = True,
    target: str = "cpu",
) -> Path:
    """Generate ``variant`` into ``out_dir/<name>.py`` atomically and return the path.

    ``out_dir`` must exist. A name that would shadow a standard or installed module is refused (see
    :func:`check_module_stem`) unless ``shadow_check`` is false (for a directory that is never on
    ``sys.path``, such as :func:`lstmgen.load`'s cache).
    """
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient: expected one of {GRADIENT_MODES}, got {gradient!r}")
    spec = resolve_spec(variant)
    stem = module_name(spec.name, gradient, get_target(target).name)
    if shadow_check:
        check_module_stem(stem, out_dir)
    return write_source(generate_source(spec, gradient, target), out_dir, stem)


def check_module_stem(stem: str, out_dir: str | os.PathLike[str]) -> None:
    """Refuse a module file name that would shadow a standard or installed module for Python run beside it
    (a cell named ``numpy``, generated into the working directory, would be imported instead of numpy).

    The module found may be the very file being rewritten (``python -m lstmgen generate lstm --out .``). A
    standard library name is refused anywhere; an installed package's name only where the file would be imported
    as a top-level module: in the working directory or a directory on ``sys.path``. Elsewhere (``generated/``,
    imported as ``generated.sru``) the built-in ``sru`` and the ``sru`` package live side by side.
    """
    if stem in sys.stdlib_module_names or stem in sys.builtin_module_names:
        raise ValueError(f"name: {stem!r} is a module of Python's standard library; {stem}.py would shadow it")
    if not _top_level(out_dir):
        return
    try:
        found = importlib.util.find_spec(stem)
    except (ImportError, ValueError):  # pragma: no cover - a broken installed package: not ours to judge
        found = None
    if found is not None and found.origin and Path(found.origin).resolve() == (Path(out_dir) / f"{stem}.py").resolve():
        return
    if found is not None:
        where = found.origin or "an installed package"
        raise ValueError(f"name: {stem!r} is an installed module ({where}); {stem}.py would shadow it")


def _top_level(out_dir: str | os.PathLike[str]) -> bool:
    """Whether a module written to ``out_dir`` is importable by its bare name: the working directory (where
    ``python -c`` and the REPL look first) or a directory on ``sys.path``."""
    target = Path(out_dir).resolve()
    return target == Path.cwd().resolve() or any(Path(p or ".").resolve() == target for p in sys.path)


def make_output_directory(out: str | os.PathLike[str]) -> Path:
    """Create the output directory (and its parents) if missing, with a clear error where it cannot be."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileNotFoundError(f"out: output directory {str(out)!r} is not a directory") from None
    except OSError as exc:
        raise OSError(f"out: cannot create output directory {str(out)!r} ({exc.strerror or exc})") from None
    return out


def write_source(source: str, out_dir: str | os.PathLike[str], stem: str) -> Path:
    """Write a module's text to ``out_dir/<stem>.py`` atomically and return the path.

    The text goes to a temporary file in ``out_dir`` that is renamed over the target, so a reader never sees
    a half-written module, and two writers of the same module leave one whole file. A file whose bytes are
    already right is left untouched (numba's cache stays valid).
    """
    return write_text(source, Path(out_dir) / f"{stem}.py")


def write_text(text: str, target: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``target`` atomically (temporary file in the same directory, then rename).

    A file whose bytes are already right is left untouched.
    """
    target = Path(target)
    out = target.parent
    if not out.is_dir():
        what = "is not a directory" if out.exists() else "does not exist"
        raise FileNotFoundError(f"out: output directory {str(out)!r} {what}")
    data = text.encode()
    if target.is_file() and target.read_bytes() == data:
        return target
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=out)
    except PermissionError as exc:
        raise PermissionError(f"out: cannot write to output directory {str(out)!r} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot write {str(target)!r} ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(target)
    return target


#: A temporary file older than this was left by a writer that was killed; a live writer renames within seconds.
STALE_TEMPORARY_SECONDS = 3600


def _remove_stale_temporaries(target: Path) -> None:
    """Delete ``.<name>.*.tmp`` files of ``target`` left behind by killed writers (never a recent one)."""
    now = time.time()
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        try:
            if now - leftover.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                leftover.unlink()
        except OSError:  # pragma: no cover - removed by another writer meanwhile, or not ours to remove
            continue
