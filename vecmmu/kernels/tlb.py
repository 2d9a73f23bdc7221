"""Trace-driven translation caches: TLBs, paging-structure caches, PTE caches, nested TLB.

A simulation is sequential (each access sees the state the ones before it left), so one
run is one serial loop; a sweep runs independent configurations side by side
(:func:`sweep_model`, configurations in parallel parts). State lives in preallocated int64
arrays and nothing allocates in the loops. :mod:`vecmmu.perf` builds the arguments.

Layout, all int64:

* ``geom`` (S, G_COLS): one row per structure: role, sets (a power of two), ways,
  argument (page-size mask for TLBs: bit 0 4 KiB, 1 2 MiB, 2 4 MiB, 3 1 GiB; line shift for
  PTE caches), first entry index.
* ``plan`` (P_LEN,): which structures play which part (``-1`` padded): P_L1 / P_L2 / P_NTLB
  lists of 8, P_PSC + level and P_TPSC + level (levels 2..5), P_PTE, flags P_PGE, P_PCIDE,
  P_IB (index bits of the guest format: 9, or 10 for 32-bit paging).
* ``st`` (E, 4): one row per entry: key (-1 = invalid), context, global, LRU stamp
  (-1 when invalid, so an invalid way is always the victim; the clock ticks on every
  lookup hit and fill, so LRU order is exact within one walk too).

Context = PCID (bits 11:0) | VPID << 12 | EPTP tag << 28. TLB and guest paging-structure-cache
entries carry all three; nested TLB and TDP paging-structure-cache entries carry the EPTP
tag only; PTE caches (tagged by the entry's physical address) carry none.
"""
import numpy as np

from ._jit import jit, jit_nrt_free, jit_walker, part_bounds
# constants for non-inlined helpers, typed bool / int64 rather than Literal (see walkers.py)
from .walkers import _F, _I0, _I1, _I2, _T

# structure roles
R_L1, R_L2, R_PSC, R_PTE, R_NTLB, R_TPSC = 0, 1, 2, 3, 4, 5
G_ROLE, G_SETS, G_WAYS, G_ARG, G_BASE = 0, 1, 2, 3, 4
G_COLS = 5
# plan layout
P_L1, P_L2, P_NTLB = 0, 8, 16
_P_L1, _P_L2, _P_NTLB = np.int64(P_L1), np.int64(P_L2), np.int64(P_NTLB)   # as arguments
P_PSC, P_TPSC = 24, 30          # + level (2..5)
P_PTE, P_PGE, P_PCIDE, P_IB = 36, 37, 38, 39
P_LEN = 40
MAX_LIST = 8

# context fields
PCID_M = np.int64(0xFFF)
VPID_M = np.int64(0xFFFF << 12)
EPTP_M = np.int64(0xFFFFF << 28)
NOPCID_M = np.int64(~0xFFF)
GUEST_MARK = np.int64(1 << 61)      # PTE-cache key of a guest-physical entry address

# event kinds (vecmmu.perf.events.EventKind has the same values)
E_CR3, E_INVLPG = 1, 2
E_INVPCID_ADDR, E_INVPCID_CTX, E_INVPCID_ALL, E_INVPCID_ALL_NONGLOBAL = 3, 4, 5, 6
E_FLUSH_ALL, E_SET_VPID, E_SET_EPTP = 7, 8, 9
E_INVVPID_ADDR, E_INVVPID_CTX, E_INVVPID_ALL, E_INVVPID_CTX_NONGLOBAL = 10, 11, 12, 13
E_INVEPT_CTX, E_INVEPT_ALL = 14, 15

# per-access outputs (columns of ``out``, int16)
O_HIT, O_SID, O_PSC, O_REFS, O_ENTRIES, O_PTE_HITS, O_NTLB_HITS, O_NTLB_LOOKUPS = range(8)
O_COLS = 8
CLK = O_COLS          # the scratch row's last slot: the LRU clock (one tick per use)
HIT_L1, HIT_L2, HIT_WALK, HIT_FAULT = 0, 1, 2, 3

