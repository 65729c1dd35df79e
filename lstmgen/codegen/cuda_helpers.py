"""The scalar helpers of the CUDA kernels, as plain Python: a generated CUDA module inlines the source of the ones
it uses, each as an inlined device function (``cuda.jit(device=True, inline=True)``).

Only the helpers whose CPU form relies on numpy's bit manipulation (the exponential and logarithm family) are
here, with the same names and the same semantics as in :mod:`lstmgen.codegen.kernel_helpers` (IEEE: NaN
propagates, infinities give their limits, nothing raises; e^y below the smallest normal flushes to 0, as on the
CPU), written with the ``math`` functions CUDA provides (libdevice); the others are the CPU's own source.
Python's ``math`` raises on overflow and domain errors where CUDA's does not, so every such argument is tested
first: the simulator then gives what the GPU gives. Every helper takes the kernel's float type ``real`` last.

This file is read by :func:`inspect.getsource`, not imported by the generated modules: a helper may call only
``math``, Python's builtins, the other helpers here and the CPU helpers without numpy.
"""

from __future__ import annotations

import math

from lstmgen.codegen.kernel_helpers import _exp_limits  # the CPU's own: no numpy in it


def _exp(y, real):
    lowest, highest = _exp_limits(real)
    if y < lowest:
        return real(0)
    if y > highest:
        return real(math.inf)
    return real(math.exp(y))


def _expm1(y, real):
    lowest, highest = _exp_limits(real)
    if y < lowest:
        return -real(1)
    if y > highest:
        return real(math.inf)
    return real(math.expm1(y))


def _log(x, real):
    if not x > real(0):  # 0 -> -inf; negative -> NaN; NaN -> NaN
        return -real(math.inf) if x == real(0) else real(math.nan)
    return real(math.log(x))


def _log1p(u, real):
    if not u > -real(1):  # -1 -> -inf; below -> NaN; NaN -> NaN
        return -real(math.inf) if u == -real(1) else real(math.nan)
    return real(math.log1p(u))


def _sigmoid(x, real):
    # Only e = exp(-|x|) <= 1 is computed, so nothing overflows: 1/(1+e) for x >= 0, e/(1+e) otherwise.
    e = _exp(-abs(x), real)
    s = real(1) / (real(1) + e)
    return s if x >= real(0) else e * s


def _tanh(x, real):
    return real(math.tanh(x))


def _softplus(x, real):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): e^-|x| <= 1 never overflows, and log1p keeps e^x for x << 0.
    return (x if x > real(0) else real(0)) + _log1p(_exp(-abs(x), real), real)


def _logsigmoid(x, real):
    # log sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(e^-|x|).
    return (x if x < real(0) else real(0)) - _log1p(_exp(-abs(x), real), real)


def _sqrt(x, real):
    return real(math.sqrt(x)) if x >= real(0) else real(math.nan)
