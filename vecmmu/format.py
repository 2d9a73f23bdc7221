"""PageFormat: what an entry of one page-table format means (KVM's ``kvm_page_format``).

A format is pure data computed from a role, memoised per role:

* ``rsvd_bits_mask[bit7][level-1]`` (u64): bits that must be zero in an entry at
  ``level`` whose bit 7 is ``bit7`` (``__reset_rsvds_bits_mask``);
* ``permissions[16]`` (u16): row ``pfec >> 1``, bit ``acc`` set when a page with ACC rights
  ``acc`` faults for that access (``update_permission_bitmask``); the RSVD slot of the row
  index carries "SMAP overridden";
* ``pkru_mask`` (u32): which PKRU bits apply to which access (``update_pkru_bitmask``);
* the geometry: root level, entry width, index bits, address masks, which levels may hold
  a large leaf, and the flags that differ between hardware and KVM semantics.

A :class:`PageFormat` is one record of :data:`FORMAT_DTYPE`, so K formats stack into one
array (``np.stack([f.record for f in fmts])``) and save with ``np.save``.
"""
from __future__ import annotations

import functools

import numpy as np

from . import bits as B
from .bits import PagingMode
from .role import CpuRole

SEMANTICS = ("hardware", "kvm")

# Format flags (``FORMAT_DTYPE['flags']``).
FMT_PFERR_FETCH = 1 << 0     # fetch faults report I/D (error-code bit 4)
FMT_PKE = 1 << 1             # protection keys apply (CR4.PKE in long mode)
FMT_64BIT = 1 << 2           # 64-bit entries (PAE, 4-level, 5-level)
FMT_KVM = 1 << 3             # built for semantics="kvm"
FMT_EPT = 1 << 4             # EPT entry layout (R/W/XS/XU, memory type, bad_mt_xwr)
FMT_MBEC = 1 << 5            # EPT mode-based execute control: XU makes an entry present
FMT_EPT_AD = 1 << 6          # EPTP bit 6: EPT A/D flags; guest table accesses are writes
FMT_ADV_INFO = 1 << 7        # advanced VM-exit information (qualification bits 9-11)
FMT_PDPTE_MEM = 1 << 8       # PAE: PDPTEs read from memory on every walk (NPT; AMD guests, R10)
FMT_PDPTE_RSVD = 1 << 9      # ... and their reserved bits checked there (hardware reading, R10)
FMT_NPT = 1 << 10            # AMD nested page tables (x86 layout, user accesses)
FMT_GMET = 1 << 11           # NPT guest-mode execute trap: U/S restricts only fetches

FORMAT_DTYPE = np.dtype([
    ("rsvd_bits_mask", "<u8", (2, 5)),   # [bit 7 of the entry][level - 1]
    ("bad_mt_xwr", "<u8"),               # EPT only; 0 for x86 formats
    ("permissions", "<u2", (16,)),       # row = pfec >> 1 (SMAP-override in the RSVD slot)
    ("pkru_mask", "<u4"),
    ("root_level", "u1"),                # 0 (paging off), 2, 3 (PAE), 4, 5
    ("pte_size", "u1"),                  # bytes per entry: 4 or 8
    ("index_bits", "u1"),                # 10 or 9
    ("va_bits", "u1"),                   # canonical width: 32, 48 or 57
    ("leaf_levels", "u1"),               # bit L set: bit 7 at level L ends the walk
    ("maxphyaddr", "u1"),
    ("flags", "<u4"),
    ("addr_mask", "<u8"),                # entry bits that hold a table/frame address
    ("nx_flip", "<u8"),                  # XOR-ed into entries so XD accumulates like W/U
    ("exec_force", "<u8"),               # OR-ed after the flip: 32-bit entries are always executable
    ("pse36_mask", "<u8"),               # 32-bit 4 MiB leaf: (pde >> 13) & mask gives PA bits 32+
])

