"""Golden cases for the nested (EPT / NPT) reference walker, worked by hand from the Intel SDM
Vol. 3 ch. 29 (EPT), the AMD APM Vol. 2 ch. 15.25 (NPT) and the readings in
../shared/reference/kvm-vs-hardware.md. Expected numbers were derived on paper from the layout
below, not by running the walker. Each case carries a one-line comment naming the rule.

Host-physical layout (EPT and NPT share it; EPT entry bits differ):
    TDP root 0x10000 -> [0] 0x11000 -> [0] 0x12000 -> [0] PT 0x13000
    TDP PT entry k (k = 1..6) at 0x13000 + 8k maps GPA k*0x1000 -> HPA 0x100000 + k*0x1000
    EPT: non-leaf 0x..007 (RWX), leaf 0x..037 (WB | RWX)      EPTP4 = 0x1001E (WB, 4 levels)
    NPT: non-leaf and leaf 0x..007 (P|W|U)                    nCR3  = 0x10000
Guest (4-level, CR3 = 0x1000), VA4 = 0x0000_0080_8060_4123:
    PML4E GPA 0x1008 = 0x2027; PDPTE 0x2010 = 0x3027; PDE 0x3018 = 0x4027; PTE 0x4020 = 0x5067
    (0x27 = P|W|U|A, 0x67 = P|W|U|A|D); final GPA 0x5123 -> HPA 0x105123.
Every guest entry lives at HPA = GPA + 0x100000.

Refs by hand: 4 guest table accesses x (4 TDP + 1 guest) + 4 TDP for the final GPA = 24.
"""
from __future__ import annotations

import sys

import pytest

import kernel_adapter
from dictmem import FOUR_GIB, DictMemory, memory  # noqa: F401
import reference
import reference_tdp
from reference_tdp import tdp_translate, translate_nested  # noqa: F401 (patched below)

KEYS = {"fault", "stage", "gpa", "hpa", "error_code", "exit_qual", "fault_gpa", "cr2",
        "fault_level", "entry_addr", "entry_value", "guest_level", "leaf_level", "page_size",
        "acc", "pkey", "tdp_leaf_level", "tdp_page_size", "tdp_acc", "effective_page_size",
        "refs", "trace", "tdp_trace"}

PE, WP, PG = 1, 1 << 16, 1 << 31
PSE, PAE, LA57, SMEP = 1 << 4, 1 << 5, 1 << 12, 1 << 20
LME, LMA, NXE = 1 << 8, 1 << 10, 1 << 11
XD = 1 << 63
READ, WRITE, FETCH = 0, 1, 2
BIT32, BIT33 = 1 << 32, 1 << 33




@pytest.fixture(autouse=True, params=["reference", "kernel"])
def implementation(request, monkeypatch):
    """Every golden case runs on the reference walker and on the jitted kernels."""
    mod = sys.modules[__name__]
    impl = reference_tdp if request.param == "reference" else kernel_adapter
    monkeypatch.setattr(mod, "translate_nested", impl.translate_nested)
    monkeypatch.setattr(mod, "tdp_translate", impl.tdp_translate)
    return request.param


def access(addr, kind=READ, user=False, ac=False, implicit=False, stack=False):
    return dict(addr=addr, kind=kind, user=user, ac=ac, implicit=implicit, stack=stack)


def check(result, **expected):
    """Every result has exactly the documented keys; compare the ones stated."""
    assert set(result) == KEYS
    for key, value in expected.items():
        assert result[key] == value, f"{key}: got {result[key]!r}, expected {value!r}"


BOTH = pytest.mark.parametrize("sem", ["hardware", "kvm"])

# --- layout -------------------------------------------------------------------------------
EPTP4 = 0x10000 | 3 << 3 | 6          # 0x1001E
EPTP4_AD = EPTP4 | 1 << 6             # EPT A/D enabled
VA4 = 0x0000_0080_8060_4123
GUEST4 = {0x1008: 0x2027, 0x2010: 0x3027, 0x3018: 0x4027, 0x4020: 0x5067}
TRACE4 = [(4, 0x1008, 0x2027), (3, 0x2010, 0x3027), (2, 0x3018, 0x4027), (1, 0x4020, 0x5067)]


def tdp_tables(nonleaf=0x7, leaf=0x37, pages=range(1, 7)):
    t = {0x10000: 0x11000 | nonleaf, 0x11000: 0x12000 | nonleaf, 0x12000: 0x13000 | nonleaf}
    for k in pages:
        t[0x13000 + 8 * k] = (0x100000 + 0x1000 * k) | leaf
    return t


def nested_mem(tdp=None, guest=None, over=None, backed=FOUR_GIB, guest_width=8, leaf=0x37,
               nonleaf=0x7):
    """TDP tables, guest entries (by GPA, stored at GPA + 0x100000), then raw overrides."""
    entries = dict(tdp if tdp is not None else tdp_tables(nonleaf, leaf))
    for gpa, value in (GUEST4 if guest is None else guest).items():
        entries[0x100000 + gpa] = (value, guest_width)
    entries.update(over or {})
    return memory(entries, backed=backed)


def ept(eptp=EPTP4, **kw):
    return dict(kind="ept", eptp=eptp, **kw)


NPT_L1 = dict(kind="npt", ncr3=0x10000, cr4=PAE, efer=LME | LMA | NXE)


def npt(**kw):
    return dict(NPT_L1, **kw)


def regs4(**extra):
    base = dict(cr0=PG | WP | PE, cr3=0x1000, cr4=PAE, efer=LME | LMA | NXE, maxphyaddr=48)
    base.update(extra)
    return base


def ept_pte(k):                       # HPA of the EPT/NPT PT entry mapping GPA k*0x1000
    return 0x13000 + 8 * k


