"""Golden cases, worked by hand from the Intel SDM Vol. 3 ch. 4
(and the readings in ../shared/reference/kvm-vs-hardware.md).

Each case builds a tiny dict-backed physical memory, states the expected values literally,
and carries a one-line comment naming the rule. The expected numbers were derived on paper,
not by running the walker.

Standard 4-level layout (CR3 = 0x1000), VA4 = 0x0000_0080_8060_4123:
    PML4 index 1, PDPT index 2, PD index 3, PT index 4, offset 0x123
    PML4E 0x1008 = 0x2007 -> PDPT 0x2000; PDPTE 0x2010 = 0x3007 -> PD 0x3000
    PDE   0x3018 = 0x4007 -> PT 0x4000;   PTE   0x4020 = 0x5007 -> page 0x5000
    (0x7 = P|W|U; all entries accessed A=0, dirty D=0)
"""
from __future__ import annotations

import pytest

import sys

import kernel_adapter
from dictmem import FOUR_GIB, DictMemory, memory  # noqa: F401
import reference
from reference import GPFault, UnbackedError, load_pdptes, translate  # noqa: F401 (patched below)

KEYS = {"fault", "gpa", "error_code", "cr2", "fault_level", "entry_addr", "entry_value",
        "leaf_level", "page_size", "acc", "pkey", "refs", "trace"}

# Register bits.
PE, WP, PG = 1, 1 << 16, 1 << 31
PSE, PAE, LA57, SMEP, SMAP, PKE = 1 << 4, 1 << 5, 1 << 12, 1 << 20, 1 << 21, 1 << 22
LME, LMA, NXE = 1 << 8, 1 << 10, 1 << 11
XD = 1 << 63
READ, WRITE, FETCH = 0, 1, 2




@pytest.fixture(autouse=True, params=["reference", "kernel"])
def implementation(request, monkeypatch):
    """Every golden case runs on the reference walker and on the jitted kernel."""
    mod = sys.modules[__name__]
    if request.param == "reference":
        monkeypatch.setattr(mod, "translate", reference.translate)
        monkeypatch.setattr(mod, "load_pdptes", reference.load_pdptes)
    else:
        monkeypatch.setattr(mod, "translate", kernel_adapter.translate)
        monkeypatch.setattr(mod, "load_pdptes", kernel_adapter.load_pdptes)
    return request.param


def access(addr, kind=READ, user=False, ac=False, implicit=False, stack=False):
    return dict(addr=addr, kind=kind, user=user, ac=ac, implicit=implicit, stack=stack)


def check(result, **expected):
    """Every result has exactly the documented keys; compare the ones stated."""
    assert set(result) - {"ad_writes"} == KEYS
    for key, value in expected.items():
        assert result[key] == value, f"{key}: got {result[key]!r}, expected {value!r}"


BOTH = pytest.mark.parametrize("sem", ["hardware", "kvm"])

# --- 4-level fixtures ------------------------------------------------------------------
VA4 = 0x0000_0080_8060_4123
STD4 = {0x1008: 0x2007, 0x2010: 0x3007, 0x3018: 0x4007, 0x4020: 0x5007}
TRACE4 = [(4, 0x1008, 0x2007), (3, 0x2010, 0x3007), (2, 0x3018, 0x4007), (1, 0x4020, 0x5007)]


def regs4(cr0=PG | WP | PE, cr4=PAE, efer=LME | LMA | NXE, **extra):
    return dict(cr0=cr0, cr3=0x1000, cr4=cr4, efer=efer, **extra)


def mem4(**changes):
    """STD4 with entries replaced: mem4(pte=..., pde=..., pdpte=..., pml4e=...)."""
    where = {"pml4e": 0x1008, "pdpte": 0x2010, "pde": 0x3018, "pte": 0x4020}
    entries = dict(STD4)
    for name, value in changes.items():
        entries[where[name]] = value
    return memory(entries)


# --- 32-bit fixtures: VA32 = 0x0040_2345 -> PD index 1, PT index 2, offset 0x345 -------
VA32 = 0x0040_2345
REGS32 = dict(cr0=PG | WP | PE, cr3=0x1018, cr4=0, efer=0)   # CR3 bits 11:0 ignored


def mem32(pde=0x2007, pte=0x3007, backed=FOUR_GIB):
    return memory({0x1004: pde, 0x2008: pte}, width=4, backed=backed)


# --- PAE fixtures: VAPAE = 0x8060_4567 -> PDPTE 2, PD index 3, PT index 4, offset 0x567 --
VAPAE = 0x8060_4567
REGSPAE = dict(cr0=PG | WP | PE, cr3=0x1020, cr4=PAE, efer=NXE)  # PDPT at CR3 bits 31:5


def mempae(pdpte=0x2001, pde=0x3007, pte=0x4007, extra=None):
    entries = {0x1020: 0, 0x1028: 0, 0x1030: pdpte, 0x1038: 0, 0x2018: pde, 0x3020: pte}
    entries.update(extra or {})
    return memory(entries)


