"""The function table: one record per function of the equation vocabulary, and every stage reads it.

A record holds the function's SymPy class, its arity, its derivative (written through the function's output
where that is cheaper, as σ' = σ(1−σ), so that backward reads a value forward saved), its LaTeX and text
forms, and the Numba helper that computes it in a generated module (the helper's source lives in
:mod:`lstmgen.codegen.kernel_helpers`; the helpers it calls are found there too). The parser's vocabulary
(:data:`VOCABULARY`), the functions whose values forward saves (:data:`HOISTED`), the Numba printer's helper
map, the LaTeX and text printers and the helpers a module inlines all derive from :data:`FUNCTIONS` (the
helpers' source is :mod:`lstmgen.codegen`'s: :mod:`lstmgen.codegen.helper_sources`).

Adding a function is one record (plus its helper in :mod:`lstmgen.codegen.kernel_helpers` and its tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy


# ------------------------------------------------------------------------------------------ SymPy classes
# Real sympy.Function subclasses (an undefined Function('sigmoid') would not dispatch to printer methods);
# lower case, like sympy.tanh. Their fdiff comes from the table below.
class sigmoid(sympy.Function):  # noqa: N801
    """The logistic function σ(x) = 1 / (1 + e^{−x})."""

    nargs = 1

    def _eval_rewrite_as_exp(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 1 / (1 + sympy.exp(-arg))


class squash_g(sympy.Function):  # noqa: N801
    """Hochreiter & Schmidhuber's input squashing g(x) = 4σ(x) − 2 = 2 tanh(x/2) ∈ [−2, 2]."""

    nargs = 1

    def _eval_rewrite_as_tanh(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 2 * sympy.tanh(arg / 2)


class squash_h(sympy.Function):  # noqa: N801
    """Hochreiter & Schmidhuber's output squashing h(x) = 2σ(x) − 1 = tanh(x/2) ∈ [−1, 1]."""

    nargs = 1

    def _eval_rewrite_as_tanh(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return sympy.tanh(arg / 2)


class relu(sympy.Function):  # noqa: N801
    """max(x, 0)."""

    nargs = 1


class hard_sigmoid(sympy.Function):  # noqa: N801
    """PyTorch's hardsigmoid: clip(x/6 + 1/2, 0, 1)."""

    nargs = 1


class softsign(sympy.Function):  # noqa: N801
    """x / (1 + |x|)."""

    nargs = 1


class softplus(sympy.Function):  # noqa: N801
    """log(1 + e^x), computed without overflow."""

    nargs = 1


class logsigmoid(sympy.Function):  # noqa: N801
    """log σ(x) = −softplus(−x)."""

    nargs = 1


class sqrt(sympy.Function):  # noqa: N801
    """√x as a function of its own (SymPy's sqrt is a power x^(1/2), which the kernels do not print)."""

    nargs = 1


class sqrt_bounded(sympy.Function):  # noqa: N801
    """√x whose derivative is capped at :data:`SQRT_MAX_GRADIENT` (Griffin's ``SqrtBoundDerivative``): the
    derivative 1/(2√x) is infinite at x = 0, where a saturated gate puts the argument of RG-LRU's √(1 − a²)."""

    nargs = 1


class maximum(sympy.Function):  # noqa: N801
    """max(a, b); its derivative splits the gradient evenly at a tie, as torch.maximum."""

    nargs = 2


class minimum(sympy.Function):  # noqa: N801
    """min(a, b); its derivative splits the gradient evenly at a tie, as torch.minimum."""

    nargs = 2


class select(sympy.Function):  # noqa: N801
    """select(c, a, b) = a where c > 0, else b: a switch on c's sign. Its gradient goes to the branch taken and
    none to c (the switch is piecewise constant in c), as torch.where's."""

    nargs = 3


class positive(sympy.Function):  # noqa: N801
    """The indicator [y > 0] (relu's derivative)."""

    nargs = 1

    def _eval_power(self, exponent: sympy.Expr) -> sympy.Expr | None:
        # An indicator is 0 or 1: [y > 0]^k = [y > 0] for every positive integer k.
        return self if exponent.is_integer and exponent.is_positive else None


class not_positive(sympy.Function):  # noqa: N801
    """The indicator [y ≤ 0] = 1 − [y > 0] (NaN counts as not positive): where select takes its second branch."""

    nargs = 1

    def _eval_power(self, exponent: sympy.Expr) -> sympy.Expr | None:
        return self if exponent.is_integer and exponent.is_positive else None


class inside_unit(sympy.Function):  # noqa: N801
    """The indicator [0 < y < 1] (hard_sigmoid's derivative)."""

    nargs = 1


class expm1(sympy.Function):  # noqa: N801
    """e^y − 1 without cancellation near 0 (the derivatives of softplus and logsigmoid)."""

    nargs = 1


class tie_step(sympy.Function):  # noqa: N801
    """[a > b] + [a = b]/2: the share of max(a, b)'s gradient that goes to a."""

    nargs = 2


class masked(sympy.Function):  # noqa: N801
    """masked(m, e) = m·e where the indicator m is nonzero, else 0, even where e is infinite or NaN.

    A product with an indicator factor (relu', select's branches, max/min's tie step, sign) is the gradient of a
    branch: where the indicator is 0 the branch is not taken and passes no gradient, whatever its other factors
    (1/r at r = 0, say). The derivation writes every such product this way
    (:mod:`lstmgen.symbolic.masking`) and the kernels compute it as a select, as autograd does.
    """

    nargs = 2

    @classmethod
    def eval(cls, mask: sympy.Expr, expr: sympy.Expr) -> sympy.Expr | None:
        if mask.is_zero or expr.is_zero:
            return sympy.Integer(0)
        # A known indicator, or a product of constants and indicators (finite): nothing to guard.
        if mask.is_Number or all(f.is_Number or is_indicator(f) for f in sympy.Mul.make_args(expr)):
            return mask * expr
        return None


class sum_units(sympy.Function):  # noqa: N801
    """Σ_j e_j, the sum of a per-unit expression over the H units of a row: a reduction, one value per batch row.

    Its derivative with respect to its argument is 1, so ``sympy.diff`` gives ∂(Σ_j e_j)/∂v_j = ∂e_j/∂v_j (the
    adjoint of a sum is broadcast to every unit); the backward derivation adds the sum over the units where a
    per-row value is read by per-unit ones (:mod:`lstmgen.symbolic.derive_backward`).
    """

    nargs = 1


#: The number of units a reduction runs over (H): printed ``H`` in equations, ``real(hidden)`` in kernels.
UNITS = sympy.Symbol("H", positive=True, integer=True)
#: The largest finite float32: constants of equations and ``[init]`` values must fit both dtypes.
FLOAT32_MAX = 3.4028234663852886e38
#: The cap on the derivative of :class:`sqrt_bounded`, Griffin's ``_MAX_SQRT_GRADIENT``.
SQRT_MAX_GRADIENT = sympy.Integer(1000)
#: Layer norm's epsilon, as torch.nn.functional.layer_norm's default (added to the biased variance).
LAYER_NORM_EPS = sympy.Rational(1, 100000)


# -------------------------------------------------------------------------------------------- the table
Derivative = Callable[[sympy.Expr, int], sympy.Expr]


@dataclass(frozen=True)
class FunctionRecord:
    """One function of the equation vocabulary (or a helper function that derivatives produce).

    Attributes:
        name: its name in equation text (and in the text printer).
        cls: the SymPy class of its calls.
        arity: number of arguments.
        derivative: ``(call, k) -> ∂call/∂arg_k`` (k from 1), in terms of the call itself (its output) and its
            arguments; None for SymPy's own classes (tanh, exp, log, Abs), whose fdiff is used.
        latex: LaTeX template, ``{0}``, ``{1}`` standing for the printed arguments; installed on lstmgen's own
            classes (SymPy's tanh, exp, log, Abs and sign print their standard LaTeX, which it spells out).
        helper: the Numba helper in :mod:`lstmgen.codegen.kernel_helpers` that computes it, or "" for a Python builtin
            spelled ``builtin``.
        builtin: for a function Numba computes itself, its spelling (``abs``).
        vocabulary: written in equations (False for the indicators that only derivatives produce).
        gate: allowed as a gate's activation.
        hoisted: forward saves the value of a nested call, because the derivative reads the output.
        build: what an equation's call builds (``identity`` builds its argument); default ``cls``.
        text: the plain-text template of ``lstmgen derive --format text``; default ``name(args)``.
        indicator: a step function of its arguments that derivatives produce (relu's [y > 0], select's
            branches, max's tie step, sign): a product with it is written as :class:`masked`, so that where it
            is 0 nothing of the other factors reaches a gradient.
    """

    name: str
    cls: type[sympy.Function] | None
    arity: int
    derivative: Derivative | None
    latex: str
    helper: str = ""
    builtin: str = ""
    vocabulary: bool = True
    gate: bool = True
    hoisted: bool = True
    build: Callable[..., sympy.Expr] | None = field(default=None)
    text: str = ""
    indicator: bool = False

    def text_of(self, args: list[str]) -> str:
        """The call printed as text, from its printed arguments."""
        return self.text.format(*args) if self.text else f"{self.name}({', '.join(args)})"

    def make(self, *args: sympy.Expr) -> sympy.Expr:
        """The SymPy expression of a call with these arguments."""
        return (self.build or self.cls)(*args)


def _through_output(derivative: Callable[[sympy.Expr], sympy.Expr]) -> Derivative:
    """A one-argument derivative written through the output: ``derivative(call)``."""
    return lambda call, k: derivative(call)


FUNCTIONS: tuple[FunctionRecord, ...] = (
    FunctionRecord(
        "sigmoid",
        sigmoid,
        1,
        _through_output(lambda s: s * (1 - s)),
        r"\sigma\left({0}\right)",
        "_sigmoid",
        text="σ({0})",
    ),
    FunctionRecord("tanh", sympy.tanh, 1, None, r"\tanh\left({0}\right)", "_tanh"),
    FunctionRecord("relu", relu, 1, _through_output(positive), r"\operatorname{{relu}}\left({0}\right)", "_relu"),
    FunctionRecord(
        "hard_sigmoid",
        hard_sigmoid,
        1,
        _through_output(lambda s: inside_unit(s) / 6),
        r"\operatorname{{hardsigmoid}}\left({0}\right)",
        "_hard_sigmoid",
    ),
    FunctionRecord(
        "softsign",
        softsign,
        1,
        _through_output(lambda s: (1 - sympy.Abs(s)) ** 2),
        r"\operatorname{{softsign}}\left({0}\right)",
        "_softsign",
    ),
    FunctionRecord(
        "squash_g", squash_g, 1, _through_output(lambda g: 1 - g**2 / 4), r"g_{{1997}}\left({0}\right)", "_squash_g"
    ),
    FunctionRecord(
        "squash_h",
        squash_h,
        1,
        _through_output(lambda h: (1 - h**2) / 2),
        r"h_{{1997}}\left({0}\right)",
        "_squash_h",
    ),
    FunctionRecord("identity", None, 1, None, "{0}", build=lambda arg: arg, hoisted=False),
    FunctionRecord("exp", sympy.exp, 1, None, r"e^{{{0}}}", "_exp"),
    # log' = 1/x reads the argument, not the output: nothing to save.
    FunctionRecord("log", sympy.log, 1, None, r"\log\left({0}\right)", "_log", hoisted=False),
    # e^y − 1 without cancellation near 0: 1 − a² as −expm1(2 log a), say. Its derivative e^y = expm1(y) + 1.
    FunctionRecord(
        "expm1", expm1, 1, _through_output(lambda y: y + 1), r"\left(e^{{{0}}} - 1\right)", "_expm1", gate=False
    ),
    FunctionRecord(
        "softplus",
        softplus,
        1,
        _through_output(lambda y: -expm1(-y)),  # σ(x) = 1 − e^{−softplus(x)}
        r"\operatorname{{softplus}}\left({0}\right)",
        "_softplus",
    ),
    FunctionRecord(
        "logsigmoid",
        logsigmoid,
        1,
        _through_output(lambda y: -expm1(y)),  # 1 − σ(x) = 1 − e^{log σ(x)}
        r"\log\sigma\left({0}\right)",
        "_logsigmoid",
    ),
    FunctionRecord("sqrt", sqrt, 1, _through_output(lambda y: 1 / (2 * y)), r"\sqrt{{{0}}}", "_sqrt"),
    # Griffin's bound, written through the output: 1/sqrt(max(4x, 1/cap²)) = 1/max(2y, 1/cap).
    FunctionRecord(
        "sqrt_bounded",
        sqrt_bounded,
        1,
        _through_output(lambda y: 1 / maximum(2 * y, 1 / SQRT_MAX_GRADIENT)),
        r"\sqrt{{{0}}}",
        "_sqrt",
    ),
    # |x|' = sign(x) reads the argument; 0 at 0, as PyTorch.
    FunctionRecord("abs", sympy.Abs, 1, None, r"\left|{0}\right|", builtin="abs", hoisted=False, text="|{0}|"),
    FunctionRecord(
        "max",
        maximum,
        2,
        lambda call, k: tie_step(*call.args) if k == 1 else tie_step(call.args[1], call.args[0]),
        r"\max\left({0}, {1}\right)",
        "_maximum",
        gate=False,
        hoisted=False,
    ),
    FunctionRecord(
        "min",
        minimum,
        2,
        lambda call, k: tie_step(call.args[1], call.args[0]) if k == 1 else tie_step(*call.args),
        r"\min\left({0}, {1}\right)",
        "_minimum",
        gate=False,
        hoisted=False,
    ),
    FunctionRecord(
        "select",
        select,
        3,
        lambda call, k: (
            sympy.Integer(0) if k == 1 else positive(call.args[0]) if k == 2 else not_positive(call.args[0])
        ),
        r"\operatorname{{select}}\left({0} > 0,\, {1},\, {2}\right)",
        "_select",
        gate=False,
        hoisted=False,
        text="select({0} > 0, {1}, {2})",
    ),
    # Produced by derivatives only.
    FunctionRecord(
        "positive",
        positive,
        1,
        None,
        r"\left[{0} > 0\right]",
        "_positive",
        vocabulary=False,
        text="[{0} > 0]",
        indicator=True,
    ),
    FunctionRecord(
        "not_positive",
        not_positive,
        1,
        None,
        r"\left[{0} \le 0\right]",
        "_not_positive",
        vocabulary=False,
        text="[{0} <= 0]",
        indicator=True,
    ),
    FunctionRecord(
        "inside_unit",
        inside_unit,
        1,
        None,
        r"\left[0 < {0} < 1\right]",
        "_inside_unit",
        vocabulary=False,
        text="[0 < {0} < 1]",
        indicator=True,
    ),
    FunctionRecord(
        "sign",
        sympy.sign,
        1,
        None,
        r"\operatorname{{sign}}\left({0}\right)",
        "_sign",
        vocabulary=False,
        indicator=True,
    ),
    FunctionRecord(
        "tie_step",
        tie_step,
        2,
        None,
        r"\left(\left[{0} > {1}\right] + \tfrac{{1}}{{2}}\left[{0} = {1}\right]\right)",
        "_tie_step",
        vocabulary=False,
        indicator=True,
    ),
    FunctionRecord(
        "masked",
        masked,
        2,
        None,
        r"{0} \left({1}\right)",
        "_masked",
        vocabulary=False,
        gate=False,
        hoisted=False,
        text="{0}·({1})",
    ),
    # Reductions over the units: lowered to a loop of their own, never printed as a call.
    FunctionRecord(
        "sum_units",
        sum_units,
        1,
        lambda call, k: sympy.Integer(1),
        r"\sum_{{j}} \left({0}\right)_{{j}}",
        vocabulary=False,
        gate=False,
        hoisted=False,
        text="sum_j({0})",
    ),
)

BY_NAME: dict[str, FunctionRecord] = {f.name: f for f in FUNCTIONS}
BY_CLASS: dict[type[sympy.Function], FunctionRecord] = {f.cls: f for f in FUNCTIONS if f.cls is not None}
#: The functions an equation may call, by name.
VOCABULARY: dict[str, FunctionRecord] = {f.name: f for f in FUNCTIONS if f.vocabulary}
#: The functions a gate may use as its activation.
GATE_ACTIVATIONS: tuple[str, ...] = tuple(f.name for f in FUNCTIONS if f.vocabulary and f.gate)
#: The classes whose nested calls forward saves as values of their own (their derivatives read them).
HOISTED: tuple[type[sympy.Function], ...] = tuple(
    f.cls for f in FUNCTIONS if f.vocabulary and f.hoisted and f.cls is not None
)


def _mean(e: sympy.Expr) -> sympy.Expr:
    return sum_units(e) / UNITS


def _variance(e: sympy.Expr) -> sympy.Expr:
    deviation = e - _mean(e)
    return _mean(deviation * deviation)


def _layer_norm(e: sympy.Expr) -> sympy.Expr:
    return (e - _mean(e)) / sqrt(_variance(e) + LAYER_NORM_EPS)


#: The reductions an equation may call, by name: what each builds from its argument (mean and biased variance
#: over the H units of one batch row; layer_norm without gain or shift, epsilon LAYER_NORM_EPS). The mean over
#: the G·H units of several blocks is the mean of their sum over H units divided by G.
REDUCTIONS: dict[str, Callable[[sympy.Expr], sympy.Expr]] = {
    "mean": _mean,
    "var": _variance,
    "layer_norm": _layer_norm,
}


def is_indicator(expr: sympy.Expr) -> bool:
    """Whether ``expr`` is a call of an indicator of the table ([y > 0], the tie step, sign...)."""
    record = BY_CLASS.get(type(expr))
    return record is not None and record.indicator


def record_of(expr: sympy.Function) -> FunctionRecord:
    """The record of a call, or a ValueError naming a function that no record describes."""
    record = BY_CLASS.get(type(expr))
    if record is None:
        raise ValueError(f"function {type(expr).__name__} is not in lstmgen's function table")
    return record


def _install_derivatives() -> None:
    """Give each of lstmgen's own classes the fdiff of its record, and its LaTeX form."""
    for record in FUNCTIONS:
        if record.cls is None or record.cls.__module__ != __name__:
            continue
        if record.derivative is not None:

            def fdiff(self: sympy.Function, argindex: int = 1, record: FunctionRecord = record) -> sympy.Expr:
                if not 1 <= argindex <= record.arity:
                    raise sympy.ArgumentIndexError(self, argindex)
                return record.derivative(self, argindex)

            record.cls.fdiff = fdiff

        def _latex(
            self: sympy.Function, printer: object, exp: str | None = None, record: FunctionRecord = record
        ) -> str:
            tex = record.latex.format(*(printer._print(arg) for arg in self.args))
            return rf"\left({tex}\right)^{{{exp}}}" if exp else tex

        record.cls._latex = _latex


_install_derivatives()
