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

Other columns are ignored (and not read). A bad value stops the reader with the file, the
line (CSV; line 1 is the header) or row (Parquet, from 0), the column and the value: the
first bad cell of the column. The Parquet writer (:func:`write_parquet`) writes this schema,
with ``kind`` and ``privilege`` as dictionary strings, and streams: it takes one access
batch or an iterable of them.

Reading streams in ``chunk`` rows at a time in memory that does not grow with the file. Both
readers go through pyarrow when it is installed (CSV: its streaming reader, every cell read
as bytes; Parquet: batches without pre-buffering); words and small integers (``kind``,
``privilege``, ``size``, ...) are decoded once per distinct value, through the Parquet
dictionary when the column has one, and addresses by a jitted parser. Without pyarrow the
CSV reader uses pandas (``engine="pandas"``): the same values, and errors at the same line.
"""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd

from ..access import ACCESS_DTYPE, concat_accesses
from ..kernels.trace_parse import parse_int_cells
from ._files import InputFile, Progress, TraceError, atomic_output
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
_FLAG_COLUMNS = ("ac", "implicit", "stack")
_KNOWN_COLUMNS = frozenset(_ADDR_NAMES + _SPACE_NAMES + EXTRA_COLUMNS + _FLAG_COLUMNS
                           + ("kind", "privilege", "user", "size", "asid"))
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


# -- columns -------------------------------------------------------------------------------------
#
# The converters below see a column through one small interface, whatever it came from: a
# pyarrow array (the Parquet reader, the CSV reader's arrow engine) or a pandas Series (the
# CSV reader's pandas engine, Dask partitions). ``kind`` is the kind of the values ("int",
# "uint", "float", "bool", "text" or "other"; a dictionary column has the kind of its
# dictionary), and a column gives its values as numbers (``numpy``), as codes into a short
# list of distinct labels (``coded``: words and small integers are looked up once per
# distinct value, never once per row), or as a fixed-width byte matrix for the jitted
# integer parser (``cells``).

_CELL_MAX = 64          # wider address cells go through Python (nothing valid is that wide)


class _ArrowCol:
    """A column of a chunk held as a pyarrow Array (plain or dictionary-encoded)."""

    def __init__(self, a):
        pa, _ = _pyarrow()
        if isinstance(a, pa.ChunkedArray):
            if a.num_chunks == 1:
                a = a.chunk(0)
            elif pa.types.is_dictionary(a.type):
                a = pa.concat_arrays([c.dictionary_decode() for c in a.chunks]) if a.num_chunks \
                    else pa.array([], a.type.value_type)
            else:
                a = a.combine_chunks()
        self.a = a
        self.n = len(a)
        self.is_dict = pa.types.is_dictionary(a.type)
        t = a.type.value_type if self.is_dict else a.type
        self.type_name = str(t)
        if pa.types.is_boolean(t):
            self.kind = "bool"
        elif pa.types.is_unsigned_integer(t):
            self.kind = "uint"
        elif pa.types.is_integer(t):
            self.kind = "int"
        elif pa.types.is_floating(t):
            self.kind = "float"
        elif _arrow_text(pa, t):
            self.kind = "text"
        else:
            self.kind = "other"

    def head(self, k: int) -> "_ArrowCol":
        return _ArrowCol(self.a.slice(0, k))

    def first_null(self) -> int:
        """Index of the first null value, or -1."""
        a = self.a
        if self.is_dict and a.dictionary.null_count:
            a = a.dictionary_decode()
        if not a.null_count:
            return -1
        return int(np.flatnonzero(a.is_null().to_numpy(zero_copy_only=False))[0])

    def numpy(self) -> np.ndarray:
        """The values as a numpy array (nulls, if any, as NaN)."""
        if self.is_dict:
            if self.a.null_count:
                return self.a.dictionary_decode().to_numpy(zero_copy_only=False)
            d = self.a.dictionary.to_numpy(zero_copy_only=False)
            return d[self.a.indices.to_numpy(zero_copy_only=False)]
        return self.a.to_numpy(zero_copy_only=False)

    def coded(self):
        """``(codes, labels)``: ``labels[codes[i]]`` is row ``i`` (no nulls)."""
        _pa, pc = _arrow_compute()
        enc = self.a if self.is_dict else pc.dictionary_encode(self.a)
        return enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_pylist()

    def cells(self):
        """Text values as an ``(n, width)`` uint8 matrix of ASCII cells, right-aligned with
        blanks (the input of ``parse_int_cells``), or None when that does not fit (non-ASCII
        or over-wide cells: the caller then goes through Python)."""
        pa, pc = _arrow_compute()
        a = self.a.dictionary_decode() if self.is_dict else self.a
        if not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
            try:
                a = a.cast(pa.large_string() if pa.types.is_large_binary(a.type) else pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None               # not UTF-8: the slow path names the cell
        n = len(a)
        if n == 0:
            return np.zeros((0, 1), np.uint8)
        w = pc.max(pc.binary_length(a)).as_py() or 0
        if w > _CELL_MAX:
            return None
        w = max(int(w), 1)
        p = pc.utf8_lpad(a, width=w, padding=" ")
        off_t = np.dtype(np.int64 if pa.types.is_large_string(p.type) else np.int32)
        bufs = p.buffers()
        off = np.frombuffer(bufs[1], off_t, count=n + 1, offset=p.offset * off_t.itemsize)
        lo, hi = int(off[0]), int(off[n])
        if hi - lo != n * w:              # a multi-byte character somewhere
            return None
        return np.frombuffer(bufs[2], np.uint8, count=n * w, offset=lo).reshape(n, w)

    def loose_numbers(self) -> np.ndarray:
        """Numbers when every value is one (int64, else float64; empty cells are NaN), else
        the values as they are (for columns that are only carried along)."""
        if self.kind in ("int", "uint", "float", "bool"):
            return self.numpy()
        pa, pc = _arrow_compute()
        a = self.a.dictionary_decode() if self.is_dict else self.a
        try:
            a = a.cast(pa.string())
            a = pc.utf8_trim_whitespace(a)
            a = pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)
            for t in (pa.int64(), pa.float64()):
                try:
                    return a.cast(t).to_numpy(zero_copy_only=False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        return self.a.to_numpy(zero_copy_only=False)

    def value(self, i: int):
        return self.a[int(i)].as_py()


def _arrow_text(pa, t) -> bool:
    checks = ("is_string", "is_large_string", "is_binary", "is_large_binary", "is_string_view",
              "is_binary_view")
    return any(getattr(pa.types, c, lambda _t: False)(t) for c in checks)


class _PandasCol:
    """A column of a chunk held as a pandas Series (or a numpy array)."""

    def __init__(self, s):
        if not isinstance(s, pd.Series):
            s = pd.Series(s)
        self.s = s
        self.n = len(s)
        self.is_cat = isinstance(s.dtype, pd.CategoricalDtype)
        dt = s.cat.categories.dtype if self.is_cat else s.dtype
        self.type_name = str(dt)
        if pd.api.types.is_bool_dtype(dt):
            self.kind = "bool"
        elif pd.api.types.is_unsigned_integer_dtype(dt):
            self.kind = "uint"
        elif pd.api.types.is_integer_dtype(dt):
            self.kind = "int"
        elif pd.api.types.is_float_dtype(dt):
            self.kind = "float"
        elif pd.api.types.is_string_dtype(dt) or pd.api.types.is_object_dtype(dt):
            self.kind = "text"
        else:
            self.kind = "other"

    def head(self, k: int) -> "_PandasCol":
        return _PandasCol(self.s.iloc[:k])

    def first_null(self) -> int:
        na = self.s.isna().to_numpy()
        return int(np.flatnonzero(na)[0]) if na.any() else -1

    def numpy(self) -> np.ndarray:
        s = self.s
        if self.is_cat:
            return np.asarray(s.cat.categories.to_numpy())[s.cat.codes.to_numpy()]
        if isinstance(s.dtype, np.dtype):
            return s.to_numpy()
        if s.isna().any():                 # nullable extension dtypes
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        return s.to_numpy(dtype=getattr(s.dtype, "numpy_dtype", None))

    def coded(self):
        s = self.s
        if self.is_cat:
            return s.cat.codes.to_numpy(), list(s.cat.categories)
        codes, uniques = pd.factorize(s)
        return codes, list(uniques)

    def cells(self):
        try:
            arr = self.s.to_numpy(dtype=object).astype("S")
        except UnicodeEncodeError:
            return None
        if arr.dtype.itemsize > _CELL_MAX:
            return None
        return arr.view(np.uint8).reshape(self.n, arr.dtype.itemsize)

    def loose_numbers(self) -> np.ndarray:
        if self.kind in ("int", "uint", "float", "bool"):
            return self.numpy()
        num = pd.to_numeric(self.s, errors="coerce")
        blank = self.s.isna() | (self.s.astype(str).str.strip() == "")
        if (num.isna() & ~blank).any():
            return self.s.to_numpy()
        return num.to_numpy()

    def value(self, i: int):
        return self.s.iloc[int(i)]


def _column(v):
    """The column interface for a value of a chunk's column dict."""
    if isinstance(v, (_ArrowCol, _PandasCol)):
        return v
    if isinstance(v, (pd.Series, np.ndarray, list)):
        return _PandasCol(v)
    return _ArrowCol(v)


