"""The built-in cell variants, each a :class:`~lstmgen.spec.CellSpec` (equations: shared/reference)."""

from __future__ import annotations

from lstmgen.spec import CellSpec, Gate

GREFF = "Greff, Srivastava, Koutník, Steunebrink & Schmidhuber (2015), LSTM: A Search Space Odyssey"


def _peephole_gates(*names: str, g: str = "tanh") -> tuple[Gate, ...]:
    """LSTM gates with diagonal peepholes: i and f see c_{t-1}, o sees the new c_t."""
    peep = {"i": "c_prev", "f": "c_prev", "o": "c"}
    return tuple(
        Gate(name, g) if name == "g" else Gate(name, "sigmoid", f"xW_{name} + hR_{name} + p_{name}*{peep[name]}")
        for name in names
    )


def _lstm_family(
    name: str,
    description: str,
    paper: str,
    gates: tuple[Gate, ...],
    c: str,
    h: str,
    block_gates: tuple[str, ...] = (),
) -> CellSpec:
    peepholes = tuple(f"p_{g.name}" for g in gates if "p_" in g.preactivation)
    return CellSpec(
        name=name,
        description=description,
        paper=paper,
        gates=gates,
        state=("h", "c"),
        equations=(("c", c), ("h", h)),
        unit_params=peepholes,
        block_gates=block_gates,
    )


RNN_TANH = CellSpec(
    name="rnn_tanh",
    description="Elman RNN, h_t = tanh(x W + h R + b): the baseline whose error vanishes",
    paper="Elman (1990), Finding Structure in Time",
    gates=(Gate("g", "tanh"),),
    state=("h",),
    equations=(("h", "g"),),
)

LSTM_1997 = _lstm_family(
    "lstm_1997",
    "the original LSTM: input and output gates, constant error carousel c_t = c_{t-1} + i*g, no forget gate",
    "Hochreiter & Schmidhuber (1997), Long Short-Term Memory",
    (Gate("i", "sigmoid"), Gate("g", "squash_g"), Gate("o", "sigmoid")),
    c="c_prev + i*g",
    h="o*squash_h(c)",
    block_gates=("i", "o"),  # the paper's memory blocks: S cells share one input and one output gate
)

#: The network of the 1997 paper's experiments: its hidden layer is fully self-connected, so besides the cell
#: outputs h (through R) the previous step's input and output gate activations (one per memory block) feed every
#: gate and cell input, each through its own weights (Q).
LSTM_1997_NET = CellSpec(
    name="lstm_1997_net",
    description="the 1997 paper's network: lstm_1997 whose gates and cell inputs also read the previous i and o",
    paper="Hochreiter & Schmidhuber (1997), Long Short-Term Memory",
    gates=tuple(Gate(g.name, g.activation, f"xW_{g.name} + hR_{g.name} + gQ_{g.name}") for g in LSTM_1997.gates),
    state=("h", "c"),
    equations=LSTM_1997.equations,
    feedback=("i", "o"),
    feedback_into=("i", "g", "o"),
    block_gates=("i", "o"),
)

LSTM = _lstm_family(
    "lstm",
    "LSTM with forget gate; the cell of torch.nn.LSTM",
    "Gers, Schmidhuber & Cummins (2000), Learning to Forget: Continual Prediction with LSTM",
    (Gate("i", "sigmoid"), Gate("f", "sigmoid"), Gate("g", "tanh"), Gate("o", "sigmoid")),
    c="f*c_prev + i*g",
    h="o*tanh(c)",
)

LSTM_PEEPHOLE = _lstm_family(
    "lstm_peephole",
    "LSTM with forget gate and diagonal peepholes (Greff et al.'s vanilla LSTM)",
    "Gers & Schmidhuber (2000), Recurrent Nets that Time and Count",
    _peephole_gates("i", "f", "g", "o"),
    c="f*c_prev + i*g",
    h="o*tanh(c)",
)

