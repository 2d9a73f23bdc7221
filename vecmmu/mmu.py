"""Mmu: builds guest page tables in a PhysMem (KVM's ``kvm_mmu``, table-builder side).

An :class:`Mmu` owns one RAM memslot, a bump frame allocator and one root table per
address space (``asid``). It maps, unmaps and protects ranges with 4 KiB, 2 MiB, 4 MiB
(32-bit PSE, with PSE-36 frames above 4 GiB) and 1 GiB pages, with R/W, U/S, NX,
PWT/PCD/PAT, G and protection keys. Non-leaf entries it creates allow everything
(P|W|U, XD clear), so the rights of a page are those of its leaf unless you change an
upper level with :meth:`Mmu.set_entry`. It checks each leaf it writes against its own
:class:`~vecmmu.format.PageFormat` (reserved bits), so it never builds an entry its
walker would call reserved unless asked to with :meth:`Mmu.set_entry`.

>>> mmu = Mmu.for_mode("4level")
>>> mmu.map(0x400000, 0x3000, user=True)            # 3 user pages, frames allocated
>>> walk = mmu.walker()
>>> walk.translate([0x400123]).gpa[0] > 0
True
"""
from __future__ import annotations

import numpy as np

from . import bits as B
from .bits import PagingMode
from .format import PageFormat
from .kernels import build as K
from .memory import PhysMem
from .role import CpuRole, EptRole, NptRole

_PAGE_SIZES = {4096: 1, 2 << 20: 2, 4 << 20: 2, 1 << 30: 3}
EPT_R, EPT_W, EPT_XS, EPT_IPAT, EPT_PS, EPT_A, EPT_D, EPT_XU = 1, 2, 4, 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10
EPT_TABLE = EPT_R | EPT_W | EPT_XS | EPT_XU          # non-leaf EPT entries allow everything


class MmuError(ValueError):
    """A request the builder cannot carry out (alignment, overlap, size, memory)."""


def _page_size_name(ps: int) -> str:
    return {4096: "4 KiB", 2 << 20: "2 MiB", 4 << 20: "4 MiB", 1 << 30: "1 GiB"}.get(ps, hex(ps))


