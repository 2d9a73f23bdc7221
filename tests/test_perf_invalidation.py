"""Invalidation rules, each on a small event trace, on the model and the plain-Python oracle.

SDM Vol. 3 §4.10.4 (CR3 writes, INVLPG, INVPCID, CR4.PGE), §4.10.1 (PCIDs, global pages),
§28.3.3 (VPIDs, EPTP-tagged mappings, INVVPID, INVEPT).
"""
import pytest

from perf_reference import RefModel
from vecmmu import CpuRole, EptRole, Mmu, NestedGuest
from vecmmu.perf import Cache, TlbConfig, make_events, simulate

U, U2, G, G2, B = 0x400000, 0x401000, 0x800000, 0x801000, 0x40000000
NOFLUSH = 1 << 63


def model(res, cfg, events):
    df = simulate(res, cfg, make_events(events)).to_frame()
    return [(str(h), int(r)) for h, r in zip(df["hit"], df["refs"])]


def oracle(res, cfg, events):
    return [(o["hit"], o["refs"]) for o in RefModel(cfg).run(res, events)]


@pytest.fixture(params=[model, oracle], ids=["model", "oracle"])
def run(request):
    return request.param


@pytest.fixture(scope="module")
def walker():
    mmu = Mmu.for_mode("4level", ram_size=64 << 20)
    mmu.map(U, 0x2000, user=True)
    mmu.map(G, 0x2000, user=True, global_=True)
    mmu.map(B, 2 << 20, page_size=2 << 20, user=True)
    return mmu.walker()


def cfg(**kw):
    return TlbConfig(l1=(Cache(64, 4, "4K"), Cache(8, 2, "2M")), pde=Cache(8), **kw)


def T(walker, addrs):
    return walker.translate(addrs, user=True, trace=True)


WALK, WALK1, HIT = ("walk", 4), ("walk", 1), ("L1", 0)


def test_no_events_baseline(walker, run):
    assert run(T(walker, [U, G, U, G, U2]), cfg(), []) == [WALK, WALK, HIT, HIT, WALK1]


@pytest.mark.parametrize("pcide", [False, True])
def test_cr3_write_flushes_non_global_entries_and_the_psc(walker, run, pcide):
    r = T(walker, [U, G, U, G, G2])
    ev = [(2, "cr3", 0x1000)]
    # U walks in full (its TLB entry and the PDE cache entry are gone); G survives (global);
    # G2 is a new global page: the PDE cache was flushed too (its entries are never global)
    assert run(r, cfg(pcide=pcide), ev) == [WALK, WALK, WALK, HIT, WALK]


def test_without_cr4_pge_global_pages_are_flushed(walker, run):
    r = T(walker, [U, G, U, G])
    assert run(r, cfg(pge=False), [(2, "cr3", 0)]) == [WALK, WALK, WALK, WALK]


def test_pcids_tag_entries_and_bit63_skips_the_flush(walker, run):
    r = T(walker, [U, U, U, U, U2, U])
    ev = [(0, "cr3", 1), (1, "cr3", 2), (2, "cr3", 1 | NOFLUSH), (3, "cr3", 1),
          (4, "cr3", 2 | NOFLUSH), (5, "cr3", 2 | NOFLUSH)]
    assert run(r, cfg(pcide=True), ev) == [
        WALK,        # PCID 1
        WALK,        # PCID 2: PCID 1's entries do not match
        HIT,         # back to PCID 1 without a flush: still there
        WALK,        # PCID 1 with a flush: TLB and PDE cache of PCID 1 gone
        WALK1,       # PCID 2 without a flush: its PDE-cache entry survived PCID 1's flush
        HIT,         # and its TLB entry too
    ]


def test_without_pcide_bit63_does_not_skip_the_flush(walker, run):
    r = T(walker, [U, U])
    assert run(r, cfg(pcide=False), [(1, "cr3", NOFLUSH)]) == [WALK, WALK]


def test_invlpg_removes_the_address_and_all_psc_entries(walker, run):
    r = T(walker, [U, U2, G, G2, U, U2, G, G2])
    ev = [(4, "invlpg", U), (4, "invlpg", G)]
    assert run(r, cfg(), ev) == [WALK, WALK1, WALK, WALK1,
                                 WALK,      # U removed, and the PDE cache emptied
                                 HIT,       # another address keeps its TLB entry
                                 WALK,      # a global entry is removed too
                                 HIT]


def test_invlpg_removes_a_large_page_entry(walker, run):
    r = T(walker, [B, B + 0x5000, B + 0x7000])
    assert run(r, cfg(), [(2, "invlpg", B + 0x1234)]) == [("walk", 3), HIT, ("walk", 3)]


def test_invlpg_acts_on_the_current_pcid_and_on_global_entries_of_any(walker, run):
    r = T(walker, [U, G, U, U, G])
    ev = [(0, "cr3", 1), (2, "cr3", 2 | NOFLUSH), (2, "invlpg", U), (2, "invlpg", G),
          (3, "cr3", 1 | NOFLUSH)]
    # in PCID 2, INVLPG U misses PCID 1's entry for U; INVLPG G removes the global G, but
    # PCID 1's PDE-cache entry for G survives (INVLPG empties the current PCID's caches only)
    assert run(r, cfg(pcide=True), ev) == [WALK, WALK, WALK, HIT, WALK1]