# =======================================================================================
# Success, references, page sizes
# =======================================================================================
@BOTH
def test_ept_4_over_4_success_24_refs(sem):
    # SDM 29.3.2: every guest entry GPA and the final GPA take a full 4-level EPT walk: 24 refs.
    r = translate_nested(nested_mem(), regs4(), ept(), access(VA4), sem)
    assert r == dict(
        fault="none", stage="none", gpa=0x5123, hpa=0x105123, error_code=0, exit_qual=0,
        fault_gpa=None, cr2=None, fault_level=0, entry_addr=0x4020, entry_value=0x5067,
        guest_level=0, leaf_level=1, page_size=4096, acc=15, pkey=0, tdp_leaf_level=1,
        tdp_page_size=4096, tdp_acc=11, effective_page_size=4096, refs=24, trace=TRACE4,
        tdp_trace=[
            (4, 4, 0x10000, 0x11007), (4, 3, 0x11000, 0x12007), (4, 2, 0x12000, 0x13007),
            (4, 1, 0x13008, 0x101037),
            (3, 4, 0x10000, 0x11007), (3, 3, 0x11000, 0x12007), (3, 2, 0x12000, 0x13007),
            (3, 1, 0x13010, 0x102037),
            (2, 4, 0x10000, 0x11007), (2, 3, 0x11000, 0x12007), (2, 2, 0x12000, 0x13007),
            (2, 1, 0x13018, 0x103037),
            (1, 4, 0x10000, 0x11007), (1, 3, 0x11000, 0x12007), (1, 2, 0x12000, 0x13007),
            (1, 1, 0x13020, 0x104037),
            (0, 4, 0x10000, 0x11007), (0, 3, 0x11000, 0x12007), (0, 2, 0x12000, 0x13007),
            (0, 1, 0x13028, 0x105037)])


@BOTH
def test_ept_5_over_5_35_refs(sem):
    # 5 guest table accesses x (5 EPT + 1) + 5 EPT for the final GPA = 35 (R12).
    t = tdp_tables()
    t[0x10000] = 0x14007                      # EPT PML5E[0] -> PML4 0x14000
    t[0x14000] = 0x11007                      # EPT PML4E[0] -> the usual PDPT
    guest = dict(GUEST4)
    guest[0x6008] = 0x1027                    # guest PML5 at GPA 0x6000, index 1 -> PML4 0x1000
    regs = regs4(cr3=0x6000, cr4=PAE | LA57, maxphyaddr=52)
    va5 = (1 << 48) | VA4
    r = translate_nested(nested_mem(t, guest), regs, ept(0x10000 | 4 << 3 | 6), access(va5),
                         sem)
    check(r, fault="none", gpa=0x5123, hpa=0x105123, refs=35, leaf_level=1,
          trace=[(5, 0x6008, 0x1027)] + TRACE4, tdp_leaf_level=1, effective_page_size=4096)
    assert r["tdp_trace"][:5] == [(5, 5, 0x10000, 0x14007), (5, 4, 0x14000, 0x11007),
                                  (5, 3, 0x11000, 0x12007), (5, 2, 0x12000, 0x13007),
                                  (5, 1, 0x13030, 0x106037)]


@BOTH
def test_2m_guest_over_2m_ept_15_refs(sem):
    # SDM 29.3.2: a 2 MiB EPT leaf ends the EPT walk at level 2: 3 x (3+1) + 3 = 15 refs.
    t = {0x10000: 0x11007, 0x11000: 0x12007,
         0x12000: 0x2000B7,                   # GPA 0-2M -> HPA 0x200000 (PS|WB|RWX)
         0x12008: 0x4000B7}                   # GPA 2M-4M -> HPA 0x400000
    entries = dict(t)
    entries.update({0x201008: 0x2027, 0x202010: 0x3027, 0x203018: 0x2000E7})  # guest 2M PDE
    r = translate_nested(memory(entries), regs4(), ept(), access(VA4), sem)
    check(r, fault="none", gpa=0x204123, hpa=0x404123, refs=15, leaf_level=2,
          page_size=0x200000, tdp_leaf_level=2, tdp_page_size=0x200000, tdp_acc=11,
          effective_page_size=0x200000, entry_addr=0x3018, entry_value=0x2000E7,
          trace=[(4, 0x1008, 0x2027), (3, 0x2010, 0x3027), (2, 0x3018, 0x2000E7)])
    assert r["tdp_trace"][-1] == (0, 2, 0x12008, 0x4000B7)


@BOTH
def test_2m_guest_over_4k_ept_effective_4k(sem):
    # DESIGN "Results": a 2 MiB guest page over 4 KiB EPT is 4 KiB to a TLB; 3 x 5 + 4 = 19 refs.
    t = tdp_tables()
    t[0x12008] = 0x14007                      # EPT PD[1] -> PT 0x14000
    t[0x14020] = 0x300037                     # GPA 0x204000 -> HPA 0x300000
    guest = {0x1008: 0x2027, 0x2010: 0x3027, 0x3018: 0x2000E7}
    r = translate_nested(nested_mem(t, guest), regs4(), ept(), access(VA4), sem)
    check(r, fault="none", gpa=0x204123, hpa=0x300123, refs=19, leaf_level=2,
          page_size=0x200000, tdp_leaf_level=1, tdp_page_size=4096, effective_page_size=4096)


def test_4k_guest_over_1g_ept_14_refs():
    # SDM 29.3.2: 1 GiB EPT leaf at level 3 (huge_level 3): 4 x (2+1) + 2 = 14 refs; eff. 4 KiB.
    entries = {0x10000: 0x11007, 0x11000: 0x000000B7}    # GPA 0-1G -> HPA 0-1G
    entries.update(GUEST4)                                # guest tables at HPA == GPA
    r = translate_nested(memory(entries), regs4(), ept(), access(VA4))
    check(r, fault="none", gpa=0x5123, hpa=0x5123, refs=14, tdp_leaf_level=3,
          tdp_page_size=1 << 30, effective_page_size=4096)


def test_32bit_guest_over_ept_4_byte_entries():
    # SDM 4.3 + 29.3: 32-bit guest entries are 4 bytes, each behind a 4-level EPT walk:
    # 2 x (4+1) + 4 = 14 refs.
    guest = {0x1004: 0x2027, 0x2008: 0x3067}
    regs = dict(cr0=PG | WP | PE, cr3=0x1000, cr4=0, efer=0, maxphyaddr=40)
    r = translate_nested(nested_mem(guest=guest, guest_width=4), regs, ept(),
                         access(0x0040_2345, WRITE))
    check(r, fault="none", gpa=0x3345, hpa=0x103345, refs=14,
          trace=[(2, 0x1004, 0x2027), (1, 0x2008, 0x3067)])


# =======================================================================================
# EPT violation exit qualification, final GPA (bit 8 = 1)
# =======================================================================================
@BOTH
def test_qual_read_of_execute_only_page(sem):
    # SDM 29.3.3.2: bit 0 (read), bit 5 (XS of the AND), bit 7, bit 8; bits 3,4,6 clear.
    mem = nested_mem(over={ept_pte(5): 0x105034})
    r = translate_nested(mem, regs4(), ept(execonly=True), access(VA4), sem)
    check(r, fault="ept_violation", stage="final", exit_qual=0x1A1, error_code=0,
          gpa=0x5123, hpa=None, fault_gpa=0x5123 if sem == "hardware" else 0x5000,
          fault_level=1, entry_addr=0x13028, entry_value=0x105034, guest_level=0,
          tdp_leaf_level=1, tdp_page_size=4096, tdp_acc=8, effective_page_size=0, refs=24,
          leaf_level=1, acc=15, cr2=None)


