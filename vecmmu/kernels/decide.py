"""Re-deciding walked accesses under other decision-only settings (what-if sweeps).

A *walk record* is a 2-D (or 1-D) walk made once with the most permissive guest decision
settings (CR0.WP=0, SMEP=SMAP=PKE=0): every access that faults there faults under every
decision-only variant, so the record holds, for every access that reached its guest leaf,
the accumulated ACC rights, the pkey, and (2-D) the outcome and TDP rights of the final
GPA's translation. :func:`decide_row` is KVM's ``permission_fault`` on the guest rights,
followed by the final-GPA EPT check with a permission *overlay* AND-ed in like one more
EPT level (see :mod:`vecmmu.analysis.overlay`).

The sweep's hot path, :func:`decide_sweep`, reads only the record columns a class
decision needs, each in its own narrow dtype, and writes a u1 class matrix. A full result
(:func:`decide_full`) reads one int64 matrix ``rec`` (18, n), one row per column of
:data:`vecmmu.kernels.tdp_walk.NESTED_COLS` (a 1-D record fills the nested-only columns
with 0), built only when a variant's full result is asked for. Variant parameters are one int64 row of :data:`VP_*` fields plus a u16
permission-table row and the variant's overlay segments.
"""
import numpy as np

from ._jit import jit, jit_walker, part_bounds
from .walkers import _I1, AF_AC, AF_IMPLICIT, access_pfec, leaf_fault

# record columns (NESTED_COLS order)
R_FAULT, R_EC, R_QUAL, R_STAGE, R_FLEVEL, R_GLEVEL, R_EADDR, R_EVAL, R_LEAF, R_SHIFT, R_ACC, \
    R_PKEY, R_REFS, R_GPA, R_HPA, R_FGPA, R_TSHIFT, R_TACC = range(18)
N_REC = 18

# variant parameter row
VP_PKRU_MASK, VP_PKRU, VP_PFERR_FETCH, VP_AC, VP_OV_LO, VP_OV_HI, VP_TFLAGS, VP_TROOT, \
    VP_KVM = range(9)
N_VP = 9

F_NONE = 0
F_PF = 1
F_EPT_VIOLATION = 4
F_EPT_MISCONFIG = 5
F_OVERLAY_MISCONFIG = 8      # what-if only: an overlay turned a leaf into a bad XWR pattern

# need codes (rows a full result must complete outside the kernel)
NEED_NONE = 0
NEED_REWALK = 1              # guest #PF whose guest leaf entry the record lacks: re-walk
NEED_TDP_LEAF = 2            # overlay fault at the final GPA: the TDP leaf entry is needed

FMT_ADV_INFO = 128
FMT_MBEC = 32
FMT_EPT = 16
FMT_EXECONLY = 1 << 30       # passed in VP_TFLAGS only (not a format flag)

PF_W = 2
PF_U = 4
PF_FETCH = 16