# =======================================================================================
# No paging
# =======================================================================================
@BOTH
def test_no_paging_identity_truncated_to_32_bits(sem):
    # SDM 4.1.1: CR0.PG=0 -> linear address used as physical; R15: truncate to 32 bits.
    r = translate(memory({}), dict(cr0=PE, cr3=0, cr4=0, efer=0),
                  access(0xFFFF_FFFF_0000_1234, WRITE), sem, ad=True)
    assert r == dict(fault="none", gpa=0x1234, error_code=0, cr2=None, fault_level=0,
                     entry_addr=0, entry_value=0, leaf_level=0, page_size=0, acc=15, pkey=0,
                     refs=0, trace=[], ad_writes=[])


def test_no_paging_unbacked_final_address():
    # K13: hardware reads the final address -> UNBACKED at level 0; KVM never reads it.
    read = memory({}, backed=((0, 0x10000),))
    regs = dict(cr0=PE, cr3=0, cr4=0, efer=0)
    r = translate(read, regs, access(0x20000), "hardware")
    check(r, fault="unbacked", gpa=0x20000, error_code=0, cr2=None, fault_level=0,
          entry_addr=0x20000, entry_value=0, acc=15, refs=0)
    r = translate(read, regs, access(0x20000), "kvm")
    check(r, fault="none", gpa=0x20000, entry_addr=0, entry_value=0, acc=15, refs=0)


# =======================================================================================
# 32-bit paging
# =======================================================================================
@BOTH
def test_32bit_4k_page(sem):
    # SDM 4.3: PDE from CR3[31:12] + 4*VA[31:22]; PTE from PDE[31:12] + 4*VA[21:12].
    r = translate(mem32(), REGS32, access(0xABCD_0000_0040_2345), sem)
    assert r == dict(fault="none", gpa=0x3345, error_code=0, cr2=None, fault_level=0,
                     entry_addr=0x2008, entry_value=0x3007, leaf_level=1, page_size=4096,
                     acc=15, pkey=0, refs=2,
                     trace=[(2, 0x1004, 0x2007), (1, 0x2008, 0x3007)])


@BOTH
def test_32bit_pde_bit7_ignored_without_pse(sem):
    # SDM 4.3: with CR4.PSE=0 bit 7 of a PDE is ignored (not reserved, not a 4 MiB page).
    r = translate(mem32(pde=0x2087), REGS32, access(VA32), sem)
    check(r, fault="none", gpa=0x3345, leaf_level=1, page_size=4096, refs=2)


@BOTH
def test_32bit_4m_page_pse36(sem):
    # SDM 4.3: 4 MiB page: PA[31:22] = PDE[31:22], PA[35:32] = PDE[16:13] (here 0b0101).
    read = mem32(pde=0x00C0_A087, backed=FOUR_GIB + ((0x5_0000_0000, 0x5_0100_0000),))
    r = translate(read, dict(REGS32, cr4=PSE), access(VA32), sem)
    check(r, fault="none", gpa=0x5_00C0_2345, leaf_level=2, page_size=0x40_0000, acc=15,
          entry_addr=0x1004, entry_value=0x00C0_A087, refs=1, trace=[(2, 0x1004, 0x00C0_A087)])


def test_32bit_4m_page_pse36_bit17_hardware_vs_kvm():
    # K6/R14: MAXPHYADDR=52 -> M'=40, PDE[20:13] = PA[39:32], so bit 17 is PA bit 36;
    # KVM: PDE[21:17] reserved.
    read = mem32(pde=0x00C2_0087, backed=FOUR_GIB + ((0x10_0000_0000, 0x10_0100_0000),))
    regs = dict(REGS32, cr4=PSE)
    r = translate(read, regs, access(VA32), "hardware")
    check(r, fault="none", gpa=0x10_00C0_2345, leaf_level=2, refs=1)
    r = translate(read, regs, access(VA32), "kvm")
    check(r, fault="pf", gpa=None, error_code=0x9, cr2=VA32, fault_level=2, entry_addr=0x1004,
          entry_value=0x00C2_0087, leaf_level=0, page_size=0, acc=0, refs=1)


@pytest.mark.parametrize("maxphyaddr, pde", [
    (36, 0x00C2_0087),   # M'=36: bits 21:17 reserved, bit 17 set
    (40, 0x00E0_0087),   # M'=40: bit 21 reserved
    (52, 0x00E0_0087),   # M'=min(52,40)=40: bit 21 reserved
])
def test_32bit_4m_page_pse36_reserved_hardware(maxphyaddr, pde):
    # R14: bits 21:(M'-19) of a 4 MiB PDE are reserved -> #PF P|RSVD at level 2.
    r = translate(mem32(pde=pde), dict(REGS32, cr4=PSE, maxphyaddr=maxphyaddr), access(VA32))
    check(r, fault="pf", error_code=0x9, fault_level=2, entry_addr=0x1004, entry_value=pde,
          refs=1, cr2=VA32)