#: Layout of the parameter tuple that kernels receive (indices into it).
P_ROOT_LEVEL, P_PTE_SIZE, P_INDEX_BITS, P_VA_BITS, P_LEAF_LEVELS, P_FLAGS, P_ADDR_MASK, \
    P_NX_FLIP, P_EXEC_FORCE, P_PSE36_MASK, P_PKRU_MASK, P_BAD_MT_XWR = range(12)
N_PARAMS = 12


# --- generators (one function per KVM generator) ------------------------------------------

def permission_table(*, tdp: bool = False, ept: bool = False, smep: bool = False,
                     smap: bool = False, wp: bool = True, nx: bool = True) -> np.ndarray:
    """``permissions[16]`` as ``__update_permission_bitmask`` fills it.

    Row index bits: 0 = W, 1 = U, 2 = SMAP overridden (the RSVD slot), 3 = F (fetch).
    Column ``a`` (a bit of the u16 row) is the page's ACC rights: 1 = R, 2 = W,
    4 = U (EPT: XU), 8 = X (EPT: XS). A set bit means *fault*.
    """
    idx = np.arange(16)[:, None]
    a = np.arange(16)[None, :]
    W, U, O, F = (idx & 1) != 0, (idx & 2) != 0, (idx & 4) != 0, (idx & 8) != 0
    r, w, u, x = (a & 1) != 0, (a & 2) != 0, (a & 4) != 0, (a & 8) != 0
    fault = ~W & ~F & ~r                                    # reads need R (EPT; always R on x86)
    if ept:
        fault |= W & ~w
        if smep:                                            # MBEC: XU for user-mode addresses
            fault |= F & np.where(U, ~u, ~x)
        else:
            fault |= F & ~x
    else:
        fault |= W & ~w & (U | wp)                          # CR0.WP=0: supervisor writes ignore W
        if not (tdp and smep):                              # NPT with GMET: U does not block data
            fault |= U & ~u
        if nx:
            fault |= F & ~x
        if smep:                                            # SMEP (or GMET): no supervisor fetch
            fault |= F & ~U & u                             # from a user page
        if smap:                                            # SMAP: no supervisor data access to
            fault |= ~F & ~O & ~U & u                       # a user page unless overridden
    rows = (fault.astype(np.uint32) << a.astype(np.uint32)).sum(axis=1)
    return rows.astype(np.uint16)


def pkru_bitmask(*, pke: bool, wp: bool) -> int:
    """``pkru_mask`` as ``update_pkru_bitmask`` builds it (0 unless PKE in long mode).

    Two bits per error-code value ``pfec`` (even, 0..30), at bit position ``pfec``:
    bit 0 = AD applies, bit 1 = WD applies. The RSVD slot of ``pfec`` is the page's U bit.
    """
    if not pke:
        return 0
    mask = 0
    for i in range(16):
        pfec = i << 1
        W, U = pfec & B.PFERR_WRITE, pfec & B.PFERR_USER
        F, page_user = pfec & B.PFERR_FETCH, pfec & B.PFERR_RSVD
        check_pkey = bool(not F and page_user)
        check_write = check_pkey and bool(W) and (bool(U) or wp)
        mask |= ((int(check_write) << 1) | int(check_pkey)) << pfec
    return mask


