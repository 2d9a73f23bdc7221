"""Shadow tables: a plain walk of the built shadow tables gives the same HPA and the same
allow/deny as the two-dimensional walk, for every access kind and privilege (XS != XU pages
included); shadow EPT equals L1's EPT composed with L0's; the SPTE permission test agrees
with walks of the shadow tables."""
import itertools

import numpy as np
import pytest

from vecmmu import CpuRole, EptRole, Fault, Mmu, NestedGuest, NptRole, PageWalk, PhysMem
from vecmmu.shadow import build_shadow, build_shadow_ept, spte_permission_fault

ACCESSES = list(itertools.product(range(3), [False, True], [False, True]))   # kind, user, ac


def _guest(tdp_role, seed, *, wp=True, smep=True, smap=True, npages=96):
    rng = np.random.default_rng(seed)
    role = CpuRole.for_mode("4level", maxphyaddr=46, wp=wp, smep=smep, smap=smap, pke=True)
    g = NestedGuest(role, tdp_role, guest_ram=64 << 20, tdp_page_size=4096)
    vas = []
    for i in range(npages):
        va = 0x400000 + i * 0x1000 if i % 3 else 0xFFFF800000000000 + i * 0x1000
        g.guest.map(va, 0x1000, user=bool(va >> 47 == 0 and rng.random() < 0.8),
                    writable=bool(rng.random() < 0.6), nx=bool(rng.random() < 0.3),
                    pkey=int(rng.integers(0, 3)), accessed=True, dirty=True)
        vas.append(va)
    # guest tables: accessed everywhere, so the A/D-write check never interferes
    for va in vas:
        for lvl in (4, 3, 2):
            g.guest.set_entry(va, lvl, set_bits=0x20)
    # TDP rights of the data pages, page by page
    for va in vas:
        gpa = g.guest.get_entry(va, 1) & 0xFFFFFFFFFF000
        if tdp_role.kind == "ept":
            xs, xu = bool(rng.random() < 0.7), bool(rng.random() < 0.7)
            if not tdp_role.mbec:
                xu = xs
            w = bool(rng.random() < 0.7)
            g.tdp.protect(gpa, 0x1000, read=True, writable=w, xs=xs, xu=xu)
        else:
            g.tdp.protect(gpa, 0x1000, writable=bool(rng.random() < 0.7), nx=bool(rng.random() < 0.3))
    return g, np.array(vas, dtype=np.uint64)


def _same(twod, shadow, vas, pkru):
    n = len(vas)
    for kind, user, ac in ACCESSES:
        a = twod.translate(vas + np.uint64(0x10), kind, user=user, ac=ac, pkru=pkru)
        b = shadow.translate(vas + np.uint64(0x10), kind, user=user, ac=ac, pkru=pkru)
        allowed_a = a.fault == Fault.NONE
        allowed_b = b.fault == Fault.NONE
        bad = np.flatnonzero(allowed_a != allowed_b)
        assert bad.size == 0, (kind, user, ac, [hex(int(vas[i])) for i in bad[:5]],
                               a.to_frame().iloc[bad[:3]].to_dict("records"),
                               b.to_frame().iloc[bad[:3]].to_dict("records"))
        assert np.array_equal(a.hpa[allowed_a], b.gpa[allowed_b])
    assert n


@pytest.mark.parametrize("tdp", ["ept", "ept-mbec", "npt"])
@pytest.mark.parametrize("seed", [1, 2])
def test_shadow_paging_matches_2d_walk(tdp, seed):
    trole = {"ept": EptRole(execonly=False), "ept-mbec": EptRole(execonly=False, mbec=True),
             "npt": NptRole()}[tdp]
    g, vas = _guest(trole, seed)
    twod = g.walker()
    sh = build_shadow(twod, vas)
    assert sh.pages == len(vas)
    shadow = sh.walker()
    for pkru in (0, 0b1100):                         # key 1: write-disable
        _same(twod, shadow, vas, pkru)


def test_shadow_dirty_and_wp0_roles():
    g, vas = _guest(EptRole(execonly=False, mbec=True), 5, wp=False, smep=False, smap=False)
    twod = g.walker()
    sup = build_shadow(twod, vas, privilege="supervisor").walker()
    usr = build_shadow(twod, vas, privilege="user").walker()
    for kind, ac in itertools.product(range(3), [False, True]):
        a = twod.translate(vas, kind, user=False, ac=ac)
        b = sup.translate(vas, kind, user=False, ac=ac)
        assert np.array_equal(a.fault == Fault.NONE, b.fault == Fault.NONE), kind
        a = twod.translate(vas, kind, user=True, ac=ac)
        b = usr.translate(vas, kind, user=True, ac=ac)
        assert np.array_equal(a.fault == Fault.NONE, b.fault == Fault.NONE), kind
    with pytest.raises(ValueError, match="per privilege"):
        build_shadow(twod, vas)


