"""The x86 guest walker (``cpu_walk``): one walker for 32-bit and 64-bit entries,
specialised by data (a :class:`vecmmu.format.PageFormat`'s parameter vector), not by code.

``walk_x86`` is KVM's ``FNAME(walk_addr_generic)`` for one address, followed by
``permission_fault``; ``cpu_translate`` is the batch driver (the only ``prange`` loop);
``apply_ad`` is ``FNAME(update_accessed_dirty_bits)`` over a batch, in trace order.

Everything is int64 inside: addresses are reinterpreted, never converted, so bit 63 of an
entry or of a linear address survives. Kernels never raise; they write status codes
(the values of :class:`vecmmu.bits.Fault`).
"""
import numpy as np

from ._jit import jit, jit_inline, pjit, prange
from .physmem import find_slot, load_le, read_phys, write_phys

# Fault classes (vecmmu.bits.Fault)
F_NONE = 0
F_PF = 1
F_GP = 2
F_SS = 3
F_UNBACKED = 7

# Access flag word, one per access (vecmmu.walk builds it)
AF_WRITE = 1
AF_FETCH = 2
AF_USER = 4
AF_AC = 8
AF_IMPLICIT = 16
AF_STACK = 32

# Error-code bits
PF_P = 1
PF_W = 2
PF_U = 4
PF_RSVD = 8
PF_FETCH = 16
PF_PK = 32

# Format flags (vecmmu.format.FMT_*)
FMT_PFERR_FETCH = 1
FMT_64BIT = 4

# Walker option bits (the semantics switches that are not part of the format)
W_KVM_UNBACKED = 1      # K13: unbacked table read is a #PF with P=0
W_CHECK_FINAL = 2       # hardware: the final address must be backed (else UNBACKED)

A_BIT = 1 << 5
D_BIT = 1 << 6


