"""Bad input across the public API: a clear error naming the field, file and line or address,
or a defined fault result. Never a crash, a hang, an out-of-bounds read or a silent wrong
answer; nothing half-written on failure."""
import gzip
import pickle

import numpy as np
import pandas as pd
import pytest

from vecmmu import (ACCESS_DTYPE, Fault, Mmu, PageWalk, PdpteError, PhysMem, RegisterError,
                    make_accesses)
from vecmmu.io import DumpError, TraceError, open_dump, open_raw, read_trace, write_lackey
from vecmmu.io.synth import uniform

pytestmark = pytest.mark.nojit

CR0, CR4_PAE, EFER_LM = 0x80000001, 0x20, 0x500


@pytest.fixture(scope="module")
def walk():
    mmu = Mmu.for_mode("4level", ram_size=1 << 22)
    mmu.map(0x400000, 0x2000, user=True)
    return mmu.walker()


# -- access batches ----------------------------------------------------------------------------

@pytest.mark.parametrize("kw, exc, msg", [
    (dict(addr=np.array([1.5])), TypeError, "addr must be an integer array, not float64"),
    (dict(addr=np.zeros((2, 2), np.uint64)), ValueError, r"1-D array .* shape \(2, 2\)"),
    (dict(addr=[2**64 + 5]), ValueError, r"addr\[0\] = 0x10000000000000005 does not fit in 64 bits"),
    (dict(addr=[1, "x"]), TypeError, r"addr\[1\] = 'x' is not an integer"),
    (dict(addr=[0], kind=3), ValueError, r"kind\[0\] = 3 is not 0 \(read\)"),
    (dict(addr=[0], kind="jump"), ValueError, "kind 'jump'"),
    (dict(addr=[0, 1], kind=["r", "jump"]), ValueError, r"kind\[1\] = 'jump'"),
    (dict(addr=[0, 1], kind=[0, 1, 2]), ValueError, r"kind has shape \(3,\)"),
    (dict(addr=[0], user=2), ValueError, r"user\[0\] = 2 is not 0 or 1"),
    (dict(addr=[0], user=0.5), TypeError, "user must be booleans"),
    (dict(addr=[0], size=0), ValueError, r"size\[0\] = 0 is out of range"),
    (dict(addr=[0], size=1.5), TypeError, "size must be integers"),
    (dict(addr=[0, 1], size=[1, 2, 3]), ValueError, r"size has shape \(3,\)"),
    (dict(addr=[0], asid=-1), ValueError, r"asid\[0\] = -1 is out of range"),
    (dict(addr=[0], asid=0.5), TypeError, "asid must be integers"),
])
def test_make_accesses_errors_name_the_field(kw, exc, msg):
    addr = kw.pop("addr")
    with pytest.raises(exc, match=msg):
        make_accesses(addr, **kw)


def test_negative_addresses_are_sign_extended_linear_addresses():
    assert int(make_accesses([-4096])["addr"][0]) == 2**64 - 4096


@pytest.mark.parametrize("field, value, msg", [
    ("kind", 7, r"kind\[1\] = 7"), ("user", 5, r"user\[1\] = 5"), ("stack", 2, r"stack\[1\] = 2"),
    ("size", 0, r"size\[1\] = 0"), ("size", 5000, r"size\[1\] = 5000"),
])
def test_raw_batches_with_unknown_enum_values(walk, field, value, msg):
    b = make_accesses([0x400000, 0x400001])
    b[field][1] = value
    with pytest.raises(ValueError, match=msg):
        walk.translate(b)


def test_wrong_batches(walk):
    with pytest.raises(TypeError, match="ACCESS_DTYPE"):
        walk.translate(np.zeros(3, dtype=[("addr", "<u8")]))
    with pytest.raises(ValueError, match="1-D"):
        walk.translate(np.zeros((2, 2), ACCESS_DTYPE))
    with pytest.raises(ValueError, match="'addr' column"):
        walk.translate(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match=r"asid\[0\] = 5, but the walker has 1 root"):
        walk.translate([0], asid=5)
    with pytest.raises(ValueError, match="ad must be"):
        walk.translate([0], ad="later")
    for chunk in (0, -5):
        with pytest.raises(ValueError, match="chunk must be a positive number"):
            walk.translate([0], chunk=chunk)


