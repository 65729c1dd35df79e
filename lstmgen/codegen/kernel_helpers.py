"""The scalar helpers of the generated kernels and their per-step product, as plain Python: the generator inlines
the source of the ones a module uses (see :mod:`lstmgen.functions`), each under the module's ``@_jit``.

Every helper takes the kernel's float type ``real`` last (float32 kernels must stay float32) and keeps IEEE
semantics: NaN propagates, infinities give their limits, nothing raises. exp, and through it sigmoid, tanh,
softplus and logsigmoid, and log are computed without a libm call (range reduction, a polynomial, the exponent
read or placed by integer bits), so the loops that call them vectorize.

This file is read by :func:`inspect.getsource`, not imported by the generated modules: a helper may call only
numpy, Python's builtins and the other helpers here.
"""

from __future__ import annotations

import numpy as np


def _exp_poly(r, real):
    # e^r - 1 for |r| <= ln2/2 by its Taylor polynomial (no leading 1: no cancellation for small r).
    single = real(1e-300) == real(0)  # a constant per dtype: the other branch is compiled away
    if single:
        p = real(1 / 5040)
        p = p * r + real(1 / 720)
        p = p * r + real(1 / 120)
        p = p * r + real(1 / 24)
        p = p * r + real(1 / 6)
        p = p * r + real(0.5)
        p = p * r + real(1)
        return p * r
    p = real(1 / 6227020800)
    p = p * r + real(1 / 479001600)
    p = p * r + real(1 / 39916800)
    p = p * r + real(1 / 3628800)
    p = p * r + real(1 / 362880)
    p = p * r + real(1 / 40320)
    p = p * r + real(1 / 5040)
    p = p * r + real(1 / 720)
    p = p * r + real(1 / 120)
    p = p * r + real(1 / 24)
    p = p * r + real(1 / 6)
    p = p * r + real(0.5)
    p = p * r + real(1)
    return p * r


def _pow2(n, real):
    # 2^n for an integral n within the normal exponent range, placed in the exponent bits.
    if real(1e-300) == real(0):
        return real(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32))
    return real(np.int64((np.int64(n) + np.int64(1023)) << np.int64(52)).view(np.float64))


def _reduce(y, real):
    # y = n ln2 + r with |r| <= ln2/2; ln2 in two parts, so that n * ln2_hi is exact and r keeps its bits.
    n = np.floor(y * real(1.4426950408889634) + real(0.5))
    return n, (y - n * real(0.693145751953125)) - n * real(1.4286068203094173e-06)


def _exp_limits(real):
    # e^y is a normal number for lowest <= y (below, the kernels flush it to 0) and finite for y <= highest.
    if real(1e-300) == real(0):  # a constant per dtype: the other branch is compiled away
        return real(-87.0), real(88.72283935546875)
    return real(-708.0), real(709.782712893384)


def _exp_parts(y, real):
    # e^y = scale * (1 + em1) for y <= 0 (NaN propagates): y = n ln2 + r with |r| <= ln2/2, e^r - 1 by its
    # Taylor polynomial (no leading 1: no cancellation for small y), scale = 2^n placed in the exponent bits.
    # No libm call, so the loops that use it vectorize. Results below the smallest normal flush to zero.
    lowest, _ = _exp_limits(real)
    underflow = y < lowest
    n, r = _reduce(lowest if underflow else y, real)
    return (real(0) if underflow else _pow2(n, real)), _exp_poly(r, real)


def _exp_split(y, real):
    # y clipped to [lowest, highest] (_exp_limits) as y = n ln2 + r: n, e^r - 1, and 2^n in two halves (2^n alone
    # leaves the exponent range just below the overflow threshold), 2^n = high * low. No branch: the callers
    # select their result for y outside the limits, and their loops vectorize.
    lowest, highest = _exp_limits(real)
    n, r = _reduce(lowest if y < lowest else (highest if y > highest else y), real)
    half = np.floor(n * real(0.5))
    return n, _exp_poly(r, real), _pow2(half, real), _pow2(n - half, real)


def _exp(y, real):
    # e^y for every y, without a branch (so that the loops calling it vectorize): 0 below the smallest normal,
    # inf above the overflow threshold, NaN propagates.
    lowest, highest = _exp_limits(real)
    _, em1, high, low = _exp_split(y, real)
    value = (high + high * em1) * low
    return real(0) if y < lowest else (real(np.inf) if y > highest else value)