def reserved_bits_masks(role: CpuRole, semantics: str = "hardware") -> np.ndarray:
    """``rsvd_bits_mask[2][5]`` for a guest x86 format (``__reset_rsvds_bits_mask``)."""
    m = np.zeros((2, 5), dtype=np.uint64)
    mode, maxpa = role.mode, role.maxphyaddr
    if mode is PagingMode.NONE:
        return m
    if mode is PagingMode.BIT32:
        if role.pse:
            if semantics == "kvm":                         # K6: bits 21:17, PA bits 35:32 only
                m[1][1] = B.bits(21, 17)
            else:                                          # R14: M' = min(MAXPHYADDR, 40)
                mprime = min(maxpa, 40)
                m[1][1] = B.bits(21, mprime - 19)
        return m
    hi = B.bits(62 if mode is PagingMode.PAE else 51, maxpa)
    if not role.nxe:
        hi |= B.PT_NX
    g = B.bits(7, 7) if not role.gbpages else 0
    a8 = B.bits(8, 8) if role.vendor == "amd" else 0
    # levels 1 and 2 are common to PAE and long mode
    m[0][0] = m[1][0] = hi                                 # 4 KiB PTE (bit 7 = PAT)
    m[0][1] = hi
    m[1][1] = hi | B.bits(20, 13)                          # 2 MiB leaf (bit 12 = PAT)
    if mode is PagingMode.PAE:
        # PDPTEs are registers checked at load time (load_pdptes); the walk checks only P.
        m[0][2] = m[1][2] = B.PT_NX | hi | B.bits(8, 5) | B.bits(2, 1)
        return m
    m[0][2] = hi | g
    m[1][2] = hi | g | B.bits(29, 13)                      # 1 GiB leaf
    m[0][3] = m[1][3] = hi | a8 | B.bits(7, 7)             # PML4E: bit 7 reserved (AMD: 8:7)
    if mode is PagingMode.LEVEL5:
        m[0][4] = m[1][4] = hi | a8 | B.bits(7, 7)         # PML5E
    return m


def ept_reserved_bits_masks(role) -> np.ndarray:
    """``rsvd_bits_mask[2][5]`` for EPT (``__reset_rsvds_bits_mask_ept``)."""
    m = np.zeros((2, 5), dtype=np.uint64)
    hi = B.bits(51, role.maxphyaddr)
    gb = B.bits(7, 7) if role.huge_level < 3 else 0
    mb = B.bits(7, 7) if role.huge_level < 2 else 0
    m[0][4] = m[1][4] = hi | B.bits(7, 3)
    m[0][3] = m[1][3] = hi | B.bits(7, 3)
    m[0][2] = hi | B.bits(6, 3) | gb
    m[1][2] = hi | B.bits(29, 12) | gb                     # 1 GiB leaf (no PAT in EPT)
    m[0][1] = hi | B.bits(6, 3) | mb
    m[1][1] = hi | B.bits(20, 12) | mb                     # 2 MiB leaf
    m[0][0] = m[1][0] = hi                                 # bit 7 ignored at level 1
    return m


def bad_mt_xwr_mask(execonly: bool) -> int:
    """Bit ``(memtype << 3) | XWR`` set when that combination is an EPT misconfiguration:
    memory types 2, 3 and 7; write-only (010) and write+execute (110); execute-only
    (100) without execute-only support."""
    mask = 0
    for mt in (2, 3, 7):
        mask |= 0xFF << (mt * 8)
    for mt in range(8):
        mask |= (1 << (mt * 8 + 0b010)) | (1 << (mt * 8 + 0b110))
        if not execonly:
            mask |= 1 << (mt * 8 + 0b100)
    return mask


def has_pferr_fetch(role: CpuRole, semantics: str = "hardware") -> bool:
    """Whether a fetch fault sets the I/D bit (K5)."""
    if semantics == "kvm":
        return role.nxe or role.smep
    return role.smep or (role.nxe and role.mode in (PagingMode.PAE, PagingMode.LEVEL4,
                                                    PagingMode.LEVEL5))


# --- the format record ------------------------------------------------------------------

