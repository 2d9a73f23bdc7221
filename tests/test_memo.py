"""The walk memo of ``cpu_translate`` (``translate(memo=...)``, kernels/cpu_walk.py).

Within one call memory does not change, so the kernel keeps each walked page's outcome and
decides later accesses to the page from it. Checked here: results equal the reference
walker on random garbage tables when most accesses are repeats of a few pages (so the
memo answers them, under every access kind, privilege, AC, PKRU, asid and mode);
equal to ``memo=False`` on the cases a memo entry has to carry (a large page whose frame
is partly outside memory, a table outside memory, reserved bits, 32-bit address
aliasing); a later call sees memory changed since the last; and, with the JIT off, that
the memo really replaces walks.
"""
import threading

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from conftest import ref_reader
from randtables import random_addresses, random_memory
from vecmmu import CpuRole, Fault, Mmu, PageWalk, PagingMode, make_accesses
from vecmmu.kernels import cpu_walk

FAULT_OF = {"none": Fault.NONE, "pf": Fault.PF, "gp": Fault.GP, "ss": Fault.SS,
            "unbacked": Fault.UNBACKED}
MODES = [PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]
COLS = ("fault", "error_code", "fault_level", "entry_addr", "entry_value", "leaf_level",
        "page_shift", "acc", "pkey", "refs", "gpa")

roles = st.builds(
    dict,
    mode=st.sampled_from(MODES),
    wp=st.booleans(), pse=st.booleans(), smep=st.booleans(), smap=st.booleans(),
    pke=st.booleans(), nxe=st.booleans(),
    maxphyaddr=st.sampled_from([32, 36, 40, 46, 52]),
    gbpages=st.booleans(), vendor=st.sampled_from(["intel", "amd"]),
)


def _repeats(rng, role, n, pages=10):
    """``n`` accesses to ``pages`` random pages (and their neighbours), every kind and flag
    mixed per page: most are repeats, which the memo answers."""
    va_bits = {PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}.get(role.mode, 32)
    pool = random_addresses(rng, pages, va_bits) & ~np.uint64(0xFFF)
    pool = np.concatenate([pool, pool + np.uint64(0x1000)])
    addr = pool[rng.integers(0, pool.shape[0], n)] | rng.integers(0, 4096, n).astype(np.uint64)
    if va_bits == 32:                  # bits above 31 are dropped: the same page, another tag
        addr[rng.random(n) < 0.2] |= np.uint64(1) << np.uint64(40)
    return dict(addr=addr, kind=rng.integers(0, 3, n).astype(np.uint8),
                user=rng.random(n) < 0.5, ac=rng.random(n) < 0.3,
                implicit=rng.random(n) < 0.1, stack=rng.random(n) < 0.1,
                asid=rng.integers(0, 2, n),
                pkru=rng.integers(0, 1 << 32, n, dtype=np.uint64))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(r=roles, seed=st.integers(0, 2**31), semantics=st.sampled_from(["hardware", "kvm"]),
       prefetch=st.booleans())