@jit
def walk_x86(i, addr, af, root, pdptes, pdpte_row, pkru,
             root_level, pte_size, index_bits, va_bits, leaf_levels, fflags, addr_mask,
             nx_flip, exec_force, pse36_mask, pkru_mask, rsvd, perms, wopts,
             slot_base, slot_end, slot_backing, slot_offset, backings,
             do_trace, tr_addr, tr_val):
    """Walk one linear address and decide the access (KVM: ``FNAME(walk_addr_generic)``
    followed by ``permission_fault``).

    Returns ``(fault, error_code, fault_level, entry_addr, entry_value, leaf_level,
    page_shift, acc, pkey, refs, gpa)``; writes row ``i`` of the trace when asked.
    """
    write = (af & AF_WRITE) != 0
    fetch = (af & AF_FETCH) != 0
    user = (af & AF_USER) != 0 and (af & AF_IMPLICIT) == 0   # implicit accesses are supervisor
    pfec = np.int64(0)
    if write:
        pfec |= PF_W
    if user:
        pfec |= PF_U
    if fetch:
        pfec |= PF_FETCH
    # the error-code bits every #PF of this access carries (I/D only where reported, K5)
    ec_acc = pfec & (PF_W | PF_U)
    if fetch and (fflags & FMT_PFERR_FETCH) != 0:
        ec_acc |= PF_FETCH
    zero = np.int64(0)
    if do_trace:
        for k in range(5):
            tr_addr[i, k] = -1
            tr_val[i, k] = 0

    if root_level == 0:                                   # paging off: GPA = linear address
        gpa = addr & 0xFFFFFFFF
        if (wopts & W_CHECK_FINAL) != 0 and find_slot(slot_base, slot_end, gpa, 1) < 0:
            return F_UNBACKED, zero, zero, gpa, zero, zero, zero, np.int64(15), zero, zero, gpa
        return F_NONE, zero, zero, zero, zero, zero, zero, np.int64(15), zero, zero, gpa

    if va_bits == 32:
        addr = addr & 0xFFFFFFFF
    else:                                                 # canonical: bits 63:va_bits-1 equal
        sh = 64 - va_bits
        if ((addr << sh) >> sh) != addr:
            f = F_SS if (af & AF_STACK) != 0 else F_GP
            return f, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero

    level = root_level
    table = root
    if root_level == 3:                                   # PAE: PDPTE registers, only P checked
        idx = (addr >> 30) & 3
        pdpte = pdptes[pdpte_row, idx]
        if (pdpte & 1) == 0:
            return F_PF, ec_acc, np.int64(3), root + idx * 8, pdpte, zero, zero, zero, zero, zero, zero
        table = pdpte & addr_mask
        level = 2

    acc_raw = np.int64(-1)
    refs = zero
    pte = zero
    ea = zero
    idx_mask = (np.int64(1) << index_bits) - 1
    while True:
        shift = 12 + (level - 1) * index_bits
        ea = table + ((addr >> shift) & idx_mask) * pte_size
        k = find_slot(slot_base, slot_end, ea, pte_size)
        if k < 0:                                         # table entry in no memslot
            if (wopts & W_KVM_UNBACKED) != 0:             # K13: KVM reads it as not present
                return F_PF, ec_acc, level, ea, zero, zero, zero, zero, zero, refs, zero
            return F_UNBACKED, zero, level, ea, zero, zero, zero, zero, zero, refs, zero
        pte = load_le(backings[slot_backing[k]], slot_offset[k] + (ea - slot_base[k]), pte_size)
        refs += 1
        if do_trace:
            tr_addr[i, level - 1] = ea
            tr_val[i, level - 1] = pte
        if (pte & 1) == 0:                                # not present
            return F_PF, ec_acc, level, ea, pte, zero, zero, zero, zero, refs, zero
        b7 = (pte >> 7) & 1
        if (pte & rsvd[b7, level - 1]) != 0:             # reserved bit set
            return F_PF, ec_acc | PF_P | PF_RSVD, level, ea, pte, zero, zero, zero, zero, refs, zero
        acc_raw &= (pte ^ nx_flip) | exec_force           # W, U AND-ed; XD inverted, then AND-ed
        if level == 1 or (b7 != 0 and ((leaf_levels >> level) & 1) != 0):
            break
        table = pte & addr_mask
        level -= 1

    # leaf reached: rights, pkey, permission decision
    acc = (acc_raw & 7) | ((acc_raw >> 60) & 8)           # P->READ, W, U, bit 63 (not XD) -> EXEC
    pkey = zero
    if (fflags & FMT_64BIT) != 0:
        pkey = (pte >> 59) & 15
    page_shift = 12 + (level - 1) * index_bits

    not_smap = (af & AF_AC) != 0 and (af & AF_IMPLICIT) == 0
    row = (pfec + (np.int64(not_smap) << 3)) >> 1
    fault = (np.int64(perms[row]) >> acc) & 1
    ec = ec_acc | PF_P
    if pkru_mask != 0:
        pk = (pkru >> (pkey * 2)) & 3
        pk &= pkru_mask >> ((pfec & ~np.int64(1)) + ((acc & 4) << 1))
        if pk != 0:
            ec |= PF_PK
            fault = 1
    if fault != 0:
        return F_PF, ec, level, ea, pte, level, page_shift, acc, pkey, refs, zero

    offset_mask = (np.int64(1) << page_shift) - 1
    frame = pte & addr_mask & ~offset_mask
    if pse36_mask != 0 and level == 2:                    # 32-bit 4 MiB page: PSE-36 bits
        frame |= ((pte >> 13) & pse36_mask) << 32
    gpa = frame | (addr & offset_mask)
    if (wopts & W_CHECK_FINAL) != 0 and find_slot(slot_base, slot_end, gpa, 1) < 0:
        return F_UNBACKED, zero, zero, gpa, zero, level, page_shift, acc, pkey, refs, gpa
    return F_NONE, zero, zero, ea, pte, level, page_shift, acc, pkey, refs, gpa


