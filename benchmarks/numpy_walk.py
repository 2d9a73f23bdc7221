"""A plain-numpy vectorised x86 page walk with the same semantics as the vecmmu kernel.

The baseline the kernel is measured against in ``bench_walk.py``: one vectorised pass
per paging level over the whole batch (no Python loop over addresses), for 4- and
5-level paging with 64-bit entries and memory that is a single RAM slot. It decides what
:func:`vecmmu.kernels.cpu_walk.walk_x86` decides ("hardware" semantics):

* canonical check (#GP, or #SS for stack accesses);
* per level: the entry address; an entry outside the RAM slot is ``UNBACKED``; the entry
  (a gather from the RAM viewed as u64); present check; reserved bits from
  ``PageFormat.rsvd_table()[bit7, level - 1]``; W/U/XD accumulated; leaf when level 1 or
  bit 7 at a level allowed to hold a large page;
* at the leaf: ACC rights, the permission lookup ``(perm[row] >> acc) & 1`` with the row
  from the W/U/F bits plus "SMAP overridden" (AC and not implicit), the PKRU check;
* success: the GPA, and ``UNBACKED`` when the final address is outside RAM.

It returns the three columns the benchmark compares with the kernel: ``fault``
(:class:`vecmmu.bits.Fault` values), ``gpa`` and ``error_code``. The kernel writes a GPA
only on success (and for an unbacked final address); so does this walk (0 elsewhere).

Lanes still walking are kept compacted (an index array shrinks as lanes finish), and the
batch is processed in cache-sized chunks; both are what a careful numpy author would do.
"""
from __future__ import annotations

import numpy as np

from vecmmu.format import (P_ADDR_MASK, P_EXEC_FORCE, P_FLAGS, P_INDEX_BITS, P_LEAF_LEVELS,
                           P_NX_FLIP, P_PKRU_MASK, P_PTE_SIZE, P_ROOT_LEVEL, P_VA_BITS)

# the kernel's constants (vecmmu.kernels.cpu_walk), repeated so this file reads alone
F_NONE, F_PF, F_GP, F_SS, F_UNBACKED = 0, 1, 2, 3, 7
AF_WRITE, AF_FETCH, AF_USER, AF_AC, AF_IMPLICIT, AF_STACK = 1, 2, 4, 8, 16, 32
PF_P, PF_W, PF_U, PF_RSVD, PF_FETCH, PF_PK = 1, 2, 4, 8, 16, 32
FMT_PFERR_FETCH, FMT_64BIT = 1, 4

DEFAULT_CHUNK = 1 << 16


def access_flags(kind, user, ac=0, implicit=0, stack=0) -> np.ndarray:
    """The kernel's access-flag word (``AF_*``) from batch columns (0 read, 1 write, 2 fetch)."""
    kind = np.asarray(kind)
    return ((kind == 1) * AF_WRITE | (kind == 2) * AF_FETCH
            | np.asarray(user, np.int64) * AF_USER | np.asarray(ac, np.int64) * AF_AC
            | np.asarray(implicit, np.int64) * AF_IMPLICIT
            | np.asarray(stack, np.int64) * AF_STACK).astype(np.int64)


