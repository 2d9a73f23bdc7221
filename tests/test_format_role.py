"""PageFormat generators and CpuRole decoding, with hand-worked values."""
import inspect

import numpy as np
import pytest

from vecmmu import FORMAT_DTYPE, CpuRole, PageFormat, PageWalk, PhysMem, RegisterError
from vecmmu import bits as B
from vecmmu.format import permission_table, pkru_bitmask, reserved_bits_masks

W, U, O, F = 1, 2, 4, 8          # row-index bits (pfec >> 1)
R_, W_, U_, X_ = 1, 2, 4, 8      # ACC bits


def faults(table, row, acc):
    return bool((int(table[row]) >> acc) & 1)


pytestmark = pytest.mark.nojit


def test_permission_table_is_u16_with_16_rows():
    t = permission_table(smep=True, smap=True, wp=True, nx=True)
    assert t.dtype == np.uint16 and t.shape == (16,)


def test_worked_checks_from_the_semantics_doc():
    t = permission_table(smap=True, wp=True, nx=True)
    assert faults(t, 0, R_ | W_ | U_)               # supervisor read of a user page, SMAP
    assert not faults(t, O, R_ | W_ | U_)           # the same with AC=1 (override slot)
    t0 = permission_table(wp=False, nx=True)
    assert not faults(t0, W, R_ | U_)               # WP=0: supervisor write ignores W
    assert faults(t0, W | U, R_ | U_)               # ... user writes do not
    assert faults(permission_table(wp=True), W, R_ | U_)


def test_nx_smep_and_user_terms():
    t = permission_table(smep=True, nx=True)
    assert faults(t, F, R_ | U_ | X_)               # SMEP: supervisor fetch from user page
    assert not faults(t, F | U, R_ | U_ | X_)
    assert faults(t, F | U, R_ | U_)                # NX
    assert not faults(permission_table(nx=False), F | U, R_ | U_)   # NXE=0: XD ignored
    assert faults(t, U, R_ | W_ | X_)               # user access to a supervisor page


def test_ept_table_uses_xu_for_user_fetches_under_mbec():
    t = permission_table(tdp=True, ept=True, smep=True)
    assert faults(t, F | U, R_ | X_)                # XS only: user-mode fetch faults
    assert not faults(t, F, R_ | X_)                # supervisor-mode fetch allowed
    assert faults(t, 0, W_ | X_)                    # EPT reads need R


def test_pkru_mask_bits():
    m = pkru_bitmask(pke=True, wp=True)
    off = lambda pfec, page_user: pfec + (8 if page_user else 0)  # noqa: E731
    assert (m >> off(0, True)) & 3 == 1             # read of user page: AD applies
    assert (m >> off(2, True)) & 3 == 3             # write: AD and WD
    assert (m >> off(16, True)) & 3 == 0            # fetch: never
    assert (m >> off(0, False)) & 3 == 0            # supervisor page: never (no PKS)
    m0 = pkru_bitmask(pke=True, wp=False)
    assert (m0 >> off(2, True)) & 3 == 1            # WP=0 supervisor write: WD ignored
    assert (m0 >> off(6, True)) & 3 == 3            # user write: WD applies
    assert pkru_bitmask(pke=False, wp=True) == 0


def test_reserved_masks_4level():
    role = CpuRole.for_mode("4level", maxphyaddr=40, nxe=False, gbpages=False, vendor="amd")
    m = reserved_bits_masks(role)
    hi = B.bits(51, 40) | B.PT_NX
    assert int(m[0][0]) == hi and int(m[1][0]) == hi
    assert int(m[1][1]) == hi | B.bits(20, 13)
    assert int(m[1][2]) == hi | B.bits(7, 7) | B.bits(29, 13)
    assert int(m[0][3]) == hi | B.bits(8, 7)        # AMD: PML4E bits 8:7
    assert int(m[0][4]) == 0                        # no level 5 in 4-level paging


def test_reserved_masks_pse36_hardware_vs_kvm():
    role = CpuRole.for_mode("32bit", maxphyaddr=40)
    assert int(reserved_bits_masks(role, "hardware")[1][1]) == B.bits(21, 21)
    assert int(reserved_bits_masks(role, "kvm")[1][1]) == B.bits(21, 17)
    assert int(reserved_bits_masks(role.replace(maxphyaddr=36))[1][1]) == B.bits(21, 17)


