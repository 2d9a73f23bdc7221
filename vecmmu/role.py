"""CpuRole: the architectural state that shapes a guest page-table walk.

KVM packs CR0/CR4/EFER into ``cpu_role`` (``kvm_calc_cpu_role``) and rebuilds the page
format only when that word changes; :class:`CpuRole` is the same idea as a frozen,
hashable dataclass, so formats are memoised per role.

Inputs a memory dump does not carry have stated defaults: ``maxphyaddr=52`` (no
address bit reserved below bit 52), ``gbpages=True``, ``vendor="intel"``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from . import bits as B
from .bits import PagingMode

DEFAULT_MAXPHYADDR = 52

_MODE_ALIASES = {
    "none": PagingMode.NONE, "off": PagingMode.NONE, "nopaging": PagingMode.NONE,
    "32": PagingMode.BIT32, "32bit": PagingMode.BIT32, "32-bit": PagingMode.BIT32,
    "pae": PagingMode.PAE,
    "4": PagingMode.LEVEL4, "4level": PagingMode.LEVEL4, "4-level": PagingMode.LEVEL4,
    "5": PagingMode.LEVEL5, "5level": PagingMode.LEVEL5, "5-level": PagingMode.LEVEL5,
}


class RegisterError(ValueError):
    """An impossible or unsupported combination of control registers."""


def parse_mode(mode) -> PagingMode:
    if isinstance(mode, PagingMode):
        return mode
    key = str(mode).lower().replace("_", "").replace(" ", "")
    if key not in _MODE_ALIASES:
        raise ValueError(f"unknown paging mode {mode!r}; use one of "
                         f"'none', '32bit', 'pae', '4level', '5level'")
    return _MODE_ALIASES[key]


@dataclass(frozen=True)
class CpuRole:
    """What a guest walk depends on (besides CR3, PKRU and memory).

    Build one from registers with :meth:`from_regs`, or from a mode name with
    :meth:`for_mode`. Fields are plain booleans so a role reads like the SDM.
    """
    mode: PagingMode
    wp: bool = True           # CR0.WP
    pse: bool = False         # CR4.PSE (32-bit paging only)
    smep: bool = False        # CR4.SMEP
    smap: bool = False        # CR4.SMAP
    pke: bool = False         # CR4.PKE and long mode
    pcide: bool = False       # CR4.PCIDE
    nxe: bool = False         # EFER.NXE
    maxphyaddr: int = DEFAULT_MAXPHYADDR
    gbpages: bool = True      # CPUID 1 GiB pages
    vendor: str = "intel"     # "intel" or "amd" (AMD: PML4E/PML5E bit 8 reserved)

    def __post_init__(self):
        object.__setattr__(self, "mode", parse_mode(self.mode))
        if not 32 <= int(self.maxphyaddr) <= 52:
            raise RegisterError(f"maxphyaddr must be in 32..52, got {self.maxphyaddr}")
        if self.vendor not in ("intel", "amd"):
            raise RegisterError(f"vendor must be 'intel' or 'amd', got {self.vendor!r}")
        long_mode = self.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)
        if self.pke and not long_mode:
            object.__setattr__(self, "pke", False)      # ignored (legal) outside long mode
        if self.pcide and not long_mode:
            raise RegisterError("CR4.PCIDE=1 requires IA-32e (long) mode")
        if self.mode is not PagingMode.BIT32 and self.pse and self.mode is not PagingMode.NONE:
            object.__setattr__(self, "pse", False)      # CR4.PSE only matters for 32-bit paging

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_regs(cls, cr0: int, cr4: int, efer: int = 0, *, maxphyaddr: int = DEFAULT_MAXPHYADDR,
                  gbpages: bool = True, vendor: str = "intel") -> "CpuRole":
        """Decode CR0, CR4 and EFER as ``kvm_calc_cpu_role`` does, rejecting impossible states.

        Long mode is EFER.LMA, or EFER.LME with CR0.PG (the value LMA takes once paging is
        on). LA57 and PKE are ignored when not in long mode.
        """
        cr0, cr4, efer = int(cr0), int(cr4), int(efer)
        pe, pg = bool(cr0 & B.CR0_PE), bool(cr0 & B.CR0_PG)
        pae = bool(cr4 & B.CR4_PAE)
        lma = bool(efer & B.EFER_LMA) or (bool(efer & B.EFER_LME) and pg)
        if pg and not pe:
            raise RegisterError(f"CR0={cr0:#x}: PG=1 requires PE=1")
        if lma and not pg:
            raise RegisterError(f"EFER={efer:#x}: LMA=1 requires CR0.PG=1 (CR0={cr0:#x})")
        if lma and not pae:
            raise RegisterError(f"EFER={efer:#x}: long mode requires CR4.PAE=1 (CR4={cr4:#x})")
        if not pg:
            mode = PagingMode.NONE
        elif lma:
            mode = PagingMode.LEVEL5 if cr4 & B.CR4_LA57 else PagingMode.LEVEL4
        elif pae:
            mode = PagingMode.PAE
        else:
            mode = PagingMode.BIT32
        return cls(mode=mode, wp=bool(cr0 & B.CR0_WP), pse=bool(cr4 & B.CR4_PSE),
                   smep=bool(cr4 & B.CR4_SMEP), smap=bool(cr4 & B.CR4_SMAP),
                   pke=bool(cr4 & B.CR4_PKE) and lma, pcide=bool(cr4 & B.CR4_PCIDE),
                   nxe=bool(efer & B.EFER_NXE), maxphyaddr=maxphyaddr, gbpages=gbpages,
                   vendor=vendor)

    @classmethod
    def for_mode(cls, mode="4level", **kw) -> "CpuRole":
        """A role for ``mode`` ('none', '32bit', 'pae', '4level', '5level').

        Defaults suit a modern kernel: CR0.WP=1, EFER.NXE=1 where NX exists (PAE and
        long mode), CR4.PSE=1 for 32-bit paging; SMEP, SMAP and PKE off unless asked.
        """
        mode = parse_mode(mode)
        kw.setdefault("nxe", mode in (PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5))
        kw.setdefault("pse", mode is PagingMode.BIT32)
        return cls(mode=mode, **kw)

    def replace(self, **kw) -> "CpuRole":
        return replace(self, **kw)

    # -- derived -----------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return int(self.mode)

    @property
    def paging(self) -> bool:
        return self.mode is not PagingMode.NONE

    @property
    def long_mode(self) -> bool:
        return self.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)

    def registers(self) -> dict:
        """CR0, CR4 and EFER values that produce this role (for tests and emulators)."""
        cr0 = B.CR0_PE | (B.CR0_PG if self.paging else 0) | (B.CR0_WP if self.wp else 0)
        cr4 = ((B.CR4_PSE if self.pse else 0) | (B.CR4_SMEP if self.smep else 0)
               | (B.CR4_SMAP if self.smap else 0) | (B.CR4_PKE if self.pke else 0)
               | (B.CR4_PCIDE if self.pcide else 0))
        efer = B.EFER_NXE if self.nxe else 0
        if self.mode in (PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5):
            cr4 |= B.CR4_PAE
        if self.long_mode:
            efer |= B.EFER_LME | B.EFER_LMA
        if self.mode is PagingMode.LEVEL5:
            cr4 |= B.CR4_LA57
        return {"cr0": cr0, "cr4": cr4, "efer": efer}

    def root_mask(self) -> int:
        """Bits of CR3 that hold the root table address (PCID and flag bits excluded;
        bits at or above MAXPHYADDR are masked, not a fault: reading R15)."""
        if self.mode is PagingMode.BIT32:
            return B.bits(31, 12)
        if self.mode is PagingMode.PAE:
            return B.bits(31, 5)
        return B.bits(self.maxphyaddr - 1, 12)

    def __str__(self) -> str:
        flags = [n for n in ("wp", "pse", "smep", "smap", "pke", "pcide", "nxe") if getattr(self, n)]
        return (f"CpuRole({B.MODE_NAMES[self.mode]}, {'+'.join(flags) or 'no flags'}, "
                f"maxphyaddr={self.maxphyaddr}, {'1G' if self.gbpages else 'no 1G'}, {self.vendor})")


# --- TDP roles (the nested walker's side: EPT on Intel, NPT on AMD) -----------------------

@dataclass(frozen=True)
class EptRole:
    """What an EPT walk depends on besides the root: from EPTP and the VMX capabilities.

    ``levels`` 4 or 5 (EPTP bits 5:3 = 3 or 4); ``ad`` = EPTP bit 6 (EPT A/D flags; guest
    paging-structure accesses then count as writes); ``execonly`` = execute-only pages
    supported (VMX EPT cap bit 0); ``mbec`` = mode-based execute control (XS = bit 2 for
    supervisor-mode linear addresses, XU = bit 10 for user-mode ones); ``huge_level`` = the
    largest leaf (1 = 4 KiB only, 2 = 2 MiB, 3 = 1 GiB); ``advanced_info`` = advanced
    VM-exit information (exit-qualification bits 9-11; on whenever MBEC is, by default);
    ``maxphyaddr`` = the host's.
    """
    levels: int = 4
    ad: bool = False
    execonly: bool = True
    mbec: bool = False
    huge_level: int = 3
    advanced_info: bool | None = None
    maxphyaddr: int = DEFAULT_MAXPHYADDR

    def __post_init__(self):
        if self.levels not in (4, 5):
            raise RegisterError(f"EPT walk length must be 4 or 5 levels, got {self.levels}")
        if self.huge_level not in (1, 2, 3):
            raise RegisterError(f"huge_level must be 1, 2 or 3, got {self.huge_level}")
        if not 32 <= int(self.maxphyaddr) <= 52:
            raise RegisterError(f"maxphyaddr must be in 32..52, got {self.maxphyaddr}")
        if self.advanced_info is None:
            object.__setattr__(self, "advanced_info", bool(self.mbec))

    kind = "ept"

    @classmethod
    def from_eptp(cls, eptp: int, **kw) -> "EptRole":
        """Decode and check an EPTP value (the VM-entry checks, reading R8): memory type 0
        (UC) or 6 (WB), walk length 4 or 5, bits 11:7 zero, no bit at or above MAXPHYADDR."""
        eptp = int(eptp)
        maxpa = int(kw.get("maxphyaddr", DEFAULT_MAXPHYADDR))
        mt, walk = eptp & 7, ((eptp >> 3) & 7) + 1
        if mt not in (0, 6):
            raise RegisterError(f"EPTP={eptp:#x}: memory type {mt} is not UC (0) or WB (6)")
        if walk not in (4, 5):
            raise RegisterError(f"EPTP={eptp:#x}: walk length {walk} is not 4 or 5")
        if eptp & B.bits(11, 7):
            raise RegisterError(f"EPTP={eptp:#x}: bits 11:7 must be zero")
        if eptp >> maxpa:
            raise RegisterError(f"EPTP={eptp:#x}: bits above MAXPHYADDR ({maxpa}) are set")
        return cls(levels=walk, ad=bool(eptp & (1 << 6)), **kw)

    def eptp(self, root: int, memtype: int = 6) -> int:
        """The EPTP value for a root table."""
        return (int(root) & B.bits(51, 12)) | ((self.levels - 1) << 3) | (int(self.ad) << 6) | memtype

    @property
    def gpa_bits(self) -> int:
        return 48 if self.levels == 4 else 57


@dataclass(frozen=True)
class NptRole:
    """What an NPT walk depends on: L1's paging mode (from its CR4 and EFER), NXE, 1 GiB
    support, GMET, and the host's MAXPHYADDR. NPT entries have the x86 64-bit format;
    every NPT access is a user access (with GMET, U/S only restricts fetches)."""
    mode: PagingMode = PagingMode.LEVEL4
    nxe: bool = True
    gbpages: bool = True
    gmet: bool = False
    l1_smep: bool = False          # only used by KVM's #NPF I/D rule (K7)
    maxphyaddr: int = DEFAULT_MAXPHYADDR

    kind = "npt"

    def __post_init__(self):
        object.__setattr__(self, "mode", parse_mode(self.mode))
        if self.mode not in (PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5):
            raise RegisterError(f"nested paging in {B.MODE_NAMES[self.mode]} mode is not modelled "
                                f"(PAE, 4-level and 5-level are)")
        if not 32 <= int(self.maxphyaddr) <= 52:
            raise RegisterError(f"maxphyaddr must be in 32..52, got {self.maxphyaddr}")

    @classmethod
    def from_regs(cls, cr4: int, efer: int, **kw) -> "NptRole":
        """From L1's CR4 and EFER (vmcb01): LMA/LA57 choose 4 or 5 levels, else PAE."""
        cr4, efer = int(cr4), int(efer)
        if efer & B.EFER_LMA:
            mode = PagingMode.LEVEL5 if cr4 & B.CR4_LA57 else PagingMode.LEVEL4
        elif cr4 & B.CR4_PAE:
            mode = PagingMode.PAE
        else:
            raise RegisterError(f"NPT with L1 CR4={cr4:#x} EFER={efer:#x}: 32-bit nested paging "
                                f"is not modelled")
        return cls(mode=mode, nxe=bool(efer & B.EFER_NXE),
                   l1_smep=bool(cr4 & B.CR4_SMEP), **kw)

    def cpu_role(self) -> CpuRole:
        """The x86 role whose format NPT entries use (CR0.WP forced, no SMAP, no PKE;
        SMEP replaced by GMET)."""
        return CpuRole(mode=self.mode, wp=True, smep=self.gmet, nxe=self.nxe,
                       maxphyaddr=self.maxphyaddr, gbpages=self.gbpages, vendor="amd")

    @property
    def gpa_bits(self) -> int:
        return {PagingMode.PAE: 32, PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}[self.mode]
