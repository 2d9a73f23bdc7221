"""Bounds-checked physical-memory access for kernels (memslots as plain arrays).

All addresses are int64 inside kernels (physical addresses are below 2**52). A read that
is not wholly inside one memslot reports failure instead of touching memory.
"""
import numpy as np

from ._jit import jit


@jit
def find_slot(slot_base, slot_end, addr, n):
    """Index of the memslot holding ``[addr, addr + n)``, or -1 (binary search)."""
    lo = 0
    hi = slot_base.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if slot_end[mid] <= addr:
            lo = mid + 1
        else:
            hi = mid
    if lo < slot_base.shape[0] and addr >= 0 and slot_base[lo] <= addr and addr + n <= slot_end[lo]:
        return lo
    return -1


@jit
def load_le(buf, off, size):
    """Little-endian u32 or u64 at byte ``off`` of ``buf`` (as int64)."""
    if size == 8:
        return (np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8)
                | (np.int64(buf[off + 2]) << 16) | (np.int64(buf[off + 3]) << 24)
                | (np.int64(buf[off + 4]) << 32) | (np.int64(buf[off + 5]) << 40)
                | (np.int64(buf[off + 6]) << 48) | (np.int64(buf[off + 7]) << 56))
    return (np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8)
            | (np.int64(buf[off + 2]) << 16) | (np.int64(buf[off + 3]) << 24))


@jit
def store_le(buf, off, size, value):
    for k in range(size):
        buf[off + k] = np.uint8((value >> (8 * k)) & 0xFF)


@jit
def read_phys(slot_base, slot_end, slot_backing, slot_offset, backings, addr, size):
    """``(ok, value)`` of the ``size``-byte entry at physical ``addr``."""
    k = find_slot(slot_base, slot_end, addr, size)
    if k < 0:
        return False, np.int64(0)
    buf = backings[slot_backing[k]]
    return True, load_le(buf, slot_offset[k] + (addr - slot_base[k]), size)


@jit
def write_phys(slot_base, slot_end, slot_backing, slot_offset, backings, addr, size, value):
    k = find_slot(slot_base, slot_end, addr, size)
    if k < 0:
        return False
    buf = backings[slot_backing[k]]
    store_le(buf, slot_offset[k] + (addr - slot_base[k]), size, value)
    return True
