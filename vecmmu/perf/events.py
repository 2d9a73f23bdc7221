"""Event streams: the context switches and invalidations interleaved with a trace.

An event stream is a structured array of :data:`EVENT_DTYPE`, sorted by ``pos``:

======== ==== ===================================================================================
field    type meaning
======== ==== ===================================================================================
pos      i8   the event happens just before access ``pos`` of the batch (its first row)
kind     u1   :class:`EventKind`
operand  u8   CR3 value, linear address, VPID or EPTP tag (see the kinds)
tag      u4   the PCID / VPID / EPTP tag an INVPCID / INVVPID / INVEPT names
======== ==== ===================================================================================

The rules (SDM Vol. 3 §4.10.4 and §28.3.3), as :func:`vecmmu.kernels.tlb.apply_event`
applies them; "context" is (PCID, VPID, EPTP tag), all 0 at the start:

* ``CR3`` (operand = the value written): with CR4.PCIDE the PCID becomes bits 11:0; unless
  bit 63 is set (PCIDE only), the TLB entries of the new PCID are flushed except global
  ones, and all its paging-structure-cache entries (never global) go too.
* ``INVLPG`` (operand = address): the TLB entries translating the address for the current
  PCID, and global ones for any PCID; all paging-structure-cache entries of the current PCID.
* ``INVPCID_ADDR`` / ``INVPCID_CTX`` / ``INVPCID_ALL`` / ``INVPCID_ALL_NONGLOBAL`` (types 0-3;
  ``tag`` = PCID): as the SDM's INVPCID types (type 0 spares global entries).
* ``FLUSH_ALL``: everything of the current VPID, global entries included (a CR4.PGE toggle).
* ``SET_VPID`` / ``SET_EPTP`` (operand): a VM entry into another vCPU or EPT context; no flush.
* ``INVVPID_ADDR`` (operand = address, tag = VPID), ``INVVPID_CTX``, ``INVVPID_ALL``,
  ``INVVPID_CTX_NONGLOBAL``: linear and combined mappings of the VPID (every PCID).
* ``INVEPT_CTX`` (tag = EPTP tag) / ``INVEPT_ALL``: guest-physical mappings (nested TLB, TDP
  paging-structure caches) and combined mappings (TLB, guest paging-structure caches) of
  that EPTP (of all).

Every invalidation that reaches the paging-structure caches also empties the PTE cache
(it is tagged by physical address only). Operations in a guest (CR3, INVLPG, INVPCID,
FLUSH_ALL) act on the current VPID, for every EPTP tag.
"""
from __future__ import annotations

import enum

import numpy as np

from ..kernels import tlb as KT

EVENT_DTYPE = np.dtype([("pos", "<i8"), ("kind", "u1"), ("operand", "<u8"), ("tag", "<u4")])


class EventKind(enum.IntEnum):
    CR3 = KT.E_CR3
    INVLPG = KT.E_INVLPG
    INVPCID_ADDR = KT.E_INVPCID_ADDR
    INVPCID_CTX = KT.E_INVPCID_CTX
    INVPCID_ALL = KT.E_INVPCID_ALL
    INVPCID_ALL_NONGLOBAL = KT.E_INVPCID_ALL_NONGLOBAL
    FLUSH_ALL = KT.E_FLUSH_ALL
    SET_VPID = KT.E_SET_VPID
    SET_EPTP = KT.E_SET_EPTP
    INVVPID_ADDR = KT.E_INVVPID_ADDR
    INVVPID_CTX = KT.E_INVVPID_CTX
    INVVPID_ALL = KT.E_INVVPID_ALL
    INVVPID_CTX_NONGLOBAL = KT.E_INVVPID_CTX_NONGLOBAL
    INVEPT_CTX = KT.E_INVEPT_CTX
    INVEPT_ALL = KT.E_INVEPT_ALL


def _kind(k) -> int:
    if isinstance(k, str):
        try:
            return int(EventKind[k.upper()])
        except KeyError:
            raise ValueError(f"event kind {k!r} is not one of {[e.name for e in EventKind]}") from None
    k = int(k)
    if k not in EventKind._value2member_map_:
        raise ValueError(f"event kind {k} is not one of {[int(e) for e in EventKind]}")
    return k


def make_events(events) -> np.ndarray:
    """An event stream from an EVENT_DTYPE array, a DataFrame with those columns, or tuples
    ``(pos, kind[, operand[, tag]])`` (kind a name such as ``"invlpg"`` or an
    :class:`EventKind`). Sorted by position (stable: same-position events keep their order)."""
    if events is None:
        return np.zeros(0, EVENT_DTYPE)
    if isinstance(events, np.ndarray) and events.dtype == EVENT_DTYPE:
        ev = events.copy()
    elif hasattr(events, "columns"):
        ev = np.zeros(len(events), EVENT_DTYPE)
        for f in EVENT_DTYPE.names:
            if f in events.columns:
                col = events[f].to_numpy()
                ev[f] = [_kind(k) for k in col] if f == "kind" else col
    else:
        rows = list(events)
        ev = np.zeros(len(rows), EVENT_DTYPE)
        for j, r in enumerate(rows):
            if not 2 <= len(r) <= 4:
                raise ValueError(f"event {j} = {r!r}: give (pos, kind[, operand[, tag]])")
            ev[j]["pos"] = int(r[0])
            ev[j]["kind"] = _kind(r[1])
            ev[j]["operand"] = int(r[2]) & (2**64 - 1) if len(r) > 2 else 0
            ev[j]["tag"] = int(r[3]) if len(r) > 3 else 0
    if ev.size and ev["pos"].min() < 0:
        bad = int(np.flatnonzero(ev["pos"] < 0)[0])
        raise ValueError(f"event {bad} has position {int(ev['pos'][bad])} < 0")
    for k in np.unique(ev["kind"]):
        _kind(int(k))
    return ev[np.argsort(ev["pos"], kind="stable")]


def events_from_asid(asid, cr3=None, *, pcide: bool = True) -> np.ndarray:
    """CR3 writes where the address space of a batch changes (``asid`` per access).

    With ``pcide`` each address space gets PCID = its index (or the PCID bits of ``cr3``)
    and the write sets bit 63 (no flush), as Linux does when it switches to a PCID it
    still owns; without, every switch flushes non-global entries."""
    asid = np.asarray(asid, dtype=np.int64).reshape(-1)
    if asid.size == 0:
        return np.zeros(0, EVENT_DTYPE)
    pos = np.flatnonzero(np.r_[True, asid[1:] != asid[:-1]])
    if pos.size and pos[0] == 0 and asid[0] == 0 and cr3 is None:
        pos = pos[1:]                       # starts in PCID 0 anyway
    ev = np.zeros(pos.size, EVENT_DTYPE)
    ev["pos"] = pos
    ev["kind"] = KT.E_CR3
    a = asid[pos]
    val = (np.asarray(cr3, dtype=np.uint64)[a] if cr3 is not None else a.astype(np.uint64))
    if pcide:
        if cr3 is None:
            val = a.astype(np.uint64) & np.uint64(0xFFF)
        val = val | np.uint64(1 << 63)
    ev["operand"] = val
    return ev
