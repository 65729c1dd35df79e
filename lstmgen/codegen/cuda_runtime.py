"""The part of every generated CUDA module that does not depend on the cell: moving arrays to the device and
back, and the GEMM-shaped kernels over all steps (the input projection, the weight gradients).

Generated CUDA modules inline this file below the marker, after the CPU modules' runtime
(:mod:`lstmgen.codegen.module_runtime`), whose wrappers they share. It is a real module so that it is linted;
nothing imports it at run time.
"""

import numpy as np
from numba import cuda

VARIANT = "cell"  # each module defines its own
INLINE_MARKER = "# ---- generated CUDA modules inline this file from here ----"
# ---- generated CUDA modules inline this file from here ----

# Threads per block of the step kernels (a block owns one batch row), and per side of a block of the GEMM-shaped
# kernels. Smaller numbers still compute everything (each thread takes every threads-th unit); the tests lower
# them to keep the simulator quick.
THREADS = 128
GEMM_TILE = 16


def _threads(hidden):
    return max(1, min(THREADS, hidden))


def _to_device(*arrays):
    """Device copies of host arrays (C-contiguous); an array already on the device is taken as it is."""
    if not cuda.is_available():
        raise RuntimeError(
            f"{VARIANT}: no CUDA GPU is available to numba (cuda.is_available() is False); set "
            "NUMBA_ENABLE_CUDASIM=1 before importing numba to run this module on numba's CUDA simulator"
        )
    return tuple(cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in arrays)


def _to_host(devices, hosts):
    for device, host in zip(devices, hosts, strict=True):
        if device is not host:
            device.copy_to_host(host)


def _device_empty(shape, dtype):
    return cuda.device_array(shape, dtype=dtype)


def _device_zeros(shape, dtype):
    return cuda.to_device(np.zeros(shape, dtype=dtype))


class _Transposed:
    """A 2-D device array read transposed by the GEMM kernel (numba's ``.T`` of a device array is a copy)."""

    def __init__(self, array):
        self.array = array
        self.shape = (array.shape[1], array.shape[0])


def _t(a):
    return _Transposed(a)


@cuda.jit
def _gemm_kernel(a, b, out, a_transposed, b_transposed):
    # out = op(a) op(b), one element per thread; op transposes where asked; any strides.
    i, j = cuda.grid(2)
    if i < out.shape[0] and j < out.shape[1]:
        acc = out.dtype.type(0)
        inner = a.shape[0] if a_transposed else a.shape[1]
        for k in range(inner):
            left = a[k, i] if a_transposed else a[i, k]
            right = b[j, k] if b_transposed else b[k, j]
            acc += left * right
        out[i, j] = acc


def _dot(a, b, out=None):
    """op(a) op(b) for 2-D device arrays (``_t(x)``: x transposed), into ``out`` (allocated when None)."""
    a_transposed, b_transposed = isinstance(a, _Transposed), isinstance(b, _Transposed)
    if out is None:
        out = cuda.device_array((a.shape[0], b.shape[1]), dtype=(a.array if a_transposed else a).dtype)
    if out.shape[0] and out.shape[1]:
        grid = ((out.shape[0] + GEMM_TILE - 1) // GEMM_TILE, (out.shape[1] + GEMM_TILE - 1) // GEMM_TILE)
        left = a.array if a_transposed else a
        right = b.array if b_transposed else b
        _gemm_kernel[grid, (GEMM_TILE, GEMM_TILE)](left, right, out, a_transposed, b_transposed)
    return out


@cuda.jit
def _add_row_kernel(out, row):
    # out[i, :] += row for every i.
    i, j = cuda.grid(2)
    if i < out.shape[0] and j < out.shape[1]:
        out[i, j] += row[j]


def _input_projection(x, W, b, gate_seq):
    """gate_seq = x W (+ b) for every step at once."""
    steps, batch, n_in = x.shape
    columns = gate_seq.shape[2]
    flat = gate_seq.reshape(steps * batch, columns)
    _dot(x.reshape(steps * batch, n_in), W, flat)
    if b is not None and flat.shape[0] and columns:
        grid = ((flat.shape[0] + GEMM_TILE - 1) // GEMM_TILE, (columns + GEMM_TILE - 1) // GEMM_TILE)
        _add_row_kernel[grid, (GEMM_TILE, GEMM_TILE)](flat, b)


@cuda.jit
def _column_sums_kernel(a, out):
    j = cuda.grid(1)
    if j < out.shape[0]:
        acc = out.dtype.type(0)
        for i in range(a.shape[0]):
            acc += a[i, j]
        out[j] = acc


def _column_sums(a):
    out = cuda.device_array(a.shape[1], dtype=a.dtype)
    if out.shape[0]:
        _column_sums_kernel[(out.shape[0] + 127) // 128, 128](a, out)
    return out


@cuda.jit
def _add_kernel(a, b, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = a[i] + b[i]


def _add(a, b):
    """a + b for C-contiguous device arrays of one shape."""
    out = cuda.device_array(a.shape, dtype=a.dtype)
    n = out.size
    if n:
        _add_kernel[(n + 127) // 128, 128](a.reshape(n), b.reshape(n), out.reshape(n))
    return out


def _contiguous(a):
    # The operands the kernels make contiguous are leading slices of contiguous arrays: contiguous already.
    if not a.is_c_contiguous():  # pragma: no cover - no plan asks for another
        raise ValueError("expected a C-contiguous device array")
    return a


@cuda.jit
def _copy_kernel(dst, src):
    i, j = cuda.grid(2)
    if i < dst.shape[0] and j < dst.shape[1]:
        dst[i, j] = src[i, j]


def _copy(dst, src):
    """dst[...] = src for 2-D device arrays of one shape (any strides)."""
    if dst.shape[0] and dst.shape[1]:
        grid = ((dst.shape[0] + GEMM_TILE - 1) // GEMM_TILE, (dst.shape[1] + GEMM_TILE - 1) // GEMM_TILE)
        _copy_kernel[grid, (GEMM_TILE, GEMM_TILE)](dst, src)


def _head_weight_gradient(left, right, blocks, heads, head_size):
    """dR[k] = left[:, head k's units]^T right_k, right_k the head's columns of every gate block of right."""
    hidden = heads * head_size
    dR = cuda.device_array((heads, head_size, blocks * head_size), dtype=left.dtype)
    right_k = cuda.device_array((right.shape[0], blocks * head_size), dtype=right.dtype)
    for k in range(heads):
        lo = k * head_size
        for g in range(blocks):
            _copy(
                right_k[:, g * head_size : (g + 1) * head_size],
                right[:, g * hidden + lo : g * hidden + lo + head_size],
            )
        _dot(_t(left[:, lo : lo + head_size]), right_k, dR[k])
    return dR
