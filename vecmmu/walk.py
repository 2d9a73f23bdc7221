"""PageWalk: walks existing tables of one format from a root (KVM's ``kvm_pagewalk``).

``PageWalk`` in the ``cpu_walk`` role turns guest linear addresses into guest-physical
addresses through the guest's own tables (root = CR3), in any guest paging mode. It
validates and converts the batch, then calls the jitted kernel
:func:`vecmmu.kernels.cpu_walk.cpu_translate` chunk by chunk.

>>> from vecmmu import Mmu
>>> mmu = Mmu.for_mode("4level")
>>> _ = mmu.map(0x400000, 0x1000, user=True)
>>> r = mmu.walker().translate([0x400010, 0x500000], kind="read", user=True)
>>> r.to_frame()[["addr", "fault", "gpa"]].to_string()  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Sequence

import numba
import numpy as np

from . import bits as B
from .access import as_accesses
from .bits import Fault, PagingMode
from .format import PageFormat
from .kernels import cpu_walk as K
from .memory import PhysMem
from .result import Translation, acc_string
from .role import CpuRole, RegisterError

DEFAULT_CHUNK = 1 << 20


class PdpteError(RegisterError):
    """Loading PAE PDPTEs at CR3 would raise #GP(0) (a present PDPTE has reserved bits)."""


def load_pdptes(mem: PhysMem, cr3: int, maxphyaddr: int = 52) -> np.ndarray:
    """The four PAE PDPTE registers as MOV CR3 loads them (``load_pdptrs``).

    Reads four u64 from the 32-byte-aligned PDPT at CR3 bits 31:5 and raises
    :class:`PdpteError` (the #GP(0) of the MOV) when a present entry has a reserved bit
    set: bits 63:MAXPHYADDR, 8:5 or 2:1.
    """
    base = int(cr3) & B.bits(31, 5)
    rsvd = B.bits(63, maxphyaddr) | B.bits(8, 5) | B.bits(2, 1)
    out = np.zeros(4, dtype=np.uint64)
    for i in range(4):
        a = base + 8 * i
        if not mem.is_backed(a, 8):
            raise PdpteError(f"PDPTE {i} at {a:#x} (CR3={int(cr3):#x}) is not in any memslot")
        v = mem.read_u64(a)
        if v & 1 and v & rsvd:
            raise PdpteError(f"#GP(0) loading CR3={int(cr3):#x}: PDPTE {i} at {a:#x} = {v:#018x} "
                             f"has reserved bits {v & rsvd:#x} set")
        out[i] = v
    return out


def _mem_tuple(mem: PhysMem) -> tuple:
    """The memslot tuple kernels take: (slot_base, slot_end, slot_backing, slot_offset,
    backings) with addresses as int64."""
    k = mem.kernel_args()
    return (k[0].view(np.int64), k[1].view(np.int64), k[2], k[3], k[5])


@contextlib.contextmanager
def _num_threads(threads):
    if threads is None:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


class _Progress:
    """A one-line progress report on stderr for long batches (only on a terminal)."""

    def __init__(self, total: int, what: str, enabled):
        if enabled is None:
            enabled = total >= 8 * DEFAULT_CHUNK and sys.stderr.isatty()
        self.enabled, self.total, self.what, self.t0 = bool(enabled), total, what, time.perf_counter()

    def update(self, done: int):
        if self.enabled:
            rate = done / max(time.perf_counter() - self.t0, 1e-9)
            sys.stderr.write(f"\r{self.what}: {done:,}/{self.total:,} ({rate / 1e6:.1f} M/s)")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


