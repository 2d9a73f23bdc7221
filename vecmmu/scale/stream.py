"""Traces larger than memory: translate or summarise a trace file chunk by chunk.

Memory use is bounded by the chunk (``chunk`` accesses: the batch, its results and the
reader's buffers), the walker's memory, and the summary's own tables, never by the length
of the trace. :func:`summarise` keeps a :class:`~vecmmu.analysis.stats.TraceStats`
(counts; its distinct-page set is capped at 4 Mi pages and faulting pages grow with the
distinct faulting pages, not with the trace). :func:`translate_to_parquet` streams the
result rows into a Parquet file, written to a temporary name beside the target and
renamed into place only when complete (nothing half-written on failure).

>>> from vecmmu import Mmu
>>> from vecmmu.io import write_lackey
>>> from vecmmu.io.synth import uniform
>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> mmu = Mmu.for_mode("4level", ram_size=1 << 24)
>>> _ = mmu.map(0x400000, 0x10000, user=True)
>>> _ = write_lackey(os.path.join(d, "t.lackey"), uniform(5000, 0x400000, 0x20000))
>>> st = summarise(os.path.join(d, "t.lackey"), mmu.walker(), chunk=1024)
>>> st.accesses
5000
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..analysis.stats import TraceStats
from ..io.traces import open_trace

DEFAULT_STREAM_CHUNK = 1 << 20


def summarise(path, walk, *, format: str | None = None, chunk: int = DEFAULT_STREAM_CHUNK,
              ad: str | None = None, threads: int | None = None, stats: TraceStats | None = None,
              progress: bool | None = None) -> TraceStats:
    """Fault statistics of a trace file of any length, one chunk at a time.

    ``ad`` is passed to :meth:`PageWalk.translate` per chunk ("trace" keeps trace order
    across chunks, since each chunk sees the flags written by those before it)."""
    st = TraceStats() if stats is None else stats
    reader = open_trace(path, format, chunk=int(chunk), progress=progress)
    for batch in reader:
        res = walk.translate(batch, ad=ad, threads=threads, chunk=int(chunk), progress=False)
        st.add(res, n_accesses=batch.shape[0])
        del res, batch
    return st


def translate_to_parquet(path, walk, out, *, format: str | None = None,
                         chunk: int = DEFAULT_STREAM_CHUNK, ad: str | None = None,
                         threads: int | None = None, compression: str = "zstd") -> int:
    """Translate a trace file chunk by chunk into a Parquet table of results (the columns
    of :meth:`~vecmmu.Translation.to_frame`; ``access`` counts from the start of the
    trace). Written atomically: a failure leaves no file at ``out``. Returns the rows."""
    from ..io.tables import _pyarrow
    pa, pq = _pyarrow()
    out = Path(os.fspath(out))
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    os.close(fd)
    rows = offset = 0
    writer = None
    try:
        for batch in open_trace(path, format, chunk=int(chunk)):
            df = walk.translate(batch, ad=ad, threads=threads, chunk=int(chunk),
                                progress=False).to_frame()
            df["access"] = df["access"].to_numpy() + offset
            offset += batch.shape[0]
            t = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema, compression=compression)
            writer.write_table(t)
            rows += len(df)
        if writer is None:
            import numpy as np
            from ..access import ACCESS_DTYPE
            t = pa.Table.from_pandas(walk.translate(np.zeros(0, ACCESS_DTYPE)).to_frame(),
                                     preserve_index=False)
            writer = pq.ParquetWriter(tmp, t.schema, compression=compression)
        writer.close()
        writer = None
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return rows