@BOTH
@pytest.mark.parametrize("pde, pte, level, entry, refs", [
    (0x2006, 0x3007, 2, (0x1004, 0x2006), 1),
    (0x2007, 0x3006, 1, (0x2008, 0x3006), 2),
])
def test_32bit_not_present(sem, pde, pte, level, entry, refs):
    # SDM 4.7: P=0 -> #PF with P=0; W and U/S from the access (user write -> 0x6).
    r = translate(mem32(pde, pte), REGS32, access(VA32, WRITE, user=True), sem)
    check(r, fault="pf", error_code=0x6, cr2=VA32, fault_level=level, entry_addr=entry[0],
          entry_value=entry[1], refs=refs, gpa=None, leaf_level=0, acc=0)


@pytest.mark.parametrize("cr4, efer, hw, kvm", [
    (0, NXE, 0x00, 0x10),       # K5: 32-bit paging, NXE=1, SMEP=0 -> hardware I/D=0, KVM 1
    (SMEP, 0, 0x10, 0x10),      # SDM 4.7: CR4.SMEP=1 -> I/D reported in every paging mode
    (0, 0, 0x00, 0x00),         # neither NXE nor SMEP -> no I/D
])
def test_32bit_fetch_id_bit(cr4, efer, hw, kvm):
    r_hw = translate(mem32(pde=0), dict(REGS32, cr4=cr4, efer=efer), access(VA32, FETCH))
    r_kvm = translate(mem32(pde=0), dict(REGS32, cr4=cr4, efer=efer), access(VA32, FETCH),
                      "kvm")
    check(r_hw, fault="pf", error_code=hw, fault_level=2)
    check(r_kvm, fault="pf", error_code=kvm, fault_level=2)


@BOTH
def test_32bit_ad_writes_are_4_bytes(sem):
    # SDM 4.8: A on every entry used, D on the leaf of a write; 32-bit entries are 4 bytes.
    r = translate(mem32(), REGS32, access(VA32, WRITE), sem, ad=True)
    check(r, fault="none", gpa=0x3345)
    assert r["ad_writes"] == [(0x1004, 4, 0x2027), (0x2008, 4, 0x3067)]


# =======================================================================================
# PAE paging
# =======================================================================================
@BOTH
def test_pae_4k_page_pdptes_loaded_from_cr3(sem):
    # SDM 4.4: PDPTE registers from CR3[31:5]; PDPTE reads are not walk references (R12).
    r = translate(mempae(), REGSPAE, access(VAPAE), sem)
    assert r == dict(fault="none", gpa=0x4567, error_code=0, cr2=None, fault_level=0,
                     entry_addr=0x3020, entry_value=0x4007, leaf_level=1, page_size=4096,
                     acc=15, pkey=0, refs=2,
                     trace=[(2, 0x2018, 0x3007), (1, 0x3020, 0x4007)])


def test_pae_walk_uses_pdpte_registers_not_memory():
    # SDM 4.4.1: the walk uses the PDPTE registers loaded at MOV CR3, not memory.
    read = mempae(extra={0x6018: 0x3007})
    r = translate(read, dict(REGSPAE, pdptes=[0, 0, 0x6001, 0]), access(VAPAE))
    check(r, fault="none", gpa=0x4567, refs=2,
          trace=[(2, 0x6018, 0x3007), (1, 0x3020, 0x4007)])


@BOTH
def test_pae_pdpte_not_present(sem):
    # SDM 4.4.1: PDPTE P=0 -> #PF at the PDPTE (level 3); CR2 is the 32-bit linear address.
    r = translate(mempae(pdpte=0), REGSPAE, access(0xFFFF_FFFF_8060_4567, WRITE, user=True),
                  sem, ad=True)
    assert r == dict(fault="pf", gpa=None, error_code=0x6, cr2=0x8060_4567, fault_level=3,
                     entry_addr=0x1030, entry_value=0, leaf_level=0, page_size=0, acc=0,
                     pkey=0, refs=0, trace=[], ad_writes=[])


@pytest.mark.parametrize("pdpte, maxphyaddr", [
    (0x2003, 52),                    # bit 1 reserved
    (0x2005, 52),                    # bit 2 reserved
    (0x2021, 52),                    # bit 5 reserved
    (0x2101, 52),                    # bit 8 reserved
    (XD | 0x2001, 52),               # bit 63 reserved (even with NXE)
    ((1 << 40) | 0x2001, 40),        # bit 40 >= MAXPHYADDR
])
def test_load_pdptes_gp(pdpte, maxphyaddr):
    # SDM 4.4.1: MOV CR3 with a present PDPTE that has reserved bits set -> #GP(0).
    with pytest.raises(GPFault):
        load_pdptes(mempae(pdpte=pdpte), 0x1020, maxphyaddr)


def test_load_pdptes_ok_and_unbacked():
    # Non-present PDPTEs may hold anything; CR3 bits 4:0 and 63:32 are ignored.
    read = mempae(pdpte=(1 << 40) | 0x2001, extra={0x1020: 0x2006})
    assert load_pdptes(read, 0x1_0000_103F, 52) == [0x2006, 0, (1 << 40) | 0x2001, 0]
    # An unbacked PDPTE address raises UnbackedError naming it.
    with pytest.raises(UnbackedError) as info:
        load_pdptes(memory({}, backed=((0, 0x1028),)), 0x1020)
    assert info.value.addr == 0x1028


