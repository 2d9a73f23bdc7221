"""Fuzzing (hypothesis): random bytes as traces, dumps and page tables; random builder calls.

Each test has a small budget in the suite; ``VECMMU_FUZZ_EXAMPLES=5000 pytest
tests/test_fuzz.py`` runs a longer campaign. The contract: readers return an access batch or
raise ValueError (TraceError / DumpError); builders raise MmuError / ValueError; walks of
garbage tables return a defined fault class per row. Never a crash, a hang or another
exception type.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vecmmu import (ACCESS_DTYPE, CpuRole, EptRole, Fault, Mmu, MmuError, NptRole, PageWalk,
                    PhysMem, RegisterError)
from vecmmu.io import open_dump, open_raw, read_trace

N = int(os.environ.get("VECMMU_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=N or 25, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
SMALL = settings(FUZZ, max_examples=N or 8)
TMP = Path(tempfile.mkdtemp(prefix="vecmmu-fuzz-"))
FAULTS = {int(f) for f in Fault}

LACKEY_LINES = st.lists(st.one_of(
    st.sampled_from(["I  0400d7d4,8", " S 7ff000398,8", " L 04226de8,4", " M 0421d390,4",
                     "==123== lackey", "--123-- x", "", "I  ,8", " L zz,4", " S 1,0",
                     " L 1,99999", " X 10,4", " L 10", "I  ffffffffffffffffff,4"]),
    st.text(alphabet="ILSM ,0123456789abcdefx=-\t", max_size=24)), max_size=30)


def _write(name, data: bytes) -> Path:
    p = TMP / name
    p.write_bytes(data)
    return p


def _read_ok_or_valueerror(path, fmt):
    try:
        b = read_trace(path, fmt)
    except ValueError:            # TraceError, DumpError and input ValueErrors
        return None
    assert b.dtype == ACCESS_DTYPE and b.ndim == 1
    if b.shape[0]:
        assert int(b["kind"].max()) <= 2 and int(b["user"].max()) <= 1
        assert 1 <= int(b["size"].min()) and int(b["size"].max()) <= 4096
    return b


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["lackey", "champsim", "csv", None]))
def test_random_bytes_as_trace(data, fmt):
    _read_ok_or_valueerror(_write(f"rand.{fmt or 'bin'}", data), fmt)


@FUZZ
@given(LACKEY_LINES)
def test_lackey_like_text(lines):
    _read_ok_or_valueerror(_write("t.lackey", "\n".join(lines).encode()), "lackey")


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["0x400000", "12", "-1", "0x", "1e3", "", "x",
                                           "0xffffffffffffffffff", "18446744073709551615"]),
                          st.sampled_from(["read", "W", "fetch", "2", "jump", "", "3"]),
                          st.sampled_from(["user", "s", "3", "4", "", "kernel"]),
                          st.sampled_from(["1", "8", "0", "4097", "x", "", "1.5"])), max_size=20),
       st.booleans())
def test_csv_cells(rows, gz):
    text = "address,kind,privilege,size\n" + "\n".join(",".join(r) for r in rows)
    data = text.encode()
    if gz:
        import gzip
        data = gzip.compress(data)[: max(10, len(data) // 2)]       # truncated gzip too
    p = _write("t.csv", data)
    got = _read_ok_or_valueerror(p, "csv")
    # the pandas engine reads the same values, or stops at the same line and column
    from vecmmu.io.tables import CsvReader
    try:
        other = CsvReader(p, engine="pandas").read()
    except ValueError as e:
        assert got is None, f"pandas engine: {e}"
        return
    assert got is not None and np.array_equal(got, other)


def _where(msg):
    import re
    m = re.search(r":(\d+): column '(\w+)'", msg)
    return m.groups() if m else None


@FUZZ
@given(st.lists(st.lists(st.sampled_from(["0x10", "7", "", " ", "read", "w", "user", "3", "1.0",
                                          "\"a,b\"", "x", "\t", "-1", "0x" + "f" * 17]),
                         min_size=0, max_size=6), max_size=12),
       st.permutations(["address", "kind", "privilege", "size", "asid", "ac", "note"]))
def test_csv_engines_agree(rows, header):
    from vecmmu.io.tables import CsvReader
    text = ",".join(header[:5]) + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    p = _write("agree.csv", text.encode())
    out = []
    for engine in ("arrow", "pandas"):
        try:
            out.append(CsvReader(p, engine=engine).read())
        except ValueError as e:
            out.append(str(e))
    a, b = out
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), (a, b)
        assert np.array_equal(a, b)
    elif _where(a) and _where(b):
        assert _where(a) == _where(b), (a, b)


PARQUET_CELLS = {
    "uint64": st.integers(0, 2**64 - 1), "int64": st.integers(-2**63, 2**63 - 1),
    "int8": st.integers(-128, 127), "float64": st.floats(allow_nan=True),
    "bool": st.booleans(), "string": st.sampled_from(["0x10", "12", "read", "W", "user", "s",
                                                      "3", "", " 8 ", "zz", "1e3", "1.5"]),
}


@FUZZ
@given(st.data(), st.integers(0, 6),
       st.lists(st.sampled_from(["address", "kind", "privilege", "user", "size", "asid", "ac",
                                 "pid", "timestamp"]), min_size=1, max_size=5, unique=True),
       st.booleans())
def test_parquet_random_columns(data, n, names, dictionary):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    if "address" not in names:
        names = ["address"] + names[:4]
    cols = {}
    for name in names:
        t = data.draw(st.sampled_from(sorted(PARQUET_CELLS)))
        vals = data.draw(st.lists(st.one_of(st.none(), PARQUET_CELLS[t]), min_size=n, max_size=n))
        arr = pa.array(vals, type=t if t != "string" else pa.string())
        cols[name] = arr.dictionary_encode() if dictionary and t in ("string", "int8") else arr
    p = TMP / "rand.parquet"
    pq.write_table(pa.table(cols), p)
    try:
        b = read_trace(p)
    except ValueError as e:
        assert "rand.parquet: row " in str(e) and "column '" in str(e), str(e)
        return
    assert b.dtype == ACCESS_DTYPE and b.shape == (n,)
    if n:
        assert int(b["kind"].max()) <= 2 and int(b["user"].max()) <= 1
        assert 1 <= int(b["size"].min()) and int(b["size"].max()) <= 4096


@FUZZ
@given(st.binary(min_size=0, max_size=4096), st.integers(0, 63))
def test_random_bytes_as_elf_dump(tail, cut):
    head = b"\x7fELF\x02\x01\x01" + bytes(9)
    data = head + tail
    p = _write("d.elf", data[: len(data) - cut])
    try:
        d = open_dump(p, cache_dir=TMP)
    except ValueError:
        return
    d.close()


@SMALL
@given(st.binary(min_size=1, max_size=3 * 4096))
def test_random_bytes_as_raw_dump_walk(data):
    p = _write("raw.bin", data)
    try:
        d = open_raw(p, cache_dir=TMP)
    except ValueError:
        return
    with d:
        w = PageWalk(CpuRole.for_mode("4level"), d.mem, 0)
        r = w.translate(np.arange(0, 1 << 22, 0x1357, dtype=np.uint64))
        assert set(np.unique(r.fault).tolist()) <= FAULTS


MODES = ["none", "32bit", "pae", "4level", "5level"]


def _mem(data: bytes, size=1 << 15) -> PhysMem:
    buf = np.frombuffer((data * (size // max(1, len(data)) + 1))[:size], np.uint8).copy()
    mem = PhysMem()
    mem.add_slot(0, buf, name="garbage")
    return mem


@FUZZ
@given(st.binary(min_size=8, max_size=512), st.sampled_from(MODES), st.integers(0, 7),
       st.sampled_from(["hardware", "kvm"]), st.lists(st.integers(0, 2**64 - 1), min_size=1,
                                                      max_size=16),
       st.integers(0, 2), st.booleans(), st.sampled_from([None, "trace", "snapshot"]))
def test_garbage_tables_cpu(data, mode, root_page, semantics, addrs, kind, user, ad):
    mem = _mem(data)
    role = CpuRole.for_mode(mode)
    try:
        w = PageWalk(role, mem, root_page * 4096, semantics=semantics)
    except RegisterError:                 # PAE: a present PDPTE with reserved bits is #GP(0)
        return
    r = w.translate(addrs, kind=kind, user=user, trace=True, ad=ad, size=8)
    assert len(r) >= len(addrs)
    assert set(np.unique(r.fault).tolist()) <= FAULTS
    r.to_frame()


@SMALL
@given(st.binary(min_size=8, max_size=512), st.sampled_from(["ept4", "ept5", "npt"]),
       st.sampled_from(MODES[1:]), st.integers(0, 7), st.integers(0, 7),
       st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8), st.integers(0, 2),
       st.sampled_from(["hardware", "kvm"]))
def test_garbage_tables_nested(data, tdp, gmode, root, groot, addrs, kind, semantics):
    mem = _mem(data)
    if tdp == "npt":
        trole = NptRole()
    else:
        trole = EptRole(levels=4 if tdp == "ept4" else 5)
    t = PageWalk(trole, mem, root * 4096, semantics=semantics)
    rt = t.translate(addrs, kind=kind)
    assert set(np.unique(rt.fault).tolist()) <= FAULTS
    try:
        g = PageWalk(CpuRole.for_mode(gmode, maxphyaddr=trole.gpa_bits if hasattr(trole, "gpa_bits")
                                      else 48),
                     mem, groot * 4096, semantics=semantics, tdp=t)
    except RegisterError:
        return
    r = g.translate(addrs, kind=kind, trace=True)
    assert set(np.unique(r.fault).tolist()) <= FAULTS
    r.to_frame()


BIG = st.one_of(st.integers(-2**65, 2**66), st.sampled_from([0, 4096, 2 << 20, 1 << 30, 2**47,
                                                             2**64 - 4096, -4096]))


@FUZZ
@given(st.sampled_from(MODES[1:]),
       st.lists(st.tuples(st.sampled_from(["map", "unmap", "protect"]), BIG,
                          st.one_of(st.integers(-8192, 1 << 31), st.sampled_from([4096, 2 << 20])),
                          st.sampled_from([4096, 2 << 20, 4 << 20, 1 << 30, 12345]),
                          st.booleans(), st.integers(-1, 17)), max_size=12))
def test_builder_random_calls(mode, calls):
    mmu = Mmu.for_mode(mode, ram_size=1 << 24)
    for op, va, size, ps, flag, pkey in calls:
        try:
            if op == "map":
                mmu.map(va, size, page_size=ps, writable=flag, user=not flag,
                        **({"pkey": pkey} if mode in ("pae", "4level", "5level") else {}))
            elif op == "unmap":
                mmu.unmap(va, size)
            else:
                mmu.protect(va, size, writable=flag)
        except (MmuError, ValueError):
            pass
    r = mmu.walker().translate(np.arange(0, 1 << 24, 0x10001, dtype=np.uint64))
    assert set(np.unique(r.fault).tolist()) <= FAULTS