LSTM_NIG = _lstm_family(
    "lstm_nig",
    "peephole LSTM without input gate (i = 1)",
    GREFF,
    _peephole_gates("f", "g", "o"),
    c="f*c_prev + g",
    h="o*tanh(c)",
)
LSTM_NFG = _lstm_family(
    "lstm_nfg",
    "peephole LSTM without forget gate (f = 1)",
    GREFF,
    _peephole_gates("i", "g", "o"),
    c="c_prev + i*g",
    h="o*tanh(c)",
)
LSTM_NOG = _lstm_family(
    "lstm_nog",
    "peephole LSTM without output gate (o = 1)",
    GREFF,
    _peephole_gates("i", "f", "g"),
    c="f*c_prev + i*g",
    h="tanh(c)",
)
LSTM_NIAF = _lstm_family(
    "lstm_niaf",
    "peephole LSTM without input activation (g = a_g)",
    GREFF,
    _peephole_gates("i", "f", "g", "o", g="identity"),
    c="f*c_prev + i*g",
    h="o*tanh(c)",
)
LSTM_NOAF = _lstm_family(
    "lstm_noaf",
    "peephole LSTM without output activation (h = o*c)",
    GREFF,
    _peephole_gates("i", "f", "g", "o"),
    c="f*c_prev + i*g",
    h="o*c",
)
LSTM_NP = _lstm_family(
    "lstm_np",
    "LSTM without peepholes (the same cell as lstm)",
    GREFF,
    LSTM.gates,
    c="f*c_prev + i*g",
    h="o*tanh(c)",
)
LSTM_CIFG = _lstm_family(
    "lstm_cifg",
    "peephole LSTM with coupled input and forget gate (f = 1 - i)",
    GREFF,
    _peephole_gates("i", "g", "o"),
    c="(1 - i)*c_prev + i*g",
    h="o*tanh(c)",
)

GRU = CellSpec(
    name="gru",
    description="GRU as in cuDNN and torch.nn.GRU: reset applied after the recurrent product",
    paper="Cho et al. (2014), arXiv:1406.1078 v1",
    gates=(
        Gate("r", "sigmoid"),
        Gate("z", "sigmoid"),
        # b_rn sits inside the reset product, so its gradient is sum(d_a_n * r), not sum(d_a_n).
        Gate("n", "tanh", "xW_n + r*(hR_n + b_rn)"),
    ),
    state=("h",),
    equations=(("h", "(1 - z)*n + z*h_prev"),),
    unit_params=("b_rn",),
)

LSTM_FGR = CellSpec(
    name="lstm_fgr",
    description="peephole LSTM with full gate recurrence: i, f, o also see the previous step's i, f, o",
    paper=GREFF,
    gates=tuple(
        Gate(g.name, g.activation, g.preactivation + (f" + gQ_{g.name}" if g.name != "g" else ""))
        for g in _peephole_gates("i", "f", "g", "o")
    ),
    state=("h", "c"),
    equations=(("c", "f*c_prev + i*g"), ("h", "o*tanh(c)")),
    unit_params=("p_i", "p_f", "p_o"),
    feedback=("i", "f", "o"),
)

GRU_V3 = CellSpec(
    name="gru_v3",
    description="GRU as published: reset applied to h_{t-1} before the recurrent product",
    paper="Cho et al. (2014), arXiv:1406.1078 v3",
    gates=(
        Gate("r", "sigmoid"),
        Gate("z", "sigmoid"),
        # hR_n is (r*h_prev) R_n: its GEMM runs mid-step, once r is known.
        Gate("n", "tanh", recurrent_source="r*h_prev"),
    ),
    state=("h",),
    equations=(("h", "(1 - z)*n + z*h_prev"),),
)

MODERN = "Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024), Were RNNs All We Needed?"

INDRNN = CellSpec(
    name="indrnn",
    description="independently recurrent network: h = relu(x W + b + u*h_prev), a diagonal recurrence, no R",
    paper="Li, Li, Cook, Zhu & Gao (2018), Independently Recurrent Neural Network (IndRNN)",
    gates=(Gate("n", "relu", "xW_n + u*h_prev"),),
    state=("h",),
    equations=(("h", "n"),),
    unit_params=("u",),
)

SRU = CellSpec(
    name="sru",
    description="simple recurrent unit: gates see c_prev through vectors v_f, v_r; a highway block s; no R",
    paper="Lei, Zhang, Wang, Dai & Artzi (2018), Simple Recurrent Units for Highly Parallelizable Recurrence",
    gates=(
        Gate("n", "identity", "xW_n"),
        Gate("f", "sigmoid", "xW_f + v_f*c_prev"),
        Gate("r", "sigmoid", "xW_r + v_r*c_prev"),
        Gate("s", "identity", "xW_s"),
    ),
    # h first: it is the output (h_prev itself is never read, so dh_0 = 0).
    state=("h", "c"),
    equations=(("c", "f*c_prev + (1 - f)*n"), ("h", "r*c + (1 - r)*s")),
    unit_params=("v_f", "v_r"),
)