class NumpyWalk:
    """Numpy walker over one root in one RAM slot, configured from a ``PageFormat``.

    ``ram`` is the slot's uint8 backing (length a multiple of 8), ``ram_base`` its physical
    address, ``root`` the top table's physical address (CR3 with PCID and high bits
    masked), ``fmt`` a :class:`vecmmu.format.PageFormat` of 64-bit entries.
    """

    def __init__(self, ram: np.ndarray, ram_base: int, root: int, fmt, *, pkru: int = 0):
        p = fmt.params()
        if not int(p[P_FLAGS]) & FMT_64BIT or int(p[P_ROOT_LEVEL]) not in (4, 5):
            raise ValueError("the numpy walk covers 4- and 5-level paging (64-bit entries)")
        if int(p[P_PTE_SIZE]) != 8 or ram.shape[0] % 8 or ram_base % 8:
            raise ValueError("RAM must be a whole number of 8-byte entries at an aligned base")
        self.ram64 = ram.view(np.int64)
        self.base = np.int64(ram_base)
        self.end = np.int64(ram_base + ram.shape[0])
        self.root = np.int64(root)
        self.levels = int(p[P_ROOT_LEVEL])
        self.index_bits = int(p[P_INDEX_BITS])
        self.va_bits = int(p[P_VA_BITS])
        self.leaf_levels = int(p[P_LEAF_LEVELS])
        self.pferr_fetch = bool(int(p[P_FLAGS]) & FMT_PFERR_FETCH)
        self.addr_mask = np.int64(p[P_ADDR_MASK])
        self.nx_flip = np.int64(p[P_NX_FLIP])
        self.exec_force = np.int64(p[P_EXEC_FORCE])
        self.pkru_mask = int(p[P_PKRU_MASK])
        # rsvd[b7, level-1] as two per-level columns; permission rows widened for shifts
        self.rsvd = np.ascontiguousarray(fmt.rsvd_table())           # (2, 5) int64
        self.perms = fmt.perm_table().astype(np.int64)               # (16,)
        self.pkru = int(pkru)

    # -- the walk ----------------------------------------------------------------------------
    def translate(self, addr, af, pkru=None, chunk: int = DEFAULT_CHUNK):
        """``(fault u8, gpa u64, error_code u64)`` for every address (``af``: the
        ``AF_*`` word per access; ``pkru``: one value or one per access)."""
        a = np.ascontiguousarray(addr).view(np.int64)
        af = np.ascontiguousarray(af, dtype=np.int64)
        n = a.shape[0]
        pk = np.asarray(self.pkru if pkru is None else pkru, dtype=np.int64)
        fault = np.zeros(n, np.uint8)
        gpa = np.zeros(n, np.int64)
        ec = np.zeros(n, np.int64)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            k = pk if pk.ndim == 0 else pk[lo:hi]
            self._chunk(a[lo:hi], af[lo:hi], k, fault[lo:hi], gpa[lo:hi], ec[lo:hi])
        return fault, gpa.view(np.uint64), ec.view(np.uint64)

    def _chunk(self, a, af, pkru, o_fault, o_gpa, o_ec):
        write = (af & AF_WRITE) != 0
        fetch = (af & AF_FETCH) != 0
        user = ((af & AF_USER) != 0) & ((af & AF_IMPLICIT) == 0)
        pfec = write * PF_W | user * PF_U | fetch * PF_FETCH               # int64
        ec_acc = pfec & (PF_W | PF_U)
        if self.pferr_fetch:
            ec_acc |= fetch * PF_FETCH

        sh = 64 - self.va_bits
        canon = ((a << sh) >> sh) == a
        if canon.all():
            ix = None                                   # every lane walks: no index array yet
            va = a
        else:
            bad = ~canon
            o_fault[bad] = np.where((af[bad] & AF_STACK) != 0, F_SS, F_GP)
            ix = np.flatnonzero(canon)
            va = a[ix]
        table = np.full(va.shape[0], self.root, np.int64)
        acc_raw = np.full(va.shape[0], -1, np.int64)
        idx_mask = (1 << self.index_bits) - 1

        for level in range(self.levels, 0, -1):
            if va.shape[0] == 0:
                break
            shift = 12 + (level - 1) * self.index_bits
            ea = table + ((va >> shift) & idx_mask) * 8
            backed = (ea >= self.base) & (ea + 8 <= self.end)
            all_backed = bool(backed.all())
            if all_backed:
                pte = self.ram64[(ea - self.base) >> 3]
            else:
                pte = np.where(backed, self.ram64[np.where(backed, ea - self.base, 0) >> 3], 0)
            present = (pte & 1) != 0
            b7 = (pte >> 7) & 1
            rsvd_mask = np.where(b7 != 0, self.rsvd[1, level - 1], self.rsvd[0, level - 1])
            good = present & ((pte & rsvd_mask) == 0)
            if not all_backed:
                good &= backed
            acc_raw &= (pte ^ self.nx_flip) | self.exec_force
            if level == 1:
                leaf = good
            elif (self.leaf_levels >> level) & 1:
                leaf = good & (b7 != 0)
            else:
                leaf = np.zeros(va.shape[0], bool)
            all_good = bool(good.all())

            if not all_good:                            # faults at this level
                rows = ix if ix is not None else None
                if not all_backed:
                    m = ~backed
                    r = np.flatnonzero(m) if rows is None else rows[m]
                    o_fault[r] = F_UNBACKED
                m = backed & ~present
                r = np.flatnonzero(m) if rows is None else rows[m]
                o_fault[r] = F_PF
                o_ec[r] = ec_acc[r]
                m = present & ~good if all_backed else backed & present & ~good
                r = np.flatnonzero(m) if rows is None else rows[m]
                o_fault[r] = F_PF
                o_ec[r] = ec_acc[r] | PF_P | PF_RSVD

            if leaf.any():                              # leaves at this level: decide
                if level == 1 and all_good:
                    r, lva, lpte, lacc = ix, va, pte, acc_raw
                else:
                    r = np.flatnonzero(leaf) if ix is None else ix[leaf]
                    lva, lpte, lacc = va[leaf], pte[leaf], acc_raw[leaf]
                self._decide(r, lva, lpte, lacc, shift, af, pfec, ec_acc, pkru,
                             o_fault, o_gpa, o_ec)

            if level > 1:                               # lanes going one level down
                cont = good & ~leaf
                if not bool(cont.all()):
                    ix = np.flatnonzero(cont) if ix is None else ix[cont]
                    va, pte, acc_raw = va[cont], pte[cont], acc_raw[cont]
                table = pte & self.addr_mask

    def _decide(self, r, va, pte, acc_raw, page_shift, af, pfec, ec_acc, pkru,
                o_fault, o_gpa, o_ec):
        """Rights, protection keys and the GPA for lanes ``r`` (None: all lanes) at a leaf."""
        if r is not None:
            af, pfec, ec_acc = af[r], pfec[r], ec_acc[r]
            if pkru.ndim:
                pkru = pkru[r]
        acc = (acc_raw & 7) | ((acc_raw >> 60) & 8)    # P->R, W, U, bit 63 (not XD) -> X
        not_smap = ((af & AF_AC) != 0) & ((af & AF_IMPLICIT) == 0)
        row = (pfec + (not_smap.astype(np.int64) << 3)) >> 1
        fault = (self.perms[row] >> acc) & 1
        ec = ec_acc | PF_P
        if self.pkru_mask:
            pkey = (pte >> 59) & 15
            pk = (pkru >> (pkey * 2)) & 3
            pk &= np.int64(self.pkru_mask) >> ((pfec & ~np.int64(1)) + ((acc & 4) << 1))
            pkf = pk != 0
            ec |= pkf * PF_PK
            fault |= pkf
        offset_mask = (np.int64(1) << page_shift) - 1
        gpa = (pte & self.addr_mask & ~offset_mask) | (va & offset_mask)
        ok = fault == 0
        unbacked = (gpa < self.base) | (gpa >= self.end)
        fcode = np.where(ok, np.where(unbacked, F_UNBACKED, F_NONE), F_PF).astype(np.uint8)
        if r is None:
            o_fault[:] = fcode
            o_gpa[:] = np.where(ok, gpa, 0)
            o_ec[:] = np.where(ok, 0, ec)
        else:
            o_fault[r] = fcode
            o_gpa[r] = np.where(ok, gpa, 0)
            o_ec[r] = np.where(ok, 0, ec)