@BOTH
def test_qual_write_to_read_only_page(sem):
    # bit 1 (write) and bit 3 (R of the AND): 0x2 | 0x8 | 0x80 | 0x100.
    mem = nested_mem(over={ept_pte(5): 0x105031})
    r = translate_nested(mem, regs4(), ept(), access(VA4, WRITE), sem)
    check(r, fault="ept_violation", stage="final", exit_qual=0x18A, refs=24, tdp_acc=1)


@BOTH
def test_qual_fetch_from_read_write_page(sem):
    # bit 2 (fetch) and bits 3,4 (R, W of the AND): 0x4 | 0x18 | 0x180.
    mem = nested_mem(over={ept_pte(5): 0x105033})
    r = translate_nested(mem, regs4(), ept(), access(VA4, FETCH), sem)
    check(r, fault="ept_violation", stage="final", exit_qual=0x19C, tdp_acc=3)


@BOTH
def test_qual_not_present_leaf_bits_5_3_clear(sem):
    # K10: a not-present entry has R=W=X=0, so bits 5:3 are 0 either way; 0x1 | 0x180.
    mem = nested_mem(over={ept_pte(5): 0x1050F8})          # XWR=000, junk in 7:3: not present
    r = translate_nested(mem, regs4(), ept(), access(VA4), sem)
    check(r, fault="ept_violation", exit_qual=0x181, fault_level=1, entry_addr=0x13028,
          entry_value=0x1050F8, tdp_leaf_level=0, tdp_acc=0, refs=24)


@BOTH
def test_qual_not_present_upper_level(sem):
    # Not present at EPT level 2 (PD[1] = 0): fault_level 2; refs 20 + 3 = 23; 0x181.
    guest = {**GUEST4, 0x4020: 0x200067}              # final GPA 0x200123
    r = translate_nested(nested_mem(guest=guest), regs4(), ept(), access(VA4), sem)
    check(r, fault="ept_violation", exit_qual=0x181, fault_level=2, entry_addr=0x12008,
          entry_value=0, gpa=0x200123, refs=23, tdp_leaf_level=0)


def test_qual_rights_are_anded_over_levels():
    # SDM 29.3.3.2: bits 5:3 are the AND over all levels: EPT PDE without X -> bit 5 clear.
    mem = nested_mem(over={0x12000: 0x13003})
    r = translate_nested(mem, regs4(), ept(), access(VA4, FETCH))
    check(r, fault="ept_violation", exit_qual=0x19C, fault_level=1, entry_addr=0x13028,
          entry_value=0x105037, tdp_acc=3, refs=24)


def test_qual_bit6_not_reported_without_mbec():
    # R4: bit 6 (XU) is undefined without MBEC and reported as 0 even when every entry has XU.
    mem = nested_mem(nonleaf=0x407, leaf=0x437, over={ept_pte(5): 0x105434})
    r = translate_nested(mem, regs4(), ept(execonly=True), access(VA4))
    check(r, fault="ept_violation", exit_qual=0x1A1, tdp_acc=8 | 4)


def test_qual_advanced_info_without_mbec():
    # R4: advanced info on: bit 9 (guest U/S=1), bit 10 (guest R/W=1), bit 11 = 0 (guest X).
    mem = nested_mem(over={ept_pte(5): 0x105034})
    r = translate_nested(mem, regs4(), ept(execonly=True, advanced_info=True), access(VA4))
    check(r, fault="ept_violation", exit_qual=0x7A1)


def test_qual_bit11_guest_execute_disable():
    # R4: bit 11 = 1 when the guest's accumulated rights lack EXEC (PTE XD=1, NXE=1).
    guest = {**GUEST4, 0x4020: XD | 0x5067}
    mem = nested_mem(guest=guest, over={ept_pte(5): 0x105034})
    r = translate_nested(mem, regs4(), ept(execonly=True, advanced_info=True), access(VA4))
    check(r, fault="ept_violation", exit_qual=0xFA1, acc=7)


def test_qual_bits9_10_clear_for_supervisor_read_only_guest_page():
    # R4: guest PTE P|A (supervisor, read-only) -> bits 9 and 10 are 0, bit 11 0.
    guest = {**GUEST4, 0x4020: 0x5021}
    mem = nested_mem(guest=guest, over={ept_pte(5): 0x105034})
    r = translate_nested(mem, regs4(), ept(execonly=True, advanced_info=True), access(VA4))
    check(r, fault="ept_violation", exit_qual=0x1A1, acc=9)


@BOTH
@pytest.mark.parametrize("cpl3", [True, False])
def test_mbec_user_page_fetch_needs_xu(sem, cpl3):
    # SDM MBEC: a fetch from a user-mode linear address (guest U/S=1) needs XU, whatever CPL;
    # leaf R|XS: 0x4 | 0x8 | 0x20 | 0x180 (+ 0x200 | 0x400 advanced, hardware only).
    mem = nested_mem(nonleaf=0x407, over={ept_pte(5): 0x105035})
    r = translate_nested(mem, regs4(), ept(mbec=True), access(VA4, FETCH, user=cpl3), sem)
    check(r, fault="ept_violation", stage="final",
          exit_qual=0x7AC if sem == "hardware" else 0x1AC, tdp_acc=9)


def test_mbec_supervisor_page_fetch_needs_xs_bit6_set():
    # MBEC, guest U/S=0: supervisor fetch needs XS; leaf R|XU -> bits 2, 3, 6 (XU AND), 7, 8,
    # advanced: bit 9 = 0 (supervisor), bit 10 = 1 (writable), bit 11 = 0: 0x5CC.
    guest = {**GUEST4, 0x4020: 0x5063}
    mem = nested_mem(guest=guest, nonleaf=0x407, over={ept_pte(5): 0x105431})
    r = translate_nested(mem, regs4(), ept(mbec=True), access(VA4, FETCH))
    check(r, fault="ept_violation", exit_qual=0x5CC, tdp_acc=5, acc=11)
    mem = nested_mem(guest=guest, nonleaf=0x407, over={ept_pte(5): 0x105435})
    r = translate_nested(mem, regs4(), ept(mbec=True), access(VA4, FETCH))
    check(r, fault="none", hpa=0x105123, tdp_acc=13)