def test_pae_pdpte_load_errors_propagate():
    # Without explicit registers translate loads them; a bad load belongs to MOV CR3, so
    # GPFault / UnbackedError propagate instead of becoming the access's fault.
    with pytest.raises(GPFault):
        translate(mempae(pdpte=0x2003), REGSPAE, access(VAPAE))
    with pytest.raises(UnbackedError):
        translate(memory({}, backed=((0, 0x1000),)), REGSPAE, access(VAPAE))


def test_pae_2m_page_xd_fetch():
    # SDM 4.4.2 + 4.6: 2 MiB page with XD=1 and NXE=1: a fetch faults with P|I/D (0x11).
    read = mempae(pde=XD | 0x0040_0087)
    r = translate(read, REGSPAE, access(VAPAE, FETCH))
    check(r, fault="pf", error_code=0x11, cr2=VAPAE, fault_level=2, leaf_level=2,
          page_size=0x20_0000, acc=7, entry_addr=0x2018, entry_value=XD | 0x0040_0087, refs=1)
    r = translate(read, REGSPAE, access(VAPAE))
    check(r, fault="none", gpa=0x40_4567, leaf_level=2, acc=7, refs=1)


@BOTH
@pytest.mark.parametrize("efer, pte", [
    (0, XD | 0x4007),             # SDM 4.4.2: XD (bit 63) reserved when EFER.NXE=0
    (NXE, (1 << 60) | 0x4007),    # SDM 4.4.2: PAE bits 62:M reserved (no pkeys in PAE)
    (NXE, (1 << 52) | 0x4007),
])
def test_pae_reserved_high_bits(sem, efer, pte):
    r = translate(mempae(pte=pte), dict(REGSPAE, efer=efer), access(VAPAE), sem)
    check(r, fault="pf", error_code=0x9, fault_level=1, entry_addr=0x3020, entry_value=pte,
          refs=2)


@BOTH
def test_pae_ad_writes_skip_pdpte(sem):
    # SDM 4.8: PDPTE registers have no A flag; A on the PDE and PTE.
    r = translate(mempae(), REGSPAE, access(VAPAE), sem, ad=True)
    assert r["ad_writes"] == [(0x2018, 8, 0x3027), (0x3020, 8, 0x4027)]


def test_pae_ignores_pke():
    # SDM 4.6.2: protection keys apply only to 4-/5-level paging; PKE is ignored in PAE.
    regs = dict(REGSPAE, cr4=PAE | PKE, pkru=0x1)          # key 0 access-disabled
    r = translate(mempae(), regs, access(VAPAE, user=True))
    check(r, fault="none", gpa=0x4567, pkey=0)


# =======================================================================================
# 4-level paging
# =======================================================================================
@BOTH
def test_4level_4k_page(sem):
    # SDM 4.5: four 8-byte entries, 9 index bits each, A/D flags untouched without ad.
    r = translate(mem4(), regs4(), access(VA4), sem)
    assert r == dict(fault="none", gpa=0x5123, error_code=0, cr2=None, fault_level=0,
                     entry_addr=0x4020, entry_value=0x5007, leaf_level=1, page_size=4096,
                     acc=15, pkey=0, refs=4, trace=TRACE4)


@BOTH
@pytest.mark.parametrize("pde", [0x0040_0087, 0x0040_1087])   # bit 12 = PAT, allowed
def test_4level_2m_page(sem, pde):
    # SDM 4.5.4: PDE PS=1 -> 2 MiB page, PA = PDE[51:21] + VA[20:0].
    r = translate(mem4(pde=pde), regs4(), access(VA4), sem)
    check(r, fault="none", gpa=0x40_4123, leaf_level=2, page_size=0x20_0000, acc=15,
          entry_addr=0x3018, entry_value=pde, refs=3)


@BOTH
def test_4level_1g_page(sem):
    # SDM 4.5.4: PDPTE PS=1 -> 1 GiB page, PA = PDPTE[51:30] + VA[29:0].
    r = translate(mem4(pdpte=0x4000_0087), regs4(), access(VA4), sem)
    check(r, fault="none", gpa=0x4060_4123, leaf_level=3, page_size=0x4000_0000, acc=15,
          entry_addr=0x2010, entry_value=0x4000_0087, refs=2,
          trace=[(4, 0x1008, 0x2007), (3, 0x2010, 0x4000_0087)])