def test_chunk_is_checked_for_every_kind_of_walk():
    from vecmmu import CpuRole, EptRole, NestedGuest
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=1 << 22)
    g.guest.map(0x400000, 0x1000)
    for w in (g.walker(), g.tdp_walker()):
        with pytest.raises(ValueError, match="chunk must be a positive number"):
            w.translate([0x400000], chunk=0)


# -- registers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("regs, msg", [
    (dict(cr0=CR0, cr4=0, efer=EFER_LM), "long mode requires CR4.PAE"),
    (dict(cr0=0x80000000, cr4=CR4_PAE, efer=0), "PG=1 requires PE=1"),
    (dict(cr0=CR0, cr4=CR4_PAE, efer=EFER_LM, maxphyaddr=60), "maxphyaddr must be in 32..52"),
])
def test_impossible_register_combinations(regs, msg):
    with pytest.raises(RegisterError, match=msg):
        PageWalk.from_regs(PhysMem.zeros(1 << 16), cr3=0x1000, **regs)


# -- hostile page tables -----------------------------------------------------------------------

def _w(mem, cr3=0x1000, mode="4level"):
    regs = {"4level": dict(cr0=CR0, cr4=CR4_PAE, efer=EFER_LM),
            "pae": dict(cr0=CR0, cr4=CR4_PAE, efer=0),
            "32bit": dict(cr0=CR0, cr4=0x10, efer=0)}[mode]
    return PageWalk.from_regs(mem, cr3=cr3, **regs)


def test_all_ones_entries_are_reserved_bit_faults():
    mem = PhysMem.zeros(1 << 16)
    mem.backings[0][:] = 0xFF
    r = _w(mem).translate([0, 2**47 - 1, 0xFFFF800000000000])
    assert (r.fault == Fault.PF).all() and (r.error_code & 8).all() and (r.fault_level == 4).all()
    r = _w(mem, mode="32bit").translate([0, 0xFFFFFFFF])
    assert (r.fault == Fault.PF).all()
    with pytest.raises(PdpteError, match=r"PDPTE 0 at 0x1000 = 0xffffffffffffffff"):
        _w(mem, mode="pae")


def test_table_loop_terminates_with_a_defined_answer():
    mem = PhysMem.zeros(1 << 16)
    mem.write_u64(0x1000, 0x1007)          # the PML4E points at the PML4 itself
    r = _w(mem).translate([0, 0x234, 0x7FFFFFFFF000], trace=True)
    # the walk reads the same page at every level: the leaf is then the PML4 page itself
    assert set(r.fault.tolist()) <= {Fault.NONE, Fault.PF}
    assert r.refs.max() <= 4
    assert int(r.gpa[1]) == 0x1234 and r.fault[1] == Fault.NONE


def test_entries_pointing_outside_memory_are_unbacked():
    mem = PhysMem.zeros(1 << 16)
    mem.write_u64(0x1000, 0x000FFFFFFFFF0007)
    r = _w(mem).translate([0])
    assert r.fault[0] == Fault.UNBACKED and r.fault_level[0] == 3
    assert int(r.entry_addr[0]) == 0x000FFFFFFFFF0000
    mem2 = PhysMem.zeros(1 << 16)
    r = _w(mem2, cr3=0x000FFFFFFFFFF000).translate([0])   # the root itself is outside
    assert r.fault[0] == Fault.UNBACKED


@pytest.mark.parametrize("cr3", [2**64 - 1, -1])
def test_huge_cr3_is_masked_to_an_address_and_walks_safely(cr3):
    r = _w(PhysMem.zeros(1 << 16), cr3=cr3).translate([0, 2**64 - 1])
    assert set(r.fault.tolist()) <= {Fault.UNBACKED, Fault.PF, Fault.GP}


def test_memory_errors():
    with pytest.raises(ValueError, match="positive integer"):
        PhysMem.zeros(-1)
    with pytest.raises(TypeError, match="numpy array or bytes"):
        PhysMem().add_slot(0, [1, 2, 3])
    with pytest.raises(ValueError, match="not a multiple of 4096"):
        PhysMem().add_slot(-4096, np.zeros(4096, np.uint8))
    with pytest.raises(ValueError, match="52-bit"):
        PhysMem().add_slot(2**52 - 4096, np.zeros(8192, np.uint8))
    with pytest.raises(TypeError, match="base must be an integer"):
        PhysMem().add_slot(4096.0, np.zeros(4096, np.uint8))
    mem = PhysMem.zeros(1 << 16)
    for addr in (2**64, -8, 2**70, (1 << 16) - 4):
        with pytest.raises(IndexError, match="not inside one memslot"):
            mem.read_u64(addr)


