"""The real Linux guest dump: every page of its truth file translates exactly as recorded."""
import numpy as np
import pytest

from vecmmu import Fault, PageWalk

pytestmark = pytest.mark.dump

LEVEL = {"PML5E": 5, "PML4E": 4, "PDPTE": 3, "PDE": 2, "PTE": 1}


def _walker(dump, truth, **kw):
    regs = {k: int(truth["registers"][k], 16) for k in ("cr0", "cr3", "cr4", "efer")}
    got = dump.regs(0)
    assert {k: got[k] for k in ("cr0", "cr3", "cr4")} == {k: regs[k] for k in ("cr0", "cr3", "cr4")}
    vendor = "amd" if "AMD" in truth["guest"]["cpu_vendor"] else "intel"
    return PageWalk.from_regs(dump.mem, **regs, maxphyaddr=truth["paging"]["maxphyaddr"],
                              vendor=vendor, **kw)


@pytest.mark.parametrize("semantics", ["hardware", "kvm"])
def test_user_pages(real_dump, semantics):
    dump, truth = real_dump
    walk = _walker(dump, truth, semantics=semantics)
    pages = truth["pages"]
    va = np.array([int(p["va"], 16) for p in pages], dtype=np.uint64)
    r = walk.translate(va, kind="read", user=True, trace=True)
    present = np.array([p["present"] for p in pages])
    assert present.sum() == 1570 and (~present).sum() == 10
    for i, p in enumerate(pages):
        w = p["walk"]
        steps = [(LEVEL[s["level"]], int(s["entry_pa"], 16), int(s["entry"], 16)) for s in w["steps"]]
        got = [(lvl, int(r.trace_addr[i, lvl - 1]), int(r.trace_value[i, lvl - 1]) & (2**64 - 1))
               for lvl in range(4, 0, -1) if r.trace_addr[i, lvl - 1] >= 0]
        assert got == steps, p["va"]
        if p["present"]:
            assert r.fault[i] == Fault.NONE, p["va"]
            assert int(r.gpa[i]) == int(p["pa"], 16)
            assert int(r.page_size[i]) == w["page_size"]
            assert int(r.leaf_level[i]) == LEVEL[w["leaf_level"]]
            assert bool(r.acc[i] & 2) == w["writable"] == p["expected_from_smaps"]["writable"]
            assert bool(r.acc[i] & 4) == w["user"] is True
            assert (not r.acc[i] & 8) == w["nx"] == p["expected_from_smaps"]["nx"]
            assert int(r.pkey[i]) == w["pkey"] == p["expected_from_smaps"]["pkey"]
            assert int(r.entry_value[i]) == int(w["leaf"], 16)
        else:
            assert r.fault[i] == Fault.PF, p["va"]
            assert int(r.error_code[i]) == 0x4          # user read, not present
            assert int(r.fault_level[i]) == steps[-1][0]
            assert int(r.entry_addr[i]) == steps[-1][1]


def test_pkey_pages_fault_under_pkru(real_dump):
    """Pages with pkey 1 and 2 fault for user data accesses once PKRU denies those keys."""
    dump, truth = real_dump
    walk = _walker(dump, truth)
    pages = [p for p in truth["pages"] if p["present"]]
    va = np.array([int(p["va"], 16) for p in pages], dtype=np.uint64)
    pkeys = np.array([p["walk"]["pkey"] for p in pages])
    assert set(pkeys) >= {0, 1, 2}
    pkru = (1 << 2) | (1 << 4)         # AD for keys 1 and 2
    r = walk.translate(va, kind="read", user=True, pkru=pkru)
    assert np.array_equal(r.fault == Fault.PF, pkeys > 0)
    assert np.all(r.error_code[pkeys > 0] == 0x25)     # P | U | PK
    f = walk.translate(va, kind="fetch", user=True, pkru=pkru)   # fetches never take PK
    assert not np.any((f.error_code & 0x20) != 0)


def test_kernel_pages(real_dump):
    dump, truth = real_dump
    walk = _walker(dump, truth)
    kp = truth["kernel_pages"]
    va = np.array([int(p["va"], 16) for p in kp], dtype=np.uint64)
    r = walk.translate(va, kind="read", user=False)
    assert np.all(r.fault == Fault.NONE)
    assert [int(x) for x in r.gpa] == [int(p["pa"], 16) for p in kp]
    assert [int(x) for x in r.page_size] == [p["page_size"] for p in kp]
    assert [bool(x & 2) for x in r.acc] == [p["writable"] for p in kp]
    assert [not (x & 8) for x in r.acc] == [p["nx"] for p in kp]
    assert [bool(x & 4) for x in r.acc] == [p["user"] for p in kp]
    # user-mode reads of kernel pages fault with P=1 (present, supervisor-only)
    u = walk.translate(va, kind="read", user=True)
    assert np.all((u.fault == Fault.PF) & (u.error_code == 0x5))
