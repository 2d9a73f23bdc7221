"""Result frames, page-crossing accesses, and clear errors for bad input."""
import numba
import numpy as np
import pandas as pd
import pytest

from vecmmu import Fault, Mmu, PageWalk, PhysMem, make_accesses


@pytest.fixture(scope="module")
def guest():
    mmu = Mmu.for_mode("4level", ram_size=64 << 20)
    mmu.map(0x400000, 0x1000, pa=0x100000, user=True)
    return mmu


@pytest.mark.nojit
def test_frame_types_and_na(guest):
    r = guest.walker().translate([0x400010, 0x401000, 1 << 47], "read", user=True)
    df = r.to_frame()
    assert str(df["addr"].dtype) == "UInt64" and str(df["gpa"].dtype) == "UInt64"
    assert isinstance(df["fault"].dtype, pd.CategoricalDtype)
    assert list(df["fault"].astype(str)) == ["none", "#PF", "#GP"]
    assert df["gpa"][0] == 0x100010 and df["gpa"].isna().tolist() == [False, True, True]
    assert df["cr2"].isna().tolist() == [True, False, True] and df["cr2"][1] == 0x401000
    assert df["entry_addr"].isna().tolist() == [False, False, True]
    assert df["page_size"][0] == "4K" and df["page_size"].isna().tolist() == [False, True, True]
    assert df["rights"][0] == "rwux"
    assert list(df["kind"].astype(str)) == ["read"] * 3
    assert list(df["privilege"].astype(str)) == ["user"] * 3


def test_trace_frame(guest):
    r = guest.walker().translate([0x400010], trace=True)
    t = r.trace_frame()
    assert list(t["level"]) == [4, 3, 2, 1]
    assert int(t["entry_value"].iloc[-1]) & ~0xFFF == 0x100000
    with pytest.raises(ValueError, match="trace=True"):
        guest.walker().translate([0x400010]).trace_frame()


def test_page_crossing_access_is_two_translations(guest):
    r = guest.walker().translate([0x400ffe, 0x400100], "write", size=[4, 8], user=True)
    assert list(r.access) == [0, 0, 1] and list(r.part) == [0, 1, 0]
    assert list(r.fault) == [Fault.NONE, Fault.PF, Fault.NONE]
    assert int(r.addr[1]) == 0x401000 and int(r.error_code[1]) == 0x6


@pytest.mark.nojit
def test_split_page_crossing_matches_the_rule():
    """Every field of every row, against the rule written out in numpy: an access of
    ``size`` bytes at ``addr`` crosses when (addr mod 4096) + size > 4096; its second row
    starts at the next page (wrapping at 2**64) and keeps the other fields."""
    from vecmmu.access import split_page_crossing
    rng = np.random.default_rng(4)
    n = 5000 if numba.config.DISABLE_JIT else 200_003
    addr = rng.integers(0, 1 << 64, n, dtype=np.uint64)
    addr[:50] = np.uint64(2**64 - 3)
    size = rng.integers(1, 4097, n)
    small = rng.random(n) < 0.5                         # most real accesses: 1..8 bytes
    size[small] = rng.integers(1, 9, int(small.sum()))
    b = make_accesses(addr, rng.integers(0, 3, n), user=rng.integers(0, 2, n), size=size,
                      asid=rng.integers(0, 7, n), stack=rng.integers(0, 2, n))
    rows, index, part = split_page_crossing(b, parts=3)
    cross = (addr & np.uint64(0xFFF)) + size.astype(np.uint64) > np.uint64(4096)
    assert cross.any() and not cross.all()
    want_index = np.repeat(np.arange(n), 1 + cross)
    assert np.array_equal(index, want_index)
    want_part = np.zeros(want_index.shape[0], np.uint8)
    want_part[1:][want_index[1:] == want_index[:-1]] = 1
    assert np.array_equal(part, want_part)
    assert split_page_crossing(b)[0].tobytes() == rows.tobytes()   # parts: one per thread
    want = b[want_index]
    want["addr"] = np.where(want_part == 1, (want["addr"] | np.uint64(0xFFF)) + np.uint64(1),
                            want["addr"])
    assert rows.dtype == b.dtype and rows.tobytes() == want.tobytes()
    same = make_accesses(np.arange(10, dtype=np.uint64) * 4096, "read", size=8)
    assert split_page_crossing(same)[0] is same