@jit_walker
def decide_row(rec, i, kind, user, ac, implicit, vp, perms, tperms, ov_lo, ov_hi, ov_acc, out):
    """Re-decide record row ``i`` for one variant; writes the 18 result columns to
    ``out`` (a 1-D int64 view) and returns a need code (:data:`NEED_*`).

    KVM: ``permission_fault`` (guest) and the EPT permission check of
    ``walk_addr_generic`` for the final GPA, with the overlay as one more level.
    """
    for c in range(N_REC):
        out[c] = rec[c, i]
    f = rec[R_FAULT, i]
    leaf = rec[R_LEAF, i]
    write = kind == 1
    fetch = kind == 2
    u = user != 0 and implicit == 0
    pfec = access_pfec(write, fetch, u)
    ec_acc = pfec & (PF_W | PF_U)
    if fetch and vp[VP_PFERR_FETCH] != 0:
        ec_acc |= PF_FETCH
    if leaf == 0:                      # the guest walk stopped before its leaf: settings-free
        if f == F_PF:                  # ... except the I/D bit of the error code (format flag)
            out[R_EC] = (rec[R_EC, i] & ~np.int64(PF_FETCH)) | (ec_acc & PF_FETCH)
        return NEED_NONE
    acc = rec[R_ACC, i]
    a = ac != 0
    if vp[VP_AC] >= 0:
        a = vp[VP_AC] != 0
    af = np.int64(0)                   # the flags leaf_fault reads: AC (the variant's) and implicit
    if a:
        af |= AF_AC
    if implicit != 0:
        af |= AF_IMPLICIT
    fault, ec = leaf_fault(af, pfec, ec_acc, acc, rec[R_PKEY, i], vp[VP_PKRU],
                           vp[VP_PKRU_MASK], perms)
    st = rec[R_STAGE, i]
    success = f == F_NONE
    nested = vp[VP_TROOT] != 0
    if fault != 0:
        out[R_FAULT] = F_PF
        out[R_EC] = ec
        out[R_QUAL] = 0
        out[R_STAGE] = 1 if nested else 0
        out[R_FLEVEL] = leaf
        out[R_GLEVEL] = 0
        out[R_GPA] = 0
        out[R_HPA] = 0
        out[R_FGPA] = 0
        out[R_TSHIFT] = 0
        out[R_TACC] = 0
        if f == F_PF or (success and not nested):   # the record's entry is the guest leaf
            return NEED_NONE
        if not success:   # entry and refs of the guest leaf are not in the record
            return NEED_REWALK
        # refs without the final GPA's TDP walk: root - tdp leaf + 1 entries
        tleaf = (rec[R_TSHIFT, i] - 12) // 9 + 1
        out[R_REFS] = rec[R_REFS, i] - (vp[VP_TROOT] - tleaf + 1)
        return NEED_NONE
    if f == F_PF:                      # record denied what the variant allows: not permissive
        return NEED_REWALK
    if not nested or ov_hi <= ov_lo:
        return NEED_NONE
    # the final GPA through the overlay (EPT): did the record's TDP walk reach its leaf?
    final_ok = success or (st == 3 and rec[R_FLEVEL, i] == 0) or (st == 2)
    viol_at_leaf = st == 3 and f == F_EPT_VIOLATION and rec[R_TSHIFT, i] > 0
    if not (final_ok or viol_at_leaf):
        return NEED_NONE
    gpa = rec[R_GPA, i]
    lo = ov_lo
    hi = ov_hi
    while lo < hi:                     # first segment whose end is above gpa
        mid = (lo + hi) >> 1
        if ov_hi_end(ov_acc, mid) <= gpa:
            lo = mid + 1
        else:
            hi = mid
    if lo >= ov_hi or ov_acc[lo, 0] > gpa:
        return NEED_NONE
    mask = ov_acc[lo, 2]
    tflags = vp[VP_TFLAGS]
    mbec = (tflags & FMT_MBEC) != 0
    tacc = rec[R_TACC, i] & mask
    tleaf = (rec[R_TSHIFT, i] - 12) // 9 + 1
    present = (tacc & 11) != 0 or (mbec and (tacc & 4) != 0)
    if present and _bad_pattern(tacc, mbec, (tflags & FMT_EXECONLY) != 0):
        tf = F_OVERLAY_MISCONFIG
    elif not present:
        tf = F_EPT_VIOLATION
    else:
        um = mbec and (acc & 4) != 0
        tpfec = access_pfec(write, fetch, um)
        if ((np.int64(tperms[tpfec >> 1]) >> tacc) & 1) != 0:
            tf = F_EPT_VIOLATION
        else:
            out[R_TACC] = tacc         # the translation's rights include the overlay
            return NEED_NONE
    kvm = vp[VP_KVM] != 0
    q = np.int64(0)
    if tf == F_EPT_VIOLATION:
        q = np.int64(2) if write else (np.int64(4) if fetch else np.int64(1))
        q |= _prot_bits(tacc, mbec)
        q |= np.int64(3) << 7                            # GVA valid, GVA translated
        if (tflags & FMT_ADV_INFO) != 0 and not kvm:
            q |= ((acc >> 2) & 1) << 9
            q |= ((acc >> 1) & 1) << 10
            q |= (((acc >> 3) & 1) ^ 1) << 11
    out[R_FAULT] = tf
    out[R_QUAL] = q
    if present and tf == F_EPT_VIOLATION:   # a permission violation: the leaf's size and rights
        out[R_TSHIFT] = rec[R_TSHIFT, i]
        out[R_TACC] = tacc
    else:                                   # the walk stopped at the overlay "entry"
        out[R_TSHIFT] = 0
        out[R_TACC] = 0
    if viol_at_leaf:                        # the record already failed here: same entry
        return NEED_NONE
    out[R_EC] = 0
    out[R_STAGE] = 3
    out[R_GLEVEL] = 0
    out[R_FLEVEL] = tleaf
    out[R_HPA] = 0
    out[R_FGPA] = gpa if not kvm else gpa & ~np.int64(0xFFF)
    return NEED_TDP_LEAF


