"""PageWalk: walks existing tables of one format from a root (KVM's ``kvm_pagewalk``).

Two roles, as in KVM:

* ``cpu_walk`` (a :class:`CpuRole`): guest linear → guest physical through the guest's
  own tables (root = CR3), in any guest paging mode;
* ``tdp_walk`` (an :class:`EptRole` or :class:`NptRole`): guest physical → host physical
  through EPT (root = EPTP) or NPT (root = nCR3).

A ``cpu_walk`` built with ``tdp=`` a ``tdp_walk`` is the two-dimensional walk: every guest
paging-structure access and the final GPA go through the TDP. ``PageWalk`` validates and
converts a batch, then calls a jitted driver (:mod:`vecmmu.kernels.cpu_walk`,
:mod:`vecmmu.kernels.tdp_walk`) chunk by chunk.

>>> from vecmmu import Mmu
>>> mmu = Mmu.for_mode("4level")
>>> _ = mmu.map(0x400000, 0x1000, user=True)
>>> r = mmu.walker().translate([0x400010, 0x500000], kind="read", user=True)
>>> r.to_frame()[["addr", "fault", "gpa"]].to_string()  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Sequence

import numba
import numpy as np
import pandas as pd

from . import bits as B
from .access import accesses_and_maxima, split_page_crossing
from .bits import Fault, PagingMode
from .bufpool import POOL
from .format import PageFormat
from .kernels import cpu_walk as K
from .kernels import memo as KM
from .kernels import walkers as KW
from .kernels import tdp_walk as KT
from .kernels._jit import parts_for, run_parts
from .memory import PhysMem
from .result import Translation, acc_string
from .role import CpuRole, EptRole, NptRole, RegisterError

DEFAULT_CHUNK = 1 << 20


class PdpteError(RegisterError):
    """Loading PAE PDPTEs at CR3 would raise #GP(0) (a present PDPTE has reserved bits)."""


def load_pdptes(mem: PhysMem, cr3: int, maxphyaddr: int = 52, *, at: int | None = None) -> np.ndarray:
    """The four PAE PDPTE registers as MOV CR3 loads them (``load_pdptrs``).

    Reads four u64 from the 32-byte-aligned PDPT at CR3 bits 31:5 and raises
    :class:`PdpteError` (the #GP(0) of the MOV) when a present entry has a reserved bit
    set: bits 63:MAXPHYADDR, 8:5 or 2:1. ``at``: where the PDPT is in ``mem`` when that
    is not CR3's address (a nested guest: the HPA the TDP gave; messages still name the
    guest-physical address).
    """
    base = int(cr3) & B.bits(31, 5)
    where = base if at is None else int(at)
    rsvd = B.bits(63, maxphyaddr) | B.bits(8, 5) | B.bits(2, 1)
    out = np.zeros(4, dtype=np.uint64)
    for i in range(4):
        a = base + 8 * i
        if not mem.is_backed(where + 8 * i, 8):
            raise PdpteError(f"PDPTE {i} at {a:#x} (CR3={int(cr3):#x}) is not in any memslot")
        v = mem.read_u64(where + 8 * i)
        if v & 1 and v & rsvd:
            raise PdpteError(f"#GP(0) loading CR3={int(cr3):#x}: PDPTE {i} at {a:#x} = {v:#018x} "
                             f"has reserved bits {v & rsvd:#x} set")
        out[i] = v
    return out


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


