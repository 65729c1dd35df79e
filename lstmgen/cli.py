"""The ``lstmgen`` command line: list the variants, generate their modules, print derivations and error flow."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lstmgen.analysis.derivation import build_derivation
from lstmgen.analysis.derivation_printer import FORMATS, NOTATIONS, render_derivation, render_error_flow
from lstmgen.analysis.error_flow import MAX_MEASURED_STEPS, MEASURED_HIDDEN, measure_error_flow
from lstmgen.analysis.error_flow_plot import check_plot_target, plot_error_flow
from lstmgen.codegen.render_module import module_name
from lstmgen.generate import check_module_stem, generate_source, make_output_directory, write_source, write_text
from lstmgen.loader import load
from lstmgen.spec import CellSpec, SpecError
from lstmgen.spec_file import load_spec_file
from lstmgen.symbolic.derive_backward import GRADIENT_MODES
from lstmgen.variants import VARIANTS, get_variant
from lstmgen.version import __version__


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
    gen.add_argument(
        "--out", default="generated", type=Path, help="output directory, created if missing (default: ./generated)"
    )
    gen.add_argument(
        "--gradient",
        choices=(*GRADIENT_MODES, "both"),
        default="full",
        help="full BPTT (default); truncated: no error through h_{t-1} into the gates (module suffix _truncated); both",
    )
    gen.add_argument(
        "--target",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu: numba (default); cuda: numba.cuda kernels for the GPU (module suffix _cuda; needs lstmgen[cuda])",
    )

    derive = commands.add_parser(
        "derive",
        help="print the forward and derived backward equations",
        description="Print the forward equations, the derived BPTT equations, the weight gradients and the "
        "one-step Jacobian of the carried state: the expressions the generated kernel computes.",
    )
    _add_cell_arguments(derive)
    derive.add_argument("--format", choices=FORMATS, default="latex", help="latex (default), markdown or text")
    derive.add_argument("--notation", choices=NOTATIONS, default="modern", help="modern (default) or graves")
    derive.add_argument("--standalone", action="store_true", help="a complete LaTeX document (pdflatex)")
    derive.add_argument("--out", type=Path, help="write to this file instead of standard output")

    cec = commands.add_parser(
        "cec",
        help="error flow: the carried state's Jacobian, the 1997 analysis, and measured decay",
        description="Symbolic: the one-step Jacobian of the carried state and the constant-error-carousel "
        "analysis. Measured (--steps): inject an error at the last step and print ||dL/ds(T-q)|| for q = 0..T.",
    )
    _add_cell_arguments(cec)
    cec.add_argument("--format", choices=FORMATS, default="text", help="text (default), latex or markdown")
    cec.add_argument("--steps", type=int, help="measure over this many steps with the generated kernels")
    cec.add_argument("--compare", default="", help="more built-in variants to measure, comma separated")
    cec.add_argument("--plot", type=Path, metavar="FILE.png", help="write a log-scale plot of the measurement")
    cec.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    cec.add_argument(
        "--block-size",
        type=int,
        metavar="S",
        help="measure VARIANT with memory blocks of S cells sharing its block gates (the compared variants keep "
        "a gate per cell)",
    )
    export = commands.add_parser(
        "export-onnx",
        help="write a cell's forward as an ONNX model (a Scan over its equations)",
        description="Write one layer of the cell's forward as an ONNX model: the input projection, then a Scan "
        "whose body is the cell's forward equations (needs lstmgen[onnx]). Inputs x (T, B, I), the parameters by "
        "name, <state>0 per state, the per-step inputs, lengths (with --lengths); outputs y and <state>_final.",
    )
    export.add_argument("variant", nargs="?", metavar="VARIANT", help="a built-in variant")
    export.add_argument("--spec", type=Path, metavar="FILE", help="a cell declared in a TOML spec file")
    export.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="the model file to write")
    export.add_argument("--input-size", type=int, required=True, metavar="I")
    export.add_argument("--hidden-size", type=int, required=True, metavar="H")
    export.add_argument("--heads", type=int, metavar="K", help="heads of a block-diagonal R (default the cell's)")
    export.add_argument("--proj-size", type=int, metavar="P", help="units of a projected output (default H)")
    export.add_argument("--block-size", type=int, metavar="S", help="cells per memory block (default 1)")
    export.add_argument("--lengths", action="store_true", help="the model takes the lengths (B,) of a padded batch")
    export.add_argument("--reverse", action="store_true", help="run each sequence from its last valid step")
    export.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    return parser


def _add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", nargs="?", metavar="VARIANT", help="a built-in variant")
    parser.add_argument("--spec", type=Path, metavar="FILE", help="a cell declared in a TOML spec file")
    parser.add_argument("--gradient", choices=GRADIENT_MODES, default="full", help="full (default) or truncated")


def _cell(args: argparse.Namespace) -> CellSpec:
    if (args.variant is None) == (args.spec is None):
        raise ValueError("variant: give a built-in VARIANT or --spec FILE (exactly one)")
    return get_variant(args.variant) if args.spec is None else load_spec_file(args.spec)


def _derive(args: argparse.Namespace) -> int:
    text = render_derivation(build_derivation(_cell(args), args.gradient), args.format, args.notation, args.standalone)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_text(text, args.out)
        print(f"wrote {args.out}")
    return 0


def _cec(args: argparse.Namespace) -> int:
    spec = _cell(args)
    compare = [name for name in args.compare.split(",") if name]
    others = [get_variant(name) for name in compare]
    # Everything that can fail is checked before anything is printed or measured (which may take minutes).
    if args.steps is None and (args.plot or compare):
        raise ValueError("--steps: --plot and --compare measure the error flow; give --steps T")
    if args.steps is not None and not 1 <= args.steps <= MAX_MEASURED_STEPS:
        raise ValueError(
            f"--steps: expected an integer in [1, {MAX_MEASURED_STEPS}] (the work grows as T²), got {args.steps}"
        )
    if args.seed < 0:
        raise ValueError(f"--seed: expected a non-negative integer, got {args.seed}")
    if args.block_size is not None:
        if args.steps is None:
            raise ValueError("--block-size: sets the memory blocks of the measurement; give --steps T")
        if not spec.block_gates:
            raise ValueError(f"--block-size: {spec.name} has no gates a memory block shares (no block_gates)")
        if not (args.block_size >= 1 and MEASURED_HIDDEN % args.block_size == 0):
            raise ValueError(
                f"--block-size: expected a divisor of the measured H = {MEASURED_HIDDEN}, got {args.block_size}"
            )
    if args.steps is not None:
        for cell in (spec, *others):
            if cell.heads is not None and MEASURED_HIDDEN % cell.heads:
                raise ValueError(
                    f"heads: the measurement runs H = {MEASURED_HIDDEN} units, which {cell.name}'s heads = "
                    f"{cell.heads} do not divide (each head has H/heads units)"
                )
    if args.plot:
        check_plot_target(args.plot)
    derivation = build_derivation(spec, args.gradient)
    sys.stdout.write(render_error_flow(derivation, args.format))
    if args.steps is None:
        return 0
    cells = [spec, *others]
    curves = {}
    for n, cell in enumerate(cells, start=1):
        blocks = {"block_size": args.block_size} if n == 1 and args.block_size is not None else {}
        label = cell.name if args.gradient == "full" else f"{cell.name} ({args.gradient})"
        label += f" S={args.block_size}" if blocks else ""
        report = _progress(f"[{n}/{len(cells)}] {label}")
        curves[label] = measure_error_flow(
            load(cell, args.gradient), args.steps, seed=args.seed, progress=report, **blocks
        )
    labels = list(curves)
    print(f"\nMeasured ||dL/ds(T-q)|| of the carried state (c, else h), error injected at step T = {args.steps}:")
    print("    q  " + "  ".join(f"{label:>22}" for label in labels))
    for q in range(args.steps + 1):
        print(f"{q:5d}  " + "  ".join(f"{curves[label][q]:22.15e}" for label in labels))
    if args.plot:
        plot_error_flow(curves, args.plot, f"Error flow over {args.steps} steps ({args.gradient} gradient)")
        print(f"wrote {args.plot}")
    return 0


def _progress(what: str) -> Callable[[int, int], None] | None:
    """A progress line on a terminal (rewritten in place about every 5% of the steps); nothing when piped."""
    if not sys.stderr.isatty():
        return None

    def report(q: int, steps: int) -> None:
        if q == steps or q % max(1, steps // 20) == 0:
            end = "\n" if q == steps else ""
            print(f"\r{what}: measured {q}/{steps} steps back", end=end, file=sys.stderr, flush=True)

    return report


def _list() -> int:
    width = max(len(name) for name in VARIANTS)
    for name, spec in VARIANTS.items():
        print(f"{name:<{width}}  {spec.description}")
        print(f"{'':<{width}}  {spec.paper}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    # Every spec is resolved and every module rendered before anything is written: an error writes nothing.
    specs = [(name, get_variant(name)) for name in args.variants]
    specs += [(f"--spec {path}", load_spec_file(path)) for path in args.spec]
    if not specs:
        specs = list(VARIANTS.items())
    modes = GRADIENT_MODES if args.gradient == "both" else (args.gradient,)
    writes: dict[str, str] = {}  # module stem -> the argument that asked for it
    for given, spec in specs:
        for mode in modes:
            stem = module_name(spec.name, mode, args.target)
            if stem in writes and writes[stem] != given:
                raise ValueError(f"{given}: writes {stem}.py, as {writes[stem]} does (rename one of the cells)")
            check_module_stem(stem, args.out)
            writes[stem] = given
    unique = list({spec.name: spec for _, spec in specs}.values())  # a variant named twice is generated once
    rendered = []
    for spec in unique:
        for mode in modes:
            start = time.perf_counter()
            source = generate_source(spec, mode, args.target)
            rendered.append((spec, mode, source, time.perf_counter() - start))
    make_output_directory(args.out)
    rows = []
    for spec, mode, source, seconds in rendered:
        path = write_source(source, args.out, module_name(spec.name, mode, args.target))
        rows.append((spec.name, str(path), ", ".join(spec.params), f"{seconds:.2f} s"))
    header = ("variant", "file", "parameters", "time")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    spec = _cell(args)
    from lstmgen.export_onnx import export_onnx, save_model

    model = export_onnx(
        spec,
        input_size=args.input_size,
        hidden_size=args.hidden_size,
        heads=args.heads,
        proj_size=args.proj_size,
        block_size=args.block_size,
        lengths=args.lengths,
        reverse=args.reverse,
        dtype=args.dtype,
    )
    save_model(model, args.out)
    print(f"{spec.name}: wrote {args.out} ({len(model.graph.node)} nodes, Scan body {_body_size(model)} nodes)")
    return 0


def _body_size(model) -> int:
    scan = next(n for n in model.graph.node if n.op_type == "Scan")
    return len(scan.attribute[0].g.node)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lstmgen`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "list": lambda _: _list(),
            "generate": _generate,
            "derive": _derive,
            "cec": _cec,
            "export-onnx": _export_onnx,
        }
        return commands[args.command](args)
    except (SpecError, ValueError, TypeError, OSError) as exc:
        print(f"lstmgen: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        asked = f" (--steps {args.steps})" if getattr(args, "steps", None) else ""
        print(f"lstmgen: error: {args.command}: out of memory for the sizes asked for{asked}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