MINGRU = CellSpec(
    name="mingru",
    description="minimal GRU: gates from the input only, h = (1 - z)*h_prev + z*(x W_n + b_n); no R",
    paper=MODERN,
    gates=(Gate("z", "sigmoid", "xW_z"), Gate("n", "identity", "xW_n")),
    state=("h",),
    equations=(("h", "(1 - z)*h_prev + z*n"),),
)

MINLSTM = CellSpec(
    name="minlstm",
    description="minimal LSTM: normalised input-only gates, h = (f*h_prev + i*n)/(f + i), f, i = sigmoid(.); no R",
    paper=MODERN,
    # The gates are the pre-activations; σ(f)/(σ(f) + σ(i)) is computed with the log-sum-exp shift m: times
    # (1 + e^-f)(1 + e^-i) e^m it is (e^m + e^(m-i)) / (2 e^m + e^(m-f) + e^(m-i)), every exponent <= 0 and the
    # denominator >= 1. As written, the quotient is 0/0 where both gates underflow; this is finite for every
    # finite pre-activation and costs three exponentials.
    gates=(Gate("f", "identity", "xW_f"), Gate("i", "identity", "xW_i"), Gate("n", "identity", "xW_n")),
    state=("h",),
    equations=(
        ("m", "min(min(f, i), 0)"),
        ("e_m", "exp(m)"),
        ("e_f", "exp(m - f)"),
        ("e_i", "exp(m - i)"),
        ("h", "((e_m + e_i)*h_prev + (e_m + e_f)*n)/(2*e_m + e_f + e_i)"),
    ),
)


JANET = CellSpec(
    name="janet",
    description="just another network: a forget gate only, its complement shifted by beta = 1 as the input gate",
    paper="van der Westhuizen & Lasenby (2018), The unreasonable effectiveness of the forget gate",
    gates=(Gate("f", "sigmoid"), Gate("g", "tanh")),
    state=("h",),
    equations=(("h", "f*h_prev + (1 - sigmoid(a_f - 1))*g"),),
)

LIGRU = CellSpec(
    name="ligru",
    description="light GRU: no reset gate, a relu candidate (without the paper's batch norm)",
    paper="Ravanelli, Brakel, Omologo & Bengio (2018), Light Gated Recurrent Units for Speech Recognition",
    gates=(Gate("z", "sigmoid"), Gate("n", "relu")),
    state=("h",),
    equations=(("h", "z*h_prev + (1 - z)*n"),),
)

RG_LRU = CellSpec(
    name="rg_lru",
    description="real-gated linear recurrent unit of Griffin (I = H): gate a is the paper's recurrence gate r_t",
    paper="De et al. (2024), Griffin: Mixing Gated Linear Recurrences with Local Attention",
    gates=(Gate("a", "sigmoid", "xW_a"), Gate("i", "sigmoid", "xW_i")),
    state=("h",),
    equations=(
        ("log_decay", "-8*a*softplus(lam)"),
        ("decay", "exp(log_decay)"),
        # 1 − decay² as −expm1(2 log_decay), which does not round to 0 until log_decay does; the square root's
        # derivative capped at 1000 where it is 0, as in Griffin's code (SqrtBoundDerivative).
        ("h", "decay*h_prev + sqrt_bounded(-expm1(2*log_decay))*(i*x)"),
    ),
    unit_params=("lam",),
)

ZONEOUT_LSTM = CellSpec(
    name="zoneout_lstm",
    description="LSTM with zoneout: per-step masks keep_c, keep_h (1 keeps the previous value) given by the caller",
    paper="Krueger et al. (2017), Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations",
    gates=LSTM.gates,
    state=("h", "c"),
    equations=(
        ("c_new", "f*c_prev + i*g"),
        ("c", "keep_c*c_prev + (1 - keep_c)*c_new"),
        ("h", "keep_h*h_prev + (1 - keep_h)*(o*tanh(c_new))"),
    ),
    # The masks are inputs of the step without gradient (at inference: the keep probabilities).
    inputs=("keep_c", "keep_h"),
)