def test_memo_answers_equal_reference(r, seed, semantics, prefetch):
    role = CpuRole(**r)
    pte = 4 if role.mode is PagingMode.BIT32 else 8
    mem, frames = random_memory(seed, pte, role.maxphyaddr,
                                p_pkey=0.05 if role.mode is PagingMode.PAE else 0.5)
    rng = np.random.default_rng(seed + 1)
    cr3s = [int(rng.choice(frames)), int(rng.choice(frames))]
    pdptes = None
    if role.mode is PagingMode.PAE:
        pdptes = rng.choice(np.array(frames, dtype=np.uint64), size=(2, 4)) | np.uint64(1)
    walk = PageWalk(role, mem, cr3s, pdptes=pdptes, semantics=semantics)
    a = _repeats(rng, role, 300)
    pkru = a.pop("pkru")
    res = walk.translate(a["addr"], a["kind"], user=a["user"], ac=a["ac"], implicit=a["implicit"],
                         stack=a["stack"], asid=a["asid"], pkru=pkru, prefetch=prefetch)
    off = walk.translate(a["addr"], a["kind"], user=a["user"], ac=a["ac"], implicit=a["implicit"],
                         stack=a["stack"], asid=a["asid"], pkru=pkru, memo=False)
    for c in COLS:
        assert np.array_equal(getattr(res, c), getattr(off, c)), c
    read = ref_reader(mem)
    regs_in = role.registers()
    for i in range(len(res)):
        k = int(a["asid"][i])
        regs = dict(regs_in, cr3=cr3s[k], maxphyaddr=role.maxphyaddr, gbpages=role.gbpages,
                    vendor=role.vendor, pkru=int(pkru[i]),
                    pdptes=None if pdptes is None else [int(x) for x in pdptes[k]])
        acc = dict(addr=int(a["addr"][i]), kind=int(a["kind"][i]), user=bool(a["user"][i]),
                   ac=bool(a["ac"][i]), implicit=bool(a["implicit"][i]), stack=bool(a["stack"][i]))
        exp = ref.translate(read, regs, acc, semantics=semantics)
        ctx = (str(role), semantics, i, hex(acc["addr"]), acc)
        assert int(res.fault[i]) == FAULT_OF[exp["fault"]], ctx
        for col in ("error_code", "fault_level", "entry_addr", "entry_value", "leaf_level",
                    "acc", "pkey", "refs"):
            assert int(getattr(res, col)[i]) == exp[col], (col,) + ctx
        if exp["gpa"] is not None:
            assert int(res.gpa[i]) == exp["gpa"], ctx


def _same(w, addr, **kw):
    on = w.translate(addr, **kw)
    off = w.translate(addr, memo=False, **kw)
    for c in COLS:
        assert np.array_equal(getattr(on, c), getattr(off, c)), c
    return on


def test_large_page_partly_outside_memory():
    """One walk of a 2 MiB page whose frame ends outside RAM answers accesses on both
    sides: the backed half translates, the rest is unbacked (hardware semantics)."""
    m = Mmu.for_mode("4level", ram_size=7 << 20)
    m.map(0x4000_0000, 2 << 20, pa=6 << 20, page_size=2 << 20)     # RAM ends 1 MiB in
    offs = np.array([0, 0x180000, 0x10, 0xFFFFF, 0x100000, 0x1FFFFF, 5], dtype=np.uint64)
    r = _same(m.walker(), np.uint64(0x4000_0000) + offs)
    assert list(r.fault) == [0, 7, 0, 0, 7, 7, 0]
    kvm = _same(m.walker(semantics="kvm"), np.uint64(0x4000_0000) + offs)
    assert (kvm.fault == 0).all()                  # KVM does not check the final address


def test_stopped_walks_keep_their_error_codes():
    """Not-present and reserved-bit faults come from the memo with the P/RSVD bits of the
    walk and the W/U/I-D bits of each access."""
    m = Mmu.for_mode("4level", ram_size=8 << 20, nxe=True, maxphyaddr=46)
    m.map(0x1000, 0x1000, user=True)
    m.map(0x40_0000, 0x1000, user=True)
    m.set_entry(0x40_0000, 2, set_bits=1 << 48)           # reserved bit in the PDE
    addr = np.array([0x1000, 0x40_0000, 0x2000, 0x40_0008, 0x2008, 0x1008] * 3, dtype=np.uint64)
    kind = np.arange(addr.shape[0]) % 3
    r = _same(m.walker(), addr, kind=kind, user=kind != 1)
    ec = {(int(a), int(k)): int(e) for a, k, e in zip(addr, kind, r.error_code)}
    assert ec[(0x40_0008, 0)] & 0x9 == 0x9                 # P|RSVD
    assert ec[(0x2000, 2)] == 0x14                         # not present: U|I/D
    assert ec[(0x2008, 1)] == 0x2                          # not present: W (supervisor)


def test_a_later_call_sees_changed_memory():
    m = Mmu.for_mode("4level", ram_size=8 << 20)
    m.map(0x40_0000, 0x1000, user=True)
    w = m.walker()
    addr = np.full(64, 0x40_0010, dtype=np.uint64)
    assert (w.translate(addr, user=True).fault == 0).all()
    m.set_entry(0x40_0000, 1, clear_bits=1)                # the PTE is now not present
    assert (w.translate(addr, user=True).fault == 1).all()
    m.set_entry(0x40_0000, 1, set_bits=1)
    assert (w.translate(addr, user=True).fault == 0).all()