def test_mbec_user_fetch_ok_with_xu_everywhere():
    # MBEC: XU AND over all levels = 1 -> a user-mode fetch of an R|XU page succeeds.
    mem = nested_mem(nonleaf=0x407, over={ept_pte(5): 0x105431})
    r = translate_nested(mem, regs4(), ept(mbec=True), access(VA4, FETCH, user=True))
    check(r, fault="none", hpa=0x105123, tdp_acc=5)


# =======================================================================================
# Exit qualification, guest paging-structure accesses (bit 8 = 0), K1, K2
# =======================================================================================
@pytest.mark.parametrize("sem, eptp, qual, fault_gpa", [
    ("hardware", EPTP4, 0xA1, 0x2010),     # SDM: table read -> bit 0 only; full GPA
    ("hardware", EPTP4_AD, 0xA3, 0x2010),  # SDM: EPT A/D on -> table accesses are writes: 0|1
    ("kvm", EPTP4, 0xA3, 0x2000),          # K1: always WRITE; K2: page-aligned GPA
])
def test_qual_table_access(sem, eptp, qual, fault_gpa):
    # Guest PDPT page (GPA 0x2000) is execute-only in EPT: the level-3 table read faults.
    mem = nested_mem(over={ept_pte(2): 0x102034})
    r = translate_nested(mem, regs4(), ept(eptp, execonly=True), access(VA4), sem)
    check(r, fault="ept_violation", stage="table", guest_level=3, exit_qual=qual,
          fault_gpa=fault_gpa, fault_level=1, entry_addr=0x13010, entry_value=0x102034,
          gpa=None, hpa=None, refs=9, trace=[(4, 0x1008, 0x2027)], tdp_leaf_level=0,
          leaf_level=0, acc=0, error_code=0)


@pytest.mark.parametrize("sem, eptp, fault", [
    ("hardware", EPTP4, "none"),           # K1 hardware: data read of a table whose A/D are set
    ("hardware", EPTP4_AD, "ept_violation"),   # SDM: with EPT A/D the access is a write
    ("kvm", EPTP4, "ept_violation"),       # K1: KVM always needs W
])
def test_k1_read_only_guest_table_page(sem, eptp, fault):
    mem = nested_mem(over={ept_pte(1): 0x101031})
    r = translate_nested(mem, regs4(), ept(eptp), access(VA4), sem)
    if fault == "none":
        check(r, fault="none", hpa=0x105123, refs=24)
    else:
        check(r, fault="ept_violation", stage="table", guest_level=4, exit_qual=0x8B,
              fault_gpa=0x1008 if sem == "hardware" else 0x1000, fault_level=1,
              entry_addr=0x13008, entry_value=0x101031, refs=4, gpa=None)


@pytest.mark.parametrize("sem, fault_gpa", [("hardware", 0x5123), ("kvm", 0x5000)])
def test_k2_fault_gpa(sem, fault_gpa):
    # K2: hardware reports the full final GPA; KVM gfn_to_gpa(gfn), page-aligned.
    mem = nested_mem(over={ept_pte(5): 0})
    r = translate_nested(mem, regs4(), ept(), access(VA4), sem)
    check(r, fault="ept_violation", fault_gpa=fault_gpa, gpa=0x5123)


# =======================================================================================
# Guest A/D-flag writes (hardware, EPT A/D off: R2, R3, R12)
# =======================================================================================
def test_ad_write_check_accessed_flag():
    # R2/R3: PML4E A=0 on an EPT read-only page: the A write needs W -> violation, bits 0|1,
    # prot R, bit 7, bit 8 = 0; fault GPA = the entry's GPA; after the final GPA (24 refs).
    guest = {**GUEST4, 0x1008: 0x2007}
    mem = nested_mem(guest=guest, over={ept_pte(1): 0x101031})
    r = translate_nested(mem, regs4(), ept(), access(VA4))
    check(r, fault="ept_violation", stage="table", guest_level=4, exit_qual=0x8B,
          fault_gpa=0x1008, fault_level=1, entry_addr=0x13008, entry_value=0x101031,
          gpa=0x5123, hpa=None, refs=24, tdp_leaf_level=1, tdp_page_size=4096, tdp_acc=11,
          effective_page_size=0, leaf_level=1)


@pytest.mark.parametrize("kind, fault", [(WRITE, "ept_violation"), (READ, "none")])
def test_ad_write_check_dirty_flag(kind, fault):
    # R2: the leaf needs D only on a write: PTE A=1 D=0 on an EPT read-only PT page.
    guest = {**GUEST4, 0x4020: 0x5027}
    mem = nested_mem(guest=guest, over={ept_pte(4): 0x104031})
    r = translate_nested(mem, regs4(), ept(), access(VA4, kind))
    if fault == "none":
        check(r, fault="none", hpa=0x105123, refs=24)
    else:
        check(r, fault="ept_violation", stage="table", guest_level=1, exit_qual=0x8B,
              fault_gpa=0x4020, entry_addr=0x13020, entry_value=0x104031, refs=24)


def test_ad_write_check_top_level_first():
    # R2: top level first: PML4E and PTE both need A on read-only pages -> level 4 reported.
    guest = {**GUEST4, 0x1008: 0x2007, 0x4020: 0x5047}
    mem = nested_mem(guest=guest, over={ept_pte(1): 0x101031, ept_pte(4): 0x104031})
    r = translate_nested(mem, regs4(), ept(), access(VA4))
    check(r, fault="ept_violation", guest_level=4, fault_gpa=0x1008)


def test_ad_write_check_after_final_gpa():
    # R2: the A/D check runs only after the final GPA translated: a final fault wins.
    guest = {**GUEST4, 0x1008: 0x2007}
    mem = nested_mem(guest=guest, over={ept_pte(1): 0x101031, ept_pte(5): 0})
    r = translate_nested(mem, regs4(), ept(), access(VA4))
    check(r, fault="ept_violation", stage="final", exit_qual=0x181, fault_gpa=0x5123)


def test_ad_write_check_passes_on_writable_table_page():
    # R2: A=0 everywhere but every EPT page writable -> success (flags are not modelled here).
    guest = {0x1008: 0x2007, 0x2010: 0x3007, 0x3018: 0x4007, 0x4020: 0x5007}
    r = translate_nested(nested_mem(guest=guest), regs4(), ept(), access(VA4, WRITE))
    check(r, fault="none", hpa=0x105123, refs=24)