@BOTH
@pytest.mark.parametrize("change, regs_extra, level, refs", [
    (dict(pdpte=0x4000_0087), dict(gbpages=False), 3, 2),   # 1 GiB page without 1GB pages
    (dict(pdpte=0x6000_0087), {}, 3, 2),                    # 1 GiB page, bit 29 (of 29:13)
    (dict(pdpte=0x4000_2087), {}, 3, 2),                    # 1 GiB page, bit 13
    (dict(pde=0x0040_2087), {}, 2, 3),                      # 2 MiB page, bit 13 (of 20:13)
    (dict(pde=0x0050_0087), {}, 2, 3),                      # 2 MiB page, bit 20
    (dict(pml4e=0x2087), {}, 4, 1),                         # PML4E bit 7 reserved
    (dict(pml4e=0x2107), dict(vendor="amd"), 4, 1),         # R13: AMD PML4E bit 8
    (dict(pte=(1 << 36) | 0x5007), dict(maxphyaddr=36), 1, 4),   # bit 36 >= MAXPHYADDR
    (dict(pde=(1 << 39) | 0x4007), dict(maxphyaddr=39), 2, 3),   # bit 39 >= MAXPHYADDR
    (dict(pml4e=XD | 0x2007), dict(efer=LME | LMA), 4, 1),       # XD reserved with NXE=0
])
def test_4level_reserved_bits(sem, change, regs_extra, level, refs):
    # SDM 4.5.4 tables 4-15..4-20: reserved bit set -> #PF with P|RSVD (0x9) at that level.
    r = translate(mem4(**change), regs4(**regs_extra), access(VA4), sem)
    entry_addr = {4: 0x1008, 3: 0x2010, 2: 0x3018, 1: 0x4020}[level]
    entry_value = list(change.values())[0]
    check(r, fault="pf", gpa=None, error_code=0x9, cr2=VA4, fault_level=level,
          entry_addr=entry_addr, entry_value=entry_value, leaf_level=0, page_size=0, acc=0,
          refs=refs)


@BOTH
@pytest.mark.parametrize("change, regs_extra, gpa, pkey", [
    (dict(pml4e=0x2107), {}, 0x5123, 0),                  # R13: Intel PML4E bit 8 ignored
    (dict(pte=(1 << 52) | 0x5007), {}, 0x5123, 0),        # PTE bits 58:52 ignored
    (dict(pte=(2 << 59) | 0x5007), {}, 0x5123, 2),        # bits 62:59 = pkey (not address)
    (dict(pte=(1 << 40) | 0x5007), dict(maxphyaddr=41), (1 << 40) | 0x5123, 0),  # address bit
])
def test_4level_not_reserved(sem, change, regs_extra, gpa, pkey):
    # SDM 4.5.4: these bits are ignored (or address bits below MAXPHYADDR), not reserved.
    read = memory({**STD4, **{{"pml4e": 0x1008, "pte": 0x4020}[k]: v for k, v in change.items()}},
                  backed=FOUR_GIB + ((1 << 40, (1 << 40) + 0x10000),))
    r = translate(read, regs4(**regs_extra), access(VA4), sem)
    check(r, fault="none", gpa=gpa, pkey=pkey, refs=4)


@BOTH
def test_4level_cr3_high_and_low_bits_ignored(sem):
    # R15: CR3 bits 63:MAXPHYADDR masked (not #GP); CR3 bits 11:0 (flags/PCID) not address.
    cr3 = (1 << 63) | (1 << 45) | (1 << 40) | 0x1000 | 0xABC
    r = translate(mem4(), dict(regs4(maxphyaddr=40), cr3=cr3), access(VA4), sem)
    check(r, fault="none", gpa=0x5123, trace=TRACE4)


@BOTH
@pytest.mark.parametrize("name, level, entry_addr, value, refs, hw_ad", [
    ("pml4e", 4, 0x1008, 0x2006, 1, []),
    ("pdpte", 3, 0x2010, 0x3006, 2, [(0x1008, 8, 0x2027)]),
    ("pde", 2, 0x3018, 0x4006, 3, [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027)]),
    ("pte", 1, 0x4020, 0x5006, 4, [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027),
                                   (0x3018, 8, 0x4027)]),
])
def test_4level_not_present_each_level(sem, name, level, entry_addr, value, refs, hw_ad):
    # SDM 4.7: P=0 -> #PF P=0, W|U from a user write (0x6). K9: hardware sets A on the
    # entries above the failing one; KVM sets nothing on a faulting walk.
    r = translate(mem4(**{name: value}), regs4(), access(VA4, WRITE, user=True), sem, ad=True)
    check(r, fault="pf", gpa=None, error_code=0x6, cr2=VA4, fault_level=level,
          entry_addr=entry_addr, entry_value=value, leaf_level=0, acc=0, refs=refs)
    assert r["ad_writes"] == (hw_ad if sem == "hardware" else [])


@BOTH
@pytest.mark.parametrize("efer, cr4, code", [
    (LME | LMA | NXE, PAE, 0x10),     # SDM 4.7: 4-level with NXE -> I/D on fetch
    (LME | LMA, PAE, 0x00),           # neither NXE nor SMEP -> no I/D (both semantics)
    (LME | LMA, PAE | SMEP, 0x10),    # SMEP -> I/D
])
def test_4level_fetch_id_bit(sem, efer, cr4, code):
    r = translate(mem4(pte=0x5006), regs4(efer=efer, cr4=cr4), access(VA4, FETCH), sem)
    check(r, fault="pf", error_code=code, fault_level=1)


# =======================================================================================
# 5-level paging and canonical addresses
# =======================================================================================
VA5 = 0x0005_0080_8060_4123     # PML5 index 5, then as VA4
STD5 = {0x1028: 0x6007, 0x6008: 0x2007, 0x2010: 0x3007, 0x3018: 0x4007, 0x4020: 0x5007}