@jit_walker
def ov_hi_end(ov, k):
    return ov[k, 1]


@jit_walker
def _prot_bits(tacc, mbec):
    """Exit-qualification bits 3-6 from TDP rights in ACC layout (R=1 W=2 XU=4 XS=8)."""
    q = ((tacc & 1) << 3) | ((tacc & 2) << 3) | ((tacc & 8) << 2)
    if mbec:
        q |= (tacc & 4) << 4
    return q


@jit_walker
def _bad_pattern(tacc, mbec, execonly):
    """An EPT misconfiguration pattern (``bad_mt_xwr``'s XWR part; XU counts as X under
    MBEC, reading R5): W without R, or execute-only without execute-only support."""
    r = (tacc & 1) != 0
    w = (tacc & 2) != 0
    x = (tacc & 8) != 0 or (mbec and (tacc & 4) != 0)
    if w and not r:
        return True
    return x and not r and not w and not execonly


@jit_walker
def overlay_class(f, st, flevel, tshift, tacc_rec, gpa, acc, write, fetch, tflags, tperms, ov,
                  ov_lo, ov_hi):
    """Fault class and stage after the final GPA's EPT check with the overlay segments
    ``ov[ov_lo:ov_hi]`` AND-ed in (the class-only tail of :func:`decide_row`), for a row
    whose guest rights allow the access; ``f``, ``st`` are the record's class and stage."""
    final_ok = f == F_NONE or (st == 3 and flevel == 0) or (st == 2)
    viol_at_leaf = st == 3 and f == F_EPT_VIOLATION and tshift > 0
    if not (final_ok or viol_at_leaf):
        return f, st
    lo = ov_lo
    hi = ov_hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if ov[mid, 1] <= gpa:
            lo = mid + 1
        else:
            hi = mid
    if lo >= ov_hi or ov[lo, 0] > gpa:
        return f, st
    mbec = (tflags & FMT_MBEC) != 0
    tacc = tacc_rec & ov[lo, 2]
    present = (tacc & 11) != 0 or (mbec and (tacc & 4) != 0)
    if present and _bad_pattern(tacc, mbec, (tflags & FMT_EXECONLY) != 0):
        return np.int64(F_OVERLAY_MISCONFIG), np.int64(3)
    if not present:
        return np.int64(F_EPT_VIOLATION), np.int64(3)
    if viol_at_leaf:
        return f, st
    tpfec = access_pfec(write, fetch, mbec and (acc & 4) != 0)
    if ((np.int64(tperms[tpfec >> 1]) >> tacc) & 1) != 0:
        return np.int64(F_EPT_VIOLATION), np.int64(3)
    return f, st


