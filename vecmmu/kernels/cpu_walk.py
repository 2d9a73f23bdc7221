"""Batch driver for the 1-D guest walk (``cpu_walk``) and its A/D write-back.

The per-address walk is :func:`vecmmu.kernels.walkers.walk_x86` with ``tdp=None``;
``cpu_translate`` is the only ``prange`` loop; ``apply_ad`` is KVM's
``FNAME(update_accessed_dirty_bits)`` over a batch, in trace order.
"""
import numpy as np

from ._jit import jit, pjit, prange
from ._jit import jit_nrt_free, jit_walker
from .physmem import host_addr, load_u64, prefetch, read_ptr, write_ptr
from .walkers import (A_BIT, AF_AC, AF_FETCH, AF_IMPLICIT, AF_STACK, AF_USER,  # noqa: F401
                      AF_WRITE, D_BIT, F_GP, F_NONE, F_PF, F_SS, F_UNBACKED, W_CHECK_FINAL,
                      W_KVM_UNBACKED, walk_x86_flat)


LANES = 16          # walks per block: the unit of the prefetch pipeline
SUPER = 4096        # addresses per parallel work item
_RING = 8           # blocks in flight (>= 5 levels + 1)


@jit_walker
def _prefetch_step(hp, root, va, stage, root_level, addr_mask, slot_base, slot_end, slot_ptr):
    """One step of one walk's table prefetch: read the entry one level up (at host address
    ``hp``, requested at the previous step; at ``stage == root_level - 1`` the root entry,
    which is read directly) and request the entry at level ``stage``. Returns its host
    address, or -1 (the walk stops there: not present, a large page, outside memory).

    A hint only: it follows present, non-large entries through the address mask and
    checks nothing else; the walk reads and checks every entry itself, so no result
    depends on it. Reads are bounds-checked like the walker's."""
    if stage == root_level - 1:
        hp = host_addr(slot_base, slot_end, slot_ptr,
                       root + ((va >> (9 * root_level)) & (511 * 8)), 8)
    p = np.int64(-1)
    if hp >= 0:
        e = load_u64(hp)
        if (e & 1) != 0 and (stage >= 3 or (e & 0x80) == 0):   # large pages at levels 2, 3
            p = host_addr(slot_base, slot_end, slot_ptr,
                          (e & addr_mask) + ((va >> (9 * stage)) & (511 * 8)), 8)
            if p >= 0:
                prefetch(p)
    return p


@pjit
def cpu_translate(addr, kind, user, ac, implicit, stack, asid, pkru, roots, pdptes, fp, rsvd,
                  perms, wopts, mem, o_gpa, o_fault, o_ec, o_level, o_eaddr, o_eval, o_leaf,
                  o_shift, o_acc, o_pkey, o_refs, do_trace, tr_addr, tr_val, order,
                  prefetch_on):
    """Batch ``cpu_walk``: translate ``addr[i]`` for every i (results in input order).

    ``addr``, ``kind``, ``user``, ``ac``, ``implicit``, ``stack`` are the fields of an
    access batch (strided views are fine: no temporaries are made); ``asid`` and ``pkru``
    have length 1 (one for the batch) or ``len(addr)``; ``fp`` is
    :meth:`vecmmu.format.PageFormat.params`; ``mem`` the memslot view; ``order`` (length
    ``n``, or 0 for input order) the order to walk in: results still go to row ``i``.
    """
    n = addr.shape[0]
    nsup = (n + SUPER - 1) // SUPER
    for s in prange(nsup):
        hp = np.empty((_RING, LANES), np.int64)
        active = np.zeros(_RING, np.bool_)
        _translate_range(s * SUPER, min(n, s * SUPER + SUPER), hp, active, addr, kind, user,
                         ac, implicit, stack, asid, pkru, roots, pdptes, fp, rsvd, perms, wopts,
                         mem, o_gpa, o_fault, o_ec, o_level, o_eaddr, o_eval, o_leaf, o_shift,
                         o_acc, o_pkey, o_refs, do_trace, tr_addr, tr_val, order, prefetch_on)


