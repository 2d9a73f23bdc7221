"""Per-address walkers: KVM's ``paging_tmpl.h``, one function per entry layout.

* ``walk_x86``: 32-bit and 64-bit x86 entries (guest tables, and AMD NPT), specialised by
  data. With ``tdp=None`` it is the one-dimensional walk; with ``tdp`` a TDP context tuple
  it is the guest half of a two-dimensional walk: every guest table access and the final
  GPA go through :func:`tdp_translate` first. Numba prunes the ``tdp is None`` branches,
  so the 1-D specialisation carries no nested code, and the NPT walk inside a 2-D walk is
  the 1-D specialisation of the same source.
* ``walk_ept``: EPT entries (R/W/XS/XU, memory type, misconfiguration).
* ``tdp_translate``: one GPA through EPT or NPT, with the fault reported as the hardware
  reports it (EPT violation with its exit qualification, EPT misconfiguration, #NPF with
  EXITINFO1).

Everything is int64; addresses are reinterpreted, never converted. Per-address functions
return tuples of scalars and never allocate.

Tuples passed around:

* ``fp`` (format parameters): ``(root_level, pte_size, index_bits, va_bits, leaf_levels,
  flags, addr_mask, nx_flip, exec_force, pse36_mask, pkru_mask, bad_mt_xwr)``
* ``mem``: ``(slot_base, slot_end, slot_ptr)`` (:meth:`vecmmu.PhysMem.slot_pointers`)
* ``tdp``: ``(fp, rsvd, perms, root, wopts)``; its trace arrays ``(n, 6, 5)`` (row = guest
  level - 1, or 5 for the final GPA) travel separately as ``ttr = (do_trace, addr, val)``
"""
import numpy as np

from ._jit import jit_nrt_free as jit
from ._jit import jit_nrt_free, jit_walker
from .physmem import find_slot, find_slot_call, load_entry

# Fault classes (vecmmu.bits.Fault)
F_NONE = 0
F_PF = 1
F_GP = 2
F_SS = 3
F_EPT_VIOLATION = 4
F_EPT_MISCONFIG = 5
F_NPF = 6
F_UNBACKED = 7

# Stages of a 2-D walk
S_NONE = 0
S_GUEST = 1
S_TABLE = 2
S_FINAL = 3

# Access flag word, one per access
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
PF_GUEST_FINAL = np.int64(1) << 32
PF_GUEST_PAGE = np.int64(1) << 33

# Format flags (vecmmu.format.FMT_*)
FMT_PFERR_FETCH = 1
FMT_64BIT = 4
FMT_KVM = 8
FMT_EPT = 16
FMT_MBEC = 32
FMT_EPT_AD = 64
FMT_ADV_INFO = 128
FMT_PDPTE_MEM = 256
FMT_PDPTE_RSVD = 512
FMT_NPT = 1024
FMT_GMET = 2048

# Walker option bits (semantics switches that are not part of a format)
W_KVM_UNBACKED = 1      # K13: an unbacked table read is a not-present fault
W_CHECK_FINAL = 2       # hardware: the final address must be backed (else UNBACKED)

# Constants passed to non-inlined kernels (walk_ept, tdp_translate, the TLB model's
# helpers): as numpy scalars Numba types them bool/int64, not Literal[...], so each kernel
# compiles once instead of once per combination of constant arguments (five tdp_translate
# compiles, ~10 s each).
_T = np.bool_(True)
_F = np.bool_(False)
_I0 = np.int64(0)
_I1 = np.int64(1)
_I2 = np.int64(2)
_I5 = np.int64(5)
_I8 = np.int64(8)

ACC_WRITE = 2
ACC_USER = 4
ACC_EXEC = 8
A_BIT = 1 << 5
D_BIT = 1 << 6
EPT_XU = 1 << 10


@jit_nrt_free
def access_pfec(write, fetch, user):
    """The W, U and F bits of an access's page-fault error code (the permission-table row
    is this >> 1). ``user``: a user-mode access (for EPT with MBEC, a user-mode linear
    address)."""
    pfec = np.int64(0)
    if write:
        pfec |= PF_W
    if user:
        pfec |= PF_U
    if fetch:
        pfec |= PF_FETCH
    return pfec