# counters
(C_N, C_FAULT, C_L1, C_L2, C_WALK, C_REFS, C_WALK_REFS, C_ENTRIES, C_PTE_HITS,
 C_PSC2, C_PSC3, C_PSC4, C_PSC5, C_NTLB_LOOKUPS, C_NTLB_HITS, C_TPSC_HITS, C_EVENTS) = range(17)
C_LEN = 20

# size code -> page shift: 4 KiB, 2 MiB, 4 MiB, 1 GiB
SHIFT_OF_CODE = (12, 21, 22, 30)


@jit_nrt_free
def _lsr(x, s):
    """Logical right shift of an int64 holding a u64 (s >= 1)."""
    return (x >> s) & ((np.int64(1) << (64 - s)) - 1)


@jit_nrt_free
def code_of_shift(s):
    if s == 12:
        return 0
    if s == 21:
        return 1
    if s == 22:
        return 2
    if s == 30:
        return 3
    return -1


@jit_nrt_free
def _shift(code):
    if code == 0:
        return 12
    if code == 1:
        return 21
    if code == 2:
        return 22
    return 30


@jit_walker
def lookup(geom, st, sid, idx, key, ctx, cmask, clk):
    """Find ``key`` (context ``ctx`` under ``cmask``) in the set ``idx`` selects; on a hit
    refresh its LRU stamp. Returns the entry index or -1."""
    ways = geom[sid, G_WAYS]
    b = geom[sid, G_BASE] + (idx & (geom[sid, G_SETS] - 1)) * ways
    for e in range(b, b + ways):
        if st[e, 0] == key and ((st[e, 1] ^ ctx) & cmask) == 0:
            clk[CLK] += 1
            st[e, 3] = clk[CLK]
            return e
    return -1


@jit_nrt_free
def insert(geom, st, sid, idx, key, ctx, glob, clk):
    """Fill the least recently used (or an invalid) way of the set ``idx`` selects."""
    ways = geom[sid, G_WAYS]
    b = geom[sid, G_BASE] + (idx & (geom[sid, G_SETS] - 1)) * ways
    v = b
    best = st[b, 3]
    for e in range(b + 1, b + ways):
        if st[e, 3] < best:
            best = st[e, 3]
            v = e
    st[v, 0] = key
    st[v, 1] = ctx
    st[v, 2] = glob
    clk[CLK] += 1
    st[v, 3] = clk[CLK]


@jit_walker
def tlb_lookup(geom, st, sid, va, ctx, gmask, clk):
    """Probe a TLB (or nested TLB) for ``va`` at every page size it holds. A global entry
    matches any PCID (``gmask`` = the context bits it must still match). Returns
    ``code * 2 + global`` of the hit, or -1."""
    m = geom[sid, G_ARG]
    ways = geom[sid, G_WAYS]
    smask = geom[sid, G_SETS] - 1
    base = geom[sid, G_BASE]
    for code in range(4):
        if (m >> code) & 1:
            vpn = _lsr(va, _shift(code))
            key = vpn * 4 + code
            b = base + (vpn & smask) * ways
            for e in range(b, b + ways):
                if st[e, 0] == key:
                    c = st[e, 1]
                    if c == ctx or (st[e, 2] != 0 and ((c ^ ctx) & gmask) == 0):
                        clk[CLK] += 1
                        st[e, 3] = clk[CLK]
                        return code * 2 + st[e, 2]
    return -1


@jit_nrt_free
def tlb_fill(geom, st, plan, first, va, code, ctx, glob, clk):
    """Insert a translation of size ``code`` into every structure of the list at ``first``
    that holds that size."""
    if code < 0:
        return
    vpn = _lsr(va, _shift(code))
    for j in range(MAX_LIST):
        sid = plan[first + j]
        if sid < 0:
            break
        if (geom[sid, G_ARG] >> code) & 1:
            insert(geom, st, sid, vpn, vpn * 4 + code, ctx, glob, clk)


