"""Batch driver for the 1-D guest walk (``cpu_walk``) and its A/D write-back.

The per-address walk is :func:`vecmmu.kernels.walkers.walk_x86_flat`; ``cpu_translate``
is the batch driver of one part of a batch (with the table prefetch and the walk memo),
which :func:`vecmmu.kernels._jit.run_parts` runs on one thread per part;
``order="grouped"`` adds two passes around it over the same parts (``group_parts``,
``ungroup_parts``); ``apply_ad`` is KVM's
``FNAME(update_accessed_dirty_bits)`` over a batch, in trace order.
"""
import numpy as np

from ._jit import jit, jit_nrt_free, jit_walker, part_bounds
from .memo import memo_fill, memo_find, memo_result, memo_row, memo_tag
from .physmem import (host_addr, load_u32, load_u64, prefetch, read_ptr, store_fence,
                      store_stream_u64, store_u8, store_u64, write_ptr)
from .walkers import (A_BIT, AF_AC, AF_FETCH, AF_IMPLICIT, AF_STACK, AF_USER, AF_WRITE, D_BIT,
                      F_GP, F_NONE, F_SS, F_UNBACKED, _I8, walk_x86_flat)


GROUP_BUCKETS_MAX = 1 << 16     # order="grouped": counting-sort buckets per part, at most
LANES = 64          # walks per block: the unit of the table prefetch
SUPER = 4096        # addresses per _translate_range call (parts are whole ranges)
_SUPER = np.int64(SUPER)    # as an argument: a literal int would be a signature of its own
STREAM_MIN = 1 << 18    # chunks of at least this many accesses write results past the caches
STAGE_WORDS = 4 * LANES + 7 * LANES // 8    # one block's results, staged for streaming
MEMO_TRIAL = 64         # lookups on prefetched blocks that decide whether the memo pays there
MEMO_RETRY = 32         # ranges (of SUPER accesses) without it before the next trial


@jit_walker
def _prefetch_block(b0, b1, cur, in_ptr, in_stride, f_addr, asid, per_asid, roots, order,
                    ordered, root_level, addr_mask, slot_base, slot_end, slot_ptr, hits,
                    use_hits):
    """Request the table entries below the root of walks ``b0..b1`` (walk positions),
    level by level: every walk's entry at one level is requested before any is read, so
    a thread has as many misses in flight as the hardware allows; each is read one level
    later to find the next. ``cur`` (>= ``b1 - b0``): per walk, the host address of its
    entry at the current level, or -1 (the walk stops there: not present, a large page,
    outside memory). Addresses are read from the access records (:func:`cpu_translate`).
    With ``use_hits``, walk k is skipped if ``hits[k] >= 0`` (its page is in the memo).

    A hint only: it follows present, non-large entries through the address mask and
    checks nothing else; the walk reads and checks every entry itself, so no result
    depends on it. Reads are bounds-checked like the walker's."""
    m = b1 - b0
    for k in range(m):                    # root entries: read directly (few, in cache)
        i = order[b0 + k] if ordered else np.int64(b0 + k)
        if use_hits and hits[k] >= 0:
            cur[k] = -1
            continue
        cur[k] = host_addr(slot_base, slot_end, slot_ptr,
                           roots[asid[i] if per_asid else asid[0]]
                           + ((load_u64(in_ptr + i * in_stride + f_addr) >> (9 * root_level))
                              & (511 * 8)), _I8)
    for stage in range(root_level - 1, 0, -1):      # read level stage + 1, request level stage
        for k in range(m):
            hp = cur[k]
            p = np.int64(-1)
            if hp >= 0:
                e = load_u64(hp)
                if (e & 1) != 0 and (stage >= 3 or (e & 0x80) == 0):   # large: levels 2, 3
                    i = order[b0 + k] if ordered else np.int64(b0 + k)
                    va = load_u64(in_ptr + i * in_stride + f_addr)
                    p = host_addr(slot_base, slot_end, slot_ptr,
                                  (e & addr_mask) + ((va >> (9 * stage)) & (511 * 8)), _I8)
                    if p >= 0:
                        prefetch(p)
            cur[k] = p


