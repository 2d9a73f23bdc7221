"""Access batches: what each access does (the batch form of KVM's access code).

An access batch is a structured array of :data:`ACCESS_DTYPE`:

========== ====== ==========================================================
field      dtype  meaning
========== ====== ==========================================================
addr       u8     linear address (GVA)
kind       u1     0 read, 1 write, 2 fetch (:class:`vecmmu.bits.AccessKind`)
user       u1     1 for a user-mode (CPL 3) access
ac         u1     EFLAGS.AC (overrides SMAP for explicit supervisor accesses)
implicit   u1     implicit supervisor access (descriptor tables etc.): never user,
                  never SMAP-overridden
stack      u1     a stack reference (#SS instead of #GP when non-canonical)
size       u4     bytes accessed (>= 1); an access that crosses a 4 KiB boundary is
                  translated twice (once per page)
asid       u4     address space: index into the walker's CR3 list
========== ====== ==========================================================

:func:`make_accesses` builds one from arrays or scalars, with clear errors.
"""
from __future__ import annotations

import numpy as np

from .bits import AccessKind
from .bufpool import POOL

ACCESS_DTYPE = np.dtype([
    ("addr", "<u8"), ("kind", "u1"), ("user", "u1"), ("ac", "u1"), ("implicit", "u1"),
    ("stack", "u1"), ("size", "<u4"), ("asid", "<u4"),
])
# the batch check and the walk kernel read the four flag bytes as one u32
# (kernels.trace_parse.scan_accesses, kernels.cpu_walk.cpu_translate), and the kind byte as
# the low byte of a u32 inside the record
assert [ACCESS_DTYPE.fields[k][1] for k in ("user", "ac", "implicit", "stack")] == [9, 10, 11, 12]
assert ACCESS_DTYPE.fields["kind"][1] + 4 <= ACCESS_DTYPE.itemsize

_KIND_WORDS = {"r": 0, "read": 0, "l": 0, "load": 0,
               "w": 1, "write": 1, "s": 1, "store": 1,
               "x": 2, "f": 2, "fetch": 2, "i": 2, "exec": 2, "instr": 2}


def concat_accesses(parts) -> np.ndarray:
    """One access batch from several (a trace read in chunks). Concatenates byte views:
    numpy copies the packed structured dtype field by field, about 10x slower."""
    parts = list(parts)
    if not parts:
        return np.zeros(0, dtype=ACCESS_DTYPE)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([np.ascontiguousarray(p).view(np.uint8) for p in parts]).view(ACCESS_DTYPE)


def _kind_array(kind, n: int) -> np.ndarray:
    if isinstance(kind, str):
        if kind.lower() not in _KIND_WORDS:
            raise ValueError(f"kind {kind!r} is not one of read/write/fetch (or r/w/x)")
        return np.full(n, _KIND_WORDS[kind.lower()], dtype=np.uint8)
    if isinstance(kind, AccessKind):
        return np.full(n, int(kind), dtype=np.uint8)
    arr = np.asarray(kind)
    if arr.dtype.kind in "OUS" or str(arr.dtype) == "category":
        flat = arr.reshape(-1).astype(str)
        out = np.empty(flat.shape[0], dtype=np.uint8)
        uniq, inv = np.unique(np.char.lower(flat), return_inverse=True)
        for j, u in enumerate(uniq):
            if u not in _KIND_WORDS:
                bad = int(np.flatnonzero(inv == j)[0])
                raise ValueError(f"kind[{bad}] = {str(flat[bad])!r} is not one of read/write/fetch")
            out[inv == j] = _KIND_WORDS[u]
        arr = out
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"kind must be integers 0/1/2 or strings, not {arr.dtype}")
    arr = _broadcast("kind", arr, n)
    if arr.size and (arr.min() < 0 or arr.max() > 2):
        bad = int(np.flatnonzero((arr < 0) | (arr > 2))[0])
        raise ValueError(f"kind[{bad}] = {arr[bad]} is not 0 (read), 1 (write) or 2 (fetch)")
    return arr.astype(np.uint8)


def _broadcast(name, arr, n):
    """``arr`` as ``n`` values: a scalar or a 1-D array of length ``n`` (nothing else)."""
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != n):
        raise ValueError(f"{name} has shape {arr.shape}; expected a scalar or {n} values")
    return np.broadcast_to(arr, (n,))


