"""Differential tests: vecmmu's cpu_walk against QEMU's x86 MMU (Unicorn 2, Icelake-Server).

Every case is one memory access run in the emulator (``mov eax,[rbx]``, ``mov [rbx],esi``
or ``jmp rbx`` at CPL0, or at CPL3 after an ``iretq``) over tables vecmmu built in the
memory both share (see ``unicorn_harness.py`` for how, and for how the #PF error code is
read out of Unicorn's saved CPU context). Compared per access: fault class (none, #PF,
#GP), the #PF error code (P W U RSVD I/D PK), CR2, and on success the physical address
QEMU actually read, wrote or fetched (found through an address pattern in memory).

Known differences between QEMU (5.0's TCG, inside Unicorn 2.1) and the hardware vecmmu
models are kept out of the compared cases by construction, listed here, and where cheap
pinned by a test of QEMU's own behaviour (so a change in either side shows up):

(Checked and *not* a difference: the PK bit when the page rights also deny the access.
QEMU 5.0 sets PK whenever the key denies a data access to a user-mode address, whatever
else failed, as the SDM, KVM's ``permission_fault`` and vecmmu's R16 do;
``test_pk_with_other_rights`` pins it.)

Q1  A/D flags. QEMU sets A in every entry it used, including upper levels of walks that
    fault later (K9) and the leaf of a PKRU-denied access; vecmmu's translate here runs with
    ``ad=None`` (memory untouched) and A/D flags never change a walk's outcome, so they
    are not compared (QEMU's writes stay in memory; later accesses do not depend on them).
Q2  PAE PDPTEs. QEMU has no PDPTE registers: it reads the PDPTE on every walk, raises
    #PF(P|RSVD) for bits 63:52 and ignores bits 2:1 and 8:5; MOV CR3 never raises #GP.
    vecmmu (Intel) loads them at CR3 and raises #GP(0) (PdpteError) for all of those.
    PAE cases never change a PDPTE after the walker is made and never set PDPTE reserved
    bits; ``test_pae_pdpte_difference`` pins QEMU's side.
Q3  Unbacked memory (K13): QEMU reads unassigned physical memory, vecmmu reports
    UNBACKED. No case points a table or a page outside RAM (addresses above MAXPHYADDR
    are reserved-bit faults, which are compared).
Q4  Implicit supervisor accesses (descriptor-table reads) are not compared: a case would
    have to load a segment through a target page. (Reading QEMU's source,
    ``cpu_mmu_index_kernel`` picks the SMAP MMU index from EFLAGS.AC at CPL<3 for them
    too, where the SDM always applies SMAP to implicit accesses; not verified here.) The
    harness's own GDT is on a supervisor page, so its implicit reads never depend on it.
"""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

pytest.importorskip("unicorn")

from unicorn_harness import (INFRA_VA, SLOT, UnicornHarness, probe_cpu,  # noqa: E402
                             error_code_offset, vecmmu_view)
from vecmmu import make_accesses  # noqa: E402
from vecmmu import bits as B  # noqa: E402
from vecmmu.bits import Fault, PagingMode  # noqa: E402

PFERR_PK = B.PFERR_PK
COLS = ("fault", "error_code", "cr2", "pa")
STATS = {"compared": 0}


# --- comparing -------------------------------------------------------------------------------
def _fmt(acc, i, v, q):
    return (f"addr={int(acc['addr'][i]):#x} kind={int(acc['kind'][i])} user={int(acc['user'][i])} "
            f"ac={int(acc['ac'][i])}: vecmmu fault={v['fault'][i]} ec={v['error_code'][i]:#x} "
            f"cr2={v['cr2'][i]:#x} pa={v['pa'][i]:#x} | qemu fault={q['fault'][i]} "
            f"vector={q['vector'][i]} ec={q['error_code'][i]:#x} cr2={q['cr2'][i]:#x} "
            f"pa={q['pa'][i]:#x}")


