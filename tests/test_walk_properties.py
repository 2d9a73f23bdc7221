"""Property tests: the jitted cpu_walk equals the reference walker on random tables.

Random garbage tables (reserved bits, huge pages, loops, entries outside memory), random
registers (every mode, WP/SMEP/SMAP/PKE/NXE/PSE, MAXPHYADDR, 1 GiB support, vendor),
random PKRU and random accesses, in both semantics; with and without A/D write-back.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from conftest import ref_reader
from randtables import random_addresses, random_memory
from vecmmu import CpuRole, Fault, PageWalk, PagingMode

FAULT_OF = {"none": Fault.NONE, "pf": Fault.PF, "gp": Fault.GP, "ss": Fault.SS,
            "unbacked": Fault.UNBACKED}
MODES = [PagingMode.NONE, PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]

roles = st.builds(
    dict,
    mode=st.sampled_from(MODES),
    wp=st.booleans(), pse=st.booleans(), smep=st.booleans(), smap=st.booleans(),
    pke=st.booleans(), nxe=st.booleans(),
    maxphyaddr=st.sampled_from([32, 36, 39, 40, 46, 52]),
    gbpages=st.booleans(), vendor=st.sampled_from(["intel", "amd"]),
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _setup(r, seed):
    role = CpuRole(**r)
    regs_in = role.registers()
    pte = 4 if role.mode is PagingMode.BIT32 else 8
    mem, frames = random_memory(seed, pte, role.maxphyaddr,
                                p_pkey=0.05 if role.mode is PagingMode.PAE else 0.5)
    rng = np.random.default_rng(seed + 1)
    cr3 = int(rng.choice(frames))
    if role.mode is PagingMode.PAE:
        cr3 += int(rng.integers(0, 128)) * 32          # PDPT anywhere 32-byte aligned
    cr3s = [cr3, int(rng.choice(frames))]
    pdptes = None
    if role.mode is PagingMode.PAE:                    # registers as given (only P checked)
        pdptes = rng.choice(np.array(frames + [5 << 20], dtype=np.uint64), size=(2, 4))
        pdptes |= (rng.random((2, 4)) < 0.8).astype(np.uint64)
        pdptes[:, 0] = np.uint64(0x1001)
    return role, regs_in, mem, cr3s, pdptes, rng


def _accesses(rng, role, n):
    va_bits = {PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}.get(role.mode, 32)
    return dict(addr=random_addresses(rng, n, va_bits),
                kind=rng.integers(0, 3, n).astype(np.uint8),
                user=(rng.random(n) < 0.5), ac=(rng.random(n) < 0.3),
                implicit=(rng.random(n) < 0.1), stack=(rng.random(n) < 0.1),
                asid=rng.integers(0, 2, n), pkru=rng.integers(0, 1 << 32, n, dtype=np.uint64))


def _ref_regs(role, regs_in, cr3, pdpte_row, pkru):
    return dict(regs_in, cr3=cr3, maxphyaddr=role.maxphyaddr, gbpages=role.gbpages,
                vendor=role.vendor, pkru=int(pkru),
                pdptes=None if pdpte_row is None else [int(x) for x in pdpte_row])


def _compare_row(r, i, exp, ctx):
    assert int(r.fault[i]) == FAULT_OF[exp["fault"]], ctx
    assert int(r.error_code[i]) == exp["error_code"], ctx
    assert int(r.fault_level[i]) == exp["fault_level"], ctx
    assert int(r.entry_addr[i]) == exp["entry_addr"], ctx
    assert int(r.entry_value[i]) == exp["entry_value"], ctx
    assert int(r.leaf_level[i]) == exp["leaf_level"], ctx
    assert int(r.page_size[i]) == exp["page_size"], ctx
    assert int(r.acc[i]) == exp["acc"], ctx
    assert int(r.pkey[i]) == exp["pkey"], ctx
    assert int(r.refs[i]) == exp["refs"], ctx
    assert bool(r.has_gpa[i]) == (exp["gpa"] is not None), ctx
    if exp["gpa"] is not None:
        assert int(r.gpa[i]) == exp["gpa"], ctx
    if exp["fault"] == "pf":
        assert int(r.cr2[i]) == exp["cr2"], ctx
    got_trace = [(lvl, int(r.trace_addr[i, lvl - 1]), int(r.trace_value[i, lvl - 1]) & (2**64 - 1))
                 for lvl in range(5, 0, -1) if r.trace_addr[i, lvl - 1] >= 0]
    assert got_trace == [tuple(t) for t in exp["trace"]], ctx


@settings(max_examples=120, **SETTINGS)
@given(r=roles, seed=st.integers(0, 2**31), semantics=st.sampled_from(["hardware", "kvm"]),
       prefetch=st.booleans())
def test_kernel_equals_reference(r, seed, semantics, prefetch):
    role, regs_in, mem, cr3s, pdptes, rng = _setup(r, seed)
    walk = PageWalk(role, mem, cr3s, pdptes=pdptes, semantics=semantics)
    a = _accesses(rng, role, 300)
    pkru = a.pop("pkru")
    res = walk.translate(a["addr"], a["kind"], user=a["user"], ac=a["ac"], implicit=a["implicit"],
                         stack=a["stack"], asid=a["asid"], pkru=pkru, trace=True,
                         prefetch=prefetch)
    read = ref_reader(mem)
    for i in range(len(res)):
        asid = int(a["asid"][i])
        regs = _ref_regs(role, regs_in, cr3s[asid], None if pdptes is None else pdptes[asid], pkru[i])
        acc = dict(addr=int(a["addr"][i]), kind=int(a["kind"][i]), user=bool(a["user"][i]),
                   ac=bool(a["ac"][i]), implicit=bool(a["implicit"][i]), stack=bool(a["stack"][i]))
        exp = ref.translate(read, regs, acc, semantics=semantics)
        _compare_row(res, i, exp, (str(role), semantics, i, hex(acc["addr"]), acc))


@settings(max_examples=60, **SETTINGS)
@given(r=roles, seed=st.integers(0, 2**31), semantics=st.sampled_from(["hardware", "kvm"]),
       threads=st.sampled_from([1, 2]))
def test_ad_trace_order_equals_reference(r, seed, semantics, threads):
    """A/D write-back in trace order: reported values and final memory equal the reference
    applying each access's writes before the next access; independent of thread count."""
    role, regs_in, mem, cr3s, pdptes, rng = _setup(r, seed)
    before = {s.name: mem.backings[s.backing].copy() for s in mem.slots}
    walk = PageWalk(role, mem, cr3s, pdptes=pdptes, semantics=semantics)
    a = _accesses(rng, role, 200)
    pkru = a.pop("pkru")
    res = walk.translate(a["addr"], a["kind"], user=a["user"], ac=a["ac"], implicit=a["implicit"],
                         asid=a["asid"], pkru=pkru, trace=True, ad="trace", threads=threads,
                         chunk=64)
    # the reference, on a private copy of the starting memory
    from vecmmu import PhysMem
    rmem = PhysMem()
    for s in mem.slots:
        rmem.add_slot(s.base, before[s.name].copy(), name=s.name)
    read = ref_reader(rmem)
    for i in range(len(res)):
        asid = int(a["asid"][i])
        regs = _ref_regs(role, regs_in, cr3s[asid], None if pdptes is None else pdptes[asid], pkru[i])
        acc = dict(addr=int(a["addr"][i]), kind=int(a["kind"][i]), user=bool(a["user"][i]),
                   ac=bool(a["ac"][i]), implicit=bool(a["implicit"][i]))
        exp = ref.translate(read, regs, acc, semantics=semantics, ad=True)
        _compare_row(res, i, exp, (str(role), semantics, i, hex(acc["addr"])))
        for addr, width, value in exp["ad_writes"]:
            (rmem.write_u32 if width == 4 else rmem.write_u64)(addr, value)
    for s in mem.slots:
        assert np.array_equal(mem.backings[s.backing], rmem.backings[rmem.slot_of(s.base).backing]), s.name