class PageWalk:
    """A guest page-table walker (``cpu_walk``) over a :class:`PhysMem`.

    Parameters
    ----------
    role : CpuRole
        Paging mode and features (see :meth:`from_regs` to start from register values).
    mem : PhysMem
        Guest-physical memory holding the tables.
    cr3 : int or sequence of int
        One CR3 per address space (``asid`` indexes this list). PCID bits and bits at or
        above MAXPHYADDR are masked.
    pdptes : array (4,) or (n_cr3, 4), optional
        PAE PDPTE registers. Default: loaded from memory at each CR3 and checked, as
        MOV CR3 does (:func:`load_pdptes`).
    semantics : "hardware" or "kvm"
        Hardware (the manuals) by default; "kvm" reproduces KVM's walker where the two
        differ (K5 I/D bit, K6 PSE-36, K9 A flags on faulting walks, K13 unbacked tables).
    pkru : int
        PKRU for batches that do not give one per access (default 0: all keys allowed).
    """

    def __init__(self, role: CpuRole, mem: PhysMem, cr3=0, *, pdptes=None,
                 semantics: str = "hardware", pkru: int = 0):
        if not isinstance(role, CpuRole):
            raise TypeError(f"role must be a CpuRole, not {type(role).__name__}")
        if not isinstance(mem, PhysMem):
            raise TypeError(f"mem must be a PhysMem, not {type(mem).__name__}")
        self.role = role
        self.format = PageFormat.for_cpu(role, semantics)
        self.semantics = semantics
        self.mem = mem
        cr3s = [cr3] if np.ndim(cr3) == 0 else list(cr3)
        if not cr3s:
            raise ValueError("cr3 must name at least one root")
        self.cr3 = [int(c) & (2**64 - 1) for c in cr3s]
        mask = role.root_mask()
        self._roots = np.array([c & mask for c in self.cr3], dtype=np.uint64).view(np.int64)
        if role.mode is PagingMode.PAE:
            if pdptes is None:
                pd = np.stack([load_pdptes(mem, c, role.maxphyaddr) for c in self.cr3])
            else:
                pd = np.asarray(pdptes, dtype=np.uint64).reshape(-1, 4)
                if pd.shape[0] != len(self.cr3):
                    raise ValueError(f"pdptes has {pd.shape[0]} rows for {len(self.cr3)} CR3 values")
            self.pdptes = pd
        else:
            if pdptes is not None:
                raise ValueError("pdptes apply only to PAE paging")
            self.pdptes = np.zeros((len(self.cr3), 4), dtype=np.uint64)
        self._pdptes_i = np.ascontiguousarray(self.pdptes).view(np.int64)
        self.pkru = self._check_pkru(pkru)
        self._wopts = K.W_KVM_UNBACKED if semantics == "kvm" else K.W_CHECK_FINAL

    @classmethod
    def from_regs(cls, mem: PhysMem, *, cr0: int, cr3: int, cr4: int, efer: int = 0,
                  maxphyaddr: int = 52, gbpages: bool = True, vendor: str = "intel",
                  semantics: str = "hardware", pkru: int = 0, pdptes=None) -> "PageWalk":
        """A walker from register values (as a memory dump gives them)."""
        role = CpuRole.from_regs(cr0, cr4, efer, maxphyaddr=maxphyaddr, gbpages=gbpages, vendor=vendor)
        return cls(role, mem, cr3, pdptes=pdptes, semantics=semantics, pkru=pkru)

    @staticmethod
    def _check_pkru(pkru):
        arr = np.asarray(pkru)
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF)):
            raise ValueError("pkru must be 32-bit unsigned integer(s)")
        return arr.astype(np.int64).reshape(-1)

    # -- the batch entry point ------------------------------------------------------------------
    def translate(self, accesses, kind=None, *, user=None, ac=None, implicit=None, stack=None,
                  size=None, asid=None, pkru=None, trace: bool = False, ad: str | None = None,
                  threads: int | None = None, chunk: int = DEFAULT_CHUNK,
                  progress: bool | None = None) -> Translation:
        """Translate a batch of accesses.

        ``accesses`` is an access batch (:func:`vecmmu.make_accesses`), a DataFrame with
        an ``addr`` column, or addresses, with the other fields as keywords (scalars or
        arrays). ``pkru`` overrides the walker's PKRU (one value, or one per access).

        ``ad``: None (memory is not changed), ``"trace"`` (A/D flags written back in
        trace order: each access sees the flags of those before it) or ``"snapshot"``
        (every access sees the starting memory; the flags are written afterwards).
        Results never depend on ``threads``.
        """
        kw = {k: v for k, v in dict(kind=kind, user=user, ac=ac, implicit=implicit, stack=stack,
                                    size=size, asid=asid).items() if v is not None}
        acc = as_accesses(accesses, **kw)
        n_in = acc.shape[0]
        if ad not in (None, "trace", "snapshot"):
            raise ValueError(f"ad must be None, 'trace' or 'snapshot', not {ad!r}")
        if ad is not None:
            for s in self.mem.slots:
                if not s.writable:
                    raise PermissionError(f"A/D updates need writable memory; memslot {s.name!r} "
                                          f"is read-only")
        if n_in and int(acc["asid"].max()) >= len(self.cr3):
            bad = int(np.flatnonzero(acc["asid"] >= len(self.cr3))[0])
            raise ValueError(f"asid[{bad}] = {int(acc['asid'][bad])}, but the walker has "
                             f"{len(self.cr3)} CR3 value(s)")

        # a page-crossing access is two translations
        addr = acc["addr"]
        cross = ((addr & np.uint64(0xFFF)) + acc["size"].astype(np.uint64)) > np.uint64(4096)
        if cross.any():
            index = np.repeat(np.arange(n_in, dtype=np.int64), 1 + cross.astype(np.int64))
            part = np.zeros(index.shape[0], dtype=np.uint8)
            part[1:][index[1:] == index[:-1]] = 1
            sel = acc[index]
            t_addr = np.where(part == 1, (sel["addr"] | np.uint64(0xFFF)) + np.uint64(1), sel["addr"])
        else:
            index = np.arange(n_in, dtype=np.int64)
            part = np.zeros(n_in, dtype=np.uint8)
            sel = acc
            t_addr = np.ascontiguousarray(addr)
        n = t_addr.shape[0]
        kind = sel["kind"]
        af = ((kind == 1).view(np.uint8) * np.uint8(K.AF_WRITE)
              | (kind == 2).view(np.uint8) * np.uint8(K.AF_FETCH)
              | sel["user"] * np.uint8(K.AF_USER) | sel["ac"] * np.uint8(K.AF_AC)
              | sel["implicit"] * np.uint8(K.AF_IMPLICIT) | sel["stack"] * np.uint8(K.AF_STACK))
        if len(self.cr3) == 1:
            asids = np.zeros(1, dtype=np.int64)
        else:
            asids = sel["asid"].astype(np.int64)
        if pkru is None:
            pk = self.pkru
        else:
            pk = self._check_pkru(pkru)
            if pk.shape[0] not in (1, n_in):
                raise ValueError(f"pkru has {pk.shape[0]} values for {n_in} accesses")
            if pk.shape[0] == n_in and n != n_in:
                pk = pk[index]
        if pk.shape[0] == 1 and n > 1:
            pk = pk[:1]

        cols = {
            "access": index, "part": part, "addr": np.array(t_addr, dtype=np.uint64),
            "asid": np.ascontiguousarray(sel["asid"]), "kind": np.ascontiguousarray(sel["kind"]),
            "user": np.ascontiguousarray(sel["user"]),
            "gpa": np.empty(n, np.uint64), "fault": np.empty(n, np.uint8),
            "error_code": np.empty(n, np.uint64), "fault_level": np.empty(n, np.uint8),
            "entry_addr": np.empty(n, np.uint64), "entry_value": np.empty(n, np.uint64),
            "leaf_level": np.empty(n, np.uint8), "page_shift": np.empty(n, np.uint8),
            "acc": np.empty(n, np.uint8), "pkey": np.empty(n, np.uint8), "refs": np.empty(n, np.uint8),
        }
        if self.role.mode in (PagingMode.BIT32, PagingMode.PAE, PagingMode.NONE):
            cols["addr"] &= np.uint64(0xFFFFFFFF)
        if trace:
            tr = (np.full((n, 5), -1, np.int64), np.zeros((n, 5), np.int64))
        else:
            tr = None
        self._run(cols, af, asids, pk, tr, ad, threads, int(chunk), progress)
        return Translation(cols, tr, mode_name=B.MODE_NAMES[self.role.mode], semantics=self.semantics)

    def _run(self, cols, af, asids, pk, tr, ad, threads, chunk, progress):
        n = af.shape[0]
        if chunk <= 0:
            raise ValueError("chunk must be positive")
        memt = _mem_tuple(self.mem)
        params, rsvd, perms = self.format.params(), self.format.rsvd_table(), self.format.perm_table()
        addr_i = cols["addr"].view(np.int64)
        out_names = ("gpa", "fault", "error_code", "fault_level", "entry_addr", "entry_value",
                     "leaf_level", "page_shift", "acc", "pkey", "refs")
        outs = [cols[k].view(np.int64) if cols[k].dtype == np.uint64 else cols[k] for k in out_names]
        kvm = self.semantics == "kvm"
        pte_size = int(self.format.pte_size)
        need_trace = tr is not None or ad is not None
        dummy = (np.full((1, 5), -1, np.int64), np.zeros((1, 5), np.int64))
        prog = _Progress(n, "translating", progress)
        passes = 2 if ad == "snapshot" else 1
        with _num_threads(threads):
            for p in range(passes):
                for lo in range(0, n, chunk):
                    hi = min(n, lo + chunk)
                    if tr is not None and p == 0:
                        t = (tr[0][lo:hi], tr[1][lo:hi])
                    elif need_trace:
                        t = (np.empty((hi - lo, 5), np.int64), np.empty((hi - lo, 5), np.int64))
                    else:
                        t = dummy
                    a = asids[lo:hi] if asids.shape[0] == n and n > 1 else asids
                    k = pk[lo:hi] if pk.shape[0] == n and n > 1 else pk
                    if p == 0:
                        o = [x[lo:hi] for x in outs]
                    else:   # snapshot second pass: re-walk (same path) only to place the flags
                        o = [np.empty(hi - lo, x.dtype) for x in outs]
                    K.cpu_translate(addr_i[lo:hi], af[lo:hi], a, k, self._roots, self._pdptes_i,
                                    params, rsvd, perms, self._wopts, memt, *o,
                                    need_trace, t[0], t[1])
                    if ad == "trace" or (ad == "snapshot" and p == 1):
                        # o[1] fault, o[3] fault_level, o[4] entry_addr, o[5] entry_value, o[6] leaf
                        K.apply_ad(af[lo:hi], o[1], o[3], o[4], o[5], o[6], t[0], t[1], pte_size,
                                   kvm, ad == "trace", memt)
                    if p == passes - 1:
                        prog.update(hi)
        prog.close()

    # -- conveniences -------------------------------------------------------------------------
    def explain(self, addr: int, kind="read", *, user: bool = False, ac: bool = False,
                implicit: bool = False, asid: int = 0, pkru=None) -> str:
        """A readable account of one translation: every entry read and the decision."""
        r = self.translate([addr], kind=kind, user=user, ac=ac, implicit=implicit, asid=asid,
                           pkru=pkru, trace=True)
        row = r.to_frame().iloc[0]
        lines = [f"{'user' if user else 'supervisor'} {row['kind']} of {int(addr) & (2**64 - 1):#x} "
                 f"({B.MODE_NAMES[self.role.mode]}, {self.semantics}, CR3={self.cr3[asid]:#x})"]
        for lvl in range(5, 0, -1):
            ea = int(r.trace_addr[0, lvl - 1])
            if ea >= 0:
                v = int(r.trace_value[0, lvl - 1]) & (2**64 - 1)
                lines.append(f"  L{lvl} entry @ {ea:#014x} = {v:#018x}")
        lines.append(f"  -> {row['fault']}" + (f", error code {int(row['error_code']):#x}"
                                               if row["fault"] == "#PF" else "")
                     + (f", GPA {int(row['gpa']):#x}" if row["gpa"] is not None and not
                        (row["gpa"] is np.nan) and str(row["gpa"]) != "<NA>" else "")
                     + (f", {row['page_size']} page, rights {acc_string([row['acc']])[0]}"
                        f", pkey {row['pkey']}" if row["leaf_level"] else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        roots = ", ".join(f"{c:#x}" for c in self.cr3[:4]) + (" ..." if len(self.cr3) > 4 else "")
        return f"PageWalk(cpu_walk, {self.role}, {self.semantics}, CR3=[{roots}])"


def cpu_walk(role: CpuRole, mem: PhysMem, cr3: int | Sequence[int] = 0, **kw) -> PageWalk:
    """The ``cpu_walk`` role: a guest walker rooted at CR3 (see :class:`PageWalk`)."""
    return PageWalk(role, mem, cr3, **kw)
