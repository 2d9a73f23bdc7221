"""Batch drivers for ``tdp_walk`` (GPA → HPA through EPT or NPT) and for the
two-dimensional walk (a ``cpu_walk`` stacked on a ``tdp_walk``).

Both write one row of an int64 result matrix per access (columns ``TDP_COLS`` /
``NESTED_COLS``); :mod:`vecmmu.walk` turns the columns into typed arrays.
"""
from ._jit import jit_nrt_free, pjit, prange
from .walkers import AF_FETCH, AF_USER, AF_WRITE, tdp_translate, walk_x86_nested

TDP_COLS = ("fault", "error_code", "exit_qual", "fault_level", "entry_addr", "entry_value",
            "leaf_level", "page_shift", "acc", "refs", "hpa")
NESTED_COLS = ("fault", "error_code", "exit_qual", "stage", "fault_level", "guest_level",
               "entry_addr", "entry_value", "leaf_level", "page_shift", "acc", "pkey", "refs",
               "gpa", "hpa", "fault_gpa", "tdp_page_shift", "tdp_acc")


_ITEM = 1024        # accesses per parallel work item


@pjit
def tdp_translate_batch(gpa, af, table, guest_acc, tdp_fp, tdp_rsvd, tdp_perms, tdp_root,
                        tdp_wopts, mem, out, do_trace, ttr_addr, ttr_val):
    """Translate ``gpa[i]`` through the TDP for every i. ``af``: access flags (write,
    fetch, user = user-mode for MBEC or CPL 3 for NPT/GMET); ``table[i]``: a guest
    paging-structure access; ``guest_acc``: guest rights for advanced exit information."""
    n = gpa.shape[0]
    for s in prange((n + _ITEM - 1) // _ITEM):
        _tdp_range(s * _ITEM, min(n, s * _ITEM + _ITEM), gpa, af, table, guest_acc, tdp_fp,
                   tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, mem, out, do_trace, ttr_addr,
                   ttr_val)


@jit_nrt_free
def _tdp_range(lo, hi, gpa, af, table, guest_acc, tdp_fp, tdp_rsvd, tdp_perms, tdp_root,
               tdp_wopts, mem, out, do_trace, ttr_addr, ttr_val):
    """Accesses ``lo..hi`` of :func:`tdp_translate_batch`: a call from the ``prange``
    body, not inlined into it (Numba's parfor passes grow with the body's size)."""
    n = gpa.shape[0]
    per_table = table.shape[0] == n and n > 1
    per_gacc = guest_acc.shape[0] == n and n > 1
    tdp = (tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts)
    ttr = (do_trace, ttr_addr, ttr_val)
    for i in range(lo, hi):
        a = af[i]
        t = table[i] if per_table else table[0]
        g = guest_acc[i] if per_gacc else guest_acc[0]
        r = tdp_translate(tdp, gpa[i], t != 0, (a & AF_WRITE) != 0, (a & AF_FETCH) != 0,
                          (a & AF_USER) != 0, g, mem, ttr, i, 0, True)
        for c in range(11):
            out[i, c] = r[c]


@pjit
def nested_translate(addr, af, asid, pkru, roots, pdptes, fp, rsvd, perms, wopts,
                     tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, mem, out,
                     do_trace, tr_addr, tr_val, ttr_addr, ttr_val):
    """The 2-D walk: every guest table access and the final GPA through the TDP.
    ``tr_*``: guest trace ``(n, 5)``; ``ttr_*``: TDP trace ``(n, 6, 5)`` (row = guest
    level - 1, or 5 for the final GPA)."""
    n = addr.shape[0]
    for s in prange((n + _ITEM - 1) // _ITEM):
        _nested_range(s * _ITEM, min(n, s * _ITEM + _ITEM), addr, af, asid, pkru, roots,
                      pdptes, fp, rsvd, perms, wopts, tdp_fp, tdp_rsvd, tdp_perms, tdp_root,
                      tdp_wopts, mem, out, do_trace, tr_addr, tr_val, ttr_addr, ttr_val)


@jit_nrt_free
def _nested_range(lo, hi, addr, af, asid, pkru, roots, pdptes, fp, rsvd, perms, wopts,
                  tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, mem, out,
                  do_trace, tr_addr, tr_val, ttr_addr, ttr_val):
    """Accesses ``lo..hi`` of :func:`nested_translate` (one parallel work item, called
    from the ``prange`` body: inlining the 2-D walker there made Numba's parfor lowering
    and typing take over a minute on a cold cache)."""
    n = addr.shape[0]
    per_asid = asid.shape[0] == n and n > 1
    per_pkru = pkru.shape[0] == n and n > 1
    tdp = (tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts)
    ttr = (do_trace, ttr_addr, ttr_val)
    for i in range(lo, hi):
        a = asid[i] if per_asid else asid[0]
        pk = pkru[i] if per_pkru else pkru[0]
        r = walk_x86_nested(i, addr[i], af[i], roots[a], pdptes, a, pk, fp, rsvd, perms, wopts,
                            mem, do_trace, tr_addr, tr_val, tdp, i, True, ttr)
        for c in range(18):
            out[i, c] = r[c]