def _arrow_compute():
    pa, _ = _pyarrow()
    import pyarrow.compute as pc
    return pa, pc


def _text(v) -> str:
    """A cell as text (bytes decoded as UTF-8, bad bytes replaced)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _shown(v) -> str:
    """A cell as text for an error message (shortened)."""
    t = _text(v)
    return t if len(t) <= 60 else t[:57] + "..."


_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _int_label(v):
    """An integer from one distinct cell (text or number), or None. Integral decimals and
    exponents ("8.0", "1e3") count, as pandas.to_numeric reads them; so do true/false."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if np.isfinite(v) and float(v).is_integer() else None
    t = _text(v).strip()
    if _INT_RE.fullmatch(t):
        return int(t) if len(t) <= 40 else 1 << 160      # (out of every range)
    if _FLOAT_RE.fullmatch(t):
        f = float(t)
        return int(f) if np.isfinite(f) and f.is_integer() else None
    if t.lower() in ("true", "false"):
        return int(t.lower() == "true")
    return None


def _first(mask) -> int:
    return int(np.flatnonzero(mask)[0])


def _to_uint64(col, where, name) -> np.ndarray:
    """Addresses (and cr3/pid): integers, or decimal / 0x-hex text (jitted parser)."""
    if col.n == 0:
        return np.zeros(0, np.uint64)
    i = col.first_null()
    if i >= 0:
        _to_uint64(col.head(i), where, name)          # an earlier bad cell comes first
        raise TraceError(f"{where(i)}: column '{name}' is empty; expected an integer "
                         f"(decimal or 0x hex)")
    if col.kind in ("int", "uint"):
        a = col.numpy()
        if col.kind == "int":
            neg = a < 0
            if neg.any():
                i = _first(neg)
                raise TraceError(f"{where(i)}: column '{name}': {a[i]} is negative; addresses "
                                 f"are unsigned (write them in hex with 0x)")
        return a.astype(np.uint64, copy=False)
    if col.kind == "float":
        raise TraceError(f"{where(0)}: column '{name}' holds floating-point numbers "
                         f"({col.value(0)!r}); addresses must be integers (decimal or 0x hex)")
    if col.kind != "text":
        raise TraceError(f"{where(0)}: column '{name}' holds {col.type_name} values "
                         f"({_shown(col.value(0))!r}); addresses must be integers (decimal or "
                         f"0x hex)")
    cells = col.cells()
    if cells is None:
        arr = np.array([_text(col.value(j)).encode("ascii", "replace") for j in range(col.n)],
                       dtype="S")
        cells = arr.view(np.uint8).reshape(col.n, arr.dtype.itemsize)
    out = np.empty(col.n, dtype=np.uint64)
    bad = int(parse_int_cells(cells, out, 10))
    if bad >= 0:
        v = _text(col.value(bad))
        if not v.strip():
            raise TraceError(f"{where(bad)}: column '{name}' is empty; expected an integer "
                             f"(decimal or 0x hex)")
        raise TraceError(f"{where(bad)}: column '{name}': {_shown(v)!r} is not an unsigned "
                         f"64-bit integer (decimal, or hex with 0x)")
    return out