@pjit
def cpu_translate(addr, af, asid, pkru, roots, pdptes, params, rsvd, perms, wopts,
                  slot_base, slot_end, slot_backing, slot_offset, backings,
                  o_gpa, o_fault, o_ec, o_level, o_eaddr, o_eval, o_leaf, o_shift, o_acc,
                  o_pkey, o_refs, do_trace, tr_addr, tr_val):
    """Batch ``cpu_walk``: translate ``addr[i]`` for every i (results in input order).

    ``asid`` and ``pkru`` have length 1 (one for the batch) or ``len(addr)``.
    ``params`` is :meth:`vecmmu.format.PageFormat.params`.
    """
    n = addr.shape[0]
    root_level = params[0]
    pte_size = params[1]
    index_bits = params[2]
    va_bits = params[3]
    leaf_levels = params[4]
    fflags = params[5]
    addr_mask = params[6]
    nx_flip = params[7]
    exec_force = params[8]
    pse36_mask = params[9]
    pkru_mask = params[10]
    per_asid = asid.shape[0] == n and n > 1
    per_pkru = pkru.shape[0] == n and n > 1
    for i in prange(n):
        a = asid[i] if per_asid else asid[0]
        pk = pkru[i] if per_pkru else pkru[0]
        (o_fault[i], o_ec[i], o_level[i], o_eaddr[i], o_eval[i], o_leaf[i], o_shift[i], o_acc[i],
         o_pkey[i], o_refs[i], o_gpa[i]) = walk_x86(
            i, addr[i], af[i], roots[a], pdptes, a, pk,
            root_level, pte_size, index_bits, va_bits, leaf_levels, fflags, addr_mask,
            nx_flip, exec_force, pse36_mask, pkru_mask, rsvd, perms, wopts,
            slot_base, slot_end, slot_backing, slot_offset, backings, do_trace, tr_addr, tr_val)


@jit
def apply_ad(af, o_fault, o_level, o_eaddr, o_eval, o_leaf, tr_addr, tr_val, pte_size,
             kvm, refresh, slot_base, slot_end, slot_backing, slot_offset, backings):
    """Set A (and D) flags for a walked batch, in input order.

    KVM: ``FNAME(update_accessed_dirty_bits)``. Successful translations set A on every
    entry walked and D on the leaf of a write. On a faulting walk hardware sets A on the
    entries above the failing one (they were used); KVM sets nothing (K9). With
    ``refresh`` every reported entry value is re-read first, so access i sees the flags
    of accesses before it (trace order); without, values stay as in the starting memory
    (snapshot mode). Returns the number of entries written.
    """
    n = o_fault.shape[0]
    written = 0
    for i in range(n):
        f = o_fault[i]
        if f == F_GP or f == F_SS:
            continue
        success = f == F_NONE or (f == F_UNBACKED and o_level[i] == 0)
        if success:
            lowest = o_leaf[i]
        elif kvm:
            lowest = 6
        else:
            lowest = o_level[i] + 1
        if refresh:        # the values this walk saw: flags of earlier accesses, not its own
            for level in range(5, 0, -1):
                ea = tr_addr[i, level - 1]
                if ea < 0:
                    continue
                ok, cur = read_phys(slot_base, slot_end, slot_backing, slot_offset, backings, ea, pte_size)
                if ok:
                    tr_val[i, level - 1] = cur
                    if o_eaddr[i] == ea and f != F_UNBACKED:
                        o_eval[i] = cur
        for level in range(5, lowest - 1, -1):
            ea = tr_addr[i, level - 1]
            if ea < 0:
                continue
            ok, cur = read_phys(slot_base, slot_end, slot_backing, slot_offset, backings, ea, pte_size)
            if not ok:
                continue
            new = cur | A_BIT
            if success and level == o_leaf[i] and (af[i] & AF_WRITE) != 0:
                new |= D_BIT
            if new != cur:
                write_phys(slot_base, slot_end, slot_backing, slot_offset, backings, ea, pte_size, new)
                written += 1
    return written
