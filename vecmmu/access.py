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

ACCESS_DTYPE = np.dtype([
    ("addr", "<u8"), ("kind", "u1"), ("user", "u1"), ("ac", "u1"), ("implicit", "u1"),
    ("stack", "u1"), ("size", "<u4"), ("asid", "<u4"),
])

_KIND_WORDS = {"r": 0, "read": 0, "l": 0, "load": 0,
               "w": 1, "write": 1, "s": 1, "store": 1,
               "x": 2, "f": 2, "fetch": 2, "i": 2, "exec": 2, "instr": 2}


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
    arr = np.broadcast_to(arr, (n,))
    if arr.size and (arr.min() < 0 or arr.max() > 2):
        bad = int(np.flatnonzero((arr < 0) | (arr > 2))[0])
        raise ValueError(f"kind[{bad}] = {arr[bad]} is not 0 (read), 1 (write) or 2 (fetch)")
    return arr.astype(np.uint8)


def _flag_array(name, value, n):
    arr = np.asarray(value)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must be booleans or 0/1, not {arr.dtype}")
    try:
        arr = np.broadcast_to(arr, (n,))
    except ValueError:
        raise ValueError(f"{name} has shape {arr.shape}; expected a scalar or {n} values") from None
    if arr.size and arr.max() > 1:
        bad = int(np.flatnonzero(arr > 1)[0])
        raise ValueError(f"{name}[{bad}] = {arr[bad]} is not 0 or 1")
    return arr.astype(np.uint8)


def _addr_array(addr) -> np.ndarray:
    if isinstance(addr, (int, np.integer)):
        addr = [addr]
    if isinstance(addr, (list, tuple, range)):
        try:
            return np.array([int(a) & (2**64 - 1) for a in addr], dtype=np.uint64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"addr must be integers: {e}") from None
    arr = np.asarray(addr)
    if arr.dtype == object:
        try:
            arr = np.array([int(a) & (2**64 - 1) for a in arr.reshape(-1)], dtype=np.uint64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"addr must be integers: {e}") from None
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
    sz = np.broadcast_to(np.asarray(size), (n,))
    if sz.size and (sz.min() < 1 or sz.max() > 4096):
        bad = int(np.flatnonzero((sz < 1) | (sz > 4096))[0])
        raise ValueError(f"size[{bad}] = {sz[bad]} must be between 1 and 4096 bytes")
    out["size"] = sz
    asid_a = np.broadcast_to(np.asarray(asid), (n,))
    if asid_a.size and asid_a.min() < 0:
        raise ValueError("asid must be non-negative")
    out["asid"] = asid_a
    return out


def as_accesses(obj, **kw) -> np.ndarray:
    """Accept an ACCESS_DTYPE array, a DataFrame (columns named as the fields), or
    addresses plus keyword arrays; return an ACCESS_DTYPE array."""
    if isinstance(obj, np.ndarray) and obj.dtype == ACCESS_DTYPE:
        if kw:
            raise TypeError(f"an access batch already says {sorted(kw)}; pass only the batch")
        return obj
    if hasattr(obj, "columns"):                      # a pandas DataFrame
        if "addr" not in obj.columns:
            raise ValueError(f"the DataFrame needs an 'addr' column (has {list(obj.columns)})")
        cols = {c: obj[c].to_numpy() for c in ACCESS_DTYPE.names if c in obj.columns and c != "addr"}
        cols.update(kw)
        return make_accesses(obj["addr"].to_numpy(), **cols)
    return make_accesses(obj, **kw)