def _to_ints(col, where, name, lo, hi, expect) -> np.ndarray:
    """Integers in lo..hi, from integer, boolean, integral float or text columns."""
    if col.n == 0:
        return np.zeros(0, np.int64)
    i = col.first_null()
    if i >= 0:
        _to_ints(col.head(i), where, name, lo, hi, expect)      # an earlier bad cell first
        raise TraceError(f"{where(i)}: column '{name}' is empty (expected {expect})")
    if col.kind == "other":
        raise TraceError(f"{where(0)}: column '{name}' holds {col.type_name} values "
                         f"(expected {expect})")
    if col.kind in ("int", "uint", "bool"):
        a = col.numpy()
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
    elif col.kind == "float":
        a = col.numpy()
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(a) | (a % 1 != 0)
        if bad.any():
            i = _first(bad)
            raise TraceError(f"{where(i)}: column '{name}': {str(float(a[i]))!r} is not an "
                             f"integer (expected {expect})")
        out_of = (a < lo) | (a > hi)
        if out_of.any():
            i = _first(out_of)
            raise TraceError(f"{where(i)}: column '{name}': {int(a[i])} is out of range "
                             f"(expected {expect})")
        return a.astype(np.int64)
    else:
        codes, labels = col.coded()
        lut = np.zeros(len(labels), np.int64)
        msg = [None] * len(labels)
        for j, v in enumerate(labels):
            r = _int_label(v)
            if r is None:
                msg[j] = (f"column '{name}' is empty" if not _text(v).strip() else
                          f"column '{name}': {_shown(v)!r} is not an integer")
            elif not lo <= r <= hi:
                msg[j] = f"column '{name}': {_shown(_text(v).strip())} is out of range"
            else:
                lut[j] = r
        if any(m is not None for m in msg):
            bad = np.array([m is not None for m in msg])[codes]
            if bad.any():
                i = _first(bad)
                raise TraceError(f"{where(i)}: {msg[codes[i]]} (expected {expect})")
        return lut[codes]
    bad = (a < lo) | (a > hi)
    if bad.any():
        i = _first(bad)
        raise TraceError(f"{where(i)}: column '{name}': {a[i]} is out of range (expected {expect})")
    return a


