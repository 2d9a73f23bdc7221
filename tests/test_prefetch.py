"""The table prefetch of ``cpu_translate`` (``translate(prefetch=...)``, kernels/cpu_walk.py),
and its streaming result stores (large batches write scattered blocks past the caches).

The prefetch is a hint, so two things are checked: results never depend on it (here on built
tables; on random garbage tables in test_walk_properties.py), and, with the JIT off,
where the prefetch intrinsic is a Python function that can be watched, it requests
exactly the entries below the root that the walks then read: a wrong index, level or
large-page rule would still give right answers, only slowly, and nothing else would notice.
"""
import numba
import numpy as np
import pytest

from vecmmu import Fault, Mmu
from vecmmu.kernels import cpu_walk

watchable = pytest.mark.skipif(
    not numba.config.DISABLE_JIT,
    reason="the prefetch hint is a Python function only with NUMBA_DISABLE_JIT=1")


def _guest(mode, ram_size=64 << 20):
    """Scattered 4 KiB runs, 2 MiB and 1 GiB pages, holes: every way a walk can stop."""
    m = Mmu.for_mode(mode, ram_size=ram_size, gbpages=True)
    rng = np.random.default_rng(5)
    top = 1 << (47 if mode == "4level" else 56)
    vas = []
    for k in range(40):
        va = int(rng.integers(0, top >> 21)) << 21
        m.map(va, 3 * 4096, user=bool(k & 1))
        vas += [va, va + 4096 + 5, va + 2 * 4096 + 4095, va + 3 * 4096]   # last: not present
    for k in range(6):
        va = (int(rng.integers(0, top >> 30)) << 30) | (1 << 29)
        m.map(va, 2 << 20, pa=0x20_0000 * (k + 1), page_size=2 << 20)
        vas += [va + 77, va + (1 << 20)]
    va = int(rng.integers(0, top >> 30)) << 30
    m.map(va, 1 << 30, pa=1 << 30, page_size=1 << 30)
    vas += [va, va + 12345]
    vas += [int(x) << 12 for x in rng.integers(0, top >> 12, 50)]          # mostly unmapped
    vas = np.array(vas, dtype=np.uint64)
    L = cpu_walk.LANES
    while True:          # scattered: no block of LANES starts and ends in one 2 MiB region
        vas = rng.permutation(vas)
        first, last = vas[::L], vas[np.minimum(np.arange(L - 1, vas.shape[0] + L - 1, L), vas.shape[0] - 1)]
        if ((first ^ last) >> np.uint64(21)).all():
            return m, vas


@pytest.mark.parametrize("mode", ["4level", "5level"])
def test_results_do_not_depend_on_prefetch(mode):
    m, vas = _guest(mode)
    w = m.walker()
    kinds = np.arange(vas.shape[0]) % 3
    off = w.translate(vas, kinds, user=kinds == 0, trace=True, prefetch=False)
    for order in ("input", "grouped"):
        on = w.translate(vas, kinds, user=kinds == 0, trace=True, prefetch=True, order=order)
        for col, v in off.columns().items():
            assert np.array_equal(v, on.columns()[col]), (col, order)
        assert np.array_equal(off.trace_addr, on.trace_addr)


@watchable
@pytest.mark.nojit
@pytest.mark.parametrize("mode", ["4level", "5level"])
def test_prefetch_requests_the_entries_walks_read(mode, monkeypatch):
    m, vas = _guest(mode)
    w = m.walker()
    seen = []
    monkeypatch.setattr(cpu_walk, "prefetch", seen.append)
    r = w.translate(vas, trace=True, prefetch=True)
    slot_base, _, slot_ptr = m.mem.slot_pointers()
    assert slot_base.shape[0] == 1
    requested = sorted(int(p) - int(slot_ptr[0]) + int(slot_base[0]) for p in seen)
    root_level = 4 if mode == "4level" else 5
    walked = sorted(int(a) for a in r.trace_addr[:, :root_level - 1].ravel() if a >= 0)
    assert requested == walked            # one request per entry below the root, no more


@watchable
@pytest.mark.nojit
def test_local_blocks_skip_the_prefetch(monkeypatch):
    """A block of walks from one 2 MiB region is not prefetched (its lines are in cache
    after the first walk); a scattered block is; prefetch=False turns it off. (16 walks
    make one block: ``cpu_walk.LANES`` is larger.)"""
    seen = []
    monkeypatch.setattr(cpu_walk, "prefetch", seen.append)
    m = Mmu.for_mode("4level", ram_size=16 << 20)
    m.map(0x40_0000, 16 * 4096)
    m.map(0x7F00_0000_0000, 4096)
    w = m.walker()
    local = 0x40_0000 + 4096 * np.arange(16, dtype=np.uint64)
    assert cpu_walk.LANES >= 16
    w.translate(local)
    assert seen == []
    scattered = local.copy()
    scattered[-1] = 0x7F00_0000_0000
    w.translate(scattered)
    assert len(seen) == 3 * 16            # PDPTE, PDE, PTE of every walk
    seen.clear()
    w.translate(scattered, prefetch=False)
    assert seen == []


# --- streaming result stores --------------------------------------------------------------
def _mixed_batch(vas, n, seed=3):
    rng = np.random.default_rng(seed)
    addr = vas[rng.integers(0, vas.shape[0], n)]
    kind = rng.integers(0, 3, n).astype(np.uint8)
    return addr, kind, rng.random(n) < 0.5