class Mmu:
    """Guest page-table builder for one paging mode.

    Parameters
    ----------
    role : CpuRole
        The paging mode and features the tables are built for.
    ram_size : int
        Bytes of guest RAM (one zero-filled memslot at ``ram_base``; untouched pages cost
        nothing). Tables and allocated frames come from it.
    ram_base : int
        Physical address of the RAM slot.
    mem : PhysMem, optional
        Memory to build in; a RAM slot of ``ram_size`` is added to it.
    """

    def __init__(self, role, *, ram_size: int = 1 << 32, ram_base: int = 0,
                 mem: PhysMem | None = None, ram: np.ndarray | None = None,
                 alloc_start: int = 0x1000):
        if isinstance(role, EptRole):
            self.kind = "ept"
            self.format = PageFormat.for_ept(role)
            cpu_mode = None
        elif isinstance(role, NptRole):
            self.kind = "npt"
            self.format = PageFormat.for_npt(role)
            cpu_mode = role.mode
        elif isinstance(role, CpuRole):
            self.kind = "cpu"
            self.format = PageFormat.for_cpu(role)
            cpu_mode = role.mode
        else:
            raise TypeError(f"role must be a CpuRole, EptRole or NptRole, not {type(role).__name__}")
        if cpu_mode is PagingMode.NONE:
            raise MmuError("paging is off in this role: there are no tables to build")
        self.role = role
        self.mem = mem if mem is not None else PhysMem()
        if ram is None:
            ram = np.zeros(int(ram_size), dtype=np.uint8)
        elif ram.dtype != np.uint8 or ram.ndim != 1 or not ram.flags.c_contiguous:
            raise MmuError("ram must be a 1-D C-contiguous uint8 array")
        self._ram = ram
        self.mem.add_slot(ram_base, self._ram, name="ram")
        self.ram_base = int(ram_base)
        self.ram_size = int(ram.shape[0])
        self._next = self.ram_base + int(alloc_start)
        self._limit = self.ram_base + self.ram_size
        f = self.format
        self._pte = int(f.pte_size)
        self._bits = int(f.index_bits)
        self._addr_mask = int(f.addr_mask)
        if self.kind == "ept":
            self._va_bits, self._top, self._signed = role.gpa_bits, role.levels, False
        else:
            self._va_bits = 32 if cpu_mode in (PagingMode.BIT32, PagingMode.PAE) else int(f.va_bits)
            self._top = int(cpu_mode)
            self._signed = self.kind == "cpu" and self._va_bits != 32   # canonical addresses
        self.roots: list[int] = []
        self.new_address_space()

    @classmethod
    def for_mode(cls, mode="4level", *, ram_size: int = 1 << 32, **role_kw) -> "Mmu":
        """An Mmu for a mode name ('32bit', 'pae', '4level', '5level'); role flags as keywords."""
        return cls(CpuRole.for_mode(mode, **role_kw), ram_size=ram_size)

    # -- frames ------------------------------------------------------------------------------
    def alloc(self, size: int = 4096, align: int = 4096) -> int:
        """Allocate ``size`` bytes of zeroed guest RAM aligned to ``align``; returns the address."""
        start = (self._next + align - 1) & ~(align - 1)
        if start + size > self._limit:
            raise MmuError(f"guest RAM exhausted: need {size:#x} bytes at {start:#x}, RAM ends at "
                           f"{self._limit:#x}; create the Mmu with a larger ram_size")
        if self.kind != "ept" and self.role.mode in (PagingMode.BIT32, PagingMode.PAE) \
                and align == 4096 and start + size > 1 << 32:
            raise MmuError("32-bit paging structures must lie below 4 GiB")
        self._next = start + size
        return start

    @property
    def allocated(self) -> int:
        """Bytes handed out by the frame allocator so far."""
        return self._next - self.ram_base

    def new_address_space(self) -> int:
        """Allocate a new root table; returns its asid (index into :attr:`roots`)."""
        root = self.alloc(4096)
        self.roots.append(root)
        return len(self.roots) - 1

    def _root(self, asid: int) -> int:
        if not isinstance(asid, (int, np.integer)) or not 0 <= int(asid) < len(self.roots):
            raise MmuError(f"asid {asid!r} does not name an address space (this Mmu has "
                           f"{len(self.roots)}: 0..{len(self.roots) - 1}; add one with "
                           f"new_address_space())")
        return self.roots[int(asid)]

    def cr3(self, asid: int = 0, pcid: int = 0) -> int:
        """The CR3 value for an address space (PCID in bits 11:0 when CR4.PCIDE); for EPT
        the EPTP, for NPT the nCR3."""
        if self.kind == "ept":
            return self.role.eptp(self._root(asid))
        if pcid and not getattr(self.role, "pcide", False):
            raise MmuError("a PCID needs CR4.PCIDE in the role")
        return self._root(asid) | (pcid & 0xFFF)

    # -- helpers -----------------------------------------------------------------------------
    def _norm_va(self, va: int, what: str = "address") -> int:
        va = int(va)
        if not -(1 << 63) <= va < 1 << 64:
            raise MmuError(f"{what} {va:#x} does not fit 64 bits")
        return int(self._norm_vas(np.array([va & ((1 << 64) - 1)], dtype=np.uint64), what)[0])

    def _norm_vas(self, vas: np.ndarray, what: str = "address") -> np.ndarray:
        """Check every address for this Mmu's address space and return the index bits:
        32-bit linear addresses, canonical 48/57-bit ones (sign bits stripped), or GPAs
        within the TDP's reach. The error names the first bad address."""
        vb = np.uint64(self._va_bits)
        if not self._signed:
            bad = (vas >> vb) != 0
        else:
            top = vas >> np.uint64(self._va_bits - 1)
            bad = (top != 0) & (top != np.uint64((1 << (64 - self._va_bits + 1)) - 1))
        if bad.any():
            va = int(vas[np.flatnonzero(bad)[0]])
            if self.kind == "ept" or (self.kind == "npt" and self._va_bits != 32):
                why = f"is beyond the {self._va_bits}-bit guest-physical reach of this TDP"
            elif self._va_bits == 32:
                why = "does not fit a 32-bit linear address"
            else:
                why = f"is not canonical for {self._va_bits}-bit linear addresses"
            raise MmuError(f"{what} {va:#x} {why}")
        return vas & np.uint64((1 << self._va_bits) - 1) if self._signed else vas

    def _leaf_level(self, page_size: int) -> int:
        if page_size not in _PAGE_SIZES:
            raise MmuError(f"page_size {page_size:#x} is not one of 4 KiB, 2 MiB, 4 MiB, 1 GiB")
        if self.kind == "ept":
            if page_size == 4 << 20 or _PAGE_SIZES[page_size] > self.role.huge_level:
                raise MmuError(f"{_page_size_name(page_size)} pages are not allowed by this EPT "
                               f"(huge_level={self.role.huge_level})")
            return _PAGE_SIZES[page_size]
        mode = self.role.mode
        if page_size == 4 << 20 and not (mode is PagingMode.BIT32 and getattr(self.role, "pse", False)):
            raise MmuError("4 MiB pages exist only in 32-bit paging with CR4.PSE=1")
        if page_size == 2 << 20 and mode is PagingMode.BIT32:
            raise MmuError("32-bit paging has 4 MiB large pages, not 2 MiB")
        if page_size == 1 << 30 and not (mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)
                                         and self.role.gbpages):
            raise MmuError("1 GiB pages need 4- or 5-level paging and gbpages=True in the role")
        return _PAGE_SIZES[page_size]

    def _encode_leaves(self, level: int, n: int, r: dict) -> np.ndarray:
        """The rights and attribute bits of ``n`` leaves at ``level`` (each right a scalar
        or an array of ``n``), with this layout's checks. EPT misconfiguration patterns
        are left to :meth:`check_leaves`, the format's own rule."""
        def col(x):
            return np.broadcast_to(np.asarray(x).astype(bool), (n,)).astype(np.uint64)
        if self.kind == "ept":
            memtype = int(r["memtype"])
            if not 0 <= memtype <= 7 or memtype in (2, 3, 7):
                raise MmuError(f"EPT memory type {memtype} is reserved (use 0 UC, 1 WC, 4 WT, "
                               f"5 WP, 6 WB)")
            xs, xu = col(r["xs"]), col(r["xs"] if r["xu"] is None else r["xu"])
            rd, wr = col(r["read"]), col(r["writable"])
            if not self.role.mbec and np.any(xu & ~xs & np.uint64(1)):
                raise MmuError("xu without MBEC is ignored by the hardware; enable mbec in the EptRole")
            present = rd | wr | xs | (xu if self.role.mbec else np.uint64(0))
            if not present.all():
                raise MmuError("an EPT leaf with no rights is not present; use unmap()")
            return (rd * np.uint64(EPT_R) | wr * np.uint64(EPT_W) | xs * np.uint64(EPT_XS)
                    | xu * np.uint64(EPT_XU) | col(r["ipat"]) * np.uint64(EPT_IPAT)
                    | col(r["accessed"]) * np.uint64(EPT_A) | col(r["dirty"]) * np.uint64(EPT_D)
                    | np.uint64((memtype << 3) | (EPT_PS if level > 1 else 0)))
        user = (self.kind == "npt") if r["user"] is None else r["user"]
        v = (np.uint64(B.PT_PRESENT | (B.PT_PAGE_SIZE if level > 1 else 0))
             | col(r["writable"]) * np.uint64(B.PT_WRITABLE) | col(user) * np.uint64(B.PT_USER)
             | col(r["pwt"]) * np.uint64(B.PT_PWT) | col(r["pcd"]) * np.uint64(B.PT_PCD)
             | col(r["global_"]) * np.uint64(B.PT_GLOBAL)
             | col(r["accessed"]) * np.uint64(B.PT_ACCESSED) | col(r["dirty"]) * np.uint64(B.PT_DIRTY)
             | col(r["pat"]) * np.uint64(B.PT_PAT_LARGE if level > 1 else B.PT_PAT_4K))
        nx = col(r["nx"])
        if nx.any():
            if self._pte == 4:
                raise MmuError("32-bit paging has no XD bit: nx=True needs PAE or long mode")
            if not self.role.nxe:
                raise MmuError("nx=True sets bit 63, which is reserved when EFER.NXE=0")
            v |= nx << np.uint64(63)
        pkey = np.broadcast_to(np.asarray(r["pkey"]), (n,))
        if np.any(pkey != 0):
            if self._pte == 4 or pkey.min() < 0 or pkey.max() > 15:
                raise MmuError("pkey must be 0..15 and needs 64-bit entries (PAE or long mode)")
            if self.role.mode is PagingMode.PAE:
                raise MmuError("pkey bits 62:59 are reserved in PAE paging")
            v |= pkey.astype(np.uint64) << np.uint64(B.PT_PKEY_SHIFT)
        return v

    def _frame_bits(self, pas: np.ndarray, level: int) -> np.ndarray:
        """Encode frame addresses into entry bits (PSE-36 for 32-bit 4 MiB pages)."""
        if self._pte == 4 and level == 2:
            hi = pas >> np.uint64(32)
            width = int(self.format.pse36_mask).bit_length()
            if np.any(hi >> np.uint64(width)):
                raise MmuError(f"physical address above PSE-36's reach ({32 + width} bits)")
            return (pas & np.uint64(0xFFC00000)) | (hi << np.uint64(13))
        limit = 1 << (32 if self._pte == 4 else int(self.format.maxphyaddr))
        if np.any(pas >= np.uint64(limit)):
            bad = int(pas[pas >= np.uint64(limit)][0])
            raise MmuError(f"physical address {bad:#x} is at or above MAXPHYADDR "
                           f"({limit.bit_length() - 1} bits)")
        return pas

    # -- map / unmap / protect -----------------------------------------------------------------
    def map(self, va: int, size: int, pa=None, *, page_size: int = 4096, writable: bool = True,
            user: bool | None = None, nx: bool = False, pkey: int = 0, pwt: bool = False,
            pcd: bool = False, pat: bool = False, global_: bool = False, accessed: bool = False,
            dirty: bool = False, asid: int = 0, read: bool = True, xs: bool = True,
            xu: bool | None = None, memtype: int = 6, ipat: bool = False) -> np.ndarray:
        """Map ``[va, va + size)`` with pages of ``page_size``.

        ``pa`` is the physical address of the first page (pages follow contiguously), an
        array of one frame address per page, or None to allocate zeroed frames from RAM.
        Re-mapping a page replaces its leaf. Returns the frame address of each page.

        x86 and NPT leaves take ``writable``, ``user`` (default False; True for NPT, where
        every access is a user access), ``nx``, ``pkey``, ``pwt``, ``pcd``, ``pat``,
        ``global_``; EPT leaves take ``read``, ``writable``, ``xs`` (execute for
        supervisor-mode linear addresses; plain X without MBEC), ``xu`` (execute for
        user-mode ones under MBEC; default = ``xs``), ``memtype`` (bits 5:3) and ``ipat``.
        ``accessed``/``dirty`` preset the A/D flags of either layout.
        """
        self._leaf_level(int(page_size))
        va_in = va
        va = self._norm_va(va)
        size = int(size)
        ps = int(page_size)
        if size <= 0 or va % ps or size % ps:
            raise MmuError(f"map({va:#x}, {size:#x}): address and size must be positive multiples "
                           f"of the page size {_page_size_name(ps)}")
        if va + size > 1 << self._va_bits:
            raise MmuError(f"map({va:#x}, {size:#x}) runs past the top of the address space")
        npages = size // ps
        if pa is None:
            first = self.alloc(size, align=ps)
            pas = np.uint64(first) + np.arange(npages, dtype=np.uint64) * np.uint64(ps)
        elif np.ndim(pa) == 0:
            pa = int(pa)
            if pa % ps or pa < 0:
                raise MmuError(f"pa {pa:#x} is not aligned to the page size {_page_size_name(ps)}")
            pas = np.uint64(pa) + np.arange(npages, dtype=np.uint64) * np.uint64(ps)
        else:
            pas = np.asarray(pa, dtype=np.uint64).reshape(-1)
            if pas.shape[0] != npages:
                raise MmuError(f"pa has {pas.shape[0]} frames for {npages} pages")
            if np.any(pas % np.uint64(ps)):
                raise MmuError(f"every frame in pa must be aligned to {_page_size_name(ps)}")
        raw = int(va_in) & ((1 << 64) - 1)          # map_pages checks the addresses as given
        vas = np.uint64(raw) + np.arange(npages, dtype=np.uint64) * np.uint64(ps)
        self.map_pages(vas, pas, page_size=ps, writable=writable, user=user, nx=nx, pkey=pkey,
                       pwt=pwt, pcd=pcd, pat=pat, global_=global_, accessed=accessed, dirty=dirty,
                       asid=asid, read=read, xs=xs, xu=xu, memtype=memtype, ipat=ipat)
        return pas

    def map_pages(self, vas, pas, *, page_size: int = 4096, writable=True, user=None, nx=False,
                  pkey=0, pwt=False, pcd=False, pat=False, global_=False, accessed=False,
                  dirty=False, asid: int = 0, read=True, xs=True, xu=None, memtype: int = 6,
                  ipat=False) -> None:
        """Map many scattered pages at once, each with its own frame and rights.

        ``vas`` and ``pas`` are arrays (one page each, aligned to ``page_size``); every
        right may be a scalar or an array of the same length, with the meanings of
        :meth:`map`. Every address is checked, and every leaf is checked against this
        Mmu's own format before anything is written (reserved bits; EPT
        misconfigurations)."""
        level = self._leaf_level(int(page_size))
        ps = np.uint64(page_size)
        vas = np.asarray(vas, dtype=np.uint64).reshape(-1)
        pas = np.asarray(pas, dtype=np.uint64).reshape(-1)
        n = vas.shape[0]
        if pas.shape[0] != n:
            raise MmuError(f"map_pages: {n} addresses but {pas.shape[0]} frames")
        if n == 0:
            return
        if np.any(vas % ps) or np.any(pas % ps):
            bad = int(np.flatnonzero((vas % ps) | (pas % ps))[0])
            raise MmuError(f"map_pages: page {bad} ({int(vas[bad]):#x} -> {int(pas[bad]):#x}) is not "
                           f"aligned to {_page_size_name(int(page_size))}")
        vas = self._norm_vas(vas)
        v = self._encode_leaves(level, n, dict(
            writable=writable, user=user, nx=nx, pkey=pkey, pwt=pwt, pcd=pcd, pat=pat,
            global_=global_, accessed=accessed, dirty=dirty, read=read, xs=xs, xu=xu,
            memtype=memtype, ipat=ipat))
        vals = self._frame_bits(pas, level) | v
        self.check_leaves(vals, level)
        self._install(vas, vals, level, asid)

    def check_leaves(self, vals, level: int) -> None:
        """Check leaf values against this Mmu's own PageFormat, as KVM checks its SPTEs
        (``is_rsvd_spte``): reserved bits, and for EPT the misconfiguration patterns."""
        vals = np.asarray(vals, dtype=np.uint64).reshape(-1)
        b7 = (vals >> np.uint64(7)) & np.uint64(1)
        rsvd = self.format.record["rsvd_bits_mask"][:, level - 1][b7.astype(np.int64)]
        bad_rsvd = (vals & rsvd) != 0
        bad_mt = np.zeros(vals.shape, dtype=bool)
        if self.kind == "ept":
            xwr = vals & np.uint64(0x3F)
            if self.role.mbec:
                xwr = xwr | np.where(vals & np.uint64(EPT_XU), np.uint64(EPT_XS), np.uint64(0))
            bad_mt = ((np.uint64(int(self.format.bad_mt_xwr)) >> xwr) & np.uint64(1)) != 0
        bad = bad_rsvd | bad_mt
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            why = (f"reserved bits {int(vals[i] & rsvd[i]):#x}" if bad_rsvd[i] else
                   "a misconfiguration pattern (write without read, execute-only without "
                   "support, or a reserved memory type)")
            raise MmuError(f"leaf {int(vals[i]):#018x} (page {i} of the call) is invalid in this "
                           f"{self.kind} format: {why}")

    def _install(self, vas: np.ndarray, vals: np.ndarray, level: int, asid: int) -> None:
        root = self._root(asid)
        pae = self.kind != "ept" and self.role.mode is PagingMode.PAE
        table_flags = EPT_TABLE if self.kind == "ept" else B.PT_PRESENT | B.PT_WRITABLE | B.PT_USER
        top_flags = B.PT_PRESENT if pae else table_flags
        vas_i = vas.view(np.int64)
        vals_i = vals.view(np.int64)
        status = np.zeros(vas.shape[0], dtype=np.uint8)
        done = 0
        while done < vas.shape[0]:
            nxt, stop = K.map_leaves(self._ram, self.ram_base, root, vas_i[done:], vals_i[done:],
                                     level, self._top, self._pte, self._bits, self._addr_mask,
                                     table_flags, top_flags, pae, int(self.format.leaf_levels),
                                     self._next, self._limit, status[done:])
            self._next = int(nxt)
            bad = np.flatnonzero(status[done:done + stop] != K.S_OK)
            if bad.size:
                j = done + int(bad[0])
                why = {K.S_LARGE_ABOVE: "a large page above it covers that address: unmap it first",
                       K.S_TABLE_BELOW: "a page table is mapped there: unmap the smaller pages first",
                       K.S_OUTSIDE: "an existing entry on the way points outside guest RAM"}
                raise MmuError(f"cannot map {int(vas[j]):#x}: {why[int(status[j])]} "
                               f"({int(bad.size)} page(s) of this call not mapped)")
            done += int(stop)
            if done < vas.shape[0]:
                raise MmuError(f"guest RAM exhausted while building tables at {int(vas[done]):#x} "
                               f"(RAM {self.ram_size:#x} bytes, {self.allocated:#x} used); "
                               f"use a larger ram_size")

    def _update(self, va: int, size: int, and_mask: int, or_mask: int, asid: int, what: str) -> int:
        va = self._norm_va(va)
        size = int(size)
        if size <= 0 or va % 4096 or size % 4096:
            raise MmuError(f"{what}({va:#x}, {size:#x}): address and size must be 4 KiB multiples")
        st, at, pages = K.update_leaves(self._ram, self.ram_base, self._root(asid), va, va + size,
                                        self._top, self._pte, self._bits, self._addr_mask,
                                        self.kind != "ept" and self.role.mode is PagingMode.PAE,
                                        np.int64(np.uint64(and_mask & (2**64 - 1)).view(np.int64)),
                                        np.int64(np.uint64(or_mask).view(np.int64)),
                                        int(self.format.leaf_levels))
        if st != 0:
            raise MmuError(f"{what}({va:#x}, {size:#x}) cuts the large page at {int(at):#x}; "
                           f"{what} whole large pages (pages before it were already changed)")
        return int(pages)

    def unmap(self, va: int, size: int, *, asid: int = 0) -> int:
        """Clear every leaf in ``[va, va + size)``; returns how many leaves were cleared.
        Tables are kept (as Linux keeps them); their frames are not reused."""
        return self._update(va, size, 0, 0, asid, "unmap")

    def protect(self, va: int, size: int, *, writable: bool | None = None, user: bool | None = None,
                nx: bool | None = None, pkey: int | None = None, read: bool | None = None,
                xs: bool | None = None, xu: bool | None = None, asid: int = 0) -> int:
        """Change the rights of every present leaf in ``[va, va + size)``; None leaves a
        right as it is (x86/NPT: writable, user, nx, pkey; EPT: read, writable, xs, xu).
        Returns how many leaves changed."""
        and_mask, or_mask = (1 << 64) - 1, 0
        if self.kind == "ept":
            if user is not None or nx is not None or pkey is not None:
                raise MmuError("EPT leaves have read/writable/xs/xu rights, not user/nx/pkey")
            for flag, bit in ((read, EPT_R), (writable, EPT_W), (xs, EPT_XS), (xu, EPT_XU)):
                if flag is not None:
                    and_mask &= ~bit
                    or_mask |= bit if flag else 0
            return self._update(va, size, and_mask & ((1 << 64) - 1), or_mask, asid, "protect")
        if read is not None or xs is not None or xu is not None:
            raise MmuError("read/xs/xu are EPT rights; x86 and NPT leaves take writable/user/nx")
        for flag, bit in ((writable, B.PT_WRITABLE), (user, B.PT_USER)):
            if flag is not None:
                and_mask &= ~bit
                or_mask |= bit if flag else 0
        if nx is not None:
            if nx and (self._pte == 4 or not self.role.nxe):
                raise MmuError("nx=True needs 64-bit entries and EFER.NXE=1")
            and_mask &= ~B.PT_NX
            or_mask |= B.PT_NX if nx else 0
        if pkey is not None:
            if self._pte == 4 or self.kind != "cpu" or self.role.mode is PagingMode.PAE \
                    or not 0 <= pkey <= 15:
                raise MmuError("pkey must be 0..15 and needs 4- or 5-level paging")
            and_mask &= ~B.PT_PKEY_MASK
            or_mask |= int(pkey) << B.PT_PKEY_SHIFT
        return self._update(va, size, and_mask & ((1 << 64) - 1), or_mask, asid, "protect")

    # -- single entries (tests, what-if, teaching) ------------------------------------------------
    def entry_address(self, va: int, level: int, asid: int = 0) -> int:
        """Physical address of the entry that maps ``va`` at ``level`` (the tables above must
        exist and be present). PAE level 3 is the PDPTE in the PDPT page."""
        va = self._norm_va(va)
        if not 1 <= level <= self._top:
            raise MmuError(f"level must be 1..{self._top}")
        table = self._root(asid)
        for lvl in range(self._top, level - 1, -1):
            shift = 12 + (lvl - 1) * self._bits
            ea = table + ((va >> shift) & ((1 << self._bits) - 1)) * self._pte
            if lvl == level:
                return ea
            e = self.read_entry_at(ea)
            if not e & B.PT_PRESENT:
                raise MmuError(f"no table below level {lvl} for {va:#x} (entry at {ea:#x} is not present)")
            if lvl <= 3 and e & B.PT_PAGE_SIZE and not (self.kind != "ept" and lvl == 3
                                                          and self.role.mode is PagingMode.PAE):
                raise MmuError(f"{va:#x} is mapped by a large page at level {lvl}")
            table = e & self._addr_mask
        raise AssertionError("unreachable")

    def read_entry_at(self, addr: int) -> int:
        return self.mem.read_u32(addr) if self._pte == 4 else self.mem.read_u64(addr)

    def write_entry_at(self, addr: int, value: int) -> None:
        (self.mem.write_u32 if self._pte == 4 else self.mem.write_u64)(addr, value)

    def get_entry(self, va: int, level: int, asid: int = 0) -> int:
        return self.read_entry_at(self.entry_address(va, level, asid))

    def set_entry(self, va: int, level: int, value: int | None = None, *, set_bits: int = 0,
                  clear_bits: int = 0, asid: int = 0) -> int:
        """Overwrite (``value``) or edit (``set_bits``/``clear_bits``) one entry, without any
        check: this is how to build reserved bits, loops and odd upper-level rights.
        Returns the new value."""
        ea = self.entry_address(va, level, asid)
        old = self.read_entry_at(ea)
        new = old if value is None else int(value)
        new = (new | set_bits) & ~clear_bits
        self.write_entry_at(ea, new)
        return new

    def pdptes(self, asid: int = 0) -> np.ndarray:
        """The four PAE PDPTEs of an address space as they are in memory."""
        if self.kind == "ept" or self.role.mode is not PagingMode.PAE:
            raise MmuError("PDPTEs exist only in PAE paging")
        root = self._root(asid)
        return np.array([self.mem.read_u64(root + 8 * i) for i in range(4)], dtype=np.uint64)

    # -- walking what was built -----------------------------------------------------------------
    def walker(self, *, semantics: str = "hardware", pkru: int = 0, mem: PhysMem | None = None,
               tdp=None):
        """A :class:`~vecmmu.walk.PageWalk` over these tables (every address space): a
        cpu_walk, or a tdp_walk for EPT/NPT tables. ``tdp`` (a tdp_walk) and ``mem``
        (host memory) make the 2-D walk of a nested guest."""
        from .walk import PageWalk
        if self.kind != "cpu":
            return PageWalk(self.role, mem or self.mem, self.cr3(0), semantics=semantics)
        return PageWalk(self.role, mem or self.mem, cr3=[self.cr3(a) for a in range(len(self.roots))],
                        semantics=semantics, pkru=pkru, tdp=tdp)

    def __repr__(self) -> str:
        return (f"Mmu({self.role}, {len(self.roots)} address space(s), "
                f"{self.allocated:#x} of {self.ram_size:#x} bytes of RAM allocated)")
