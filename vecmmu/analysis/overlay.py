"""EPT permission overlays: vecmmu's model of RWX memory attributes.

An :class:`Overlay` is a GPA range with R / W / XS / XU rights. Every EPT access to the
range (guest paging-structure reads included) AND-s those rights into the rights of the
EPT entries walked, like one more EPT level under the leaf. KVM's memory attributes carry
only PRIVATE today; RWX attributes are proposals, so this is a modelling tool:

* the effective rights are ``leaf & overlay``; no rights at all is an EPT violation (the
  overlay "entry" is not present); a misconfiguration pattern (W without R; execute-only,
  XU counting as X under MBEC, without execute-only support) is its own status,
  ``overlay misconfig``;
* exit-qualification bits 3-6 are the AND including the overlay.

For ranges that hold no guest page tables an overlay is decision-only (what-if sweeps
AND it into the final translation's rights). For ranges that hold guest tables,
:func:`apply_to_ept` builds the equivalent EPT in a copy of host memory (splitting large
EPT pages where a range cuts them), and the guest is re-walked over it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import bits as B
from ..memory import PhysMem

EPT_R, EPT_W, EPT_XS, EPT_PS, EPT_XU = 1, 2, 4, 1 << 7, 1 << 10


@dataclass(frozen=True)
class Overlay:
    """Rights for the GPA range ``[start, start + size)`` (4 KiB aligned).

    ``r``, ``w``, ``xs`` (supervisor execute, EPT bit 2), ``xu`` (user execute, EPT bit 10,
    with MBEC); False removes that right from every access to the range."""
    start: int
    size: int
    r: bool = True
    w: bool = True
    xs: bool = True
    xu: bool = True
    name: str = ""

    def __post_init__(self):
        if int(self.start) % 4096 or int(self.size) % 4096 or int(self.size) <= 0:
            raise ValueError(f"overlay {self.name or ''} [{int(self.start):#x}, +{int(self.size):#x}): "
                             f"start and size must be positive multiples of 4096")

    @property
    def end(self) -> int:
        return int(self.start) + int(self.size)

    @property
    def acc(self) -> int:
        """The rights in ACC layout (R=1, W=2, XU=4, XS=8)."""
        return int(self.r) | int(self.w) << 1 | int(self.xu) << 2 | int(self.xs) << 3

    @property
    def ept_mask(self) -> int:
        """EPT entry bits the overlay keeps (all bits but the rights it removes)."""
        drop = ((0 if self.r else EPT_R) | (0 if self.w else EPT_W) | (0 if self.xs else EPT_XS)
                | (0 if self.xu else EPT_XU))
        return ((1 << 64) - 1) & ~drop

    def rights(self) -> str:
        """The rights kept, ``r-w-xs-xu`` style (as :meth:`Variant.parse` reads them);
        ``none`` for none."""
        kept = [c for c, f in zip(("r", "w", "xs", "xu"), (self.r, self.w, self.xs, self.xu)) if f]
        return "-".join(kept) or "none"

    def __str__(self) -> str:
        return f"{self.name + ' ' if self.name else ''}[{int(self.start):#x}, {self.end:#x}) {self.rights()}"


def segments(overlays) -> np.ndarray:
    """Disjoint, sorted ``(start, end, acc)`` rows (int64, shape (S, 3)); where overlays
    overlap their rights are AND-ed."""
    ovs = list(overlays)
    if not ovs:
        return np.zeros((0, 3), np.int64)
    cuts = sorted({int(o.start) for o in ovs} | {o.end for o in ovs})
    rows = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        acc, hit = 15, False
        for o in ovs:
            if int(o.start) <= lo and hi <= o.end:
                acc &= o.acc
                hit = True
        if hit:
            if rows and rows[-1][1] == lo and rows[-1][2] == acc:
                rows[-1][1] = hi
            else:
                rows.append([lo, hi, acc])
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def touches(overlays, pages: np.ndarray) -> list:
    """The overlays whose range holds any of ``pages`` (GPA >> 12)."""
    pages = np.asarray(pages, dtype=np.int64)
    out = []
    for o in overlays:
        lo, hi = int(o.start) >> 12, o.end >> 12
        if ((pages >= lo) & (pages < hi)).any():
            out.append(o)
    return out


def gpa_ranges(walker, gva: int, size: int, *, asid: int = 0) -> list[tuple[int, int]]:
    """The GPA ranges behind the guest-virtual range ``[gva, gva + size)`` (the guest's
    own translation of every 4 KiB page, merged; unmapped pages are skipped). Pages are
    looked up with the guest's decision settings relaxed (no SMAP, SMEP, WP or PKRU), so a
    user page a supervisor read would fault on is still found."""
    from .whatif import permissive_walker
    pages = np.uint64(int(gva) & ~0xFFF) + np.arange(0, int(size), 4096, dtype=np.uint64)
    if walker.kind in ("cpu", "nested"):     # the guest's mapping, whatever SMAP/PKRU/... say
        walker = permissive_walker(walker)
    r = walker.translate(pages, "read", user=False, asid=asid)
    ok = r.has_gpa
    g = (r.gpa[ok] >> np.uint64(12)).astype(np.int64)
    if g.size == 0:
        return []
    g = np.unique(g)
    brk = np.flatnonzero(np.diff(g) != 1)
    starts = np.r_[g[0], g[brk + 1]]
    ends = np.r_[g[brk], g[-1]] + 1
    return [(int(s) << 12, int(e - s) << 12) for s, e in zip(starts, ends)]


def overlays_for_gva(walker, gva: int, size: int, *, name: str = "", asid: int = 0,
                     **rights) -> list[Overlay]:
    """Overlays covering the guest-physical pages behind a guest-virtual range (for
    example a guest's kernel text): ``rights`` are ``r``, ``w``, ``xs``, ``xu``."""
    return [Overlay(s, n, name=name, **rights) for s, n in gpa_ranges(walker, gva, size, asid=asid)]


# --- applying overlays to a copy of the EPT -------------------------------------------------

def apply_to_ept(tdp_walker, overlays, *, pool: int = 16 << 20):
    """Host memory in which the EPT of ``tdp_walker`` carries ``overlays`` in its leaves.

    Slots that hold EPT entries are copied; other slots (guest RAM) are shared. EPT
    pages that an overlay cuts are split into 4 KiB entries, in a new memslot of ``pool``
    bytes placed above all others. Returns ``(mem, modified)``: the new
    :class:`PhysMem`, and ``{entry HPA: original value}`` of every leaf changed.
    """
    if tdp_walker.kind != "ept":
        raise ValueError("permission overlays model EPT rights (R/W/XS/XU); this TDP is "
                         f"{tdp_walker.kind.upper()}")
    src = tdp_walker.mem
    root = int(tdp_walker._roots[0])
    levels = int(tdp_walker.format.root_level)
    addr_mask = B.bits(51, 12)
    # find the slots holding EPT tables: walk every overlay page's path
    work = _MemCopy(src, pool)
    modified: dict[int, int] = {}
    for o in overlays:
        gpa = int(o.start)
        while gpa < o.end:
            level, table = levels, root
            while True:
                ea = table + ((gpa >> (12 + 9 * (level - 1))) & 511) * 8
                if not work.backed(ea):
                    step = 1 << (12 + 9 * (level - 1))
                    break
                pte = work.read(ea)
                present = (pte & 7) != 0 or (pte & EPT_XU) != 0
                if not present:
                    step = 1 << (12 + 9 * (level - 1))
                    break
                size = 1 << (12 + 9 * (level - 1))
                if level == 1 or (pte & EPT_PS):
                    base = gpa & ~(size - 1)
                    if base >= int(o.start) and base + size <= o.end:
                        modified.setdefault(ea, pte)
                        work.write(ea, pte & o.ept_mask)
                        step = base + size - gpa
                        break
                    # split the large page: 512 entries of the next size down
                    sub = size >> 9
                    t = work.alloc_table()
                    leaf_bit = EPT_PS if level - 1 > 1 else 0
                    for j in range(512):
                        v = (pte & ~addr_mask & ~EPT_PS) | leaf_bit | ((pte & addr_mask) + j * sub)
                        work.write(t + 8 * j, v)
                    work.write(ea, (pte & ~addr_mask & (EPT_R | EPT_W | EPT_XS | EPT_XU)) | t
                               | EPT_R | EPT_W | EPT_XS | EPT_XU)
                    modified.setdefault(ea, pte)
                    continue                      # re-read the (now non-leaf) entry
                table = pte & addr_mask
                level -= 1
            gpa += step
    return work.finish(), modified


class _MemCopy:
    """Copy-on-write view of a PhysMem for EPT edits, with a pool for new tables."""

    def __init__(self, src: PhysMem, pool: int):
        self.src = src
        self.copies: dict[int, np.ndarray] = {}
        top = max(s.end for s in src.slots)
        self.pool_base = (top + (1 << 21) - 1) & ~((1 << 21) - 1)
        self.pool = None
        self.pool_size = int(pool)
        self.pool_used = 0

    def _slot(self, addr):
        if self.pool is not None and self.pool_base <= addr < self.pool_base + self.pool_size:
            return None, self.pool, addr - self.pool_base
        for k, s in enumerate(self.src.slots):
            if s.base <= addr and addr + 8 <= s.end:
                arr = self.copies.get(k)
                if arr is None:
                    b = self.src.backings[s.backing]
                    arr = b[s.offset:s.offset + s.size]
                return k, arr, addr - s.base
        return None, None, None

    def backed(self, addr) -> bool:
        return self._slot(addr)[1] is not None

    def read(self, addr) -> int:
        _, arr, off = self._slot(addr)
        return int(arr[off:off + 8].view(np.uint64)[0])

    def write(self, addr, value) -> None:
        k, arr, off = self._slot(addr)
        if k is not None and k not in self.copies:
            arr = arr.copy()
            self.copies[k] = arr
        arr[off:off + 8].view(np.uint64)[0] = np.uint64(value & ((1 << 64) - 1))

    def alloc_table(self) -> int:
        if self.pool is None:
            self.pool = np.zeros(self.pool_size, dtype=np.uint8)
        if self.pool_used + 4096 > self.pool_size:
            raise MemoryError("overlay EPT split pool exhausted; pass a larger pool=")
        a = self.pool_base + self.pool_used
        self.pool_used += 4096
        return a

    def finish(self) -> PhysMem:
        mem = PhysMem()
        for k, s in enumerate(self.src.slots):
            if k in self.copies:
                mem.add_slot(s.base, self.copies[k], name=s.name, writable=s.writable)
            else:
                mem.add_slot(s.base, self.src.backings[s.backing], offset=s.offset, size=s.size,
                             name=s.name, writable=s.writable)
        if self.pool is not None:
            mem.add_slot(self.pool_base, self.pool, name="overlay EPT splits")
        return mem
