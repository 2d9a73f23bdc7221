"""What-if sweeps: every variant equals a full re-walk with that configuration.

The re-walks are independent of the sweep: a fresh walker built from the changed roles,
and, for overlays, a second identical guest whose EPT leaves were changed with
``Mmu.protect`` (the builder, not :func:`vecmmu.analysis.overlay.apply_to_ept`).
"""
import dataclasses

import numpy as np
import pytest

from vecmmu import CpuRole, EptRole, Fault, NestedGuest, PageWalk, make_accesses
from vecmmu import bits as B
from vecmmu.analysis.overlay import Overlay, apply_to_ept, segments
from vecmmu.analysis.whatif import F_OVERLAY_MISCONFIG, Variant, whatif
from vecmmu.kernels.tdp_walk import NESTED_COLS
from vecmmu.result import COLUMNS

KT, KD, UC, UH, US = 0xFFFFFFFF81000000, 0xFFFFFFFF82000000, 0x400000, 0x1000000, 0x7FFFF000000


def _trace(regions, n, seed):
    rng = np.random.default_rng(seed)
    base = np.array([r[0] for r in regions], np.uint64)
    span = np.array([r[1] for r in regions], np.uint64)
    which = rng.integers(0, len(regions), n)
    addr = base[which] + (rng.integers(0, 1 << 62, n).astype(np.uint64) % span[which])
    return make_accesses(addr, rng.integers(0, 3, n).astype(np.uint8),
                         user=rng.integers(0, 2, n).astype(np.uint8),
                         ac=rng.integers(0, 2, n).astype(np.uint8),
                         implicit=(rng.random(n) < 0.05).astype(np.uint8))


REGIONS = [(KT, 4 << 20), (KD, 2 << 20), (UC, 64 << 10), (UH, 256 << 10), (US, 64 << 10),
           (0x2000000, 1 << 20)]


def build_1d(**role_kw):
    from vecmmu import Mmu
    kw = dict(smep=True, smap=True, pke=True)
    kw.update(role_kw)
    m = Mmu.for_mode("4level", ram_size=64 << 20, **kw)
    m.map(KT, 4 << 20, page_size=2 << 20, writable=False, global_=True)
    m.map(KD, 2 << 20, page_size=2 << 20, nx=True)
    m.map(UC, 64 << 10, user=True, writable=False)
    m.map(UH, 256 << 10, user=True, nx=True)
    m.protect(UH, 64 << 10, pkey=1)
    m.map(US, 64 << 10, user=True, nx=True)
    m.set_entry(US, 3, set_bits=B.PT_NX)          # XD at an upper level (PDPTE) over the stack
    m.set_entry(UC + 0x8000, 1, set_bits=B.PT_NX | B.PT_PRESENT)
    return m


def build_nested(ept_kw=None, tdp_page_size=4096, **role_kw):
    kw = dict(smep=True, smap=True, maxphyaddr=46)
    kw.update(role_kw)
    g = NestedGuest(CpuRole.for_mode("4level", **kw), EptRole(**(ept_kw or dict(mbec=True))),
                    guest_ram=32 << 20, tdp_page_size=tdp_page_size)
    m = g.guest
    m.map(KT, 4 << 20, page_size=2 << 20, writable=False, global_=True, accessed=True)
    m.map(KD, 2 << 20, page_size=2 << 20, nx=True, accessed=True, dirty=True)
    m.map(UC, 64 << 10, user=True, writable=False, accessed=True)
    m.map(UH, 256 << 10, user=True, nx=True, accessed=True, dirty=True)
    m.map(US, 64 << 10, user=True, nx=True, accessed=True, dirty=True)
    m.set_entry(US, 3, set_bits=B.PT_NX)
    if tdp_page_size != 4096:
        return g
    # an XU-only EPT page under user code, a read-only EPT page under the heap
    uc_gpa = int(g.walker().translate([UC + 0x3000], user=True).gpa[0])
    g.tdp.protect(uc_gpa, 4096, read=False, writable=False, xs=False, xu=True)
    uh_gpa = int(g.walker().translate([UH + 0x5000], user=True).gpa[0])
    g.tdp.protect(uh_gpa, 4096, writable=False)
    return g