@BOTH
def test_5level_4k_page(sem):
    # SDM 4.5: CR4.LA57=1 -> PML5 from CR3, index VA[56:48].
    r = translate(memory(STD5), regs4(cr4=PAE | LA57), access(VA5), sem)
    check(r, fault="none", gpa=0x5123, leaf_level=1, refs=5, acc=15,
          trace=[(5, 0x1028, 0x6007), (4, 0x6008, 0x2007), (3, 0x2010, 0x3007),
                 (2, 0x3018, 0x4007), (1, 0x4020, 0x5007)])


@BOTH
def test_5level_pml5e_bit7_reserved(sem):
    # SDM 4.5.4: PML5E bit 7 reserved -> #PF P|RSVD at level 5.
    r = translate(memory({**STD5, 0x1028: 0x6087}), regs4(cr4=PAE | LA57), access(VA5), sem)
    check(r, fault="pf", error_code=0x9, fault_level=5, entry_addr=0x1028, entry_value=0x6087,
          refs=1)


@BOTH
def test_5level_canonical_high_address_walks(sem):
    # Bits 63:56 all ones is canonical under LA57: the walk starts at PML5 index 0x100.
    addr = 0xFF00_0000_0000_0000
    r = translate(memory(STD5), regs4(cr4=PAE | LA57), access(addr), sem)
    check(r, fault="pf", error_code=0, cr2=addr, fault_level=5, entry_addr=0x1800,
          entry_value=0, refs=1)


@BOTH
@pytest.mark.parametrize("cr4, addr", [
    (PAE, VA5),                             # 4-level: bits 63:47 not all equal
    (PAE, 0x0000_8000_0000_0000),           # 4-level: bit 47 set, 63:48 clear
    (PAE | LA57, 0x0100_0000_0000_0000),    # 5-level: bit 56 set, 63:57 clear
    (PAE | LA57, 0xFE00_0000_0000_0000),    # 5-level: bit 56 clear, 63:57 set
])
@pytest.mark.parametrize("stack, fault", [(False, "gp"), (True, "ss")])
def test_non_canonical(sem, cr4, addr, stack, fault):
    # K8 / SDM 3.3.7.1: non-canonical -> #GP(0) (#SS(0) for stack), before any walk.
    r = translate(memory(STD5), regs4(cr4=cr4), access(addr, WRITE, stack=stack), sem, ad=True)
    assert r == dict(fault=fault, gpa=None, error_code=0, cr2=None, fault_level=0,
                     entry_addr=0, entry_value=0, leaf_level=0, page_size=0, acc=0, pkey=0,
                     refs=0, trace=[], ad_writes=[])


@BOTH
def test_4level_canonical_high_address_walks(sem):
    # 0xFFFF_8000_0000_0000 is canonical: PML4 index 256, PML4E at 0x1800 not present.
    addr = 0xFFFF_8000_0000_0000
    r = translate(mem4(), regs4(), access(addr), sem)
    check(r, fault="pf", error_code=0, cr2=addr, fault_level=4, entry_addr=0x1800,
          entry_value=0, refs=1)


# =======================================================================================
# Permissions (SDM 4.6), 4-level
# =======================================================================================
@BOTH
@pytest.mark.parametrize("cr0, user, fault, code", [
    (PG | WP | PE, False, "pf", 0x3),   # WP=1: supervisor write to read-only page faults
    (PG | PE, False, "none", 0),        # WP=0: supervisor write ignores R/W
    (PG | PE, True, "pf", 0x7),         # user writes always need R/W=1
])
def test_write_protect(sem, cr0, user, fault, code):
    r = translate(mem4(pte=0x5005), regs4(cr0=cr0), access(VA4, WRITE, user=user), sem)
    check(r, fault=fault, error_code=code, acc=13, leaf_level=1, refs=4,
          gpa=None if fault == "pf" else 0x5123, fault_level=1 if fault == "pf" else 0,
          entry_addr=0x4020, entry_value=0x5005)


@BOTH
def test_rw_anded_over_levels(sem):
    # SDM 4.6.1: a write needs R/W=1 in every entry; PDPTE R/W=0 makes the page read-only.
    r = translate(mem4(pdpte=0x3005), regs4(), access(VA4, WRITE), sem)
    check(r, fault="pf", error_code=0x3, fault_level=1, acc=13, entry_addr=0x4020)


@BOTH
def test_user_access_to_supervisor_page(sem):
    # SDM 4.6.1: U/S=0 at any level -> supervisor page; user read faults with P|U.
    r = translate(mem4(pde=0x4003), regs4(), access(VA4, user=True), sem)
    check(r, fault="pf", error_code=0x5, fault_level=1, leaf_level=1, acc=11,
          entry_addr=0x4020, entry_value=0x5007)


@BOTH
def test_implicit_access_is_supervisor(sem):
    # SDM 4.6: implicit accesses (descriptor tables) are supervisor even at CPL3: no U fault.
    r = translate(mem4(pde=0x4003), regs4(), access(VA4, user=True, implicit=True), sem)
    check(r, fault="none", gpa=0x5123, acc=11)


