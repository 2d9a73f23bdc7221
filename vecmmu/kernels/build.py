"""Table-building kernels for :class:`vecmmu.mmu.Mmu` (KVM's ``kvm_mmu`` side).

Tables live in one RAM buffer ``buf`` whose byte 0 is physical address ``ram_base``.
New tables come from a bump allocator ``[next_free, limit)`` and are zero already
(RAM starts zeroed and the allocator never reuses a frame). Status codes per page:
0 done, 1 a large leaf above is in the way, 2 out of table memory, 3 a page table sits
where the leaf should go, 4 an entry points outside RAM.
"""
import numpy as np

from ._jit import jit
from .physmem import load_le, store_le

S_OK = 0
S_LARGE_ABOVE = 1
S_NO_MEMORY = 2
S_TABLE_BELOW = 3
S_OUTSIDE = 4


@jit
def map_leaves(buf, ram_base, root, vas, vals, leaf_level, top_level, pte_size, index_bits,
               addr_mask, table_flags, top_flags, top_is_register, leaf_levels, next_free, limit,
               status):
    """Install ``vals[i]`` as the leaf for ``vas[i]`` at ``leaf_level``, creating tables.

    ``top_flags`` is used for entries created at ``top_level`` (PAE PDPTEs allow only P).
    Returns ``(next_free, stopped_at)``; ``stopped_at`` is ``len(vas)`` unless memory ran out.
    """
    n = vas.shape[0]
    idx_mask = (np.int64(1) << index_bits) - 1
    size = ram_base + buf.shape[0]
    for i in range(n):
        va = vas[i]
        table = root
        st = S_OK
        level = top_level
        while level > leaf_level:
            ea = table + ((va >> (12 + (level - 1) * index_bits)) & idx_mask) * pte_size
            if ea < ram_base or ea + pte_size > size:
                st = S_OUTSIDE
                break
            e = load_le(buf, ea - ram_base, pte_size)
            if (e & 1) != 0:
                if (not (level == top_level and top_is_register) and ((e >> 7) & 1) != 0
                        and ((leaf_levels >> level) & 1) != 0):
                    st = S_LARGE_ABOVE
                    break
                table = e & addr_mask
            else:
                if next_free + 4096 > limit:
                    status[i] = S_NO_MEMORY
                    return next_free, i
                new = next_free
                next_free += 4096
                flags = top_flags if level == top_level else table_flags
                store_le(buf, ea - ram_base, pte_size, new | flags)
                table = new
            level -= 1
        if st == S_OK:
            ea = table + ((va >> (12 + (leaf_level - 1) * index_bits)) & idx_mask) * pte_size
            if ea < ram_base or ea + pte_size > size:
                st = S_OUTSIDE
            else:
                old = load_le(buf, ea - ram_base, pte_size)
                if leaf_level > 1 and (old & 1) != 0 and ((old >> 7) & 1) == 0:
                    st = S_TABLE_BELOW
                else:
                    store_le(buf, ea - ram_base, pte_size, vals[i])
        status[i] = st
    return next_free, n


@jit
def update_leaves(buf, ram_base, root, start, end, top_level, pte_size, index_bits, addr_mask,
                  top_is_register, and_mask, or_mask, leaf_levels):
    """Rewrite every present leaf in ``[start, end)``: ``new = (old & and_mask) | or_mask``
    (``and_mask = 0, or_mask = 0`` unmaps). Returns ``(status, va, pages)``: status 0 when
    done, 5 when a large leaf straddles an end of the range (nothing after ``va`` changed).
    """
    idx_mask = (np.int64(1) << index_bits) - 1
    size = ram_base + buf.shape[0]
    va = start
    pages = 0
    while va < end:
        table = root
        level = top_level
        step = np.int64(1) << 12
        while True:
            shift = 12 + (level - 1) * index_bits
            step = np.int64(1) << shift
            ea = table + ((va >> shift) & idx_mask) * pte_size
            if ea < ram_base or ea + pte_size > size:
                break
            e = load_le(buf, ea - ram_base, pte_size)
            if (e & 1) == 0:
                break
            is_leaf = level == 1 or (((e >> 7) & 1) != 0 and ((leaf_levels >> level) & 1) != 0)
            if level == top_level and top_is_register:
                is_leaf = False
            if is_leaf:
                base = va & ~(step - 1)
                if base < start or base + step > end:
                    return 5, va, pages
                store_le(buf, ea - ram_base, pte_size, (e & and_mask) | or_mask)
                pages += 1
                break
            table = e & addr_mask
            level -= 1
        va = (va & ~(step - 1)) + step
    return 0, va, pages