@jit_nrt_free
def access_ec(af, fflags):
    """``(pfec, ec_acc)`` of an access flag word: the permission-table bits (W, U, F; row =
    pfec >> 1) and the error-code bits every #PF of this access carries (W, U, and I/D only
    where the format reports it: K5/K7). Implicit accesses are supervisor accesses."""
    write = (af & AF_WRITE) != 0
    fetch = (af & AF_FETCH) != 0
    pfec = access_pfec(write, fetch, (af & AF_USER) != 0 and (af & AF_IMPLICIT) == 0)
    ec_acc = pfec & (PF_W | PF_U)
    if fetch and (fflags & FMT_PFERR_FETCH) != 0:
        ec_acc |= PF_FETCH
    return pfec, ec_acc


@jit_nrt_free
def leaf_fault(af, pfec, ec_acc, acc, pkey, pkru, pkru_mask, perms):
    """``(fault, error_code)`` of an access at a reached leaf with rights ``acc`` and
    protection key ``pkey`` (KVM: ``permission_fault``): the permission bitmask table row
    for the access (SMAP's AC bit only for explicit accesses), then PKRU."""
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
    return fault, ec


@jit_nrt_free
def leaf_frame(pte, addr_mask, page_shift, pse36_mask, level):
    """The physical base of the page a leaf entry maps (PSE-36 bits for a 32-bit 4 MiB
    page)."""
    frame = pte & addr_mask & ~((np.int64(1) << page_shift) - 1)
    if pse36_mask != 0 and level == 2:
        frame |= ((pte >> 13) & pse36_mask) << 32
    return frame


@jit
def walk_ept(gpa, write, fetch, user_mode, fp, rsvd, perms, root, wopts, check_final, mem,
             do_trace, tr_addr, tr_val, tr_i, tr_row):
    """One GPA through EPT (KVM: the ``ept`` instance of ``walk_addr_generic``).

    Returns ``(fault, prot, level, entry_addr, entry_value, leaf_level, page_shift, acc,
    refs, hpa)`` where ``prot`` is the raw AND of the entries walked (bits 0-2 and 10),
    including a failing entry, and ``acc`` the rights in ACC layout (R=1, W=2, XU=4, XS=8).
    """
    root_level = fp[0]
    fflags = fp[5]
    addr_mask = fp[6]
    bad_mt_xwr = fp[11]
    mbec = (fflags & FMT_MBEC) != 0
    slot_base, slot_end, slot_ptr = mem
    zero = np.int64(0)
    level = root_level
    table = root
    prot = np.int64(-1)
    refs = zero
    pte = zero
    ea = zero
    while True:
        shift = 12 + (level - 1) * 9
        ea = table + ((gpa >> shift) & 511) * 8
        k = find_slot(slot_base, slot_end, ea, 8)
        if k < 0:
            if (wopts & W_KVM_UNBACKED) != 0:            # KVM: a failed read is an error
                # before the entry is AND-ed in: prot holds the levels above (semantics 7.2)
                return (F_EPT_VIOLATION, prot & (7 | EPT_XU), level, ea, zero, zero, zero, zero,
                        refs, zero)
            return F_UNBACKED, zero, level, ea, zero, zero, zero, zero, refs, zero
        pte = load_entry(slot_ptr[k] + (ea - slot_base[k]), _I8)
        refs += 1
        if do_trace:
            tr_addr[tr_i, tr_row, level - 1] = ea
            tr_val[tr_i, tr_row, level - 1] = pte
        prot &= pte                                       # AND before the present check
        present = (pte & 7) != 0 or (mbec and (pte & EPT_XU) != 0)
        if not present:
            return F_EPT_VIOLATION, prot & (7 | EPT_XU), level, ea, pte, zero, zero, zero, refs, zero
        b7 = (pte >> 7) & 1
        xwr = pte & 0x3F
        if mbec and (pte & EPT_XU) != 0:                  # XU counts as X for bad_mt_xwr (R5)
            xwr |= 4
        if (pte & rsvd[b7, level - 1]) != 0 or ((bad_mt_xwr >> xwr) & 1) != 0:
            return F_EPT_MISCONFIG, zero, level, ea, pte, zero, zero, zero, refs, zero
        if level == 1 or b7 != 0:
            break
        table = pte & addr_mask
        level -= 1
    acc = (prot & 3) | ((prot >> 8) & ACC_USER) | ((prot << 1) & ACC_EXEC)
    pfec = access_pfec(write, fetch, user_mode)
    page_shift = 12 + (level - 1) * 9
    if ((np.int64(perms[pfec >> 1]) >> acc) & 1) != 0:
        return (F_EPT_VIOLATION, prot & (7 | EPT_XU), level, ea, pte, level, page_shift, acc,
                refs, zero)
    offset_mask = (np.int64(1) << page_shift) - 1
    hpa = (pte & addr_mask & ~offset_mask) | (gpa & offset_mask)
    if check_final and (wopts & W_CHECK_FINAL) != 0 and find_slot(slot_base, slot_end, hpa, 1) < 0:
        return F_UNBACKED, prot & (7 | EPT_XU), zero, hpa, zero, level, page_shift, acc, refs, hpa
    return F_NONE, prot & (7 | EPT_XU), zero, ea, pte, level, page_shift, acc, refs, hpa


