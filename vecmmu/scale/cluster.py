"""Translation and fault statistics of a Parquet trace dataset on Dask (optional extra).

``pip install 'vecmmu[dask]'`` (``dask[dataframe]`` and ``distributed``). The dataset is
read with :func:`dask.dataframe.read_parquet` (one file, a directory of files, or a glob;
the schema of :mod:`vecmmu.io.tables`, as :func:`vecmmu.io.write_parquet` writes it) and
processed partition by partition: each partition becomes an access batch and goes through
the jitted walkers, which release the GIL (``nogil=True``), so a worker's threads run in
parallel. Statistics are reduced inside each partition (one
:class:`~vecmmu.analysis.stats.TraceStats` each) and merged in a tree, so only counts
cross the network.

The walker is shipped once per worker: :class:`~vecmmu.scale.spec.WalkSpec` (the roles,
roots and the *non-zero pages* of physical memory, not the lazily allocated zeros) is
scattered with ``broadcast=True`` and rebuilt at most once per worker process (cached by
content hash). Results are identical to the in-process path (``walk.translate`` on the
whole trace; tested on a ``LocalCluster`` with threads and with processes).

A/D flags: in-process, ``ad="trace"`` lets each access see the flags of the accesses
before it. That order does not exist across workers, so here A/D write-back runs in
**snapshot mode** only: every access sees the starting memory (results equal
``walk.translate(trace, ad="snapshot")``), and each worker process writes the flags into
*its own copy* of the tables. With ``write_back=True`` the flags every copy set are
OR-reduced and OR-ed into the caller's ``walk.mem`` at the end, which then equals the
memory after the in-process ``ad="snapshot"`` run (A and D bits are only ever set, and
which entries a walk uses does not depend on them). With ``write_back=False`` the caller's
memory is left alone.

Worked example (a two-worker local cluster; for a real cluster see below)::

    from dask.distributed import Client, LocalCluster
    from vecmmu import Mmu
    from vecmmu.io import write_parquet
    from vecmmu.io.synth import uniform
    from vecmmu.scale import cluster

    mmu = Mmu.for_mode("4level", ram_size=1 << 26)
    mmu.map(0x400000, 0x100000, user=True)
    walk = mmu.walker()
    for i in range(4):                              # a dataset of four files
        write_parquet(f"trace/part{i}.parquet",
                      uniform(250_000, 0x3f0000, 0x120000, seed=i))

    with LocalCluster(n_workers=2, threads_per_worker=1) as lc, Client(lc) as client:
        st = cluster.trace_stats("trace/", walk, client=client)
        print(st.text())                            # one TraceStats for the dataset
        df = cluster.translate("trace/", walk, client=client)     # a lazy dask DataFrame
        print(df[df.fault != "none"].head())
        st = cluster.trace_stats("trace/", walk, client=client, ad="snapshot",
                                 write_back=True)   # walk.mem now holds the A/D flags

On a multi-machine cluster, start a scheduler and workers (``dask scheduler`` on one host,
``dask worker tcp://HOST:8786 --nthreads 4`` on each, with vecmmu, numba and pyarrow
installed in the same versions) and connect with ``Client("tcp://HOST:8786")``. The
dataset path must be readable from every worker (a shared file system, or ``s3://...``
with ``s3fs``); the page tables travel with the task graph, so dumps need not be copied.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from ..access import ACCESS_DTYPE
from ..analysis.stats import TraceStats
from ..io._files import TraceError
from ..walk import PageWalk
from . import ad as AD
from .spec import WalkSpec

DASK_HINT = "vecmmu.scale.cluster needs Dask: pip install 'vecmmu[dask]'"

_CACHE: dict = {}           # per process: spec token -> {"walk", "acc", "lock"}
_CACHE_LOCK = threading.Lock()


def _dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError:
        raise ImportError(DASK_HINT) from None
    return dask, dd


# -- worker side ---------------------------------------------------------------------------------

def _state(spec: WalkSpec) -> dict:
    """This process's walker for ``spec`` (built once, then reused by every task)."""
    key = spec.token()
    with _CACHE_LOCK:
        st = _CACHE.get(key)
        if st is None:
            st = _CACHE[key] = {"walk": spec.build(), "acc": None, "lock": threading.Lock()}
        return st