class PageFormat:
    """One page-table format: a read-only record of :data:`FORMAT_DTYPE` plus its role.

    Use :meth:`for_cpu` (memoised per role and semantics) rather than the constructor.
    """

    __slots__ = ("record", "role", "semantics", "_params")

    def __init__(self, record: np.ndarray, role=None, semantics: str = "hardware"):
        if record.dtype != FORMAT_DTYPE or record.shape != ():
            raise TypeError("PageFormat wants a 0-d record of FORMAT_DTYPE")
        record.flags.writeable = False
        self.record = record
        self.role = role
        self.semantics = semantics
        self._params = None

    @classmethod
    def for_cpu(cls, role: CpuRole, semantics: str = "hardware", *,
                pdpte_from_memory: bool = False) -> "PageFormat":
        """The guest (cpu_walk) format for ``role``. ``pdpte_from_memory``: PAE PDPTEs are
        read from memory on every walk (an AMD guest under NPT, reading R10) instead of
        coming from the PDPTE registers."""
        _check_semantics(semantics)
        return _cpu_format(role, semantics, bool(pdpte_from_memory))

    @classmethod
    def for_ept(cls, role, semantics: str = "hardware") -> "PageFormat":
        """The EPT (tdp_walk) format for an :class:`~vecmmu.role.EptRole`."""
        _check_semantics(semantics)
        return _ept_format(role, semantics)

    @classmethod
    def for_npt(cls, role, semantics: str = "hardware") -> "PageFormat":
        """The NPT (tdp_walk) format for an :class:`~vecmmu.role.NptRole`."""
        _check_semantics(semantics)
        return _npt_format(role, semantics)

    @classmethod
    def for_tdp(cls, role, semantics: str = "hardware") -> "PageFormat":
        return cls.for_ept(role, semantics) if role.kind == "ept" else cls.for_npt(role, semantics)

    # field access reads like KVM
    def __getattr__(self, name):
        if name in FORMAT_DTYPE.names:
            v = self.record[name]
            return v if v.shape else v.item()
        raise AttributeError(name)

    @property
    def flags(self) -> int:
        return int(self.record["flags"])

    def params(self) -> tuple:
        """The format's scalars as the tuple of int64 kernels take (see ``P_*``)."""
        if self._params is None:
            r = self.record
            vals = [r["root_level"], r["pte_size"], r["index_bits"], r["va_bits"], r["leaf_levels"],
                    r["flags"], r["addr_mask"], r["nx_flip"], r["exec_force"], r["pse36_mask"],
                    r["pkru_mask"], r["bad_mt_xwr"]]
            self._params = tuple(np.int64(np.uint64(int(v)).view(np.int64)) for v in vals)
        return self._params

    def rsvd_table(self) -> np.ndarray:
        return np.ascontiguousarray(self.record["rsvd_bits_mask"]).view(np.int64)

    def perm_table(self) -> np.ndarray:
        return np.ascontiguousarray(self.record["permissions"])

    def __repr__(self) -> str:
        return f"PageFormat({self.role}, semantics={self.semantics!r})"

    def describe(self) -> str:
        """A readable dump of every table (for notebooks and bug reports)."""
        r = self.record
        lines = [repr(self),
                 f"  root level {r['root_level']}, {r['pte_size']}-byte entries, "
                 f"{r['index_bits']} index bits, {r['va_bits']}-bit linear addresses",
                 f"  pkru_mask {int(r['pkru_mask']):#010x}, flags {int(r['flags']):#x}"]
        for lvl in range(5, 0, -1):
            m0, m1 = int(r["rsvd_bits_mask"][0][lvl - 1]), int(r["rsvd_bits_mask"][1][lvl - 1])
            if m0 or m1:
                lines.append(f"  rsvd L{lvl}: [bit7=0] {m0:#018x}  [bit7=1] {m1:#018x}")
        lines.append("  permissions: " + " ".join(f"{int(x):04x}" for x in r["permissions"]))
        return "\n".join(lines)


def _check_semantics(semantics):
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")


