"""A/D flags as sparse byte diffs: collect the bits one copy of memory gained over another,
OR-reduce diffs from many copies, and OR them into a :class:`PhysMem`.

A diff is ``(addr, bits)``: sorted unique physical byte addresses (u64) and the bits
(u8) that byte gained. A and D flags only ever get set, so the OR of the diffs of
several copies is the flags every copy set, whatever order they ran in.
"""
from __future__ import annotations

import numpy as np

from ..memory import PhysMem

PAGE = 4096


def empty_diff():
    return np.zeros(0, np.uint64), np.zeros(0, np.uint8)


def page_diff(before: PhysMem, after: PhysMem, pages) -> tuple:
    """Bits set in ``after`` but not in ``before`` on the given 4 KiB page addresses."""
    addrs, bits = [], []
    for pa in np.unique(np.asarray(pages, dtype=np.uint64)):
        pa = int(pa)
        s = after.slot_of(pa)
        if s is None:
            continue
        n = min(PAGE, s.end - pa)
        a = np.frombuffer(after.read(pa, n), np.uint8)
        b = np.frombuffer(before.read(pa, n), np.uint8)
        gained = a & ~b
        nz = np.flatnonzero(gained)
        if nz.size:
            addrs.append(nz.astype(np.uint64) + np.uint64(pa))
            bits.append(gained[nz])
    if not addrs:
        return empty_diff()
    return np.concatenate(addrs), np.concatenate(bits)


def or_diffs(*diffs) -> tuple:
    """One diff holding every bit of ``diffs``."""
    ds = [d for d in diffs if d is not None and d[0].size]
    if not ds:
        return empty_diff()
    a = np.concatenate([d[0] for d in ds])
    b = np.concatenate([d[1] for d in ds])
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    u, start = np.unique(a, return_index=True)
    return u, np.bitwise_or.reduceat(b, start).astype(np.uint8)


def apply_diff(mem: PhysMem, diff) -> int:
    """OR the diff's bits into ``mem`` (which must be writable there); returns bytes changed."""
    addrs, bits = diff
    outside = np.ones(addrs.shape, bool)
    for s in mem.slots:
        outside &= ~((addrs >= np.uint64(s.base)) & (addrs < np.uint64(s.end)))
    if outside.any():
        raise ValueError(f"A/D diff byte {int(addrs[outside][0]):#x} is outside every memslot of "
                         f"{mem!r}")
    for s in mem.slots:             # check every slot first: nothing half-written
        sel = (addrs >= np.uint64(s.base)) & (addrs < np.uint64(s.end))
        if sel.any() and not s.writable:
            raise PermissionError(f"memslot {s.name!r} is read-only; open the memory writable "
                                  f"to write A/D flags back")
    changed = 0
    for s in mem.slots:
        sel = (addrs >= np.uint64(s.base)) & (addrs < np.uint64(s.end))
        if not sel.any():
            continue
        off = (addrs[sel] - np.uint64(s.base)).astype(np.int64) + s.offset
        back = mem.backings[s.backing]
        old = back[off].copy()
        back[off] |= bits[sel]
        changed += int((back[off] != old).sum())
    return changed
