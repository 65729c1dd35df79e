"""The part of every generated CUDA module that does not depend on the cell: moving arrays to the device and
back, and the GEMM-shaped kernels over all steps (the input projection, the weight gradients).

Generated CUDA modules inline this file below the marker, after the CPU modules' runtime
(:mod:`lstmgen.codegen.module_runtime`), whose wrappers they share. It is a real module so that it is linted;
nothing imports it at run time.
"""

import contextlib
import threading

import numpy as np
from numba import cuda

# Defined by the CPU runtime that every module inlines before this file (lstmgen/codegen/module_runtime.py).
from lstmgen.codegen.module_runtime import (
    VARIANT,
    _allocator,
    _check_array,
    _copy_of,
    _place_rows,
    _reorder,
    _sum_columns,
    _take_columns,
    _take_rows,
    _zero_past,
)

INLINE_MARKER = "# ---- generated CUDA modules inline this file from here ----"
# ---- generated CUDA modules inline this file from here ----

# Threads per block of the step kernels (a block owns one batch row), and per side of a block of the GEMM-shaped
# kernels. Smaller numbers still compute everything (each thread takes every threads-th unit); the tests lower
# them to keep the simulator quick.
THREADS = 128
GEMM_TILE = 16


def _threads(hidden):
    return max(1, min(THREADS, hidden))


class _Launch(threading.local):
    """Per thread (torch runs a backward on its own threads): the stream of every launch and copy, and the
    allocator of every device array; set with :func:`on_stream`."""

    stream = 0  # numba's default stream
    empty = None  # numba's allocator


_LAUNCH = _Launch()


@contextlib.contextmanager
def on_stream(stream, empty=None):
    """Run this module's kernels and copies on ``stream`` within the block: a numba stream, such as
    ``cuda.external_stream(ptr)`` of another library's stream (torch's ``torch.cuda.current_stream().cuda_stream``),
    or 0 for the default stream. ``empty(shape, dtype)``, when given, allocates the module's device arrays
    (anything with ``__cuda_array_interface__``, for instance from torch's caching allocator) in place of numba's
    allocator. Both apply to the calling thread only."""
    previous = _LAUNCH.stream, _LAUNCH.empty
    _LAUNCH.stream, _LAUNCH.empty = stream, empty
    try:
        yield
    finally:
        _LAUNCH.stream, _LAUNCH.empty = previous


def _stream():
    return _LAUNCH.stream


def _to_device(*arrays):
    """Device copies of host arrays (C-contiguous); an array already on the device is taken as it is."""
    if not cuda.is_available():
        raise RuntimeError(
            f"{VARIANT}: no CUDA GPU is available to numba (cuda.is_available() is False); set "
            "NUMBA_ENABLE_CUDASIM=1 before importing numba to run this module on numba's CUDA simulator"
        )
    stream = _stream()
    return tuple(
        cuda.to_device(np.ascontiguousarray(a), stream=stream) if isinstance(a, np.ndarray) else a for a in arrays
    )


def _indices(values):
    """A small host index array (lengths, orders, columns) on the device."""
    return cuda.to_device(np.ascontiguousarray(values, dtype=np.int64), stream=_stream())


def _synchronize():
    # Copies to pageable host memory on a stream other than the default one return before they are done.
    if _stream():
        _stream().synchronize()


def _to_host(devices, hosts):
    for device, host in zip(devices, hosts, strict=True):
        if device is not host:
            device.copy_to_host(host, stream=_stream())
    _synchronize()


def _device_empty(shape, dtype):
    if _LAUNCH.empty is not None:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        array = _LAUNCH.empty(shape, np.dtype(dtype))
        return array if hasattr(array, "copy_to_host") else cuda.as_cuda_array(array, sync=False)
    return cuda.device_array(shape, dtype=dtype, stream=_stream())


