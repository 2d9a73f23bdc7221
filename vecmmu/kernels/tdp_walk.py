"""Batch drivers for ``tdp_walk`` (GPA → HPA through EPT or NPT) and for the
two-dimensional walk (a ``cpu_walk`` stacked on a ``tdp_walk``).

Both are the driver of one part of a batch, which :func:`vecmmu.kernels._jit.run_parts`
runs on one thread per part. Both write an int64 result matrix with one row per field
(``TDP_COLS`` / ``NESTED_COLS``) and one column per access, so every field is a contiguous
array that :mod:`vecmmu.walk` views or narrows without a strided copy. A chunk of a batch
writes columns ``out_lo`` on of the whole matrix: a column slice would be a strided
array, and a second compile of the kernel.
"""
import numpy as np

from ._jit import jit, jit_nrt_free, part_bounds
from .memo import memo_row, memo_tag
from .physmem import find_slot
from .walkers import (AF_FETCH, AF_USER, AF_WRITE, F_NONE, F_PF, S_GUEST, S_TABLE, W_CHECK_FINAL,
                      tdp_translate, walk_x86_nested)

TDP_COLS = ("fault", "error_code", "exit_qual", "fault_level", "entry_addr", "entry_value",
            "leaf_level", "page_shift", "acc", "refs", "hpa")
NESTED_COLS = ("fault", "error_code", "exit_qual", "stage", "fault_level", "guest_level",
               "entry_addr", "entry_value", "leaf_level", "page_shift", "acc", "pkey", "refs",
               "gpa", "hpa", "fault_gpa", "tdp_page_shift", "tdp_acc")


ITEM = 1024         # accesses per range call (parts are whole ranges)
TABLE_CACHE = 64    # sets of a part's cache of guest table pages' TDP translations
_ITEM = np.int64(ITEM)      # as an argument (a literal int is a signature of its own)

# --- the 2-D walk memo ---------------------------------------------------------------------
# Without A/D write-back or a trace, memory does not change during a call, so a 2-D walk's
# result is a function of (address space, 4 KiB page, access flags, PKRU) and of the page
# offset, which only the final addresses carry. The memo keeps whole results (unlike the
# 1-D memo, which keeps the guest walk and re-decides the access: here the access also
# decides the TDP check of the final GPA and the A/D-write checks). A row is NM_W words:
# tag (page | asid), access flags | epoch << 8, PKRU, then the 18 NESTED_COLS values; rows
# 2s and 2s+1 are set s. Kept: successful walks (GPA and HPA re-offset on a hit, the HPA
# re-checked against the memslots), guest #PF, and TDP faults on a guest table access
# before the leaf: none of these depend on the page offset. Faults of the final GPA (whose
# fault GPA is the full address) are walked every time.
NM_W = 24
NM_EPOCH = 8
NM_RES = 3                                  # the word where the result columns start
_FAULT, _STAGE, _LEAF, _GPA, _HPA = (NESTED_COLS.index(c) for c in
                                     ("fault", "stage", "leaf_level", "gpa", "hpa"))


@jit_nrt_free
def _nmemo_row(tag, a, set_mask):
    """Way 0 of the set of (tag, access flags): the 1-D memo's hash of the tag with the
    flags mixed into its page bits, so one page's kinds of access go to different sets."""
    return memo_row(tag ^ ((a * 0x9E3779B1) << 12), set_mask)


@jit
def tdp_translate_batch(t, parts, gpa, af, table, guest_acc, tdp_fp, tdp_rsvd, tdp_perms,
                        tdp_root, tdp_wopts, tdp_npt, mem, out, out_lo, do_trace, ttr_addr,
                        ttr_val):
    """Translate ``gpa[i]`` through the TDP for every i of part ``t`` of ``parts``, into
    column ``out_lo + i`` of ``out``.
    ``af``: access flags (write, fetch, user = user-mode for MBEC or CPL 3 for NPT/GMET);
    ``table[i]``: a guest paging-structure access; ``guest_acc``: guest rights for
    advanced exit information."""
    plo, phi = part_bounds(gpa.shape[0], parts, t, _ITEM)
    for s in range(plo, phi, ITEM):
        _tdp_range(s, min(phi, s + ITEM), gpa, af, table, guest_acc, tdp_fp, tdp_rsvd,
                   tdp_perms, tdp_root, tdp_wopts, tdp_npt, mem, out, out_lo, do_trace, ttr_addr,
                   ttr_val)


@jit_nrt_free
def _tdp_range(lo, hi, gpa, af, table, guest_acc, tdp_fp, tdp_rsvd, tdp_perms, tdp_root,
               tdp_wopts, tdp_npt, mem, out, out_lo, do_trace, ttr_addr, ttr_val):
    """Accesses ``lo..hi`` of :func:`tdp_translate_batch`."""
    n = gpa.shape[0]
    per_table = table.shape[0] == n and n > 1
    per_gacc = guest_acc.shape[0] == n and n > 1
    tdp = (tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, tdp_npt)
    ttr = (do_trace, ttr_addr, ttr_val)
    for i in range(lo, hi):
        a = af[i]
        t = table[i] if per_table else table[0]
        g = guest_acc[i] if per_gacc else guest_acc[0]
        r = tdp_translate(tdp, gpa[i], t != 0, (a & AF_WRITE) != 0, (a & AF_FETCH) != 0,
                          (a & AF_USER) != 0, g, mem, ttr, i, 0, True)
        for c in range(11):
            out[c, out_lo + i] = r[c]


