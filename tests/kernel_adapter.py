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


# --- TDP and nested walks behind reference_tdp's API ---------------------------------------

FAULTS = {Fault.NONE: "none", Fault.PF: "pf", Fault.GP: "gp", Fault.SS: "ss",
          Fault.UNBACKED: "unbacked", Fault.EPT_VIOLATION: "ept_violation",
          Fault.EPT_MISCONFIG: "ept_misconfig", Fault.NPF: "npf"}
STAGES = {0: "none", 1: "guest", 2: "table", 3: "final"}
SHIFT_LEVEL = {0: 0, 12: 1, 21: 2, 22: 2, 30: 3}


def tdp_role(tdp):
    """The vecmmu role and root for a reference_tdp ``tdp`` dict."""
    if tdp["kind"] == "ept":
        role = vecmmu.EptRole.from_eptp(tdp["eptp"], execonly=tdp.get("execonly", False),
                                        mbec=tdp.get("mbec", False),
                                        huge_level=tdp.get("huge_level", 3),
                                        advanced_info=tdp.get("advanced_info"),
                                        maxphyaddr=tdp.get("maxphyaddr", 52))
        return role, tdp["eptp"]
    efer, cr4 = tdp["efer"], tdp["cr4"]
    if efer & (1 << 10):
        mode = "5level" if cr4 & (1 << 12) else "4level"
    elif cr4 & (1 << 5):
        mode = "pae"
    else:
        raise ValueError("32-bit NPT is not modelled")
    role = vecmmu.NptRole(mode=mode, nxe=bool(efer & (1 << 11)), gbpages=tdp.get("gbpages", True),
                          gmet=tdp.get("gmet", False), l1_smep=tdp.get("l1_smep", False),
                          maxphyaddr=tdp.get("maxphyaddr", 52))
    return role, tdp["ncr3"]


def _base(r, fault):
    c = r.columns()
    return dict(fault=fault, error_code=int(c["error_code"][0]), fault_level=int(c["fault_level"][0]),
                entry_addr=int(c["entry_addr"][0]), entry_value=int(c["entry_value"][0]),
                refs=int(c["refs"][0]))


def tdp_translate(read, tdp, gpa, access, semantics="hardware"):
    mem = to_physmem(read)
    role, root = tdp_role(tdp)
    if gpa >> role.gpa_bits:
        raise ValueError(f"GPA {gpa:#x} beyond the TDP's reach")
    walk = PageWalk(role, mem, root, semantics=semantics)
    table = bool(access.get("table", False))
    user = bool(access.get("user", False))
    gacc = access.get("guest_acc", 11 | (4 if user else 0))
    r = walk.translate([gpa], access.get("kind", 0), user=user, table=table, guest_acc=gacc,
                       trace=True)
    c = r.columns()
    fault = FAULTS[Fault(int(c["fault"][0]))]
    out = _base(r, fault)
    leaf = int(c["leaf_level"][0])
    shift = int(c["page_shift"][0])
    ok = fault == "none"
    out.update(stage=STAGES[int(c["stage"][0])], gpa=gpa,
               hpa=int(c["hpa"][0]) if r.has_hpa[0] else None, exit_qual=int(c["exit_qual"][0]),
               fault_gpa=None if ok else gpa, cr2=None, guest_level=0,
               leaf_level=0, page_size=0, acc=0, pkey=0, tdp_leaf_level=leaf,
               tdp_page_size=(1 << shift) if leaf else 0, tdp_acc=int(c["acc"][0]) if leaf else 0,
               effective_page_size=(1 << shift) if ok else 0, trace=[])
    ta, tv = r.trace_addr, r.trace_value
    out["tdp_trace"] = [(0, lvl, int(ta[0, lvl - 1]), int(tv[0, lvl - 1]) & (2**64 - 1))
                        for lvl in range(5, 0, -1) if ta[0, lvl - 1] >= 0]
    return out


def translate_nested(read, regs, tdp, access, semantics="hardware"):
    mem = to_physmem(read)
    role, root = tdp_role(tdp)
    twalk = PageWalk(role, mem, root, semantics=semantics)
    grole = vecmmu.CpuRole.from_regs(regs["cr0"], regs["cr4"], regs["efer"],
                                     maxphyaddr=regs.get("maxphyaddr", 52),
                                     gbpages=regs.get("gbpages", True),
                                     vendor=regs.get("vendor", "intel"))
    pdptes = regs.get("pdptes")
    from_memory = tdp["kind"] == "npt" and semantics == "hardware"
    if grole.mode is vecmmu.PagingMode.PAE and pdptes is None and not from_memory:
        # reference_tdp's API wants PDPTE registers given (vecmmu can also load them
        # through the TDP at CR3, which tests/test_nested.py covers)
        raise ValueError("a PAE guest under this TDP needs regs['pdptes']")
    if from_memory:
        pdptes = None                                   # read from memory on every walk (R10)
    walk = PageWalk(grole, mem, regs["cr3"], pdptes=pdptes, semantics=semantics,
                    pkru=regs.get("pkru", 0), tdp=twalk)
    r = walk.translate([access["addr"]], access["kind"], user=access.get("user", False),
                       ac=access.get("ac", False), implicit=access.get("implicit", False),
                       stack=access.get("stack", False), trace=True)
    return nested_row(r, 0)


def nested_row(r, i):
    """Row ``i`` of a 2-D walk result as reference_tdp's dict."""
    c = r.columns()
    fault = FAULTS[Fault(int(c["fault"][i]))]
    stage = STAGES[int(c["stage"][i])]
    out = dict(fault=fault, error_code=int(c["error_code"][i]), fault_level=int(c["fault_level"][i]),
               entry_addr=int(c["entry_addr"][i]), entry_value=int(c["entry_value"][i]),
               refs=int(c["refs"][i]))
    tshift = int(c["tdp_page_shift"][i])
    shift = int(c["page_shift"][i])
    out.update(stage=stage, gpa=int(c["gpa"][i]) if r.has_gpa[i] else None,
               hpa=int(c["hpa"][i]) if r.has_hpa[i] else None, exit_qual=int(c["exit_qual"][i]),
               fault_gpa=int(c["fault_gpa"][i]) if stage in ("table", "final") else None,
               cr2=int(c["addr"][i]) if fault == "pf" else None,
               guest_level=int(c["guest_level"][i]), leaf_level=int(c["leaf_level"][i]),
               page_size=(1 << shift) if shift else 0, acc=int(c["acc"][i]), pkey=int(c["pkey"][i]),
               tdp_leaf_level=SHIFT_LEVEL[tshift], tdp_page_size=(1 << tshift) if tshift else 0,
               tdp_acc=int(c["tdp_acc"][i]) if tshift else 0,
               effective_page_size=int(r.effective_page_size[i]))
    if r.trace_addr is not None:
        out["trace"] = [(lvl, int(r.trace_addr[i, lvl - 1]), int(r.trace_value[i, lvl - 1]) & (2**64 - 1))
                        for lvl in range(5, 0, -1) if r.trace_addr[i, lvl - 1] >= 0]
        ta, tv = r.tdp_trace
        out["tdp_trace"] = [(0 if row == 5 else row + 1, lvl, int(ta[i, row, lvl - 1]),
                             int(tv[i, row, lvl - 1]) & (2**64 - 1))
                            for row in (4, 3, 2, 1, 0, 5) for lvl in range(5, 0, -1)
                            if ta[i, row, lvl - 1] >= 0]
    return out
