"""Address spaces from /proc/PID/maps (+ smaps, pagemap) and from the pages of a trace."""
import json
import warnings

import numpy as np
import pytest

from conftest import TRUTH_FILE
from vecmmu import Fault
from vecmmu.io import TraceError, address_space_from_maps, address_space_from_trace, parse_maps
from vecmmu.io.procmaps import PM_PRESENT, read_pagemap

MAPS = """\
00400000-00401000 r--p 00000000 00:02 12                                 /prog
00401000-00403000 r-xp 00001000 00:02 12                                 /prog
00403000-00404000 rw-p 00003000 00:02 12                                 /prog
00404000-00405000 ---p 00000000 00:00 0
00405000-00406000 -w-p 00000000 00:00 0
7f0000000000-7f0000600000 rw-p 00000000 00:00 0
7ffc0000f000-7ffc00010000 --xp 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def _space(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return address_space_from_maps(MAPS, **kw)


def test_parse_maps_fields():
    v = parse_maps(MAPS)
    assert len(v) == 8
    assert int(v["start"][1]) == 0x401000 and int(v["end"][1]) == 0x403000
    assert v["perms"][1] == "r-xp" and v["path"][1] == "/prog" and v["offset"][1] == 0x1000
    assert v["path"][3] == "" and v["inode"][0] == 12 and v["dev"][0] == "00:02"


def test_rights_of_each_vma():
    sp = _space()
    w = sp.walker()
    addrs = [0x400000, 0x401000, 0x403000, 0x404000, 0x405000, 0x7F0000000000, 0x7FFC0000F000,
             0xFFFFFFFFFF600000]
    r = w.translate(addrs, "read", user=True)
    assert list(r.fault[:3]) == [0, 0, 0]
    assert r.fault[3] == Fault.PF and r.error_code[3] == 4        # ---p: not present
    assert r.fault[4] == Fault.NONE and r.acc[4] & 2              # -w-: writable (and readable)
    assert r.fault[7] == Fault.PF                                   # [vsyscall] left out
    acc = [int(a) for a in r.acc[:3]]
    assert acc == [0b0101, 0b1101, 0b0111]                          # r-u-, r-ux, rwu-
    wr = w.translate([0x400000, 0x403000], "write", user=True)
    assert list(wr.fault) == [Fault.PF, Fault.NONE] and wr.error_code[0] == 0x7
    fx = w.translate([0x400000, 0x401000, 0x7FFC0000F000], "fetch", user=True)
    assert list(fx.fault) == [Fault.PF, Fault.NONE, Fault.NONE]
    assert list(sp.vmas["pages"]) == [1, 2, 1, 0, 1, 1536, 1]
    assert list(sp.region_of(np.array(addrs[:7], np.uint64))) == [0, 1, 2, 3, 4, 5, 6]


def test_huge_pages_where_aligned():
    sp = _space(huge=True)
    r = sp.walker().translate([0x7F0000000000, 0x7F0000200000, 0x7F0000400000, 0x400000], user=True)
    assert list(r.page_size) == [2 << 20] * 3 + [4096]
    assert list(sp.vmas["pages"])[5] == 3


def test_maps_errors():
    with pytest.raises(TraceError, match=r"<maps text>:2: not a maps line"):
        parse_maps("00400000-00401000 r--p 00000000 00:02 12 /a\nthis is not maps\n")
    with pytest.raises(TraceError, match=r":2: VMA 0x500000-0x501000 overlaps or precedes"):
        parse_maps("00600000-00601000 r--p 00000000 00:02 12\n00500000-00501000 r--p 0 00:02 12\n")
    with pytest.raises(TraceError, match="not page-aligned"):
        parse_maps("00400010-00401000 r--p 00000000 00:02 12\n")


def test_smaps_pkey_and_hugetlb(tmp_path):
    p = tmp_path / "smaps"
    p.write_text("7f0000000000-7f0000400000 rw-p 00000000 00:0f 9 /anon_hugepage (deleted)\n"
                 "Size:               4096 kB\nKernelPageSize:     2048 kB\nProtectionKey:         0\n"
                 "7f0000400000-7f0000402000 --xp 00000000 00:00 0\nKernelPageSize:        4 kB\n"
                 "ProtectionKey:         1\nVmFlags: ex mr mw me ac sd\n")
    sp = address_space_from_maps(p)
    r = sp.walker(pkru=0b1100).translate([0x7F0000000000, 0x7F0000400000], "read", user=True)
    assert int(r.page_size[0]) == 2 << 20
    assert r.pkey[1] == 1 and r.fault[1] == Fault.PF and r.error_code[1] & 0x20   # execute-only
    f = sp.walker(pkru=0b1100).translate([0x7F0000400000], "fetch", user=True)
    assert f.fault[0] == Fault.NONE


def test_pagemap_frames_absent_pages_and_thp(tmp_path):
    vmas = parse_maps(MAPS)
    vpn = np.array([0x400, 0x401, 0x402, 0x403], np.uint64)
    ent = np.array([PM_PRESENT | 0x1234, PM_PRESENT | 0x99999, 0, PM_PRESENT | 0x77], np.uint64)
    thp = np.arange(0x7F0000000, 0x7F0000200, dtype=np.uint64)           # first 2 MiB: a THP
    vpn = np.concatenate([vpn, thp])
    ent = np.concatenate([ent, np.uint64(PM_PRESENT) | (np.uint64(0x40000) + np.arange(512, dtype=np.uint64))])
    npz = tmp_path / "pm.npz"
    np.savez(npz, vpn=vpn, entry=ent)
    assert np.array_equal(read_pagemap(npz)[0], vpn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = address_space_from_maps(vmas, npz, huge=True)
    r = sp.walker().translate([0x400010, 0x401020, 0x402000, 0x403000, 0x7F0000001008,
                               0x7F0000200000], user=True)
    assert [int(g) for g in r.gpa[:2]] == [0x1234010, 0x99999020]
    assert r.fault[2] == Fault.PF                        # not present in the pagemap: unmapped
    assert int(r.gpa[3]) == 0x77000
    assert int(r.gpa[4]) == 0x40001008 and int(r.page_size[4]) == 2 << 20
    assert r.fault[5] == Fault.PF                        # the rest of the VMA was not present
    # a raw pagemap-layout (sparse) file gives the same
    raw = tmp_path / "pagemap"
    with open(raw, "wb") as f:
        for v, e in zip(vpn, ent):
            f.seek(int(v) * 8)
            f.write(int(e).to_bytes(8, "little"))
    v2, e2 = read_pagemap(raw, vmas)
    assert set(zip(v2[e2 != 0].tolist(), e2[e2 != 0].tolist())) == \
        set(zip(vpn[ent != 0].tolist(), ent[ent != 0].tolist()))


def test_pagemap_without_pfns_warns():
    vpn = np.array([0x400], np.uint64)
    ent = np.array([PM_PRESENT], np.uint64)
    with pytest.warns(UserWarning, match="PFN 0"):
        sp = address_space_from_maps(MAPS, (vpn, ent))
    assert sp.walker().translate([0x400000], user=True).fault[0] == Fault.NONE


def test_space_from_trace_observed_rights():
    from vecmmu import make_accesses
    t = make_accesses([0x400000, 0x400ffe, 0x600000, 0x600008, 0x7FFC00000000, 0xFFFF800000000000],
                      ["fetch", "read", "read", "write", "write", "read"], size=[1, 4, 8, 8, 8, 8],
                      asid=[0, 0, 0, 0, 1, 0])
    sp = address_space_from_trace(t)
    w = sp.walker()
    assert len(w.cr3) == 2
    r = w.translate([0x400000, 0x401000, 0x600000, 0x7FFC00000000], ["fetch", "read", "write", "write"],
                    user=True, asid=[0, 0, 0, 1])
    assert list(r.fault) == [0, 0, 0, 0]                 # 0x401000: the crossing access's 2nd page
    r2 = w.translate([0x401000, 0x7FFC00000000, 0xFFFF800000000000], ["write", "read", "read"],
                     user=True, asid=[0, 0, 0])
    assert list(r2.fault) == [Fault.PF, Fault.PF, Fault.PF]   # read-only page; other asid; kernel half
    assert list(sp.vmas["perms"]) == ["r-xp", "r--p", "rw-p", "rw-p"]
    sp_all = address_space_from_trace(t, rights="all")
    assert sp_all.walker().translate([0x401000], "write", user=True).fault[0] == 0


@pytest.mark.dump
def test_truth_maps_and_pagemap_rebuild_the_dumped_process():
    """The real guest's maps/smaps and pagemap entries (from the truth file) rebuild page
    tables that translate every page of the test program to its dumped frame, with the
    page sizes of the dump (THP and hugetlb detected from the frames)."""
    if not TRUTH_FILE.exists():
        pytest.skip("truth file not present")
    truth = json.loads(TRUTH_FILE.read_text())
    maps = "\n".join(truth["process"]["maps"]) + "\n"
    pages = truth["pages"]
    vpn = np.array([int(p["va"], 16) >> 12 for p in pages], np.uint64)
    ent = np.array([int(p["pagemap_entry"], 16) for p in pages], np.uint64)
    sp = address_space_from_maps(maps, (vpn, ent), huge=True)
    r = sp.walker().translate(vpn << np.uint64(12), "read", user=True)
    for i, p in enumerate(pages):
        if p["present"]:
            assert r.fault[i] == Fault.NONE and int(r.gpa[i]) == int(p["pa"], 16), p["va"]
            assert int(r.page_size[i]) == p["walk"]["page_size"], p["va"]
            # the VMA's rights: the shared zero page of a rw-p VMA is read-only in the real
            # PTE until the first write (documented: vecmmu maps the VMA's rights)
            if p["region"] != "zero":
                assert bool(r.acc[i] & 2) == p["expected_from_smaps"]["writable"], p["va"]
            assert (not r.acc[i] & 8) == p["expected_from_smaps"]["nx"]
        else:
            assert r.fault[i] == Fault.PF, p["va"]
