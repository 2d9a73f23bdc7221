"""The Mmu builder: every page size in every mode, unmap/protect, and its errors."""
import numpy as np
import pytest

from vecmmu import CpuRole, Fault, Mmu, MmuError, PageWalk, PdpteError, load_pdptes

CASES = [("32bit", 4096), ("32bit", 4 << 20), ("pae", 4096), ("pae", 2 << 20),
         ("4level", 4096), ("4level", 2 << 20), ("4level", 1 << 30),
         ("5level", 4096), ("5level", 2 << 20), ("5level", 1 << 30)]


@pytest.mark.nojit
@pytest.mark.parametrize("mode,ps", CASES)
def test_map_translate_unmap(mode, ps):
    mmu = Mmu.for_mode(mode, ram_size=1 << 32)
    va = 0x40000000 if ps == 1 << 30 else 0x800000
    pa = 0x40000000 if ps == 1 << 30 else 0x1000000
    mmu.map(va, 2 * ps, pa=pa, page_size=ps, user=True)
    w = mmu.walker()
    r = w.translate([va + 0x123, va + ps + 0x456, va + 2 * ps], "read", user=True)
    assert list(r.fault) == [Fault.NONE, Fault.NONE, Fault.PF]
    assert int(r.gpa[0]) == pa + 0x123 and int(r.gpa[1]) == pa + ps + 0x456
    assert int(r.page_size[0]) == ps
    assert mmu.unmap(va, ps) == 1
    r = mmu.walker().translate([va, va + ps], "read", user=True)
    assert list(r.fault) == [Fault.PF, Fault.NONE]


def test_rights_flags_and_protect():
    mmu = Mmu.for_mode("4level", pke=True)
    mmu.map(0x10000, 0x2000, writable=False, user=True, nx=True, pkey=5, pcd=True, global_=True)
    e = mmu.get_entry(0x10000, 1)
    assert e & 0x1F == 0x15 and e >> 63 == 1 and (e >> 59) & 15 == 5 and e & 0x100
    w = mmu.walker()
    assert list(w.translate([0x10000, 0x10000, 0x10000], [0, 1, 2], user=True).error_code) == [0, 0x7, 0x15]
    assert mmu.protect(0x10000, 0x2000, writable=True, nx=False, pkey=0) == 2
    r = mmu.walker().translate([0x10000, 0x11000], [1, 2], user=True)
    assert np.all(r.fault == Fault.NONE) and np.all(r.pkey == 0)


def test_pse36_frame_above_4g():
    mmu = Mmu(CpuRole.for_mode("32bit", maxphyaddr=40), ram_size=64 << 20)
    mmu.map(0x800000, 4 << 20, pa=0x12_0040_0000, page_size=4 << 20)
    r = mmu.walker().translate([0x800123])
    assert int(r.gpa[0]) == 0x12_0040_0123 and r.fault[0] == Fault.UNBACKED   # beyond RAM
    with pytest.raises(MmuError, match="PSE-36"):
        mmu.map(0xC00000, 4 << 20, pa=1 << 40, page_size=4 << 20)


def test_pae_pdptes_loaded_and_checked():
    mmu = Mmu.for_mode("pae", ram_size=64 << 20)
    mmu.map(0x40000000, 0x1000, user=True)
    assert int(mmu.pdptes()[1]) & 1 and int(load_pdptes(mmu.mem, mmu.cr3())[1]) & 1
    mmu.write_entry_at(mmu.roots[0] + 8, int(mmu.pdptes()[1]) | 2)      # bit 1 reserved
    with pytest.raises(PdpteError, match="PDPTE 1"):
        mmu.walker()


def test_address_spaces():
    mmu = Mmu.for_mode("4level")
    other = mmu.new_address_space()
    mmu.map(0x400000, 0x1000, pa=0x100000, user=True)
    mmu.map(0x400000, 0x1000, pa=0x200000, user=True, asid=other)
    r = mmu.walker().translate([0x400000, 0x400000], asid=[0, other])
    assert [int(x) for x in r.gpa] == [0x100000, 0x200000]