def _to_words(col, table, where, name, expect, ints=None) -> np.ndarray:
    """Words looked up in ``table`` once per distinct value (or integers in ``ints``)."""
    if col.n == 0:
        return np.zeros(0, np.uint8)
    if ints is not None and col.kind in ("int", "uint"):
        return _to_ints(col, where, name, ints[0], ints[1], expect).astype(np.uint8)
    i = col.first_null()
    if i >= 0:
        _to_words(col.head(i), table, where, name, expect)      # an earlier bad cell first
        raise TraceError(f"{where(i)}: column '{name}' is empty (expected {expect})")
    if col.kind == "other":
        raise TraceError(f"{where(0)}: column '{name}' holds {col.type_name} values "
                         f"(expected {expect})")
    codes, labels = col.coded()
    lut = np.zeros(len(labels), np.uint8)
    ok = np.ones(len(labels), bool)
    for j, v in enumerate(labels):
        key = (v.decode("latin-1") if isinstance(v, bytes) else str(v)).strip().lower()
        if key in table:
            lut[j] = table[key]
        else:
            ok[j] = False
    if not ok.all():
        bad = ~ok[codes]
        if bad.any():
            i = _first(bad)
            v = _text(labels[codes[i]])
            if not v.strip():
                raise TraceError(f"{where(i)}: column '{name}' is empty (expected {expect})")
            raise TraceError(f"{where(i)}: column '{name}': {_shown(v)!r} is not one of {expect}")
    return lut[codes]