@jit
def cpu_translate(t, raw, itemsize, f_addr, f_kind, f_flags, asid, pkru, roots, pdptes, fp, rsvd,
                  perms, wopts, mem, o_gpa, o_fault, o_ec, o_level, o_eaddr, o_eval, o_leaf,
                  o_shift, o_acc, o_pkey, o_refs, do_trace, tr_addr, tr_val, prefetch_on,
                  memo, epoch, grouped, g_order, g_rec):
    """Batch ``cpu_walk``, part ``t``: translate access i for every i of the part
    (results in input order).

    ``raw`` is the flat uint8 view of a contiguous access batch of ``itemsize``-byte
    records, read by field offset (as the batch check reads it, so a batch of any length,
    one access included, is the same kernel signature): ``f_addr`` the u64 address,
    ``f_kind`` the kind byte, ``f_flags`` the first of the four flag bytes (user, ac,
    implicit, stack). ``asid`` and ``pkru`` have length 1 (one for the batch) or one per
    access; ``fp`` is
    :meth:`vecmmu.format.PageFormat.params`; ``mem`` the memslot view.
    ``memo`` ``(parts, rows, 4)`` int64: the work is split into ``parts`` contiguous
    parts (:func:`part_bounds`), run in parallel by :func:`vecmmu.kernels._jit.run_parts`,
    each with its own walk memo (``rows`` of 0: no memo); ``epoch`` (>= 1) marks this
    call's memo entries. ``grouped``: each part is walked in the order ``g_order`` (n,)
    that :func:`group_parts` made, one record per walk into ``g_rec`` (n, 5), which
    :func:`ungroup_parts` then writes to the outputs in input order: three passes, so a
    call in input order never compiles the grouping.

    The outputs ``o_*`` are contiguous (the kernel writes them through their addresses).
    A call in input order of at least ``STREAM_MIN`` accesses, whose outputs start on
    8-byte boundaries, writes the results of its prefetched blocks (scattered walks, most
    of them missing the walk memo) past the caches: each full block of ``LANES`` results
    is staged in L1 and then stored column by column with streaming stores
    (:func:`_stream_block`). Results that big are not read back before they leave the
    cache anyway; this way their lines are neither read in first nor evict the table
    lines the walks need. (Blocks of local walks gain nothing from it, measured: their
    tables stay in cache.) No result depends on it.
    """
    n = raw.shape[0] // itemsize
    parts = memo.shape[0]
    in_ptr = raw.ctypes.data
    hp = np.empty(LANES, np.int64)            # the table prefetch's scratch
    pstate = np.zeros(1, np.int64)            # the memo on prefetched blocks
    ms = np.empty((3, LANES), np.int64)       # a prefetched block's memo rows, tags, hits
    dst = np.empty(11, np.int64)              # the result columns' addresses, word ones first
    dst[0] = o_gpa.ctypes.data
    dst[1] = o_ec.ctypes.data
    dst[2] = o_eaddr.ctypes.data
    dst[3] = o_eval.ctypes.data
    dst[4] = o_fault.ctypes.data
    dst[5] = o_level.ctypes.data
    dst[6] = o_leaf.ctypes.data
    dst[7] = o_shift.ctypes.data
    dst[8] = o_acc.ctypes.data
    dst[9] = o_pkey.ctypes.data
    dst[10] = o_refs.ctypes.data
    stage = np.empty(STAGE_WORDS, np.int64)   # a block's results, staged for streaming,
    stg = np.empty(11, np.int64)              # as columns at these addresses
    aligned = True
    for c in range(11):
        stg[c] = stage.ctypes.data + (8 * LANES * c if c < 4 else 8 * LANES * 4 + LANES * (c - 4))
        aligned = aligned and (dst[c] & 7) == 0
    stream = not grouped and n >= STREAM_MIN and aligned
    m = memo[t]
    plo, phi = part_bounds(n, parts, t, _SUPER)
    for s in range(plo, phi, SUPER):
        _translate_range(s, min(phi, s + SUPER), n, hp, pstate, in_ptr, itemsize, f_addr, f_kind,
                         f_flags, asid, pkru, roots, pdptes, fp, rsvd, perms, wopts, mem, dst,
                         stg, stream, do_trace, tr_addr, tr_val, prefetch_on, m, epoch, grouped,
                         g_order, g_rec, ms)
    if stream:
        store_fence()