def test_physmem_pickles_without_host_pointers(walk):
    walk.translate([0x400000])
    assert walk.mem._ptrs is not None
    mem2 = pickle.loads(pickle.dumps(walk.mem))
    assert mem2._ptrs is None
    w2 = PageWalk(walk.role, mem2, walk.cr3)
    assert w2.translate([0x400000]).fault[0] == Fault.NONE


# -- trace files -------------------------------------------------------------------------------

def test_lackey_errors_name_file_and_line(tmp_path):
    p = tmp_path / "t.lackey"
    p.write_text("I  0400d7d4,8\n L 0400d7d8,zz\n")
    with pytest.raises(TraceError, match=r"t.lackey.*line 2|t.lackey:2"):
        read_trace(p, "lackey")


def test_truncated_compressed_trace(tmp_path):
    p = tmp_path / "t.lackey.gz"
    write_lackey(p, uniform(20000, 0x400000, 0x10000))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="corrupt or truncated"):
        read_trace(p)


def test_csv_errors_name_line_and_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("address,kind,size\n0x1000,read,4\n0x2000,jump,4\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'kind': 'jump'"):
        read_trace(p)
    p.write_text("address,kind,size\n0x1000,read,4\n0x2000,read,9999\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'size': 9999 is out of range"):
        read_trace(p)
    p.write_text("address\n0x1\n0x1ffffffffffffffff\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'address'"):
        read_trace(p)


def _pa_column(kind, values):
    import pyarrow as pa
    if kind == "dict":
        return pa.array(values, pa.string()).dictionary_encode()
    if kind == "list":
        return pa.array(values, pa.list_(pa.int64()))
    return pa.array(values, kind)


@pytest.mark.parametrize("column, kind, values, msg", [
    ("kind", "dict", ["read", "write", None, "read"], r"row 2: column 'kind' is empty"),
    ("kind", "string", ["read", "jump", "read", "read"], r"row 1: column 'kind': 'jump' is not"),
    ("kind", "dict", ["read", "read", "read", "jump"], r"row 3: column 'kind': 'jump' is not one of"),
    ("kind", "int8", [0, 1, 7, 2], r"row 2: column 'kind': 7 is out of range"),
    ("kind", "float64", [0.0, 1.0, 2.0, 1.0], r"row 0: column 'kind': '0.0' is not one of"),
    ("address", "float64", [1.0, 2.0, 3.0, 4.0], r"row 0: column 'address' holds floating-point"),
    ("address", "uint64", [1, 2, 3, None], r"row 3: column 'address' is empty"),
    ("address", "int64", [1, -5, 3, 4], r"row 1: column 'address': -5 is negative"),
    ("address", "bool", [True, False, True, True], r"row 0: column 'address' holds bool values"),
    ("address", "string", ["0x1", "0x2", "", "0x4"], r"row 2: column 'address' is empty"),
    ("address", "dict", ["0x1", "0x2", "0x1", "zz"], r"row 3: column 'address': 'zz' is not"),
    ("size", "float64", [1.0, 1.5, 2.0, 4.0], r"row 1: column 'size': '1.5' is not an integer"),
    ("size", "string", ["1", "2", "abc", "4"], r"row 2: column 'size': 'abc' is not an integer"),
    ("size", "uint32", [1, 0, 2, 4], r"row 1: column 'size': 0 is out of range"),
    ("size", "int32", [1, 2, None, 4], r"row 2: column 'size' is empty"),
    ("privilege", "uint8", [3, 0, 5, 3], r"row 2: column 'privilege': 5 is out of range"),
    ("privilege", "dict", ["user", "user", "root", "root"], r"row 2: column 'privilege': 'root'"),
    ("asid", "uint32", [0, None, 1, 1], r"row 1: column 'asid' is empty"),
    ("ac", "int64", [0, 1, 2, 0], r"row 2: column 'ac': 2 is out of range"),
    ("kind", "list", [[1], [2], [], None], r"row 0: column 'kind' holds list<.*> values"),
    ("size", "list", [[1], [2], [], None], r"row 0: column 'size' holds list<.*> values"),
    ("address", "list", [[1], [2], [], None], r"row 0: column 'address' holds list<"),
])
def test_parquet_bad_values_name_file_row_and_column(tmp_path, column, kind, values, msg):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    cols = {"address": pa.array([0x1000, 0x2000, 0x3000, 0x4000], pa.uint64())}
    cols[column] = _pa_column(kind, values)
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table(cols), p)
    with pytest.raises(TraceError, match=r"t\.parquet: " + msg):
        read_trace(p)