def test_concurrent_calls_on_one_walker():
    """Two threads translating on one walker at once: the second takes a memo of its
    own, so each gets what it would get alone."""
    m = Mmu.for_mode("4level", ram_size=16 << 20)
    m.map(0x40_0000, 64 * 0x1000, user=True)
    w = m.walker()
    rng = np.random.default_rng(3)
    batches = [np.uint64(0x40_0000) + rng.integers(0, 70 * 0x1000, 200_000).astype(np.uint64)
               for _ in range(4)]
    want = [w.translate(b, memo=False).gpa for b in batches]
    got = [None] * 4

    def run(k):
        got[k] = w.translate(batches[k], threads=1).gpa

    ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for k in range(4):
        assert np.array_equal(got[k], want[k])


def _count_walks(monkeypatch, module=cpu_walk, walker="walk_x86_flat"):
    """The addresses the kernel walks from now on (JIT off: the walker is a Python
    function looked up in the driver's module, kernels.cpu_walk or tdp_walk, at each
    call)."""
    real = getattr(module, walker)
    calls = []

    def counting(*a):
        calls.append(a[1])
        return real(*a)

    monkeypatch.setattr(module, walker, counting)
    return calls


@pytest.mark.skipif(not numba.config.DISABLE_JIT,
                    reason="walks can be counted only with NUMBA_DISABLE_JIT=1")
@pytest.mark.nojit
def test_memo_replaces_walks(monkeypatch):
    """With the memo, 300 accesses to 5 pages (one of them unmapped) walk 5 times; without
    it, 300 times. A trace needs every walk, so trace=True walks every access."""
    m = Mmu.for_mode("4level", ram_size=8 << 20)
    m.map(0x40_0000, 4 * 0x1000, user=True)
    calls = _count_walks(monkeypatch)
    rng = np.random.default_rng(1)
    addr = np.uint64(0x40_0000) + rng.integers(0, 5 * 0x1000, 300).astype(np.uint64)
    w = m.walker()
    r = w.translate(addr, rng.integers(0, 3, 300), user=True)
    assert len(calls) == 5
    assert sorted({c >> 12 for c in calls}) == sorted({int(a) >> 12 for a in addr})
    calls.clear()
    w.translate(addr, memo=False)
    assert len(calls) == 300
    calls.clear()
    w.translate(addr, trace=True)
    assert len(calls) == 300
    assert set(r.fault) == {0, 1}


def test_grouped_order_groups_by_region():
    """``_group_part``: a permutation and its inverse; the accesses of one (asid, 2 MiB
    region) keep their input order and run together, interleaved only with the few
    regions that share their hash bucket (about 32 accesses per bucket)."""
    rng = np.random.default_rng(9)
    n = 20_000
    regions = rng.integers(0, 1 << 26, 300) << 21
    addr = (regions[rng.integers(0, 300, n)] + rng.integers(0, 1 << 21, n)).astype(np.int64)
    asid = rng.integers(0, 2, n).astype(np.int64)
    lo, hi = 1000, 19_000                              # one part of a chunk
    order = np.full(n, -1, np.int64)
    inv = np.full(n, -1, np.int64)
    hist = np.full(cpu_walk.GROUP_BUCKETS_MAX + 1, 7, np.int64)     # scratch: not zeroed
    batch = make_accesses(addr.view(np.uint64))                     # read by field offset
    cpu_walk._group_part(batch.ctypes.data, n, batch.dtype.itemsize,
                         np.int64(batch.dtype.fields["addr"][1]), asid, lo, hi, np.int64(48),
                         order, inv, hist)
    part = order[lo:hi]
    assert sorted(part) == list(range(lo, hi))
    assert (inv[part] == np.arange(lo, hi)).all()
    key = (addr[part] >> 21) * 2 + asid[part]
    for k in np.unique(key):
        assert (np.diff(part[key == k]) > 0).all()     # stable
    spans = []
    for k in np.unique(key):
        at = np.flatnonzero(key == k)
        spans.append(np.unique(key[at[0]:at[-1] + 1]).shape[0])
    assert max(spans) <= 8 and np.mean(spans) < 1.8


