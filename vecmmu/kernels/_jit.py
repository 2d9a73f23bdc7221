"""The one place that sets Numba options. No other file writes ``numba.njit(...)``.

``cache=True`` makes a warm start cheap; ``nogil=True`` lets Dask and threads overlap;
no fastmath (the kernels are integer code and must be exact); bounds checks off, so the
kernels bounds-check every memory read themselves.
"""
import numba
from numba import prange  # noqa: F401  (re-exported for the kernels)

OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy", boundscheck=False)


def jit(fn):
    """A serial kernel or an inlinable helper."""
    return numba.njit(**OPTIONS)(fn)


def pjit(fn):
    """A batch driver whose outer loop is a ``prange``."""
    return numba.njit(parallel=True, **OPTIONS)(fn)


def jit_inline(fn):
    """A per-address helper inlined into its caller at the Numba IR level (no call with
    dozens of array arguments in the hot loop)."""
    return numba.njit(inline="always", **OPTIONS)(fn)