@jit
def decide_sweep(t, parts, fault, stage, leaf, acc, pkey, flevel, gpa, tshift, tacc, accb,
                 o_kind, o_user, o_ac, o_imp, nested, vps, perms, tperms, ov, kcols, o_fault,
                 o_stage, write_stage):
    """Fault class (and stage) of every record row under every variant of one record.

    The record arrives as its own narrow columns (u1 ``fault``, ``leaf``, ``acc``,
    ``pkey``; for 2-D records also u1 ``stage``, ``flevel``, ``tshift``, ``tacc`` and i8
    ``gpa``; 1-D records pass 1-element dummies for those and ``nested=False``). The
    access flags are read from the batch's bytes: ``accb`` (n, itemsize) u1 with the
    byte offsets of kind, user, ac and implicit. ``vps`` (K, N_VP), ``perms``/``tperms``
    (K, 16) u16, ``ov`` (S, 3) int64 overlay segments ``(start, end, acc_mask)`` of all
    variants (variant k owns rows ``vps[k, VP_OV_LO]:vps[k, VP_OV_HI]``). Variant k
    writes column ``kcols[k]`` of ``o_fault`` (n, K_all) (and of ``o_stage`` when
    ``write_stage``). Rows of part ``t`` of ``parts`` (:func:`vecmmu.kernels._jit.run_parts`
    runs one per thread); the variants are the inner loop, so each row's record is read
    once and its K classes are written side by side.
    """
    n = fault.shape[0]
    nk = vps.shape[0]
    lo, hi = part_bounds(n, parts, t, _I1)
    for i in range(lo, hi):
        f = np.int64(fault[i])
        st = np.int64(stage[i]) if nested else np.int64(0)
        if leaf[i] == 0:               # the guest walk stopped before its leaf: settings-free
            for k in range(nk):
                o_fault[i, kcols[k]] = f
            if write_stage:
                for k in range(nk):
                    o_stage[i, kcols[k]] = st
            continue
        kind = accb[i, o_kind]
        write = kind == 1
        fetch = kind == 2
        pfec = access_pfec(write, fetch, accb[i, o_user] != 0 and accb[i, o_imp] == 0)
        row0 = pfec >> 1                                       # AC=0 (or implicit)
        row1 = (pfec + (np.int64(accb[i, o_imp] == 0) << 3)) >> 1   # AC=1
        rowt = row1 if accb[i, o_ac] != 0 else row0           # the trace's AC
        a = np.int64(acc[i])
        pk_shift = np.int64(pkey[i]) * 2
        pkm_shift = (pfec & ~np.int64(1)) + ((a & 4) << 1)
        for k in range(nk):
            vac = vps[k, VP_AC]
            row = rowt if vac < 0 else (row1 if vac != 0 else row0)
            flt = (np.int64(perms[k, row]) >> a) & 1
            pm = vps[k, VP_PKRU_MASK]
            if pm != 0:
                if ((vps[k, VP_PKRU] >> pk_shift) & 3 & (pm >> pkm_shift)) != 0:
                    flt = 1
            if flt != 0:
                of = np.int64(F_PF)
                os = np.int64(1) if nested else np.int64(0)
            else:
                of = f
                os = st
                olo = vps[k, VP_OV_LO]
                ohi = vps[k, VP_OV_HI]
                if nested and ohi > olo:
                    of, os = overlay_class(f, st, np.int64(flevel[i]), np.int64(tshift[i]),
                                           np.int64(tacc[i]), gpa[i], a, write, fetch,
                                           vps[k, VP_TFLAGS], tperms[k], ov, olo, ohi)
            c = kcols[k]
            o_fault[i, c] = of
            if write_stage:
                o_stage[i, c] = os


@jit
def decide_full(t, parts, rec, kind, user, ac, implicit, vp, perms, tperms, ov, out, need):
    """Every result column of every row of part ``t`` of ``parts`` under one variant
    (``out`` (n, 18)), and the rows a full result must complete (``need``)."""
    n = rec.shape[1]
    lo, hi = part_bounds(n, parts, t, _I1)
    for i in range(lo, hi):
        need[i] = decide_row(rec, i, kind[i], user[i], ac[i], implicit[i], vp, perms, tperms,
                             vp[VP_OV_LO], vp[VP_OV_HI], ov, out[i])
