"""The 1-D walk memo: each walked page's access-independent outcome, kept per part.

Without A/D write-back or a trace, memory does not change during a call, so a walk is a
function of (address space, 4 KiB page): the access enters only at the leaf
(walkers.leaf_fault, the error-code bits). The memo keeps each walked page's outcome, so
a later access to the same page is decided without reading the tables again. It is a
2-way set-associative table of 4-word rows per parallel part (rows 2s and 2s+1 are set
s): tag = page address | asid; an info word; the entry address; the raw entry. Entries
carry the call's epoch, so a buffer is reused across calls without clearing. Every hit
re-checks the tag, so the memo (like the prefetch) never changes a result.

:mod:`.cpu_walk` looks pages up and fills them; :mod:`.tdp_walk`'s 2-D memo (whole
results, wider rows) uses the same tag and set hash.
"""
import numpy as np

from ._jit import jit_nrt_free, jit_walker
from .physmem import find_slot, find_slot_call
from .walkers import (F_NONE, F_PF, F_UNBACKED, PF_P, PF_RSVD, W_CHECK_FINAL, access_ec,
                      leaf_fault, leaf_frame)

MK_LEAF = 1             # walk reached its leaf: rights, pkey, page size, the leaf entry
MK_PF = 2               # walk stopped with #PF before a leaf (not present, reserved bit)
MK_UNBACKED = 3         # walk stopped at a table entry outside memory
# the info word: bits 1:0 the kind (MK_*), then these fields
M_LEVEL = 2             # bits 4:2 leaf level, or the level where the walk stopped
M_SHIFT = 5             # bits 10:5 page shift
M_ACC = 11              # bits 14:11 accumulated rights
M_PKEY = 15             # bits 18:15 protection key
M_REFS = 19             # bits 26:19 entries read
M_P = 27                # bit 27 (MK_PF): the error code's P bit
M_RSVD = 28             # bit 28 (MK_PF): the error code's RSVD bit
M_CHECK = np.int64(1) << 29     # the leaf's frame is not wholly in one memslot
M_EPOCH = 40            # bits 62:40: the epoch (1 .. MEMO_EPOCH_MAX)
MEMO_EPOCH_MAX = (1 << 23) - 1


@jit_nrt_free
def memo_tag(addr, a, va_bits):
    if va_bits == 32:
        addr = addr & 0xFFFFFFFF
    return (addr & ~np.int64(0xFFF)) | a


@jit_nrt_free
def memo_row(tag, set_mask):
    """Way 0 of the tag's set (contiguous pages go to distinct sets)."""
    v = tag >> 12
    return ((v ^ (v >> 17) ^ ((tag & 0xFFF) << 7)) & set_mask) << 1


@jit_nrt_free
def memo_find(memo, row, tag, epoch):
    if memo[row, 0] == tag and (memo[row, 1] >> M_EPOCH) == epoch:
        return row
    if memo[row + 1, 0] == tag and (memo[row + 1, 1] >> M_EPOCH) == epoch:
        return row + 1
    return np.int64(-1)


@jit_walker
def memo_result(memo, r, addr, af, pk, fp, perms, slot_base, slot_end):
    """The kernel's 11 outputs for an access to a memoised page (what ``walk_x86_flat``
    returns for it): ``(fault, error_code, fault_level, entry_addr, entry_value, leaf,
    page_shift, acc, pkey, refs, gpa)``."""
    info = memo[r, 1]
    ea = memo[r, 2]
    raw = memo[r, 3]
    level = (info >> M_LEVEL) & 7
    refs = (info >> M_REFS) & 255
    zero = np.int64(0)
    pfec, ec_acc = access_ec(af, fp[5])
    mk = info & 3
    if mk == MK_PF:
        ec = ec_acc | (((info >> M_P) & 1) * PF_P) | (((info >> M_RSVD) & 1) * PF_RSVD)
        return (np.int64(F_PF), ec, level, ea, raw, zero, zero, zero, zero, refs, zero)
    if mk == MK_UNBACKED:
        return (np.int64(F_UNBACKED), zero, level, ea, zero, zero, zero, zero, zero, refs, zero)
    shift = (info >> M_SHIFT) & 63
    acc = (info >> M_ACC) & 15
    pkey = (info >> M_PKEY) & 15
    fault, ec = leaf_fault(af, pfec, ec_acc, acc, pkey, pk, fp[10], perms)
    if fault != 0:
        return (np.int64(F_PF), ec, level, ea, raw, level, shift, acc, pkey, refs, zero)
    gpa = leaf_frame(raw & ~fp[12], fp[6], shift, fp[9], level) | (
        addr & ((np.int64(1) << shift) - 1))
    if (info & M_CHECK) != 0 and find_slot(slot_base, slot_end, gpa, 1) < 0:
        return (np.int64(F_UNBACKED), zero, zero, gpa, zero, level, shift, acc, pkey, refs, gpa)
    return (np.int64(F_NONE), zero, zero, ea, raw, level, shift, acc, pkey, refs, gpa)


@jit_walker
def memo_fill(memo, row, tag, epoch, f, ec, lvl, ea, ev, leaf, sh, acc, pkey, refs, fp, wopts,
               slot_base, slot_end):
    """Keep a walk's access-independent outcome in way 0 of its set (way 0 moves to way 1).
    Not kept: non-canonical addresses (#GP/#SS, decided before any table read) and a leaf
    whose final address was unbacked (the result does not carry the leaf entry)."""
    if leaf != 0:
        if f == F_UNBACKED:
            return
        info = (MK_LEAF | (leaf << M_LEVEL) | (sh << M_SHIFT) | (acc << M_ACC) | (pkey << M_PKEY)
                | (refs << M_REFS))
        if (wopts & W_CHECK_FINAL) != 0:
            frame = leaf_frame(ev & ~fp[12], fp[6], sh, fp[9], leaf)
            if find_slot_call(slot_base, slot_end, frame, np.int64(1) << sh) < 0:
                info |= M_CHECK
    elif f == F_PF:
        info = (MK_PF | (lvl << M_LEVEL) | (refs << M_REFS) | ((ec & PF_P) << M_P)
                | (np.int64((ec & PF_RSVD) != 0) << M_RSVD))
    elif f == F_UNBACKED:
        info = MK_UNBACKED | (lvl << M_LEVEL) | (refs << M_REFS)
    else:
        return
    for c in range(4):
        memo[row + 1, c] = memo[row, c]
    memo[row, 0] = tag
    memo[row, 1] = info | (epoch << M_EPOCH)
    memo[row, 2] = ea
    memo[row, 3] = ev