def _int_array(name, value, n, lo, hi, expect):
    arr = np.asarray(value)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers ({expect}), not {arr.dtype}")
    arr = _broadcast(name, arr, n)
    if arr.size:
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{i}] = {arr[i]} is out of range ({expect})")
    return arr


def _flag_array(name, value, n):
    arr = np.asarray(value)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must be booleans or 0/1, not {arr.dtype}")
    arr = _broadcast(name, arr, n)
    if arr.size and arr.max() > 1:
        bad = int(np.flatnonzero(arr > 1)[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]} is not 0 or 1")
    return arr.astype(np.uint8)


def _py_addrs(seq) -> np.ndarray:
    """Python integers as u64; negative values down to -2**63 are two's complement (a
    sign-extended linear address), anything outside [-2**63, 2**64) is an error."""
    out = np.empty(len(seq), dtype=np.uint64)
    for i, a in enumerate(seq):
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"addr[{i}] = {a!r} is not an integer")
        a = int(a)
        if not -(1 << 63) <= a < 1 << 64:
            raise ValueError(f"addr[{i}] = {a:#x} does not fit in 64 bits")
        out[i] = a & (2**64 - 1)
    return out


def _addr_array(addr) -> np.ndarray:
    if isinstance(addr, (int, np.integer)):
        addr = [addr]
    if isinstance(addr, (list, tuple, range)):
        return _py_addrs(addr)
    arr = np.asarray(addr)
    if arr.ndim != 1:
        raise ValueError(f"addr must be one address or a 1-D array of them, not shape {arr.shape}")
    if arr.dtype == object:
        arr = _py_addrs(arr)
    if arr.dtype.kind == "i":
        arr = arr.astype(np.int64).view(np.uint64)
    elif arr.dtype.kind != "u":
        raise TypeError(f"addr must be an integer array, not {arr.dtype}")
    return np.ascontiguousarray(arr.reshape(-1).astype(np.uint64, copy=False))


def make_accesses(addr, kind=0, *, user=False, ac=False, implicit=False, stack=False,
                  size=1, asid=0) -> np.ndarray:
    """An access batch. Every argument but ``addr`` may be a scalar (the same for all) or
    an array of ``len(addr)``; ``kind`` also takes 'read'/'write'/'fetch' (or r/w/x)."""
    a = _addr_array(addr)
    n = a.shape[0]
    out = np.empty(n, dtype=ACCESS_DTYPE)
    out["addr"] = a
    out["kind"] = _kind_array(kind, n)
    out["user"] = _flag_array("user", user, n)
    out["ac"] = _flag_array("ac", ac, n)
    out["implicit"] = _flag_array("implicit", implicit, n)
    out["stack"] = _flag_array("stack", stack, n)
    out["size"] = _int_array("size", size, n, 1, 4096, "1..4096 bytes")
    out["asid"] = _int_array("asid", asid, n, 0, 2**32 - 1, "an address-space index 0..2**32-1")
    return out


def check_batch(batch: np.ndarray) -> np.ndarray:
    """``batch`` if it is a valid 1-D ACCESS_DTYPE array; otherwise a ValueError naming
    the field and the first bad index (enumerations and flags are checked: the kernels
    trust them)."""
    return _checked(batch)[0]


def _checked(batch: np.ndarray):
    """``(batch, (largest size, largest asid))`` after :func:`check_batch`'s checks: one
    jitted pass over the batch's bytes; numpy finds the bad index only on failure."""
    if batch.ndim != 1:
        raise ValueError(f"an access batch must be 1-D, not shape {batch.shape}")
    if not batch.shape[0]:
        return batch, (0, 0)
    from .kernels._jit import PASS_UNIT, parts_for, run_parts
    from .kernels.trace_parse import scan_accesses
    f = ACCESS_DTYPE.fields
    parts = parts_for(batch.shape[0], PASS_UNIT)
    res = np.empty((parts, 5), np.int64)
    run_parts(scan_accesses, parts, parts, np.ascontiguousarray(batch).view(np.uint8),
              ACCESS_DTYPE.itemsize, *(f[k][1] for k in ("kind", "user", "size", "asid")), res)
    mk, smin, smax, amax = (int(x) for x in (res[:, 0].max(), res[:, 2].min(), res[:, 3].max(),
                                              res[:, 4].max()))
    mf = int(np.bitwise_or.reduce(res[:, 1]))
    mf = (mf | (mf >> 8) | (mf >> 16) | (mf >> 24)) & 0xFF      # the four flag bytes
    if mk > 2 or mf > 1:
        for name, hi in (("kind", 2), ("user", 1), ("ac", 1), ("implicit", 1), ("stack", 1)):
            col = batch[name]
            if int(col.max()) > hi:
                i = int(np.flatnonzero(col > hi)[0])
                what = "0 (read), 1 (write) or 2 (fetch)" if name == "kind" else "0 or 1"
                raise ValueError(f"access batch: {name}[{i}] = {int(col[i])} is not {what}")
    if smin < 1 or smax > 4096:
        sz = batch["size"]
        i = int(np.flatnonzero((sz < 1) | (sz > 4096))[0])
        raise ValueError(f"access batch: size[{i}] = {int(sz[i])} is out of range (1..4096 bytes)")
    return batch, (int(smax), int(amax))