@functools.lru_cache(maxsize=256)
def _cpu_format(role: CpuRole, semantics: str, pdpte_from_memory: bool = False) -> PageFormat:
    rec = np.zeros((), dtype=FORMAT_DTYPE)
    mode = role.mode
    rec["root_level"] = int(mode)
    rec["maxphyaddr"] = role.maxphyaddr
    rec["rsvd_bits_mask"] = reserved_bits_masks(role, semantics)
    flags = FMT_KVM if semantics == "kvm" else 0
    if mode is PagingMode.NONE:
        rec["permissions"] = 0       # nonpaging_gva_to_gpa checks nothing
        rec["pte_size"], rec["index_bits"], rec["va_bits"] = 0, 0, 32
        rec["flags"] = flags
        return PageFormat(rec, role, semantics)
    rec["permissions"] = permission_table(smep=role.smep, smap=role.smap, wp=role.wp, nx=role.nxe)
    rec["pkru_mask"] = pkru_bitmask(pke=role.pke, wp=role.wp)
    if has_pferr_fetch(role, semantics):
        flags |= FMT_PFERR_FETCH
    if role.pke:
        flags |= FMT_PKE
    if mode is PagingMode.BIT32:
        rec["pte_size"], rec["index_bits"], rec["va_bits"] = 4, 10, 32
        rec["addr_mask"] = B.bits(31, 12)
        rec["nx_flip"] = 0
        rec["exec_force"] = B.PT_NX                          # no XD bit: always executable
        rec["leaf_levels"] = (1 << 2) if role.pse else 0
        if role.pse:
            width = 4 if semantics == "kvm" else max(min(role.maxphyaddr, 40) - 32, 0)
            rec["pse36_mask"] = (1 << width) - 1
    else:
        flags |= FMT_64BIT
        rec["pte_size"], rec["index_bits"] = 8, 9
        rec["va_bits"] = {PagingMode.PAE: 32, PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}[mode]
        rec["addr_mask"] = B.bits(51, 12)
        rec["nx_flip"] = B.PT_NX
        rec["exec_force"] = 0
        rec["leaf_levels"] = 0b111100                       # bit 7 ends the walk above level 1
        if mode is PagingMode.PAE and pdpte_from_memory:
            flags |= FMT_PDPTE_MEM
            if semantics == "hardware":
                flags |= FMT_PDPTE_RSVD
    rec["flags"] = flags
    return PageFormat(rec, role, semantics)


@functools.lru_cache(maxsize=64)
def _ept_format(role, semantics: str) -> PageFormat:
    rec = np.zeros((), dtype=FORMAT_DTYPE)
    rec["root_level"] = role.levels
    rec["maxphyaddr"] = role.maxphyaddr
    rec["rsvd_bits_mask"] = ept_reserved_bits_masks(role)
    rec["bad_mt_xwr"] = bad_mt_xwr_mask(role.execonly)
    rec["permissions"] = permission_table(tdp=True, ept=True, smep=role.mbec)
    rec["pte_size"], rec["index_bits"], rec["va_bits"] = 8, 9, role.gpa_bits
    rec["addr_mask"] = B.bits(51, 12)
    rec["leaf_levels"] = 0b1100
    flags = FMT_EPT | FMT_64BIT | (FMT_KVM if semantics == "kvm" else 0)
    flags |= (FMT_MBEC if role.mbec else 0) | (FMT_EPT_AD if role.ad else 0)
    flags |= FMT_ADV_INFO if role.advanced_info else 0
    rec["flags"] = flags
    return PageFormat(rec, role, semantics)


@functools.lru_cache(maxsize=64)
def _npt_format(role, semantics: str) -> PageFormat:
    cpu = role.cpu_role()
    base = _cpu_format(cpu, semantics, True)
    rec = base.record.copy()
    rec["permissions"] = permission_table(tdp=True, smep=role.gmet, smap=False, wp=True, nx=role.nxe)
    rec["pkru_mask"] = 0
    flags = (int(rec["flags"]) & ~(FMT_PFERR_FETCH | FMT_PKE)) | FMT_NPT
    flags |= FMT_GMET if role.gmet else 0
    # #NPF I/D: hardware sets it for every code fetch (K7); KVM from L1's NXE or SMEP
    if semantics == "hardware" or role.nxe or role.l1_smep:
        flags |= FMT_PFERR_FETCH
    rec["flags"] = flags
    return PageFormat(rec, role, semantics)


def stack_formats(formats) -> np.ndarray:
    """Stack several formats into one structured array (for sweeps and ``np.save``)."""
    return np.stack([f.record for f in formats])