def test_clean_guest_leaf_is_write_protected():
    """A guest leaf with D=0: the 2-D walk allows the write (and would set D); the shadow
    leaf is write-protected so the write traps first (KVM's protect_clean_gpte)."""
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=16 << 20,
                    tdp_page_size=4096)
    g.guest.map(0x400000, 0x1000, user=True, accessed=True, dirty=False)
    for lvl in (4, 3, 2):
        g.guest.set_entry(0x400000, lvl, set_bits=0x20)
    sh = build_shadow(g.walker(), [0x400000]).walker()
    assert g.walker().translate([0x400000], "write", user=True).fault[0] == Fault.NONE
    assert sh.translate([0x400000], "write", user=True).fault[0] == Fault.PF
    assert sh.translate([0x400000], "read", user=True).fault[0] == Fault.NONE


def _nested_ept(seed, l1_mbec, execonly=True, npages=64):
    """L1's EPT (in L1 memory) maps L2 GPAs to L1 frames with random rights (XS != XU,
    execute-only); L0's EPT maps L1 GPA -> HPA with random rights."""
    rng = np.random.default_rng(seed)
    host = PhysMem()
    l0 = Mmu(EptRole(execonly=True), mem=host, ram_size=32 << 20)
    l1_ram = np.zeros(64 << 20, np.uint8)
    host.add_slot(1 << 32, l1_ram, name="L1 RAM")
    l1role = EptRole(execonly=execonly, mbec=l1_mbec)
    l1 = Mmu(l1role, ram=l1_ram)
    l0.map(0, 64 << 20, pa=1 << 32, page_size=2 << 20)
    gpas = []
    for i in range(npages):
        gpa = 0x10000000 + i * 0x1000
        combos = [(1, 0, 1, 1), (1, 1, 0, 0), (1, 0, 1, 0), (1, 1, 1, 1), (1, 0, 0, 1), (0, 0, 1, 1)]
        if l1_mbec:
            combos += [(0, 0, 0, 1), (0, 0, 1, 0), (1, 1, 0, 1)]
        r, w, xs, xu = combos[int(rng.integers(0, len(combos)))]
        if not l1_mbec:
            xu = xs
        if not execonly and not r:
            r = 1
        fr = l1.map(gpa, 0x1000, read=bool(r), writable=bool(w), xs=bool(xs), xu=bool(xu))
        if rng.random() < 0.5:           # L0 takes rights away on some L1 frames
            l0.map(int(fr[0]) & ~0x1FFFFF, 2 << 20, pa=(1 << 32) + (int(fr[0]) & ~0x1FFFFF),
                   page_size=2 << 20, writable=bool(rng.random() < 0.5),
                   xs=bool(rng.random() < 0.7))
        gpas.append(gpa)
    l1w = PageWalk(l1role, l1.mem, l1.cr3())
    l0w = PageWalk(l0.role, host, l0.cr3())
    return l1w, l0w, np.array(gpas, dtype=np.uint64)


@pytest.mark.parametrize("l1_mbec", [False, True])
def test_shadow_ept_is_the_composition(l1_mbec):
    l1w, l0w, gpas = _nested_ept(3, l1_mbec)
    sh = build_shadow_ept(l1w, l0w, gpas)
    sw = sh.walker()
    for kind, um in itertools.product(range(3), [False, True]):
        r1 = l1w.translate(gpas, kind, user=um)
        # L0 sees the L1 GPA of the access, with the same user-mode bit
        l1gpa = np.where(r1.fault == Fault.NONE, r1.hpa, np.uint64(0))
        r0 = l0w.translate(l1gpa, kind, user=um)
        both = (r1.fault == Fault.NONE) & (r0.fault == Fault.NONE)
        s = sw.translate(gpas, kind, user=um)
        assert np.array_equal(s.fault == Fault.NONE, both), (kind, um)
        assert np.array_equal(s.hpa[both], r0.hpa[both])


@pytest.mark.parametrize("l1_mbec", [False, True])
def test_spte_permission_fault_matches_walks(l1_mbec):
    l1w, l0w, gpas = _nested_ept(4, l1_mbec)
    sh = build_shadow_ept(l1w, l0w, gpas)
    sw = sh.walker()
    fmt = sw.format
    xs_ne_xu = 0
    for gpa in gpas:
        spte = sh.mmu.get_entry(int(gpa), 1)
        xs_ne_xu += bool(spte & 4) != bool(spte & (1 << 10))
        for kind, um in itertools.product(range(3), [False, True]):
            walked = sw.translate([gpa], kind, user=um).fault[0] != Fault.NONE
            assert spte_permission_fault(fmt, spte, kind, um) == walked, (hex(spte), kind, um)
    if l1_mbec:
        assert xs_ne_xu > 0            # the point of the last patch: such SPTEs exist and work


def test_builder_refuses_its_own_bad_entries():
    from vecmmu import MmuError
    m = Mmu(EptRole(execonly=False))
    with pytest.raises(MmuError, match="misconfiguration"):
        m.map(0, 0x1000, read=False, writable=False, xs=True)          # exec-only unsupported
    with pytest.raises(MmuError, match="invalid in this ept format"):
        m.map_pages([0x1000], [0x2000], read=False, writable=True)    # W without R
