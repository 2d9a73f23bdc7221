"""Processing order: a radix argsort by page number, so a batch walks its tables in
ascending order (table lines stay in cache; results still land in input order)."""
import numpy as np

from ._jit import jit


@jit
def page_order(addr, asid, shift_lo, nbits, perm, tmp):
    """Stable LSD radix argsort of ``(asid, addr >> shift_lo)`` on ``nbits`` address bits
    (12-bit digits), written into ``perm`` (``tmp``: scratch of the same size). Keys are
    computed once and travel with the indices, so every pass reads sequentially.
    Returns the array holding the result (``perm`` or ``tmp``)."""
    n = addr.shape[0]
    per_asid = asid.shape[0] == n and n > 1
    mask = (np.int64(1) << nbits) - 1
    k1 = np.empty(n, np.int64)
    k2 = np.empty(n, np.int64)
    for i in range(n):
        perm[i] = i
        k = (addr[i] >> shift_lo) & mask
        if per_asid:
            k |= (asid[i] & 4095) << nbits
        k1[i] = k
    counts = np.zeros(4096, np.int64)
    src, dst = perm, tmp
    ks, kd = k1, k2
    total_bits = nbits + (12 if per_asid else 0)
    for p in range((total_bits + 11) // 12):
        sh = 12 * p
        for b in range(4096):
            counts[b] = 0
        for i in range(n):
            counts[(ks[i] >> sh) & 4095] += 1
        t = 0
        for b in range(4096):
            c = counts[b]
            counts[b] = t
            t += c
        for i in range(n):
            d = (ks[i] >> sh) & 4095
            o = counts[d]
            dst[o] = src[i]
            kd[o] = ks[i]
            counts[d] = o + 1
        src, dst = dst, src
        ks, kd = kd, ks
    return src