@jit_nrt_free
def flush(geom, st, sid, want, mask, keep_global):
    """Invalidate the entries of one structure whose context matches ``want`` under
    ``mask`` (mask 0: all), sparing global entries when ``keep_global``."""
    lo = geom[sid, G_BASE]
    hi = lo + geom[sid, G_SETS] * geom[sid, G_WAYS]
    for e in range(lo, hi):
        if st[e, 0] >= 0 and ((st[e, 1] ^ want) & mask) == 0:
            if not (keep_global and st[e, 2] != 0):
                st[e, 0] = -1
                st[e, 3] = -1


@jit_nrt_free
def flush_va(geom, st, sid, va, want, mask, gmode):
    """Invalidate one TLB's entries (every page size) that translate ``va`` and whose
    context matches ``want`` under ``mask``. ``gmode`` 0: global entries alike; 1: global
    entries also when only their VPID/EPTP matches (INVLPG: any PCID); 2: spare global
    entries (INVPCID individual-address)."""
    m = geom[sid, G_ARG]
    ways = geom[sid, G_WAYS]
    smask = geom[sid, G_SETS] - 1
    base = geom[sid, G_BASE]
    for code in range(4):
        if (m >> code) & 1:
            vpn = _lsr(va, _shift(code))
            key = vpn * 4 + code
            b = base + (vpn & smask) * ways
            for e in range(b, b + ways):
                if st[e, 0] != key:
                    continue
                c = st[e, 1]
                g = st[e, 2] != 0
                hit = ((c ^ want) & mask) == 0
                if gmode == 1 and g and ((c ^ want) & NOPCID_M & mask) == 0:
                    hit = True
                if gmode == 2 and g:
                    hit = False
                if hit:
                    st[e, 0] = -1
                    st[e, 3] = -1


@jit_nrt_free
def _flush_list(geom, st, plan, first, count, want, mask, keep_global):
    for j in range(count):
        sid = plan[first + j]
        if sid >= 0:
            flush(geom, st, sid, want, mask, keep_global)


@jit_nrt_free
def _flush_tlbs(geom, st, plan, want, mask, keep_global):
    _flush_list(geom, st, plan, _P_L1, np.int64(MAX_LIST), want, mask, keep_global)
    _flush_list(geom, st, plan, _P_L2, np.int64(MAX_LIST), want, mask, keep_global)


@jit_nrt_free
def _flush_pscs(geom, st, plan, want, mask):
    """Guest paging-structure caches (never global) and the PTE cache (all of it: it is
    tagged by physical address, not by context)."""
    _flush_list(geom, st, plan, np.int64(P_PSC + 2), np.int64(4), want, mask, _F)
    if plan[P_PTE] >= 0:
        flush(geom, st, plan[P_PTE], _I0, _I0, _F)


@jit_nrt_free
def _flush_tlbs_va(geom, st, plan, va, want, mask, gmode):
    for first in (P_L1, P_L2):
        for j in range(MAX_LIST):
            sid = plan[first + j]
            if sid < 0:
                break
            flush_va(geom, st, sid, va, want, mask, gmode)