# =======================================================================================
# EPT misconfiguration vs violation
# =======================================================================================
@BOTH
@pytest.mark.parametrize("leaf", [
    0x105017,    # 6.3: memory type 2 (reserved)
    0x10501F,    # 6.3: memory type 3 (reserved)
    0x10503F,    # 6.3: memory type 7 (reserved)
    0x105032,    # 6.3: XWR = 010 (write-only)
    0x105036,    # 6.3: XWR = 110 (write+execute without read)
    0x105034,    # 6.3: XWR = 100 without execute-only support
    0x100_0010_5037,   # 6.2: bit 40 with host MAXPHYADDR 40
])
def test_misconfig_final_leaf(sem, leaf):
    # SDM 29.3.3.1 / R6: misconfiguration, exit qualification 0, GPA reported.
    mem = nested_mem(over={ept_pte(5): leaf})
    r = translate_nested(mem, regs4(maxphyaddr=40), ept(maxphyaddr=40), access(VA4), sem)
    check(r, fault="ept_misconfig", stage="final", exit_qual=0, error_code=0,
          fault_level=1, entry_addr=0x13028, entry_value=leaf, refs=24, gpa=0x5123,
          fault_gpa=0x5123 if sem == "hardware" else 0x5000, tdp_leaf_level=0)


@pytest.mark.parametrize("leaf", [0x105007, 0x10500F, 0x105027, 0x10502F, 0x105037,
                                  0x1050B7, 0x105077])
def test_valid_leaf_memtypes_and_ignored_bits(leaf):
    # 6.3: memory types 0, 1, 4, 5, 6 are valid; 6.2: bit 7 ignored and IPAT allowed at level 1.
    r = translate_nested(nested_mem(over={ept_pte(5): leaf}), regs4(), ept(), access(VA4))
    check(r, fault="none", hpa=0x105123)


@pytest.mark.parametrize("over, level, refs, tdp", [
    ({0x10000: 0x1100F}, 4, 1, {}),        # 6.2: PML4E bits 7:3 reserved (bit 3)
    ({0x10000: 0x11087}, 4, 1, {}),        # 6.2: PML4E bit 7 reserved
    ({0x10000: 0x2000_0001_1007}, 4, 1, dict(maxphyaddr=40)),  # 6.2: bit 45 >= MAXPHYADDR 40
    ({0x11000: 0x12047}, 3, 2, {}),        # 6.2: non-leaf PDPTE IPAT (bit 6) reserved
    ({0x12000: 0x13037}, 2, 3, {}),        # 6.2: non-leaf PDE memory type reserved
    ({0x11000: 0x000000B7}, 3, 2, dict(huge_level=2)),   # 6.2: 1 GiB leaf above huge_level
    ({0x11000: 0x000010B7}, 3, 2, {}),     # 6.2: 1 GiB leaf bits 29:12 reserved (bit 12)
    ({0x12000: 0x001000B7}, 2, 3, {}),     # 6.2: 2 MiB leaf bits 20:12 reserved (bit 20)
    ({0x12000: 0x002000B7}, 2, 3, dict(huge_level=1)),   # 6.2: 2 MiB leaf above huge_level
    ({0x11000: 0x12002}, 3, 2, {}),        # 6.3: XWR = 010 in a non-leaf entry
])
def test_misconfig_upper_levels_on_table_access(over, level, refs, tdp):
    # SDM 29.3.3.1: checked at every level -> misconfiguration on the first guest table access.
    entries = nested_mem(over=over)
    r = translate_nested(entries, regs4(maxphyaddr=40), ept(**tdp), access(VA4))
    check(r, fault="ept_misconfig", stage="table", guest_level=4, exit_qual=0,
          fault_level=level, entry_value=over[next(iter(over))], refs=refs,
          fault_gpa=0x1008, gpa=None)


@pytest.mark.parametrize("pml5e, fault", [
    (0x14087, "ept_misconfig"),   # 6.2: PML5E bit 7 reserved
    (0x14047, "ept_misconfig"),   # 6.2: PML5E bits 7:3 reserved (IPAT position)
    (0x14007, "none"),
])
def test_ept_pml5e_reserved(pml5e, fault):
    t = tdp_tables()
    t[0x10000] = pml5e
    t[0x14000] = 0x11007
    r = tdp_translate(memory(t), ept(0x10000 | 4 << 3 | 6), 0x5123, dict(kind=READ))
    check(r, fault=fault, refs=1 if fault != "none" else 5,
          fault_level=5 if fault != "none" else 0)


def test_not_present_beats_reserved_bits():
    # SDM 29.3.3: an entry with bits 2:0 = 0 is not present -> violation, not misconfiguration.
    r = translate_nested(nested_mem(over={0x10000: 0x110F8}), regs4(), ept(), access(VA4))
    check(r, fault="ept_violation", stage="table", exit_qual=0x81, fault_level=4, refs=1)


def test_execute_only_page_fetch():
    # SDM 29.3.3.1: XWR=100 is legal with execute-only support: a fetch succeeds.
    mem = nested_mem(over={ept_pte(5): 0x105034})
    r = translate_nested(mem, regs4(), ept(execonly=True), access(VA4, FETCH))
    check(r, fault="none", hpa=0x105123, tdp_acc=8)


@pytest.mark.parametrize("mbec, execonly, kind, user, fault, qual", [
    (True, False, FETCH, True, "ept_misconfig", 0),   # R5/K11: XU counts as X -> 100 w/o exec-only
    (True, True, FETCH, True, "none", 0),             # exec-only support: a user fetch succeeds
    (True, True, FETCH, False, "ept_violation", 0x5C4),  # supervisor-mode fetch needs XS:
    #   0x4 | bit 6 (XU) | 0x180 | adv. bit 10 (W) ; guest PTE supervisor (U/S=0)
    (False, False, READ, False, "ept_violation", 0x181),  # no MBEC: bit 10 ignored -> not present
])
def test_xu_only_entry(mbec, execonly, kind, user, fault, qual):
    guest = GUEST4 if user else {**GUEST4, 0x4020: 0x5063}
    mem = nested_mem(guest=guest, nonleaf=0x407, over={ept_pte(5): 0x105430})
    r = translate_nested(mem, regs4(), ept(mbec=mbec, execonly=execonly),
                         access(VA4, kind, user=user))
    check(r, fault=fault, exit_qual=qual)


# =======================================================================================
# NPT
# =======================================================================================
@BOTH
def test_npt_4_over_4_success(sem):
    # APM 15.25.5: every guest table and the final GPA go through the 4-level NPT: 24 refs.
    r = translate_nested(nested_mem(leaf=0x7), regs4(vendor="amd"), npt(), access(VA4), sem)
    check(r, fault="none", stage="none", gpa=0x5123, hpa=0x105123, refs=24, trace=TRACE4,
          tdp_leaf_level=1, tdp_page_size=4096, tdp_acc=15, effective_page_size=4096)
    assert r["tdp_trace"][-1] == (0, 1, 0x13028, 0x105007)