def _expm1(y, real):
    # e^y - 1 without cancellation near 0 and without a branch (so that the loops calling it vectorize). With
    # y = n ln2 + r: for n < 0, 2^n (e^r - 1) + (2^n - 1), exact in the scaling; for n = 0 (within ln2/2 of 0,
    # where r = y) the polynomial alone; for n > 0, e^y - 1 as _exp computes e^y. The candidates are computed
    # and the result selected; -1 below e^y's smallest normal, inf above its overflow threshold, NaN propagates.
    # (A second polynomial for the region near 0 kept LLVM from vectorizing the loops.)
    lowest, highest = _exp_limits(real)
    n, em1, high, low = _exp_split(y, real)
    scale = high * low  # 2^n, exact for n <= 0 (the only n it is used for)
    below = scale * em1 + (scale - real(1))
    above = (high + high * em1) * low - real(1)
    value = above if n > real(0) else (em1 if n == real(0) else below)  # n = 0: em1 itself keeps -0
    return -real(1) if y < lowest else (real(np.inf) if y > highest else value)


def _log(x, real):
    # log x = e ln2 + log m with x = m 2^e, m in [sqrt(1/2), sqrt(2)), exponent and mantissa read from the
    # bits (subnormals scaled up first); log m = 2 atanh(s), s = (m - 1)/(m + 1), by its odd series. No libm.
    if not x > real(0):  # 0 -> -inf; negative -> NaN; NaN -> NaN
        return -real(np.inf) if x == real(0) else real(np.nan)
    if x == real(np.inf):
        return x
    single = real(1e-300) == real(0)
    if single:
        e = np.int32(0)
        if x < real(1.1754943508222875e-38):
            x = x * real(8388608.0)  # 2^23
            e = np.int32(-23)
        bits = np.float32(x).view(np.int32)
        e += ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(127)
        m = np.int32((bits & np.int32(0x7FFFFF)) | np.int32(0x3F800000)).view(np.float32)
    else:
        e = np.int64(0)
        if x < real(2.2250738585072014e-308):
            x = x * real(4503599627370496.0)  # 2^52
            e = np.int64(-52)
        bits = np.float64(x).view(np.int64)
        e += ((bits >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1023)
        m = np.int64((bits & np.int64(0xFFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000)).view(np.float64)
    m = real(m)
    if m > real(1.4142135623730951):
        m = m * real(0.5)
        e += 1
    s = (m - real(1)) / (m + real(1))
    s2 = s * s
    if single:
        series = real(1 / 9)
        series = series * s2 + real(1 / 7)
        series = series * s2 + real(1 / 5)
    else:
        series = real(1 / 21)
        series = series * s2 + real(1 / 19)
        series = series * s2 + real(1 / 17)
        series = series * s2 + real(1 / 15)
        series = series * s2 + real(1 / 13)
        series = series * s2 + real(1 / 11)
        series = series * s2 + real(1 / 9)
        series = series * s2 + real(1 / 7)
        series = series * s2 + real(1 / 5)
    series = series * s2 + real(1 / 3)
    log_m = real(2) * s + real(2) * s * (s2 * series)
    n = real(e)
    # ln2 split in a part exact in n * hi and a correction, so that e ln2 adds no rounding of its own.
    return n * real(0.693145751953125) + (n * real(1.4286068203094173e-06) + log_m)


def _log1p(u, real):
    # log(1 + u) accurate for tiny u (Goldberg): the rounding of 1 + u is corrected by u / ((1 + u) - 1).
    w = real(1) + u
    if w == real(1) or u == real(np.inf):
        return u
    return _log(w, real) * (u / (w - real(1)))


def _sigmoid(x, real):
    # Only e = exp(-|x|) <= 1 is computed, so nothing overflows: 1/(1+e) for x >= 0, e/(1+e) otherwise.
    scale, em1 = _exp_parts(-abs(x), real)
    e = scale + scale * em1
    s = real(1) / (real(1) + e)
    return s if x >= real(0) else e * s


def _tanh(x, real):
    # tanh|x| = -m / (2 + m) with m = expm1(-2|x|): no overflow, no cancellation near 0; tanh(±0) = ±0.
    scale, em1 = _exp_parts(real(-2) * abs(x), real)
    m = scale * em1 + (scale - real(1))
    t = -m / (real(2) + m)
    return t if x > real(0) else (-t if x < real(0) else x)


def _squash_g(x, real):
    # 4 sigmoid(x) - 2, computed as 2 tanh(x/2): no cancellation near 0.
    return real(2) * _tanh(x * real(0.5), real)


def _squash_h(x, real):
    # 2 sigmoid(x) - 1, computed as tanh(x/2): no cancellation near 0.
    return _tanh(x * real(0.5), real)


def _softplus(x, real):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): e^-|x| <= 1 never overflows, and log1p keeps e^x for x << 0.
    scale, em1 = _exp_parts(-abs(x), real)
    return (x if x > real(0) else real(0)) + _log1p(scale + scale * em1, real)


def _logsigmoid(x, real):
    # log sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(e^-|x|).
    scale, em1 = _exp_parts(-abs(x), real)
    return (x if x < real(0) else real(0)) - _log1p(scale + scale * em1, real)


def _sqrt(x, real):
    # The hardware square root (an LLVM intrinsic, no libm call): NaN below 0.
    return np.sqrt(x)


def _relu(x, real):
    # NaN fails the test and propagates.
    return real(0) if x <= real(0) else x


def _positive(y, real):
    return real(1) if y > real(0) else real(0)


def _hard_sigmoid(x, real):
    # PyTorch's hardsigmoid: clip(x/6 + 1/2, 0, 1).
    y = x / real(6) + real(0.5)
    if y <= real(0):
        return real(0)
    if y >= real(1):
        return real(1)
    return y


def _not_positive(y, real):
    # NaN counts as not positive, as select takes its second branch there.
    return real(0) if y > real(0) else real(1)


def _masked(m, e, real):
    # m * e where the indicator m is nonzero, else 0 even for an infinite or NaN e: the branch not taken.
    return m * e if m != real(0) else real(0)


def _inside_unit(y, real):
    return real(1) if real(0) < y < real(1) else real(0)


def _softsign(x, real):
    return x / (real(1) + abs(x))


def _sign(x, real):
    # -1, 0 or 1 (0 at ±0, as the subgradient PyTorch uses for |x|); NaN propagates.
    if x > real(0):
        return real(1)
    if x < real(0):
        return -real(1)
    return x * real(0)


def _maximum(a, b, real):
    # NaN in either argument propagates, as torch.maximum.
    if a != a or b != b:
        return a + b
    return a if a >= b else b


def _select(c, a, b, real):
    # NaN in c selects b (NaN > 0 is false), as torch.where(c > 0, a, b).
    return a if c > real(0) else b


def _minimum(a, b, real):
    if a != a or b != b:
        return a + b
    return a if a <= b else b


def _tie_step(a, b, real):
    # [a > b] + [a = b]/2: the share of the gradient of max(a, b) that goes to a (ties split evenly, as torch).
    if a > b:
        return real(1)
    if a == b:
        return real(0.5)
    return real(0)


#: The helpers numba inlines into the kernels (the others LLVM inlines or calls).
NUMBA_INLINED = frozenset({"_loop_dot"})

#: The per-step products of at most this many multiply-adds run as ``_loop_dot``, the larger ones as np.dot: below
#: it the loop is faster than a BLAS call, which costs about 60-90 ns of its own; the loop wins up to about 768 for a
#: wide b, 256 for a narrow one (benchmarks/per_step_gemm.py --tiny).
LOOP_DOT_LIMIT = 256


def _loop_dot(a, b, out):
    # out = a b as a loop, for the tiny products of the time loop (the 1997 networks: B = 1, H = 4). Each sum runs
    # over k in order either way, so both give the same bits: a narrow b in a register per output, a wide one
    # row by row into out's row (a vector loop over its columns).
    for i in range(a.shape[0]):
        if b.shape[1] < 4:
            for c in range(b.shape[1]):
                total = a[i, 0] * b[0, c]
                for k in range(1, a.shape[1]):
                    total += a[i, k] * b[k, c]
                out[i, c] = total
        else:
            for c in range(b.shape[1]):
                out[i, c] = a[i, 0] * b[0, c]
            for k in range(1, a.shape[1]):
                a_ik = a[i, k]
                for c in range(b.shape[1]):
                    out[i, c] += a_ik * b[k, c]