@jit_nrt_free
def apply_event(geom, st, plan, kind, op, tag, pcid, vpid, eptp):
    """One invalidation or context event (SDM Vol. 3 §4.10.4, §28.3.3). Returns the new
    (pcid, vpid, eptp)."""
    V = vpid << 12
    PV = PCID_M | VPID_M
    if kind == E_CR3:
        noflush = False
        if plan[P_PCIDE] != 0:
            pcid = op & PCID_M
            noflush = op < 0                         # CR3 bit 63
        else:
            pcid = np.int64(0)
        if not noflush:
            _flush_tlbs(geom, st, plan, pcid | V, PV, _T)
            _flush_pscs(geom, st, plan, pcid | V, PV)
    elif kind == E_INVLPG:
        _flush_tlbs_va(geom, st, plan, op, pcid | V, PV, _I1)
        _flush_pscs(geom, st, plan, pcid | V, PV)
    elif kind == E_INVPCID_ADDR:
        _flush_tlbs_va(geom, st, plan, op, (tag & PCID_M) | V, PV, _I2)
        _flush_pscs(geom, st, plan, (tag & PCID_M) | V, PV)
    elif kind == E_INVPCID_CTX:
        _flush_tlbs(geom, st, plan, (tag & PCID_M) | V, PV, _T)
        _flush_pscs(geom, st, plan, (tag & PCID_M) | V, PV)
    elif kind == E_INVPCID_ALL or kind == E_FLUSH_ALL:
        _flush_tlbs(geom, st, plan, V, VPID_M, _F)
        _flush_pscs(geom, st, plan, V, VPID_M)
    elif kind == E_INVPCID_ALL_NONGLOBAL:
        _flush_tlbs(geom, st, plan, V, VPID_M, _T)
        _flush_pscs(geom, st, plan, V, VPID_M)
    elif kind == E_SET_VPID:
        vpid = op & np.int64(0xFFFF)
    elif kind == E_SET_EPTP:
        eptp = op & np.int64(0xFFFFF)
    elif kind == E_INVVPID_ADDR:
        tv = (tag & np.int64(0xFFFF)) << 12
        _flush_tlbs_va(geom, st, plan, op, tv, VPID_M, _I0)
        _flush_pscs(geom, st, plan, tv, VPID_M)
    elif kind == E_INVVPID_CTX or kind == E_INVVPID_CTX_NONGLOBAL:
        tv = (tag & np.int64(0xFFFF)) << 12
        _flush_tlbs(geom, st, plan, tv, VPID_M, kind == E_INVVPID_CTX_NONGLOBAL)
        _flush_pscs(geom, st, plan, tv, VPID_M)
    elif kind == E_INVVPID_ALL:
        _flush_tlbs(geom, st, plan, _I0, _I0, _F)
        _flush_pscs(geom, st, plan, _I0, _I0)
    elif kind == E_INVEPT_CTX or kind == E_INVEPT_ALL:
        te = (tag & np.int64(0xFFFFF)) << 28
        m = EPTP_M if kind == E_INVEPT_CTX else np.int64(0)
        _flush_tlbs(geom, st, plan, te, m, _F)
        _flush_pscs(geom, st, plan, te, m)
        _flush_list(geom, st, plan, _P_NTLB, np.int64(MAX_LIST), te, m, _F)
        _flush_list(geom, st, plan, np.int64(P_TPSC + 2), np.int64(4), te, m, _F)
    return pcid, vpid, eptp


@jit_nrt_free
def _read_entry(geom, st, plan, ea, clk):
    """One paging-structure entry read: 1 if it goes to memory, 0 if the PTE cache has it."""
    sid = plan[P_PTE]
    if sid < 0:
        return 1
    key = ea >> geom[sid, G_ARG]
    if lookup(geom, st, sid, key, key, _I0, _I0, clk) >= 0:
        return 0
    insert(geom, st, sid, key, key, _I0, _I0, clk)
    return 1


@jit_walker
def _tdp_translate(geom, st, plan, gpa, ttr, i, row, ectx, clk, acc):
    """GPA → HPA for one guest table access (``row`` = guest level - 1) or the final GPA
    (row 5): the nested TLB, else a TDP walk that may start below a TDP paging-structure-
    cache hit. ``acc`` (int64[O_COLS]) accumulates refs, entries, PTE and nested-TLB hits."""
    tl = 0
    for t in range(1, 6):
        if ttr[i, row, t - 1] >= 0:
            tl = t
            break
    if tl == 0:
        return 0
    acc[O_NTLB_LOOKUPS] += 1
    for j in range(MAX_LIST):
        sid = plan[P_NTLB + j]
        if sid < 0:
            break
        if tlb_lookup(geom, st, sid, gpa, ectx, EPTP_M, clk) >= 0:
            acc[O_NTLB_HITS] += 1
            return 0
    start = 6
    for t in range(2, 6):
        sid = plan[P_TPSC + t]
        if sid >= 0 and t > tl and ttr[i, row, t - 1] >= 0:
            key = _lsr(gpa, 12 + 9 * (t - 1))
            if lookup(geom, st, sid, key, key, ectx, EPTP_M, clk) >= 0:
                start = t
                break
    hit_level = start if start < 6 else 0
    for t in range(start - 1, 0, -1):
        ea = ttr[i, row, t - 1]
        if ea < 0:
            continue
        acc[O_ENTRIES] += 1
        r = _read_entry(geom, st, plan, ea, clk)
        acc[O_REFS] += r
        acc[O_PTE_HITS] += 1 - r
        if t > tl:
            sid = plan[P_TPSC + t]
            if sid >= 0:
                key = _lsr(gpa, 12 + 9 * (t - 1))
                insert(geom, st, sid, key, key, ectx, _I0, clk)
    tlb_fill(geom, st, plan, _P_NTLB, gpa, code_of_shift(12 + 9 * (tl - 1)), ectx, _I0, clk)
    return hit_level


