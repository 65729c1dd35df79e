"""lstmgen: write a recurrent cell once, as math; get its derivation and a fast, verified Numba kernel."""

__version__ = "0.1.0"
