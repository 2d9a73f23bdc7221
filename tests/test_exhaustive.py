"""Exhaustive permission test (the space of kvm-unit-tests' ``access`` test).

Every combination of U/S, R/W and XD in each of the three levels of a 2 MiB walk
(PML4E, PDPTE, PDE leaf: 2**9 rights patterns) × CR0.WP × CR4.SMEP × CR4.SMAP ×
EFER.NXE × protection keys (off; on with PKRU allowing, AD-denying or WD-denying the
page's key) × EFLAGS.AC × access kind × privilege, plus implicit supervisor accesses:
the kernel must equal the reference walker on every one.
"""
import itertools

import numpy as np
import pytest

import reference as ref
from conftest import ref_reader
from vecmmu import CpuRole, Fault, PageWalk, PhysMem

RIGHTS = list(itertools.product([0, 1], repeat=3))          # (U, W, XD)
FAULT_OF = {"none": Fault.NONE, "pf": Fault.PF}


def _entry(target, rights, leaf=False):
    u, w, xd = rights
    v = target | 1 | (w << 1) | (u << 2) | (xd << 63)
    if leaf:
        v |= (1 << 7) | (1 << 59)                            # 2 MiB page, pkey 1
    return v


@pytest.fixture(scope="module")
def rights_tables():
    """A PML4 whose 8 entries, 8×8 PDPTEs and 8×8×8 PDEs carry every rights pattern."""
    mem = PhysMem.zeros(64 << 20)
    pml4, nxt = 0x1000, 0x2000
    vas = []
    for i4, r4 in enumerate(RIGHTS):
        pdpt, nxt = nxt, nxt + 0x1000
        mem.write_u64(pml4 + 8 * i4, _entry(pdpt, r4))
        for i3, r3 in enumerate(RIGHTS):
            pd, nxt = nxt, nxt + 0x1000
            mem.write_u64(pdpt + 8 * i3, _entry(pd, r3))
            for i2, r2 in enumerate(RIGHTS):
                mem.write_u64(pd + 8 * i2, _entry(0x2000000, r2, leaf=True))
                vas.append((i4 << 39) | (i3 << 30) | (i2 << 21) | 0x123)
    return mem, pml4, np.array(vas, dtype=np.uint64)


CONFIGS = list(itertools.product([0, 1], [0, 1], [0, 1], [0, 1], ["off", "allow", "ad", "wd"]))


@pytest.mark.parametrize("wp,smep,smap,nxe,pk", CONFIGS)
def test_every_rights_combination(rights_tables, wp, smep, smap, nxe, pk):
    mem, pml4, vas = rights_tables
    role = CpuRole.for_mode("4level", wp=bool(wp), smep=bool(smep), smap=bool(smap),
                            nxe=bool(nxe), pke=pk != "off")
    pkru = {"off": 0, "allow": 0, "ad": 1 << 2, "wd": 1 << 3}[pk]
    walk = PageWalk(role, mem, pml4, pkru=pkru)
    # (kind, user, ac, implicit): every kind × privilege × AC, and implicit supervisor accesses
    variants = [(k, u, ac, 0) for k in range(3) for u in (0, 1) for ac in (0, 1)]
    variants += [(k, u, ac, 1) for k in (0, 1) for u in (0, 1) for ac in (0, 1)]
    n = len(vas)
    kinds = np.repeat([v[0] for v in variants], n)
    user = np.repeat([v[1] for v in variants], n)
    ac = np.repeat([v[2] for v in variants], n)
    imp = np.repeat([v[3] for v in variants], n)
    addr = np.tile(vas, len(variants))
    r = walk.translate(addr, kinds, user=user, ac=ac, implicit=imp)
    regs = dict(role.registers(), cr3=pml4, pkru=pkru)
    read = ref_reader(mem)
    faults = 0
    for i in range(len(r)):
        exp = ref.translate(read, regs, dict(addr=int(addr[i]), kind=int(kinds[i]), user=bool(user[i]),
                                             ac=bool(ac[i]), implicit=bool(imp[i])))
        ctx = (hex(int(addr[i])), variants[i // n])
        assert int(r.fault[i]) == FAULT_OF[exp["fault"]], ctx
        assert int(r.error_code[i]) == exp["error_code"], ctx
        assert int(r.acc[i]) == exp["acc"], ctx
        faults += exp["fault"] != "none"
    assert 0 < faults < len(r)       # the table is not trivially all-allow or all-deny
