"""PhysMem: physical memory as memslots over byte arrays.

A memslot maps the physical range ``[base, base + size)`` onto ``size`` bytes of a backing
array (a numpy array or an ``np.memmap``), starting at a byte offset into it. Slots are
sparse over the 52-bit physical address space and never overlap. Paging-structure
entries are read as little-endian u32 or u64 at their byte offset, because one nested
walk reads 32-bit guest tables and 64-bit EPT entries from the same memory.

An address outside every slot is *unbacked*: the walkers report it with the status
``Fault.UNBACKED`` (address and level) instead of reading anything.

Kernels never see this class; :meth:`PhysMem.slot_pointers` hands them plain arrays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

PHYS_ADDR_LIMIT = 1 << 52


@dataclass(frozen=True)
class Memslot:
    base: int
    size: int
    backing: int          # index into PhysMem.backings
    offset: int           # byte offset into that backing
    name: str
    writable: bool

    @property
    def end(self) -> int:
        return self.base + self.size


def _as_bytes(data) -> np.ndarray:
    """A 1-D C-contiguous uint8 view of ``data`` (no copy)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, np.ndarray):
        arr = data
    else:
        raise TypeError(f"memslot backing must be a numpy array or bytes, not {type(data).__name__}")
    if not arr.flags.c_contiguous:
        raise ValueError("memslot backing must be C-contiguous (np.ascontiguousarray would copy it)")
    arr = np.asarray(arr)  # a memmap becomes a plain ndarray view over the same pages
    return arr.reshape(-1).view(np.uint8)


class PhysMem:
    """Sparse physical memory made of memslots.

    >>> mem = PhysMem.zeros(1 << 20)          # 1 MiB of RAM at physical address 0
    >>> mem.write_u64(0x1000, 0x2003)
    >>> hex(mem.read_u64(0x1000))
    '0x2003'
    """

    def __init__(self):
        self.backings: list[np.ndarray] = []
        self.slots: list[Memslot] = []
        self._ptrs = None

    def __getstate__(self):
        # the cached kernel views hold host pointers: meaningless in another process
        state = dict(self.__dict__)
        state["_ptrs"] = None
        return state

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def zeros(cls, size: int, base: int = 0) -> "PhysMem":
        """RAM of ``size`` bytes at ``base``, zero-filled. Large sizes cost no memory until
        touched (the pages come from calloc/mmap)."""
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"PhysMem.zeros: size must be a positive integer, got {size!r}")
        mem = cls()
        mem.add_slot(base, np.zeros(size, dtype=np.uint8), name="ram")
        return mem

    @classmethod
    def from_raw(cls, path, base: int = 0, writable: bool = False) -> "PhysMem":
        """A raw physical-memory image (memory-mapped, not read into RAM)."""
        path = os.fspath(path)
        size = os.path.getsize(path)
        if size == 0:
            raise ValueError(f"{path}: raw memory image is empty")
        mm = np.memmap(path, dtype=np.uint8, mode="r+" if writable else "r")
        mem = cls()
        mem.add_slot(base, mm, name=os.path.basename(path), writable=writable)
        return mem

    def add_slot(self, base: int, data, *, offset: int = 0, size: int | None = None,
                 name: str | None = None, writable: bool | None = None) -> Memslot:
        """Map ``size`` bytes of ``data`` (from byte ``offset``) at physical ``base``.

        Several slots may share one backing (an ELF core: one memmap, one slot per
        PT_LOAD). ``writable`` defaults to whether the array is writable.
        """
        arr = _as_bytes(data)
        for what, v in (("base", base), ("offset", offset), ("size", size)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TypeError(f"memslot {name or ''!r}: {what} must be an integer, not {v!r}")
        base, offset = int(base), int(offset)
        size = arr.size - offset if size is None else int(size)
        name = name or f"slot{len(self.slots)}"
        if base < 0 or base % 4096:
            raise ValueError(f"memslot {name!r}: base {base:#x} is not a multiple of 4096")
        if size <= 0:
            raise ValueError(f"memslot {name!r}: size must be positive, got {size}")
        if base + size > PHYS_ADDR_LIMIT:
            raise ValueError(f"memslot {name!r}: [{base:#x}, {base + size:#x}) extends past the "
                             f"52-bit physical address space")
        if offset < 0 or offset + size > arr.size:
            raise ValueError(f"memslot {name!r}: bytes [{offset:#x}, {offset + size:#x}) are "
                             f"outside its backing of {arr.size:#x} bytes")
        for s in self.slots:
            if base < s.end and s.base < base + size:
                raise ValueError(f"memslot {name!r} [{base:#x}, {base + size:#x}) overlaps "
                                 f"memslot {s.name!r} [{s.base:#x}, {s.end:#x})")
        for i, b in enumerate(self.backings):
            if b is arr or (b.ctypes.data == arr.ctypes.data and b.size == arr.size):
                bidx = i
                break
        else:
            self.backings.append(arr)
            bidx = len(self.backings) - 1
        if writable is None:
            writable = bool(arr.flags.writeable)
        slot = Memslot(base, size, bidx, offset, name, bool(writable))
        self.slots.append(slot)
        self.slots.sort(key=lambda s: s.base)
        self._ptrs = None
        return slot

    # -- lookup and scalar access ------------------------------------------------------------
    def slot_of(self, addr: int) -> Memslot | None:
        for s in self.slots:
            if s.base <= addr < s.end:
                return s
        return None

    def _locate(self, addr: int, n: int, write: bool = False):
        s = self.slot_of(addr)
        if s is None or addr + n > s.end:
            raise IndexError(f"physical range [{addr:#x}, {addr + n:#x}) is not inside one memslot "
                             f"(slots: {self.describe()})")
        if write and not s.writable:
            raise PermissionError(f"memslot {s.name!r} is read-only; open the memory writable "
                                  f"to update it")
        off = s.offset + addr - s.base
        return self.backings[s.backing], off

    def read(self, addr: int, n: int) -> bytes:
        b, off = self._locate(addr, n)
        return b[off:off + n].tobytes()

    def write(self, addr: int, data: bytes) -> None:
        b, off = self._locate(addr, len(data), write=True)
        b[off:off + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, int(value & (2**64 - 1)).to_bytes(8, "little"))

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, int(value & 0xFFFFFFFF).to_bytes(4, "little"))

    def is_backed(self, addr: int, n: int = 1) -> bool:
        s = self.slot_of(addr)
        return s is not None and addr + n <= s.end

    @property
    def size(self) -> int:
        """Total bytes backed."""
        return sum(s.size for s in self.slots)

    def describe(self) -> str:
        return ", ".join(f"{s.name}=[{s.base:#x},{s.end:#x})" for s in self.slots) or "none"

    def __repr__(self) -> str:
        return f"PhysMem({len(self.slots)} slots, {self.size:#x} bytes: {self.describe()})"

    # -- kernel view --------------------------------------------------------------------------
    def slot_pointers(self):
        """``(slot_base, slot_end, slot_ptr)`` as int64 arrays: each slot's physical range and
        the host address of its first byte (the walkers' memory view). The arrays behind
        the pointers are this object's backings, kept alive by it."""
        if not self.slots:
            raise ValueError("PhysMem has no memslots; add one with add_slot() or PhysMem.zeros()")
        if self._ptrs is None:
            self._ptrs = (
                np.array([s.base for s in self.slots], dtype=np.int64),
                np.array([s.end for s in self.slots], dtype=np.int64),
                np.array([self.backings[s.backing].ctypes.data + s.offset for s in self.slots],
                         dtype=np.int64),
            )
        return self._ptrs