@jit_walker
def _access(geom, st, plan, i, va, shift, glob, leaf, tra, gpa, ttr, nested, ctx, clk, acc):
    """One successful translation through the caches; fills ``acc`` (the output row)."""
    for c in range(O_COLS):
        acc[c] = 0
    acc[O_SID] = -1
    NOPCID = NOPCID_M
    for first, hit in ((P_L1, HIT_L1), (P_L2, HIT_L2)):
        for j in range(MAX_LIST):
            sid = plan[first + j]
            if sid < 0:
                break
            r = tlb_lookup(geom, st, sid, va, ctx, NOPCID, clk)
            if r >= 0:
                acc[O_HIT] = hit
                acc[O_SID] = sid
                if hit == HIT_L2:
                    tlb_fill(geom, st, plan, _P_L1, va, r >> 1, ctx, r & 1, clk)
                return
    acc[O_HIT] = HIT_WALK
    ib = plan[P_IB]
    start = 6
    for lvl in range(2, 6):
        sid = plan[P_PSC + lvl]
        if sid >= 0 and lvl > leaf and tra[i, lvl - 1] >= 0:
            key = _lsr(va, 12 + ib * (lvl - 1))
            if lookup(geom, st, sid, key, key, ctx, np.int64(-1), clk) >= 0:
                start = lvl
                acc[O_SID] = sid
                acc[O_PSC] = lvl
                break
    ectx = ctx & EPTP_M
    for lvl in range(start - 1, 0, -1):
        ea = tra[i, lvl - 1]
        if ea < 0:
            continue
        if nested:
            _tdp_translate(geom, st, plan, ea, ttr, i, lvl - 1, ectx, clk, acc)
            ea = ea | GUEST_MARK
        acc[O_ENTRIES] += 1
        r = _read_entry(geom, st, plan, ea, clk)
        acc[O_REFS] += r
        acc[O_PTE_HITS] += 1 - r
        if lvl > leaf:
            sid = plan[P_PSC + lvl]
            if sid >= 0:
                key = _lsr(va, 12 + ib * (lvl - 1))
                insert(geom, st, sid, key, key, ctx, _I0, clk)
    if nested:
        _tdp_translate(geom, st, plan, gpa, ttr, i, 5, ectx, clk, acc)
    code = code_of_shift(shift)
    tlb_fill(geom, st, plan, _P_L2, va, code, ctx, glob, clk)
    tlb_fill(geom, st, plan, _P_L1, va, code, ctx, glob, clk)