def test_parquet_and_csv_errors_count_rows_across_chunks(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    kinds = ["read"] * 50
    kinds[37] = "jump"
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"address": pa.array(range(50), pa.uint64()),
                             "kind": pa.array(kinds).dictionary_encode()}), p, row_group_size=16)
    with pytest.raises(TraceError, match=r"t\.parquet: row 37: column 'kind': 'jump'"):
        read_trace(p, chunk=16)
    c = tmp_path / "t.csv"
    c.write_text("address,kind\n" + "".join(f"{i},{k}\n" for i, k in enumerate(kinds)))
    with pytest.raises(TraceError, match=r"t\.csv:39: column 'kind': 'jump'"):
        read_trace(c, chunk=16)


def test_truncated_champsim_and_parquet(tmp_path):
    from vecmmu.io import write_parquet
    p = tmp_path / "t.parquet"
    write_parquet(p, uniform(1000, 0x400000, 0x10000))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(TraceError, match="t.parquet"):
        read_trace(p)
    c = tmp_path / "t.champsim"
    c.write_bytes(bytes(64 * 3 + 17))
    with pytest.raises(TraceError, match="t.champsim"):
        read_trace(c, "champsim")


def test_corrupt_dumps(tmp_path):
    for name, data in [("empty.elf", b""), ("hdr.elf", b"\x7fELF\x02\x01\x01" + bytes(20)),
                       ("junk.elf", b"\x7fELF" + bytes(range(256)) * 4)]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises((DumpError, ValueError), match=name):
            open_dump(p, cache_dir=tmp_path / "cache")
    g = tmp_path / "trunc.elf.gz"
    g.write_bytes(gzip.compress(b"\x7fELF" + bytes(4096))[:40])
    with pytest.raises((DumpError, ValueError), match="trunc.elf.gz"):
        open_dump(g, cache_dir=tmp_path / "cache")
    # nothing half-written left in the dump cache
    assert not any(f.name.endswith(".tmp") for f in (tmp_path / "cache").rglob("*"))
    with pytest.raises((DumpError, ValueError), match="empty"):
        open_raw(tmp_path / "empty.elf", cache_dir=tmp_path / "cache")


# -- atomic outputs ----------------------------------------------------------------------------

class _Boom(Exception):
    pass


def _failing_batches():
    yield uniform(100, 0x400000, 0x1000)
    raise _Boom()


@pytest.mark.parametrize("writer, name", [("write_parquet", "t.parquet"), ("write_csv", "t.csv"),
                                          ("write_lackey", "t.lackey"),
                                          ("write_lackey", "t.lackey.xz")])
def test_writers_are_atomic(tmp_path, writer, name):
    import vecmmu.io as io
    out = tmp_path / name
    out.write_text("previous content")
    with pytest.raises(_Boom):
        getattr(io, writer)(out, _failing_batches())
    assert out.read_bytes() == b"previous content"          # the old file is untouched
    assert [f.name for f in tmp_path.iterdir()] == [name]  # and no temporary is left
    n = getattr(io, writer)(out, uniform(100, 0x400000, 0x1000))
    assert n == 100 and read_trace(out).shape[0] == 100


def test_translate_to_parquet_is_atomic(tmp_path, walk):
    pytest.importorskip("pyarrow")
    from vecmmu.scale.stream import translate_to_parquet
    src = tmp_path / "t.csv"
    src.write_text("address,kind\n0x400000,read\n0x400008,jump\n")
    out = tmp_path / "out.parquet"
    with pytest.raises(TraceError):
        translate_to_parquet(src, walk, out)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["t.csv"]
    src.write_text("address,kind\n0x400000,read\n0x900000,write\n")
    assert translate_to_parquet(src, walk, out, chunk=16) == 2
    df = pd.read_parquet(out)
    assert list(df["fault"].astype(str)) == ["none", "#PF"]