@jit_walker
def tdp_translate(tdp, gpa, table, write, fetch, user_mode, guest_acc, mem, ttr, tr_i, tr_row,
                  check_final):
    """:func:`_tdp_translate` with ``npt`` from the TDP tuple ``tdp = (fp, rsvd, perms,
    root, wopts, npt)``."""
    return _tdp_translate(tdp, tdp[5], gpa, table, write, fetch, user_mode, guest_acc, mem, ttr,
                          tr_i, tr_row, check_final)


@jit
def _tdp_translate(tdp, npt, gpa, table, write, fetch, user_mode, guest_acc, mem, ttr, tr_i,
                   tr_row, check_final):
    """One GPA of a 2-D walk through the TDP (KVM: ``translate_nested_gpa`` + the nested
    walker). ``npt``: None for EPT, True for NPT: a type, so Numba compiles only the
    walker of its kind (an EPT guest does not compile the x86 walker of the NPT side).
    ``table``: a guest paging-structure access (else the final GPA);
    ``user_mode``: the access is user-mode for MBEC (EPT: the guest walk's U/S) or made
    at CPL 3 (NPT with GMET); ``guest_acc``: the guest walk's rights, for advanced
    VM-exit information. ``ttr = (do_trace, addr, val)``: the TDP trace.
    ``check_final``: check that the resulting HPA is backed (hardware semantics).

    Returns ``(fault, error_code, exit_qual, level, entry_addr, entry_value, leaf_level,
    page_shift, acc, refs, hpa)``.
    """
    fp, rsvd, perms, root, wopts, _ = tdp
    do_trace, tr_addr, tr_val = ttr
    fflags = fp[5]
    kvm = (fflags & FMT_KVM) != 0
    zero = np.int64(0)
    if npt is None:
        if table:
            w = kvm or (fflags & FMT_EPT_AD) != 0         # K1: KVM always writes; EPT A/D: writes
            f, prot, lvl, ea, ev, leaf, sh, acc, refs, hpa = walk_ept(
                gpa, w, _F, _F, fp, rsvd, perms, root, wopts, check_final, mem,
                do_trace, tr_addr, tr_val, tr_i, tr_row)
            q = np.int64(3) if w else np.int64(1)
        else:
            um = user_mode and (fflags & FMT_MBEC) != 0
            f, prot, lvl, ea, ev, leaf, sh, acc, refs, hpa = walk_ept(
                gpa, write, fetch, um, fp, rsvd, perms, root, wopts, check_final, mem,
                do_trace, tr_addr, tr_val, tr_i, tr_row)
            q = np.int64(2) if write else (np.int64(4) if fetch else np.int64(1))
        if f != F_EPT_VIOLATION:
            return f, zero, zero, lvl, ea, ev, leaf, sh, acc, refs, hpa
        q |= (prot & 7) << 3                              # R/W/X of the entries walked
        if (fflags & FMT_MBEC) != 0:
            q |= ((prot >> 10) & 1) << 6                  # XU
        q |= np.int64(1) << 7                             # GVA valid
        if not table:
            q |= np.int64(1) << 8                         # GVA translated
            if (fflags & FMT_ADV_INFO) != 0 and not kvm:
                q |= ((guest_acc >> 2) & 1) << 9          # U/S of the linear address
                q |= ((guest_acc >> 1) & 1) << 10         # R/W
                q |= (((guest_acc >> 3) & 1) ^ 1) << 11   # XD
        return f, zero, q, lvl, ea, ev, leaf, sh, acc, refs, hpa
    # NPT: an x86 walk of L1's nested tables; every access is a user access and tables are
    # writes; with GMET a final access is user-mode only at CPL 3 (R9).
    af = np.int64(AF_USER)
    if table:
        af |= AF_WRITE
        stage_bit = PF_GUEST_PAGE
    else:
        if write:
            af |= AF_WRITE
        elif fetch:
            af |= AF_FETCH
        if (fflags & FMT_GMET) != 0 and not user_mode:
            af = af & ~np.int64(AF_USER)
        stage_bit = PF_GUEST_FINAL
    row_i = np.int64(0)
    if do_trace:
        row_i = np.int64(tr_i)
    (f, ec, q, st, lvl, glvl, ea, ev, leaf, sh, acc, pk, refs, g2, hpa, fg, tsh,
     tacc) = walk_x86_flat(0, gpa, af, root, tr_addr[0, :0, :4], 0, zero, fp, rsvd, perms, wopts,
                      mem, do_trace, tr_addr[row_i], tr_val[row_i], None, tr_row, check_final)
    if f == F_PF:
        return F_NPF, ec | stage_bit, zero, lvl, ea, ev, leaf, sh, acc, refs, g2
    return f, zero, zero, lvl, ea, ev, leaf, sh, acc, refs, g2


