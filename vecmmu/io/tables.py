"""Tabular traces: CSV and Parquet, one access per row, and the Parquet/CSV writers.

The schema (column names are case-insensitive; only ``address`` is required):

============= ===================================== ======================================
column        values                                default / meaning
============= ===================================== ======================================
address       integer: decimal, or hex with ``0x``  the linear address (alias ``addr``;
              (CSV); u64/i64 or hex strings          ``vaddr``)
              (Parquet)
kind          read / write / fetch (also r/w/x,     ``read``
              load/store/exec, L/S/I, 0/1/2)
privilege     user / supervisor (also u/s,          ``user``; an integer is the CPL, and
              kernel), or the CPL 0..3              only CPL 3 is user mode
user          0/1 (instead of privilege)
size          bytes, 1..4096                         1
asid          address-space index, used as is        0
cr3 / pid     any integer (``process`` also)         each distinct value becomes one
                                                     address space, numbered in order of
                                                     first appearance (``reader.asid_keys``)
timestamp     any number                             kept, not used by the walk
cpu           integer                                kept, not used by the walk
ac, implicit, 0/1                                    EFLAGS.AC, implicit supervisor access,
stack                                                stack reference
============= ===================================== ======================================

Other columns are ignored. A bad value stops the reader with the file, the line (CSV;
line 1 is the header) or row (Parquet), the column and the value. The Parquet writer
(:func:`write_parquet`) writes this schema, with ``kind`` and ``privilege`` as dictionary
strings, and streams: it takes one access batch or an iterable of them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..access import ACCESS_DTYPE
from ..kernels.trace_parse import parse_int_cells
from ._files import InputFile, Progress, TraceError, atomic_output, check_path
from .traces import TraceReader

KIND_WORDS = {"read": 0, "r": 0, "load": 0, "l": 0, "ld": 0, "0": 0,
              "write": 1, "w": 1, "store": 1, "s": 1, "st": 1, "1": 1,
              "fetch": 2, "x": 2, "exec": 2, "execute": 2, "i": 2, "f": 2, "ifetch": 2,
              "instr": 2, "2": 2}
PRIV_WORDS = {"user": 1, "u": 1, "usr": 1, "3": 1,
              "supervisor": 0, "s": 0, "sup": 0, "kernel": 0, "k": 0, "0": 0, "1": 0, "2": 0}
KIND_NAMES = ["read", "write", "fetch"]
PRIV_NAMES = ["supervisor", "user"]

_ADDR_NAMES = ("address", "addr", "vaddr", "va", "gva")
_SPACE_NAMES = ("cr3", "pid", "process")
EXTRA_COLUMNS = ("timestamp", "cpu")
PARQUET_HINT = "reading or writing Parquet needs pyarrow: pip install 'vecmmu[parquet]'"


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(PARQUET_HINT) from None
    return pa, pq


class _Where:
    """Turns a row index of a chunk into 'file:line' (CSV) or 'file: row N' (Parquet)."""

    def __init__(self, path, csv: bool):
        self.path, self.csv, self.row0 = path, csv, 0

    def __call__(self, i: int) -> str:
        r = self.row0 + int(i)
        return f"{self.path}:{r + 2}" if self.csv else f"{self.path}: row {r}"


class _TableReader(TraceReader):
    """Shared column handling of the CSV and Parquet readers."""

    def __init__(self, path, *, chunk: int = 1 << 20, user: bool = True,
                 progress: bool | None = None):
        super().__init__(path, chunk=chunk, progress=progress)
        self.default_user = int(bool(user))
        self.asid_keys = []
        self._space = {}

    # subclasses yield (row0, {lower-case name: numpy array or pandas Series})
    def _raw_chunks(self):
        raise NotImplementedError

    def _columns(self, names) -> dict:
        low = {n.lower().strip(): n for n in names}
        addr = next((low[a] for a in _ADDR_NAMES if a in low), None)
        if addr is None:
            raise TraceError(f"{self.path}: no address column (looked for "
                             f"{', '.join(_ADDR_NAMES)}); columns are {list(names)}")
        return low

    def iter_tables(self):
        """``(batch, extras)`` per chunk: ``extras`` holds the ``timestamp``/``cpu`` arrays
        present and ``space`` (the raw cr3/pid values) when the trace has them."""
        self.records = self.accesses = 0
        self.asid_keys, self._space = [], {}
        for where, cols in self._raw_chunks():
            batch, extras = self._convert(where, cols)
            self.records += batch.shape[0]
            self.accesses += batch.shape[0]
            yield batch, extras
        if not self.asid_keys:
            self.asid_keys = [0]

    def __iter__(self):
        for batch, _ in self.iter_tables():
            yield batch

    def _convert(self, where, cols):
        n = len(next(iter(cols.values())))
        out = np.zeros(n, dtype=ACCESS_DTYPE)
        name = next(a for a in _ADDR_NAMES if a in cols)
        out["addr"] = _parse_uint(cols[name], where, name)
        if "kind" in cols:
            out["kind"] = _words(cols["kind"], KIND_WORDS, where, "kind", ints=(0, 2),
                                 expect="read/write/fetch (or r/w/x, 0/1/2)")
        if "privilege" in cols:
            v = cols["privilege"]
            if _is_int(v):
                cpl = _ints(v, where, "privilege", 0, 3, "a CPL 0..3 (3 = user)")
                out["user"] = cpl == 3
            else:
                out["user"] = _words(v, PRIV_WORDS, where, "privilege", ints=None,
                                     expect="user/supervisor (or u/s, kernel, a CPL 0..3)")
        elif "user" in cols:
            out["user"] = _ints(cols["user"], where, "user", 0, 1, "0 or 1")
        else:
            out["user"] = self.default_user
        if "size" in cols:
            out["size"] = _ints(cols["size"], where, "size", 1, 4096, "1..4096 bytes")
        else:
            out["size"] = 1
        for flag in ("ac", "implicit", "stack"):
            if flag in cols:
                out[flag] = _ints(cols[flag], where, flag, 0, 1, "0 or 1")
        extras = {}
        if "asid" in cols:
            out["asid"] = _ints(cols["asid"], where, "asid", 0, 2**32 - 1, "0..2**32-1")
        else:
            sp = next((s for s in _SPACE_NAMES if s in cols), None)
            if sp is not None:
                raw = _parse_uint(cols[sp], where, sp)
                keys, inv = np.unique(raw, return_inverse=True)
                ids = np.empty(keys.shape[0], dtype=np.uint32)
                order = np.argsort(np.array([np.flatnonzero(inv == j)[0] for j in range(keys.shape[0])]))
                for j in order:
                    k = int(keys[j])
                    if k not in self._space:
                        self._space[k] = len(self.asid_keys)
                        self.asid_keys.append(k)
                    ids[j] = self._space[k]
                out["asid"] = ids[inv]
                extras["space"] = raw
        for e in EXTRA_COLUMNS:
            if e in cols:
                extras[e] = np.asarray(cols[e])
        return out, extras


def _is_int(v) -> bool:
    return pd.api.types.is_integer_dtype(getattr(v, "dtype", None)) and \
        not isinstance(v.dtype, pd.CategoricalDtype)


def _first_bad(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _ints(v, where, col, lo, hi, expect):
    s = pd.Series(v) if not isinstance(v, pd.Series) else v
    if not (_is_int(s) or pd.api.types.is_bool_dtype(s.dtype)):
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy() | (num.to_numpy(dtype=float, na_value=np.nan) % 1 != 0)
        if bad.any():
            i = _first_bad(bad)
            raise TraceError(f"{where(i)}: column '{col}': {s.iloc[i]!r} is not an integer "
                             f"(expected {expect})")
        s = num.astype(np.int64)
    a = s.to_numpy()
    bad = (a < lo) | (a > hi)
    if bad.any():
        i = _first_bad(bad)
        raise TraceError(f"{where(i)}: column '{col}': {a[i]} is out of range (expected {expect})")
    return a


def _words(v, table, where, col, ints, expect):
    s = pd.Series(v) if not isinstance(v, pd.Series) else v
    if ints is not None and _is_int(s):
        return _ints(s, where, col, ints[0], ints[1], expect)
    if s.isna().any():
        i = _first_bad(s.isna().to_numpy())
        raise TraceError(f"{where(i)}: column '{col}' is empty (expected {expect})")
    cat = pd.Categorical(s.astype(str))
    lut = np.empty(len(cat.categories), dtype=np.uint8)
    for j, word in enumerate(cat.categories):
        key = str(word).strip().lower()
        if key not in table:
            i = _first_bad(cat.codes == j)
            raise TraceError(f"{where(i)}: column '{col}': {str(word)!r} is not one of {expect}")
        lut[j] = table[key]
    return lut[cat.codes]


def _parse_uint(v, where, col) -> np.ndarray:
    """Addresses from integers, or from decimal / 0x-hex strings (jitted parser)."""
    if isinstance(v, pd.Series) and _is_int(v):
        a = v.to_numpy()
    elif isinstance(v, np.ndarray) and v.dtype.kind in "iu":
        a = v
    else:
        s = pd.Series(v) if not isinstance(v, pd.Series) else v
        if pd.api.types.is_float_dtype(s.dtype):
            i = _first_bad(np.ones(len(s), bool)) if len(s) else 0
            raise TraceError(f"{where(i)}: column '{col}' holds floating-point numbers "
                             f"({s.iloc[i]!r}); addresses must be integers (decimal or 0x hex)")
        if s.isna().any():
            i = _first_bad(s.isna().to_numpy())
            raise TraceError(f"{where(i)}: column '{col}' is empty; expected an integer "
                             f"(decimal or 0x hex)")
        try:
            cells = s.to_numpy().astype("S")
        except UnicodeEncodeError:
            cells = np.array([str(x).encode("ascii", "replace") for x in s], dtype="S")
        w = cells.dtype.itemsize
        out = np.empty(cells.shape[0], dtype=np.uint64)
        bad = int(parse_int_cells(cells.view(np.uint8).reshape(-1, w), out, 10))
        if bad >= 0:
            raise TraceError(f"{where(bad)}: column '{col}': {s.iloc[bad]!r} is not an unsigned "
                             f"64-bit integer (decimal, or hex with 0x)")
        return out
    if a.dtype.kind == "i":
        if (a < 0).any():
            i = _first_bad(a < 0)
            raise TraceError(f"{where(i)}: column '{col}': {a[i]} is negative; addresses are "
                             f"unsigned (write them in hex with 0x)")
        a = a.astype(np.uint64)
    return a.astype(np.uint64, copy=False)


class CsvReader(_TableReader):
    """CSV (or TSV) trace with a header row, in the schema of this module; plain or
    gzip/xz/bzip2. ``chunk`` rows per batch; ``user`` the privilege when there is no
    privilege column (default user mode)."""

    format = "csv"

    def __init__(self, path, *, chunk: int = 1 << 20, user: bool = True, sep: str | None = None,
                 progress: bool | None = None):
        super().__init__(path, chunk=chunk, user=user, progress=progress)
        with InputFile(self.path) as f:
            head = f.read(65536)
            self._compression = {"gzip": "gzip", "xz": "xz", "bzip2": "bz2"}.get(f.compression)
            self._size = f.size
        if not head.strip():
            raise TraceError(f"{self.path}: file is empty")
        first = head.split(b"\n", 1)[0].decode("latin-1")
        self.sep = sep or ("\t" if first.count("\t") > first.count(",") else ",")
        self.header = [c.strip() for c in first.strip("\r").split(self.sep)]
        self._columns(self.header)

    def _raw_chunks(self):
        low = {c.lower(): c for c in self.header}
        dtype = {orig: str for key, orig in low.items()
                 if key in _ADDR_NAMES + _SPACE_NAMES + ("kind", "privilege")}
        prog = Progress(None, f"reading {self.path.name}", enabled=self.progress, unit=" rows")
        where = _Where(self.path, csv=True)
        try:
            reader = pd.read_csv(self.path, sep=self.sep, chunksize=self.chunk, dtype=dtype,
                                 compression=self._compression, skip_blank_lines=False,
                                 skipinitialspace=True, engine="c")
            row0 = 0
            for df in reader:
                df.columns = [str(c).strip().lower() for c in df.columns]
                where.row0 = row0
                yield where, {c: df[c] for c in df.columns}
                row0 += len(df)
                prog.update(row0)
        except pd.errors.ParserError as e:
            raise TraceError(f"{self.path}: malformed CSV ({str(e).strip()})") from None
        except (EOFError, OSError) as e:
            raise TraceError(f"{self.path}: corrupt or truncated file ({e})") from None
        finally:
            prog.close()


class ParquetReader(_TableReader):
    """Parquet trace in the schema of this module (needs pyarrow). ``chunk`` rows per batch."""

    format = "parquet"

    def __init__(self, path, *, chunk: int = 1 << 20, user: bool = True,
                 progress: bool | None = None):
        super().__init__(path, chunk=chunk, user=user, progress=progress)
        _pa, pq = _pyarrow()
        try:
            # pre_buffer=False: with pyarrow's default (True), the batch reader caches every
            # column chunk it reads until it is closed, so memory grows with the file
            self._pf = pq.ParquetFile(self.path, pre_buffer=False)
        except Exception as e:      # pyarrow raises ArrowInvalid / OSError variants
            raise TraceError(f"{self.path}: not a readable Parquet file ({e})") from None
        self.header = self._pf.schema_arrow.names
        self._columns(self.header)
        meta = self._pf.schema_arrow.metadata or {}
        self._stored_keys = json.loads(meta[b"vecmmu.asid_keys"]) if b"vecmmu.asid_keys" in meta else None

    def _raw_chunks(self):
        where = _Where(self.path, csv=False)
        total = self._pf.metadata.num_rows
        prog = Progress(total, f"reading {self.path.name}", enabled=self.progress)
        row0 = 0
        try:
            for rb in self._pf.iter_batches(batch_size=self.chunk):
                cols = {}
                for name, col in zip(rb.schema.names, rb.columns):
                    key = name.lower().strip()
                    if hasattr(col, "dictionary"):
                        col = col.dictionary_decode()
                    cols[key] = col.to_pandas() if col.null_count or col.type.id in (13, 14, 32, 33) \
                        else col.to_numpy(zero_copy_only=False)
                where.row0 = row0
                yield where, cols
                row0 += rb.num_rows
                prog.update(row0)
        except OSError as e:
            raise TraceError(f"{self.path}: corrupt Parquet data ({e})") from None
        finally:
            prog.close()

    def iter_tables(self):
        yield from super().iter_tables()
        if self._stored_keys is not None and self.asid_keys == [0]:
            self.asid_keys = self._stored_keys


def write_parquet(path, trace, *, asid_keys=None, compression: str = "zstd",
                  progress: bool | None = None) -> int:
    """Write an access batch, or an iterable of batches (streamed), as a Parquet trace in
    this module's schema. ``asid_keys`` (the original cr3/pid of each asid) is stored in
    the file's metadata. Returns the number of rows written."""
    pa, pq = _pyarrow()
    batches = [trace] if isinstance(trace, np.ndarray) else trace
    kinds = pa.array(KIND_NAMES)
    privs = pa.array(PRIV_NAMES)
    schema = pa.schema([("address", pa.uint64()),
                        ("kind", pa.dictionary(pa.int8(), pa.string())),
                        ("privilege", pa.dictionary(pa.int8(), pa.string())),
                        ("size", pa.uint32()), ("asid", pa.uint32()),
                        ("ac", pa.uint8()), ("implicit", pa.uint8()), ("stack", pa.uint8())])
    if asid_keys is not None:
        schema = schema.with_metadata({"vecmmu.asid_keys": json.dumps([int(k) for k in asid_keys])})
    n = 0
    prog = Progress(None, f"writing {path}", enabled=progress, unit=" rows")
    with atomic_output(path) as tmp, pq.ParquetWriter(tmp, schema, compression=compression) as w:
        for b in batches:
            if not (isinstance(b, np.ndarray) and b.dtype == ACCESS_DTYPE):
                raise TypeError("write_parquet takes access batches (ACCESS_DTYPE arrays)")
            cols = [pa.array(np.ascontiguousarray(b["addr"])),
                    pa.DictionaryArray.from_arrays(pa.array(b["kind"].astype(np.int8)), kinds),
                    pa.DictionaryArray.from_arrays(pa.array(b["user"].astype(np.int8)), privs),
                    pa.array(np.ascontiguousarray(b["size"])),
                    pa.array(np.ascontiguousarray(b["asid"])),
                    pa.array(np.ascontiguousarray(b["ac"])),
                    pa.array(np.ascontiguousarray(b["implicit"])),
                    pa.array(np.ascontiguousarray(b["stack"]))]
            w.write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))
            n += b.shape[0]
            prog.update(n)
    prog.close()
    return n


