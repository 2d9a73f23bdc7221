"""Page-table scanner: every leaf reachable from a root, merged into ranges.

``scan_tables`` walks a whole x86 paging hierarchy depth first, in address order, from
one root (CR3, or the PAE PDPTE registers), with the same data a walk uses (a
:class:`vecmmu.format.PageFormat`'s parameters and reserved-bit table, the memslot
arrays). It is what a page-table dump tool does (Linux ``ptdump``, QEMU ``info mem``), as
one kernel: rights are accumulated exactly as ``walk_x86`` accumulates them (W and U
AND-ed, XD inverted then AND-ed), so a range's rights are what a walk of any address in
it decides on.

Garbage must not hang it: the work is bounded by ``budget`` entry reads (a table whose
entries point back at itself multiplies work, not depth: depth is bounded by the
levels), output by the capacity of the range arrays. It stops at either limit and says
where (``stop_va``); the caller resumes from there (``va_lo``).

Virtual addresses inside are *raw*: the index bits composed, ``< 2**va_bits``, before
sign extension (so they are monotonic); the caller sign-extends.
"""
import numpy as np

from ._jit import jit
from .physmem import find_slot, load_entry

# status
SC_DONE = 0
SC_BUDGET = 1        # entry-read budget used up at stop_va
SC_FULL = 2          # range output full; resume at stop_va

# range flags
RF_GLOBAL = 1
RF_PWT = 2
RF_PCD = 4
RF_PAT = 8
RF_SHADOW_STACK = 16     # leaf W=0 and D=1: a possible CET shadow-stack page
RF_UNBACKED = 32         # the page is not wholly inside one memslot (MMIO, a hole)
RF_PA_CONTIG = 64        # the range's frames are contiguous (pa + offset is exact)

# anomaly kinds
AN_RESERVED = 1          # a present entry with reserved bits set (the walk faults: RSVD)
AN_UNBACKED_TABLE = 2    # an entry points to a table outside every memslot
AN_UNBACKED_ENTRY = 3    # one entry of a partly backed table is outside every memslot