@settings(max_examples=25, **SETTINGS)
@given(r=roles, seed=st.integers(0, 2**31))
def test_snapshot_mode(r, seed):
    """Snapshot A/D: every access sees the starting memory; the final memory is the same as
    in trace order."""
    role, regs_in, mem, cr3s, pdptes, rng = _setup(r, seed)
    mem2 = type(mem)()
    for s in mem.slots:
        mem2.add_slot(s.base, mem.backings[s.backing].copy(), name=s.name)
    a = _accesses(rng, role, 200)
    a.pop("pkru")
    kw = dict(user=a["user"], ac=a["ac"], asid=a["asid"], trace=True)
    plain = PageWalk(role, mem, cr3s, pdptes=pdptes).translate(a["addr"], a["kind"], **kw)
    snap = PageWalk(role, mem, cr3s, pdptes=pdptes).translate(a["addr"], a["kind"], ad="snapshot",
                                                              chunk=50, **kw)
    PageWalk(role, mem2, cr3s, pdptes=pdptes).translate(a["addr"], a["kind"], ad="trace", **kw)
    for col in plain.columns():
        assert np.array_equal(plain.columns()[col], snap.columns()[col]), col
    assert np.array_equal(plain.trace_value, snap.trace_value)
    for s, s2 in zip(mem.slots, mem2.slots):
        assert np.array_equal(mem.backings[s.backing], mem2.backings[s2.backing])


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_results(threads):
    role = CpuRole.for_mode("4level", smap=True, smep=True, pke=True)
    mem, frames = random_memory(7, 8, 46)
    walk = PageWalk(role, mem, frames[3])
    rng = np.random.default_rng(3)
    a = _accesses(rng, role, 50_000)
    base = walk.translate(a["addr"], a["kind"], user=a["user"], threads=1, chunk=4096,
                          prefetch=False)
    for prefetch in (False, True):
        got = walk.translate(a["addr"], a["kind"], user=a["user"], threads=threads,
                             chunk=1 << 20, prefetch=prefetch)
        for col in base.columns():
            assert np.array_equal(base.columns()[col], got.columns()[col]), (col, prefetch)


@settings(max_examples=20, **SETTINGS)
@given(r=roles, seed=st.integers(0, 2**31))
def test_grouped_order_same_results(r, seed):
    """order='grouped' walks each chunk grouped by (address space, 2 MiB region) and
    returns exactly what input order returns, in input order."""
    role, regs_in, mem, cr3s, pdptes, rng = _setup(r, seed)
    walk = PageWalk(role, mem, cr3s, pdptes=pdptes)
    a = _accesses(rng, role, 500)
    kw = dict(user=a["user"], ac=a["ac"], asid=a["asid"], pkru=a["pkru"], trace=True)
    base = walk.translate(a["addr"], a["kind"], prefetch=False, **kw)
    got = walk.translate(a["addr"], a["kind"], order="grouped", chunk=128, prefetch=True, **kw)
    for col in base.columns():
        assert np.array_equal(base.columns()[col], got.columns()[col]), col
    assert np.array_equal(base.trace_value, got.trace_value)
