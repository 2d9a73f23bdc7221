"""Small picklable descriptions of a walker and its memory, for shipping to other processes.

A :class:`PhysMem` may be gigabytes of mostly untouched zeros (``Mmu`` allocates 4 GiB of
RAM lazily) and holds raw host pointers that mean nothing in another process. A
:class:`MemSpec` keeps only what a walk can read: each memslot's geometry and its
non-zero 4 KiB pages. :class:`WalkSpec` adds the walker's role, roots, PDPTE registers,
PKRU, semantics and (for a nested guest) the ``tdp_walk``. ``spec.build()`` rebuilds an
equivalent walker over fresh, writable memory (a private copy: writing A/D flags into it
never touches the original).

>>> from vecmmu import Mmu
>>> mmu = Mmu.for_mode("4level", ram_size=1 << 24)
>>> _ = mmu.map(0x400000, 0x2000, user=True)
>>> spec = WalkSpec.of(mmu.walker())
>>> w = spec.build()
>>> int(w.translate([0x400010]).fault[0])
0
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..memory import PhysMem
from ..walk import PageWalk

PAGE = 4096
_SCAN = 1 << 26          # bytes compared per step when looking for non-zero pages


@dataclass
class SlotSpec:
    base: int
    size: int
    name: str
    pages: np.ndarray                 # int64 page numbers (relative to base) that are non-zero
    data: np.ndarray                  # uint8 (len(pages), 4096), the last page zero-padded

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.pages.nbytes)


@dataclass
class MemSpec:
    """The non-zero pages of every memslot of a :class:`PhysMem`."""

    slots: list = field(default_factory=list)

    @classmethod
    def of(cls, mem: PhysMem) -> "MemSpec":
        if not isinstance(mem, PhysMem):
            raise TypeError(f"mem must be a PhysMem, not {type(mem).__name__}")
        out = []
        for s in mem.slots:
            raw = mem.backings[s.backing][s.offset:s.offset + s.size]
            npages = -(-s.size // PAGE)
            keep = []
            step = _SCAN // PAGE
            for p0 in range(0, npages, step):
                p1 = min(npages, p0 + step)
                lo, hi = p0 * PAGE, min(s.size, p1 * PAGE)
                chunk = raw[lo:hi]
                full = (hi - lo) // PAGE
                if full:
                    nz = np.flatnonzero(chunk[:full * PAGE].reshape(full, PAGE).any(axis=1))
                    keep.append(nz + p0)
                if (hi - lo) % PAGE and chunk[full * PAGE:].any():
                    keep.append(np.array([p0 + full]))
            pages = np.concatenate(keep).astype(np.int64) if keep else np.zeros(0, np.int64)
            data = np.zeros((pages.shape[0], PAGE), np.uint8)
            for j, p in enumerate(pages):
                lo = int(p) * PAGE
                seg = raw[lo:min(s.size, lo + PAGE)]
                data[j, :seg.shape[0]] = seg
            out.append(SlotSpec(s.base, s.size, s.name, pages, data))
        return cls(out)

    def build(self) -> PhysMem:
        """Fresh writable memory with these contents (zero pages cost nothing until used)."""
        mem = PhysMem()
        for s in self.slots:
            arr = np.zeros(s.size, np.uint8)
            for p, d in zip(s.pages, s.data):
                lo = int(p) * PAGE
                n = min(PAGE, s.size - lo)
                arr[lo:lo + n] = d[:n]
            mem.add_slot(s.base, arr, name=s.name, writable=True)
        return mem

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.slots)

    def token(self) -> str:
        h = hashlib.sha1()
        for s in self.slots:
            h.update(f"{s.base}:{s.size}:{s.name};".encode())
            h.update(s.pages.tobytes())
            h.update(s.data.tobytes())
        return h.hexdigest()


def _role_state(walk: PageWalk) -> dict:
    return {"role": walk.role, "cr3": list(walk.cr3), "semantics": walk.semantics}


@dataclass
class WalkSpec:
    """Everything :class:`PageWalk` needs, picklable and small (see the module docstring)."""

    mem: MemSpec
    role: object
    cr3: list
    semantics: str
    pkru: np.ndarray
    pdptes: np.ndarray | None
    tdp: dict | None
    _token: str | None = None

    @classmethod
    def of(cls, walk: PageWalk, mem: MemSpec | None = None) -> "WalkSpec":
        if not isinstance(walk, PageWalk):
            raise TypeError(f"walk must be a PageWalk, not {type(walk).__name__}")
        from ..role import CpuRole
        from ..bits import PagingMode
        pdptes = None
        if isinstance(walk.role, CpuRole) and walk.role.mode is PagingMode.PAE:
            amd_npt = walk.tdp is not None and walk.tdp.kind == "npt" and walk.semantics == "hardware"
            if not amd_npt:
                pdptes = np.array(walk.pdptes, dtype=np.uint64, copy=True)
        tdp = _role_state(walk.tdp) if walk.tdp is not None else None
        return cls(mem or MemSpec.of(walk.mem), walk.role, list(walk.cr3), walk.semantics,
                   np.array(walk.pkru, copy=True), pdptes, tdp)

    def build(self, mem: PhysMem | None = None) -> PageWalk:
        """An equivalent walker over ``mem`` (default: a fresh private copy)."""
        mem = self.mem.build() if mem is None else mem
        tdp = None
        if self.tdp is not None:
            tdp = PageWalk(self.tdp["role"], mem, self.tdp["cr3"][0], semantics=self.tdp["semantics"])
        return PageWalk(self.role, mem, self.cr3, pdptes=self.pdptes, semantics=self.semantics,
                        pkru=self.pkru, tdp=tdp)

    def token(self) -> str:
        """A content hash: equal specs share one rebuilt walker per worker process."""
        if self._token is None:
            h = hashlib.sha1(self.mem.token().encode())
            h.update(repr((self.role, self.cr3, self.semantics, self.pkru.tolist(),
                           None if self.pdptes is None else self.pdptes.tolist(),
                           None if self.tdp is None else repr(self.tdp))).encode())
            self._token = h.hexdigest()
        return self._token