@pytest.mark.parametrize("kw,msg", [
    (dict(kind="jump"), "read/write/fetch"),
    (dict(kind=[0, 3]), "kind\\[1\\]"),
    (dict(user=[0, 2]), "user\\[1\\]"),
    (dict(size=0), "size"),
    (dict(asid=[0, 5]), "asid\\[1\\] = 5"),
    (dict(kind=["read", "wirte"]), "kind\\[1\\] = 'wirte'"),
])
def test_bad_access_fields(guest, kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        guest.walker().translate([0x400000, 0x400000], **kw)


def test_bad_addresses_and_options(guest):
    with pytest.raises(TypeError, match="addr"):
        make_accesses(np.array([1.5]))
    with pytest.raises(ValueError, match="ad must be"):
        guest.walker().translate([0], ad="yes")
    with pytest.raises(ValueError, match="pkru"):
        guest.walker().translate([0, 1], pkru=[1, 2, 3])


def test_dataframe_input(guest):
    df = pd.DataFrame({"addr": [0x400000, 0x400000], "kind": ["write", "fetch"], "user": [1, 1]})
    r = guest.walker().translate(df)
    assert list(r.fault) == [Fault.NONE, Fault.NONE]


def test_physmem_errors_and_readonly_ad():
    mem = PhysMem.zeros(0x10000)
    with pytest.raises(ValueError, match="overlaps"):
        mem.add_slot(0x8000, np.zeros(0x10000, np.uint8))
    with pytest.raises(ValueError, match="multiple of 4096"):
        mem.add_slot(0x20010, np.zeros(16, np.uint8))
    with pytest.raises(IndexError, match="not inside one memslot"):
        mem.read_u64(0xFFFC)
    ro = np.zeros(0x10000, np.uint8)
    ro.flags.writeable = False
    rmem = PhysMem()
    rmem.add_slot(0, ro)
    from vecmmu import CpuRole
    w = PageWalk(CpuRole.for_mode("4level"), rmem, 0x1000)
    with pytest.raises(PermissionError, match="read-only"):
        w.translate([0], ad="trace")
    with pytest.raises(PermissionError):
        rmem.write_u64(0, 1)


def test_garbage_tables_give_defined_faults():
    """All-ones entries and entries pointing past memory never crash."""
    mem = PhysMem.zeros(0x10000)
    mem.write(0, b"\xff" * 0x10000)
    from vecmmu import CpuRole
    for mode in ("32bit", "4level", "5level"):
        w = PageWalk(CpuRole.for_mode(mode), mem, 0x1000)
        r = w.translate(np.random.default_rng(0).integers(0, 1 << 32, 1000, dtype=np.uint64))
        assert set(np.unique(r.fault)) <= {Fault.PF, Fault.UNBACKED}


def test_summary_counts_every_translation(guest):
    r = guest.walker().translate([0x400010, 0x400020, 0x401000], ["read", "write", "read"], user=True)
    s = r.summary()
    assert s["count"].sum() == 3 and abs(s["share"].sum() - 1) < 1e-12
    assert set(zip(s["fault"].astype(str), s["kind"].astype(str))) == {
        ("none", "read"), ("none", "write"), ("#PF", "read")}


@pytest.mark.nojit
def test_strided_batch_views_walk_like_their_copies(guest):
    """The walk kernel reads the batch's records by field offset from one contiguous
    buffer: a strided view of a batch (every other access, one access of a larger batch,
    a reversed batch) gives the same results as its contiguous copy, in both orders."""
    rng = np.random.default_rng(4)
    n = 301
    addr = np.where(rng.random(n) < 0.8, 0x400000 + rng.integers(0, 0x1000, n),
                    rng.integers(0, 1 << 47, n)).astype(np.uint64)
    big = make_accesses(addr, rng.integers(0, 3, n).astype(np.uint8),
                        user=rng.random(n) < 0.5, ac=rng.random(n) < 0.3,
                        implicit=rng.random(n) < 0.1, stack=rng.random(n) < 0.1)
    w = guest.walker()
    for view in (big[::2], big[7:8], big[::-1], big[3:200:5]):
        assert not view.flags.c_contiguous or view.shape[0] == 1
        want = w.translate(np.ascontiguousarray(view)).columns()
        for order in ("input", "grouped"):
            got = w.translate(view, order=order).columns()
            for col, v in want.items():
                assert np.array_equal(v, got[col]), (col, order, view.shape)