def _make_walk_x86(NESTED):
    """Instantiate the x86 walker, as KVM includes ``paging_tmpl.h`` once per instance:
    ``NESTED`` (a compile-time constant) adds the TDP step to every guest table access
    and to the final GPA. Two instances from one source: ``walk_x86_flat`` (1-D walks,
    and the NPT side of a 2-D walk) and ``walk_x86_nested`` (the guest side of a 2-D
    walk). Distinct functions, not one specialised on ``tdp=None``: Numba 0.68's cache
    cannot reload a dispatcher that calls another specialisation of itself."""

    def walk_x86(i, addr, af, root, pdptes, pdpte_row, pkru, fp, rsvd, perms, wopts, mem,
                 do_trace, tr_addr, tr_val, tdp, tr_rowbase, check_final, ttr=None, tc=None):
        """Walk one linear address through x86 tables and decide the access (KVM:
        ``FNAME(walk_addr_generic)`` + ``permission_fault``), optionally over a TDP.

        ``tr_addr``/``tr_val`` rows are indexed by ``tr_rowbase + level - 1`` in 2-D form
        ``[row, level - 1]`` (a batch passes ``trace[i]`` slices). ``tc`` (nested only,
        ``(sets, 4)`` int64, sets a power of two, or 0 rows: off): a cache of the TDP
        translations of guest table pages (:func:`tdp_table_cached`). Returns ``(fault,
        error_code, exit_qual, stage, fault_level, guest_level, entry_addr, entry_value,
        leaf_level, page_shift, acc, pkey, refs, gpa, hpa, fault_gpa, tdp_page_shift,
        tdp_acc)``.
        """
        root_level = fp[0]
        pte_size = fp[1]
        index_bits = fp[2]
        va_bits = fp[3]
        leaf_levels = fp[4]
        fflags = fp[5]
        addr_mask = fp[6]
        nx_flip = fp[7]
        exec_force = fp[8]
        pse36_mask = fp[9]
        pkru_mask = fp[10]
        enc_mask = fp[12]                                 # SME/SEV C-bit, TDX shared bit
        slot_base, slot_end, slot_ptr = mem
        kvm = (fflags & FMT_KVM) != 0
        zero = np.int64(0)
        write = (af & AF_WRITE) != 0
        fetch = (af & AF_FETCH) != 0
        cpl3 = (af & AF_USER) != 0
        pfec, ec_acc = access_ec(af, fflags)          # implicit accesses are supervisor
        if do_trace:
            for k in range(5):
                tr_addr[tr_rowbase, k] = -1
                tr_val[tr_rowbase, k] = 0
        refs = zero
        tw_mask = zero          # guest levels whose table page the TDP lets us write
        need_ad = zero          # guest levels whose entry needs an A (or D) flag written

        if root_level == 0:                                   # paging off: GPA = linear address
            gpa = addr & 0xFFFFFFFF
            acc = np.int64(15)
            hpa = gpa
            if NESTED:
                um = cpl3 if _is_npt(tdp) else True           # MBEC: paging off is user-mode (R18)
                (tf, tec, tq, tl, tea, tev, tleaf, tsh, tacc, trefs, thpa) = tdp_translate(
                    tdp, gpa, _F, write, fetch and not write, um, acc, mem, ttr, i, _I5, _T)
                refs += trefs
                if tf != F_NONE:
                    fg = gpa if not kvm else gpa & ~np.int64(0xFFF)
                    return (tf, tec, tq, S_FINAL, tl, zero, tea, tev, zero, zero, acc, zero, refs,
                            gpa, thpa, fg, tsh, tacc)
                return (F_NONE, zero, zero, S_NONE, zero, zero, zero, zero, zero, zero, acc, zero,
                        refs, gpa, thpa, zero, tsh, tacc)
            if (check_final and (wopts & W_CHECK_FINAL) != 0
                    and find_slot_call(slot_base, slot_end, gpa, _I1) < 0):
                return (F_UNBACKED, zero, zero, S_FINAL, zero, zero, gpa, zero, zero, zero, acc, zero,
                        zero, gpa, gpa, zero, zero, zero)
            return (F_NONE, zero, zero, S_NONE, zero, zero, zero, zero, zero, zero, acc, zero, zero,
                    gpa, hpa, zero, zero, zero)

        if va_bits == 32:
            addr = addr & 0xFFFFFFFF
        else:                                                 # canonical: bits 63:va_bits-1 equal
            sh = 64 - va_bits
            if ((addr << sh) >> sh) != addr:
                f = F_SS if (af & AF_STACK) != 0 else F_GP
                return (f, zero, zero, S_GUEST, zero, zero, zero, zero, zero, zero, zero, zero, zero,
                        zero, zero, zero, zero, zero)

        level = root_level
        table = root
        if root_level == 3:                                   # PAE
            idx = (addr >> 30) & 3
            if (fflags & FMT_PDPTE_MEM) == 0:                 # PDPTE registers: only P checked
                pdpte = pdptes[pdpte_row, idx]
                if (pdpte & 1) == 0:
                    return (F_PF, ec_acc, zero, S_GUEST, np.int64(3), zero, root + idx * 8, pdpte,
                            zero, zero, zero, zero, zero, zero, zero, zero, zero, zero)
            else:                                             # read on every walk (NPT; R10)
                ea = root + idx * 8
                phys = ea
                if NESTED:
                    (tf, tec, tq, tl, tea, tev, tleaf, tsh, tacc, trefs, thpa) = tdp_translate(
                        tdp, ea, _T, _F, _F, _F, zero, mem, ttr, i, _I2, _F)
                    refs += trefs
                    if tf != F_NONE:
                        fg = ea if not kvm else ea & ~np.int64(0xFFF)
                        return (tf, tec, tq, S_TABLE, tl, np.int64(3), tea, tev, zero, zero, zero, zero,
                                refs, zero, zero, fg, zero, zero)
                    phys = thpa
                k = find_slot_call(slot_base, slot_end, phys, _I8)
                if k < 0:
                    if (wopts & W_KVM_UNBACKED) != 0:
                        return (F_PF, ec_acc, zero, S_GUEST, np.int64(3), zero, ea, zero, zero, zero,
                                zero, zero, refs, zero, zero, zero, zero, zero)
                    st = S_TABLE if NESTED else S_GUEST
                    return (F_UNBACKED, zero, zero, st, np.int64(3), np.int64(3) if NESTED else zero,
                            phys, zero, zero, zero, zero, zero, refs, zero, zero,
                            ea if NESTED else zero, zero, zero)
                pdpte = load_entry(slot_ptr[k] + (phys - slot_base[k]), _I8) & ~enc_mask
                refs += 1
                if do_trace:
                    tr_addr[tr_rowbase, 2] = ea
                    tr_val[tr_rowbase, 2] = pdpte
                if (pdpte & 1) == 0:
                    return (F_PF, ec_acc, zero, S_GUEST, np.int64(3), zero, ea, pdpte, zero, zero,
                            zero, zero, refs, zero, zero, zero, zero, zero)
                if (fflags & FMT_PDPTE_RSVD) != 0 and (pdpte & rsvd[0, 2]) != 0:
                    return (F_PF, ec_acc | PF_P | PF_RSVD, zero, S_GUEST, np.int64(3), zero, ea, pdpte,
                            zero, zero, zero, zero, refs, zero, zero, zero, zero, zero)
            table = pdpte & addr_mask
            level = 2

        acc_raw = np.int64(-1)
        pte = zero
        raw = zero
        ea = zero
        idx_mask = (np.int64(1) << index_bits) - 1
        while True:
            shift = 12 + (level - 1) * index_bits
            ea = table + ((addr >> shift) & idx_mask) * pte_size
            phys = ea
            if NESTED:                               # the guest table access, through TDP
                (tf, tec, tq, tl, tea, tev, tleaf, tsh, tacc, trefs, thpa) = tdp_table_cached(
                    tdp, ea, mem, ttr, i, level - 1, tc)
                refs += trefs
                if tf != F_NONE:
                    fg = ea if not kvm else ea & ~np.int64(0xFFF)
                    return (tf, tec, tq, S_TABLE, tl, level, tea, tev, zero, zero, zero, zero, refs,
                            zero, zero, fg, zero, zero)
                if (tacc & ACC_WRITE) != 0:
                    tw_mask |= np.int64(1) << level
                phys = thpa
            k = find_slot(slot_base, slot_end, phys, pte_size)
            if k < 0:                                         # table entry in no memslot
                if (wopts & W_KVM_UNBACKED) != 0:             # K13: KVM reads it as not present
                    return (F_PF, ec_acc, zero, S_GUEST, level, zero, ea, zero, zero, zero, zero, zero,
                            refs, zero, zero, zero, zero, zero)
                st = S_TABLE if NESTED else S_GUEST
                return (F_UNBACKED, zero, zero, st, level, level if NESTED else zero, phys,
                        zero, zero, zero, zero, zero, refs, zero, zero, ea if NESTED else zero,
                        zero, zero)
            raw = load_entry(slot_ptr[k] + (phys - slot_base[k]), pte_size)
            pte = raw & ~enc_mask                          # decisions use the unmasked bits
            refs += 1
            if do_trace:
                tr_addr[tr_rowbase, level - 1] = ea
                tr_val[tr_rowbase, level - 1] = raw
            if (pte & 1) == 0:                                # not present
                return (F_PF, ec_acc, zero, S_GUEST, level, zero, ea, raw, zero, zero, zero, zero,
                        refs, zero, zero, zero, zero, zero)
            b7 = (pte >> 7) & 1
            if (pte & rsvd[b7, level - 1]) != 0:             # reserved bit set
                return (F_PF, ec_acc | PF_P | PF_RSVD, zero, S_GUEST, level, zero, ea, raw, zero, zero,
                        zero, zero, refs, zero, zero, zero, zero, zero)
            acc_raw &= (pte ^ nx_flip) | exec_force           # W, U AND-ed; XD inverted, then AND-ed
            if NESTED and (pte & A_BIT) == 0:
                need_ad |= np.int64(1) << level
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

        fault, ec = leaf_fault(af, pfec, ec_acc, acc, pkey, pkru, pkru_mask, perms)
        if fault != 0:
            return (F_PF, ec, zero, S_GUEST, level, zero, ea, raw, level, page_shift, acc, pkey, refs,
                    zero, zero, zero, zero, zero)

        gpa = leaf_frame(pte, addr_mask, page_shift, pse36_mask, level) | (
            addr & ((np.int64(1) << page_shift) - 1))

        if NESTED:                                   # the final GPA, through TDP
            um = (acc & ACC_USER) != 0
            if _is_npt(tdp):
                um = cpl3
            (tf, tec, tq, tl, tea, tev, tleaf, tsh, tacc, trefs, thpa) = tdp_translate(
                tdp, gpa, _F, write, fetch and not write, um, acc, mem, ttr, i, _I5, _F)
            refs += trefs
            if tf != F_NONE:
                fg = gpa if not kvm else gpa & ~np.int64(0xFFF)
                return (tf, tec, tq, S_FINAL, tl, zero, tea, tev, level, page_shift, acc, pkey, refs,
                        gpa, thpa, fg, tsh, tacc)
            # guest A/D flags (hardware, EPT with A/D off): a flag write needs EPT W (R2, R3)
            if write and (pte & D_BIT) == 0:
                need_ad |= np.int64(1) << level
            if _ad_write_checked(tdp) and (need_ad & ~tw_mask) != 0:
                lvl_fail = np.int64(5)
                while ((need_ad & ~tw_mask) >> lvl_fail) & 1 == 0:
                    lvl_fail -= 1
                egpa = _guest_entry_gpa(addr, lvl_fail, root_level, root, pdptes, pdpte_row, fp, tdp,
                                        mem, ttr)
                (f2, ec2, q2, l2, ea2, ev2, lf2, sh2, ac2, r2, h2) = tdp_translate_write(tdp, egpa, mem, ttr)
                return (f2, zero, q2, S_TABLE, l2, lvl_fail, ea2, ev2, level, page_shift, acc, pkey,
                        refs, gpa, zero, egpa, tsh, tacc)
            # the data access comes after the flag updates: only now is the HPA read
            if (tdp[4] & W_CHECK_FINAL) != 0 and find_slot(slot_base, slot_end, thpa, 1) < 0:
                return (F_UNBACKED, zero, zero, S_FINAL, zero, zero, thpa, zero, level, page_shift,
                        acc, pkey, refs, gpa, thpa, gpa, tsh, tacc)
            return (F_NONE, zero, zero, S_NONE, zero, zero, ea, raw, level, page_shift, acc, pkey, refs,
                    gpa, thpa, zero, tsh, tacc)

        if check_final and (wopts & W_CHECK_FINAL) != 0 and find_slot(slot_base, slot_end, gpa, 1) < 0:
            return (F_UNBACKED, zero, zero, S_FINAL, zero, zero, gpa, zero, level, page_shift, acc,
                    pkey, refs, gpa, gpa, zero, zero, zero)
        return (F_NONE, zero, zero, S_NONE, zero, zero, ea, raw, level, page_shift, acc, pkey, refs,
                gpa, gpa, zero, zero, zero)

    return jit_walker(walk_x86)


