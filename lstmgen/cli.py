"""The ``lstmgen`` command line: list the variants, generate their modules."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lstmgen import __version__
from lstmgen.derive_backward import GRADIENT_MODES
from lstmgen.generate import generate_source, write_source
from lstmgen.render_module import module_name
from lstmgen.spec import SpecError
from lstmgen.spec_file import load_spec_file
from lstmgen.variants import VARIANTS, get_variant


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstmgen",
        description="Write a recurrent cell once, as math; get its derived BPTT and a Numba kernel.",
    )
    parser.add_argument("--version", action="version", version=f"lstmgen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="list the built-in variants with their papers")

    gen = commands.add_parser(
        "generate",
        help="generate kernel modules",
        description="Generate one Python module per variant (numpy + numba only; float32 and float64).",
    )
    gen.add_argument("variants", nargs="*", metavar="VARIANT", help="built-in variant names (default: all)")
    gen.add_argument(
        "--spec",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a cell declared in a TOML spec file (repeatable; see examples/)",
    )
    gen.add_argument("--out", default="generated", type=Path, help="output directory (default: ./generated)")
    gen.add_argument(
        "--gradient",
        choices=(*GRADIENT_MODES, "both"),
        default="full",
        help="full BPTT (default); truncated: no error through h_{t-1} into the gates (module suffix _truncated); both",
    )
    return parser


def _list() -> int:
    width = max(len(name) for name in VARIANTS)
    for name, spec in VARIANTS.items():
        print(f"{name:<{width}}  {spec.description}")
        print(f"{'':<{width}}  {spec.paper}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    # Every spec is resolved and every module rendered before anything is written: an error writes nothing.
    specs = [get_variant(name) for name in args.variants] + [load_spec_file(path) for path in args.spec]
    if not specs:
        specs = list(VARIANTS.values())
        args.out.mkdir(parents=True, exist_ok=True)
    modes = GRADIENT_MODES if args.gradient == "both" else (args.gradient,)
    rendered = []
    for spec in specs:
        for mode in modes:
            start = time.perf_counter()
            source = generate_source(spec, mode)
            rendered.append((spec, mode, source, time.perf_counter() - start))
    rows = []
    for spec, mode, source, seconds in rendered:
        path = write_source(source, args.out, module_name(spec.name, mode))
        rows.append((spec.name, str(path), ", ".join(spec.params), f"{seconds:.2f} s"))
    header = ("variant", "file", "parameters", "time")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lstmgen`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        return _generate(args)
    except (SpecError, ValueError, TypeError, OSError) as exc:
        print(f"lstmgen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
