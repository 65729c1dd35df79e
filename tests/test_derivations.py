"""`lstmgen derive` and `lstmgen cec`: printed derivations, LaTeX that compiles, error flow symbolic and measured."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import sympy
from conftest import BUILTIN

from lstmgen.analysis.derivation import build_derivation
from lstmgen.analysis.derivation_document import DocumentBuilder
from lstmgen.analysis.derivation_printer import _BREAK, printer_for, render_derivation
from lstmgen.analysis.error_flow import single_unit_analysis, state_gradients, state_jacobian
from lstmgen.cli import main
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations, unit_symbol
from lstmgen.variants import VARIANTS

S = unit_symbol
#: pdflatex's overfull-box warnings allowed in a derivation document, in points (a hair; the bug was 278-790).
MAX_OVERFULL_PT = 2.0


def needs_pdflatex():
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex is missing: .ci/run installs texlive-latex-base")
        pytest.skip("pdflatex is not installed here (.ci/run installs it)")


@pytest.mark.parametrize("notation", ["modern", "graves"])
@pytest.mark.parametrize("name", BUILTIN)
def test_standalone_document_compiles(tmp_path, name, notation):
    needs_pdflatex()
    (tmp_path / "doc.tex").write_text(
        render_derivation(build_derivation(VARIANTS[name]), "latex", notation, standalone=True)
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in run.stdout.splitlines() if line.startswith("!")]
    assert run.returncode == 0 and not errors, "\n".join(errors) or run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").read_bytes().startswith(b"%PDF")
    # The document fits the page: no line sticks out into the margin by more than a hair.
    log = (tmp_path / "doc.log").read_text(errors="replace")
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]
    assert max(overfull, default=0.0) <= MAX_OVERFULL_PT, f"overfull boxes of {overfull} pt"


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("name", BUILTIN)
def test_printed_backward_equations_are_the_kernel_ones(name, gradient):
    """The same SymPy objects the generated kernel is built from, not a separate text."""
    derivation = build_derivation(VARIANTS[name], gradient)
    kernel = build_kernel_expressions(derive_backward(build_forward_equations(VARIANTS[name]), gradient))
    assert derivation.adjoints == tuple(kernel.backward.adjoints)
    assert dict(derivation.outputs) == {S(f"d_{v}"): e for v, e in kernel.backward.outputs}


@pytest.mark.parametrize("fmt", ["markdown", "text"])
@pytest.mark.parametrize("name", BUILTIN)
def test_every_derived_equation_is_printed(name, fmt):
    derivation = build_derivation(VARIANTS[name])
    out = render_derivation(derivation, fmt)
    builder = DocumentBuilder(derivation, "modern")
    printer = printer_for(fmt, builder.names)
    for a in (*derivation.forward, *derivation.adjoints):
        if a.role == "source":
            continue
        # As the document prints it: a right-hand side may break between terms (markdown puts spaces there).
        rhs = printer.math(builder.expr(a.rhs, True)).replace(_BREAK, " ")
        assert f"{printer.math(builder.sym(a.lhs))} = {rhs}" in out, f"{a} is missing"


def test_graves_notation_uses_the_thesis_symbols():
    out = render_derivation(build_derivation(VARIANTS["lstm_peephole"]), "latex", "graves")
    for piece in (
        r"b_{\iota}^{t}",
        r"b_{\phi}^{t}",
        r"b_{\omega}^{t}",
        "s_c^{t-1}",
        r"\epsilon_s^{t}",
        r"\epsilon_c^{t}",
        r"\delta_{\iota}^{t}",
        r"w_{c\iota}",
        r"w_{c\phi}",
        r"w_{c\omega}",
    ):
        assert piece in out
    assert r"\begin{align*}" in out


def test_user_text_is_escaped_in_latex():
    from dataclasses import replace

    spec = replace(VARIANTS["lstm"], description="50% faster & {braces} $x$ \\input{/etc/passwd}")
    out = render_derivation(build_derivation(spec), "latex", standalone=True)
    assert r"50\% faster \& \{braces\} \$x\$ \textbackslash{}input\{/etc/passwd\}" in out


def carried_block(name, gradient):
    blocks = {(b.target, b.source): b for b in state_jacobian(VARIANTS[name], gradient)}
    carried = VARIANTS[name].state[-1]
    return blocks[(carried, carried)], blocks


def test_cec_closed_forms():
    i, f, g, c_prev, p_i, p_f = map(S, ["i", "f", "g", "c_prev", "p_i", "p_f"])
    block, _ = carried_block("lstm_1997", "truncated")
    assert sympy.simplify(block.diagonal - 1) == 0
    block, _ = carried_block("lstm", "truncated")
    assert sympy.simplify(block.diagonal - f) == 0
    block, blocks = carried_block("lstm_peephole", "full")
    expected = f + p_f * c_prev * f * (1 - f) + p_i * g * i * (1 - i)
    assert sympy.simplify(block.diagonal - expected) == 0
    # The recurrent path h_{t-1} -> gates -> c_t exists in the full gradient, not in the truncated one.
    assert {gate for gate, _ in blocks[("c", "h")].recurrent} == {"i", "f", "g"}
    assert not carried_block("lstm_peephole", "truncated")[1][("c", "h")].recurrent
    block, _ = carried_block("rnn_tanh", "full")
    assert block.diagonal == 0 and [(k, sympy.simplify(v - (1 - S("g") ** 2))) for k, v in block.recurrent] == [
        ("g", 0)
    ]
    block, _ = carried_block("gru", "truncated")
    assert block.diagonal == S("z")


def test_single_unit_analysis_is_derived():
    a = single_unit_analysis()
    assert a.max_derivative == {"sigmoid": sympy.Rational(1, 4), "tanh": 1}
    assert a.vanishing_bound == {"sigmoid": 4, "tanh": 1}
    net, w = sympy.symbols("net w", real=True)
    assert sympy.simplify(a.constant_flow_activation - net / w) == 0
    assert a.cec_activation == net


def test_measured_flow_of_lstm_1997_truncated_is_constant(generated_module):
    grads, _ = state_gradients(generated_module("lstm_1997_truncated"), 40, batch=4, hidden=6)
    dc = [g[1] for g in grads[1:]]
    for q in range(1, len(dc)):
        np.testing.assert_allclose(dc[q], dc[0], rtol=1e-12, atol=0)


def test_measured_flow_of_lstm_truncated_is_scaled_by_the_forget_gate(generated_module):
    module = generated_module("lstm_truncated")
    steps, hidden = 40, 6
    grads, tape = state_gradients(module, steps, batch=4, hidden=hidden)
    f = tape.gate_seq[:, :, hidden : 2 * hidden]  # GATES = (i, f, g, o)
    for q in range(1, steps):
        k = steps - q  # grads[q] is dL/dc_k; one step back multiplies by f_k (gate_seq index k - 1)
        np.testing.assert_allclose(grads[q + 1][1], f[k - 1] * grads[q][1], rtol=1e-12, atol=1e-300)


def test_cec_cli_prints_the_table_and_plots_it(tmp_path, capsys, monkeypatch):
    import lstmgen.cli as cli

    drawn = {}
    real_plot = cli.plot_error_flow

    def spy(curves, path, title):
        drawn.update(real_plot(curves, path, title))
        return drawn

    monkeypatch.setattr(cli, "plot_error_flow", spy)
    png = tmp_path / "flow.png"
    assert main(["cec", "rnn_tanh", "--steps", "12", "--compare", "lstm_1997", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "∂h[t]/∂h[t-1] = diag(1 - g[t]²)·R_gᵀ" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 3]
    table = np.array([[float(v) for v in row[1:]] for row in rows])
    assert table.shape == (13, 2)
    for column, label in enumerate(["rnn_tanh", "lstm_1997"]):
        printed = table[:, column]
        np.testing.assert_allclose(drawn[label], printed[printed > 0], rtol=1e-14)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["derive"], "give a built-in VARIANT or --spec FILE"),
        (["derive", "lstm", "--format", "markdown", "--standalone"], "standalone: only the latex format"),
        (["cec", "lstm", "--plot", "x.png"], "steps: --plot and --compare measure"),
        (["cec", "lstm_fgr", "--steps", "3"], "feeds gate values back"),
        (["cec", "nope"], "unknown variant 'nope'"),
    ],
)
def test_derive_and_cec_errors(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_derive_writes_a_file(tmp_path, capsys):
    out = tmp_path / "lstm.tex"
    assert main(["derive", "lstm", "--standalone", "--out", str(out)]) == 0
    assert out.read_text().startswith(r"\documentclass")


@pytest.mark.parametrize("name", ["lstm_peephole", "lstm_fgr", "lstm"])
def test_graves_notation_is_used_throughout(name):
    """Graves' symbols everywhere (R_ι, not R_i next to R_ι), biases β apart from the activations b, and the
    document says which symbols keep lstmgen's names."""
    derivation = build_derivation(VARIANTS[name])
    text = render_derivation(derivation, "text", "graves", False)
    latex = render_derivation(derivation, "latex", "graves", True)
    assert not re.search(r"\b[RWQb]_[ifgo]\b", text), re.search(r".*\b[RWQb]_[ifgo]\b.*", text).group(0)
    assert not re.search(r"[RWQ]_\{[ifgo]\}", latex)
    assert "h[t-1]" not in text and "h_{t-1}" not in latex and "[t]" not in text
    assert "β_ι" in text and "b_ι(t)" in text and r"\beta_{\iota}" in latex
    assert "ε_s(t)|t+1 is the part of the state error arriving from step t+1" in text
    assert "Notation of Graves (2012), §4.5" in text and "Kept from lstmgen" in text