# -- readers -------------------------------------------------------------------------------------

def _known(key: str) -> bool:
    return key in _KNOWN_COLUMNS


class _TableReader(TraceReader):
    """Shared column handling of the CSV and Parquet readers."""

    def __init__(self, path, *, chunk: int = 1 << 20, user: bool = True,
                 progress: bool | None = None):
        super().__init__(path, chunk=chunk, progress=progress)
        self.default_user = int(bool(user))
        self._spaces = AsidNumbering()
        self.asid_keys = self._spaces.keys

    # subclasses yield (where, {lower-case name: column}) per piece of the file, in order
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
        """``(batch, extras)`` per chunk of ``chunk`` rows (the last may be shorter):
        ``extras`` holds the ``timestamp``/``cpu`` arrays present and ``space`` (the raw
        cr3/pid values) when the trace has them."""
        self.records = self.accesses = 0
        self._spaces = AsidNumbering()
        self.asid_keys = self._spaces.keys
        pieces = (self._convert(where, cols) for where, cols in self._raw_chunks())
        for batch, extras in _rechunk(pieces, self.chunk):
            self.records += batch.shape[0]
            self.accesses += batch.shape[0]
            yield batch, extras
        if not self.asid_keys:
            self.asid_keys = [0]

    def __iter__(self):
        for batch, _ in self.iter_tables():
            yield batch

    def _convert(self, where, cols):
        return columns_to_batch(where, cols, self.default_user, self._spaces)

class AsidNumbering:
    """Address-space numbers for raw cr3/pid values, in order of first appearance
    (``keys[k]`` is the value of asid ``k``); one per pass over a trace."""

    def __init__(self):
        self.keys: list = []
        self._ids: dict = {}

    def ids(self, raw: np.ndarray) -> np.ndarray:
        """The asid of every value of ``raw`` (u64), numbering new values."""
        keys, first, inv = np.unique(raw, return_index=True, return_inverse=True)
        ids = np.empty(keys.shape[0], dtype=np.uint32)
        for j in np.argsort(first, kind="stable"):          # in order of first appearance
            k = int(keys[j])
            if k not in self._ids:
                self._ids[k] = len(self.keys)
                self.keys.append(k)
            ids[j] = self._ids[k]
        return ids[inv.reshape(-1)]