def split_page_crossing(batch: np.ndarray, parts: int | None = None):
    """``(rows, access, part)``: a checked batch with every access that crosses a 4 KiB
    boundary as two rows, the second at the next page (``part`` 1), and ``access`` the
    batch index of each row; ``(batch, None, None)`` when none crosses (row i is access
    i). Two jitted passes over the records' bytes, in ``parts`` parallel parts (default:
    one per thread for large batches; the rows do not depend on it)."""
    from .kernels._jit import PASS_UNIT, parts_for, run_parts
    from .kernels.trace_parse import count_crossing, split_crossing
    raw = np.ascontiguousarray(batch).view(np.uint8)
    f = ACCESS_DTYPE.fields
    o_addr, o_size = f["addr"][1], f["size"][1]
    parts = parts_for(batch.shape[0], PASS_UNIT) if parts is None else max(1, int(parts))
    counts = np.zeros(parts + 1, np.int64)
    run_parts(count_crossing, parts, parts, raw, ACCESS_DTYPE.itemsize, o_addr, o_size, counts)
    m = int(counts.sum())
    if m == 0:
        return batch, None, None
    rows = POOL.empty(batch.shape[0] + m, ACCESS_DTYPE)      # every row is written
    index = POOL.empty(rows.shape[0], np.int64)
    part = POOL.empty(rows.shape[0], np.uint8)
    run_parts(split_crossing, parts, parts, raw, ACCESS_DTYPE.itemsize, o_addr, o_size,
              np.cumsum(counts), rows.view(np.uint8), index, part)
    return rows, index, part


def as_accesses(obj, **kw) -> np.ndarray:
    """Accept an ACCESS_DTYPE array, a DataFrame (columns named as the fields), or
    addresses plus keyword arrays; return an ACCESS_DTYPE array."""
    return accesses_and_maxima(obj, **kw)[0]


def accesses_and_maxima(obj, **kw):
    """Accept an ACCESS_DTYPE array, a DataFrame (columns named as the fields), or
    addresses plus keyword arrays; return ``(batch, (largest size, largest asid))``, the
    batch an ACCESS_DTYPE array (checked)."""
    if isinstance(obj, np.ndarray) and obj.dtype == ACCESS_DTYPE:
        if kw:
            raise TypeError(f"an access batch already says {sorted(kw)}; pass only the batch")
        return _checked(obj)
    if isinstance(obj, np.ndarray) and obj.dtype.names is not None:
        missing = [f for f in ACCESS_DTYPE.names if f not in obj.dtype.names]
        raise TypeError(f"a structured array must have dtype vecmmu.ACCESS_DTYPE to be an access "
                        f"batch; this one has fields {list(obj.dtype.names)}"
                        + (f" (missing {missing})" if missing else " (with other types or order)")
                        + "; build one with make_accesses()")
    if hasattr(obj, "columns"):                      # a pandas DataFrame
        if "addr" not in obj.columns:
            raise ValueError(f"the DataFrame needs an 'addr' column (has {list(obj.columns)})")
        cols = {c: obj[c].to_numpy() for c in ACCESS_DTYPE.names if c in obj.columns and c != "addr"}
        cols.update(kw)
        return _checked(make_accesses(obj["addr"].to_numpy(), **cols))
    return _checked(make_accesses(obj, **kw))