def write_csv(path, trace, *, progress: bool | None = None) -> int:
    """Write an access batch, or an iterable of batches, as a CSV trace (hex addresses);
    ``.gz`` in the name compresses. Returns the number of rows."""
    with atomic_output(path) as tmp:
        return _write_csv(tmp, str(path).endswith(".gz"), path, trace, progress)


def _write_csv(tmp, gz, path, trace, progress):
    batches = [trace] if isinstance(trace, np.ndarray) else trace
    n = 0
    prog = Progress(None, f"writing {path}", enabled=progress, unit=" rows")
    kinds = np.array(KIND_NAMES)
    privs = np.array(PRIV_NAMES)
    first = True
    for b in batches:
        df = pd.DataFrame({"address": np.char.add("0x", np.char.mod("%x", b["addr"])) if len(b) else [],
                           "kind": kinds[b["kind"]], "privilege": privs[b["user"]],
                           "size": b["size"], "asid": b["asid"]})
        if gz and not first:
            raise ValueError("write_csv writes .gz files from a single batch only")
        df.to_csv(tmp, mode="w" if first else "a", header=first, index=False,
                  compression="gzip" if gz else None)
        first = False
        n += b.shape[0]
        prog.update(n)
    if first:       # no batches: a header-only file
        pd.DataFrame(columns=["address", "kind", "privilege", "size", "asid"]).to_csv(
            tmp, index=False, compression="gzip" if gz else None)
    prog.close()
    return n