def rewalk(walker, acc, v: Variant, mem=None):
    """An independent walker with the variant's settings, and its translation."""
    role = dataclasses.replace(walker.role, **{k: getattr(v, k) for k in
                                               ("wp", "smep", "smap", "pke", "nxe", "pse")
                                               if getattr(v, k) is not None})
    mem = mem or walker.mem
    tdp = None
    if walker.tdp is not None:
        tkw = {k: getattr(v, k) for k in ("mbec", "execonly", "ad", "gmet") if getattr(v, k) is not None}
        if "mbec" in tkw:
            tkw["advanced_info"] = tkw["mbec"]
        trole = dataclasses.replace(walker.tdp.role, **tkw)
        tdp = PageWalk(trole, mem, walker.tdp.cr3[0])
    pkru = v.pkru if v.pkru is not None else int(walker.pkru[0])
    w = PageWalk(role, mem, walker.cr3, pkru=pkru, tdp=tdp)
    a = acc.copy()
    if v.ac is not None:
        a["ac"] = int(v.ac)
    return w.translate(a)


def assert_same(got, want, *, overlay_rows=None, label=""):
    names = NESTED_COLS if want.nested else [c for c in COLUMNS if c in NESTED_COLS]
    gf = got.fault.copy()
    if overlay_rows is not None:        # overlay misconfig <-> a misconfigured modified leaf
        gf[gf == F_OVERLAY_MISCONFIG] = Fault.EPT_MISCONFIG
    for name in names:
        g = gf if name == "fault" else getattr(got, name)
        w = getattr(want, name)
        if overlay_rows is not None and name == "entry_value":
            # the overlay is its own "level": the leaf keeps its value in the sweep
            keep = ~overlay_rows
            g, w = g[keep], w[keep]
        bad = np.flatnonzero(g != w)
        assert bad.size == 0, (f"{label}: column {name} differs at {bad.size} rows, first row "
                               f"{bad[0]}: sweep {g[bad[0]]:#x} re-walk {w[bad[0]]:#x} "
                               f"(fault {got.fault[bad[0]]} vs {want.fault[bad[0]]})")


DECIDE_1D = [Variant("no SMAP", smap=False), Variant("no SMEP", smep=False),
             Variant("WP off", wp=False), Variant("PKE off", pke=False),
             Variant("pkey 1 AD", pkru=0b0100), Variant("pkey 1 WD", pkru=0b1000),
             Variant("AC forced", ac=True), Variant("AC clear", ac=False),
             Variant("all off", wp=False, smep=False, smap=False, pke=False)]
WALK_1D = [Variant("NXE off", nxe=False), Variant("NXE off, no SMAP", nxe=False, smap=False)]


def test_1d_variants_equal_rewalks():
    m = build_1d()
    w = m.walker()
    acc = _trace(REGIONS, 20000, 1)
    wi = whatif(w, acc, DECIDE_1D + WALK_1D)
    assert wi.plan["no SMAP"]["method"] == "decided from record"
    assert wi.plan["NXE off"]["method"] == "re-walk"
    for k, v in enumerate(wi.variants):
        want = rewalk(w, acc, v)
        assert_same(wi.result(v.name), want, label=v.name)
        assert np.array_equal(wi.fault[:, k], want.fault), v.name


def test_nxe_off_with_xd_at_an_upper_level():
    """Bit 63 becomes reserved at every level: the PDPTE with XD faults with RSVD."""
    m = build_1d()
    acc = make_accesses([US + 0x10, US + 0x20], ["read", "write"], user=1)
    wi = whatif(m.walker(), acc, [Variant("NXE off", nxe=False)])
    r = wi.result("NXE off")
    assert list(r.fault) == [Fault.PF, Fault.PF]
    assert list(r.error_code) == [B.PFERR_PRESENT | B.PFERR_RSVD | B.PFERR_USER,
                                  B.PFERR_PRESENT | B.PFERR_RSVD | B.PFERR_USER | B.PFERR_WRITE]
    assert list(r.fault_level) == [3, 3]
    assert list(wi.fault[:, 0]) == [0, 0]
    assert_same(r, rewalk(m.walker(), acc, Variant("x", nxe=False)))