walk_x86_flat = _make_walk_x86(False)
walk_x86_nested = _make_walk_x86(True)


@jit_walker
def tdp_table_cached(tdp, ea, mem, ttr, tr_i, tr_row, tc):
    """:func:`tdp_translate` of the guest table access at GPA ``ea``, through ``tc``: a
    direct-mapped cache of the successful TDP translations of guest table pages (row:
    page | 1, host page, TDP rights, entries read), kept by one part of one call. Exact
    where memory does not change (no trace, no A/D write-back): a table access's TDP
    walk depends only on its 4 KiB page (the access type of a table read is fixed by the
    format), and a hit reports the entries that walk reads. Faults are never kept."""
    key = (ea & ~np.int64(0xFFF)) | 1
    slot = np.int64(0)
    if tc.shape[0] > 0:
        slot = ((ea >> 12) ^ (ea >> 21)) & (tc.shape[0] - 1)
        if tc[slot, 0] == key:
            zero = np.int64(0)
            return (np.int64(F_NONE), zero, zero, zero, zero, zero, zero, zero, tc[slot, 2],
                    tc[slot, 3], tc[slot, 1] | (ea & 0xFFF))
    r = tdp_translate(tdp, ea, _T, _F, _F, _F, np.int64(0), mem, ttr, tr_i, tr_row, _F)
    if tc.shape[0] > 0 and r[0] == F_NONE:
        tc[slot, 0] = key
        tc[slot, 1] = r[10] & ~np.int64(0xFFF)
        tc[slot, 2] = r[8]
        tc[slot, 3] = r[9]
    return r