@jit_nrt_free
def _memo_on(memo, do_trace):
    """Whether a part keeps its 2-D memo (and with it the table cache): the memo has rows
    and the call keeps no trace (a traced walk must read, and report, every entry)."""
    return memo.shape[0] >= 2 and not do_trace


@jit
def nested_translate(t, addr, af, asid, pkru, roots, pdptes, fp, rsvd, perms, wopts,
                     tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, tdp_npt, mem, out, out_lo,
                     do_trace, tr_addr, tr_val, ttr_addr, ttr_val, memo, epoch):
    """The 2-D walk, part ``t``: every guest table access and the final GPA through the
    TDP, access i into column ``out_lo + i`` of ``out``. ``tr_*``: guest trace ``(n, 5)``;
    ``ttr_*``: TDP trace ``(n, 6, 5)`` (row = guest level - 1, or 5 for the final GPA).
    ``memo`` ``(parts, rows, NM_W)``: the work is split into ``parts`` contiguous parts,
    each with its own 2-D walk memo (``rows`` of 0: none); ``epoch`` (>= 1) marks this
    call's entries. With the memo, the part also keeps the TDP translations of the guest
    table pages it reads (``TABLE_CACHE`` sets; :func:`walkers.tdp_table_cached`), so a
    walk that misses the memo reads only the guest entries and the final GPA's TDP
    entries from memory (its refs still count every entry the walk reads)."""
    m = memo[t]
    tc = np.zeros((TABLE_CACHE if _memo_on(m, do_trace) else 0, 4), np.int64)
    plo, phi = part_bounds(addr.shape[0], memo.shape[0], t, _ITEM)
    for s in range(plo, phi, ITEM):
        _nested_range(s, min(phi, s + ITEM), addr, af, asid, pkru, roots, pdptes, fp, rsvd,
                      perms, wopts, tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, tdp_npt,
                      mem, out, out_lo,
                      do_trace, tr_addr, tr_val, ttr_addr, ttr_val, m, epoch, tc)


@jit_nrt_free
def _nested_range(lo, hi, addr, af, asid, pkru, roots, pdptes, fp, rsvd, perms, wopts,
                  tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, tdp_npt, mem, out, out_lo,
                  do_trace, tr_addr, tr_val, ttr_addr, ttr_val, memo, epoch, tc):
    """Accesses ``lo..hi`` of :func:`nested_translate` (``tc``: its table cache)."""
    n = addr.shape[0]
    per_asid = asid.shape[0] == n and n > 1
    per_pkru = pkru.shape[0] == n and n > 1
    tdp = (tdp_fp, tdp_rsvd, tdp_perms, tdp_root, tdp_wopts, tdp_npt)
    ttr = (do_trace, ttr_addr, ttr_val)
    slot_base, slot_end, _ = mem
    use_memo = _memo_on(memo, do_trace)
    set_mask = (memo.shape[0] >> 1) - 1
    check_final = (tdp_wopts & W_CHECK_FINAL) != 0
    for i in range(lo, hi):
        a = asid[i] if per_asid else asid[0]
        pk = pkru[i] if per_pkru else pkru[0]
        afi = np.int64(af[i])
        va = addr[i]
        row = np.int64(0)
        tag = np.int64(0)
        key = np.int64(0)
        if use_memo:
            tag = memo_tag(va, a, fp[3])
            key = afi | (epoch << NM_EPOCH)
            row = _nmemo_row(tag, afi, set_mask)
            hit = np.int64(-1)
            if memo[row, 0] == tag and memo[row, 1] == key and memo[row, 2] == pk:
                hit = row
            elif memo[row + 1, 0] == tag and memo[row + 1, 1] == key and memo[row + 1, 2] == pk:
                hit = row + 1
            if hit >= 0:
                # a success: the final addresses take this access's page offset, and the
                # host frame is checked again (a memslot may end inside a page)
                ok_final = memo[hit, NM_RES + _FAULT] == F_NONE
                gpa = (memo[hit, NM_RES + _GPA] & ~np.int64(0xFFF)) | (va & 0xFFF)
                hpa = (memo[hit, NM_RES + _HPA] & ~np.int64(0xFFF)) | (va & 0xFFF)
                if not (ok_final and check_final and find_slot(slot_base, slot_end, hpa, 1) < 0):
                    for c in range(18):
                        out[c, out_lo + i] = memo[hit, NM_RES + c]
                    if ok_final:
                        out[_GPA, out_lo + i] = gpa
                        out[_HPA, out_lo + i] = hpa
                    continue
        r = walk_x86_nested(i, va, afi, roots[a], pdptes, a, pk, fp, rsvd, perms, wopts,
                            mem, do_trace, tr_addr, tr_val, tdp, i, True, ttr, tc)
        for c in range(18):
            out[c, out_lo + i] = r[c]
        # kept: success, guest #PF, a TDP fault on a table access before the leaf
        if use_memo and (r[_FAULT] == F_NONE or (r[_FAULT] == F_PF and r[_STAGE] == S_GUEST)
                         or (r[_STAGE] == S_TABLE and r[_LEAF] == 0)):
            for c in range(NM_W):
                memo[row + 1, c] = memo[row, c]
            memo[row, 0] = tag
            memo[row, 1] = key
            memo[row, 2] = pk
            for c in range(18):
                memo[row, NM_RES + c] = r[c]