def test_format_is_memoised_record_and_stacks():
    role = CpuRole.for_mode("4level", smap=True)
    f = PageFormat.for_cpu(role)
    assert PageFormat.for_cpu(role) is f
    assert PageFormat.for_cpu(role, "kvm") is not f
    assert f.record.dtype == FORMAT_DTYPE and not f.record.flags.writeable
    stacked = np.stack([f.record, PageFormat.for_cpu(role.replace(wp=False)).record])
    assert stacked.shape == (2,) and stacked["permissions"].shape == (2, 16)
    assert "permissions" in f.describe()


def test_io_flag_k5():
    r32 = CpuRole.for_mode("32bit", nxe=True)
    assert not PageFormat.for_cpu(r32).flags & 1            # hardware: no I/D
    assert PageFormat.for_cpu(r32, "kvm").flags & 1         # KVM: NXE sets it


@pytest.mark.parametrize("cr0,cr4,efer,msg", [
    (B.CR0_PG, 0, 0, "PE"),
    (B.CR0_PE, B.CR4_PAE, B.EFER_LMA, "PG"),
    (B.CR0_PE | B.CR0_PG, 0, B.EFER_LME, "PAE"),
])
def test_invalid_register_combinations(cr0, cr4, efer, msg):
    with pytest.raises(RegisterError, match=msg):
        CpuRole.from_regs(cr0, cr4, efer)


def test_la57_and_pke_ignored_outside_long_mode():
    role = CpuRole.from_regs(B.CR0_PE | B.CR0_PG, B.CR4_PAE | B.CR4_LA57 | B.CR4_PKE, 0)
    assert role.mode == B.PagingMode.PAE and not role.pke
    assert PageFormat.for_cpu(role).pkru_mask == 0


def test_lme_with_pg_is_long_mode_and_pcide_needs_it():
    role = CpuRole.from_regs(B.CR0_PE | B.CR0_PG, B.CR4_PAE, B.EFER_LME)
    assert role.mode == B.PagingMode.LEVEL4
    with pytest.raises(RegisterError, match="PCIDE"):
        CpuRole.from_regs(B.CR0_PE | B.CR0_PG, B.CR4_PAE | B.CR4_PCIDE, 0)


def test_pcid_bits_of_cr3_are_not_address_bits():
    mem = PhysMem.zeros(1 << 20)
    role = CpuRole.for_mode("4level", pcide=True)
    mem.write_u64(0x1000, 0x2003)
    mem.write_u64(0x2000, 0x3003)
    mem.write_u64(0x3000, 0x4003)
    mem.write_u64(0x4000, 0x5003)
    a = PageWalk(role, mem, 0x1000).translate([0x123])
    b = PageWalk(role, mem, 0x1000 | 0xABC | (1 << 63)).translate([0x123])
    assert int(a.gpa[0]) == int(b.gpa[0]) == 0x5123


def test_bad_role_inputs():
    with pytest.raises(RegisterError):
        CpuRole.for_mode("4level", maxphyaddr=60)
    with pytest.raises(ValueError, match="paging mode"):
        CpuRole.for_mode("6level")
    with pytest.raises(ValueError, match="semantics"):
        PageFormat.for_cpu(CpuRole.for_mode("4level"), "qemu")


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT,
                    reason="about compiled signatures; nothing is compiled with the JIT off")