@pytest.mark.skipif(not numba.config.DISABLE_JIT,
                    reason="walks can be counted only with NUMBA_DISABLE_JIT=1")
@pytest.mark.nojit
def test_memo_on_scattered_blocks_while_it_pays(monkeypatch):
    """Blocks that jump between code and stack (every block spans 2 MiB regions, so it is
    on the prefetch pipeline) still use the memo while it hits: 2000 accesses to 6 pages
    walk 6 times. Scattered accesses to mostly distinct pages (the memo then stops being
    looked up there) give what memo=False gives."""
    m = Mmu.for_mode("4level", ram_size=16 << 20)
    m.map(0x40_0000, 3 * 0x1000, user=True)
    m.map(0x7FFF_F000_0000, 3 * 0x1000, user=True, nx=True)
    calls = _count_walks(monkeypatch)
    rng = np.random.default_rng(2)
    base = np.where(np.arange(2000) % 2 == 0, 0x40_0000, 0x7FFF_F000_0000).astype(np.uint64)
    addr = base + rng.integers(0, 3 * 0x1000, 2000).astype(np.uint64)
    w = m.walker()
    r = w.translate(addr, user=True)
    assert len(calls) == 6
    assert (r.fault == 0).all()
    far = (np.arange(3000, dtype=np.uint64) * np.uint64(0x20_0000 * 7919)) & np.uint64((1 << 47) - 1)
    far[::3] = addr[:1000]
    _same(w, far, user=True)


@pytest.mark.skipif(not numba.config.DISABLE_JIT,
                    reason="walks can be counted only with NUMBA_DISABLE_JIT=1")
@pytest.mark.nojit
def test_memo_on_scattered_blocks_comes_back(monkeypatch):
    """Once prefetched blocks stop using the memo (MEMO_TRIAL lookups hit less than half
    the time) they skip it for MEMO_RETRY ranges, then try it again. Ranges of 256 here
    (JIT off: the constants are read at each call): one of distinct scattered pages, one
    skipped, one of 6 pages in two regions (every block on the prefetch) walks only 6."""
    monkeypatch.setattr(cpu_walk, "SUPER", 256)
    monkeypatch.setattr(cpu_walk, "MEMO_RETRY", 1)
    m = Mmu.for_mode("4level", ram_size=16 << 20)
    m.map(0x40_0000, 3 * 0x1000, user=True)
    m.map(0x7FFF_F000_0000, 3 * 0x1000, user=True, nx=True)
    calls = _count_walks(monkeypatch)
    rng = np.random.default_rng(2)
    far = (np.arange(1, 257, dtype=np.uint64) * np.uint64(0x20_0000 * 7919)) & np.uint64((1 << 47) - 1)
    base = np.where(np.arange(512) % 2 == 0, 0x40_0000, 0x7FFF_F000_0000).astype(np.uint64)
    near = base + rng.integers(0, 3 * 0x1000, 512).astype(np.uint64)
    w = m.walker()
    r = w.translate(np.concatenate([far, near]), user=True, threads=1)
    assert len(calls) == 256 + 256 + 6
    assert (r.fault[256:] == 0).all()


def test_grouped_order_over_several_parts():
    """Grouped order is three parallel passes over each chunk (group, walk, gather
    back), each over the per-thread parts of ``_jit.part_bounds``: with two parts of unequal
    size, every result is where input order puts it (a part left ungrouped fails)."""
    m = Mmu.for_mode("4level", ram_size=32 << 20)
    rng = np.random.default_rng(4)
    starts = rng.choice(1 << 20, 60, replace=False).astype(np.uint64) << np.uint64(26)
    for k, va in enumerate(starts):
        m.map(int(va), 4 * 4096, user=bool(k & 1), nx=bool(k & 2))
    n = 3 * cpu_walk.SUPER + 77                       # parts of 2 and 1.02 ranges
    addr = starts[rng.integers(0, 60, n)] + rng.integers(0, 5 * 4096, n).astype(np.uint64)
    kind = rng.integers(0, 3, n)
    w = m.walker()
    assert numba.config.NUMBA_NUM_THREADS >= 2, "needs two threads"
    base = w.translate(addr, kind, user=kind == 0, order="input", threads=2)
    got = w.translate(addr, kind, user=kind == 0, order="grouped", threads=2)
    assert len(set(base.fault)) >= 2
    for col, v in base.columns().items():
        assert np.array_equal(v, got.columns()[col]), col