def test_invpcid_types(walker, run):
    r = T(walker, [U, G, U, G, U, G, U, G, U, G])
    ev = [(0, "cr3", 1),
          (2, "invpcid_addr", U, 1), (2, "invpcid_addr", G, 1),     # type 0: G is spared
          (4, "invpcid_ctx", 0, 1),                                    # type 1: non-global
          (6, "invpcid_all"),                                          # type 2: with globals
          (8, "invpcid_all_nonglobal")]                                # type 3
    assert run(r, cfg(pcide=True), ev) == [WALK, WALK, WALK, HIT, WALK, HIT, WALK, WALK,
                                           WALK, HIT]


def test_invpcid_of_another_pcid_leaves_the_current_one(walker, run):
    r = T(walker, [U, U, U2])
    ev = [(0, "cr3", 1), (1, "invpcid_ctx", 0, 2), (2, "invpcid_addr", U, 2)]
    assert run(r, cfg(pcide=True), ev) == [WALK, HIT, WALK1]


def test_flush_all_removes_global_entries(walker, run):
    r = T(walker, [G, G])
    assert run(r, cfg(), [(1, "flush_all")]) == [WALK, WALK]


def test_events_at_page_crossing_accesses_apply_before_the_first_part(walker):
    """Positions are access indices: a page-crossing access is two rows, and an event at its
    position applies before both."""
    r = walker.translate([U + 0xFFE, U + 0xFFE], user=True, size=4, trace=True)
    assert list(r.access) == [0, 0, 1, 1]
    run = simulate(r, cfg(), make_events([(1, "cr3", 0)]))
    assert list(run.to_frame()["hit"]) == ["walk", "walk", "walk", "walk"]


# -- nested: VPID and EPTP tags, INVVPID, INVEPT --------------------------------------------

@pytest.fixture(scope="module")
def guest():
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=64 << 20,
                    tdp_page_size=4096)
    g.guest.map(U, 0x2000, user=True)
    g.guest.map(G, 0x1000, user=True, global_=True)
    return g.walker()


def ncfg(**kw):
    return TlbConfig(l1=Cache(64, 4, "4K"), pde=Cache(8),
                     ntlb=(Cache(64, 4, ("4K", "2M", "1G")),), **kw)


def nT(w, addrs):
    return w.translate(addrs, user=True, trace=True)


def test_vpid_tags_guest_entries(guest, run):
    r = nT(guest, [U, U, U, U2])
    ev = [(0, "set_vpid", 1), (1, "set_vpid", 2), (2, "set_vpid", 1), (3, "set_vpid", 2)]
    out = run(r, ncfg(), ev)
    assert out[0] == ("walk", 24) and out[2] == HIT
    # VPID 2 misses VPID 1's TLB and PDE-cache entries, but the nested TLB (EPTP-tagged) hits
    assert out[1] == ("walk", 4)
    # VPID 2's PDE-cache entry: the PTE (its GPA in the nested TLB) + the new data page's
    # GPA through a 4-level EPT walk
    assert out[3] == ("walk", 1 + 4)


def test_eptp_tags_nested_tlb_entries(guest, run):
    r = nT(guest, [U, U, U])
    ev = [(0, "set_eptp", 1), (1, "set_eptp", 2), (2, "set_eptp", 1)]
    assert run(r, ncfg(), ev) == [("walk", 24), ("walk", 24), HIT]


def test_invvpid_types(guest, run):
    r = nT(guest, [U, G, U, G, U, G, U, G])
    ev = [(0, "set_vpid", 3),
          (2, "invvpid_addr", U, 3), (2, "invvpid_addr", G, 3),           # both, even global
          (4, "invvpid_ctx_nonglobal", 0, 3),                              # spares G
          (6, "invvpid_ctx", 0, 3)]
    out = run(r, ncfg(), ev)
    assert [h for h, _ in out] == ["walk", "walk", "walk", "walk", "walk", "L1", "walk", "walk"]
    assert out[2][1] == 4        # the nested TLB survives INVVPID; the guest PDE cache does not


def test_invvpid_of_another_vpid_and_all_context(guest, run):
    r = nT(guest, [U, U, U])
    ev = [(0, "set_vpid", 1), (1, "invvpid_ctx", 0, 2), (2, "invvpid_all")]
    assert [h for h, _ in run(r, ncfg(), ev)] == ["walk", "L1", "walk"]


def test_invept_flushes_guest_physical_and_combined_mappings(guest, run):
    r = nT(guest, [U, U, U, U, U])
    ev = [(0, "set_eptp", 1), (1, "invept_ctx", 0, 2), (2, "invept_ctx", 0, 1),
          (3, "set_vpid", 5), (4, "invept_all")]
    out = run(r, ncfg(), ev)
    assert out == [("walk", 24), HIT, ("walk", 24), ("walk", 4), ("walk", 24)]


@pytest.mark.parametrize("guest_page,tdp_page,second_hits", [
    (2 << 20, 4096, False), (2 << 20, 2 << 20, True), (4096, 2 << 20, False)])
def test_nested_tlb_entry_covers_the_effective_page_size(run, guest_page, tdp_page, second_hits):
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=64 << 20,
                    tdp_page_size=tdp_page)
    g.guest.map(B, 2 << 20, page_size=guest_page, user=True)
    r = nT(g.walker(), [B, B + 0x1000])
    c = TlbConfig(l1=(Cache(64, 4, "4K"), Cache(8, 2, "2M")))
    assert [h for h, _ in run(r, c, [])] == ["walk", "L1" if second_hits else "walk"]
    if run is model:
        eff = simulate(r, c)._inp.shift
        assert list(eff) == [21 if second_hits else 12] * 2