def test_formats_are_data_not_code():
    """Changing the role (WP, SMEP, SMAP, NXE, PKE, MAXPHYADDR, mode) never compiles a new
    kernel: formats reach the kernels as arrays and a tuple of int64."""
    from vecmmu import Mmu
    from vecmmu.kernels import cpu_walk as K
    seen = None
    for kw in (dict(), dict(wp=False), dict(smep=True, smap=True), dict(nxe=False),
               dict(pke=True, maxphyaddr=40), dict(gbpages=False, vendor="amd")):
        mmu = Mmu(CpuRole.for_mode("4level", **kw), ram_size=1 << 22)
        mmu.map(0x1000, 0x1000)
        mmu.walker().translate(np.array([0x1000, 0x2000], dtype=np.uint64), [0, 1])
        n = len(K.cpu_translate.signatures)
        seen = n if seen is None else seen
        assert n == seen, kw
    for mode in ("32bit", "pae", "5level"):
        mmu = Mmu(CpuRole.for_mode(mode), ram_size=1 << 22)
        mmu.map(0x1000, 0x1000)
        mmu.walker().translate(np.array([0x1000], dtype=np.uint64))
        assert len(K.cpu_translate.signatures) == seen, mode


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT,
                    reason="about compiled signatures; nothing is compiled with the JIT off")
def test_tdp_formats_are_data_and_the_tdp_kind_is_a_type():
    """EPT formats (levels, A/D, MBEC, execute-only, huge pages, KVM semantics) never
    compile a new 2-D or TDP kernel; NPT compiles its own once (the TDP tuple carries
    EPT/NPT as a type, so an EPT guest never compiles the NPT side's x86 walker), and NPT
    variants then add nothing either."""
    from vecmmu import EptRole, NestedGuest, NptRole
    from vecmmu.kernels import tdp_walk as KT

    def run(tdp_role, semantics="hardware"):
        g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=40), tdp_role, guest_ram=1 << 22,
                        tdp_page_size=4096)
        g.guest.map(0x400000, 0x1000, user=True)
        r = g.walker(semantics=semantics).translate([0x400000, 0x500000], "read", user=True)
        assert list(r.fault[:1]) == [0]
        g.tdp_walker(semantics=semantics).translate([0x1000], "read")

    kernels = (KT.nested_translate, KT.tdp_translate_batch)
    at = [list(inspect.signature(k.py_func).parameters).index("tdp_npt") for k in kernels]

    def sigs():
        return [set(k.signatures) for k in kernels]

    def npt_types(new):
        return {str(sig[i]) for sigset, i in zip(new, at) for sig in sigset}

    for roles, npt_type in (
            ([(EptRole(), "hardware"), (EptRole(levels=5), "hardware"), (EptRole(ad=True), "hardware"),
              (EptRole(mbec=True, execonly=False), "hardware"), (EptRole(huge_level=1), "hardware"),
              (EptRole(mbec=True), "kvm")], "none"),
            ([(NptRole(), "hardware"), (NptRole(gmet=True), "hardware"),
              (NptRole(nxe=False), "kvm")], "bool")):
        before = sigs()
        run(*roles[0])
        first = sigs()
        assert npt_types([f - b for f, b in zip(first, before)]) <= {npt_type}
        assert npt_type in npt_types(first)
        for role, semantics in roles[1:]:
            run(role, semantics)
            assert sigs() == first, (role, semantics)


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT,
                    reason="about compiled signatures; nothing is compiled with the JIT off")
def test_batch_size_and_chunking_compile_nothing_new():
    """A batch of one access, a last chunk of one, chunked 2-D and TDP walks, explain():
    each used to compile its kernel again (a one-element field view is contiguous to
    Numba; a column slice of the 2-D result matrix is strided)."""
    from vecmmu import EptRole, Mmu, NestedGuest
    from vecmmu.kernels import cpu_walk as K
    from vecmmu.kernels import tdp_walk as KT
    kernels = (K.cpu_translate, KT.nested_translate, KT.tdp_translate_batch)

    def sigs():
        return [set(k.signatures) for k in kernels]

    mmu = Mmu.for_mode("4level", ram_size=1 << 22)
    mmu.map(0x400000, 0x4000, user=True)
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=40), EptRole(), guest_ram=1 << 22,
                    tdp_page_size=4096)
    g.guest.map(0x400000, 0x4000, user=True)
    w, n2, t2 = mmu.walker(), g.walker(), g.tdp_walker()
    a = 0x400000 + np.arange(10, dtype=np.uint64) * 0x800
    want = [x.translate(a).fault.copy() for x in (w, n2)] + [t2.translate([0x1000, 0x2000]).fault]
    before = sigs()
    assert list(w.translate(a[:1]).fault) == list(want[0][:1])
    assert list(w.translate(a[:1], trace=True, ad="trace").fault) == list(want[0][:1])
    for chunk in (1, 3, 9):                      # last chunks of 1 (chunk 3 and 9 over 10)
        assert np.array_equal(w.translate(a, chunk=chunk).fault, want[0])
        assert np.array_equal(w.translate(a, chunk=chunk, order="grouped").fault, want[0])
        assert np.array_equal(n2.translate(a, chunk=chunk).fault, want[1])
        assert np.array_equal(t2.translate([0x1000, 0x2000], chunk=1).fault, want[2])
    w.explain(0x400000)
    n2.translate(a[:1])
    assert sigs() == before


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT,
                    reason="about compiled signatures; nothing is compiled with the JIT off")