def compare(h, role, acc, pkru=0, what=""):
    """Run both, apply the documented rules, fail with a readable list of disagreements."""
    pkru = np.broadcast_to(np.asarray(pkru, dtype=np.uint64), (acc.shape[0],)).copy()
    r, q = h.compare(role, acc, pkru=pkru)
    v = vecmmu_view(r)
    bad = np.zeros(acc.shape[0], dtype=bool)
    for k in COLS:
        bad |= v[k] != q[k]
    STATS["compared"] += acc.shape[0]
    if bad.any():
        lines = [_fmt(acc, i, v, q) for i in np.flatnonzero(bad)[:20]]
        pytest.fail(f"{what} {role}: {int(bad.sum())} of {acc.shape[0]} accesses disagree:\n"
                    + "\n".join(lines))
    return r, q


# --- table generators --------------------------------------------------------------------------
def _sext(va, bits):
    return va | (((1 << 64) - 1) ^ ((1 << bits) - 1)) if va >> (bits - 1) & 1 else va


def _top_slot_va(mode, slot):
    """A VA whose top-level index is ``slot`` (canonical)."""
    if mode is PagingMode.LEVEL4:
        return _sext(slot << 39, 48)
    if mode is PagingMode.LEVEL5:
        return _sext(slot << 48, 57)
    if mode is PagingMode.PAE:
        return slot << 21                      # one PDE per page (PDPTEs 0..2 only)
    return slot << 22                          # 32-bit: one PDE per page


def _infra_slot(mode):
    va = INFRA_VA[mode]
    return {PagingMode.LEVEL4: va >> 39 & 511, PagingMode.LEVEL5: va >> 48 & 511,
            PagingMode.PAE: va >> 21, PagingMode.BIT32: va >> 22}[mode]


class Page:
    def __init__(self, va, leaf_level, data_base):
        self.va, self.leaf_level, self.data_base = va, leaf_level, data_base


