"""Mapping listings (page-table dumps): equal to the walker on every address, in every
mode, on built and on random garbage tables; filters, policies, bounds; the real dump."""
import warnings

import numpy as np
import pytest

from randtables import random_addresses, random_memory
from vecmmu import CpuRole, Fault, Mmu, PageWalk, PagingMode
from vecmmu.analysis import list_mappings, policy_violations
from vecmmu.analysis.mappings import ScanWarning

NOMAP = np.iinfo(np.uint64).max


def _check_against_walk(walk, mappings, addrs):
    """Every address: the listing maps it iff a supervisor read succeeds (no permission
    check can fail for that access in these roles), with the walk's frame, page size,
    rights and pkey; an unbacked final address is listed with ``unbacked``."""
    r = walk.translate(addrs, "read", user=False)
    row = mappings.lookup(r.addr)
    pa = mappings.translate(r.addr)
    ranges = mappings.ranges
    ok = (r.fault == Fault.NONE) | ((r.fault == Fault.UNBACKED) & (r.fault_level == 0))
    checked = r.fault != Fault.GP
    assert np.array_equal(row[checked] >= 0, ok[checked])
    sel = np.flatnonzero(ok)
    assert np.array_equal(pa[sel], r.gpa[sel])
    rr = row[sel]
    assert np.array_equal(ranges["size"].to_numpy(np.uint64)[rr] // ranges["pages"].to_numpy(np.uint64)[rr],
                          r.page_size[sel])
    acc = (ranges["writable"].to_numpy() * 2 | ranges["user"].to_numpy() * 4
           | ranges["executable"].to_numpy() * 8 | 1)[rr]
    assert np.array_equal(acc, r.acc[sel])
    assert np.array_equal(ranges["pkey"].to_numpy()[rr], r.pkey[sel])
    unb = ranges["unbacked"].to_numpy()[rr]          # the page is not wholly in memory
    assert unb[r.fault[sel] == Fault.UNBACKED].all()
    assert (r.fault[sel][~unb] == Fault.NONE).all()
    return int(ok.sum())


def _built(mode, **kw):
    mmu = Mmu.for_mode(mode, ram_size=64 << 20, **kw)
    big = {"32bit": 4 << 20}.get(mode, 2 << 20)
    mmu.map(0x400000, 0x3000, user=True, writable=False)
    mmu.map(0x403000, 0x1000, user=True)
    mmu.map(0x800000, 4 * big, page_size=big, user=True)
    if mode in ("4level", "5level"):
        mmu.map(0x40000000, 1 << 30, pa=0, page_size=1 << 30)
        mmu.map(0x7F0000001000, 0x2000, user=True, nx=True, pkey=3)
        mmu.map(0xFFFFFFFF81000000, 4 << 20, page_size=2 << 20, writable=False, global_=True)
    return mmu


@pytest.mark.parametrize("mode", ["32bit", "pae", "4level", "5level"])
def test_built_tables_every_mode(mode):
    mmu = _built(mode)
    walk = mmu.walker()
    m = list_mappings(walk, merge="frames")
    assert not m.truncated and len(m.anomalies) == 0
    rng = np.random.default_rng(0)
    hot = [0x400000, 0x403000, 0x800000, 0x7F0000001000, 0xFFFFFFFF81000000, 0x40000000]
    va_bits = 32 if mode in ("32bit", "pae") else (57 if mode == "5level" else 48)
    addrs = np.concatenate([(np.array(hot, np.uint64) + rng.integers(0, 0x5000, (40, len(hot)),
                                                                     dtype=np.uint64)).reshape(-1),
                            random_addresses(rng, 2000, va_bits)])
    if va_bits == 32:
        addrs &= np.uint64(0xFFFFFFFF)
    assert _check_against_walk(walk, m, addrs) > 50
    # attrs merging: same pages, fewer or equal ranges
    a = list_mappings(walk)
    assert a.pages == m.pages and len(a) <= len(m)