def columns_to_batch(where, cols, default_user: int, spaces: AsidNumbering):
    """One access batch and its extras from a dict of columns (pyarrow arrays, pandas
    Series or numpy arrays, keyed by lower-case name) in this module's schema. ``where(i)``
    names row ``i`` in error messages; ``default_user`` fills a missing user/privilege
    column; cr3/pid columns are numbered by ``spaces``."""
    cols = {k: _column(v) for k, v in cols.items()}
    n = next(iter(cols.values())).n
    out = np.zeros(n, dtype=ACCESS_DTYPE)
    name = next(a for a in _ADDR_NAMES if a in cols)
    out["addr"] = _to_uint64(cols[name], where, name)
    if "kind" in cols:
        out["kind"] = _to_words(cols["kind"], KIND_WORDS, where, "kind", ints=(0, 2),
                                expect="read/write/fetch (or r/w/x, 0/1/2)")
    if "privilege" in cols:
        c = cols["privilege"]
        if c.kind in ("int", "uint"):
            cpl = _to_ints(c, where, "privilege", 0, 3, "a CPL 0..3 (3 = user)")
            out["user"] = cpl == 3
        else:
            out["user"] = _to_words(c, PRIV_WORDS, where, "privilege", ints=None,
                                    expect="user/supervisor (or u/s, kernel, a CPL 0..3)")
    elif "user" in cols:
        out["user"] = _to_ints(cols["user"], where, "user", 0, 1, "0 or 1")
    else:
        out["user"] = default_user
    if "size" in cols:
        out["size"] = _to_ints(cols["size"], where, "size", 1, 4096, "1..4096 bytes")
    else:
        out["size"] = 1
    for flag in _FLAG_COLUMNS:
        if flag in cols:
            out[flag] = _to_ints(cols[flag], where, flag, 0, 1, "0 or 1")
    extras = {}
    if "asid" in cols:
        out["asid"] = _to_ints(cols["asid"], where, "asid", 0, 2**32 - 1, "0..2**32-1")
    else:
        sp = next((s for s in _SPACE_NAMES if s in cols), None)
        if sp is not None:
            raw = _to_uint64(cols[sp], where, sp)
            out["asid"] = spaces.ids(raw)
            extras["space"] = raw
    for e in EXTRA_COLUMNS:
        if e in cols:
            extras[e] = cols[e].loose_numbers()
    return out, extras


def _rechunk(pieces, chunk: int):
    """``(batch, extras)`` pieces of any sizes, regrouped into ``chunk`` rows each (the
    last may be shorter). A piece of exactly ``chunk`` rows passes through uncopied."""
    buf, have = [], 0
    for batch, extras in pieces:
        pos, n = 0, batch.shape[0]
        while pos < n:
            take = min(chunk - have, n - pos)
            if not buf and take == chunk:
                yield _slice(batch, extras, pos, pos + take)
            else:
                buf.append(_slice(batch, extras, pos, pos + take))
                have += take
                if have == chunk:
                    yield _join(buf)
                    buf, have = [], 0
            pos += take
    if buf:
        yield _join(buf)


def _slice(batch, extras, a, b):
    if a == 0 and b == batch.shape[0]:
        return batch, extras
    return batch[a:b], {k: v[a:b] for k, v in extras.items()}


def _join(parts):
    if len(parts) == 1:
        return parts[0]
    batch = concat_accesses(p[0] for p in parts)
    extras = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return batch, extras


class _Stream(io.RawIOBase):
    """A decompressing :class:`InputFile` as the file object pyarrow reads from (its read
    errors stay TraceErrors)."""

    def __init__(self, f: InputFile):
        super().__init__()
        self._in = f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._in.readinto(b)

    def close(self):
        if not self.closed:
            self._in.close()
        super().close()