def build_pages(h, rng, n, *, sizes=(4096,), nx_ok=True, pkeys=False, reserved=None):
    """``n`` target pages, each under its own top-level entry (PDE in 32-bit/PAE), with random
    U/W/NX at every level it owns. ``reserved(level, leaf_level, rng) -> bits or 0`` may add
    bits to one level. Returns a list of :class:`Page`."""
    mode = h.mode
    levels = int(mode)
    own_levels = range(levels, 0, -1) if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5) else \
        range(2, 0, -1)                          # PAE/32-bit: the PDE and below
    big = {1 << 30: 3, 2 << 20: 2, 4 << 20: 2}
    region = {}
    slots = [s for s in range(1, 512 if levels >= 3 and mode is not PagingMode.PAE else 1024)
             if s != _infra_slot(mode)]
    if mode is PagingMode.PAE:
        slots = [s for s in range(1, 3 * 512)]   # PDPTEs 0..2, the infra is under PDPTE 3
    chosen = rng.choice(len(slots), size=n, replace=False)
    pages = []
    for j in chosen:
        base = _top_slot_va(mode, slots[int(j)])
        ps = sizes[int(rng.integers(len(sizes)))]
        leaf = big.get(ps, 1)
        # random indices below the owned top entry, aligned to the page size
        span = {PagingMode.LEVEL4: 1 << 39, PagingMode.LEVEL5: 1 << 48,
                PagingMode.PAE: 1 << 21, PagingMode.BIT32: 1 << 22}[mode]
        off = int(rng.integers(0, span // ps)) * ps
        va = base + off
        user, writable = bool(rng.random() < 0.7), bool(rng.random() < 0.7)
        nx = nx_ok and bool(rng.random() < 0.3)
        kw = dict(user=user, writable=writable, nx=nx)
        if pkeys:
            kw["pkey"] = int(rng.integers(16))
        if leaf == 1:
            h.map_data(va, 4096, **kw)
            data = 0
        else:
            if ps not in region:
                region[ps] = h.pattern_region(1 << 20, align=min(ps, 4 << 20)) \
                    if ps != 1 << 30 else h.pattern_region(1 << 20)
            frame = region[ps] & ~(ps - 1)       # a frame whose page holds the pattern region
            h.mmu.map(va, ps, page_size=ps, pa=frame, **kw)
            data = region[ps] - frame
        for lvl in own_levels:
            if lvl <= leaf:
                break
            set_bits = clear = 0
            if rng.random() < 0.2:
                clear |= B.PT_USER
            if rng.random() < 0.2:
                clear |= B.PT_WRITABLE
            if nx_ok and rng.random() < 0.15:
                set_bits |= B.PT_NX
            h.mmu.set_entry(va, lvl, set_bits=set_bits, clear_bits=clear)
        if reserved is not None:
            lvl, bits_ = reserved(h, own_levels, leaf, rng)
            if bits_:
                h.mmu.set_entry(va, lvl, set_bits=bits_)
        pages.append(Page(va, leaf, data))
    return pages


def accesses_for(pages, rng, *, users=(False, True), acs=(False, True)):
    """Every (kind, user, ac) for each page, at a random pattern slot (+1 for data)."""
    rows = []
    for p in pages:
        for kind, user, ac in itertools.product((0, 1, 2), users, acs):
            if user and ac:
                continue                          # AC only matters for supervisor accesses
            off = p.data_base + int(rng.integers(0, 4096 // SLOT)) * SLOT
            rows.append((p.va + off + (0 if kind == 2 else 1), kind, user, ac))
    a = np.array([r[0] for r in rows], dtype=np.uint64)
    return make_accesses(a, np.array([r[1] for r in rows]), user=np.array([r[2] for r in rows]),
                         ac=np.array([r[3] for r in rows]))


def random_pkru(rng, n, p_zero=0.3):
    v = rng.integers(0, 1 << 32, size=n, dtype=np.uint64)
    v[rng.random(n) < p_zero] = 0
    return v


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpu():
    return probe_cpu()


def _harness(mode, seed, n, **kw):
    h = UnicornHarness(mode)
    rng = np.random.default_rng(seed)
    pages = build_pages(h, rng, n, **kw)
    return h, pages, rng


@pytest.fixture(scope="module")
def long4():
    return _harness("4level", 1, 110, sizes=(4096, 4096, 4096, 2 << 20, 1 << 30), pkeys=True)


# --- tests ---------------------------------------------------------------------------------------
def test_emulator_setup(cpu):
    """The CPU model has what the card needs, and the error code was found in the context."""
    assert cpu.smep and cpu.smap and cpu.pku and cpu.nx and cpu.gbpages
    assert 36 <= cpu.maxphyaddr <= 52
    assert error_code_offset() > 0


ROLES_4 = [dict(), dict(wp=False), dict(smep=True), dict(smap=True), dict(smep=True, smap=True),
           dict(smep=True, smap=True, wp=False), dict(pke=True), dict(pke=True, wp=False, smap=True),
           dict(nxe=False), dict(nxe=False, smep=True)]


@pytest.mark.parametrize("flags", ROLES_4, ids=lambda f: "+".join(f"{k}={int(v)}" for k, v in f.items()) or "default")
def test_4level_rights(long4, flags):
    """U/W/NX per level, 4 KiB/2 MiB/1 GiB leaves, CPL0/CPL3, EFLAGS.AC, and the role's
    CR0.WP, CR4.SMEP/SMAP/PKE, EFER.NXE (NX bits become reserved bits with NXE=0)."""
    h, pages, _ = long4
    rng = np.random.default_rng(zlib.crc32(repr(sorted(flags.items())).encode()))
    acc = accesses_for(pages, rng)
    role = h.role0.replace(**flags)
    pkru = random_pkru(rng, acc.shape[0]) if role.pke else 0
    r, q = compare(h, role, acc, pkru=pkru, what="4-level")
    # the batch must exercise both outcomes
    assert 0 < int((r.fault == Fault.NONE).sum()) < acc.shape[0]


def _reserved_4(h, own_levels, leaf, rng):
    """One reserved or ignored bit at one level (both kinds are compared)."""
    lvl = int(rng.choice([x for x in own_levels if x >= leaf]))
    maxpa = h.cpu.maxphyaddr
    choices = [1 << int(rng.integers(maxpa, 52)),          # above MAXPHYADDR: reserved
               1 << int(rng.integers(52, 59)),             # 58:52 ignored
               1 << int(rng.integers(9, 12))]              # 11:9 ignored
    if lvl >= 4:
        choices += [B.PT_PAGE_SIZE, 1 << 8]                 # PS reserved; bit 8 ignored (Intel)
    if lvl == leaf and leaf > 1:
        hi = 20 if leaf == 2 else 29
        choices.append(1 << int(rng.integers(13, hi + 1)))  # large-leaf reserved bits
    if lvl > leaf and lvl < 4:
        choices.append(1 << 8)                              # ignored in non-leaf
    return lvl, int(rng.choice(choices))


@pytest.mark.parametrize("seed", [11, 12])
def test_4level_reserved_bits(seed):
    h, pages, rng = _harness("4level", seed, 90, sizes=(4096, 4096, 2 << 20, 1 << 30),
                             reserved=_reserved_4)
    acc = accesses_for(pages, rng, acs=(False,))
    r, _ = compare(h, h.role0.replace(smep=True, smap=True), acc, what="4-level reserved")
    assert (r.error_code & B.PFERR_RSVD).any() and (r.fault == Fault.NONE).any()


def test_4level_noncanonical(long4):
    h, pages, _ = long4
    addrs = [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 0x1234_5678_9ABC_D000, 0x8000_0000_0000_0001]
    acc = make_accesses(np.repeat(np.array(addrs, dtype=np.uint64), 2), [0, 1] * len(addrs),
                        user=[False, True] * len(addrs))
    r, q = compare(h, h.role0, acc, what="non-canonical")
    assert (r.fault == Fault.GP).all()


@pytest.mark.parametrize("flags", [dict(), dict(smep=True, smap=True, pke=True)])
def test_5level_rights(cpu, flags):
    if not cpu.la57:
        pytest.skip("the CPU model has no LA57")
    h, pages, rng = _harness("5level", 5, 60, sizes=(4096, 4096, 2 << 20, 1 << 30), pkeys=True)
    acc = accesses_for(pages, rng)
    role = h.role0.replace(**flags)
    compare(h, role, acc, pkru=random_pkru(rng, acc.shape[0]) if role.pke else 0, what="5-level")


def test_5level_reserved_bits(cpu):
    if not cpu.la57:
        pytest.skip("the CPU model has no LA57")
    h, pages, rng = _harness("5level", 6, 60, sizes=(4096, 2 << 20), reserved=_reserved_4)
    compare(h, h.role0, accesses_for(pages, rng, acs=(False,)), what="5-level reserved")


@pytest.mark.parametrize("flags", [dict(), dict(wp=False), dict(smep=True, smap=True),
                                   dict(nxe=False, smep=True), dict(nxe=False)])
def test_pae_rights(flags):
    """PAE: rights at the PDE and PTE (PDPTEs are P-only and never changed: Q2)."""
    h, pages, rng = _harness("pae", 7, 80, sizes=(4096, 4096, 2 << 20))
    acc = accesses_for(pages, rng)
    compare(h, h.role0.replace(**flags), acc, what="PAE")


def _reserved_pae(h, own_levels, leaf, rng):
    lvl = int(rng.choice([x for x in own_levels if x >= leaf]))
    choices = [1 << int(rng.integers(h.cpu.maxphyaddr, 63)), 1 << int(rng.integers(9, 12))]
    if lvl == leaf == 2:
        choices.append(1 << int(rng.integers(13, 21)))
    return lvl, int(rng.choice(choices))


def test_pae_reserved_bits():
    h, pages, rng = _harness("pae", 8, 80, sizes=(4096, 2 << 20), reserved=_reserved_pae)
    compare(h, h.role0, accesses_for(pages, rng, acs=(False,)), what="PAE reserved")


@pytest.mark.parametrize("flags", [dict(), dict(wp=False), dict(smep=True, smap=True),
                                   dict(nxe=True), dict(nxe=True, smep=True)])
def test_32bit_rights(flags):
    """32-bit paging with 4 KiB and 4 MiB (PSE) pages; EFER.NXE=1 without SMEP must give no
    I/D bit (K5: the hardware's rule, which QEMU follows)."""
    h, pages, rng = _harness("32bit", 9, 80, sizes=(4096, 4096, 4 << 20), nx_ok=False)
    acc = accesses_for(pages, rng)
    compare(h, h.role0.replace(**flags), acc, what="32-bit")


def _reserved_32(h, own_levels, leaf, rng):
    if leaf == 2:
        return 2, 1 << 21                     # PSE-36: bit 21 reserved with MAXPHYADDR 40
    return 0, 0


def test_32bit_reserved_bits():
    h, pages, rng = _harness("32bit", 10, 60, sizes=(4096, 4 << 20), nx_ok=False,
                             reserved=_reserved_32)
    r, _ = compare(h, h.role0, accesses_for(pages, rng, acs=(False,)), what="32-bit reserved")
    assert (r.error_code & B.PFERR_RSVD).any()


def test_pk_with_other_rights():
    """PKRU denial together with U/W/SMAP denial: QEMU sets PK too (SDM; vecmmu R16), and PK
    never comes with a supervisor page or a fetch."""
    h = UnicornHarness("4level")
    va = 0x1000_0000_0000
    h.map_data(va, 0x1000, user=True, writable=False, pkey=1)             # read-only user page
    h.map_data(va + 0x1000, 0x1000, user=False, pkey=1)                   # supervisor page
    h.map_data(va + 0x2000, 0x1000, user=True, nx=True, pkey=1)           # user, NX
    AD, WD = 0b0100, 0b1000                                               # key 1
    cases = [(va + 1, 1, True, AD, 0x27), (va + 1, 1, True, WD, 0x27), (va + 1, 0, True, AD, 0x25),
             (va + 1, 1, False, AD, 0x23), (va + 1, 1, False, WD, 0x23), (va + 1, 0, False, AD, 0x21),
             (va + 0x1001, 0, True, AD, 0x05), (va + 0x1001, 1, True, WD, 0x07),
             (va + 0x2000, 2, True, AD, 0x15)]
    acc = make_accesses([c[0] for c in cases], [c[1] for c in cases], user=[c[2] for c in cases])
    pkru = np.array([c[3] for c in cases], dtype=np.uint64)
    r, q = compare(h, h.role0.replace(pke=True, smap=True), acc, pkru=pkru, what="PK")
    assert list(q["error_code"]) == [c[4] for c in cases]


def test_pae_pdpte_difference():
    """Q2, pinned: reserved PDPTE bits are #GP at CR3 for vecmmu (Intel PDPTE registers);
    QEMU ignores bits 2:1 and 8:5 and faults #PF(P|RSVD) at walk time for bits 63:52."""
    from vecmmu import PdpteError, load_pdptes
    h = UnicornHarness("pae")
    va = 0x00401000
    h.map_data(va, 0x1000)
    root = h.mmu.roots[0]
    clean = h.mmu.mem.read_u64(root)
    acc = make_accesses([va + 1], "read")
    for bit, want in ((1, 0), (2, 0), (5, 0), (8, 0), (52, 9), (63, 9)):
        h.mmu.mem.write_u64(root, clean | 1 << bit)
        with pytest.raises(PdpteError):
            load_pdptes(h.mmu.mem, h.mmu.cr3(), h.cpu.maxphyaddr)
        h.set_role(h.role0)
        h.snapshot()
        q = h.run(acc)
        assert (q["fault"][0], q["error_code"][0]) == ((Fault.PF, want) if want else (0, 0)), bit
    h.mmu.mem.write_u64(root, clean)


def test_zz_summary(capsys):
    """Not a check: prints how many accesses were compared (``pytest -s`` shows it)."""
    with capsys.disabled():
        print(f"\nunicorn differential: {STATS['compared']} accesses compared")