SLSTM = CellSpec(
    name="slstm",
    description="sLSTM: exponential input gate, sigmoid forget gate in log space, normaliser n, stabiliser m; 4 heads",
    paper="Beck et al. (2024), xLSTM: Extended Long Short-Term Memory (sLSTM)",
    gates=(Gate("i", "identity"), Gate("f", "identity"), Gate("z", "tanh"), Gate("o", "sigmoid")),
    state=("h", "c", "n", "m"),
    equations=(
        ("log_f", "logsigmoid(f)"),
        # The authors' rule: from an empty normaliser (the zero state) m = i, so the first step has i_exp = 1.
        ("m", "select(n_prev, max(log_f + m_prev, i), i)"),
        # i - m and log_f + m_prev - m written without m, as min(·, 0): finite where an infinite input makes
        # m infinite (inf - inf), the same value and the same gradient at a tie otherwise.
        ("i_exp", "exp(select(n_prev, min(i - log_f - m_prev, 0), 0))"),
        # Nothing is carried from an empty normaliser: f_exp = 0 there. (The formula's exp(log_f + m_prev - i)
        # would multiply the zero c_prev and n_prev, and overflows to inf * 0 = NaN for i << 0.)
        ("log_f_exp", "select(n_prev, min(log_f + m_prev - i, 0), 0)"),
        ("f_exp", "select(n_prev, exp(log_f_exp), 0)"),
        ("c", "f_exp*c_prev + i_exp*z"),
        ("n", "f_exp*n_prev + i_exp"),
        ("h", "o*c/n"),
    ),
    heads=4,
)


def _layer_norm_of(projection: str, gates: tuple[str, ...], tag: str) -> tuple[tuple[str, str], ...]:
    """Mean, biased variance and reciprocal deviation of one projection over all its G·H pre-activation units."""
    G = len(gates)
    total = " + ".join(f"{projection}_{k}" for k in gates)
    squares = " + ".join(f"({projection}_{k} - mu_{tag})*({projection}_{k} - mu_{tag})" for k in gates)
    return (
        (f"mu_{tag}", f"mean({total})/{G}"),
        (f"var_{tag}", f"mean({squares})/{G}"),
        (f"rs_{tag}", f"1/sqrt(var_{tag} + 0.00001)"),
    )


LAYERNORM_LSTM = CellSpec(
    name="layernorm_lstm",
    description="LSTM with layer normalisation of x W and h R (over all 4H units) and of c before its tanh",
    paper="Ba, Kiros & Hinton (2016), Layer Normalization",
    gates=tuple(
        Gate(
            k,
            "tanh" if k == "g" else "sigmoid",
            f"gamma_x_{k}*(xW_{k} - mu_x)*rs_x + gamma_h_{k}*(hR_{k} - mu_h)*rs_h + b_{k}",
        )
        for k in "ifgo"
    ),
    state=("h", "c"),
    equations=(
        *_layer_norm_of("xW", tuple("ifgo"), "x"),
        *_layer_norm_of("hR", tuple("ifgo"), "h"),
        ("c", "f*c_prev + i*g"),
        ("h", "o*tanh(gamma_c*layer_norm(c) + beta_c)"),
    ),
    # The normalised projections' shifts fold into b, which therefore enters after the normalisation.
    gate_params=("gamma_x", "gamma_h"),
    input_bias=False,
    unit_params=("gamma_c", "beta_c"),
    # As torch.nn.LayerNorm starts: gains 1, shift 0.
    init=(("gamma_x", 1.0), ("gamma_h", 1.0), ("gamma_c", 1.0), ("beta_c", 0.0)),
)

LSTMP = CellSpec(
    name="lstmp",
    description="LSTM with a projected output h = (o*tanh(c)) W_p of P units; the cell of torch.nn.LSTM(proj_size=P)",
    paper="Sak, Senior & Beaufays (2014), Long Short-Term Memory Recurrent Neural Network Architectures for Large "
    "Scale Acoustic Modeling",
    gates=LSTM.gates,
    state=("h", "c"),
    equations=(("c", "f*c_prev + i*g"), ("h", "o*tanh(c)")),
    projection=True,
)

#: Built-in variants by name, in the order ``lstmgen list`` shows them.
VARIANTS: dict[str, CellSpec] = {
    spec.name: spec
    for spec in (
        RNN_TANH,
        LSTM_1997,
        LSTM_1997_NET,
        LSTM,
        LSTM_PEEPHOLE,
        LSTM_NIG,
        LSTM_NFG,
        LSTM_NOG,
        LSTM_NIAF,
        LSTM_NOAF,
        LSTM_NP,
        LSTM_CIFG,
        LSTM_FGR,
        GRU,
        GRU_V3,
        INDRNN,
        SRU,
        MINGRU,
        MINLSTM,
        JANET,
        LIGRU,
        RG_LRU,
        ZONEOUT_LSTM,
        SLSTM,
        LAYERNORM_LSTM,
        LSTMP,
    )
}


def get_variant(name: str) -> CellSpec:
    """The built-in spec called ``name``; raises ValueError naming the known variants otherwise."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"variant: unknown variant {name!r} (expected one of: {', '.join(VARIANTS)})") from None