def _nested_memo_guest():
    """A 2-D guest with a protection-keyed user page and a page whose host frame is only
    half backed (a host memslot that ends inside it)."""
    from vecmmu import CpuRole, EptRole, NestedGuest
    g = NestedGuest(CpuRole.for_mode("4level", pke=True, maxphyaddr=46), EptRole(),
                    guest_ram=16 << 20, tdp_page_size=4096)
    g.guest.map(0x40_0000, 0x1000, user=True, pkey=1)
    g.host.add_slot(0x2000_0000, np.zeros(0x1800, np.uint8), name="half")
    g.tdp.map(0x0F00_0000, 0x1000, pa=0x2000_1000)
    g.guest.map(0x80_0000, 0x1000, pa=0x0F00_0000, user=True)
    return g


def test_nested_memo_keys_pkru_and_rechecks_the_host_frame():
    """The 2-D memo keeps whole results, so its key must hold everything they depend on:
    PKRU (key 1 access-disabled or not), and the page offset where a host frame is only
    partly in memory. Alternating accesses give what walking each gives."""
    g = _nested_memo_guest()
    w = g.walker()
    addr = np.array([0x40_0010, 0x40_0020, 0x40_0030, 0x40_0040,
                     0x80_0100, 0x80_0900, 0x80_0200, 0x80_0a00], np.uint64)
    pkru = np.array([0, 0b0100, 0, 0b0100, 0, 0, 0, 0], np.uint64)   # AD for key 1: bit 2
    got = w.translate(addr, user=True, pkru=pkru)
    every = w.translate(addr, user=True, pkru=pkru, memo=False)
    for col, v in every.columns().items():
        assert np.array_equal(v, got.columns()[col]), col
    assert got.fault.tolist() == [0, 1, 0, 1, 0, 7, 0, 7]     # none, #PF (PK), ..., unbacked
    assert (got.error_code[[1, 3]] & 32 != 0).all()
    assert got.columns()["hpa"][6] == 0x2000_1200


@pytest.mark.skipif(not numba.config.DISABLE_JIT,
                    reason="walks can be counted only with NUMBA_DISABLE_JIT=1")
@pytest.mark.nojit
def test_nested_memo_replaces_walks(monkeypatch):
    """200 accesses to 2 pages with 2 access kinds walk 4 times (2-D walks: 24 entries
    each); memo=False and trace=True walk all 200."""
    from vecmmu.kernels import tdp_walk
    calls = _count_walks(monkeypatch, tdp_walk, "walk_x86_nested")
    g = _nested_memo_guest()
    w = g.walker()
    rng = np.random.default_rng(3)
    addr = np.where(rng.random(200) < 0.5, 0x80_0000, 0x40_0000).astype(np.uint64) + \
        rng.integers(0, 0x800, 200).astype(np.uint64)
    kind = rng.integers(0, 2, 200)
    r = w.translate(addr, kind, user=True)
    assert len(calls) == 4 and set(r.fault) == {0}
    calls.clear()
    w.translate(addr, kind, user=True, memo=False)
    assert len(calls) == 200
    calls.clear()
    w.translate(addr, kind, user=True, trace=True)
    assert len(calls) == 200