class CsvReader(_TableReader):
    """CSV (or TSV) trace with a header row, in the schema of this module; plain or
    gzip/xz/bzip2. ``chunk`` rows per batch; ``user`` the privilege when there is no
    privilege column (default user mode). ``engine``: ``"arrow"`` (pyarrow's streaming CSV
    reader; the default when pyarrow is installed) or ``"pandas"``; both read the same
    values and name the same line in errors. Only the columns of the schema are read."""

    format = "csv"
    _block_size = 1 << 20       # bytes of text per block (larger blocks are slower)
    _threads = True             # parse the next block while this one is converted

    def __init__(self, path, *, chunk: int = 1 << 20, user: bool = True, sep: str | None = None,
                 progress: bool | None = None, engine: str | None = None):
        super().__init__(path, chunk=chunk, user=user, progress=progress)
        if engine is None:
            engine = "arrow" if _have_arrow_csv() else "pandas"
        if engine not in ("arrow", "pandas"):
            raise ValueError(f"engine must be 'arrow' or 'pandas', not {engine!r}")
        self.engine = engine
        with InputFile(self.path) as f:
            head = f.read(65536)
            self._compression = {"gzip": "gzip", "xz": "xz", "bzip2": "bz2"}.get(f.compression)
            self._size = f.size
        if not head.strip():
            raise TraceError(f"{self.path}: file is empty")
        first_line, nl, rest = head.partition(b"\n")
        # a header and nothing else (not even a newline): no rows
        self._no_rows = not (nl and rest) and len(head) < 65536
        first = first_line.removeprefix(b"\xef\xbb\xbf").decode("latin-1")     # UTF-8 BOM
        self.sep = sep or ("\t" if first.count("\t") > first.count(",") else ",")
        self.header = [c.strip() for c in first.strip("\r").split(self.sep)]
        self._columns(self.header)

    def _names(self):
        """Unique column names for the parser, and {lower-case key: name} of the columns
        of the schema (the first of duplicates)."""
        names, seen, keep = [], set(), {}
        for j, c in enumerate(self.header):
            name = c if c not in seen else f"{c}.{j}"
            seen.add(name)
            names.append(name)
            key = c.lower()
            if _known(key) and key not in keep:
                keep[key] = name
        return names, keep

    def _raw_chunks(self):
        if self._no_rows:
            return
        prog = Progress(None, f"reading {self.path.name}", enabled=self.progress, unit=" rows")
        try:
            if self.engine == "arrow":
                yield from self._arrow_chunks(prog)
            else:
                yield from self._pandas_chunks(prog)
        finally:
            prog.close()

    def _arrow_reader(self, keep, names, threads: bool, on_invalid):
        """pyarrow's streaming CSV reader over the schema's columns, every cell as bytes
        (words and small integers dictionary-encoded), blank lines kept as rows so that
        row ``r`` is line ``r + 2``. Returns ``(reader, source to close)``."""
        pa, _ = _pyarrow()
        import pyarrow.csv as pcsv
        text = pa.binary()                 # bytes as they are: this module decodes them
        coded = pa.dictionary(pa.int32(), pa.binary())
        types = {name: (text if key in _ADDR_NAMES + _SPACE_NAMES + EXTRA_COLUMNS else coded)
                 for key, name in keep.items()}
        src = str(self.path) if self._compression is None else _Stream(InputFile(self.path))
        try:
            reader = pcsv.open_csv(
                src,
                read_options=pcsv.ReadOptions(column_names=names, skip_rows=1,
                                              use_threads=threads, block_size=self._block_size),
                parse_options=pcsv.ParseOptions(delimiter=self.sep, ignore_empty_lines=False,
                                                invalid_row_handler=on_invalid),
                convert_options=pcsv.ConvertOptions(column_types=types,
                                                    include_columns=list(keep.values())))
        except BaseException:
            if not isinstance(src, str):
                src.close()
            raise
        return reader, src

    def _arrow_chunks(self, prog):
        pa, _ = _pyarrow()
        names, keep = self._names()
        invalid = []

        def on_invalid(row):
            invalid.append(row)
            return "error"

        where = _Where(self.path, csv=True)
        src = None
        try:
            reader, src = self._arrow_reader(keep, names, self._threads, on_invalid)
            row0 = 0
            for rb in reader:
                where.row0 = row0
                yield where, {key: _ArrowCol(rb.column(name)) for key, name in keep.items()}
                row0 += rb.num_rows
                prog.update(row0)
        except pa.ArrowInvalid as e:
            if invalid:
                r = invalid[0]
                line = r.number if r.number is not None else self._invalid_line(keep, names)
                at = f"{self.path}:{line}" if line is not None else f"{self.path}"
                raise TraceError(f"{at}: {r.actual_columns} fields where the header has "
                                 f"{r.expected_columns} ({r.text[:80]!r})") from None
            raise TraceError(f"{self.path}: malformed CSV ({str(e).strip()})") from None
        except (EOFError, OSError) as e:
            raise TraceError(f"{self.path}: corrupt or truncated file ({e})") from None
        finally:
            if src is not None and not isinstance(src, str):
                src.close()

    def _invalid_line(self, keep, names):
        """The line of the first row with the wrong number of fields: the threaded reader
        does not count lines, so read again without threads (an error path only)."""
        pa, _ = _pyarrow()
        found = []

        def on_invalid(row):
            found.append(row.number)
            return "error"

        src = None
        try:
            reader, src = self._arrow_reader(keep, names, False, on_invalid)
            for _ in reader:
                pass
        except (pa.ArrowInvalid, OSError, EOFError, ValueError):
            pass
        finally:
            if src is not None and not isinstance(src, str):
                src.close()
        return found[0] if found else None

    def _pandas_chunks(self, prog):
        names, keep = self._names()
        # addresses as Python strings, the rest as categoricals (one label per distinct cell)
        dtypes = {name: (object if key in _ADDR_NAMES + _SPACE_NAMES else "category")
                  for key, name in keep.items() if key not in EXTRA_COLUMNS}
        where = _Where(self.path, csv=True)
        try:
            # every column is parsed (usecols would let rows with extra fields through)
            reader = pd.read_csv(self.path, sep=self.sep, chunksize=self.chunk, header=0,
                                 names=names, dtype=dtypes, compression=self._compression,
                                 skip_blank_lines=False, skipinitialspace=True,
                                 keep_default_na=False, encoding="utf-8",
                                 encoding_errors="replace",
                                 na_values={name: [""] for name in keep.values()}, engine="c")
            row0 = 0
            for df in reader:
                where.row0 = row0
                yield where, {key: _PandasCol(df[name]) for key, name in keep.items()}
                row0 += len(df)
                prog.update(row0)
        except pd.errors.ParserError as e:
            raise TraceError(f"{self.path}: malformed CSV ({str(e).strip()})") from None
        except (EOFError, OSError, UnicodeDecodeError) as e:
            raise TraceError(f"{self.path}: corrupt or truncated file ({e})") from None