@BOTH
def test_nx(sem):
    # SDM 4.6.1: XD=1 at any level (NXE=1) -> no fetch; fault P|I/D; reads still allowed.
    read = mem4(pdpte=XD | 0x3007)
    r = translate(read, regs4(), access(VA4, FETCH), sem)
    check(r, fault="pf", error_code=0x11, fault_level=1, acc=7, leaf_level=1)
    r = translate(read, regs4(), access(VA4), sem)
    check(r, fault="none", gpa=0x5123, acc=7)


@BOTH
@pytest.mark.parametrize("cr4, user, fault, code", [
    (PAE | SMEP, False, "pf", 0x11),  # SMEP: supervisor fetch from a user page faults
    (PAE, False, "none", 0),          # no SMEP: allowed
    (PAE | SMEP, True, "none", 0),    # user fetch from a user page: SMEP does not apply
])
def test_smep(sem, cr4, user, fault, code):
    r = translate(mem4(), regs4(cr4=cr4), access(VA4, FETCH, user=user), sem)
    check(r, fault=fault, error_code=code)


@BOTH
@pytest.mark.parametrize("kind, user, ac, implicit, pte, fault, code", [
    (READ, False, False, False, 0x5007, "pf", 0x1),   # supervisor read of user page, AC=0
    (WRITE, False, False, False, 0x5007, "pf", 0x3),  # supervisor write of user page, AC=0
    (READ, False, True, False, 0x5007, "none", 0),    # AC=1 overrides SMAP (explicit)
    (READ, False, True, True, 0x5007, "pf", 0x1),     # implicit: AC cannot override
    (READ, True, True, True, 0x5007, "pf", 0x1),      # CPL3 implicit access: supervisor, U=0
    (READ, True, False, False, 0x5007, "none", 0),    # user access: SMAP does not apply
    (FETCH, False, False, False, 0x5007, "none", 0),  # fetches: SMEP's business, not SMAP's
    (READ, False, False, False, 0x5003, "none", 0),   # supervisor page: no SMAP
])
def test_smap(sem, kind, user, ac, implicit, pte, fault, code):
    # SDM 4.6.1: SMAP forbids supervisor data accesses to user pages unless AC=1 (explicit).
    r = translate(mem4(pte=pte), regs4(cr4=PAE | SMAP),
                  access(VA4, kind, user=user, ac=ac, implicit=implicit), sem)
    check(r, fault=fault, error_code=code)


PTE_KEY1 = (1 << 59) | 0x5007    # protection key 1, user, writable


@BOTH
@pytest.mark.parametrize("pte, pkru, cr0, kind, user, fault, code", [
    (PTE_KEY1, 0x4, PG | WP | PE, READ, True, "pf", 0x25),    # AD(key1): user read, P|U|PK
    (PTE_KEY1, 0x4, PG | WP | PE, READ, False, "pf", 0x21),   # AD also blocks supervisor data
    (PTE_KEY1, 0x8, PG | WP | PE, READ, True, "none", 0),     # WD: reads allowed
    (PTE_KEY1, 0x8, PG | WP | PE, WRITE, True, "pf", 0x27),   # WD: user write, P|W|U|PK
    (PTE_KEY1, 0x8, PG | WP | PE, WRITE, False, "pf", 0x23),  # WD + WP=1: supervisor write
    (PTE_KEY1, 0x8, PG | PE, WRITE, False, "none", 0),        # WD ignored, supervisor, WP=0
    (PTE_KEY1, 0x4, PG | WP | PE, FETCH, True, "none", 0),    # no PK on instruction fetch
    ((1 << 59) | 0x5003, 0x4, PG | WP | PE, READ, False, "none", 0),  # supervisor page: none
    ((1 << 59) | 0x5003, 0x4, PG | WP | PE, READ, True, "pf", 0x5),   # U fault, no PK bit
    (PTE_KEY1, 0x1, PG | WP | PE, READ, True, "none", 0),     # AD on key 0, page has key 1
    ((1 << 59) | 0x5005, 0x8, PG | WP | PE, WRITE, True, "pf", 0x27),  # R16: W fault + PK
])
def test_pku(sem, pte, pkru, cr0, kind, user, fault, code):
    # SDM 4.6.2: PKRU AD/WD for the leaf's key, user pages only, data accesses only.
    r = translate(mem4(pte=pte), regs4(cr0=cr0, cr4=PAE | PKE, pkru=pkru),
                  access(VA4, kind, user=user), sem)
    check(r, fault=fault, error_code=code, pkey=1, leaf_level=1)


@BOTH
def test_pku_off_without_pke(sem):
    # SDM 4.6.2: CR4.PKE=0 -> PKRU is not consulted.
    r = translate(mem4(pte=PTE_KEY1), regs4(pkru=0x4), access(VA4, user=True), sem)
    check(r, fault="none", pkey=1, gpa=0x5123)