# -- the 2-D walk's cache of guest table pages' TDP translations (walkers.tdp_table_cached) --
def _table_cache_guest(tdp_kind, ad=False, flags_set=True):
    """A 4-level guest with 3 x 64 user pages under three page tables, behind EPT (A/D off
    or on) or NPT, with the TDP mapping of the second page table read-only: a table access
    that is a write (EPT A/D on, KVM semantics, NPT) faults there, a read does not; nor
    does a walk whose guest entries need no A/D flag written (``flags_set``)."""
    from vecmmu import CpuRole, EptRole, NestedGuest, NptRole
    tdp_role = EptRole(ad=ad) if tdp_kind == "ept" else NptRole(maxphyaddr=46)
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), tdp_role, guest_ram=32 << 20,
                    tdp_page_size=4096)
    bases = (0x40_0000, 0x60_0000, 0x7F00_0000_0000)
    for b in bases:
        g.guest.map(b, 64 << 12, user=True, accessed=flags_set, dirty=flags_set)
    pt = g.guest.get_entry(bases[1], 2) & 0x000F_FFFF_FFFF_F000     # its page table's GPA
    g.tdp.protect(pt, 0x1000, writable=False)
    return g, bases


@pytest.mark.parametrize("tdp_kind,ad,semantics,flags_set", [
    ("ept", False, "hardware", True), ("ept", False, "hardware", False),
    ("ept", True, "hardware", True), ("ept", False, "kvm", True), ("npt", False, "hardware", True)])
def test_nested_table_cache_equals_walking(tdp_kind, ad, semantics, flags_set):
    """Walks that miss the 2-D memo (every page once per kind) but share guest table pages
    give exactly what walking every access gives: faults on a write-protected table page
    included, and the entries each walk reads (refs)."""
    from vecmmu import PageWalk
    g, bases = _table_cache_guest(tdp_kind, ad, flags_set)
    w = g.walker()
    if semantics == "kvm":
        w = PageWalk(w.role, w.mem, w.cr3, semantics="kvm",
                     tdp=PageWalk(w.tdp.role, w.mem, w.tdp.cr3[0], semantics="kvm"))
    rng = np.random.default_rng(11)
    n = 3000
    addr = (np.array(bases, np.uint64)[rng.integers(0, 3, n)]
            + rng.integers(0, 66 << 12, n).astype(np.uint64))       # a few unmapped pages too
    kind = rng.integers(0, 3, n)
    got = w.translate(addr, kind, user=True)
    every = w.translate(addr, kind, user=True, memo=False)
    traced = w.translate(addr, kind, user=True, trace=True)
    for col, v in every.columns().items():
        assert np.array_equal(v, got.columns()[col]), col
        assert np.array_equal(v, traced.columns()[col]), col
    refs = got.columns()["refs"]
    assert (refs[got.fault == 0] == 24).all()          # 4 guest entries x (4 + 1) + 4
    table_faults = got.columns()["stage"] == 2
    if tdp_kind == "npt" or ad or semantics == "kvm" or not flags_set:    # table writes
        assert table_faults.any()
    else:
        assert not table_faults.any()


@pytest.mark.skipif(not numba.config.DISABLE_JIT,
                    reason="TDP translations can be counted only with NUMBA_DISABLE_JIT=1")
@pytest.mark.nojit
def test_nested_table_cache_replaces_table_translations(monkeypatch):
    """64 distinct pages under one page table, each read once (the whole-result memo never
    hits): the guest table accesses go through the TDP 4 times in all, not 4 times per
    walk; memo=False and trace=True translate every one."""
    from vecmmu.kernels import walkers
    g, bases = _table_cache_guest("ept")
    w = g.walker()
    addr = bases[0] + np.arange(64, dtype=np.uint64) * np.uint64(4096)
    calls = []
    real = walkers.tdp_translate

    def counting(*a):
        calls.append((a[1], a[2]))          # (gpa, table access?)
        return real(*a)

    monkeypatch.setattr(walkers, "tdp_translate", counting)
    r = w.translate(addr, "read", user=True, threads=1)
    assert set(r.fault) == {0} and (r.columns()["refs"] == 24).all()
    assert sum(1 for _, table in calls if table) == 4
    assert sum(1 for _, table in calls if not table) == 64
    for kw in (dict(memo=False), dict(trace=True)):
        calls.clear()
        w.translate(addr, "read", user=True, threads=1, **kw)
        assert sum(1 for _, table in calls if table) == 4 * 64, kw
