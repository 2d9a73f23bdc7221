"""Exhaustive EPT permission table: every R/W/XS/XU leaf × MBEC × execute-only support ×
access kind × user/supervisor linear address, through a tdp_walk and through a 2-D walk
(where the user-mode bit comes from the guest's U/S), against the reference."""
import itertools

import numpy as np
import pytest

import reference_tdp as rt
from conftest import ref_reader
from kernel_adapter import FAULTS
from vecmmu import CpuRole, EptRole, Fault, PageWalk, PhysMem

COMBOS = list(range(16))               # bit 0 R, 1 W, 2 XS, 3 XU


def _leaf(combo):
    return (combo & 7) | ((combo >> 3) << 10) | (6 << 3)


def _ept_memory():
    """EPT at host 0x1000 (4 levels): GPA page k+1 -> HPA 0x100000 + k*0x1000 with the
    rights of combo k; upper levels allow everything (RWX and XU)."""
    mem = PhysMem.zeros(4 << 20)
    top = 0x7 | (1 << 10)
    mem.write_u64(0x1000, 0x2000 | top)
    mem.write_u64(0x2000, 0x3000 | top)
    mem.write_u64(0x3000, 0x4000 | top)
    for k in COMBOS:
        mem.write_u64(0x4000 + 8 * (k + 1), (0x100000 + 0x1000 * k) | _leaf(k))
    return mem


@pytest.mark.parametrize("mbec,execonly,semantics",
                         list(itertools.product([False, True], [False, True], ["hardware", "kvm"])))
def test_ept_rights_table(mbec, execonly, semantics):
    mem = _ept_memory()
    role = EptRole(mbec=mbec, execonly=execonly)
    walk = PageWalk(role, mem, role.eptp(0x1000), semantics=semantics)
    cases = list(itertools.product(COMBOS, range(3), [False, True]))
    gpa = np.array([((k + 1) << 12) | 0x10 for k, _, _ in cases], dtype=np.uint64)
    kind = np.array([c[1] for c in cases])
    user = np.array([c[2] for c in cases])
    r = walk.translate(gpa, kind, user=user)
    tdict = dict(kind="ept", eptp=role.eptp(0x1000), execonly=execonly, mbec=mbec)
    read = ref_reader(mem)
    seen = set()
    for i, (k, kd, u) in enumerate(cases):
        exp = rt.tdp_translate(read, tdict, int(gpa[i]), dict(kind=kd, user=u), semantics)
        ctx = (f"R{k & 1}W{k >> 1 & 1}XS{k >> 2 & 1}XU{k >> 3}", kd, u)
        assert FAULTS[Fault(int(r.fault[i]))] == exp["fault"], ctx
        assert int(r.exit_qual[i]) == exp["exit_qual"], ctx
        seen.add(exp["fault"])
    assert "none" in seen and "ept_violation" in seen and "ept_misconfig" in seen


@pytest.mark.parametrize("mbec", [False, True])
def test_ept_rights_through_guest_us(mbec):
    """A 2-D walk: a guest page with U/S = 0 or 1 over each EPT combo; with MBEC a fetch is
    checked against XU for user-mode linear addresses and XS otherwise, whatever the CPL."""
    mem = _ept_memory()
    role = EptRole(mbec=mbec, execonly=True)
    # guest 4-level tables at GPA 0x20000.., mapped by the same EPT? Use a separate identity
    # EPT region: GPA 0x20000-0x28000 -> HPA 0x200000-0x208000 (RWX + XU)
    for j in range(8):
        mem.write_u64(0x4000 + 8 * (0x20 + j), (0x200000 + 0x1000 * j) | 0x7 | (1 << 10) | (6 << 3))
    g = {0x20000: 0x21007, 0x21000: 0x22007, 0x22000: 0x23007}
    for gpa, v in g.items():
        mem.write_u64(0x200000 + gpa - 0x20000, v)
    cases = []
    for k in COMBOS:
        for us in (0, 1):
            va = ((k * 2 + us) << 12) | 0x40
            mem.write_u64(0x200000 + 0x3000 + 8 * (k * 2 + us), ((k + 1) << 12) | 0x3 | (us << 2))
            for kd, cpl3 in itertools.product(range(3), [False, True]):
                cases.append((va, kd, cpl3, k, us))
    grole = CpuRole.for_mode("4level", maxphyaddr=46)
    walk = PageWalk(grole, mem, 0x20000, tdp=PageWalk(role, mem, role.eptp(0x1000)))
    va = np.array([c[0] for c in cases], dtype=np.uint64)
    r = walk.translate(va, np.array([c[1] for c in cases]), user=np.array([c[2] for c in cases]))
    tdict = dict(kind="ept", eptp=role.eptp(0x1000), execonly=True, mbec=mbec)
    regs = dict(grole.registers(), cr3=0x20000, maxphyaddr=46)
    read = ref_reader(mem)
    for i, (a, kd, cpl3, k, us) in enumerate(cases):
        exp = rt.translate_nested(read, regs, tdict, dict(addr=a, kind=kd, user=cpl3, ac=False,
                                                          implicit=False, stack=False))
        ctx = (k, us, kd, cpl3)
        assert FAULTS[Fault(int(r.fault[i]))] == exp["fault"], ctx
        assert int(r.exit_qual[i]) == exp["exit_qual"], ctx
        assert int(r.error_code[i]) == exp["error_code"], ctx
    if mbec:   # an XS-only page: supervisor-mode linear address may execute, user-mode not
        xs_only = [i for i, c in enumerate(cases) if c[3] == 0b0101 and c[1] == 2 and not c[2]]
        by_us = {cases[i][4]: int(r.fault[i]) for i in xs_only}
        assert by_us[0] == Fault.NONE and by_us[1] == Fault.EPT_VIOLATION