def test_error_flow_report_reuses_the_document_builder():
    """`lstmgen cec` and `lstmgen derive` print the Jacobian from one builder: the same rows in every format."""
    from lstmgen.analysis.derivation_document import build_document, build_error_flow

    for name in ("lstm", "gru_v3", "lstm_fgr"):
        derivation = build_derivation(VARIANTS[name])
        document, report = build_document(derivation, "graves"), build_error_flow(derivation, "graves")
        (section,) = [s for s in document.sections if s.title == "Error flow"]
        assert section.equations == report.equations and document.analysis == report.analysis
        for fmt in ("latex", "markdown", "text"):
            printer = printer_for(fmt, report.names)
            assert "\n".join(printer.equations(report.equations)) in render_derivation(derivation, fmt, "graves")


@pytest.mark.parametrize("name", ["lstm_peephole", "gru_v3", "lstm_fgr"])
def test_a_notebook_shows_the_derivation(tmp_path, name):
    derivation = build_derivation(VARIANTS[name])
    markdown = derivation._repr_markdown_()
    latex = derivation._repr_latex_()
    assert "```" not in markdown and markdown.count("$$") % 2 == 0
    builder = DocumentBuilder(derivation, "modern")
    printer = printer_for("latex", builder.names)
    for a in derivation.forward:
        if a.role != "source":
            assert f"$${printer.math(builder.sym(a.lhs))} = " in markdown
    assert latex.count(r"\begin{align*}") == 4 and r"\text{Backward}" in latex
    needs_pdflatex()
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\\usepackage{amsmath,amssymb}\\begin{document}\n" + latex + "\\end{document}\n"
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