@jit
def _is_npt(tdp):
    return (tdp[0][5] & FMT_NPT) != 0


@jit
def _ad_write_checked(tdp):
    """Hardware EPT without EPT A/D: guest table reads were reads, so a guest A/D-flag
    write needs its own EPT write permission check (KVM and NPT treat tables as writes)."""
    fl = tdp[0][5]
    return (fl & FMT_EPT) != 0 and (fl & FMT_EPT_AD) == 0 and (fl & FMT_KVM) == 0


@jit
def tdp_translate_write(tdp, gpa, mem, ttr):
    """The EPT check of a guest A/D-flag write to ``gpa`` (a locked read-modify-write:
    qualification bits 0 and 1, R3). Not counted as references (R12)."""
    fp, rsvd, perms, root, wopts, _ = tdp
    zero = np.int64(0)
    f, prot, lvl, ea, ev, leaf, sh, acc, refs, hpa = walk_ept(
        gpa, _T, _F, _F, fp, rsvd, perms, root, wopts, _F, mem,
        _F, ttr[1], ttr[2], zero, zero)
    q = np.int64(3) | ((prot & 7) << 3) | (np.int64(1) << 7)
    if (fp[5] & FMT_MBEC) != 0:
        q |= ((prot >> 10) & 1) << 6
    if f != F_EPT_VIOLATION:
        q = zero
    return f, zero, q, lvl, ea, ev, leaf, sh, acc, refs, hpa