def test_builder_errors():
    mmu = Mmu.for_mode("4level", ram_size=1 << 24)
    with pytest.raises(MmuError, match="multiples"):
        mmu.map(0x1001, 0x1000)
    with pytest.raises(MmuError, match="4 MiB"):
        mmu.map(0, 4 << 20, page_size=4 << 20)
    with pytest.raises(MmuError, match="1 GiB"):
        Mmu(CpuRole.for_mode("4level", gbpages=False)).map(0, 1 << 30, pa=0, page_size=1 << 30)
    with pytest.raises(MmuError, match="canonical"):
        mmu.map(0x0000_9000_0000_0000, 0x1000)
    with pytest.raises(MmuError, match="pkey"):
        Mmu.for_mode("32bit").map(0, 0x1000, pkey=1)
    with pytest.raises(MmuError, match="NXE"):
        Mmu.for_mode("4level", nxe=False).map(0, 0x1000, nx=True)
    mmu.map(0x200000, 2 << 20, pa=0x200000, page_size=2 << 20)
    with pytest.raises(MmuError, match="large page above"):
        mmu.map(0x201000, 0x1000)
    mmu.map(0x600000, 0x1000)
    with pytest.raises(MmuError, match="page table is mapped there"):
        mmu.map(0x600000, 2 << 20, pa=0, page_size=2 << 20)
    with pytest.raises(MmuError, match="cuts the large page"):
        mmu.unmap(0x200000, 0x1000)
    with pytest.raises(MmuError, match="exhausted"):
        mmu.map(0x10000000, 64 << 20)
    with pytest.raises(MmuError, match="MAXPHYADDR"):
        Mmu(CpuRole.for_mode("4level", maxphyaddr=36)).map(0, 0x1000, pa=1 << 36)


def test_million_pages():
    """A million scattered 4 KiB pages build through the vectorised path and translate."""
    mmu = Mmu.for_mode("4level", ram_size=1 << 33)
    rng = np.random.default_rng(0)
    frames = rng.permutation(1 << 20).astype(np.uint64) * np.uint64(4096) + np.uint64(1 << 32)
    mmu.map(0x10_0000_0000, (1 << 20) * 4096, pa=frames, user=True)
    sample = rng.integers(0, 1 << 20, 1000)
    va = np.uint64(0x10_0000_0000) + sample.astype(np.uint64) * np.uint64(4096) + np.uint64(8)
    r = mmu.walker().translate(va)
    assert np.all(r.fault == Fault.NONE)
    assert np.array_equal(r.gpa, frames[sample] + np.uint64(8))


def test_out_of_range_inputs_are_errors():
    from vecmmu import PhysMem
    mmu = Mmu.for_mode("4level", ram_size=1 << 22)
    with pytest.raises(MmuError, match="64 bits"):
        mmu.map(2**64, 0x1000, user=True)
    with pytest.raises(MmuError, match="64 bits"):
        mmu.unmap(2**64 + 0x400000, 0x1000)
    with pytest.raises(MmuError, match="asid 7"):
        mmu.map(0x1000, 0x1000, asid=7)
    with pytest.raises(ValueError, match="64-bit register"):
        PageWalk.from_regs(PhysMem.zeros(1 << 16), cr0=0x80000001, cr4=0x20, efer=0x500, cr3=2**70)


def test_map_pages_checks_every_address_and_right():
    """map_pages shares map's checks: every address (not only the first and last), and
    the rights a layout cannot hold."""
    m4 = Mmu.for_mode("4level", ram_size=1 << 24)
    vas = np.array([0x1000, 0x0000_9000_0000_0000, 0x3000], dtype=np.uint64)
    with pytest.raises(MmuError, match="0x900000000000 is not canonical"):
        m4.map_pages(vas, np.array([0x5000, 0x6000, 0x7000], dtype=np.uint64))
    m32 = Mmu.for_mode("32bit", ram_size=1 << 24)
    with pytest.raises(MmuError, match="no XD bit"):
        m32.map_pages([0x1000], [0x5000], nx=True)
    with pytest.raises(MmuError, match="pkey"):
        m32.map_pages([0x1000], [0x5000], pkey=3)
    # per-page attributes reach the leaves, as with map()
    m4.map_pages([0x1000, 0x2000], [0x5000, 0x6000], global_=[True, False], pcd=True, pat=[0, 1])
    assert m4.get_entry(0x1000, 1) & 0x19C == 0x110          # G | PCD
    assert m4.get_entry(0x2000, 1) & 0x19C == 0x090          # PAT(4K) | PCD
