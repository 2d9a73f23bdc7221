"""Processing order: a radix argsort by page number, so a batch walks its tables in
ascending order (table lines stay in cache; results still land in input order)."""
import numpy as np

from ._jit import jit


@jit
def _digit(addr, asid, j, p, passes, shift_lo):
    """Radix digit ``p`` of access ``j``: 12 address bits, or the address space last."""
    if p < passes:
        return (addr[j] >> (shift_lo + 12 * p)) & 4095
    return asid[j] & 4095


@jit
def page_order(addr, asid, shift_lo, nbits, perm, tmp):
    """Stable LSD radix argsort of ``(asid, addr >> shift_lo)`` on ``nbits`` bits of the
    address (12-bit digits), written into ``perm`` (``tmp`` is scratch of the same size).
    Returns the array holding the result (``perm`` or ``tmp``)."""
    n = addr.shape[0]
    for i in range(n):
        perm[i] = i
    counts = np.zeros(4096, np.int64)
    src = perm
    dst = tmp
    per_asid = asid.shape[0] == n and n > 1
    passes = (nbits + 11) // 12
    total_passes = passes + (1 if per_asid else 0)
    for p in range(total_passes):
        for b in range(4096):
            counts[b] = 0
        for i in range(n):
            counts[_digit(addr, asid, src[i], p, passes, shift_lo)] += 1
        t = 0
        for b in range(4096):
            c = counts[b]
            counts[b] = t
            t += c
        for i in range(n):
            j = src[i]
            key = _digit(addr, asid, j, p, passes, shift_lo)
            dst[counts[key]] = j
            counts[key] += 1
        src, dst = dst, src
    return src
