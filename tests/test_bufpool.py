"""Result buffers recycled between calls (vecmmu/bufpool.py): reused only once nothing
can see them, never changing a result a caller holds."""
import gc
import threading

import numpy as np
import pytest

from vecmmu import Mmu
from vecmmu.bufpool import POOL, BufferPool


MIB = 1 << 20
_fresh_empty = BufferPool(max_bytes=0).empty       # new memory every call (recycling off)


def test_reused_only_after_every_view_is_gone():
    pool = BufferPool(max_bytes=64 * MIB, min_bytes=MIB)
    a = pool.empty(MIB // 8, np.uint64)
    p = a.ctypes.data
    view = a[100:200]
    view2 = view[::2]
    del a, view
    b = pool.empty(MIB // 8, np.uint64)             # view2 still holds the first buffer
    assert b.ctypes.data != p and pool.hits == 0
    del view2
    c = pool.empty(MIB // 8, np.uint64)
    assert c.ctypes.data == p and pool.hits == 1
    assert b.ctypes.data != c.ctypes.data


def test_aligned_shaped_and_writable():
    pool = BufferPool(max_bytes=64 * MIB, min_bytes=MIB)
    for shape, dt in ((3 * MIB + 5, np.uint8), ((7, 300_001), np.int64), (10, np.uint64)):
        a = pool.empty(shape, dt)
        assert a.ctypes.data % 64 == 0
        assert a.shape == ((shape,) if np.ndim(shape) == 0 else shape) and a.dtype == dt
        assert a.flags.writeable and a.flags.c_contiguous
        a[...] = 7
        assert (a == 7).all()


def test_record_dtypes_keep_their_fields():
    from vecmmu import ACCESS_DTYPE
    pool = BufferPool(max_bytes=64 * MIB, min_bytes=MIB)
    a = pool.empty(100_000, ACCESS_DTYPE)
    assert a.dtype == ACCESS_DTYPE and a.ctypes.data % 64 == 0
    a["addr"] = np.arange(100_000)
    a["size"] = 3
    assert a["addr"][-1] == 99_999 and (a["size"] == 3).all()


def test_small_requests_are_not_pooled_and_sizes_must_fit():
    pool = BufferPool(max_bytes=64 * MIB, min_bytes=MIB)
    a = pool.empty(1000, np.uint64)                  # under min_bytes: plain numpy memory
    assert a.base is not None and not hasattr(a.base, "_pool")
    del a
    assert pool.idle_bytes == 0
    big = pool.empty(8 * MIB, np.uint8)
    del big
    assert pool.idle_bytes >= 8 * MIB
    small = pool.empty(2 * MIB, np.uint8)            # the idle 8 MiB is over twice this: new memory
    assert pool.hits == 0 and pool.idle_bytes >= 8 * MIB
    del small


def test_idle_memory_is_capped_oldest_dropped_first():
    pool = BufferPool(max_bytes=10 * MIB, min_bytes=MIB)
    bufs = [pool.empty(4 * MIB, np.uint8) for _ in range(3)]
    ptrs = [b.ctypes.data for b in bufs]
    for _ in range(3):
        bufs.pop(0)                                  # given back in order 0, 1, 2
    gc.collect()
    assert pool.idle_bytes <= 10 * MIB
    assert len(pool._idle) == 2
    assert {b.ctypes.data + (-b.ctypes.data % 64) for b in pool._idle} == set(ptrs[1:])
    off = BufferPool(max_bytes=0, min_bytes=MIB)       # max_bytes=0: never recycles
    a = off.empty(2 * MIB, np.uint8)
    del a
    assert off.idle_bytes == 0


def test_results_of_recycled_translations_are_unchanged():
    """A held result keeps its values while later calls reuse dropped buffers."""
    mmu = Mmu.for_mode("4level")
    mmu.map(0x400000, 64 << 12, user=True)
    w = mmu.walker()
    rng = np.random.default_rng(5)
    n = 300_000                                      # 2.4 MB u64 columns: pooled
    addr = (0x400000 + rng.integers(0, 80 << 12, n)).astype(np.uint64)
    kind = rng.integers(0, 3, n).astype(np.uint8)
    want = w.translate(addr, kind, user=True, memo=False)
    want_gpa, want_fault = want.gpa.copy(), want.fault.copy()
    kept_gpa = want.gpa[1000:2000]                  # a view outliving its result
    kept_copy = kept_gpa.copy()
    del want
    hits0 = POOL.hits
    for k in range(4):
        r = w.translate(addr[::-1].copy() if k % 2 else addr, kind[::-1].copy() if k % 2 else kind,
                        user=True)
        if k % 2 == 0:
            assert np.array_equal(r.gpa, want_gpa) and np.array_equal(r.fault, want_fault)
        del r
    assert POOL.hits > hits0                         # dropped results were recycled
    assert np.array_equal(kept_gpa, kept_copy)       # ... but not the one still viewed
    frame = w.translate(addr, kind, user=True).to_frame()   # a DataFrame over the columns
    snap = frame.copy(deep=True)
    for _ in range(2):
        w.translate(addr[::-1].copy(), kind, user=False)
    assert frame.equals(snap)


def test_threads_never_share_a_buffer():
    mmu = Mmu.for_mode("4level")
    mmu.map(0x400000, 256 << 12, user=True)
    w = mmu.walker()
    rng = np.random.default_rng(9)
    n = 200_000
    batches = [(0x400000 + rng.integers(0, 256 << 12, n)).astype(np.uint64) for _ in range(4)]
    want = [w.translate(b, "read").gpa.copy() for b in batches]
    errors = []

    def work(j):
        try:
            for _ in range(3):
                r = w.translate(batches[j], "read", threads=1)
                if not np.array_equal(r.gpa, want[j]):
                    errors.append(j)
        except Exception as e:       # pragma: no cover - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work, args=(j,)) for j in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


@pytest.mark.parametrize("bad", [-1, 0])
def test_disabled_pool_allocates(bad):
    pool = BufferPool(max_bytes=bad, min_bytes=MIB)
    a = pool.empty(2 * MIB, np.uint8)
    assert a.nbytes == 2 * MIB and pool.hits == 0 and pool.misses == 0


# -- recycled memory is not zero: every kernel must write every cell it hands back ---------
@pytest.fixture
def poisoned_pool(monkeypatch):
    """POOL.empty returns memory filled with 0xA5 (what a recycled buffer may hold), for
    every size: a kernel that leaves a cell unwritten changes a result."""
    def empty(shape, dtype):
        dtype = np.dtype(dtype)
        a = _fresh_empty(shape, dtype)
        a.view(np.uint8).reshape(-1)[:] = 0xA5
        return a
    monkeypatch.setattr(POOL, "empty", empty)


def _frames_equal(a, b):
    import pandas as pd
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())


def _mixed_batch(n=4000, seed=3):
    """Successes, #PF of every kind, #GP (non-canonical), unbacked tables and frames."""
    from vecmmu import make_accesses
    rng = np.random.default_rng(seed)
    base = np.array([0x400000, 0x800000, 0xFFFFFFFF81000000, 0x0000_8000_0000_0000,
                     0x7FFF_0000_0000, 0x40000000], np.uint64)
    addr = base[rng.integers(0, len(base), n)] + rng.integers(0, 1 << 16, n).astype(np.uint64)
    size = np.ones(n, np.uint32)
    cross = rng.random(n) < 0.05                       # page-crossing: two translations each
    addr[cross] |= np.uint64(0xFFD)
    size[cross] = 8
    return make_accesses(addr, rng.integers(0, 3, n).astype(np.uint8),
                         user=rng.integers(0, 2, n).astype(np.uint8),
                         ac=rng.integers(0, 2, n).astype(np.uint8), size=size)


def _guest_1d():
    mmu = Mmu.for_mode("4level", smep=True, smap=True, pke=True, ram_size=16 << 20)
    mmu.map(0x400000, 8 << 12, user=True, writable=False)
    mmu.map(0x800000, 16 << 12, user=True, nx=True)
    mmu.map(0xFFFFFFFF81000000, 2 << 20, page_size=2 << 20, writable=False)
    mmu.map(0x7FFF_0000_0000, 4 << 12, pa=1 << 40, user=True)      # frames outside RAM
    return mmu


def test_poisoned_pool_1d(poisoned_pool):
    w = _guest_1d().walker()
    b = _mixed_batch()
    for kw in ({}, {"memo": False}, {"order": "grouped"}, {"prefetch": False}):
        got = w.translate(b, **kw)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(POOL, "empty", _fresh_empty)
            want = w.translate(b, **kw)
        _frames_equal(got, want)
        assert set(np.unique(got.fault)) >= {0, 1, 2}          # success, #PF, #GP all seen


def test_poisoned_pool_nested_tdp_tlb_whatif(poisoned_pool):
    from vecmmu import CpuRole, EptRole, NestedGuest
    from vecmmu.analysis.whatif import whatif
    from vecmmu.perf import TlbConfig, simulate
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46, smep=True), EptRole(mbec=True),
                    tdp_page_size=4096, guest_ram=16 << 20)
    g.guest.map(0x400000, 8 << 12, user=True, writable=False)
    g.guest.map(0xFFFFFFFF81000000, 4 << 12, writable=False)
    code = g.guest.get_entry(0x400000, 1) & ~0xFFF
    g.tdp.protect(code, 0x1000, xs=True, xu=False)
    w = g.walker()
    b = _mixed_batch(seed=4)
    got = [w.translate(b), w.tdp.translate(b["addr"] & np.uint64(0xFFFFFF), "read")]
    wi = whatif(w, b, ["no smep:smep=0", "no mbec:mbec=0"])
    mw = _guest_1d().walker()
    tr = mw.translate(_mixed_batch(seed=5), trace=True)
    run = simulate(tr, TlbConfig.skylake())
    with pytest.MonkeyPatch.context() as m:
        m.setattr(POOL, "empty", _fresh_empty)
        want = [w.translate(b), w.tdp.translate(b["addr"] & np.uint64(0xFFFFFF), "read")]
        wi2 = whatif(w, b, ["no smep:smep=0", "no mbec:mbec=0"])
        run2 = simulate(tr, TlbConfig.skylake())
    for x, y in zip(got, want):
        _frames_equal(x, y)
    import pandas as pd
    pd.testing.assert_frame_equal(wi.summary(), wi2.summary())
    assert np.array_equal(wi.fault, wi2.fault)
    pd.testing.assert_frame_equal(run.to_frame(), run2.to_frame())


def test_default_cap_from_the_environment(monkeypatch):
    from vecmmu.bufpool import default_max_bytes
    monkeypatch.delenv("VECMMU_POOL_BYTES", raising=False)
    d = default_max_bytes()
    assert 0 < d <= 1 << 30
    for text, want in (("0", 0), ("123", 123), ("512M", 512 << 20), ("2g", 2 << 30),
                       (" 64 KiB ", 64 << 10), ("", d)):
        monkeypatch.setenv("VECMMU_POOL_BYTES", text)
        assert default_max_bytes() == want
        assert BufferPool().max_bytes == want
    for bad in ("lots", "-5", "1.5G", "12T"):
        monkeypatch.setenv("VECMMU_POOL_BYTES", bad)
        with pytest.raises(ValueError, match="VECMMU_POOL_BYTES"):
            default_max_bytes()
