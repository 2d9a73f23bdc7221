"""Bounds-checked physical-memory access for kernels.

Walkers see memslots as (base, end, host pointer) arrays (:meth:`vecmmu.PhysMem.
slot_pointers`) and read entries with one host load after ``find_slot``'s bounds check;
the table builder works on its RAM buffer with ``load_le``/``store_le``. All addresses are
int64 inside kernels (physical addresses are below 2**52). A read that is not wholly inside
one memslot reports failure instead of touching memory.
"""
import ctypes as _ctypes
import sys as _sys

import numba as _numba
import numpy as np

from ._jit import jit_nrt_free as jit
from ._jit import jit_nrt_free, jit_walker


@jit_walker
def find_slot(slot_base, slot_end, addr, n):
    """Index of the memslot holding ``[addr, addr + n)``, or -1 (binary search; one exit
    and no short-circuit operators, so the common case is a few compares)."""
    lo = 0
    hi = slot_base.shape[0]
    if hi == 1:                                   # one slot: the common case, no search
        k = -1
        if (addr >= 0) & (slot_base[0] <= addr) & (addr + n <= slot_end[0]):
            k = 0
        return k
    while lo < hi:
        mid = (lo + hi) >> 1
        if slot_end[mid] <= addr:
            lo = mid + 1
        else:
            hi = mid
    k = -1
    if lo < slot_base.shape[0]:
        ok = (addr >= 0) & (slot_base[lo] <= addr) & (addr + n <= slot_end[lo])
        if ok:
            k = lo
    return k


@jit
def load_le(buf, off, size):
    """Little-endian u32 or u64 at byte ``off`` of ``buf`` (as int64)."""
    if size == 8:
        return (np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8)
                | (np.int64(buf[off + 2]) << 16) | (np.int64(buf[off + 3]) << 24)
                | (np.int64(buf[off + 4]) << 32) | (np.int64(buf[off + 5]) << 40)
                | (np.int64(buf[off + 6]) << 48) | (np.int64(buf[off + 7]) << 56))
    return (np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8)
            | (np.int64(buf[off + 2]) << 16) | (np.int64(buf[off + 3]) << 24))


@jit
def store_le(buf, off, size, value):
    for k in range(size):
        buf[off + k] = np.uint8((value >> (8 * k)) & 0xFF)


# --- pointer-based access (the walkers' hot path) -----------------------------------------
# A memslot is (base, end, ptr): ``ptr`` is the host address of the slot's first byte, so an
# entry at physical ``addr`` in slot k is one load at ``ptr[k] + addr - base[k]``, after
# find_slot's bounds check. No array is indexed, so Numba emits no reference counting in
# the per-address loop, and any number of backing arrays (memmaps included) cost nothing.
# PhysMem keeps the backing arrays alive while a kernel runs. x86 hosts are little-endian.

if _sys.byteorder != "little":                          # pragma: no cover
    raise ImportError("vecmmu's kernels read little-endian entries with host loads and need a "
                      "little-endian host")

if _numba.config.DISABLE_JIT:
    def load_u64(addr):
        return np.int64(np.uint64(_ctypes.c_uint64.from_address(int(addr)).value).view(np.int64))

    def load_u32(addr):
        return np.int64(_ctypes.c_uint32.from_address(int(addr)).value)

    def store_u64(addr, value):
        _ctypes.c_uint64.from_address(int(addr)).value = int(value) & 0xFFFFFFFFFFFFFFFF

    def store_u32(addr, value):
        _ctypes.c_uint32.from_address(int(addr)).value = int(value) & 0xFFFFFFFF

    def store_u8(addr, value):
        _ctypes.c_uint8.from_address(int(addr)).value = int(value) & 0xFF

    def prefetch(addr):
        pass

    def store_stream_u64(addr, value):
        store_u64(addr, value)

    def store_fence():
        pass
