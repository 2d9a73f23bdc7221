"""The one place that sets Numba options. No other file writes ``numba.njit(...)``.

``cache=True`` makes a warm start cheap; ``nogil=True`` lets Dask and threads overlap, and
is how batches run in parallel: every batch driver is a kernel of one part of its batch,
and :func:`run_parts` runs the parts on one thread each (no ``prange`` anywhere: a parfor
costs seconds of compiling per driver). No fastmath (the kernels are integer code and
must be exact); bounds checks off, so the kernels bounds-check every memory read
themselves.
"""
import concurrent.futures
import hashlib
import os
import threading
from pathlib import Path

import numba


def _invalidate_stale_cache() -> None:
    """Numba keys a cached function on its own file only, so a driver cached in one module
    keeps stale code when a walker it calls (another module) changes. Keep a digest of all
    kernel sources beside the cache and drop the cache when the digest changes."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    # the directory Numba uses for this package's kernels (and nothing else of the user's)
    cache = Path(user_dir) / here.relative_to(here.anchor) if user_dir else here / "__pycache__"
    stamp = cache / "vecmmu-kernels.sha256"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink(missing_ok=True)
        stamp.write_text(digest)
    except OSError:        # a read-only install: Numba then compiles without caching
        pass


_invalidate_stale_cache()

OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy", boundscheck=False)


def jit(fn):
    """A serial kernel or an inlinable helper."""
    return numba.njit(**OPTIONS)(fn)


def jit_nrt_free(fn):
    """A per-address helper: compiled without Numba's reference counting (``_nrt=False``).

    Such helpers only read and write arrays they are given and never allocate, so the
    atomic incref/decref pairs Numba would emit around every array argument, slice and
    tuple lookup (the largest cost of a walk, measured) are dead weight."""
    return numba.njit(_nrt=False, **OPTIONS)(fn)


def jit_walker(fn):
    """A walker body, inlined into its batch driver at the Numba IR level: a call would
    pass a dozen arrays (several words each) and return an 18-value tuple per address.

    Only for what LLVM would not inline itself (the walker, the memo's hit and fill
    paths, the block prefetch, the slot search on hot paths): Numba copies and re-types
    the callee's IR at every call site, which is most of a cold start's compile time.
    Small helpers are :func:`jit_nrt_free` calls, which LLVM inlines (measured: the first
    translate() on a fresh cache 7.6 -> 5.3 s, at the same walk speed)."""
    return numba.njit(inline="always", **OPTIONS)(fn)


_pool = None
_pool_pid = None
_pool_lock = threading.Lock()
_worker = threading.local()
PASS_UNIT = 1 << 16         # records per part of a streaming pass (batch check, split, what-if)


@jit
def part_bounds(n, parts, t, unit):
    """Items ``lo..hi`` of part ``t`` of ``parts``: whole ranges of ``unit`` items (the
    last may be short), the same split in every pass over the same items. Every one-part
    kernel splits its batch with this."""
    nu = (n + unit - 1) // unit
    return min(n, (t * nu // parts) * unit), min(n, ((t + 1) * nu // parts) * unit)


def parts_for(n: int, unit: int) -> int:
    """Parallel parts for ``n`` items: one per thread (``numba.get_num_threads()``), but
    no more than there are ranges of ``unit`` items (waking a thread for a small part
    costs more than the part). Results never depend on it."""
    return max(1, min(numba.get_num_threads(), -(-int(n) // unit)))


def _mark_worker():
    _worker.busy = True


def run_parts(kernel, parts, *args):
    """``kernel(t, *args)`` for every part ``t`` of ``parts``, the parts on Python threads
    (part 0 on the caller's): the drivers that use this are plain ``jit`` kernels of one
    part each, compiled with ``nogil``, so the threads run them in parallel.

    Why not ``prange``: Numba's parfor compile of a driver costs seconds (about 2.8 s of
    the walker's first call, measured), where a part per thread needs no parfor at all.
    The parts, not the threads, decide the results, so results do not depend on the
    thread count. A call from one of the pool's own threads runs its parts in turn."""
    global _pool, _pool_pid
    if parts <= 1 or getattr(_worker, "busy", False):
        for t in range(parts):
            kernel(t, *args)
        return
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():     # a forked child has no pool threads
            _pool = concurrent.futures.ThreadPoolExecutor(
                max(1, numba.config.NUMBA_NUM_THREADS - 1), thread_name_prefix="vecmmu-part",
                initializer=_mark_worker)
            _pool_pid = os.getpid()
    futures = [_pool.submit(kernel, t, *args) for t in range(1, parts)]
    try:
        kernel(0, *args)
    finally:
        concurrent.futures.wait(futures)      # the parts write the same outputs
    for f in futures:
        f.result()