def _acc_walk(spec: WalkSpec, st: dict) -> PageWalk:
    with _CACHE_LOCK:
        if st["acc"] is None:
            st["acc"] = spec.build()         # this process's own copy that collects A/D flags
        return st["acc"]


class _Where:
    def __init__(self, row0):
        self.row0 = row0

    def __call__(self, i):
        return f"dataset row {self.row0 + int(i)}"


def frame_to_batch(df: pd.DataFrame, row0: int = 0, user: bool = True) -> np.ndarray:
    """An access batch from a partition in the Parquet trace schema (errors name the row of
    the dataset)."""
    from ..io.tables import AsidNumbering, columns_to_batch
    cols = {str(c).lower().strip(): df[c] for c in df.columns}
    if not any(a in cols for a in ("address", "addr", "vaddr", "va", "gva")):
        raise TraceError(f"dataset has no address column; columns are {list(df.columns)}")
    if "asid" not in cols and any(k in cols for k in ("cr3", "pid", "process")):
        raise TraceError("dataset has a cr3/pid column but no asid: number the address spaces "
                         "once (vecmmu.io.write_parquet writes asid) so every partition agrees")
    if len(df) == 0:
        return np.zeros(0, ACCESS_DTYPE)
    batch, _ = columns_to_batch(_Where(row0), cols, int(bool(user)), AsidNumbering())
    return batch


def _translate_part(df, spec, offset, kw):
    st = _state(spec)
    batch = frame_to_batch(df, offset)
    res = st["walk"].translate(batch, **kw)
    out = res.to_frame()
    out["access"] = out["access"].to_numpy() + offset
    out.index = pd.RangeIndex(offset, offset + len(out)) if len(out) == len(batch) else \
        pd.Index(np.arange(len(out), dtype=np.int64) + offset)
    return out


def _stats_part(df, spec, offset, kw, ad, want_diff):
    st = _state(spec)
    batch = frame_to_batch(df, offset)
    res = st["walk"].translate(batch, **kw)
    stats = TraceStats()
    stats.add(res, n_accesses=batch.shape[0])
    diff = None
    if ad == "snapshot" and batch.shape[0]:
        acc = _acc_walk(spec, st)
        with st["lock"]:                 # threads of one process share its copy
            r2 = acc.translate(batch, ad="snapshot", trace=True, **kw)
            if want_diff:
                ta = r2.trace_addr[r2.trace_addr >= 0].astype(np.uint64)
                pages = np.unique(ta & ~np.uint64(0xFFF))
                diff = AD.page_diff(st["walk"].mem, acc.mem, pages)
    return stats, diff


def merge_stats(a: TraceStats, b: TraceStats) -> TraceStats:
    """One :class:`TraceStats` with the counts of both (``a`` is updated and returned)."""
    a.by_class += b.by_class
    for k, v in b.codes.items():
        a.codes[k] = a.codes.get(k, 0) + v
    a.shifts += b.shifts
    a.refs += b.refs
    a.n += b.n
    a.accesses += b.accesses
    for k, v in b.fault_pages.items():
        a.fault_pages[k] = a.fault_pages.get(k, 0) + v
    for k, v in b.region_counts.items():
        a.region_counts[k] = a.region_counts.get(k, 0) + v
    for p in b.pages:
        if len(a.pages) >= 1 << 22:
            break
        a.pages.add(p)
    return a


def _merge(x, y):
    return merge_stats(x[0], y[0]), (AD.or_diffs(x[1], y[1]) if x[1] is not None or y[1] is not None
                                     else None)


# -- client side ---------------------------------------------------------------------------------

def read_dataset(path, **kw):
    """``dask.dataframe.read_parquet(path)`` (a file, a directory, a glob or a list)."""
    _, dd = _dask()
    return dd.read_parquet(path, **kw)


def _frame(data):
    _, dd = _dask()
    if isinstance(data, dd.DataFrame):
        return data
    if isinstance(data, pd.DataFrame):
        return dd.from_pandas(data, npartitions=1)
    return read_dataset(data)