@cuda.jit
def _fill_zero_kernel(out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = out.dtype.type(0)


def _device_zeros(shape, dtype):
    out = _device_empty(shape, dtype)
    if out.size:
        _fill_zero_kernel[_blocks(out.size)](out.reshape(out.size))
    return out


def _blocks(n):
    """The launch configuration of a kernel with one thread per element of n, on the module's stream."""
    return (n + 127) // 128, 128, _stream()


def _tiles(rows, columns):
    """The launch configuration of a 2-D kernel with one thread per element of a (rows, columns) array."""
    return (
        ((rows + GEMM_TILE - 1) // GEMM_TILE, (columns + GEMM_TILE - 1) // GEMM_TILE),
        (GEMM_TILE, GEMM_TILE),
        _stream(),
    )


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
        out = _device_empty((a.shape[0], b.shape[1]), (a.array if a_transposed else a).dtype)
    if out.shape[0] and out.shape[1]:
        left = a.array if a_transposed else a
        right = b.array if b_transposed else b
        _gemm_kernel[_tiles(*out.shape)](left, right, out, a_transposed, b_transposed)
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
        _add_row_kernel[_tiles(flat.shape[0], columns)](flat, b)


@cuda.jit
def _column_sums_kernel(a, out):
    j = cuda.grid(1)
    if j < out.shape[0]:
        acc = out.dtype.type(0)
        for i in range(a.shape[0]):
            acc += a[i, j]
        out[j] = acc


def _column_sums(a):
    out = _device_empty(a.shape[1], a.dtype)
    if out.shape[0]:
        _column_sums_kernel[_blocks(out.shape[0])](a, out)
    return out


@cuda.jit
def _add_kernel(a, b, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = a[i] + b[i]


def _add(a, b):
    """a + b for C-contiguous device arrays of one shape."""
    out = _device_empty(a.shape, a.dtype)
    n = out.size
    if n:
        _add_kernel[_blocks(n)](a.reshape(n), b.reshape(n), out.reshape(n))
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
        _copy_kernel[_tiles(*dst.shape)](dst, src)


def _head_weight_gradient(left, right, blocks, heads, head_size):
    """dR[k] = left[:, head k's units]^T right_k, right_k the head's columns of every gate block of right."""
    hidden = heads * head_size
    dR = _device_empty((heads, head_size, blocks * head_size), left.dtype)
    right_k = _device_empty((right.shape[0], blocks * head_size), right.dtype)
    for k in range(heads):
        lo = k * head_size
        for g in range(blocks):
            _copy(
                right_k[:, g * head_size : (g + 1) * head_size],
                right[:, g * hidden + lo : g * hidden + lo + head_size],
            )
        _dot(_t(left[:, lo : lo + head_size]), right_k, dR[k])
    return dR


# Device arrays in forward() and backward(): when x is on the device (a numba device array, or anything that
# exports __cuda_array_interface__: a torch CUDA tensor, a CuPy array), every array the wrappers make stays there,
# and so do the results. The wrappers' array operations of the CPU runtime above are redefined here for them.
_host_check_array, _host_allocator = _check_array, _allocator
_host_reorder, _host_zero_past, _host_copy_of = _reorder, _zero_past, _copy_of
_host_take_columns, _host_sum_columns = _take_columns, _sum_columns
_host_take_rows, _host_place_rows = _take_rows, _place_rows


_DLPACK_CUDA = (2, 3, 13)  # DLPack's kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def _on_device(a):
    if hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__"):
        return True
    if hasattr(a, "__dlpack_device__") and a.__dlpack_device__()[0] in _DLPACK_CUDA:
        # numba reads CUDA memory through __cuda_array_interface__ only; every library that exports DLPack on the
        # GPU also converts to one that has it (torch.from_dlpack, cupy.from_dlpack) without a copy.
        raise TypeError(
            f"{VARIANT}: a {type(a).__name__} on the GPU exports DLPack but not __cuda_array_interface__: "
            "convert it without a copy first, e.g. torch.from_dlpack(a) or cupy.from_dlpack(a)"
        )
    return False


def _result(a, on_host):
    """A kernel's result as the caller gave its input: a host copy, or the device array."""
    if not on_host:
        return a
    host = a.copy_to_host(stream=_stream())
    _synchronize()
    return host


def _is_array(a):
    return isinstance(a, np.ndarray) or _on_device(a)


def _is_contiguous(a):
    return a.flags.c_contiguous if isinstance(a, np.ndarray) else a.is_c_contiguous()


def _check_array(a, name, ndim, dtype):
    if not _on_device(a):
        return _host_check_array(a, name, ndim, dtype)
    if not hasattr(a, "copy_to_host"):
        # A view of the same memory. Outside on_stream, wait for the stream the array says it was written on;
        # within it, the caller has said which stream orders the work.
        a = cuda.as_cuda_array(a, sync=not _stream())
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if not a.is_c_contiguous():
        raise ValueError(f"{name}: expected a C-contiguous device array (copy it first), got strides {a.strides}")
    return a


def _allocator(like, zeroed):
    if not _on_device(like):
        return _host_allocator(like, zeroed)
    return _device_zeros if zeroed else _device_empty


@cuda.jit
def _flat_copy_kernel(src, out):
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = src[i]


def _copy_of(a):
    if not _on_device(a):
        return _host_copy_of(a)
    out = _device_empty(a.shape, a.dtype)
    if a.size:
        _flat_copy_kernel[_blocks(a.size)](a.reshape(a.size), out.reshape(a.size))
    return out


@cuda.jit
def _reorder_kernel(a, order, out):
    # out[t, b, k] = a[order[t, b], b, k]
    i = cuda.grid(1)
    if i < out.size:
        k = i % out.shape[2]
        b = (i // out.shape[2]) % out.shape[1]
        t = i // (out.shape[2] * out.shape[1])
        out[t, b, k] = a[order[t, b], b, k]


def _reorder(a, order):
    if not _on_device(a):
        return _host_reorder(a, order)
    out = _device_empty(a.shape, a.dtype)
    if a.size:
        _reorder_kernel[_blocks(a.size)](a, _indices(order), out)
    return out


@cuda.jit
def _zero_past_kernel(a, lengths):
    i = cuda.grid(1)
    if i < a.size:
        b = (i // a.shape[2]) % a.shape[1]
        t = i // (a.shape[2] * a.shape[1])
        if t >= lengths[b]:
            a[t, b, i % a.shape[2]] = a.dtype.type(0)


def _zero_past(a, lengths):
    if not _on_device(a):
        return _host_zero_past(a, lengths)
    out = _copy_of(a)
    if a.size:
        _zero_past_kernel[_blocks(a.size)](out, _indices(lengths))
    return out


@cuda.jit
def _take_columns_kernel(a, columns, out):
    # out[r, j] = a[r, columns[j]] of 2-D arrays.
    i = cuda.grid(1)
    if i < out.size:
        out[i // out.shape[1], i % out.shape[1]] = a[i // out.shape[1], columns[i % out.shape[1]]]


def _take_columns(a, columns):
    if not _on_device(a):
        return _host_take_columns(a, columns)
    rows = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    out = _device_empty((rows.shape[0], len(columns)), a.dtype)
    if out.size:
        _take_columns_kernel[_blocks(out.size)](rows, _indices(columns), out)
    return out.reshape(len(columns)) if a.ndim == 1 else out


@cuda.jit
def _sum_columns_kernel(a, starts, out):
    # out[r, k] = sum of a[r, starts[k]:starts[k + 1]] (the last run to the end) of 2-D arrays.
    i = cuda.grid(1)
    if i < out.size:
        r, k = i // out.shape[1], i % out.shape[1]
        end = starts[k + 1] if k + 1 < out.shape[1] else a.shape[1]
        acc = out.dtype.type(0)
        for c in range(starts[k], end):
            acc += a[r, c]
        out[r, k] = acc


def _sum_columns(a, starts):
    if not _on_device(a):
        return _host_sum_columns(a, starts)
    rows = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    out = _device_empty((rows.shape[0], len(starts)), a.dtype)
    if out.size:
        _sum_columns_kernel[_blocks(out.size)](rows, _indices(starts), out)
    return out.reshape(len(starts)) if a.ndim == 1 else out


@cuda.jit
def _take_rows_kernel(a, rows, out):
    # out[k, j] = a[rows[k], j]
    i = cuda.grid(1)
    if i < out.size:
        out[i // out.shape[1], i % out.shape[1]] = a[rows[i // out.shape[1]], i % out.shape[1]]


def _take_rows(a, rows):
    if not _on_device(a):
        return _host_take_rows(a, rows)
    out = _device_empty((len(rows), a.shape[1]), a.dtype)
    if out.size:
        _take_rows_kernel[_blocks(out.size)](a, _indices(rows), out)
    return out


@cuda.jit
def _place_rows_kernel(a, rows, out):
    # out[rows[k], j] = a[k, j] (out zeroed first)
    i = cuda.grid(1)
    if i < a.size:
        out[rows[i // a.shape[1]], i % a.shape[1]] = a[i // a.shape[1], i % a.shape[1]]


def _place_rows(a, rows, count):
    if not _on_device(a):
        return _host_place_rows(a, rows, count)
    out = _device_zeros((count, a.shape[1]), a.dtype)
    if a.size:
        _place_rows_kernel[_blocks(a.size)](a, _indices(rows), out)
    return out