# =======================================================================================
# Unbacked memory (K13)
# =======================================================================================
def test_unbacked_table_hardware():
    # K13: PT at 0x1_0000_0000 is outside memory -> UNBACKED at level 1, no #PF, not a ref.
    read = mem4(pde=0x1_0000_0007)
    r = translate(read, regs4(), access(VA4, WRITE, user=True), ad=True)
    check(r, fault="unbacked", gpa=None, error_code=0, cr2=None, fault_level=1,
          entry_addr=0x1_0000_0020, entry_value=0, leaf_level=0, acc=0, refs=3,
          trace=[(4, 0x1008, 0x2007), (3, 0x2010, 0x3007), (2, 0x3018, 0x1_0000_0007)])
    # K9: the hardware used the three entries above, so they get A.
    assert r["ad_writes"] == [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027),
                              (0x3018, 8, 0x1_0000_0027)]


def test_unbacked_table_kvm():
    # K13: KVM treats a table outside every memslot as not present: #PF P=0 (+W|U).
    read = mem4(pde=0x1_0000_0007)
    r = translate(read, regs4(), access(VA4, WRITE, user=True), "kvm", ad=True)
    check(r, fault="pf", gpa=None, error_code=0x6, cr2=VA4, fault_level=1,
          entry_addr=0x1_0000_0020, entry_value=0, refs=3)
    assert r["ad_writes"] == []


def test_unbacked_final_address():
    # K13: hardware reads the final address (UNBACKED, level 0, gpa reported); KVM does not.
    read = mem4(pte=0x1_0000_5007)
    r = translate(read, regs4(), access(VA4, WRITE), "hardware", ad=True)
    check(r, fault="unbacked", gpa=0x1_0000_5123, error_code=0, cr2=None, fault_level=0,
          entry_addr=0x1_0000_5123, entry_value=0, leaf_level=1, page_size=4096, acc=15,
          refs=4)
    # An unbacked final address counts as a successful translation for A/D.
    assert r["ad_writes"] == [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027), (0x3018, 8, 0x4027),
                              (0x4020, 8, 0x1_0000_5067)]
    r = translate(read, regs4(), access(VA4, WRITE), "kvm")
    check(r, fault="none", gpa=0x1_0000_5123, entry_addr=0x4020, entry_value=0x1_0000_5007,
          fault_level=0, refs=4)


# =======================================================================================
# A/D flags (SDM 4.8; K9)
# =======================================================================================
@BOTH
def test_ad_success_read(sem):
    # A set on every entry used, top first; no D on a read.
    r = translate(mem4(), regs4(), access(VA4), sem, ad=True)
    assert r["ad_writes"] == [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027), (0x3018, 8, 0x4027),
                              (0x4020, 8, 0x5027)]


@BOTH
def test_ad_success_write_only_changes(sem):
    # PDPTE already accessed, PTE accessed but clean: only PML4E, PDE (A) and PTE (D).
    r = translate(mem4(pdpte=0x3027, pte=0x5027), regs4(), access(VA4, WRITE), sem, ad=True)
    assert r["ad_writes"] == [(0x1008, 8, 0x2027), (0x3018, 8, 0x4027), (0x4020, 8, 0x5067)]


@BOTH
def test_ad_nothing_to_write(sem):
    r = translate(mem4(pml4e=0x2027, pdpte=0x3027, pde=0x4027, pte=0x5067), regs4(),
                  access(VA4, WRITE), sem, ad=True)
    assert r["ad_writes"] == []


@BOTH
def test_ad_2m_leaf_dirty(sem):
    # D goes on the leaf, here the 2 MiB PDE: 0x400087 | A | D = 0x4000E7.
    r = translate(mem4(pde=0x0040_0087), regs4(), access(VA4, WRITE), sem, ad=True)
    assert r["ad_writes"] == [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027), (0x3018, 8, 0x40_00E7)]


@BOTH
def test_ad_permission_fault_at_leaf(sem):
    # K9: hardware sets A on the non-leaf entries it used, not on the denied leaf; KVM none.
    r = translate(mem4(pte=0x5005), regs4(), access(VA4, WRITE, user=True), sem, ad=True)
    check(r, fault="pf", error_code=0x7)
    expected = [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027), (0x3018, 8, 0x4027)]
    assert r["ad_writes"] == (expected if sem == "hardware" else [])


@BOTH
def test_ad_reserved_fault_at_level2(sem):
    # K9: a reserved PDE is not used: hardware A on PML4E and PDPTE only; KVM none.
    r = translate(mem4(pde=0x0040_2087), regs4(), access(VA4), sem, ad=True)
    check(r, fault="pf", error_code=0x9, fault_level=2)
    expected = [(0x1008, 8, 0x2027), (0x2010, 8, 0x3027)]
    assert r["ad_writes"] == (expected if sem == "hardware" else [])


@BOTH
def test_ad_recursive_entry_written_in_order(sem):
    # A self-referencing PML4E used at all four levels: A written once, then D on top of it
    # (the writes are applied in order, so the second one sees A already set).
    va = (1 << 39) | (1 << 30) | (1 << 21) | (1 << 12) | 0x10
    r = translate(memory({0x1008: 0x1007}), regs4(), access(va, WRITE), sem, ad=True)
    check(r, fault="none", gpa=0x1010, refs=4, leaf_level=1)
    assert r["ad_writes"] == [(0x1008, 8, 0x1027), (0x1008, 8, 0x1067)]


def test_no_ad_key_without_ad():
    r = translate(mem4(), regs4(), access(VA4))
    assert "ad_writes" not in r