NESTED_VARIANTS = [Variant("no SMAP", smap=False), Variant("no SMEP", smep=False),
                   Variant("WP off", wp=False), Variant("AC forced", ac=True),
                   Variant("MBEC off", mbec=False),
                   Variant("MBEC off, no exec-only", mbec=False, execonly=False),
                   Variant("no exec-only", execonly=False),
                   Variant("NXE off", nxe=False)]


def test_nested_variants_equal_rewalks():
    g = build_nested()
    w = g.walker()
    acc = _trace(REGIONS, 6000, 2)
    wi = whatif(w, acc, NESTED_VARIANTS)
    for k, v in enumerate(wi.variants):
        want = rewalk(w, acc, v)
        assert_same(wi.result(v.name), want, label=v.name)
        assert np.array_equal(wi.fault[:, k], want.fault), v.name
        assert np.array_equal(wi.stage[:, k], want.stage), v.name


def test_xu_only_ept_entry_with_mbec_flipped():
    """XU-only: executable for user-mode addresses under MBEC; without MBEC not present
    (EPT violation), and without execute-only support a misconfiguration (R5)."""
    g = build_nested()
    acc = make_accesses([UC + 0x3000] * 2, ["fetch", "read"], user=1)
    wi = whatif(g.walker(), acc, [Variant("MBEC off", mbec=False),
                                  Variant("no exec-only", execonly=False)])
    base = wi.result("baseline")
    assert list(base.fault) == [Fault.NONE, Fault.EPT_VIOLATION]
    assert list(wi.result("MBEC off").fault) == [Fault.EPT_VIOLATION] * 2
    assert list(wi.result("no exec-only").fault) == [Fault.EPT_MISCONFIG] * 2
    for v in wi.variants[1:]:
        assert_same(wi.result(v.name), rewalk(g.walker(), acc, v), label=v.name)


def _overlay_rewalk(ovs, acc, variant, build=build_nested, **kw):
    """The independent answer: a second, identical guest whose EPT leaves carry the
    overlay (Mmu.protect), walked with the variant's settings."""
    g2 = build(**kw)
    for o in ovs:
        off = {k: (None if keep else False) for k, keep in
               (("read", o.r), ("writable", o.w), ("xs", o.xs), ("xu", o.xu))}
        g2.tdp.protect(int(o.start), int(o.size), **off)       # AND: only clear rights
    return rewalk(g2.walker(), acc, dataclasses.replace(variant, overlays=()))


def _gpa_of(g, va):
    r = g.walker().translate([va], user=va < 1 << 63)
    assert r.has_gpa[0]
    return int(r.gpa[0]) & ~0xFFF


@pytest.mark.parametrize("tdp_page_size", [4096, 2 << 20])
def test_overlays_equal_rewalks_over_a_protected_ept(tdp_page_size):
    g = build_nested(tdp_page_size=tdp_page_size)
    w = g.walker()
    acc = _trace(REGIONS, 6000, 3)
    kt = _gpa_of(g, KT)
    uc = _gpa_of(g, UC)
    uh = _gpa_of(g, UH)
    text_xs_only = Overlay(kt, 4 << 20, xu=False, name="kernel text XS only")
    user_xu_only = Overlay(uc, 64 << 10, xs=False, name="user code XU only")
    heap_nx = Overlay(uh, 256 << 10, xs=False, xu=False, name="heap NX")
    heap_wo = Overlay(uh, 16 << 10, r=False, name="heap W without R")   # misconfig pattern
    variants = [Variant("text XS", overlays=[text_xs_only]),
                Variant("user XU", overlays=[user_xu_only]),
                Variant("heap NX", overlays=[heap_nx]),
                Variant("heap W-only", overlays=[heap_wo]),
                Variant("all + no SMAP", smap=False, overlays=[text_xs_only, user_xu_only, heap_nx]),
                Variant("user XU + MBEC off", mbec=False, overlays=[user_xu_only])]
    if tdp_page_size != 4096:
        variants = [variants[0]]          # protect cannot cut the 2 MiB EPT pages of the others
    wi = whatif(w, acc, variants)
    for k, v in enumerate(wi.variants[1:], start=1):
        assert wi.plan[v.name]["method"] in ("decided from record", "re-walk"), v.name
        want = _overlay_rewalk(v.overlays, acc, v, tdp_page_size=tdp_page_size)
        got = wi.result(v.name)
        rows = np.zeros(len(got), bool)
        for s, e, _ in segments(v.overlays):
            rows |= (got.gpa >= np.uint64(s)) & (got.gpa < np.uint64(e))
        assert_same(got, want, overlay_rows=rows, label=v.name)
    # kernel text XS-only: supervisor fetches fine, the W-only overlay has its own status
    assert (wi.fault[:, wi.names.index("heap W-only")] == F_OVERLAY_MISCONFIG).any() \
        if tdp_page_size == 4096 else True