else:
    from llvmlite import ir as _ir
    from numba import types as _types
    from numba.core import cgutils as _cgutils
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def load_u64(typingctx, addr):
        """The 8 bytes at host address ``addr`` (unaligned allowed), as int64."""
        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], _ir.IntType(64).as_pointer())
            return builder.load(ptr, align=1)
        return _types.int64(_types.int64), codegen

    @_intrinsic
    def load_u32(typingctx, addr):
        """The 4 bytes at host address ``addr``, zero-extended to int64."""
        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], _ir.IntType(32).as_pointer())
            return builder.zext(builder.load(ptr, align=1), _ir.IntType(64))
        return _types.int64(_types.int64), codegen

    @_intrinsic
    def store_u64(typingctx, addr, value):
        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], _ir.IntType(64).as_pointer())
            builder.store(args[1], ptr, align=1)
            return context.get_dummy_value()
        return _types.void(_types.int64, _types.int64), codegen

    @_intrinsic
    def store_u32(typingctx, addr, value):
        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], _ir.IntType(32).as_pointer())
            builder.store(builder.trunc(args[1], _ir.IntType(32)), ptr, align=1)
            return context.get_dummy_value()
        return _types.void(_types.int64, _types.int64), codegen

    @_intrinsic
    def store_u8(typingctx, addr, value):
        """Store the low byte of ``value`` at host address ``addr``."""
        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], _ir.IntType(8).as_pointer())
            builder.store(builder.trunc(args[1], _ir.IntType(8)), ptr)
            return context.get_dummy_value()
        return _types.void(_types.int64, _types.int64), codegen

    @_intrinsic
    def prefetch(typingctx, addr):
        """A hint to bring the line at host address ``addr`` into cache (``llvm.prefetch``:
        read, high locality). It never faults, whatever the address, and changes no
        result: walkers use it only to overlap the cache misses of independent walks."""
        def codegen(context, builder, signature, args):
            i8p = _ir.IntType(8).as_pointer()
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            builder.call(fn, [builder.inttoptr(args[0], i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()
        return _types.void(_types.int64), codegen

    @_intrinsic
    def store_stream_u64(typingctx, addr, value):
        """Store 8 bytes at the 8-aligned host address ``addr`` past the caches (a
        non-temporal store, ``movnti``): for results written once and not read again soon,
        so they neither read their lines in first nor evict table lines from cache. Weakly
        ordered: a kernel that uses it ends with :func:`store_fence`."""
        def codegen(context, builder, signature, args):
            ptr = builder.inttoptr(args[0], _ir.IntType(64).as_pointer())
            st = builder.store(args[1], ptr, align=8)
            st.set_metadata("nontemporal",
                            builder.module.add_metadata([_ir.Constant(_ir.IntType(32), 1)]))
            return context.get_dummy_value()
        return _types.void(_types.int64, _types.int64), codegen

    @_intrinsic
    def store_fence(typingctx):
        """Order every earlier store, streaming ones included, before any later one
        (``sfence``; LLVM's own ``fence`` becomes a locked instruction, which the manuals
        do not promise for non-temporal stores): what another thread reads after the
        kernel returns is complete."""
        def codegen(context, builder, signature, args):
            fnty = _ir.FunctionType(_ir.VoidType(), [])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.sfence")
            builder.call(fn, [])
            return context.get_dummy_value()
        return _types.void(), codegen


@jit
def load_entry(ptr, size):
    """A little-endian u32 or u64 entry at host address ``ptr``."""
    if size == 8:
        return load_u64(ptr)
    return load_u32(ptr)


@jit_nrt_free
def host_addr(slot_base, slot_end, slot_ptr, addr, size):
    """The host address of ``[addr, addr + size)`` if one memslot holds it all, else -1
    (host addresses of user memory are positive)."""
    k = find_slot(slot_base, slot_end, addr, size)
    if k < 0:
        return np.int64(-1)
    return slot_ptr[k] + (addr - slot_base[k])


@jit
def read_ptr(slot_base, slot_end, slot_ptr, addr, size):
    """``(ok, value)`` of the ``size``-byte entry at physical ``addr`` (bounds-checked)."""
    p = host_addr(slot_base, slot_end, slot_ptr, addr, size)
    if p < 0:
        return False, np.int64(0)
    return True, load_entry(p, size)


@jit
def write_ptr(slot_base, slot_end, slot_ptr, addr, size, value):
    p = host_addr(slot_base, slot_end, slot_ptr, addr, size)
    if p < 0:
        return False
    if size == 8:
        store_u64(p, value)
    else:
        store_u32(p, value)
    return True


@jit_nrt_free
def find_slot_call(slot_base, slot_end, addr, n):
    """:func:`find_slot` as a call, for cold paths (paging off, PAE PDPTEs, a large
    page's frame check): every inlined copy costs Numba's inliner a copy of its IR at
    compile time, and LLVM still inlines this call where that pays."""
    return find_slot(slot_base, slot_end, addr, n)