@BOTH
@pytest.mark.parametrize("leaf, code", [
    (0x101005, 0x7),      # APM: table walks are writes: NPT W=0 -> P|W|U
    (0x101003, 0x7),      # APM: table walks are user accesses: NPT U=0 -> P|W|U
    (0x101000, 0x6),      # not present: W|U (P=0)
])
def test_npt_table_access(sem, leaf, code):
    # #NPF on a guest paging-structure access: EXITINFO1 bit 33; EXITINFO2 the entry's GPA.
    mem = nested_mem(leaf=0x7, over={ept_pte(1): leaf})
    r = translate_nested(mem, regs4(vendor="amd"), npt(), access(VA4), sem)
    check(r, fault="npf", stage="table", guest_level=4, error_code=BIT33 | code,
          exit_qual=0, fault_gpa=0x1008 if sem == "hardware" else 0x1000, fault_level=1,
          entry_addr=0x13008, entry_value=leaf, refs=4, gpa=None)


def test_npt_gmet_table_access_to_supervisor_page_allowed():
    # R9/R17: under GMET table accesses stay user accesses, but U=0 no longer blocks data.
    mem = nested_mem(leaf=0x7, over={ept_pte(1): 0x101003})
    r = translate_nested(mem, regs4(vendor="amd"), npt(gmet=True), access(VA4))
    check(r, fault="none", hpa=0x105123, refs=24)


@BOTH
@pytest.mark.parametrize("leaf, kind, code", [
    (0x105003, READ, 0x5),     # 8: final accesses are user accesses without GMET: P|U
    (0x105005, WRITE, 0x7),    # 5.2: write to NPT W=0: P|W|U
    (XD | 0x105007, FETCH, 0x15),  # 5.2: NX with L1 NXE=1: P|U|I/D
    (0x105000, READ, 0x4),     # not present: U only
])
def test_npt_final_error_codes(sem, leaf, kind, code):
    # #NPF on the final GPA: EXITINFO1 bit 32; EXITINFO2 = the GPA (K2: page-aligned in KVM).
    mem = nested_mem(leaf=0x7, over={ept_pte(5): leaf})
    r = translate_nested(mem, regs4(vendor="amd"), npt(), access(VA4, kind), sem)
    check(r, fault="npf", stage="final", error_code=BIT32 | code, exit_qual=0,
          fault_gpa=0x5123 if sem == "hardware" else 0x5000, gpa=0x5123, fault_level=1,
          entry_addr=0x13028, entry_value=leaf, refs=24)


@BOTH
def test_npt_reserved_nx_without_l1_nxe(sem):
    # 6.1: bit 63 reserved when L1 EFER.NXE=0: P|RSVD|U, bit 32 (read: no I/D).
    mem = nested_mem(leaf=0x7, over={ept_pte(5): XD | 0x105007})
    r = translate_nested(mem, regs4(vendor="amd"), npt(efer=LME | LMA), access(VA4), sem)
    check(r, fault="npf", stage="final", error_code=BIT32 | 0xD)


@pytest.mark.parametrize("kind, user", [(READ, False), (WRITE, False), (FETCH, True)])
def test_npt_gmet_supervisor_page_allowed(kind, user):
    # R9: GMET: U=0 no longer blocks reads or writes, and never blocks a CPL3 fetch.
    mem = nested_mem(leaf=0x7, over={ept_pte(5): 0x105003})
    r = translate_nested(mem, regs4(vendor="amd"), npt(gmet=True),
                         access(VA4, kind, user=user))
    check(r, fault="none", hpa=0x105123, tdp_acc=11)


@BOTH
def test_npt_gmet_supervisor_fetch_from_user_page(sem):
    # R9: GMET: a CPL<3 fetch from an NPT U=1 page faults; US = CPL==3 = 0: P|I/D, bit 32.
    r = translate_nested(nested_mem(leaf=0x7), regs4(vendor="amd"), npt(gmet=True),
                         access(VA4, FETCH), sem)
    check(r, fault="npf", stage="final", error_code=BIT32 | 0x11, tdp_acc=15)


@pytest.mark.parametrize("sem, l1_smep, code", [
    ("hardware", False, 0x14),   # K7: hardware sets I/D for any final fetch, NX or not
    ("kvm", False, 0x04),        # K7: KVM only with L1 EFER.NXE or SMEP
    ("kvm", True, 0x14),         # K7: KVM with L1 SMEP
])
def test_k7_npf_id_bit(sem, l1_smep, code):
    mem = nested_mem(leaf=0x7, over={ept_pte(5): 0})
    r = translate_nested(mem, regs4(vendor="amd"), npt(efer=LME | LMA, l1_smep=l1_smep),
                         access(VA4, FETCH), sem)
    check(r, fault="npf", stage="final", error_code=BIT32 | code)


# =======================================================================================
# R10 / K12: guest PAE under NPT
# =======================================================================================
VAPAE = 0x8060_4567                 # PDPTE 2, PD index 3, PT index 4, offset 0x567
GUESTPAE = {0x1030: 0x2001, 0x2018: 0x3027, 0x3020: 0x4067}
REGSPAE = dict(cr0=PG | WP | PE, cr3=0x1020, cr4=PAE, efer=NXE, maxphyaddr=36, vendor="amd")


def test_r10_pae_guest_over_npt_19_refs():
    # R10: PDPTE read through the NPT on every walk: 3 x (4 NPT + 1) + 4 final = 19 refs.
    r = translate_nested(nested_mem(guest=GUESTPAE, leaf=0x7), REGSPAE, npt(), access(VAPAE))
    check(r, fault="none", gpa=0x4567, hpa=0x104567, refs=19, leaf_level=1,
          trace=[(3, 0x1030, 0x2001), (2, 0x2018, 0x3027), (1, 0x3020, 0x4067)])
    assert r["tdp_trace"][:4] == [(3, 4, 0x10000, 0x11007), (3, 3, 0x11000, 0x12007),
                                  (3, 2, 0x12000, 0x13007), (3, 1, 0x13008, 0x101007)]


def test_k12_pae_guest_over_npt_kvm_uses_registers():
    # K12: KVM uses its PDPTR cache: 2 x 5 + 4 = 14 refs; the register is not re-read.
    regs = dict(REGSPAE, pdptes=[0, 0, 0x2001, 0])
    r = translate_nested(nested_mem(guest=GUESTPAE, leaf=0x7), regs, npt(), access(VAPAE),
                         "kvm")
    check(r, fault="none", hpa=0x104567, refs=14,
          trace=[(2, 0x2018, 0x3027), (1, 0x3020, 0x4067)])


