"""Published anchors for translation caching, on the model and on the plain-Python oracle.

- an uncached n-level guest over an m-level nested walk reads (n+1)(m+1)-1 entries
  (24 for 4/4, 35 for 5/5), fewer with large pages;
- a 4 KiB native 4-level walk reads 1 entry after a PDE-cache hit, 2 after a PDPTE hit,
  3 after a PML4E hit (SDM Vol. 3 §4.10.3.2);
- with every GPA -> HPA in the nested TLB, a 4/4 walk reads only the 4 guest entries.
"""
import pytest

from perf_reference import RefModel
from vecmmu import CpuRole, EptRole, Mmu, NestedGuest
from vecmmu.perf import Cache, TlbConfig, simulate, uncached_refs


def model_refs(res, cfg, events=()):
    return [int(x) for x in simulate(res, cfg, list(events)).refs]


def oracle_refs(res, cfg, events=()):
    return [o["refs"] for o in RefModel(cfg).run(res, list(events))]


IMPLS = [pytest.param(model_refs, id="model"), pytest.param(oracle_refs, id="oracle")]


def nested(levels, guest_page=4096, tdp_page=4096):
    g = NestedGuest(CpuRole.for_mode(f"{levels}level", maxphyaddr=46), EptRole(levels=levels),
                    guest_ram=64 << 20 if tdp_page < 1 << 30 else 1 << 30, tdp_page_size=tdp_page)
    va = 1 << 30 if guest_page == 1 << 30 else 0x40000000
    g.guest.map(va, guest_page, pa=0 if guest_page == 1 << 30 else None, page_size=guest_page,
                user=True)
    return g.walker().translate([va + 0x123, va + 0x123], user=True, trace=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("levels,want", [(4, 24), (5, 35)])
def test_uncached_nested_walk(impl, levels, want):
    r = nested(levels)
    assert want == uncached_refs(levels, levels)
    assert list(r.refs) == [want, want]
    assert impl(r, TlbConfig.none()) == [want, want]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("guest_page,tdp_page,g_levels,t_levels", [
    (2 << 20, 4096, 3, 4), (4096, 2 << 20, 4, 3), (2 << 20, 2 << 20, 3, 3), (1 << 30, 1 << 30, 2, 2)])
def test_uncached_nested_walk_large_pages(impl, guest_page, tdp_page, g_levels, t_levels):
    r = nested(4, guest_page, tdp_page)
    want = uncached_refs(g_levels, t_levels)
    assert want < 24
    assert impl(r, TlbConfig.none()) == [want, want] == list(r.refs)


@pytest.fixture(scope="module")
def native():
    mmu = Mmu.for_mode("4level", ram_size=64 << 20)
    for va in (0x400000, 0x401000, 0x600000, 0x40400000, 0x8000400000):
        mmu.map(va, 0x1000, user=True)
    return mmu.walker()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cache,second,want", [
    ("pde", 0x401000, 1), ("pdpte", 0x600000, 2), ("pml4e", 0x40400000, 3),
    ("pde", 0x600000, 4), ("pdpte", 0x40400000, 4), ("pml4e", 0x8000400000, 4)])
def test_paging_structure_cache_hit_skips_levels(native, impl, cache, second, want):
    """Two pages that share the entry at that level: the second walk starts below it;
    pages that do not share it walk in full."""
    r = native.translate([0x400000, second], user=True, trace=True)
    cfg = TlbConfig(l1=Cache(64, 4), **{cache: Cache(4)})
    assert impl(r, cfg) == [4, want]


def test_psc_hit_is_reported(native):
    r = native.translate([0x400000, 0x401000, 0x600000, 0x40400000], user=True, trace=True)
    cfg = TlbConfig(pml4e=Cache(2), pdpte=Cache(4), pde=Cache(32))
    df = simulate(r, cfg).to_frame()
    assert list(df["psc_level"]) == [0, 2, 3, 4]
    assert list(df["served_by"]) == ["memory", "PDE cache", "PDPTE cache", "PML4E cache"]
    assert list(df["refs"]) == [4, 1, 2, 3]


@pytest.mark.parametrize("impl", IMPLS)
def test_nested_tlb_hits_leave_the_guest_entries(impl):
    """No TLB and no guest paging-structure caches: the second walk of the same address
    reads its 4 guest entries, and all 5 GPA -> HPA translations hit the nested TLB."""
    r = nested(4)
    cfg = TlbConfig(ntlb=(Cache(64, 4, ("4K", "2M", "1G")),))
    assert impl(r, cfg) == [24, 4]
    run = simulate(r, cfg)
    assert list(run.ntlb_hits) == [0, 5] and list(run.ntlb_lookups) == [5, 5]
