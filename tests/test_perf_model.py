"""The jitted cache model against the plain-Python oracle on random traces and events;
sweeps equal single runs; configurations are validated; results are tidy frames."""
import numpy as np
import pytest

from perf_reference import RefModel
from vecmmu import CpuRole, EptRole, Mmu, NestedGuest
from vecmmu.perf import (Cache, EventKind, TlbConfig, events_from_asid, make_events, simulate,
                         sweep)

SMALL = TlbConfig(l1=(Cache(8, 2, "4K"), Cache(4, 2, "2M")), l2=(Cache(32, 4, ("4K", "2M", "1G")),),
                  pml4e=Cache(2), pdpte=Cache(2, 1), pde=Cache(4, 2), pte=Cache(16, 4),
                  pte_line=64, ntlb=(Cache(8, 2, ("4K", "2M")), Cache(2, None, "1G")),
                  ept_pml4e=Cache(1), ept_pdpte=Cache(2), ept_pde=Cache(4, 2), pcide=True,
                  name="small")


def compare(res, cfg, events, index_bits=9):
    run = simulate(res, cfg, make_events(events), index_bits=index_bits)
    df = run.to_frame()
    ref = RefModel(cfg, index_bits).run(res, events)
    for col, key in (("hit", "hit"), ("served_by", "served"), ("psc_level", "psc_level"),
                     ("refs", "refs"), ("entries", "entries"), ("pte_hits", "pte_hits")):
        got = [x if isinstance(x, str) else int(x) for x in df[col]]
        want = [o[key] for o in ref]
        bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
        assert not bad, f"{col} differs first at row {bad[0]}: model {got[bad[0]]!r}, oracle {want[bad[0]]!r}"
    if res.tdp_trace is not None:
        assert list(df["ntlb_hits"]) == [o["ntlb_hits"] for o in ref]
    return run


def random_events(rng, n, addrs, nested):
    kinds = ["cr3", "invlpg", "invpcid_addr", "invpcid_ctx", "invpcid_all",
             "invpcid_all_nonglobal", "flush_all"]
    if nested:
        kinds += ["set_vpid", "set_eptp", "invvpid_addr", "invvpid_ctx", "invvpid_all",
                  "invvpid_ctx_nonglobal", "invept_ctx", "invept_all"]
    out = []
    for p in np.sort(rng.integers(0, n, 40)):
        k = kinds[rng.integers(len(kinds))]
        if k == "cr3":
            op = int(rng.integers(0, 4)) | (int(rng.integers(0, 2)) << 63) | 0x5000
        elif k in ("set_vpid", "set_eptp"):
            op = int(rng.integers(0, 3))
        else:
            op = int(addrs[rng.integers(len(addrs))])
        out.append((int(p), k, op, int(rng.integers(0, 4))))
    return out


@pytest.fixture(scope="module")
def native_trace():
    rng = np.random.default_rng(1)
    mmu = Mmu.for_mode("4level", ram_size=256 << 20)
    pages = []
    for j in range(24):
        va = int(rng.integers(0, 1 << 20)) << 21       # spread over PML4E/PDPTE/PDE ranges
        if j % 6 == 0:
            mmu.map(va, 2 << 20, page_size=2 << 20, user=True, global_=bool(j % 4 == 0))
        else:
            mmu.map(va, 0x8000, user=True, global_=bool(j % 5 == 0))
        pages.append(va)
    mmu.map(1 << 30, 1 << 30, pa=0, page_size=1 << 30, user=True)
    pages.append(1 << 30)
    base = np.array(pages, np.uint64)
    addrs = base[rng.integers(0, len(base), 3000)] + rng.integers(0, 0x9000, 3000).astype(np.uint64)
    return mmu.walker().translate(addrs, user=True, trace=True), base


def test_model_equals_oracle_native(native_trace):
    res, base = native_trace
    assert (res.fault != 0).any() and (res.fault == 0).mean() > 0.5   # some faults, mostly hits
    rng = np.random.default_rng(2)
    run = compare(res, SMALL, random_events(rng, len(res), base, False))
    assert run.counters[16] == 40


def test_model_equals_oracle_native_no_pcide_no_pge(native_trace):
    res, base = native_trace
    rng = np.random.default_rng(3)
    compare(res, SMALL.replace(pcide=False, pge=False), random_events(rng, len(res), base, False))