@pytest.mark.parametrize("pdpte, kvm_walks_on", [
    (0x2003, True), (0x2021, True), (XD | 0x2001, True),
    (0x10_0000_2001, False),     # bit 36 is an address bit to KVM: PD at GPA 0x10_0000_2000
])
def test_r10_pae_pdpte_reserved(pdpte, kvm_walks_on):
    # R10: bits 2:1, 8:5, 63:M (M=36) of a present PDPTE -> #PF P|RSVD at level 3, 5 refs.
    guest = {**GUESTPAE, 0x1030: pdpte}
    r = translate_nested(nested_mem(guest=guest, leaf=0x7), REGSPAE, npt(), access(VAPAE))
    check(r, fault="pf", stage="guest", error_code=0x9, cr2=VAPAE, fault_level=3,
          entry_addr=0x1030, entry_value=pdpte, refs=5, gpa=None)
    # K12: KVM checks only P of its register: the same PDPTE walks on.
    if not kvm_walks_on:
        return
    regs = dict(REGSPAE, pdptes=[0, 0, pdpte, 0])
    r = translate_nested(nested_mem(guest=GUESTPAE, leaf=0x7), regs, npt(), access(VAPAE),
                         "kvm")
    check(r, fault="none", hpa=0x104567, refs=14)


def test_r10_pae_pdpte_not_present_and_npf():
    # R10: PDPTE P=0 -> #PF (P=0) at level 3; the PDPTE read is a user write to the NPT.
    guest = {**GUESTPAE, 0x1030: 0x2000}
    r = translate_nested(nested_mem(guest=guest, leaf=0x7), REGSPAE, npt(),
                         access(VAPAE, WRITE, user=True))
    check(r, fault="pf", stage="guest", error_code=0x6, fault_level=3, refs=5)
    mem = nested_mem(guest=GUESTPAE, leaf=0x7, over={ept_pte(1): 0x101005})
    r = translate_nested(mem, REGSPAE, npt(), access(VAPAE))
    check(r, fault="npf", stage="table", guest_level=3, error_code=BIT33 | 0x7,
          fault_gpa=0x1030, refs=4)


def test_pae_guest_under_ept_needs_pdpte_registers():
    # 7.2/R11: Intel PDPTEs are registers: required; 2 x 5 + 4 = 14 refs.
    regs = dict(REGSPAE, vendor="intel")
    with pytest.raises(ValueError):
        translate_nested(nested_mem(guest=GUESTPAE), regs, ept(), access(VAPAE))
    r = translate_nested(nested_mem(guest=GUESTPAE), dict(regs, pdptes=[0, 0, 0x2001, 0]),
                         ept(), access(VAPAE))
    check(r, fault="none", hpa=0x104567, refs=14)


# =======================================================================================
# R18: guest paging off under MBEC
# =======================================================================================
@pytest.mark.parametrize("leaf, fault, qual", [
    (0x105035, "ept_violation", 0x7AC),   # R18: user-mode: needs XU; adv. bits 9, 10 (ACC_ALL)
    (0x105431, "none", 0),                # R18: R|XU suffices
])
def test_r18_paging_off_fetch_is_user_mode(leaf, fault, qual):
    regs = dict(cr0=PE, cr3=0, cr4=0, efer=0)
    mem = nested_mem(nonleaf=0x407, over={ept_pte(5): leaf})
    r = translate_nested(mem, regs, ept(mbec=True), access(0x5123, FETCH))
    check(r, fault=fault, exit_qual=qual, gpa=0x5123, refs=4, leaf_level=0, page_size=0,
          acc=15, pkey=0, trace=[], effective_page_size=4096 if fault == "none" else 0)


def test_paging_off_over_2m_ept_effective_4k():
    # DESIGN: effective page size = min(4096 with paging off, TDP page size).
    t = {0x10000: 0x11007, 0x11000: 0x12007, 0x12000: 0x2000B7}
    r = translate_nested(memory(t), dict(cr0=PE, cr3=0, cr4=0, efer=0), ept(),
                         access(0x5123))
    check(r, fault="none", hpa=0x205123, refs=3, tdp_page_size=0x200000,
          effective_page_size=4096)


# =======================================================================================
# Unbacked memory (K13)
# =======================================================================================
SMALL = ((0, 0x200000),)             # 2 MiB of host memory


def test_unbacked_guest_entry():
    # K13: guest PDPT page maps to HPA 0x402000 (unbacked): hardware UNBACKED, stage table.
    mem = nested_mem(over={ept_pte(2): 0x402037}, backed=SMALL)
    r = translate_nested(mem, regs4(), ept(), access(VA4))
    check(r, fault="unbacked", stage="table", guest_level=3, fault_level=3,
          entry_addr=0x402010, entry_value=0, fault_gpa=0x2010, refs=9, gpa=None)
    # K13: KVM reads it as a not-present guest entry: #PF P=0, entry address = GPA.
    r = translate_nested(mem, regs4(), ept(), access(VA4), "kvm")
    check(r, fault="pf", stage="guest", error_code=0, cr2=VA4, fault_level=3,
          entry_addr=0x2010, entry_value=0, refs=9, guest_level=0, fault_gpa=None)


def test_unbacked_ept_table():
    # K13: EPT PT at HPA 0x400000 (unbacked): hardware UNBACKED at EPT level 1 (3 refs);
    # KVM: violation; K1 bits 0|1, bits 5:3 = AND of the 3 entries read (RWX), bit 7: 0xBB.
    mem = nested_mem(over={0x12000: 0x400007}, backed=SMALL)
    r = translate_nested(mem, regs4(), ept(), access(VA4))
    check(r, fault="unbacked", stage="table", guest_level=4, fault_level=1,
          entry_addr=0x400008, entry_value=0, fault_gpa=0x1008, refs=3, exit_qual=0)
    r = translate_nested(mem, regs4(), ept(), access(VA4), "kvm")
    check(r, fault="ept_violation", stage="table", guest_level=4, fault_level=1,
          entry_addr=0x400008, entry_value=0, fault_gpa=0x1000, refs=3, exit_qual=0xBB)


def test_unbacked_final_hpa():
    # K13: hardware reads the final HPA -> UNBACKED (stage final, hpa kept); KVM never reads it.
    mem = nested_mem(over={ept_pte(5): 0x405037}, backed=SMALL)
    r = translate_nested(mem, regs4(), ept(), access(VA4))
    check(r, fault="unbacked", stage="final", gpa=0x5123, hpa=0x405123, fault_gpa=0x5123,
          fault_level=0, entry_addr=0x405123, entry_value=0, refs=24, effective_page_size=0,
          tdp_leaf_level=1)
    r = translate_nested(mem, regs4(), ept(), access(VA4), "kvm")
    check(r, fault="none", stage="none", hpa=0x405123, effective_page_size=4096)


