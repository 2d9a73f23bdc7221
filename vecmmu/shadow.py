"""Shadow tables: the builder side of KVM's ``kvm_mmu`` for walkers it shadows.

* :func:`build_shadow` — shadow paging (KVM's ``root_mmu`` with TDP off): GVA → HPA x86
  tables built from a two-dimensional walk (a guest ``cpu_walk`` on a ``tdp_walk``). A
  shadow leaf's rights are the guest's and the TDP's combined: W = guest W ∧ TDP W,
  U = guest U, X = guest X ∧ TDP X, where under MBEC the TDP's X is XU for user-mode
  linear addresses (guest U/S = 1) and XS otherwise (exact, because MBEC chooses by the
  same U/S the shadow entry carries). The hardware walks shadow tables with the guest's
  CR0/CR4 but with CR0.WP and EFER.NXE forced on (as KVM does): TDP execute denial is an
  NX bit, and a guest's CR0.WP=0 is expressed by one shadow root per privilege role.
* :func:`build_shadow_ept` — shadow EPT for a nested guest (KVM's ``guest_mmu``): L2 GPA →
  L0 HPA from L1's EPT and L0's EPT, R/W/XS/XU each AND-ed; XS ≠ XU leaves are kept.
* :func:`spte_permission_fault` — the test of the chainsaw series' last patch: turn an
  SPTE into ACC rights (EPT: R, W, XS → EXEC, XU → USER_EXEC; x86: R, W, U, !NX → EXEC)
  and index its own format's ``permissions`` table. With it, XS ≠ XU SPTEs are safe.

Shadow leaves are 4 KiB (a guest or TDP large page is split); entries the builder writes
are checked against its own :class:`~vecmmu.format.PageFormat`.

Not modelled here (they raise): shadows of 32-bit and PAE guests (KVM's PAE shadow roots),
NPT with GMET, and CR0.WP=0 together with SMEP or SMAP (KVM's ``smap_andnot_wp`` role).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bits import ACC_EXEC, ACC_USER, ACC_WRITE, Fault, PagingMode
from .format import PageFormat
from .mmu import Mmu
from .role import EptRole
from .walk import PageWalk


def _free_base(mem, align: int = 1 << 30) -> int:
    top = max(s.end for s in mem.slots)
    return (top + align - 1) // align * align


@dataclass
class Shadow:
    """Shadow tables and how to walk them: ``mmu`` built them in the host memory."""
    mmu: Mmu
    pages: int
    skipped: int

    def walker(self, **kw) -> PageWalk:
        return self.mmu.walker(**kw)


def _pages(vas) -> np.ndarray:
    v = np.asarray(vas, dtype=np.uint64).reshape(-1) & ~np.uint64(0xFFF)
    return np.unique(v)


def build_shadow(walk: PageWalk, vas, *, privilege: str = "any", ram_size: int = 256 << 20,
                 asid: int = 0) -> Shadow:
    """Shadow page tables (GVA → HPA) for the pages holding ``vas``.

    ``walk`` is a 2-D walk (a guest cpu_walk with ``tdp=``). Pages the guest or the TDP
    does not let a supervisor read at all (not present, reserved bits, EPT execute-only,
    NPT U=0) are left unmapped, so touching them faults, as in KVM where the shadow fault
    is handled in software. A guest leaf with D=0 is mapped without W (KVM's
    ``protect_clean_gpte``), so the first write traps and sets D.

    ``privilege``: with CR0.WP=1 one shadow root serves both privileges ("any"). With
    CR0.WP=0 build one root per privilege role, as KVM's page roles do: "user" (guest
    rights) and "supervisor" (W from the TDP alone, U cleared).
    """
    if walk.kind != "nested":
        raise TypeError("build_shadow needs a two-dimensional walk (PageWalk(..., tdp=...))")
    role = walk.role
    if role.mode not in (PagingMode.LEVEL4, PagingMode.LEVEL5):
        raise NotImplementedError("shadows of 32-bit and PAE guests (KVM's PAE shadow roots) "
                                  "are not modelled; use a 4- or 5-level guest")
    tdp = walk.tdp
    if tdp.kind == "npt" and tdp.role.gmet:
        raise NotImplementedError("GMET restricts supervisor fetches by the NPT's U bit, which "
                                  "an x86 shadow entry cannot express")
    if privilege not in ("any", "user", "supervisor"):
        raise ValueError("privilege must be 'any', 'user' or 'supervisor'")
    if not role.wp and privilege == "any":
        raise ValueError("CR0.WP=0: build one shadow root per privilege "
                         "(privilege='user' and privilege='supervisor')")
    if not role.wp and privilege == "supervisor" and (role.smep or role.smap):
        raise NotImplementedError("CR0.WP=0 with SMEP/SMAP needs KVM's smap_andnot_wp role")
    pages = _pages(vas)
    # probe: a supervisor read with the SMAP override and no protection keys reaches every
    # page either side lets anyone read
    r = walk.translate(pages, "read", user=False, ac=True, pkru=0, asid=asid)
    ok = r.fault == Fault.NONE
    g = r.acc.astype(np.int64)
    t = r.tdp_acc.astype(np.int64)
    guest_u = (g & ACC_USER) != 0
    w = ((g & ACC_WRITE) != 0) & ((t & ACC_WRITE) != 0)
    if privilege == "supervisor" and not role.wp:
        w = (t & ACC_WRITE) != 0
    w &= ((r.entry_value >> np.uint64(6)) & np.uint64(1)) == 1          # guest leaf dirty
    if tdp.kind == "ept" and tdp.role.mbec:
        tx = np.where(guest_u, (t & ACC_USER) != 0, (t & ACC_EXEC) != 0)
    else:
        tx = (t & ACC_EXEC) != 0
    x = ((g & ACC_EXEC) != 0) & tx
    u = guest_u if privilege != "supervisor" or role.wp else np.zeros_like(guest_u)
    # the hardware walks shadow tables with CR0.WP=1 and EFER.NXE=1 (KVM forces both; the
    # guest's WP=0 is expressed by the supervisor role's entries instead)
    srole = role.replace(nxe=True, wp=True)
    mmu = Mmu(srole, mem=walk.mem, ram_size=ram_size, ram_base=_free_base(walk.mem))
    hpa = r.hpa & ~np.uint64(0xFFF)
    mmu.map_pages(pages[ok], hpa[ok], writable=w[ok], user=u[ok], nx=~x[ok],
                  pkey=r.pkey[ok] if role.pke else 0, accessed=True, dirty=True)
    return Shadow(mmu, int(ok.sum()), int((~ok).sum()))


def _probe_leaf(walk: PageWalk, gpas: np.ndarray):
    """(ok, frame-translated address, ACC rights) of a tdp_walk, whatever the access: the
    leaf is found with a read; a page that denies reads is decoded from its leaf entry."""
    r = walk.translate(gpas, "read", user=True)
    has_leaf = (r.leaf_level > 0) & ((r.fault == Fault.NONE) | (r.fault == Fault.EPT_VIOLATION)
                                     | (r.fault == Fault.NPF))
    ps = r.page_size
    frame = r.entry_value & np.uint64(int(walk.format.addr_mask)) & ~(ps - np.uint64(1))
    out = np.where(r.fault == Fault.NONE, r.hpa, frame | (gpas & (ps - np.uint64(1))))
    return has_leaf, out, r.acc.astype(np.int64)


def build_shadow_ept(l1_ept: PageWalk, l0_ept: PageWalk, gpas, *, ram_size: int = 256 << 20,
                     mbec: bool | None = None) -> Shadow:
    """Shadow EPT (L2 GPA → L0 HPA) for the pages holding ``gpas``.

    ``l1_ept`` walks L1's EPT in L1-physical memory (KVM reads it through its own
    mappings); ``l0_ept`` walks L0's EPT in host memory. A shadow leaf has R, W, XS and XU
    of both AND-ed; the shadow format has MBEC (to keep XS ≠ XU) when either side does,
    and execute-only pages."""
    if l1_ept.kind != "ept" or l0_ept.kind != "ept":
        raise TypeError("build_shadow_ept needs two EPT tdp_walks")
    pages = _pages(gpas)
    ok1, l1gpa, acc1 = _probe_leaf(l1_ept, pages)
    ok0, hpa, acc0 = _probe_leaf(l0_ept, l1gpa & ~np.uint64(0xFFF))
    acc = acc1 & acc0
    ok = ok1 & ok0 & (acc != 0)
    if mbec is None:
        mbec = l1_ept.role.mbec or l0_ept.role.mbec
    srole = EptRole(levels=l0_ept.role.levels, execonly=True, mbec=mbec, huge_level=1,
                    maxphyaddr=l0_ept.role.maxphyaddr)
    mmu = Mmu(srole, mem=l0_ept.mem, ram_size=ram_size, ram_base=_free_base(l0_ept.mem))
    a = acc[ok]
    if not mbec:                                  # without MBEC bit 10 means nothing
        a = np.where((a & ACC_EXEC) != 0, a | ACC_USER, a & ~ACC_USER)
    mmu.map_pages(pages[ok], hpa[ok] & ~np.uint64(0xFFF), read=(a & 1) != 0,
                  writable=(a & 2) != 0, xs=(a & ACC_EXEC) != 0, xu=(a & ACC_USER) != 0,
                  accessed=True, dirty=True)
    return Shadow(mmu, int(ok.sum()), int((~ok).sum()))


def spte_permission_fault(fmt: PageFormat, spte: int, kind, user_mode: bool) -> bool:
    """Whether an access faults on an SPTE, by its own format's permission table (the
    SPTE test of the chainsaw series' last patch, ``spte_permission_fault``).

    ``kind`` is read/write/fetch (0/1/2); ``user_mode`` is PFERR_USER: a CPL-3 access for
    x86 SPTEs, a user-mode linear address for EPT SPTEs (from advanced exit information)."""
    spte = int(spte)
    kind = {"read": 0, "write": 1, "fetch": 2}.get(kind, kind)
    flags = int(fmt.flags)
    if flags & 16:                                 # EPT
        acc = (spte & 3) | (ACC_EXEC if spte & 4 else 0) | (ACC_USER if spte & (1 << 10) else 0)
        if not (spte & 7) and not (flags & 32 and spte & (1 << 10)):
            return True                            # not present
    else:
        if not spte & 1:
            return True
        acc = 1 | (spte & 6) | (0 if spte >> 63 else ACC_EXEC)
    pfec = (2 if kind == 1 else 0) | (4 if user_mode else 0) | (16 if kind == 2 else 0)
    return bool((int(fmt.record["permissions"][pfec >> 1]) >> acc) & 1)


__all__ = ["Shadow", "build_shadow", "build_shadow_ept", "spte_permission_fault"]
