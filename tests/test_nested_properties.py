"""Property tests: the jitted 2-D walk (and tdp_walk) equal the nested reference walker on
random guest tables behind random EPT or NPT tables, in every guest mode, both semantics."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_tdp as rt
from conftest import ref_reader
from kernel_adapter import nested_row
from randtables import random_addresses, random_memory, random_tdp
from vecmmu import CpuRole, EptRole, NptRole, PageWalk, PagingMode

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
MODES = [PagingMode.NONE, PagingMode.BIT32, PagingMode.PAE, PagingMode.LEVEL4, PagingMode.LEVEL5]

cases = st.fixed_dictionaries(dict(
    mode=st.sampled_from(MODES), wp=st.booleans(), pse=st.booleans(), smep=st.booleans(),
    smap=st.booleans(), pke=st.booleans(), nxe=st.booleans(),
    maxphyaddr=st.sampled_from([32, 36, 40, 46, 48]), gbpages=st.booleans(),
    tdp=st.sampled_from(["ept", "npt"]), tdp5=st.booleans(), ad=st.booleans(),
    execonly=st.booleans(), mbec=st.booleans(), huge=st.sampled_from([1, 2, 3]),
    adv=st.booleans(), gmet=st.booleans(), l1nxe=st.booleans(), l1smep=st.booleans(),
    seed=st.integers(0, 2**31), semantics=st.sampled_from(["hardware", "kvm"]),
))


def _setup(c):
    role = CpuRole(mode=c["mode"], wp=c["wp"], pse=c["pse"], smep=c["smep"], smap=c["smap"],
                   pke=c["pke"], nxe=c["nxe"], maxphyaddr=c["maxphyaddr"], gbpages=c["gbpages"],
                   vendor="amd" if c["tdp"] == "npt" else "intel")
    pte = 4 if role.mode is PagingMode.BIT32 else 8
    gmem, frames = random_memory(c["seed"], pte, role.maxphyaddr,
                                 p_pkey=0.05 if role.mode is PagingMode.PAE else 0.5)
    levels = 5 if c["tdp5"] else 4
    host, root = random_tdp(c["seed"] + 7, c["tdp"], levels, 46, mbec=c["mbec"])(gmem)
    if c["tdp"] == "ept":
        trole = EptRole(levels=levels, ad=c["ad"], execonly=c["execonly"], mbec=c["mbec"],
                        huge_level=c["huge"], advanced_info=c["adv"] or c["mbec"], maxphyaddr=46)
        troot = trole.eptp(root)
        tdict = dict(kind="ept", eptp=troot, execonly=c["execonly"], mbec=c["mbec"],
                     huge_level=c["huge"], advanced_info=c["adv"] or c["mbec"], maxphyaddr=46)
    else:
        trole = NptRole(mode=PagingMode.LEVEL5 if c["tdp5"] else PagingMode.LEVEL4, nxe=c["l1nxe"],
                        gmet=c["gmet"], l1_smep=c["l1smep"], maxphyaddr=46)
        troot = root
        tdict = dict(kind="npt", ncr3=root, cr4=(1 << 5) | ((1 << 12) if c["tdp5"] else 0),
                     efer=(1 << 8) | (1 << 10) | ((1 << 11) if c["l1nxe"] else 0),
                     gmet=c["gmet"], l1_smep=c["l1smep"], maxphyaddr=46)
    rng = np.random.default_rng(c["seed"] + 1)
    cr3 = int(rng.choice(frames))
    if role.mode is PagingMode.PAE:
        cr3 += int(rng.integers(0, 128)) * 32
    pdptes = None
    if role.mode is PagingMode.PAE and not (c["tdp"] == "npt" and c["semantics"] == "hardware"):
        pdptes = rng.choice(np.array(frames + [5 << 20], dtype=np.uint64), size=(1, 4))
        pdptes |= (rng.random((1, 4)) < 0.85).astype(np.uint64)
    return role, host, trole, troot, tdict, cr3, pdptes, rng


@settings(max_examples=150, **SETTINGS)
@given(c=cases)
def test_nested_kernel_equals_reference(c):
    role, host, trole, troot, tdict, cr3, pdptes, rng = _setup(c)
    sem = c["semantics"]
    tw = PageWalk(trole, host, troot, semantics=sem)
    walk = PageWalk(role, host, cr3, pdptes=pdptes, semantics=sem, tdp=tw)
    n = 120
    va_bits = {PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}.get(role.mode, 32)
    addr = random_addresses(rng, n, va_bits)
    kind = rng.integers(0, 3, n)
    user = rng.random(n) < 0.5
    ac = rng.random(n) < 0.3
    pkru = rng.integers(0, 1 << 32, n, dtype=np.uint64)
    res = walk.translate(addr, kind, user=user, ac=ac, pkru=pkru, trace=True)
    read = ref_reader(host)
    regs = dict(role.registers(), cr3=cr3, maxphyaddr=role.maxphyaddr, gbpages=role.gbpages,
                vendor=role.vendor)
    if pdptes is not None:
        regs["pdptes"] = [int(x) for x in pdptes[0]]
    for i in range(n):
        acc = dict(addr=int(addr[i]), kind=int(kind[i]), user=bool(user[i]), ac=bool(ac[i]),
                   implicit=False, stack=False)
        exp = rt.translate_nested(read, dict(regs, pkru=int(pkru[i])), tdict, acc, sem)
        got = nested_row(res, i)
        for key in got:
            assert got[key] == exp[key], (key, got[key], exp[key], str(role), tdict, sem, i, hex(acc["addr"]), acc)


@settings(max_examples=60, **SETTINGS)
@given(c=cases)
def test_tdp_walk_equals_reference(c):
    _role, host, trole, troot, tdict, _cr3, _pd, rng = _setup(c)
    sem = c["semantics"]
    tw = PageWalk(trole, host, troot, semantics=sem)
    n = 200
    gpa = rng.integers(0, 11 << 20, n, dtype=np.uint64)
    kind = rng.integers(0, 3, n)
    user = rng.random(n) < 0.5
    table = rng.random(n) < 0.3
    gacc = rng.integers(0, 16, n)
    res = tw.translate(gpa, kind, user=user, table=table, guest_acc=gacc, trace=True)
    read = ref_reader(host)
    c_ = res.columns()
    for i in range(n):
        # every NPT access is a user access unless GMET (vecmmu forces U; the reference's
        # standalone API leaves it to the caller)
        u = bool(user[i]) or (tdict["kind"] == "npt" and not tdict["gmet"])
        exp = rt.tdp_translate(read, tdict, int(gpa[i]), dict(kind=int(kind[i]), user=u,
                                                              table=bool(table[i]),
                                                              guest_acc=int(gacc[i])), sem)
        ctx = (tdict, sem, i, hex(int(gpa[i])), int(kind[i]), bool(user[i]), bool(table[i]))
        from kernel_adapter import FAULTS, STAGES
        from vecmmu import Fault
        assert FAULTS[Fault(int(c_["fault"][i]))] == exp["fault"], ctx
        assert STAGES[int(c_["stage"][i])] == exp["stage"], ctx
        assert int(c_["error_code"][i]) == exp["error_code"], ctx
        assert int(c_["exit_qual"][i]) == exp["exit_qual"], ctx
        assert int(c_["fault_level"][i]) == exp["fault_level"], ctx
        assert int(c_["entry_addr"][i]) == exp["entry_addr"], ctx
        assert int(c_["entry_value"][i]) == exp["entry_value"], ctx
        assert int(c_["refs"][i]) == exp["refs"], ctx
        assert (int(c_["hpa"][i]) if res.has_hpa[i] else None) == exp["hpa"], ctx
        assert int(c_["leaf_level"][i]) == exp["tdp_leaf_level"], ctx
        if exp["tdp_leaf_level"]:
            assert int(c_["acc"][i]) == exp["tdp_acc"], ctx


@settings(max_examples=80, **SETTINGS)
@given(c=cases)
def test_nested_memo_equals_walking_every_access(c):
    """The 2-D walk memo (``memo=True``, the default without a trace): accesses that
    repeat pages, access kinds and PKRU values give exactly what walking each one gives,
    which the reference walker confirms on a sample."""
    role, host, trole, troot, tdict, cr3, pdptes, rng = _setup(c)
    sem = c["semantics"]
    tw = PageWalk(trole, host, troot, semantics=sem)
    walk = PageWalk(role, host, cr3, pdptes=pdptes, semantics=sem, tdp=tw)
    va_bits = {PagingMode.LEVEL4: 48, PagingMode.LEVEL5: 57}.get(role.mode, 32)
    pages = random_addresses(rng, 24, va_bits) & ~np.uint64(0xFFF)
    n = 500
    addr = pages[rng.integers(0, 24, n)] | rng.integers(0, 4096, n).astype(np.uint64)
    kind = rng.integers(0, 3, n)
    user = rng.random(n) < 0.5
    ac = rng.random(n) < 0.3
    pkru = rng.choice(np.array([0, 0x5555_5554, 0xC], np.uint64), n)
    got = walk.translate(addr, kind, user=user, ac=ac, pkru=pkru)
    every = walk.translate(addr, kind, user=user, ac=ac, pkru=pkru, memo=False)
    for col, v in every.columns().items():
        assert np.array_equal(v, got.columns()[col]), col
    read = ref_reader(host)
    regs = dict(role.registers(), cr3=cr3, maxphyaddr=role.maxphyaddr, gbpages=role.gbpages,
                vendor=role.vendor)
    if pdptes is not None:
        regs["pdptes"] = [int(x) for x in pdptes[0]]
    for i in range(0, n, 10):
        acc = dict(addr=int(addr[i]), kind=int(kind[i]), user=bool(user[i]), ac=bool(ac[i]),
                   implicit=False, stack=False)
        exp = rt.translate_nested(read, dict(regs, pkru=int(pkru[i])), tdict, acc, sem)
        row = nested_row(got, i)
        for key in row:
            if key.startswith("trace"):
                continue
            assert row[key] == exp[key], (key, row[key], exp[key], str(role), tdict, sem, i)