def test_overlay_on_a_guest_page_table_page_rewalks():
    g = build_nested()
    w = g.walker()
    acc = _trace(REGIONS, 4000, 4)
    pt = g.guest.entry_address(UH, 1) & ~0xFFF       # the page table that maps the heap
    ov = Overlay(pt, 4096, r=False, w=False, name="heap PT unreadable")
    v = Variant("PT overlay", overlays=[ov])
    wi = whatif(w, acc, [v, Variant("PT overlay, no SMAP", smap=False, overlays=[ov])])
    assert wi.plan["PT overlay"]["method"].startswith("re-walk (overlay on guest tables)")
    for name in ("PT overlay", "PT overlay, no SMAP"):
        vv = wi.variants[wi.names.index(name)]
        got = wi.result(name)
        want = _overlay_rewalk([ov], acc, vv)
        assert_same(got, want, label=name)
        k = wi.names.index(name)
        assert ((wi.fault[:, k] == Fault.EPT_VIOLATION) & (wi.stage[:, k] == 2)).any()


def test_apply_to_ept_splits_large_pages():
    g = build_nested(tdp_page_size=2 << 20)
    uc = _gpa_of(g, UC)
    mem, mod = apply_to_ept(g.tdp_walker(), [Overlay(uc, 4096, xs=False)])
    t = PageWalk(g.tdp.role, mem, g.tdp_walker().cr3[0])
    r = t.translate([uc, uc + 4096], "fetch", user=False)
    assert list(r.fault) == [Fault.EPT_VIOLATION, Fault.NONE]
    assert list(r.page_shift) == [12, 12]        # split into 4 KiB pages
    assert len(mod) == 2                         # the 2 MiB leaf, then the 4 KiB one
    assert g.tdp_walker().translate([uc], "fetch").fault[0] == Fault.NONE   # original untouched


def test_matrix_summary_and_diff():
    m = build_1d()
    acc = _trace(REGIONS, 5000, 5)
    wi = whatif(m.walker(), acc, ["no SMAP:smap=0", "NX off:nxe=0"])
    s = wi.summary()
    assert set(s.columns) == {"variant", "fault", "stage", "count", "share"}
    assert s.groupby("variant", observed=True)["count"].sum().eq(len(wi.addr)).all()
    assert str(s["fault"].dtype) == "category"
    d = wi.diff("no SMAP")
    assert set(d["change"]) <= {"stops faulting", "newly faults", "fault changes"}
    assert (d["change"] == "stops faulting").sum() == (
        (wi.fault[:, 0] != 0) & (wi.fault[:, 1] == 0)).sum()
    g = wi.diff("NX off", by="2M")
    assert g.to_numpy().sum() == wi.changed("NX off").sum()
    assert list(wi.matrix.columns[2:]) == ["baseline", "no SMAP", "NX off"]


def test_variant_parse_errors():
    with pytest.raises(ValueError, match="unknown setting"):
        Variant.parse("x:smpa=0")
    v = Variant.parse("t:smap=0,pkru=0x4,overlay=0x1000+0x2000:r-xs")
    assert v.smap is False and v.pkru == 4 and v.overlays[0].acc == 1 | 8
    with pytest.raises(ValueError, match="EPT"):
        whatif(build_1d().walker(), make_accesses([UC]), [Variant("o", overlays=[Overlay(0, 4096)])])


