"""Result buffers recycled between calls.

A 1-D walk of 10 M accesses writes 390 MiB of result columns. Fresh memory costs more than
the walk's own stores: the kernel faults every page in and the OS zeroes it first (about
65 ms per 400 MiB here, a sixth of a large ``translate()``). Most large results are dropped
soon after they are made (a benchmark loop; a trace processed chunk by chunk, each chunk's
result summarised and let go), so :class:`BufferPool` keeps the memory of dropped results
and hands it to the next call, already faulted in.

A buffer goes back to the pool only when nothing can see it any more: every array handed
out is a view of a small :class:`_Lease` object (its ``base``), and numpy keeps a view's
base alive for as long as the view, or any view of it, lives. The lease gives its buffer
back from ``__del__``, that is when the last of those views is gone. So recycling changes
no result and no array a caller still holds.

Only buffers of at least ``min_bytes`` are pooled (small ones are cheap to allocate), and
the pool keeps at most ``max_bytes`` of idle memory (the oldest idle buffer is dropped
first): by default 1 GiB or a sixteenth of the machine's memory, whichever is less (one
pool per process: Dask workers have one each), or the environment variable
``VECMMU_POOL_BYTES`` (bytes, with an optional K, M or G suffix; 0 turns recycling off).
A request takes the smallest idle buffer that fits and is at most twice its size, so a
small call never pins a huge buffer.

>>> from vecmmu.bufpool import POOL
>>> POOL.max_bytes = 0          # turn recycling off (every buffer is freed when dropped)
"""
from __future__ import annotations

import os
import re
import threading

import numpy as np

__all__ = ["BufferPool", "POOL", "default_max_bytes"]

_ALIGN = 64           # cache-line aligned: the walk kernel streams whole lines


def default_max_bytes() -> int:
    """The idle-memory cap of :data:`POOL`: ``$VECMMU_POOL_BYTES`` if set, else 1 GiB or a
    sixteenth of physical memory, whichever is less."""
    env = os.environ.get("VECMMU_POOL_BYTES")
    if env is not None and env.strip() != "":
        m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[iI]?[bB]?\s*", env)
        if not m:
            raise ValueError(f"VECMMU_POOL_BYTES={env!r}: expected a number of bytes, optionally "
                             f"with a K, M or G suffix (for example 512M), or 0 to turn result "
                             f"recycling off")
        return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    return min(1 << 30, ram // 16) if ram > 0 else 1 << 30


class _Lease:
    """Owner of one pooled buffer while arrays over it live (it is their ``base``)."""

    __slots__ = ("__array_interface__", "_pool", "_raw")

    def __init__(self, pool, raw, shape, dtype, ptr):
        self._pool, self._raw = pool, raw
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (ptr, False)}
        if dtype.fields is not None:              # a record dtype (an access batch)
            self.__array_interface__["descr"] = dtype.descr

    def __del__(self):
        pool, raw = self._pool, self._raw
        self._pool = self._raw = None
        if pool is not None and raw is not None:
            pool._give_back(raw)


class BufferPool:
    """Idle result buffers, reused by the next request that fits (see the module docstring).

    ``empty(shape, dtype)`` is ``np.empty`` on a 64-byte boundary whose memory may come
    from a dropped result. Thread-safe: a buffer is handed to one caller at a time.
    """

    def __init__(self, max_bytes: int | None = None, min_bytes: int = 1 << 20):
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self.min_bytes = int(min_bytes)
        self._idle: list[np.ndarray] = []        # oldest first
        self._lock = threading.Lock()
        self.hits = 0                            # requests served from the pool
        self.misses = 0                          # pooled-size requests that allocated

    @property
    def idle_bytes(self) -> int:
        """Bytes held by idle buffers."""
        return sum(b.nbytes for b in self._idle)

    def clear(self) -> None:
        """Free every idle buffer."""
        with self._lock:
            self._idle = []

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` starting on a cache line."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        need = nbytes + _ALIGN
        if nbytes < self.min_bytes or self.max_bytes <= 0:
            raw = np.empty(need, np.uint8)
            off = -raw.ctypes.data % _ALIGN
            return raw[off:off + nbytes].view(dtype).reshape(shape)
        raw = None
        with self._lock:
            best = -1
            for j, b in enumerate(self._idle):          # the smallest that fits
                if need <= b.nbytes <= 2 * need and (best < 0
                                                     or b.nbytes < self._idle[best].nbytes):
                    best = j
            if best >= 0:
                raw = self._idle.pop(best)
                self.hits += 1
            else:
                self.misses += 1
        if raw is None:
            raw = np.empty(need, np.uint8)
        ptr = raw.ctypes.data + (-raw.ctypes.data % _ALIGN)
        return np.asarray(_Lease(self, raw, shape, dtype, ptr))

    def _give_back(self, raw: np.ndarray) -> None:
        # called from a lease's __del__, possibly while this thread holds the lock (a
        # collection inside empty()): never wait for it, drop the buffer instead
        if not self._lock.acquire(blocking=False):
            return
        try:
            if raw.nbytes > self.max_bytes:
                return
            self._idle.append(raw)
            total = self.idle_bytes
            while total > self.max_bytes:
                total -= self._idle.pop(0).nbytes
        finally:
            self._lock.release()


POOL = BufferPool()
"""The pool of the walkers' result columns (``PageWalk.translate``)."""