# =======================================================================================
# Guest faults pass through unchanged
# =======================================================================================
@BOTH
def test_guest_not_present_pte(sem):
    # SDM 4.7: guest #PF: 4 guest entries + 4 EPT walks = 20 refs; stage guest.
    guest = {**GUEST4, 0x4020: 0x5066}
    r = translate_nested(nested_mem(guest=guest), regs4(), ept(), access(VA4, WRITE, True),
                         sem)
    check(r, fault="pf", stage="guest", error_code=0x6, cr2=VA4, fault_level=1,
          entry_addr=0x4020, entry_value=0x5066, refs=20, gpa=None, hpa=None,
          fault_gpa=None, exit_qual=0, tdp_leaf_level=0)


@BOTH
def test_guest_non_canonical(sem):
    # K8: #GP before any walk, 0 refs.
    r = translate_nested(nested_mem(), regs4(), ept(), access(1 << 47), sem)
    check(r, fault="gp", stage="guest", refs=0, trace=[], tdp_trace=[])


# =======================================================================================
# tdp_translate (one GPA) and configuration errors
# =======================================================================================
@BOTH
def test_tdp_translate_ept(sem):
    # One 4-level EPT walk: 4 refs, guest fields zero.
    r = tdp_translate(nested_mem(), ept(), 0x5123, dict(kind=WRITE), sem)
    assert r == dict(
        fault="none", stage="none", gpa=0x5123, hpa=0x105123, error_code=0, exit_qual=0,
        fault_gpa=None, cr2=None, fault_level=0, entry_addr=0x13028, entry_value=0x105037,
        guest_level=0, leaf_level=0, page_size=0, acc=0, pkey=0, tdp_leaf_level=1,
        tdp_page_size=4096, tdp_acc=11, effective_page_size=4096, refs=4, trace=[],
        tdp_trace=[(0, 4, 0x10000, 0x11007), (0, 3, 0x11000, 0x12007),
                   (0, 2, 0x12000, 0x13007), (0, 1, 0x13028, 0x105037)])


def test_tdp_translate_table_access_with_ept_ad():
    # SDM: EPT A/D on -> a paging-structure access is a write: bits 0|1, prot R, bit 7: 0x8B.
    r = tdp_translate(nested_mem(over={ept_pte(5): 0x105031}), ept(EPTP4_AD), 0x5010,
                      dict(kind=READ, table=True))
    check(r, fault="ept_violation", stage="table", exit_qual=0x8B, fault_gpa=0x5010, refs=4)


@pytest.mark.parametrize("sem, fault, code", [
    ("hardware", "npf", BIT32 | 0xD),   # PAE NPT PDPTE bit 1 reserved: P|RSVD|U, bit 32
    ("kvm", "none", 0),                 # KVM checks only P of a PAE NPT PDPTE
])
def test_tdp_translate_pae_npt(sem, fault, code):
    # 2.3/8: PAE NPT: PDPTE at (nCR3 & ~0x1F) + 8*idx read on every walk: 1 + 2 refs.
    entries = {0x10020: 0x11003, 0x11000: 0x12007, 0x12028: 0x105007}
    tdp = dict(kind="npt", ncr3=0x10020, cr4=PAE, efer=0)
    r = tdp_translate(memory(entries), tdp, 0x5123, dict(kind=READ, user=True), sem)
    check(r, fault=fault, error_code=code, refs=1 if fault == "npf" else 3)
    if fault == "none":
        assert r["hpa"] == 0x105123 and r["tdp_trace"][0] == (0, 3, 0x10020, 0x11003)


@pytest.mark.parametrize("tdp", [
    dict(kind="ept", eptp=0x10000 | 1 << 3 | 6),     # R8: walk length 2
    dict(kind="ept", eptp=0x10000 | 3 << 3 | 1),     # R8: memory type 1
    dict(kind="ept", eptp=EPTP4 | 1 << 7),           # R8: bits 11:7
    dict(kind="npt", ncr3=0x10000, cr4=0, efer=0),   # 32-bit NPT not supported
])
def test_bad_tdp_config(tdp):
    with pytest.raises(ValueError):
        tdp_translate(nested_mem(), tdp, 0x5123, dict(kind=READ))


def test_gpa_beyond_reach():
    # R7: a 4-level EPT reaches 48 bits; a guest MAXPHYADDR of 52 over it is rejected.
    with pytest.raises(ValueError):
        tdp_translate(nested_mem(), ept(), 1 << 48, dict(kind=READ))
    with pytest.raises(ValueError):
        translate_nested(nested_mem(), regs4(maxphyaddr=52), ept(), access(VA4))


# =======================================================================================
# Cross-check (not golden): over an identity EPT the guest fields equal reference.translate
# =======================================================================================
IDENTITY = {0x10000: 0x11007, 0x11000: 0xB7 | 0 << 30, 0x11008: 0xB7 | 1 << 30,
            0x11010: 0xB7 | 2 << 30, 0x11018: 0xB7 | 3 << 30}   # GPA 0-4G = HPA, 1 GiB leaves


@BOTH
@pytest.mark.parametrize("guest, kind, user", [
    (GUEST4, READ, False),
    ({**GUEST4, 0x3018: 0x4025}, WRITE, True),        # U write to W=0 -> P|W|U
    ({**GUEST4, 0x2010: 0x3027 | 1 << 40}, READ, False),   # reserved (M=40)
    ({**GUEST4, 0x4020: XD | 0x5067}, FETCH, False),  # NX
    ({**GUEST4, 0x3018: 0x2000E7}, FETCH, True),      # 2 MiB page
])
def test_identity_ept_matches_reference(sem, guest, kind, user):
    entries = dict(IDENTITY)
    entries.update(guest)
    read = memory(entries)
    regs, acc = regs4(maxphyaddr=40), access(VA4, kind, user)
    r = translate_nested(read, regs, ept(), acc, sem)
    g = reference.translate(read, regs, acc, sem)
    for key in ("fault", "gpa", "error_code", "cr2", "fault_level", "entry_addr",
                "entry_value", "leaf_level", "page_size", "acc", "pkey", "trace"):
        assert r[key] == g[key], key
    assert r["refs"] == g["refs"] * 3 + (2 if g["fault"] == "none" else 0)