def _ship(walk, client):
    if isinstance(walk, WalkSpec):
        spec = walk
    elif isinstance(walk, PageWalk):
        spec = WalkSpec.of(walk)
    else:
        raise TypeError(f"walk must be a PageWalk (or a WalkSpec), not {type(walk).__name__}")
    spec.token()                                  # computed once, here, and shipped with it
    if client is None:
        return spec, spec
    return spec, client.scatter(spec, broadcast=True, hash=False)


def _offsets(ddf, client):
    lens = ddf.map_partitions(len).compute(**({} if client is None else {"scheduler": client}))
    lens = np.asarray(list(lens), dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)


def _check_kw(kw):
    bad = set(kw) - {"trace", "ad", "threads", "chunk"}
    if "ad" in kw:
        raise ValueError("pass ad= to trace_stats (snapshot mode); translate() never writes "
                         "A/D flags on a cluster")
    if bad:
        raise TypeError(f"unexpected keyword(s) {sorted(bad)}; batch fields come from the dataset")
    if "trace" in kw:
        raise ValueError("per-level traces (trace=True) are not returned through a DataFrame; "
                         "translate the rows you need in-process with walk.translate(trace=True)")


def translate(data, walk, *, client=None, **kw):
    """A lazy dask DataFrame of translations, one partition per dataset partition, with the
    columns of :meth:`vecmmu.Translation.to_frame` (``access`` is the row number in the
    whole dataset). ``data`` is a Parquet path/glob/directory or a dask DataFrame in the
    trace schema; ``walk`` a :class:`~vecmmu.PageWalk`; ``client`` a
    ``dask.distributed.Client`` (the walker is scattered to every worker)."""
    _check_kw(kw)
    ddf = _frame(data)
    spec, arg = _ship(walk, client)
    offs = _offsets(ddf, client)
    meta = spec.build().translate(np.zeros(0, ACCESS_DTYPE), **kw).to_frame()

    def part(df, spec_, kw_, partition_info=None):
        i = partition_info["number"] if partition_info else 0
        return _translate_part(df, spec_, int(offs[i]), kw_)

    return ddf.map_partitions(part, arg, kw, meta=meta, align_dataframes=False)


def trace_stats(data, walk, *, client=None, ad: str | None = None, write_back: bool = False,
                split_every: int = 8, **kw) -> TraceStats:
    """Fault statistics of a dataset (a :class:`~vecmmu.analysis.stats.TraceStats`, equal to
    adding every batch of the in-process path). ``ad="snapshot"`` runs A/D write-back in
    snapshot mode on each worker's own copy of the tables; ``write_back=True`` then ORs the
    flags of every copy into ``walk.mem`` (it must be writable). ``ad="trace"`` needs one
    global order and is refused."""
    dask, _ = _dask()
    _check_kw(kw)
    if ad not in (None, "snapshot"):
        raise ValueError(f"on a cluster A/D write-back runs in snapshot mode only (ad='snapshot');"
                         f" got ad={ad!r}. Trace-order flags need one process: walk.translate("
                         f"batch, ad='trace')")
    if write_back and ad != "snapshot":
        raise ValueError("write_back=True needs ad='snapshot'")
    if ad is not None:
        if not isinstance(walk, PageWalk) or walk.kind != "cpu":
            raise NotImplementedError("A/D write-back is implemented for the 1-D cpu_walk only")
        if write_back:
            ro = [s.name for s in walk.mem.slots if not s.writable]
            if ro:
                raise PermissionError(f"write_back needs writable memory; memslot {ro[0]!r} is "
                                      f"read-only")
    ddf = _frame(data)
    spec, arg = _ship(walk, client)
    offs = _offsets(ddf, client)
    parts = ddf.to_delayed()
    tasks = [dask.delayed(_stats_part, pure=False)(p, arg, int(offs[i]), kw, ad, write_back)
             for i, p in enumerate(parts)]
    if not tasks:
        return TraceStats()
    while len(tasks) > 1:                        # tree reduction
        tasks = [dask.delayed(_reduce_many)(*tasks[j:j + split_every])
                 for j in range(0, len(tasks), split_every)]
    (stats, diff), = dask.compute(*tasks, **({} if client is None else {"scheduler": client}))
    if write_back and diff is not None:
        AD.apply_diff(walk.mem, diff)
    return stats


def _reduce_many(*xs):
    acc = xs[0]
    for x in xs[1:]:
        acc = _merge(acc, x)
    return acc