def test_cli_whatif(capsys):
    from vecmmu.cli import main
    assert main(["whatif", "--n", "20000", "--variant", "no SMAP:smap=0",
                 "--variant", "no NX:nxe=0", "--diff", "no SMAP"]) == 0
    out = capsys.readouterr().out
    assert "decided from record" in out and "re-walk" in out and "stops faulting" in out
    assert main(["whatif", "--n", "10", "--variant", "bad:smpa=1"]) == 2
    assert "unknown setting" in capsys.readouterr().err


def _crossing(acc, seed):
    """Some accesses 8 bytes wide at 4 KiB - 4: they cross a page (two translations)."""
    rng = np.random.default_rng(seed)
    acc = acc.copy()
    sel = rng.random(len(acc)) < 0.1
    acc["addr"][sel] = (acc["addr"][sel] | np.uint64(0xFFF)) - np.uint64(3)
    acc["size"][sel] = 8
    return acc


@pytest.mark.parametrize("chunk", [997, 1 << 18])
def test_chunked_records_with_page_crossing_accesses(chunk):
    """Records walked in chunks (narrow columns kept, access indices offset per chunk)
    equal re-walks, with page-crossing accesses split into two rows."""
    m = build_1d()
    w = m.walker()
    acc = _crossing(_trace(REGIONS, 5000, 6), 6)
    wi = whatif(w, acc, DECIDE_1D[:3] + WALK_1D[:1], chunk=chunk)
    assert len(wi.addr) > len(acc)
    for k, v in enumerate(wi.variants):
        want = rewalk(w, acc, v)
        assert np.array_equal(wi.fault[:, k], want.fault), v.name
        assert np.array_equal(wi.access_index, want.access)
        assert np.array_equal(wi.addr, want.addr)
        assert_same(wi.result(v.name), want, label=v.name)


def test_chunked_records_32bit_and_nested():
    """32-bit addresses (the record keeps its own copy of the truncated address) and a
    nested record with overlays, in chunks that split the batch unevenly."""
    from vecmmu import Mmu
    m = Mmu.for_mode("32bit", ram_size=16 << 20, pse=True, smep=True, smap=True)
    m.map(0x400000, 64 << 10, user=True)
    m.map(0xC0000000, 4 << 20, page_size=4 << 20, writable=False)
    rng = np.random.default_rng(7)
    addr = np.where(rng.random(3000) < 0.5, 0x400000, 0xC0000000).astype(np.uint64) \
        + rng.integers(0, 64 << 10, 3000).astype(np.uint64) + (np.uint64(1) << np.uint64(40))
    acc = make_accesses(addr, rng.integers(0, 3, 3000).astype(np.uint8),
                        user=rng.integers(0, 2, 3000).astype(np.uint8))
    wi = whatif(m.walker(), acc, [Variant("no SMEP", smep=False), Variant("no PSE", pse=False)],
                chunk=700)
    for k, v in enumerate(wi.variants):
        want = rewalk(m.walker(), acc, v)
        assert np.array_equal(wi.fault[:, k], want.fault), v.name
        assert np.array_equal(wi.addr, want.addr)
    g = build_nested()
    w = g.walker()
    acc = _crossing(_trace(REGIONS, 3000, 8), 8)
    ov = Overlay(_gpa_of(g, UC), 64 << 10, xs=False)
    vs = [Variant("user XU", overlays=[ov]), Variant("no SMAP", smap=False),
          Variant("MBEC off", mbec=False)]
    wi = whatif(w, acc, vs, chunk=611)
    ref = whatif(w, acc, vs)
    assert np.array_equal(wi.fault, ref.fault) and np.array_equal(wi.stage, ref.stage)
    for v in vs[1:]:
        want = rewalk(w, acc, v)
        assert np.array_equal(wi.fault[:, wi.names.index(v.name)], want.fault), v.name
        assert np.array_equal(wi.stage[:, wi.names.index(v.name)], want.stage), v.name