@jit_nrt_free
def _stream_block(b0, stg, dst):
    """A full block's staged results (columns at ``stg``) to results ``b0 .. b0 + LANES``
    of the columns at ``dst`` with streaming stores, one column at a time (each column's
    lines fill completely before the next starts)."""
    for c in range(11):
        size = 8 if c < 4 else 1
        d = dst[c] + size * b0
        src = stg[c]
        for k in range(LANES * size // 8):
            store_stream_u64(d + 8 * k, load_u64(src + 8 * k))


@jit
def group_parts(t, raw, itemsize, f_addr, asid, parts, va_bits, g_order, g_inv):
    """Grouped order, pass 1, part ``t`` of ``parts``: its walk order (:func:`_group_part`;
    the batch as :func:`cpu_translate` reads it)."""
    n = raw.shape[0] // itemsize
    plo, phi = part_bounds(n, parts, t, _SUPER)
    if phi > plo:
        hist = np.empty(GROUP_BUCKETS_MAX + 1, np.int64)     # counting-sort scratch
        _group_part(raw.ctypes.data, n, itemsize, f_addr, asid, plo, phi, va_bits, g_order,
                    g_inv, hist)


@jit
def ungroup_parts(t, parts, g_inv, g_rec, o_gpa, o_fault, o_ec, o_level, o_eaddr, o_eval, o_leaf,
                  o_shift, o_acc, o_pkey, o_refs):
    """Grouped order, pass 3, part ``t`` of ``parts``: its walk records back to the
    outputs in input order (:func:`_ungroup`)."""
    plo, phi = part_bounds(g_inv.shape[0], parts, t, _SUPER)
    if phi > plo:
        _ungroup(plo, phi, g_inv, g_rec, g_rec.ctypes.data, o_gpa, o_fault, o_ec, o_level,
                 o_eaddr, o_eval, o_leaf, o_shift, o_acc, o_pkey, o_refs)


@jit_nrt_free
def _group_part(in_ptr, n, in_stride, f_addr, asid, lo, hi, va_bits, g_order, g_inv, hist):
    """The walk order of accesses ``lo..hi`` grouped by (asid, 2 MiB region): one counting
    sort on a hash of the region into buckets of about 32 accesses (stable within a
    bucket; contiguous regions go to consecutive buckets), so the walks of one region,
    which share their table lines, run together. ``g_order[pos]`` is the access walked at
    position ``pos``, ``g_inv[i]`` the position of access ``i``. ``hist``: scratch of
    ``GROUP_BUCKETS_MAX + 1`` words. Access i's address is the u64 at ``in_ptr + i *
    in_stride + f_addr``; ``n`` accesses in all."""
    per_asid = asid.shape[0] == n and n > 1
    bits = 4
    while (np.int64(1) << bits) < GROUP_BUCKETS_MAX and (np.int64(32) << bits) < hi - lo:
        bits += 1
    nb = np.int64(1) << bits
    hist[:nb + 1] = 0
    for i in range(lo, hi):
        a = load_u64(in_ptr + i * in_stride + f_addr)
        if va_bits == 32:
            a &= 0xFFFFFFFF
        r = (a >> 21) & ((np.int64(1) << 43) - 1)
        if per_asid:
            r += np.int64(asid[i]) * 0x9E3779B1
        b = (r ^ (r >> bits) ^ (r >> (2 * bits)) ^ (r >> (3 * bits))) & (nb - 1)
        g_inv[i] = b                          # the bucket, for now
        hist[b + 1] += 1
    for k in range(nb):
        hist[k + 1] += hist[k]
    for i in range(lo, hi):
        b = g_inv[i]
        pos = lo + hist[b]
        hist[b] += 1
        g_order[pos] = i
        g_inv[i] = pos


@jit_nrt_free
def _ungroup(lo, hi, g_inv, g_rec, rec_ptr, o_gpa, o_fault, o_ec, o_level, o_eaddr, o_eval,
             o_leaf, o_shift, o_acc, o_pkey, o_refs):
    """Results of a grouped part, from walk order (``g_rec`` rows) back to input order:
    sequential writes, one record read per access (requested 64 accesses ahead)."""
    for i in range(lo, hi):
        if i + 64 < hi:
            prefetch(rec_ptr + g_inv[i + 64] * g_rec.strides[0])
        w = g_inv[i]
        o_gpa[i] = g_rec[w, 0]
        o_ec[i] = g_rec[w, 1]
        o_eaddr[i] = g_rec[w, 2]
        o_eval[i] = g_rec[w, 3]
        x = g_rec[w, 4]
        o_fault[i] = x & 0xFF
        o_level[i] = (x >> 8) & 0xFF
        o_leaf[i] = (x >> 16) & 0xFF
        o_shift[i] = (x >> 24) & 0xFF
        o_acc[i] = (x >> 32) & 0xFF
        o_pkey[i] = (x >> 40) & 0xFF
        o_refs[i] = (x >> 48) & 0xFF


@jit_nrt_free
def _translate_range(lo, hi, n, hp, pstate, in_ptr, in_stride, f_addr, f_kind, f_flags, asid,
                     pkru, roots, pdptes, fp, rsvd, perms, wopts, mem, dst, stg, stream,
                     do_trace, tr_addr, tr_val, prefetch_on, memo, epoch, ordered, order, rec,
                     ms):
    """Accesses ``lo..hi`` of :func:`cpu_translate` (``n`` in all; ``hp`` (LANES,): the table
    prefetch's scratch; ``memo``: this part's walk memo; ``pstate[0]``: ranges left before
    the memo is tried again on prefetched blocks, 0 = in use; ``ms`` (3, LANES): a
    prefetched block's memo rows, tags and hits; ``dst``: the result columns' addresses
    (gpa, error code, entry address and value, fault, fault level, leaf level, page
    shift, acc, pkey, refs); ``stream``: full blocks of scattered walks are written to the
    stage's columns at ``stg`` instead and streamed from there by :func:`_stream_block`)."""
    per_asid = asid.shape[0] == n and n > 1
    per_pkru = pkru.shape[0] == n and n > 1
    slot_base, slot_end, slot_ptr = mem
    va_bits = fp[3]
    use_memo = memo.shape[0] >= 2 and not do_trace and fp[0] != 0
    set_mask = (memo.shape[0] >> 1) - 1
    # table prefetch (4- and 5-level tables): before a block of LANES walks, all their
    # entries below the root are requested level by level (_prefetch_block). A block
    # whose first and last walks are in one 2 MiB region of one address space (a local
    # trace, or small tables: their lines are already in cache) skips it. Local blocks
    # always use the memo; prefetched blocks use it only while it pays: once MEMO_TRIAL of
    # their lookups have hit less than half the time, they stop for MEMO_RETRY ranges of
    # this part, then try again (a real trace mixes code, stack and heap in every block
    # but reuses few pages; scattered walks over large tables miss the memo as they miss
    # the cache). A prefetched block that uses the memo looks all its pages up first, and
    # only its walks that miss are prefetched.
    depth = fp[0] - 1 if (prefetch_on and fp[0] >= 4) else 0
    memo_pipe = use_memo and pstate[0] == 0
    if pstate[0] > 0:
        pstate[0] -= 1
    pipe_looks = 0
    pipe_hits = 0
    addr_mask = fp[6] & ~fp[12]
    for b0 in range(lo, hi, LANES):
        b1 = min(hi, b0 + LANES)
        if ordered:        # grouped order: the next block's access records, out of order
            for w in range(b1, min(hi, b1 + LANES)):
                p = in_ptr + order[w] * in_stride
                prefetch(p)
                prefetch(p + in_stride - 1)       # a record may span two lines
        on_pipe = False
        if depth > 0:
            i0 = order[b0] if ordered else np.int64(b0)
            i1 = order[b1 - 1] if ordered else np.int64(b1 - 1)
            on_pipe = (((load_u64(in_ptr + i0 * in_stride + f_addr)
                         ^ load_u64(in_ptr + i1 * in_stride + f_addr)) >> 21) != 0
                       or (per_asid and asid[i0] != asid[i1]))
        block_memo = use_memo and (memo_pipe or not on_pipe)
        # a prefetched block that uses the memo looks its pages up first, and only the
        # walks that miss it are prefetched (a real trace: its blocks span regions, but
        # most of its pages are in the memo)
        looked = on_pipe and block_memo
        misses = b1 - b0
        if looked:
            misses = 0
            for q in range(b1 - b0):
                i = order[b0 + q] if ordered else np.int64(b0 + q)
                tag = memo_tag(load_u64(in_ptr + i * in_stride + f_addr),
                               asid[i] if per_asid else asid[0], va_bits)
                row = memo_row(tag, set_mask)
                ms[0, q] = row
                ms[1, q] = tag
                ms[2, q] = memo_find(memo, row, tag, epoch)
                misses += ms[2, q] < 0
        if on_pipe and misses > 0:
            _prefetch_block(b0, b1, hp, in_ptr, in_stride, f_addr, asid, per_asid, roots, order,
                            ordered, fp[0], addr_mask, slot_base, slot_end, slot_ptr, ms[2],
                            looked)
        # streamed: full blocks of scattered walks that mostly miss the memo (the walks of
        # large tables; a block of memo hits is cheap, and streaming would slow it down)
        staged = stream and on_pipe and b1 - b0 == LANES and 2 * misses >= LANES
        w = stg if staged else dst                # result i goes to index i - x0 of w's columns
        x0 = b0 if staged else np.int64(0)
        wp = (w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10])
        if on_pipe and memo_pipe and pipe_looks >= MEMO_TRIAL:
            if 2 * pipe_hits < pipe_looks:
                memo_pipe = False
                pstate[0] = MEMO_RETRY
            pipe_looks = 0
            pipe_hits = 0
        for j in range(b0, b1):
            i = np.int64(j)
            if ordered:
                i = order[j]
            a = asid[i] if per_asid else asid[0]
            pk = pkru[i] if per_pkru else pkru[0]
            rp = in_ptr + i * in_stride
            va = load_u64(rp + f_addr)
            k = load_u32(rp + f_kind) & 0xFF
            fw = load_u32(rp + f_flags)           # user, ac, implicit, stack: one byte each
            af = np.int64(0)
            if k == 1:
                af = np.int64(AF_WRITE)
            elif k == 2:
                af = np.int64(AF_FETCH)
            if (fw & 0xFF) != 0:
                af |= AF_USER
            if (fw & 0xFF00) != 0:
                af |= AF_AC
            if (fw & 0xFF0000) != 0:
                af |= AF_IMPLICIT
            if (fw & 0xFF000000) != 0:
                af |= AF_STACK
            hit = np.int64(-1)
            tag = np.int64(0)
            row = np.int64(0)
            if looked:           # found again: a fill earlier in the block may move a way
                row = ms[0, j - b0]
                tag = ms[1, j - b0]
                hit = memo_find(memo, row, tag, epoch)
            elif block_memo:
                tag = memo_tag(va, a, va_bits)
                row = memo_row(tag, set_mask)
                hit = memo_find(memo, row, tag, epoch)
            if block_memo:
                if on_pipe:
                    pipe_looks += 1
                    pipe_hits += hit >= 0
            if hit >= 0:
                (f, ec, lvl, ea, ev, leaf, sh, acc, pkey, refs, gpa) = memo_result(
                    memo, hit, va, af, pk, fp, perms, slot_base, slot_end)
            else:
                (f, ec, q, st, lvl, glvl, ea, ev, leaf, sh, acc, pkey, refs, gpa, hpa, fg, tsh,
                 tacc) = walk_x86_flat(i, va, af, roots[a], pdptes, a, pk, fp, rsvd, perms,
                                       wopts, mem, do_trace, tr_addr, tr_val, None, i, True)
                if block_memo:
                    memo_fill(memo, row, tag, epoch, f, ec, lvl, ea, ev, leaf, sh, acc, pkey,
                               refs, fp, wopts, slot_base, slot_end)
            if ordered:          # walk order: one record per access (see _ungroup)
                rec[j, 0] = gpa
                rec[j, 1] = ec
                rec[j, 2] = ea
                rec[j, 3] = ev
                rec[j, 4] = (f | (lvl << 8) | (leaf << 16) | (sh << 24) | (acc << 32)
                             | (pkey << 40) | (refs << 48))
            else:
                x = j - x0
                store_u64(wp[0] + 8 * x, gpa)
                store_u64(wp[1] + 8 * x, ec)
                store_u64(wp[2] + 8 * x, ea)
                store_u64(wp[3] + 8 * x, ev)
                store_u8(wp[4] + x, f)
                store_u8(wp[5] + x, lvl)
                store_u8(wp[6] + x, leaf)
                store_u8(wp[7] + x, sh)
                store_u8(wp[8] + x, acc)
                store_u8(wp[9] + x, pkey)
                store_u8(wp[10] + x, refs)
        if staged:
            _stream_block(b0, stg, dst)


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