def _have_arrow_csv() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


class ParquetReader(_TableReader):
    """Parquet trace in the schema of this module (needs pyarrow). ``chunk`` rows per batch.
    Only the columns of the schema are read; dictionary-encoded word columns are looked up
    once per dictionary entry."""

    format = "parquet"

    def __init__(self, path, *, chunk: int = 1 << 20, user: bool = True,
                 progress: bool | None = None):
        super().__init__(path, chunk=chunk, user=user, progress=progress)
        _pa, pq = _pyarrow()
        try:
            # pre_buffer=False: with pyarrow's default (True) the batch reader caches every
            # column chunk it has read until it is closed, so memory grows with the file
            self._pf = pq.ParquetFile(self.path, pre_buffer=False)
        except Exception as e:      # pyarrow raises ArrowInvalid / OSError variants
            raise TraceError(f"{self.path}: not a readable Parquet file ({e})") from None
        self.header = self._pf.schema_arrow.names
        self._columns(self.header)
        meta = self._pf.schema_arrow.metadata or {}
        self._stored_keys = json.loads(meta[b"vecmmu.asid_keys"]) if b"vecmmu.asid_keys" in meta else None

    def _raw_chunks(self):
        pa, _ = _pyarrow()
        keep = {}
        for name in self.header:
            key = name.lower().strip()
            if _known(key) and key not in keep:
                keep[key] = name
        where = _Where(self.path, csv=False)
        total = self._pf.metadata.num_rows
        prog = Progress(total, f"reading {self.path.name}", enabled=self.progress)
        row0 = 0
        try:
            for rb in self._pf.iter_batches(batch_size=self.chunk, columns=list(keep.values())):
                where.row0 = row0
                yield where, {key: _ArrowCol(rb.column(name)) for key, name in keep.items()}
                row0 += rb.num_rows
                prog.update(row0)
        except OSError as e:
            raise TraceError(f"{self.path}: corrupt Parquet data ({e})") from None
        except pa.ArrowException as e:
            raise TraceError(f"{self.path}: unreadable Parquet data ({e})") from None
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