class _WalkMemo:
    """The buffer of the kernels' walk memo (kernels/cpu_walk.py), kept by a walker between
    calls: each call takes a new epoch instead of clearing it. One call at a time uses it;
    a concurrent call on the same walker (threads) gets a buffer of its own."""

    MAX_SETS = 1 << 12          # per part: 2 ways x 32 bytes -> 256 KiB per thread (L2)
    NESTED_SETS = 1 << 10       # the 2-D memo's rows are 192 bytes: 384 KiB per thread

    def __init__(self):
        self.buf = None
        self.epoch = 0
        self.lock = threading.Lock()

    @classmethod
    def rows(cls, n, parts, max_sets=None):
        """Rows per part: sets for about as many pages as the part has accesses (2 ways)."""
        max_sets = max_sets or cls.MAX_SETS
        want = max(1, min(n, 2 * max_sets) // parts)
        return 2 * (1 << max(8, min(max_sets.bit_length() - 1, (want - 1).bit_length())))

    def next_epoch(self):
        self.epoch += 1
        if self.epoch > KM.MEMO_EPOCH_MAX:           # epochs wrap: clear the buffer once
            if self.buf is not None:
                self.buf.fill(0)
            self.epoch = 1
        return np.int64(self.epoch)

    @contextlib.contextmanager
    def take(self, n, parts, width=4, max_sets=None):
        """``(buffer (parts, rows, width), epoch)`` for one call."""
        shape = (parts, self.rows(n, parts, max_sets), width)
        if not self.lock.acquire(blocking=False):
            yield np.zeros(shape, np.int64), np.int64(1)
            return
        try:
            if self.buf is None or self.buf.shape != shape:
                self.buf = None
                self.buf = np.zeros(shape, np.int64)
            yield self.buf, self.next_epoch()
        finally:
            self.lock.release()


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
    """A page-table walker over a :class:`PhysMem` (KVM's ``kvm_pagewalk``).

    Parameters
    ----------
    role : CpuRole, EptRole or NptRole
        A ``CpuRole`` makes a ``cpu_walk`` (see :meth:`from_regs` to start from register
        values); an ``EptRole`` or ``NptRole`` makes a ``tdp_walk``.
    mem : PhysMem
        Physical memory holding the tables. For a two-dimensional walk it is host memory
        (the guest's tables are found through the TDP).
    cr3 : int or sequence of int
        The root: CR3 values (one per address space; ``asid`` indexes this list; PCID
        bits and bits at or above MAXPHYADDR are masked), or the EPTP / nCR3 of a
        ``tdp_walk``.
    pdptes : array (4,) or (n_cr3, 4), optional
        PAE PDPTE registers. Default: loaded at each CR3 and checked, as MOV CR3 does
        (:func:`load_pdptes`; through the TDP for a nested guest).
    semantics : "hardware" or "kvm"
        Hardware (the manuals) by default; "kvm" reproduces KVM's walker where the two
        differ (see the README's table).
    pkru : int
        PKRU for batches that do not give one per access (default 0: all keys allowed).
    tdp : PageWalk, optional
        A ``tdp_walk`` over the same memory: makes this ``cpu_walk`` two-dimensional.
    enc_mask : int
        Entry bits that are not address or rights bits for this guest and are cleared
        before an entry is used: the SME/SEV C-bit or the TDX shared bit (for example
        ``1 << 51``). Traces and reported entry values keep the raw entries.
    """

    def __init__(self, role, mem: PhysMem, cr3=0, *, pdptes=None, semantics: str = "hardware",
                 pkru: int = 0, tdp: "PageWalk | None" = None, enc_mask: int = 0):
        if not isinstance(mem, PhysMem):
            raise TypeError(f"mem must be a PhysMem, not {type(mem).__name__}")
        if semantics not in ("hardware", "kvm"):
            raise ValueError(f"semantics must be 'hardware' or 'kvm', not {semantics!r}")
        self.role = role
        self.semantics = semantics
        self.mem = mem
        self.tdp = None
        self._memo = _WalkMemo()
        self._wopts = KW.W_KVM_UNBACKED if semantics == "kvm" else KW.W_CHECK_FINAL
        self.pkru = self._check_pkru(pkru)
        self.enc_mask = int(enc_mask) & (2**64 - 1)
        if self.enc_mask & 0xFFF:
            raise ValueError(f"enc_mask {self.enc_mask:#x} touches bits 11:0 (flags), not address bits")
        cr3s = [cr3] if np.ndim(cr3) == 0 else list(cr3)
        if not cr3s:
            raise ValueError("cr3 must name at least one root")
        for c in cr3s:                       # unsigned, or two's complement (int64 arrays)
            if not -(1 << 63) <= int(c) < 1 << 64:
                raise ValueError(f"root {int(c):#x} does not fit a 64-bit register")
        self.cr3 = [int(c) & (2**64 - 1) for c in cr3s]
        if isinstance(role, (EptRole, NptRole)):
            self._init_tdp(role, pdptes, tdp)
            return
        if not isinstance(role, CpuRole):
            raise TypeError(f"role must be a CpuRole, EptRole or NptRole, not {type(role).__name__}")
        if tdp is not None:
            self._attach_tdp(tdp)
        amd_npt = tdp is not None and tdp.kind == "npt" and semantics == "hardware"
        self.format = PageFormat.for_cpu(role, semantics, pdpte_from_memory=amd_npt)
        self._roots = np.array([c & role.root_mask() for c in self.cr3], dtype=np.uint64).view(np.int64)
        if role.mode is PagingMode.PAE and not amd_npt:
            if pdptes is None:
                pd = np.stack([self._load_pdptes(c) for c in self.cr3])
            else:
                pd = np.asarray(pdptes, dtype=np.uint64).reshape(-1, 4)
                if pd.shape[0] != len(self.cr3):
                    raise ValueError(f"pdptes has {pd.shape[0]} rows for {len(self.cr3)} CR3 values")
            self.pdptes = pd
        else:
            if pdptes is not None:
                raise ValueError("pdptes apply only to PAE paging with PDPTE registers "
                                 "(an AMD guest under NPT reads them from memory on every walk)")
            self.pdptes = np.zeros((len(self.cr3), 4), dtype=np.uint64)
        self._pdptes_i = np.ascontiguousarray(self.pdptes).view(np.int64)

    def _init_tdp(self, role, pdptes, tdp):
        if tdp is not None:
            raise ValueError("a tdp_walk cannot itself sit on a TDP here (shadow EPT is built "
                             "by the Mmu instead)")
        if pdptes is not None:
            raise ValueError("pdptes apply to guest PAE paging, not to a tdp_walk")
        if len(self.cr3) != 1:
            raise ValueError("a tdp_walk has one root (EPTP or nCR3)")
        self.format = PageFormat.for_tdp(role, self.semantics)
        if role.kind == "ept":
            root = self.cr3[0] & B.bits(51, 12)
            if self.cr3[0] & 0xFFF:                          # an EPTP value: check it agrees
                got = EptRole.from_eptp(self.cr3[0], execonly=role.execonly, mbec=role.mbec,
                                        huge_level=role.huge_level, maxphyaddr=role.maxphyaddr,
                                        advanced_info=role.advanced_info)
                if got != role:
                    raise RegisterError(f"EPTP={self.cr3[0]:#x} says {got}, but the role is {role}")
        else:
            root = self.cr3[0] & (B.bits(31, 5) if role.mode is PagingMode.PAE
                                  else B.bits(role.maxphyaddr - 1, 12))
        self._roots = np.array([root], dtype=np.int64)
        self.pdptes = np.zeros((1, 4), dtype=np.uint64)
        self._pdptes_i = self.pdptes.view(np.int64)

    def _attach_tdp(self, tdp):
        if not isinstance(tdp, PageWalk) or tdp.kind not in ("ept", "npt"):
            raise TypeError("tdp must be a tdp_walk: PageWalk(EptRole(...) or NptRole(...), mem, root)")
        if tdp.mem is not self.mem:
            raise ValueError("the guest walk and its tdp_walk must share one PhysMem (host memory)")
        if tdp.semantics != self.semantics:
            raise ValueError(f"semantics differ: guest {self.semantics!r}, tdp {tdp.semantics!r}")
        if self.role.paging and self.role.maxphyaddr > tdp.role.gpa_bits:
            raise RegisterError(f"guest MAXPHYADDR {self.role.maxphyaddr} exceeds the "
                                f"{tdp.role.gpa_bits}-bit reach of the {tdp.kind.upper()} "
                                f"(reading R7); build the guest CpuRole with "
                                f"maxphyaddr<={tdp.role.gpa_bits}")
        self.tdp = tdp

    def _load_pdptes(self, cr3):
        """PDPTE registers at CR3: from memory, or through the TDP for a nested guest (R11:
        a read, GLA invalid; KVM translates it as a write, K4)."""
        if self.tdp is None:
            return load_pdptes(self.mem, cr3, self.role.maxphyaddr)
        base = int(cr3) & B.bits(31, 5)
        kind = "write" if self.semantics == "kvm" else "read"
        r = self.tdp.translate([base], kind, table=True)
        if r.fault[0] != Fault.NONE:
            df = r.to_frame().iloc[0]
            raise PdpteError(f"loading PAE PDPTEs at CR3={int(cr3):#x} exits: {df['fault']} on "
                             f"GPA {base:#x} (exit qualification {int(df['exit_qual']):#x}, "
                             f"error code {int(df['error_code']):#x})")
        return load_pdptes(self.mem, cr3, self.role.maxphyaddr, at=int(r.hpa[0]))

    @property
    def _fp(self) -> tuple:
        """The format's parameter tuple plus this walker's enc_mask (what kernels take)."""
        return self.format.params() + (np.int64(np.uint64(self.enc_mask).view(np.int64)),)

    @property
    def kind(self) -> str:
        """'cpu', 'nested' (a cpu_walk on a tdp_walk), 'ept' or 'npt'."""
        if isinstance(self.role, CpuRole):
            return "nested" if self.tdp is not None else "cpu"
        return self.role.kind

    @classmethod
    def from_regs(cls, mem: PhysMem, *, cr0: int, cr3: int, cr4: int, efer: int = 0,
                  maxphyaddr: int = 52, gbpages: bool = True, vendor: str = "intel",
                  semantics: str = "hardware", pkru: int = 0, pdptes=None, tdp=None,
                  enc_mask: int = 0) -> "PageWalk":
        """A cpu_walk from register values (as a memory dump gives them)."""
        role = CpuRole.from_regs(cr0, cr4, efer, maxphyaddr=maxphyaddr, gbpages=gbpages, vendor=vendor)
        return cls(role, mem, cr3, pdptes=pdptes, semantics=semantics, pkru=pkru, tdp=tdp,
                   enc_mask=enc_mask)

    @classmethod
    def from_eptp(cls, mem: PhysMem, eptp: int, *, semantics: str = "hardware", **caps) -> "PageWalk":
        """A tdp_walk over EPT from an EPTP value and the VMX capabilities
        (``execonly``, ``mbec``, ``huge_level``, ``advanced_info``, ``maxphyaddr``)."""
        return cls(EptRole.from_eptp(eptp, **caps), mem, eptp, semantics=semantics)

    @staticmethod
    def _check_pkru(pkru):
        arr = np.asarray(pkru)
        if arr.dtype.kind not in "iu" or (arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF)):
            raise ValueError("pkru must be 32-bit unsigned integer(s)")
        return arr.astype(np.int64).reshape(-1)

    # -- the batch entry point ------------------------------------------------------------------
    def translate(self, accesses, kind=None, *, user=None, ac=None, implicit=None, stack=None,
                  size=None, asid=None, pkru=None, table=False, guest_acc=None,
                  trace: bool = False, ad: str | None = None, threads: int | None = None,
                  chunk: int = DEFAULT_CHUNK, order: str = "input",
                  prefetch: bool = True, memo: bool = True,
                  progress: bool | None = None) -> Translation:
        """Translate a batch of accesses.

        ``accesses`` is an access batch (:func:`vecmmu.make_accesses`), a DataFrame with
        an ``addr`` column, or addresses, with the other fields as keywords (scalars or
        arrays). ``pkru`` overrides the walker's PKRU (one value, or one per access).
        For a ``tdp_walk`` the addresses are GPAs; ``user`` means a user-mode linear
        address (MBEC) or a CPL-3 access (NPT with GMET), ``table`` a guest
        paging-structure access, ``guest_acc`` the guest rights behind the access for
        advanced exit information (default: R|W|X, plus U when ``user``).

        ``ad`` (cpu_walk only): None (memory is not changed), ``"trace"`` (A/D flags
        written back in trace order: each access sees the flags of those before it) or
        ``"snapshot"`` (every access sees the starting memory; the flags are written
        afterwards). Results never depend on ``threads``.

        ``order`` (cpu_walk without A/D in trace order): "input" walks accesses as given;
        "grouped" walks each thread's share of a chunk grouped by (address space, 2 MiB
        region) — one counting sort on a hash of the region — so walks that share table
        lines run together, and gathers the results back into input order. Measured on
        this project's 2-core VM (benchmarks/README.md) it is slower than input order in
        every case: 0.5-0.7x on tables far larger than cache (the random reads of the
        gathered records cost about what the shared table lines save), less on local
        traces, where input order already keeps table lines in cache.

        ``prefetch`` (cpu_walk of 4- and 5-level tables): before each block of 64 walks,
        request all their table entries level by level, so the block's cache misses
        overlap instead of waiting one after another: tables far larger than cache are
        walked several times faster. Blocks that start and end in one 2 MiB region skip
        it (their lines are in cache), and so do walks whose page the memo holds. A
        hint: results never depend on it. In input order, chunks of at least 2**18
        accesses write the results of such prefetched blocks with streaming stores, past
        the caches (results that large are not read back while they are in cache).

        ``memo`` (without A/D or trace): within one call memory does not change,
        so each thread keeps the walk outcomes of recent pages (a 2-way set-associative
        table of 8192 pages, 256 KiB per thread, kept by the walker for its next call) and
        decides later accesses to those pages from them without reading the tables again.
        Blocks of scattered walks stop looking it up once it hits less than half the time
        (they would miss it as they miss the cache), and try it again 128 k accesses later
        (32 ranges of 4096 per thread). A 2-D walk (nested, without trace)
        keeps whole results instead, keyed by page, access flags and PKRU (2048 per thread,
        384 KiB), as the TDP check of the final address depends on the access, and the TDP
        translations of the guest table pages it reads (64 per thread): a 2-D walk that
        misses the memo reads only its guest entries and the final GPA's TDP entries
        (``refs`` still counts every entry the walk reads). Results are the same either
        way; ``memo=False`` walks every access, every table access through the TDP.

        Result columns are allocated from :data:`vecmmu.bufpool.POOL`: the memory of a
        dropped result (no view of it left anywhere), already faulted in, serves the next
        call, so a loop over chunks does not pay for fresh pages each time. A result that
        is still held, or any view of it, is never reused. ``POOL.max_bytes = 0`` turns
        recycling off.
        """
        kw = {k: v for k, v in dict(kind=kind, user=user, ac=ac, implicit=implicit, stack=stack,
                                    size=size, asid=asid).items() if v is not None}
        acc, (max_size, max_asid) = accesses_and_maxima(accesses, **kw)
        n_in = acc.shape[0]
        if ad not in (None, "trace", "snapshot"):
            raise ValueError(f"ad must be None, 'trace' or 'snapshot', not {ad!r}")
        if int(chunk) <= 0:
            raise ValueError(f"chunk must be a positive number of accesses, not {chunk!r}")
        if order not in ("input", "grouped"):
            raise ValueError(f"order must be 'input' or 'grouped', not {order!r}")
        if order == "grouped" and ad == "trace":
            raise ValueError("order='grouped' reorders accesses; A/D write-back in trace order "
                             "needs order='input' (or use ad='snapshot')")
        if ad is not None and self.kind != "cpu":
            raise NotImplementedError(f"A/D write-back is implemented for the 1-D cpu_walk only, "
                                      f"not for a {self.kind} walk (results still account for "
                                      f"the A/D bits in memory)")
        if ad is not None:
            for s in self.mem.slots:
                if not s.writable:
                    raise PermissionError(f"A/D updates need writable memory; memslot {s.name!r} "
                                          f"is read-only")
        if n_in and max_asid >= len(self.cr3):
            bad = int(np.flatnonzero(acc["asid"] >= len(self.cr3))[0])
            raise ValueError(f"asid[{bad}] = {int(acc['asid'][bad])}, but the walker has "
                             f"{len(self.cr3)} root(s)")

        # a page-crossing access is two translations (sizes of 1 never cross)
        sel, index, part = split_page_crossing(acc) if n_in and max_size > 1 else (acc, None, None)
        n = sel.shape[0]
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
            if pk.shape[0] == n_in and index is not None:
                pk = pk[index]
        if pk.shape[0] == 1 and n > 1:
            pk = pk[:1]

        # the batch's own fields (views, not copies) go into the result
        cols = {"addr": sel["addr"], "asid": sel["asid"], "kind": sel["kind"], "user": sel["user"]}
        if index is not None:
            cols["access"], cols["part"] = index, part
        if self.kind in ("cpu", "nested") and self.role.mode in (PagingMode.BIT32, PagingMode.PAE,
                                                                  PagingMode.NONE):
            cols["addr"] = sel["addr"] & np.uint64(0xFFFFFFFF)
        name = B.MODE_NAMES.get(getattr(self.role, "mode", None), self.kind.upper())
        af = None
        if self.kind != "cpu" or ad is not None:
            kind_a = sel["kind"]
            af = ((kind_a == 1).view(np.uint8) * np.uint8(KW.AF_WRITE)
                  | (kind_a == 2).view(np.uint8) * np.uint8(KW.AF_FETCH)
                  | sel["user"] * np.uint8(KW.AF_USER) | sel["ac"] * np.uint8(KW.AF_AC)
                  | sel["implicit"] * np.uint8(KW.AF_IMPLICIT) | sel["stack"] * np.uint8(KW.AF_STACK))
        with _num_threads(threads):
            if self.kind == "cpu":
                tr = (np.full((n, 5), -1, np.int64), np.zeros((n, 5), np.int64)) if trace else None
                self._run(cols, sel, af, asids, pk, tr, ad, int(chunk), progress, order,
                          bool(prefetch), bool(memo))
                return Translation(cols, tr, mode_name=name, semantics=self.semantics)
            if self.kind == "nested":
                return self._run_nested(cols, af, asids, pk, trace, int(chunk), progress, name,
                                        bool(memo))
            return self._run_tdp(cols, af, table, guest_acc, trace, int(chunk), progress)

    def _run(self, cols, sel, af, asids, pk, tr, ad, chunk, progress, order, prefetch, memo):
        n = sel.shape[0]
        parts = parts_for(min(n, chunk), K.SUPER)
        use_memo = (memo and tr is None and ad is None and self.role.paging
                    and len(self.cr3) <= 4096)               # the asid sits in a tag's bits 11:0
        if use_memo:
            with self._memo.take(n, parts) as (buf, epoch):
                self._run_chunks(cols, sel, af, asids, pk, tr, ad, chunk, progress, order,
                                 prefetch, buf, epoch)
        else:
            self._run_chunks(cols, sel, af, asids, pk, tr, ad, chunk, progress, order, prefetch,
                             np.zeros((parts, 0, 4), np.int64), np.int64(1))

    def _run_chunks(self, cols, sel, af, asids, pk, tr, ad, chunk, progress, order, prefetch,
                    memo, epoch):
        n = sel.shape[0]
        for k, dt in (("gpa", np.uint64), ("fault", np.uint8), ("error_code", np.uint64),
                      ("fault_level", np.uint8), ("entry_addr", np.uint64),
                      ("entry_value", np.uint64), ("leaf_level", np.uint8), ("page_shift", np.uint8),
                      ("acc", np.uint8), ("pkey", np.uint8), ("refs", np.uint8)):
            cols[k] = POOL.empty(n, dt)     # on a cache line; recycled memory
        memt = self.mem.slot_pointers()
        params, rsvd, perms = self._fp, self.format.rsvd_table(), self.format.perm_table()
        # the batch's records, read by field offset (one kernel signature for every batch
        # length and mode: the kernel truncates 32-bit linear addresses itself)
        sel = np.ascontiguousarray(sel)
        raw, size = sel.view(np.uint8).reshape(-1), sel.dtype.itemsize
        f_addr, f_kind, f_flags = (np.int64(sel.dtype.fields[k][1]) for k in ("addr", "kind", "user"))
        out_names = ("gpa", "fault", "error_code", "fault_level", "entry_addr", "entry_value",
                     "leaf_level", "page_shift", "acc", "pkey", "refs")
        outs = [cols[k].view(np.int64) if cols[k].dtype == np.uint64 else cols[k] for k in out_names]
        kvm = self.semantics == "kvm"
        pte_size = int(self.format.pte_size)
        need_trace = tr is not None or ad is not None
        dummy = (np.full((1, 5), -1, np.int64), np.zeros((1, 5), np.int64))
        grouped = order == "grouped"
        bounds = list(range(0, n, chunk)) + [n]
        m = max(np.diff(bounds), default=1) if grouped else 1    # grouped: the kernel's scratch
        g_order, g_inv = POOL.empty(m, np.int64), POOL.empty(m, np.int64)
        g_rec = POOL.empty((m, 5), np.int64)
        prog = _Progress(n, "translating", progress)
        passes = 2 if ad == "snapshot" else 1
        for p in range(passes):
            for lo, hi in zip(bounds[:-1], bounds[1:]):
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
                g = grouped and p == 0
                sl = slice(0, hi - lo) if g else slice(0, 1)
                parts = memo.shape[0]
                if g:
                    run_parts(K.group_parts, parts, raw[lo * size:hi * size], size, f_addr, a,
                              parts, params[3], g_order[sl], g_inv[sl])
                run_parts(K.cpu_translate, parts, raw[lo * size:hi * size], size, f_addr, f_kind,
                          f_flags, a, k, self._roots, self._pdptes_i, params, rsvd, perms,
                          self._wopts, memt, *o, need_trace, t[0], t[1], prefetch, memo, epoch,
                          g, g_order[sl], g_rec[sl])
                if g:
                    run_parts(K.ungroup_parts, parts, parts, g_inv[sl], g_rec[sl], *o)
                if ad == "trace" or (ad == "snapshot" and p == 1):
                    # o[1] fault, o[3] fault_level, o[4] entry_addr, o[5] entry_value, o[6] leaf
                    K.apply_ad(af[lo:hi], o[1], o[3], o[4], o[5], o[6], t[0], t[1], pte_size,
                               kvm, ad == "trace", memt)
                if p == passes - 1:
                    prog.update(hi)
        prog.close()

    def _tdp_args(self):
        t = self.tdp if self.kind == "nested" else self
        f = t.format
        # the last: None for EPT, True for NPT (a type: only that walker is compiled)
        npt = np.bool_(True) if t.kind == "npt" else None
        return (t._fp, f.rsvd_table(), f.perm_table(), np.int64(t._roots[0]), t._wopts, npt)

    def _run_nested(self, cols, af, asids, pk, trace, chunk, progress, name, memo):
        n = af.shape[0]
        parts = parts_for(min(n, chunk), KT.ITEM)
        if memo and not trace and len(self.cr3) <= 4096:     # the asid sits in a tag's bits 11:0
            with self._memo.take(n, parts, KT.NM_W, _WalkMemo.NESTED_SETS) as (buf, epoch):
                return self._run_nested_chunks(cols, af, asids, pk, trace, chunk, progress,
                                               name, buf, epoch)
        return self._run_nested_chunks(cols, af, asids, pk, trace, chunk, progress, name,
                                       np.zeros((parts, 0, KT.NM_W), np.int64), np.int64(1))

    def _run_nested_chunks(self, cols, af, asids, pk, trace, chunk, progress, name, memo, epoch):
        n = af.shape[0]
        out = POOL.empty((len(KT.NESTED_COLS), n), np.int64)
        if trace:
            tr = (np.full((n, 5), -1, np.int64), np.zeros((n, 5), np.int64))
            ttr = (np.full((n, 6, 5), -1, np.int64), np.zeros((n, 6, 5), np.int64))
        else:
            tr = (np.full((1, 5), -1, np.int64), np.zeros((1, 5), np.int64))
            ttr = (np.full((1, 6, 5), -1, np.int64), np.zeros((1, 6, 5), np.int64))
        memt = self.mem.slot_pointers()
        f = self.format
        targs = self._tdp_args()
        addr_i = np.ascontiguousarray(cols["addr"]).view(np.int64)
        prog = _Progress(n, "translating (2-D)", progress)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            a = asids[lo:hi] if asids.shape[0] == n and n > 1 else asids
            k = pk[lo:hi] if pk.shape[0] == n and n > 1 else pk
            t = (tr[0][lo:hi], tr[1][lo:hi], ttr[0][lo:hi], ttr[1][lo:hi]) if trace else (*tr, *ttr)
            run_parts(KT.nested_translate, memo.shape[0], addr_i[lo:hi], af[lo:hi], a, k,
                      self._roots, self._pdptes_i, self._fp, f.rsvd_table(), f.perm_table(),
                      self._wopts, *targs, memt, out, lo, trace, *t, memo, epoch)
            prog.update(hi)
        prog.close()
        _nested_columns(cols, out)
        return Translation(cols, tr if trace else None, tdp_trace=ttr if trace else None,
                           mode_name=f"{name} over {self.tdp.kind.upper()}", semantics=self.semantics)

    def _run_tdp(self, cols, af, table, guest_acc, trace, chunk, progress):
        n = af.shape[0]
        out = POOL.empty((len(KT.TDP_COLS), n), np.int64)
        tbl = np.asarray(table, dtype=np.uint8).reshape(-1)
        if tbl.shape[0] not in (1, n):
            raise ValueError(f"table has {tbl.shape[0]} values for {n} accesses")
        if guest_acc is None:
            gacc = 11 | (np.ascontiguousarray(cols["user"]).astype(np.int64) << 2)
        else:
            gacc = np.asarray(guest_acc, dtype=np.int64).reshape(-1)
        if gacc.shape[0] not in (1, n) or gacc.min() < 0 or gacc.max() > 15:
            raise ValueError("guest_acc must be ACC rights 0..15, one or one per access")
        ttr = ((np.full((n, 1, 5), -1, np.int64), np.zeros((n, 1, 5), np.int64)) if trace
               else (np.full((1, 1, 5), -1, np.int64), np.zeros((1, 1, 5), np.int64)))
        memt = self.mem.slot_pointers()
        addr_i = np.ascontiguousarray(cols["addr"]).view(np.int64)
        parts = parts_for(min(n, chunk), KT.ITEM)
        prog = _Progress(n, f"translating ({self.kind.upper()})", progress)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            tb = tbl[lo:hi] if tbl.shape[0] == n and n > 1 else tbl
            ga = gacc[lo:hi] if gacc.shape[0] == n and n > 1 else gacc
            t = (ttr[0][lo:hi], ttr[1][lo:hi]) if trace else ttr
            run_parts(KT.tdp_translate_batch, parts, parts, addr_i[lo:hi], af[lo:hi], tb, ga,
                      *self._tdp_args(), memt, out, lo, trace, *t)
            prog.update(hi)
        prog.close()
        for j, name in enumerate(KT.TDP_COLS):
            cols[name] = _typed(name, out[j])
        cols["stage"] = np.where(cols["fault"] == Fault.NONE, 0,
                                 np.where(np.broadcast_to(tbl, (n,)) != 0, 2, 3)).astype(np.uint8)
        return Translation(cols, (ttr[0][:, 0, :], ttr[1][:, 0, :]) if trace else None,
                           mode_name=self.kind.upper(), semantics=self.semantics)

    # -- conveniences -------------------------------------------------------------------------
    def explain(self, addr: int, kind="read", *, user: bool = False, ac: bool = False,
                implicit: bool = False, asid: int = 0, pkru=None) -> str:
        """A readable account of one translation: every entry read and the decision."""
        kw = {} if self.kind in ("ept", "npt") else dict(ac=ac, implicit=implicit, asid=asid, pkru=pkru)
        r = self.translate([addr], kind=kind, user=user, trace=True, **kw)
        row = r.to_frame().iloc[0]
        lines = [f"{'user' if user else 'supervisor'} {row['kind']} of {int(addr) & (2**64 - 1):#x} "
                 f"({r.mode_name}, {self.semantics}, root={self.cr3[asid]:#x})"]
        for lvl in range(5, 0, -1):
            if r.tdp_trace is not None:
                for tl in range(5, 0, -1):
                    ta = int(r.tdp_trace[0][0, lvl - 1, tl - 1])
                    if ta >= 0:
                        lines.append(f"    TDP L{tl} entry @ {ta:#014x} = "
                                     f"{int(r.tdp_trace[1][0, lvl - 1, tl - 1]) & (2**64 - 1):#018x}")
            ea = int(r.trace_addr[0, lvl - 1])
            if ea >= 0:
                v = int(r.trace_value[0, lvl - 1]) & (2**64 - 1)
                lines.append(f"  L{lvl} entry @ {ea:#014x} = {v:#018x}")
        if r.tdp_trace is not None:
            for tl in range(5, 0, -1):
                ta = int(r.tdp_trace[0][0, 5, tl - 1])
                if ta >= 0:
                    lines.append(f"    TDP L{tl} entry @ {ta:#014x} = "
                                 f"{int(r.tdp_trace[1][0, 5, tl - 1]) & (2**64 - 1):#018x}  (final GPA)")
        out = f"  -> {row['fault']}"
        if row["fault"] in ("#PF", "#NPF"):
            out += f", error code {int(row['error_code']):#x}"
        if "exit_qual" in row and row["fault"] == "EPT violation":
            out += f", exit qualification {int(row['exit_qual']):#x}"
        for col in ("gpa", "hpa"):
            if col in row and not pd.isna(row[col]):
                out += f", {col.upper()} {int(row[col]):#x}"
        if row.get("leaf_level", 0):
            out += f", {row['page_size']} page, rights {acc_string([row['acc']])[0]}"
            if "pkey" in row:
                out += f", pkey {row['pkey']}"
        lines.append(out)
        return "\n".join(lines)

    def __repr__(self) -> str:
        roots = ", ".join(f"{c:#x}" for c in self.cr3[:4]) + (" ..." if len(self.cr3) > 4 else "")
        on = f", on {self.tdp!r}" if self.tdp is not None else ""
        return f"PageWalk({self.kind}, {self.role}, {self.semantics}, root=[{roots}]{on})"


_U8 = {"fault", "stage", "fault_level", "guest_level", "leaf_level", "page_shift", "acc", "pkey",
       "refs", "tdp_page_shift", "tdp_acc"}


def _typed(name, col):
    """A kernel's int64 result row as its column: narrowed to u8, or viewed as u64."""
    if name in _U8:
        return col.astype(np.uint8)
    return col.view(np.uint64)


def _nested_columns(cols, out):
    for j, name in enumerate(KT.NESTED_COLS):
        cols[name] = _typed(name, out[j])


def cpu_walk(role: CpuRole, mem: PhysMem, cr3: int | Sequence[int] = 0, **kw) -> PageWalk:
    """The ``cpu_walk`` role: a guest walker rooted at CR3 (see :class:`PageWalk`)."""
    return PageWalk(role, mem, cr3, **kw)


def tdp_walk(role, mem: PhysMem, root: int, **kw) -> PageWalk:
    """The ``tdp_walk`` role: an EPT or NPT walker rooted at the EPTP or nCR3."""
    if not isinstance(role, (EptRole, NptRole)):
        raise TypeError("tdp_walk wants an EptRole or NptRole")
    return PageWalk(role, mem, root, **kw)