@pytest.mark.parametrize("mode", [PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_garbage_tables_equal_the_walker(mode, seed):
    """Loops, reserved bits, large pages, tables and frames outside memory: the listing of
    a 1 GiB window (the whole space in 32-bit and PAE paging) equals the walk there."""
    pte = 4 if mode is PagingMode.BIT32 else 8
    mem, frames = random_memory(seed, pte, 40, p_pkey=0.0 if mode is PagingMode.PAE else 0.5)
    role = CpuRole(mode=mode, pse=True, nxe=True, maxphyaddr=40, vendor="amd" if seed % 2 else "intel",
                   gbpages=seed != 2)
    rng = np.random.default_rng(seed)
    cr3 = int(rng.choice(frames))
    pdptes = None
    if mode is PagingMode.PAE:
        pdptes = np.array([frames[k] | 1 for k in rng.integers(0, len(frames), 4)], np.uint64)
        cr3 &= 0xFFFFFFE0
    walk = PageWalk(role, mem, cr3, pdptes=pdptes)
    va_bits = {PagingMode.BIT32: 32, PagingMode.PAE: 32, PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}[mode]
    if va_bits == 32:
        addrs = rng.integers(0, 1 << 32, 20000, dtype=np.uint64)
        m = list_mappings(walk, merge="frames", max_entries=1 << 24)
    else:
        base = int(random_addresses(rng, 1, va_bits)[0]) & ~((1 << 30) - 1)
        if (base >> (va_bits - 1)) & 1:
            base |= ~((1 << va_bits) - 1) & (2**64 - 1)
        base &= 2**64 - 1
        addrs = np.uint64(base) + rng.integers(0, 1 << 30, 20000, dtype=np.uint64)
        m = list_mappings(walk, merge="frames", start=base, end=(base + (1 << 30)) & (2**64 - 1))
    assert not m.truncated
    _check_against_walk(walk, m, addrs)
    # every reserved-bit fault of the walk is an anomaly of the listing, at the same entry
    r = walk.translate(addrs, "read")
    rsvd = (r.fault == Fault.PF) & ((r.error_code & 8) != 0)
    listed = set(int(a) for a, w in zip(m.anomalies["entry_addr"], m.anomalies["what"])
                 if w == "reserved bits set")
    assert set(int(a) for a in r.entry_addr[rsvd]) <= listed


@pytest.mark.nojit
def test_loops_are_bounded():
    """A PML4 whose every entry points at itself: 512**4 leaves in principle. The scan
    stops at the entry budget with a warning instead of hanging."""
    mmu = Mmu.for_mode("4level", ram_size=1 << 20)
    root = mmu.roots[0]
    ram = mmu.mem.backings[0]
    ent = np.full(512, root | 0x7, dtype="<u8")
    ram[root:root + 4096] = ent.view(np.uint8)
    with pytest.warns(ScanWarning, match="stopped after 100,000 entries"):
        m = list_mappings(mmu.walker(), max_entries=100_000)
    assert m.truncated and m.entries_read == 100_000


def test_output_capacity_resumes_without_losing_ranges():
    mmu = Mmu.for_mode("4level", ram_size=64 << 20)
    for k in range(300):                    # 300 separate pages: 300 ranges
        mmu.map(0x400000 + 0x2000 * k, 0x1000, user=True)
    full = list_mappings(mmu.walker())
    small = list_mappings(mmu.walker(), capacity=16)
    assert len(full) == len(small) == 300
    assert full.ranges.equals(small.ranges)
    # contiguous pages cut by a small capacity are joined again
    mmu2 = Mmu.for_mode("4level", ram_size=64 << 20)
    mmu2.map(0x400000, 0x1000 * 100, user=True)
    for k in range(0, 100, 2):
        mmu2.protect(0x400000 + 0x1000 * k, 0x1000, pkey=k % 4 + 1)
    a = list_mappings(mmu2.walker())
    b = list_mappings(mmu2.walker(), capacity=16)
    assert a.ranges.equals(b.ranges)


@pytest.mark.nojit
def test_filters_policies_and_shadow_stack():
    mmu = Mmu.for_mode("4level", ram_size=64 << 20)
    mmu.map(0x400000, 0x2000, user=True, writable=False)                 # r-ux text
    mmu.map(0x600000, 0x1000, user=True, writable=True)                  # W+X user page
    mmu.map(0x700000, 0x1000, user=True, writable=False, nx=True, dirty=True)   # W=0 D=1
    mmu.map(0x7F0000000000, 0x1000, user=True, nx=True, pkey=5)
    mmu.map(0xFFFF888000000000, 2 << 20, page_size=2 << 20, nx=True)     # kernel data
    mmu.map(0xFFFFFFFF81000000, 2 << 20, page_size=2 << 20)              # kernel W+X
    mmu.map(0xFFFFFFFFFF600000, 0x1000, user=True, writable=False)       # user page, kernel half
    m = list_mappings(mmu.walker())
    assert len(m.filter(wx=True)) == 2
    assert len(m.filter(user=True)) == 5 and len(m.filter(supervisor=True)) == 2
    assert [hex(int(v)) for v in m.filter(pkey=5).ranges["start"]] == ["0x7f0000000000"]
    assert [hex(int(v)) for v in m.filter(shadow_stack=True).ranges["start"]] == ["0x700000"]
    assert len(m.filter(page_size="2M")) == 2
    v = policy_violations(m)
    got = sorted((str(p), hex(int(s))) for p, s in zip(v["policy"], v["start"]))
    assert got == [("W+X", "0x600000"), ("W+X", "0xffffffff81000000"),
                   ("user page in kernel half", "0xffffffffff600000")]
    text = m.to_text()
    assert "0xffffffffff600000-0xffffffffff601000" in text and "SS?" in text
    # the last range of the address space ends exactly at the top
    top = Mmu.for_mode("4level", ram_size=16 << 20)
    top.map(0xFFFFFFFFFFE00000, 2 << 20, page_size=2 << 20)
    t = list_mappings(top.walker())
    assert int(t.ranges["last"][0]) == 2**64 - 1 and int(t.ranges["size"][0]) == 2 << 20


@pytest.mark.nojit
def test_enc_mask_clears_the_c_bit():
    """An SME/SEV guest's entries carry the C-bit (here bit 47, above MAXPHYADDR 40): as
    reserved bits without the mask; with it, the same listing as the plain tables."""
    mmu = _built("4level", maxphyaddr=40)
    plain = list_mappings(mmu.walker(), merge="frames")
    ram = mmu.mem.backings[0]
    q = ram.view("<u8")
    present = (q & 1) == 1
    q[present] |= np.uint64(1 << 47)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = list_mappings(mmu.walker(), merge="frames")
        assert len(enc) == 0 and (enc.anomalies["what"] == "reserved bits set").all()
        masked = list_mappings(mmu.walker(), merge="frames", enc_mask=1 << 47)
    assert masked.ranges.drop(columns="unbacked").equals(plain.ranges.drop(columns="unbacked"))


def test_errors():
    mmu = Mmu.for_mode("4level", ram_size=1 << 20)
    w = mmu.walker()
    with pytest.raises(ValueError, match="merge must be"):
        list_mappings(w, merge="pa")
    with pytest.raises(ValueError, match="asid 3 out of range"):
        list_mappings(w, asid=3)
    bad = PageWalk(w.role, mmu.mem, 0x7FF0000000)
    with pytest.raises(ValueError, match="root table at 0x7ff0000000.*not in memory"):
        list_mappings(bad)


@pytest.mark.dump
def test_real_dump_listing_matches_the_truth(real_dump):
    """The listing of the dumped CR3 maps every truth page (user and kernel) at its
    physical address with its page size and rights, and none of the not-present ones;
    it has as many pages as QEMU's `info tlb` has lines."""
    dump, truth = real_dump
    regs = {k: int(truth["registers"][k], 16) for k in ("cr0", "cr3", "cr4", "efer")}
    walk = PageWalk.from_regs(dump.mem, **regs, maxphyaddr=truth["paging"]["maxphyaddr"], vendor="amd")
    m = list_mappings(walk, merge="frames")
    assert not m.truncated and len(m.anomalies) == 0
    assert m.pages == truth["qemu_cross_check"]["info_tlb_lines"] == 73883
    r = m.ranges
    for group in ("pages", "kernel_pages"):
        items = truth[group]
        va = np.array([int(p["va"], 16) for p in items], np.uint64)
        pa = m.translate(va)
        row = m.lookup(va)
        for i, p in enumerate(items):
            w = p.get("walk", p)
            present = p.get("present", p.get("ok"))
            if not present:
                assert row[i] == -1 and pa[i] == NOMAP, p["va"]
                continue
            k = row[i]
            assert int(pa[i]) == int(p["pa"], 16), p["va"]
            assert int(r["size"][k]) // int(r["pages"][k]) == w["page_size"], p["va"]
            assert bool(r["writable"][k]) == w["writable"] and bool(r["user"][k]) == w["user"]
            assert (not r["executable"][k]) == w["nx"], p["va"]
            if "pkey" in w:
                assert int(r["pkey"][k]) == w["pkey"]
    assert len(policy_violations(list_mappings(walk))) == 0
