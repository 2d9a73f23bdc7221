"""Memory-access traces: one interface for every format, and format detection.

A trace reader is an iterable of access batches (structured arrays of
:data:`vecmmu.ACCESS_DTYPE`, at most ``chunk`` accesses each), so a trace larger than memory
is translated chunk by chunk::

    from vecmmu.io import open_trace
    for batch in open_trace("run.lackey.gz"):
        res = walk.translate(batch)

or read whole with :func:`read_trace`. Formats (``format=`` or detected from the file):

=========== ================================================== ==========================
format      what                                               reader
=========== ================================================== ==========================
lackey      valgrind ``--tool=lackey --trace-mem=yes`` text    :class:`~vecmmu.io.lackey.LackeyReader`
champsim    ChampSim binary ``input_instr`` records (64 bytes) :class:`~vecmmu.io.champsim.ChampSimReader`
csv         CSV with the documented columns                    :class:`~vecmmu.io.tables.CsvReader`
parquet     Parquet with the documented columns                :class:`~vecmmu.io.tables.ParquetReader`
=========== ================================================== ==========================

Any of them may be gzip, xz or bzip2 compressed (detected by magic bytes; Parquet
compresses inside the file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..access import ACCESS_DTYPE, concat_accesses
from ._files import TraceError, check_path, read_head

DEFAULT_CHUNK = 1 << 22          # accesses per batch (about 84 MiB of ACCESS_DTYPE)

FORMATS = ("lackey", "champsim", "csv", "parquet")


class TraceReader:
    """Base of the trace readers: iterate for batches, :meth:`read` for one batch.

    Attributes after (or during) a pass: ``records`` (trace records read: lines, ChampSim
    instructions or table rows) and ``accesses`` (accesses produced). ``asid_keys`` lists,
    for readers that map a process or CR3 column to address spaces, the original value
    of each ``asid`` (``asid_keys[k]`` is the key of asid ``k``).
    """

    format = "?"

    def __init__(self, path, *, chunk: int = DEFAULT_CHUNK, progress: bool | None = None):
        self.path = check_path(path)
        if int(chunk) < 16:
            raise ValueError(f"chunk must be at least 16 accesses, got {chunk}")
        self.chunk = int(chunk)
        self.progress = progress
        self.records = 0
        self.accesses = 0
        self.asid_keys: list = [0]

    def __iter__(self):
        raise NotImplementedError

    def read(self, limit: int | None = None) -> np.ndarray:
        """The whole trace (or its first ``limit`` accesses) as one access batch."""
        parts, n = [], 0
        for b in self:
            if limit is not None and n + b.shape[0] >= limit:
                parts.append(b[:limit - n])
                n = limit
                break
            parts.append(b)
            n += b.shape[0]
        return concat_accesses(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, chunk={self.chunk})"


def make_batch(addr, kind, size, *, user=1, asid=0, ac=0, implicit=0, stack=0) -> np.ndarray:
    """An ACCESS_DTYPE array from already-validated columns (no checks: readers validate)."""
    n = addr.shape[0]
    out = np.zeros(n, dtype=ACCESS_DTYPE)
    if (np.ndim(user) == 0 and np.ndim(asid) == 0 and not (np.ndim(ac) or ac)
            and not (np.ndim(implicit) or implicit) and not (np.ndim(stack) or stack)):
        from ..kernels.trace_parse import pack_accesses
        f = ACCESS_DTYPE.fields
        pack_accesses(out.view(np.uint8), ACCESS_DTYPE.itemsize, f["addr"][1], f["kind"][1],
                      f["user"][1], f["size"][1], f["asid"][1],
                      np.ascontiguousarray(addr, dtype=np.uint64),
                      np.ascontiguousarray(kind, dtype=np.uint8),
                      np.ascontiguousarray(size, dtype=np.uint32), int(user), int(asid))
        return out
    out["addr"] = addr
    out["kind"] = kind
    out["size"] = size
    out["user"] = user
    if np.ndim(asid) or asid:
        out["asid"] = asid
    if np.ndim(ac) or ac:
        out["ac"] = ac
    if np.ndim(implicit) or implicit:
        out["implicit"] = implicit
    if np.ndim(stack) or stack:
        out["stack"] = stack
    return out


# -- detection -----------------------------------------------------------------------------------

_SUFFIXES = {".lackey": "lackey", ".champsim": "champsim", ".champsimtrace": "champsim",
             ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _by_suffix(p: Path) -> str | None:
    for s in reversed(p.suffixes):
        s = s.lower()
        if s in (".gz", ".xz", ".bz2"):
            continue
        return _SUFFIXES.get(s)
    return None


def detect_format(path) -> str:
    """The trace format of ``path``, from its content (decompressed first bytes), then its
    name. Raises :class:`TraceError` when it cannot tell."""
    p = check_path(path)
    if p.stat().st_size == 0:
        raise TraceError(f"{p}: file is empty")
    head = read_head(p, 8192)
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:4] == b"\x7fELF":
        raise TraceError(f"{p}: an ELF file, not a trace (memory dumps go to --dump)")
    text = _looks_text(head)
    if text:
        first = [ln for ln in head.decode("latin-1").splitlines()[:50] if ln.strip()]
        if any(ln.lstrip().startswith(("I ", "L ", "S ", "M ")) or ln.startswith(("==", "--"))
               for ln in first[:20]) and not ("," in first[0] and "addr" in first[0].lower()):
            return "lackey"
        if first and "," in first[0] or (first and "\t" in first[0]):
            return "csv"
        by = _by_suffix(p)
        if by in ("lackey", "csv"):
            return by
        raise TraceError(f"{p}: a text file that is neither a lackey trace (lines 'I  addr,size', "
                         f"' L addr,size', ...) nor a CSV with a header; first line: "
                         f"{first[0][:80]!r}" if first else f"{p}: a text file with no lines")
    by = _by_suffix(p)
    if by in ("champsim", None):
        return "champsim"
    raise TraceError(f"{p}: binary content, but the name says {by}; pass the format explicitly")


def _looks_text(head: bytes) -> bool:
    if not head:
        return False
    sample = head[:4096]
    bad = sum(1 for b in sample if b < 9 or 13 < b < 32 or b == 127)
    return bad == 0


def open_trace(path, format: str | None = None, **kw) -> TraceReader:
    """A reader for ``path`` (format detected unless given); keywords go to the reader."""
    fmt = format or detect_format(path)
    if fmt == "lackey":
        from .lackey import LackeyReader
        return LackeyReader(path, **kw)
    if fmt == "champsim":
        from .champsim import ChampSimReader
        return ChampSimReader(path, **kw)
    if fmt == "csv":
        from .tables import CsvReader
        return CsvReader(path, **kw)
    if fmt == "parquet":
        from .tables import ParquetReader
        return ParquetReader(path, **kw)
    raise ValueError(f"unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}")


def read_trace(path, format: str | None = None, *, limit: int | None = None, **kw) -> np.ndarray:
    """The whole trace as one access batch (see :func:`open_trace`)."""
    return open_trace(path, format, **kw).read(limit)
