"""lstmgen: write a recurrent cell once, as math; get its derivation and a fast, verified Numba kernel.

>>> import lstmgen
>>> mod = lstmgen.load("lstm_peephole")
>>> params = mod.init_params(input_size=16, hidden_size=32, seed=0)
>>> y, state, tape = mod.forward(x, params)          # x: (T, B, I)
>>> dx, grads, dstate0 = mod.backward(dy, tape)      # dy: (T, B, H)
"""

from lstmgen.generate import Stages, generate_source, stages, write_module
from lstmgen.loader import cache_dir, load, load_module
from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.variants import VARIANTS, get_variant
from lstmgen.version import __version__

__all__ = [
    "VARIANTS",
    "CellSpec",
    "Gate",
    "SpecError",
    "Stages",
    "__version__",
    "cache_dir",
    "generate_source",
    "get_variant",
    "load",
    "load_module",
    "stages",
    "write_module",
]