def test_memslot_layout_compiles_nothing_new():
    """list_mappings and translate over one writable memslot, over several, and over a
    read-only copy of the memory (as a memmapped dump is): one kernel signature."""
    from vecmmu import Mmu
    from vecmmu.analysis.mappings import list_mappings
    from vecmmu.kernels import cpu_walk as K
    from vecmmu.kernels import scan as KS
    mmu = Mmu.for_mode("4level", ram_size=1 << 22)
    mmu.map(0x400000, 0x3000, user=True)
    want = list_mappings(mmu.walker()).to_frame()
    mmu.walker().translate([0x400000, 0x401000])
    before = (set(KS.scan_tables.signatures), set(K.cpu_translate.signatures))
    ram = mmu.mem.backings[0]
    half = ram.shape[0] // 2
    split, ro = PhysMem(), PhysMem()
    split.add_slot(0, ram[:half].copy())
    split.add_slot(half, ram[half:].copy())
    frozen = ram.copy()
    frozen.flags.writeable = False
    ro.add_slot(0, frozen)
    for mem in (split, ro):
        w = PageWalk(mmu.role, mem, mmu.cr3())
        assert list_mappings(w).to_frame().equals(want)
        assert list(w.translate([0x400000, 0x401000, 0x500000]).fault) == [0, 0, 1]
    assert (set(KS.scan_tables.signatures), set(K.cpu_translate.signatures)) == before


_ONE_SIGNATURE = r"""
import importlib, pkgutil
import numpy as np
import vecmmu as V
import vecmmu.kernels as KP
m = V.Mmu.for_mode("4level", ram_size=16 << 20)
m.map(0x400000, 16 * 4096)
w = m.walker()
a = np.arange(300, dtype=np.uint64) * 4096 % (16 * 4096) + 0x400000
w.translate(a)
w.translate(a[:1])
w.translate(a, order="grouped")
w.translate(a, trace=True, ad="trace")
w.explain(0x400000)
from vecmmu.analysis.whatif import whatif
from vecmmu.perf import TlbConfig, simulate, sweep
whatif(w, a, ["nosmep:smep=0"], kind="fetch")
r = w.translate(a, trace=True)
simulate(r)
sweep(r, [TlbConfig.skylake(), TlbConfig.skylake()])
g = V.NestedGuest(V.CpuRole.for_mode("4level", maxphyaddr=46), V.EptRole(), tdp_page_size=4096,
                  guest_ram=1 << 24)
g.guest.map(0x400000, 0x10000, user=True)
g.walker().translate(a, kind="read", user=True)
for info in pkgutil.iter_modules(KP.__path__):
    mod = importlib.import_module("vecmmu.kernels." + info.name)
    for name, f in vars(mod).items():
        if getattr(getattr(f, "py_func", None), "__module__", None) == mod.__name__:
            if len(f.signatures) > 1:
                print(info.name, name, [str(s) for s in f.signatures])
"""


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT,
                    reason="about compiled signatures; nothing is compiled with the JIT off")
def test_helpers_compile_once_per_walk(tmp_path):
    """On an empty cache, a 1-D walk in every order and mode, a what-if sweep, the TLB
    model and a 2-D walk compile each kernel and helper once: a literal int argument
    (``host_addr(..., 8)``) is a signature of its own, one more compile (0.1-0.3 s each)
    of a first call; helpers are called with numpy-scalar constants instead."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _ONE_SIGNATURE], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "", out.stdout