@jit
def _guest_entry_gpa(addr, level, root_level, root, pdptes, pdpte_row, fp, tdp, mem, ttr):
    """GPA of the guest entry that maps ``addr`` at ``level``, re-walking tables that are
    known to be present (only on the rare A/D-check failure path; no references counted)."""
    pte_size = fp[1]
    index_bits = fp[2]
    addr_mask = fp[6]
    slot_base, slot_end, slot_ptr = mem
    idx_mask = (np.int64(1) << index_bits) - 1
    lvl = root_level
    table = root
    if root_level == 3:
        table = pdptes[pdpte_row, (addr >> 30) & 3] & addr_mask
        lvl = 2
    while True:
        ea = table + ((addr >> (12 + (lvl - 1) * index_bits)) & idx_mask) * pte_size
        if lvl == level:
            return ea
        (tf, tec, tq, tl, tea, tev, tleaf, tsh, tacc, trefs, thpa) = tdp_translate(
            tdp, ea, _T, _F, _F, _F, np.int64(0), mem, (_F, ttr[1], ttr[2]), np.int64(0), np.int64(0),
            _F)
        k = find_slot(slot_base, slot_end, thpa, pte_size)
        pte = load_entry(slot_ptr[k] + (thpa - slot_base[k]), pte_size) & ~fp[12]
        table = pte & addr_mask
        lvl -= 1
