"""The built-in cell variants, each a :class:`~lstmgen.spec.CellSpec` (equations: shared/reference variants)."""

from __future__ import annotations

from lstmgen.spec import CellSpec, Gate

_LSTM_GATES = (
    Gate("i", "sigmoid"),
    Gate("f", "sigmoid"),
    Gate("g", "tanh"),
    Gate("o", "sigmoid"),
)

LSTM = CellSpec(
    name="lstm",
    description="LSTM with forget gate; the cell of torch.nn.LSTM",
    paper="Gers, Schmidhuber & Cummins (2000), Learning to Forget: Continual Prediction with LSTM",
    gates=_LSTM_GATES,
    state=("h", "c"),
    equations=(
        ("c", "f*c_prev + i*g"),
        ("h", "o*tanh(c)"),
    ),
)

LSTM_PEEPHOLE = CellSpec(
    name="lstm_peephole",
    description="LSTM with forget gate and diagonal peepholes (Greff et al.'s vanilla LSTM)",
    paper="Gers & Schmidhuber (2000), Recurrent Nets that Time and Count",
    gates=(
        Gate("i", "sigmoid", "xW_i + hR_i + p_i*c_prev"),
        Gate("f", "sigmoid", "xW_f + hR_f + p_f*c_prev"),
        Gate("g", "tanh"),
        # The output gate peeps at the new cell state.
        Gate("o", "sigmoid", "xW_o + hR_o + p_o*c"),
    ),
    state=("h", "c"),
    equations=(
        ("c", "f*c_prev + i*g"),
        ("h", "o*tanh(c)"),
    ),
    unit_params=("p_i", "p_f", "p_o"),
)

#: Built-in variants by name, in the order ``lstmgen list`` shows them.
VARIANTS: dict[str, CellSpec] = {spec.name: spec for spec in (LSTM, LSTM_PEEPHOLE)}


def get_variant(name: str) -> CellSpec:
    """The built-in spec called ``name``; raises ValueError naming the known variants otherwise."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"variant: unknown variant {name!r} (expected one of: {', '.join(VARIANTS)})") from None