@jit_nrt_free
def _translate_range(lo, hi, hp, active, addr, kind, user, ac, implicit, stack, asid, pkru,
                     roots, pdptes, fp, rsvd, perms, wopts, mem, o_gpa, o_fault, o_ec, o_level,
                     o_eaddr, o_eval, o_leaf, o_shift, o_acc, o_pkey, o_refs, do_trace, tr_addr,
                     tr_val, order, prefetch_on):
    """Addresses ``lo..hi`` of :func:`cpu_translate` (one parallel work item; ``hp`` and
    ``active``: the prefetch pipeline's scratch). A call, not inlined into the ``prange``
    body: Numba's parfor passes grow with the body's size, and the walker is large."""
    n = addr.shape[0]
    per_asid = asid.shape[0] == n and n > 1
    per_pkru = pkru.shape[0] == n and n > 1
    ordered = order.shape[0] == n and n > 0
    # software pipeline (4- and 5-level tables): each walk's entries are requested level
    # by level in the blocks before its own, one level per block, spread over that block's
    # walks, so they arrive while other walks compute. A block whose first and last walks
    # are in one 2 MiB region of one address space (a local trace, or small tables: their
    # lines are already in cache) skips it.
    slot_base, slot_end, slot_ptr = mem
    depth = fp[0] - 1 if (prefetch_on and fp[0] >= 4) else 0
    addr_mask = fp[6] & ~fp[12]
    nb = (hi - lo + LANES - 1) // LANES
    for step in range(-depth, nb):
        qb = step + depth                         # the block entering the pipeline
        if depth > 0 and qb < nb:
            w0 = lo + qb * LANES
            w1 = min(hi, w0 + LANES) - 1
            i0 = order[w0] if ordered else np.int64(w0)
            i1 = order[w1] if ordered else np.int64(w1)
            active[qb % _RING] = (((addr[i0] ^ addr[i1]) >> 21) != 0
                                  or (per_asid and asid[i0] != asid[i1]))
        for lane in range(LANES):
            for d in range(depth, 0, -1):
                w = lo + (step + d) * LANES + lane
                r = (step + d) % _RING
                if step + d >= 0 and w < hi and active[r]:
                    i = order[w] if ordered else np.int64(w)
                    hp[r, lane] = _prefetch_step(
                        hp[r, lane], roots[asid[i] if per_asid else asid[0]], addr[i], d,
                        fp[0], addr_mask, slot_base, slot_end, slot_ptr)
            j = lo + step * LANES + lane
            if step < 0 or j >= hi:
                continue
            i = np.int64(j)
            if ordered:
                i = order[j]
            a = asid[i] if per_asid else asid[0]
            pk = pkru[i] if per_pkru else pkru[0]
            k = kind[i]
            af = np.int64(0)
            if k == 1:
                af = np.int64(AF_WRITE)
            elif k == 2:
                af = np.int64(AF_FETCH)
            if user[i] != 0:
                af |= AF_USER
            if ac[i] != 0:
                af |= AF_AC
            if implicit[i] != 0:
                af |= AF_IMPLICIT
            if stack[i] != 0:
                af |= AF_STACK
            (f, ec, q, st, lvl, glvl, ea, ev, leaf, sh, acc, pkey, refs, gpa, hpa, fg, tsh,
             tacc) = walk_x86_flat(i, addr[i], af, roots[a], pdptes, a, pk, fp, rsvd, perms, wopts,
                                   mem, do_trace, tr_addr, tr_val, None, i, True)
            o_fault[i] = f
            o_ec[i] = ec
            o_level[i] = lvl
            o_eaddr[i] = ea
            o_eval[i] = ev
            o_leaf[i] = leaf
            o_shift[i] = sh
            o_acc[i] = acc
            o_pkey[i] = pkey
            o_refs[i] = refs
            o_gpa[i] = gpa


@jit
def apply_ad(af, o_fault, o_level, o_eaddr, o_eval, o_leaf, tr_addr, tr_val, pte_size,
             kvm, refresh, mem):
    """Set A (and D) flags for a walked batch, in input order.

    KVM: ``FNAME(update_accessed_dirty_bits)``. Successful translations set A on every
    entry walked and D on the leaf of a write. On a faulting walk hardware sets A on the
    entries above the failing one (they were used); KVM sets nothing (K9). With
    ``refresh`` every reported entry value is re-read first, so access i sees the flags
    of accesses before it (trace order); without, values stay as in the starting memory
    (snapshot mode). Returns the number of entries written.
    """
    slot_base, slot_end, slot_ptr = mem
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
                ok, cur = read_ptr(slot_base, slot_end, slot_ptr, ea, pte_size)
                if ok:
                    tr_val[i, level - 1] = cur
                    if o_eaddr[i] == ea and f != F_UNBACKED:
                        o_eval[i] = cur
        for level in range(5, lowest - 1, -1):
            ea = tr_addr[i, level - 1]
            if ea < 0:
                continue
            ok, cur = read_ptr(slot_base, slot_end, slot_ptr, ea, pte_size)
            if not ok:
                continue
            new = cur | A_BIT
            if success and level == o_leaf[i] and (af[i] & AF_WRITE) != 0:
                new |= D_BIT
            if new != cur:
                write_ptr(slot_base, slot_end, slot_ptr, ea, pte_size, new)
                written += 1
    return written