@jit_nrt_free
def _run(plan, geom, st, va, ok, leaf, shift, glob, refs, tra, gpa, ttr, nested,
         ev_row, ev_kind, ev_op, ev_tag, out, per_access, counters, acc):
    n = va.shape[0]
    ne = ev_row.shape[0]
    for e in range(st.shape[0]):
        st[e, 0] = -1
        st[e, 1] = 0
        st[e, 2] = 0
        st[e, 3] = -1
    for c in range(counters.shape[0]):
        counters[c] = 0
    pcid = np.int64(0)
    vpid = np.int64(0)
    eptp = np.int64(0)
    pge = plan[P_PGE] != 0
    e = 0
    acc[CLK] = 0
    for i in range(n):
        while e < ne and ev_row[e] <= i:
            pcid, vpid, eptp = apply_event(geom, st, plan, ev_kind[e], ev_op[e], ev_tag[e],
                                           pcid, vpid, eptp)
            counters[C_EVENTS] += 1
            e += 1
        counters[C_N] += 1
        if ok[i] == 0:
            for c in range(O_COLS):
                acc[c] = 0
            acc[O_HIT] = HIT_FAULT
            acc[O_SID] = -1
            acc[O_REFS] = refs[i]
            counters[C_FAULT] += 1
        else:
            ctx = pcid | (vpid << 12) | (eptp << 28)
            g = np.int64(1) if (pge and glob[i] != 0) else np.int64(0)
            _access(geom, st, plan, i, va[i], np.int64(shift[i]), g, np.int64(leaf[i]), tra,
                    gpa[i] if nested else np.int64(0), ttr, nested, ctx, acc, acc)
            h = acc[O_HIT]
            if h == HIT_L1:
                counters[C_L1] += 1
            elif h == HIT_L2:
                counters[C_L2] += 1
            else:
                counters[C_WALK] += 1
                counters[C_WALK_REFS] += acc[O_REFS]
                if acc[O_PSC] >= 2:
                    counters[C_PSC2 + acc[O_PSC] - 2] += 1
        counters[C_REFS] += acc[O_REFS]
        counters[C_ENTRIES] += acc[O_ENTRIES]
        counters[C_PTE_HITS] += acc[O_PTE_HITS]
        counters[C_NTLB_HITS] += acc[O_NTLB_HITS]
        counters[C_NTLB_LOOKUPS] += acc[O_NTLB_LOOKUPS]
        if per_access:
            for c in range(O_COLS):
                out[i, c] = acc[c]
    while e < ne:                      # events after the last access still count
        pcid, vpid, eptp = apply_event(geom, st, plan, ev_kind[e], ev_op[e], ev_tag[e],
                                       pcid, vpid, eptp)
        counters[C_EVENTS] += 1
        e += 1


@jit
def run_model(plan, geom, st, va, ok, leaf, shift, glob, refs, tra, gpa, ttr, nested,
              ev_row, ev_kind, ev_op, ev_tag, out, counters):
    """Simulate one configuration over a translated trace, in trace order.

    ``va``/``gpa`` (int64 views of u64), ``ok``, ``leaf`` (leaf level), ``shift`` (log2 of
    the page a TLB entry covers: the effective page size of a 2-D walk), ``glob`` (the
    leaf's G bit), ``refs`` (the walker's reference count, charged to faults) and ``tra``
    (n, 5) / ``ttr`` (n, 6, 5) (entry addresses per level, -1 where not read) come from a
    traced :class:`vecmmu.Translation`. Events (sorted by ``ev_row``) apply before the
    translation at that row. Writes ``out`` (n, O_COLS) and ``counters`` (C_LEN,).
    """
    acc = np.zeros(O_COLS + 1, np.int64)
    _run(plan, geom, st, va, ok, leaf, shift, glob, refs, tra, gpa, ttr, nested,
         ev_row, ev_kind, ev_op, ev_tag, out, _T, counters, acc)


@jit
def sweep_model(t, parts, plans, geoms, sts, va, ok, leaf, shift, glob, refs, tra, gpa, ttr,
                nested, ev_row, ev_kind, ev_op, ev_tag, counters):
    """:func:`run_model` for the configurations of part ``t`` of ``parts`` of K
    (``plans`` (K, P_LEN), ``geoms`` (K, S, G_COLS), ``sts`` (K, E, 4)), counters only
    (K, C_LEN). :func:`vecmmu.kernels._jit.run_parts` runs the parts in parallel; each
    configuration runs in trace order, so results do not depend on the thread count."""
    k = plans.shape[0]
    acc = np.zeros(O_COLS + 1, np.int64)
    dummy = np.zeros((1, O_COLS), np.int16)
    lo, hi = part_bounds(k, parts, t, _I1)
    for j in range(lo, hi):
        acc[:] = 0
        _run(plans[j], geoms[j], sts[j], va, ok, leaf, shift, glob, refs, tra, gpa, ttr, nested,
             ev_row, ev_kind, ev_op, ev_tag, dummy, _F, counters[j], acc)