def test_model_equals_oracle_nested():
    rng = np.random.default_rng(4)
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=128 << 20,
                    map_guest_ram=False)
    g.tdp.map(0, 64 << 20, pa=g.guest_base, page_size=4096)                  # mixed TDP pages
    g.tdp.map(64 << 20, 64 << 20, pa=g.guest_base + (64 << 20), page_size=2 << 20)
    pages = []
    for j in range(12):
        va = int(rng.integers(0, 1 << 18)) << 21
        if j % 4 == 0:
            g.guest.map(va, 2 << 20, page_size=2 << 20, user=True)
        else:
            g.guest.map(va, 0x4000, user=True, global_=j % 3 == 0)
        pages.append(va)
    base = np.array(pages, np.uint64)
    addrs = base[rng.integers(0, len(base), 1500)] + rng.integers(0, 0x5000, 1500).astype(np.uint64)
    res = g.walker().translate(addrs, user=True, trace=True)
    assert (res.fault == 0).mean() > 0.5
    compare(res, SMALL, random_events(rng, len(res), base, True))
    compare(res, TlbConfig.skylake(), random_events(rng, len(res), base, True))


def test_model_equals_oracle_32bit():
    rng = np.random.default_rng(5)
    mmu = Mmu.for_mode("32bit", ram_size=64 << 20)
    mmu.map(0x400000, 0x10000, user=True)
    mmu.map(0x800000, 4 << 20, page_size=4 << 20, user=True)
    mmu.map(0xC0000000, 0x4000, user=True, global_=True)
    base = np.array([0x400000, 0x800000, 0xC0000000], np.uint64)
    addrs = base[rng.integers(0, 3, 1000)] + rng.integers(0, 0x10000, 1000).astype(np.uint64)
    res = mmu.walker().translate(addrs, user=True, trace=True)
    compare(res, SMALL, random_events(rng, len(res), base, False), index_bits=10)
    assert simulate(res, SMALL)._inp.index_bits == 10           # found from the mode


def test_sweep_equals_single_runs(native_trace):
    res, base = native_trace
    ev = make_events(random_events(np.random.default_rng(6), len(res), base, False))
    cfgs = {f: SMALL.scaled(f) for f in (0.5, 1, 2, 4)}
    df = sweep(res, cfgs, ev)
    assert list(df["config"]) == [0.5, 1, 2, 4]
    for f, row in zip(cfgs, df.itertuples()):
        one = simulate(res, cfgs[f], ev).summary().iloc[0]
        assert row.refs == one["refs"] and row.l1_hits == one["l1_hits"] and row.walks == one["walks"]
    assert df["refs_per_access"].is_monotonic_increasing is False or df["refs"].iloc[0] >= df["refs"].iloc[-1]
    assert sweep(res, cfgs, ev, threads=1).equals(df)


def test_summary_and_frame_agree(native_trace):
    res, _ = native_trace
    run = simulate(res, TlbConfig.skylake())
    df, s = run.to_frame(), run.summary().iloc[0]
    assert s["accesses"] == len(df) == len(res)
    assert s["refs"] == df["refs"].sum()
    assert s["l1_hits"] == (df["hit"] == "L1").sum() and s["faults"] == (df["hit"] == "fault").sum()
    assert (df.loc[df["hit"] == "fault", "refs"].to_numpy() == res.refs[res.fault != 0]).all()
    assert str(df["hit"].dtype) == "category" and str(df["served_by"].dtype) == "category"
    assert "L1 4K" in repr(TlbConfig.skylake()) or "L1 4K" in str(TlbConfig.skylake())


def test_uncached_model_equals_walker_refs(native_trace):
    res, _ = native_trace
    assert (simulate(res, TlbConfig.none()).refs == res.refs).all()


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="power of two"):
        Cache(48, 4)
    with pytest.raises(ValueError, match="divide"):
        Cache(10, 4)
    with pytest.raises(ValueError, match="page size"):
        Cache(8, 2, "3M")
    with pytest.raises(ValueError, match="event kind"):
        make_events([(0, "mov_cr8", 0)])
    with pytest.raises(ValueError, match="position"):
        make_events([(-1, "cr3", 0)])
    mmu = Mmu.for_mode("4level", ram_size=16 << 20)
    mmu.map(0x400000, 0x1000)
    with pytest.raises(ValueError, match="trace=True"):
        simulate(mmu.walker().translate([0x400000]), TlbConfig.none())


def test_events_from_asid():
    ev = events_from_asid([0, 0, 1, 1, 0, 2])
    assert list(ev["pos"]) == [2, 4, 5]
    assert list(ev["kind"]) == [EventKind.CR3] * 3
    assert list(ev["operand"]) == [1 | 1 << 63, 0 | 1 << 63, 2 | 1 << 63]
    ev = events_from_asid([1, 0], pcide=False)
    assert list(ev["pos"]) == [0, 1] and list(ev["operand"]) == [1, 0]
    assert list(make_events([(5, "invlpg", 1), (2, EventKind.CR3, 7)])["pos"]) == [2, 5]
