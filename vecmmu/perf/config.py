"""Cache configurations: which TLBs and paging-structure caches a model has, and their sizes.

A :class:`Cache` is one set-associative LRU structure (``entries``, ``ways``; ``ways=None``
means fully associative). A :class:`TlbConfig` says which caches play which part:

============ ==================================================================================
field        what it caches
============ ==================================================================================
l1, l2       TLBs: tuples of ``Cache`` with ``sizes`` (``"4K"``, ``"2M"`` (2 and 4 MiB pages),
             ``"1G"``); one per page size or unified. A miss in L1 probes L2; an L2 hit fills
             L1; a walk fills both. In a 2-D walk the entries cover the effective page size
             (the smaller of the guest and TDP pages).
pml5e ...    paging-structure caches (SDM Vol. 3 §4.10.3): PML5E, PML4E, PDPTE, PDE caches,
pde          tagged by the linear-address bits above the level (a PDE-cache entry by bits
             47:21) and by context, never global. A hit lets the walk start below that level.
pte          a cache of paging-structure entries tagged by the entry's physical address
             (an AMD-style page-walk cache), ``pte_line`` bytes a tag (8 = one entry).
ntlb         nested TLB (GPA → HPA, per TDP page size), tagged by EPTP, consulted for every
             guest table access and the final GPA of a 2-D walk.
ept_pml5e .. TDP paging-structure caches, tagged by GPA bits and EPTP.
ept_pde
pge          CR4.PGE: leaves with G=1 make global TLB entries.
pcide        CR4.PCIDE: CR3 bits 11:0 are a PCID and CR3 bit 63 skips the flush.
============ ==================================================================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..kernels import tlb as KT

_SIZE_BITS = {"4K": 0b0001, "2M": 0b0110, "4M": 0b0110, "1G": 0b1000}


@dataclass(frozen=True)
class Cache:
    """One set-associative, LRU structure: ``entries`` in sets of ``ways`` (None: fully
    associative). ``sizes`` matter to TLBs only. ``entries / ways`` must be a power of two."""
    entries: int
    ways: int | None = None
    sizes: tuple = ("4K",)
    name: str | None = None

    def __post_init__(self):
        sizes = (self.sizes,) if isinstance(self.sizes, str) else tuple(self.sizes)
        object.__setattr__(self, "sizes", sizes)
        for s in sizes:
            if s not in _SIZE_BITS:
                raise ValueError(f"page size {s!r} is not one of {sorted(_SIZE_BITS)}")
        if int(self.entries) < 1:
            raise ValueError(f"a cache needs at least one entry (got {self.entries}); use None "
                             f"for no cache")
        ways = int(self.entries) if self.ways is None else int(self.ways)
        if ways < 1 or self.entries % ways:
            raise ValueError(f"{self.entries} entries do not divide into {ways}-way sets")
        sets = self.entries // ways
        if sets & (sets - 1):
            raise ValueError(f"{self.entries} entries / {ways} ways = {sets} sets; the number "
                             f"of sets must be a power of two")

    @property
    def n_ways(self) -> int:
        return int(self.entries) if self.ways is None else int(self.ways)

    @property
    def sets(self) -> int:
        return int(self.entries) // self.n_ways

    @property
    def size_mask(self) -> int:
        m = 0
        for s in self.sizes:
            m |= _SIZE_BITS[s]
        return m

    def scaled(self, f: float) -> "Cache":
        """The same shape with ``f`` times the sets (at least one set; ways kept, except a
        fully associative cache, which scales its entries)."""
        if self.ways is None:
            return dataclasses.replace(self, entries=max(1, int(round(self.entries * f))))
        sets = max(1, int(round(self.sets * f)))
        sets = 1 << (sets.bit_length() - 1)
        return dataclasses.replace(self, entries=sets * self.n_ways)


def _opt(c):
    return c if c is None or isinstance(c, Cache) else Cache(int(c))


@dataclass(frozen=True)
class TlbConfig:
    """The translation caches of one simulated core (see the module docstring)."""
    l1: tuple = ()
    l2: tuple = ()
    pml5e: Cache | None = None
    pml4e: Cache | None = None
    pdpte: Cache | None = None
    pde: Cache | None = None
    pte: Cache | None = None
    pte_line: int = 8
    ntlb: tuple = ()
    ept_pml5e: Cache | None = None
    ept_pml4e: Cache | None = None
    ept_pdpte: Cache | None = None
    ept_pde: Cache | None = None
    pge: bool = True
    pcide: bool = False
    name: str = field(default="", compare=False)

    def __post_init__(self):
        for f in ("l1", "l2", "ntlb"):
            v = getattr(self, f)
            v = (v,) if isinstance(v, Cache) else tuple(v)
            if len(v) > KT.MAX_LIST:
                raise ValueError(f"{f} has {len(v)} structures; at most {KT.MAX_LIST}")
            object.__setattr__(self, f, v)
        for f in ("pml5e", "pml4e", "pdpte", "pde", "pte", "ept_pml5e", "ept_pml4e",
                  "ept_pdpte", "ept_pde"):
            object.__setattr__(self, f, _opt(getattr(self, f)))
        if self.pte_line not in (8, 16, 32, 64, 128):
            raise ValueError(f"pte_line must be 8..128 bytes, a power of two (got {self.pte_line})")

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def none(cls, **kw) -> "TlbConfig":
        """No caches at all: every access is a full walk."""
        return cls(name="none", **kw)

    @classmethod
    def skylake(cls, **kw) -> "TlbConfig":
        """A Skylake-like data side (sizes as commonly published; an illustration, not a
        measurement): L1 DTLB 64×4-way 4K, 32×4-way 2M, 4 1G; L2 STLB 1536×12-way 4K+2M,
        16×4-way 1G; PML4E 2, PDPTE 4, PDE 32 entries; nested TLB 32×4-way per size."""
        base = dict(
            l1=(Cache(64, 4, "4K", "L1 4K"), Cache(32, 4, "2M", "L1 2M"), Cache(4, None, "1G", "L1 1G")),
            l2=(Cache(1536, 12, ("4K", "2M"), "L2 4K/2M"), Cache(16, 4, "1G", "L2 1G")),
            pml4e=Cache(2), pdpte=Cache(4), pde=Cache(32),
            ntlb=(Cache(32, 4, ("4K", "2M", "1G"), "nested TLB"),),
            ept_pml4e=Cache(2), ept_pdpte=Cache(4), ept_pde=Cache(32), name="skylake")
        base.update(kw)
        return cls(**base)

    def replace(self, **kw) -> "TlbConfig":
        return dataclasses.replace(self, **kw)

    def scaled(self, f: float, which=("l1", "l2", "pml5e", "pml4e", "pdpte", "pde", "pte", "ntlb",
                                      "ept_pml5e", "ept_pml4e", "ept_pdpte", "ept_pde")) -> "TlbConfig":
        """Every structure named in ``which`` with ``f`` times its sets."""
        kw = {}
        for w in which:
            v = getattr(self, w)
            if isinstance(v, tuple):
                kw[w] = tuple(c.scaled(f) for c in v)
            elif v is not None:
                kw[w] = v.scaled(f)
        return dataclasses.replace(self, name=f"{self.name}×{f:g}" if self.name else f"×{f:g}", **kw)

    # -- what the kernel takes --------------------------------------------------------------
    def structures(self):
        """(role, level-or-0, Cache, label) for every structure, in plan order."""
        out = []
        for role, f in ((KT.R_L1, "l1"), (KT.R_L2, "l2")):
            for k, c in enumerate(getattr(self, f)):
                out.append((role, 0, c, c.name or f"{f.upper()} {'/'.join(c.sizes)}"))
        for lvl, f, label in ((5, "pml5e", "PML5E cache"), (4, "pml4e", "PML4E cache"),
                              (3, "pdpte", "PDPTE cache"), (2, "pde", "PDE cache")):
            c = getattr(self, f)
            if c is not None:
                out.append((KT.R_PSC, lvl, c, c.name or label))
        if self.pte is not None:
            out.append((KT.R_PTE, 0, self.pte, self.pte.name or "PTE cache"))
        for c in self.ntlb:
            out.append((KT.R_NTLB, 0, c, c.name or f"nested TLB {'/'.join(c.sizes)}"))
        for lvl, f, label in ((5, "ept_pml5e", "TDP L5 cache"), (4, "ept_pml4e", "TDP L4 cache"),
                              (3, "ept_pdpte", "TDP L3 cache"), (2, "ept_pde", "TDP L2 cache")):
            c = getattr(self, f)
            if c is not None:
                out.append((KT.R_TPSC, lvl, c, c.name or label))
        return out

    def compile(self, index_bits: int = 9):
        """``(plan, geom, n_entries, labels)`` for :mod:`vecmmu.kernels.tlb`."""
        structs = self.structures()
        plan = np.full(KT.P_LEN, -1, np.int64)
        geom = np.zeros((max(1, len(structs)), KT.G_COLS), np.int64)
        base = 0
        counts = {KT.R_L1: 0, KT.R_L2: 0, KT.R_NTLB: 0}
        first = {KT.R_L1: KT.P_L1, KT.R_L2: KT.P_L2, KT.R_NTLB: KT.P_NTLB}
        for sid, (role, lvl, c, _) in enumerate(structs):
            arg = c.size_mask
            if role == KT.R_PTE:
                arg = int(self.pte_line).bit_length() - 1
            geom[sid] = (role, c.sets, c.n_ways, arg, base)
            base += c.entries
            if role in first:
                plan[first[role] + counts[role]] = sid
                counts[role] += 1
            elif role == KT.R_PSC:
                plan[KT.P_PSC + lvl] = sid
            elif role == KT.R_TPSC:
                plan[KT.P_TPSC + lvl] = sid
            else:
                plan[KT.P_PTE] = sid
        plan[KT.P_PGE] = int(self.pge)
        plan[KT.P_PCIDE] = int(self.pcide)
        plan[KT.P_IB] = int(index_bits)
        return plan, geom, max(1, base), [s[3] for s in structs]

    def __str__(self) -> str:
        parts = [f"{label} {c.entries}" + (f"×{c.n_ways}w" if c.ways else " FA")
                 for _, _, c, label in self.structures()]
        return f"TlbConfig({self.name + ': ' if self.name else ''}{', '.join(parts) or 'no caches'})"
