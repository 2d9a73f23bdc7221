"""The jitted walker behind the reference walker's API, so golden cases run on both.

``read`` must be a ``DictMemory`` (tests/test_reference_golden.py): its bytes and backed
ranges become a PhysMem. A/D writes are compared by their effect on memory (the last value
written to each entry), since the kernel reports memory, not a list of writes.
"""
import numpy as np

from reference import GPFault, UnbackedError
import vecmmu
from vecmmu import Fault, PageWalk, PdpteError, PhysMem

NAMES = {Fault.NONE: "none", Fault.PF: "pf", Fault.GP: "gp", Fault.SS: "ss", Fault.UNBACKED: "unbacked"}


class Effect(list):
    """A list of (addr, width, value) writes that compares by final memory contents."""

    @staticmethod
    def _final(writes):
        out = {}
        for a, w, v in writes:
            out[a] = (w, v)
        return out

    def __eq__(self, other):
        return self._final(self) == self._final(other)

    __hash__ = None


def to_physmem(read) -> PhysMem:
    mem = PhysMem()
    for lo, hi in read.backed:
        base = lo & ~0xFFF
        mem.add_slot(base, np.zeros(hi - base, dtype=np.uint8))
    for a, b in read.data.items():
        if mem.is_backed(a, 1):
            mem.write(a, bytes([b]))
    return mem


def load_pdptes(read, cr3, maxphyaddr=52):
    mem = to_physmem(read)
    base = cr3 & 0xFFFFFFE0
    for i in range(4):
        if not mem.is_backed(base + 8 * i, 8):
            raise UnbackedError(base + 8 * i)
    try:
        return [int(x) for x in vecmmu.load_pdptes(mem, cr3, maxphyaddr)]
    except PdpteError as e:
        raise GPFault(str(e)) from None


def translate(read, regs, access, semantics="hardware", ad=False):
    mem = to_physmem(read)
    role = vecmmu.CpuRole.from_regs(regs["cr0"], regs["cr4"], regs["efer"],
                                    maxphyaddr=regs.get("maxphyaddr", 52),
                                    gbpages=regs.get("gbpages", True),
                                    vendor=regs.get("vendor", "intel"))
    pdptes = regs.get("pdptes")
    if role.mode is vecmmu.PagingMode.PAE and pdptes is None:
        pdptes = load_pdptes(read, regs["cr3"], role.maxphyaddr)
    walk = PageWalk(role, mem, regs["cr3"], pdptes=pdptes, semantics=semantics,
                    pkru=regs.get("pkru", 0))
    before = {}
    r = walk.translate([access["addr"]], access["kind"], user=access.get("user", False),
                       ac=access.get("ac", False), implicit=access.get("implicit", False),
                       stack=access.get("stack", False), trace=True, ad="trace" if ad else None)
    trace = [(lvl, int(r.trace_addr[0, lvl - 1]), int(r.trace_value[0, lvl - 1]) & (2**64 - 1))
             for lvl in range(5, 0, -1) if r.trace_addr[0, lvl - 1] >= 0]
    fault = NAMES[Fault(int(r.fault[0]))]
    out = dict(fault=fault, gpa=int(r.gpa[0]) if r.has_gpa[0] else None,
               error_code=int(r.error_code[0]), cr2=int(r.cr2[0]) if fault == "pf" else None,
               fault_level=int(r.fault_level[0]), entry_addr=int(r.entry_addr[0]),
               entry_value=int(r.entry_value[0]), leaf_level=int(r.leaf_level[0]),
               page_size=int(r.page_size[0]), acc=int(r.acc[0]), pkey=int(r.pkey[0]),
               refs=int(r.refs[0]), trace=trace)
    if ad:
        width = 4 if role.mode is vecmmu.PagingMode.BIT32 else 8
        writes, seen = Effect(), set()
        for _lvl, a, v in trace:
            now = int.from_bytes(mem.read(a, width), "little")
            if a not in seen and now != before.get(a, v):
                writes.append((a, width, now))
            seen.add(a)
        out["ad_writes"] = writes
    return out