def test_results_do_not_depend_on_streaming_stores():
    """A call of at least STREAM_MIN accesses streams the results of its scattered blocks;
    smaller chunks do not, nor does a chunk whose outputs start off an 8-byte boundary
    (chunk = STREAM_MIN + 1 leaves the second chunk's byte columns misaligned). Every
    column is the same either way, partial last blocks included."""
    m, vas = _guest("4level")
    w = m.walker()
    n = 2 * cpu_walk.STREAM_MIN + 3 * cpu_walk.LANES + 5
    addr, kind, user = _mixed_batch(vas, n)
    streamed = w.translate(addr, kind, user=user)
    for col, v in streamed.columns().items():
        if col in ("gpa", "fault", "refs"):
            assert v.ctypes.data % 64 == 0, col          # outputs start on a cache line
    for chunk in (cpu_walk.STREAM_MIN // 2, cpu_walk.STREAM_MIN + 1):
        plain = w.translate(addr, kind, user=user, chunk=chunk)
        for col, v in plain.columns().items():
            assert np.array_equal(v, streamed.columns()[col]), (col, chunk)


@watchable
@pytest.mark.nojit
def test_scattered_blocks_are_streamed_in_whole(monkeypatch):
    """With the JIT off the streaming store is a Python function: every full scattered
    block writes its 4 word columns and 7 byte columns (LANES results each) with it; a
    partial block, a call below STREAM_MIN, or outputs off an 8-byte boundary do not;
    and the results are the same."""
    m, vas = _guest("4level")
    w = m.walker()
    plain = w.translate(vas, trace=False)
    count = [0]
    real = cpu_walk.store_stream_u64

    def counting(addr, value):
        count[0] += 1
        real(addr, value)

    monkeypatch.setattr(cpu_walk, "store_stream_u64", counting)
    monkeypatch.setattr(cpu_walk, "STREAM_MIN", vas.shape[0])
    L = cpu_walk.LANES
    streamed = w.translate(vas)
    assert count[0] == (vas.shape[0] // L) * (4 * L + 7 * L // 8)
    for col, v in plain.columns().items():
        assert np.array_equal(v, streamed.columns()[col]), col
    count[0] = 0
    w.translate(vas[:-1])
    assert count[0] == 0
    # two chunks: the first (vas and one more) streams its 3 full blocks; the second
    # starts at an odd index, so its byte columns are misaligned and it does not stream
    assert vas.shape[0] // L == 3
    both = np.concatenate([vas, vas])
    count[0] = 0
    r = w.translate(both, chunk=vas.shape[0] + 1)
    assert count[0] == 3 * (4 * L + 7 * L // 8)
    for col, v in plain.columns().items():
        if col != "access":                       # the access index runs on
            assert np.array_equal(np.concatenate([v, v]), r.columns()[col]), col


@watchable
@pytest.mark.nojit
def test_memo_hits_are_not_prefetched_or_streamed(monkeypatch):
    """A scattered block looks its pages up in the walk memo first: walks that hit are not
    prefetched, and a block of hits is not streamed (a real trace's blocks span regions,
    but its pages are in the memo). The same 64 scattered walks twice in one call: the
    second block requests (almost) nothing and streams nothing, and the results repeat."""
    m, vas = _guest("4level")
    w = m.walker()
    L = cpu_walk.LANES
    kept = vas[w.translate(vas).fault != Fault.UNBACKED]    # outcomes the memo keeps
    once = kept[:L]
    assert (int(once[0]) ^ int(once[-1])) >> 21          # a scattered block
    seen, streamed = [], [0]
    monkeypatch.setattr(cpu_walk, "prefetch", seen.append)
    real = cpu_walk.store_stream_u64

    def counting(addr, value):
        streamed[0] += 1
        real(addr, value)

    monkeypatch.setattr(cpu_walk, "store_stream_u64", counting)
    monkeypatch.setattr(cpu_walk, "STREAM_MIN", L)
    one = w.translate(once)
    first = (len(seen), streamed[0])
    assert first[0] > 0 and first[1] == 4 * L + 7 * L // 8
    seen.clear()
    streamed[0] = 0
    two = w.translate(np.concatenate([once, once]))
    # the second block: memo hits, but for the odd page its 2-way set did not keep; with
    # every walk prefetched it would request as much as the first
    assert first[0] <= len(seen) <= first[0] + first[0] // 10
    assert streamed[0] == first[1]
    for col, v in one.columns().items():
        if col != "access":
            assert np.array_equal(np.concatenate([v, v]), two.columns()[col]), col


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="reads the compiled code")
def test_streaming_store_and_fence_instructions():
    """Non-temporal stores are weakly ordered; the manuals promise their ordering only for
    SFENCE and MFENCE (LLVM's own fence becomes a locked instruction). The intrinsics the
    walk kernel ends its streaming with compile to movnti and sfence."""
    from vecmmu.kernels.physmem import store_fence, store_stream_u64

    @numba.njit(cache=False)
    def put(p, v):
        store_stream_u64(p, v)
        store_fence()

    a = np.zeros(2, np.int64)
    put(a.ctypes.data, 7)
    assert list(a) == [7, 0]
    asm = "\n".join(put.inspect_asm().values())
    assert "movnti" in asm and "sfence" in asm