@jit
def scan_tables(root, root_level, pte_size, index_bits, va_bits, leaf_levels, addr_mask,
                nx_flip, exec_force, pse36_mask, pdptes, use_pdptes, rsvd, enc_mask, merge_pa,
                budget, va_lo, va_hi,
                slot_base, slot_end, slot_ptr,
                r_va, r_end, r_pa, r_pages, r_shift, r_level, r_acc, r_pkey, r_flags,
                a_va, a_level, a_addr, a_value, a_kind):
    """Scan the hierarchy under ``root`` for raw virtual addresses in ``[va_lo, va_hi)``.

    KVM has no such walker; it is ``FNAME(walk_addr_generic)``'s entry handling (reserved
    bits, ``is_last_gpte``, rights accumulation) applied to every entry instead of one
    path. ``enc_mask`` is cleared from every entry before use (an SME/SEV C-bit or a
    TDX shared bit). Returns ``(n_ranges, n_anomalies, status, reads, stop_va)``;
    anomalies beyond the capacity of ``a_*`` are counted but not recorded.
    """
    cap = r_va.shape[0]
    acap = a_va.shape[0]
    n_r = 0
    n_a = 0
    reads = np.int64(0)
    status = SC_DONE
    stop_va = va_hi
    keep = ~enc_mask
    half = np.int64(1) << (va_bits - 1) if va_bits > 32 else np.int64(-1)

    tbl = np.zeros(6, np.int64)
    idx = np.zeros(6, np.int64)
    acc = np.zeros(6, np.int64)
    base = np.zeros(6, np.int64)
    full = np.zeros(6, np.int64)        # 1: the table is wholly backed
    level = root_level
    tbl[level] = root
    acc[level] = -1
    base[level] = 0
    if use_pdptes or find_slot(slot_base, slot_end, root, 4096) >= 0:
        full[level] = 1

    # the open range
    have = False
    c_va = np.int64(0)
    c_end = np.int64(0)
    c_pa = np.int64(0)
    c_next = np.int64(0)
    c_pages = np.int64(0)
    c_shift = np.int64(0)
    c_level = np.int64(0)
    c_acc = np.int64(0)
    c_pkey = np.int64(0)
    c_flags = np.int64(0)

    while True:
        top_regs = use_pdptes and level == root_level
        nent = 4 if top_regs else (np.int64(1) << index_bits)
        if idx[level] >= nent:
            if level == root_level:
                break
            level += 1
            idx[level] += 1
            continue
        shift = 12 + (level - 1) * index_bits
        i = idx[level]
        va = base[level] + (i << shift)
        span = np.int64(1) << shift
        if va + span <= va_lo:
            idx[level] += 1
            continue
        if va >= va_hi:
            idx[level] = nent
            continue
        if top_regs:
            ea = root + i * 8
            e = pdptes[i]
        else:
            ea = tbl[level] + i * pte_size
            if reads >= budget:
                status = SC_BUDGET
                stop_va = va if va > va_lo else va_lo
                break
            if full[level] == 1:
                k = find_slot(slot_base, slot_end, tbl[level], 1)
            else:
                k = find_slot(slot_base, slot_end, ea, pte_size)
                if k < 0:
                    if n_a < acap:
                        a_va[n_a] = va
                        a_level[n_a] = level
                        a_addr[n_a] = ea
                        a_value[n_a] = 0
                        a_kind[n_a] = AN_UNBACKED_ENTRY
                    n_a += 1
                    idx[level] += 1
                    continue
            e = load_entry(slot_ptr[k] + (ea - slot_base[k]), pte_size)
            reads += 1
        e &= keep
        if (e & 1) == 0:
            idx[level] += 1
            continue
        b7 = (e >> 7) & 1
        if top_regs:
            a = acc[level]                  # PAE PDPTEs carry no rights
            leaf = False
        else:
            if (e & rsvd[b7, level - 1]) != 0:
                if n_a < acap:
                    a_va[n_a] = va
                    a_level[n_a] = level
                    a_addr[n_a] = ea
                    a_value[n_a] = e
                    a_kind[n_a] = AN_RESERVED
                n_a += 1
                idx[level] += 1
                continue
            a = acc[level] & ((e ^ nx_flip) | exec_force)
            leaf = level == 1 or (b7 != 0 and ((leaf_levels >> level) & 1) != 0)
        if not leaf:
            child = e & addr_mask
            if find_slot(slot_base, slot_end, child, 4096) >= 0:
                fb = 1
            elif find_slot(slot_base, slot_end, child, 1) < 0 and \
                    find_slot(slot_base, slot_end, child + 4095, 1) < 0:
                if n_a < acap:
                    a_va[n_a] = va
                    a_level[n_a] = level
                    a_addr[n_a] = ea
                    a_value[n_a] = e
                    a_kind[n_a] = AN_UNBACKED_TABLE
                n_a += 1
                idx[level] += 1
                continue
            else:
                fb = 0
            level -= 1
            tbl[level] = child
            idx[level] = 0
            acc[level] = a
            base[level] = va
            full[level] = fb
            continue

        # a leaf: its attributes
        off_mask = span - 1
        frame = e & addr_mask & ~off_mask
        if pse36_mask != 0 and level == 2:
            frame |= ((e >> 13) & pse36_mask) << 32
        accv = (a & 7) | ((a >> 60) & 8)
        pkey = (e >> 59) & 15 if pte_size == 8 else np.int64(0)
        fl = np.int64(0)
        if (e >> 8) & 1:
            fl |= RF_GLOBAL
        if (e >> 3) & 1:
            fl |= RF_PWT
        if (e >> 4) & 1:
            fl |= RF_PCD
        if level == 1:
            if (e >> 7) & 1:
                fl |= RF_PAT
        elif (e >> 12) & 1:
            fl |= RF_PAT
        if (e & 2) == 0 and (e & 64) != 0:
            fl |= RF_SHADOW_STACK
        if find_slot(slot_base, slot_end, frame, span) < 0:
            fl |= RF_UNBACKED
        if have and va == c_end and va != half and shift == c_shift and level == c_level \
                and accv == c_acc and pkey == c_pkey and fl == (c_flags & ~RF_PA_CONTIG) \
                and (merge_pa == 0 or frame == c_next):
            c_end = va + span
            c_pages += 1
            if frame != c_next:
                c_flags &= ~RF_PA_CONTIG
            c_next = frame + span
        else:
            if have:
                r_va[n_r] = c_va
                r_end[n_r] = c_end
                r_pa[n_r] = c_pa
                r_pages[n_r] = c_pages
                r_shift[n_r] = c_shift
                r_level[n_r] = c_level
                r_acc[n_r] = c_acc
                r_pkey[n_r] = c_pkey
                r_flags[n_r] = c_flags
                n_r += 1
                if n_r >= cap:
                    have = False
                    status = SC_FULL
                    stop_va = va
                    break
            have = True
            c_va = va
            c_end = va + span
            c_pa = frame
            c_next = frame + span
            c_pages = 1
            c_shift = shift
            c_level = level
            c_acc = accv
            c_pkey = pkey
            c_flags = fl | RF_PA_CONTIG
        idx[level] += 1

    if have:
        r_va[n_r] = c_va
        r_end[n_r] = c_end
        r_pa[n_r] = c_pa
        r_pages[n_r] = c_pages
        r_shift[n_r] = c_shift
        r_level[n_r] = c_level
        r_acc[n_r] = c_acc
        r_pkey[n_r] = c_pkey
        r_flags[n_r] = c_flags
        n_r += 1
    return n_r, n_a, status, reads, stop_va
