"""CSV and Parquet traces: the documented schema, address spaces from cr3/pid, errors."""
import gzip

import numpy as np
import pandas as pd
import pytest

from vecmmu import make_accesses
from vecmmu.io import TraceError, open_trace, read_trace
from vecmmu.io.tables import CsvReader, ParquetReader, write_csv, write_parquet

pytest.importorskip("pyarrow")

ENGINES = pytest.mark.parametrize("engine", ["arrow", "pandas"])

CSV = """address,kind,privilege,size,timestamp,cpu,pid
0x400000,fetch,user,4,10,0,77
4198400,read,user,8,11,0,77
0xffffffff81000000,w,supervisor,8,12,1,5
0x7ffc0000,WRITE,3,16,13,1,77
0x1000,x,0,1,14,0,9
"""


@ENGINES
def test_csv_schema(tmp_path, engine):
    p = tmp_path / "t.csv"
    p.write_text(CSV)
    r = CsvReader(p, engine=engine)
    tabs = list(r.iter_tables())
    b, extras = tabs[0]
    assert [int(a) for a in b["addr"]] == [0x400000, 4198400, 0xFFFFFFFF81000000, 0x7FFC0000, 0x1000]
    assert list(b["kind"]) == [2, 0, 1, 1, 2]
    assert list(b["user"]) == [1, 1, 0, 1, 0]
    assert list(b["size"]) == [4, 8, 8, 16, 1]
    assert list(b["asid"]) == [0, 0, 1, 0, 2]           # pid 77, 5, 9 in order of appearance
    assert r.asid_keys == [77, 5, 9]
    assert list(extras["timestamp"]) == [10, 11, 12, 13, 14] and list(extras["cpu"]) == [0, 0, 1, 1, 0]


@ENGINES
def test_csv_defaults_and_gzip_and_chunks(tmp_path, engine):
    p = tmp_path / "t.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("addr\n" + "\n".join(hex(0x1000 * i) for i in range(1000)) + "\n")
    parts = list(CsvReader(p, chunk=300, engine=engine))
    assert [len(x) for x in parts] == [300, 300, 300, 100]
    b = np.concatenate(parts)
    assert (b["kind"] == 0).all() and (b["user"] == 1).all() and (b["size"] == 1).all()
    assert int(b["addr"][-1]) == 0x1000 * 999
    assert open_trace(p).format == "csv"


@pytest.mark.parametrize("row,col,words", [
    ("0x12zz,read,user,4", "address", "'0x12zz' is not an unsigned 64-bit integer"),
    ("0x1000,jump,user,4", "kind", "'jump' is not one of read/write/fetch"),
    ("0x1000,read,root,4", "privilege", "'root' is not one of user/supervisor"),
    ("0x1000,read,user,0", "size", "0 is out of range"),
    ("0x1000,read,user,abc", "size", "'abc' is not an integer"),
    (",read,user,4", "address", "is empty"),
    ("0x1000,read,7,4", "privilege", "not one of user/supervisor"),
    ("0x1000,,user,4", "kind", "is empty"),
    ("0x1000,read,user,", "size", "is empty"),
    ("0x1000,read,user,1.5", "size", "'1.5' is not an integer"),
    ("0x1000,read,user,0x10", "size", "'0x10' is not an integer"),
    ("-5,read,user,4", "address", "'-5' is not an unsigned 64-bit integer"),
    ("0x" + "f" * 17 + ",read,user,4", "address", "is not an unsigned 64-bit integer"),
    (" " * 70 + "0x1,read,user,4", "address", None),            # over-wide but valid
    ("0x1" + " " * 70 + "z,read,user,4", "address", "is not an unsigned 64-bit integer"),
    ("0x1\u00e9,read,user,4", "address", "'0x1\u00e9' is not an unsigned 64-bit integer"),
    ("0x1000,r\u00e9ad,user,4", "kind", "'r\u00e9ad' is not one of read/write/fetch"),
])
@ENGINES
def test_csv_bad_value_names_line_and_column(tmp_path, row, col, words, engine):
    p = tmp_path / "bad.csv"
    p.write_text("address,kind,privilege,size\n0x1,read,user,1\n0x2,read,user,1\n" + row + "\n",
                 encoding="utf-8")
    if words is None:
        assert CsvReader(p, engine=engine).read().shape == (3,)
        return
    with pytest.raises(TraceError) as e:
        CsvReader(p, engine=engine).read()
    msg = str(e.value)
    assert "bad.csv:4:" in msg and f"'{col}'" in msg and words in msg, msg


def test_csv_without_address_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("where,kind\n1,read\n")
    with pytest.raises(TraceError, match="no address column"):
        CsvReader(p)


def test_parquet_round_trip_streaming(tmp_path):
    rng = np.random.default_rng(0)
    n = 50_000
    t = make_accesses(rng.integers(0, 2**64 - 1, n, dtype=np.uint64), rng.integers(0, 3, n),
                      user=rng.integers(0, 2, n), size=rng.integers(1, 64, n),
                      asid=rng.integers(0, 3, n), ac=rng.integers(0, 2, n))
    p = tmp_path / "t.parquet"
    assert write_parquet(p, (t[i:i + 7000] for i in range(0, n, 7000)), asid_keys=[5, 6, 7]) == n
    r = ParquetReader(p, chunk=10_000)
    back = np.concatenate(list(r))
    assert np.array_equal(back, t)
    assert r.asid_keys == [5, 6, 7]
    # the file is plain Parquet with readable words
    df = pd.read_parquet(p)
    assert set(df["kind"].astype(str)) <= {"read", "write", "fetch"}
    assert open_trace(p).format == "parquet"


def test_parquet_hex_strings_and_cr3(tmp_path):
    df = pd.DataFrame({"Address": ["0x10", "0x20", "0xZZ"], "cr3": [0x1000, 0x2000, 0x1000]})
    p = tmp_path / "h.parquet"
    df.iloc[:2].to_parquet(p)
    r = ParquetReader(p)
    b = r.read()
    assert list(b["addr"]) == [0x10, 0x20] and list(b["asid"]) == [0, 1] and r.asid_keys == [0x1000, 0x2000]
    df.to_parquet(p)
    with pytest.raises(TraceError, match=r"h.parquet: row 2: column 'address': '0xZZ'"):
        read_trace(p)


def test_not_parquet(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"PAR1" + b"\0" * 100)
    with pytest.raises(TraceError, match="not a readable Parquet file"):
        ParquetReader(p)


def test_csv_writer_round_trip(tmp_path):
    t = make_accesses([0, 0xFFFFFFFFFFFFFFFF, 0x1234], ["read", "write", "fetch"], user=[0, 1, 1],
                      size=[1, 8, 4096], asid=[0, 1, 2])
    p = tmp_path / "w.csv"
    write_csv(p, t)
    assert np.array_equal(read_trace(p), t)


def test_detection_errors(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("just some words\nand more\n")
    with pytest.raises(TraceError, match="neither a lackey trace"):
        open_trace(p)
    e = tmp_path / "empty.csv"
    e.write_text("")
    with pytest.raises(TraceError, match="empty"):
        open_trace(e)


def test_parquet_reader_memory_does_not_grow_with_the_file(tmp_path):
    """pyarrow's Parquet batch reader pre-buffers by default: it caches the column chunks
    it reads (small row groups: the whole file at once) until it is closed, so memory grows
    with the file. The reader's Arrow memory must stay a few row groups' worth."""
    import pyarrow as pa
    rng = np.random.default_rng(1)
    rows, groups = 10_000, 100
    p = tmp_path / "big.parquet"
    batches = (make_accesses(rng.integers(0, 2**64 - 1, rows, dtype=np.uint64), 0)
               for _ in range(groups))       # random addresses: ~100 KB per row group
    write_parquet(p, batches)
    size = p.stat().st_size
    seen = [pa.total_allocated_bytes() for _ in ParquetReader(p, chunk=rows)]
    assert len(seen) == groups
    assert max(seen) < size // 3, (max(seen), size)


# -- CSV: the arrow engine (blocks, threads) and the pandas engine read the same ------------------

def _random_csv_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    addr = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    words = np.array(["read", "W", "fetch", "x", " load", "2", "S"])
    privs = np.array(["user", "s", "3", "0", "kernel", " u"])
    cells = [hex(int(a)) if i % 3 else str(int(a)) for i, a in enumerate(addr)]
    kinds = words[rng.integers(0, len(words), n)]
    priv = privs[rng.integers(0, len(privs), n)]
    size = rng.integers(1, 4097, n)
    return cells, kinds, priv, size


@pytest.mark.parametrize("threads", [True, False])
def test_csv_engines_agree_over_many_blocks(tmp_path, monkeypatch, threads):
    cells, kinds, priv, size = _random_csv_rows(20_000)
    lines = [f"{a},{k},{p},{s},{i}" for i, (a, k, p, s) in enumerate(zip(cells, kinds, priv, size))]
    p = tmp_path / "t.csv"
    p.write_text("address,kind,privilege,size,timestamp\n" + "\n".join(lines) + "\n")
    monkeypatch.setattr(CsvReader, "_block_size", 4096)      # ~100 arrow blocks
    monkeypatch.setattr(CsvReader, "_threads", threads)
    r = CsvReader(p, chunk=3000)
    tabs = list(r.iter_tables())
    assert [len(b) for b, _ in tabs] == [3000] * 6 + [2000]
    a = np.concatenate([b for b, _ in tabs])
    assert np.array_equal(np.concatenate([e["timestamp"] for _, e in tabs]), np.arange(20_000))
    b = CsvReader(p, chunk=3000, engine="pandas").read()
    assert np.array_equal(a, b)
    assert [int(x) for x in a["addr"][:4]] == [int(c, 0) for c in cells[:4]]
    # a bad cell deep in the file names its line, whichever block it is in
    lines[15_000] = "0x1000,read,user,5000,0"
    p.write_text("address,kind,privilege,size,timestamp\n" + "\n".join(lines) + "\n")
    for engine in ("arrow", "pandas"):
        with pytest.raises(TraceError, match=r"t.csv:15002: column 'size': 5000 is out of range"):
            CsvReader(p, chunk=3000, engine=engine).read()


@pytest.mark.parametrize("threads", [True, False])
@pytest.mark.parametrize("bad, words", [("0x5,read,user", "3 fields where the header has 4"),
                                        ("0x5,read,user,4,9", "5 fields where the header has 4")])
def test_csv_wrong_number_of_fields_names_the_line(tmp_path, monkeypatch, threads, bad, words):
    lines = ["0x1,read,user,1"] * 5000
    lines[3210] = bad
    p = tmp_path / "t.csv"
    p.write_text("address,kind,privilege,size\n" + "\n".join(lines) + "\n")
    monkeypatch.setattr(CsvReader, "_block_size", 4096)
    monkeypatch.setattr(CsvReader, "_threads", threads)
    with pytest.raises(TraceError, match=f"t.csv:3212: {words}"):
        CsvReader(p).read()
    with pytest.raises(TraceError, match="t.csv"):          # pandas says it its own way
        CsvReader(p, engine="pandas").read()


@ENGINES
def test_csv_blank_lines_and_bad_bytes(tmp_path, engine):
    p = tmp_path / "t.csv"
    p.write_text("address,kind\n0x1,read\n\n0x2,read\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'address' is empty"):
        CsvReader(p, engine=engine).read()
    p.write_text("address,kind\n0x1,read\n0x2,read\n\n")       # a trailing blank line, too
    with pytest.raises(TraceError, match=r"t.csv:4: column 'address' is empty"):
        CsvReader(p, engine=engine).read()
    p.write_bytes(b"address,kind\n0x1,read\n0x2,r\xffad\n")      # not UTF-8
    with pytest.raises(TraceError, match=r"t.csv:3: column 'kind': 'r.*ad' is not one of"):
        CsvReader(p, engine=engine).read()
    p.write_bytes(b"address,kind\n0x1,read\n0x\xff2,read\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'address': .* is not an unsigned"):
        CsvReader(p, engine=engine).read()


@ENGINES
def test_csv_first_bad_row_wins_over_a_later_empty_cell(tmp_path, engine):
    p = tmp_path / "t.csv"
    p.write_text("address,size\n0x1,1\n0xzz,1\n,1\n0x4,1\n0x5,\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'address': '0xzz'"):
        CsvReader(p, engine=engine).read()
    p.write_text("address,size\n0x1,1\n0x2,x\n0x3,\n")
    with pytest.raises(TraceError, match=r"t.csv:3: column 'size': 'x' is not an integer"):
        CsvReader(p, engine=engine).read()


@ENGINES
@pytest.mark.parametrize("suffix, opener", [(".gz", gzip.open), (".xz", None), (".bz2", None)])
def test_csv_compressed(tmp_path, engine, suffix, opener):
    import bz2
    import lzma
    opener = opener or {".xz": lzma.open, ".bz2": bz2.open}[suffix]
    cells, kinds, priv, size = _random_csv_rows(5000, seed=3)
    text = "address,kind,privilege,size\n" + "\n".join(
        f"{a},{k},{p},{s}" for a, k, p, s in zip(cells, kinds, priv, size)) + "\n"
    plain = tmp_path / "t.csv"
    plain.write_text(text)
    z = tmp_path / ("t.csv" + suffix)
    with opener(z, "wt") as f:
        f.write(text)
    assert np.array_equal(CsvReader(z, engine=engine).read(), CsvReader(plain).read())
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    name = r"t\.csv" + suffix.replace(".", r"\.")
    with pytest.raises(TraceError, match=name + ".*corrupt or truncated"):
        CsvReader(z, engine=engine).read()


@ENGINES
def test_csv_reads_only_the_schema_columns(tmp_path, engine):
    p = tmp_path / "t.csv"
    p.write_text('address,note,Kind,timestamp\n0x10,"a, b",W,1\n0x20,,fetch,2.5\n'
                 '0x30,"""q""",read,\n')
    r = CsvReader(p, engine=engine)
    (b, extras), = list(r.iter_tables())
    assert list(b["addr"]) == [0x10, 0x20, 0x30] and list(b["kind"]) == [1, 2, 0]
    assert extras["timestamp"][:2].tolist() == [1.0, 2.5] and np.isnan(extras["timestamp"][2])


def test_csv_engine_is_checked(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("address\n0x1\n")
    with pytest.raises(ValueError, match="engine must be"):
        CsvReader(p, engine="polars")


# -- Parquet: every way of storing the columns reads the same -------------------------------------

def _parquet_from(tmp_path, name, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / name
    pq.write_table(pa.table(columns), p)
    return p


def test_parquet_word_columns_in_any_encoding(tmp_path):
    import pyarrow as pa
    kinds = ["read", "write", "fetch", "W", " x ", "load", "2", "read"]
    privs = ["user", "supervisor", "u", "kernel", "3", "0", "s", "user"]
    addr = pa.array(np.arange(8, dtype=np.uint64) * 4096)
    want = make_accesses(np.arange(8, dtype=np.uint64) * 4096, [0, 1, 2, 1, 2, 0, 2, 0],
                         user=[1, 0, 1, 0, 1, 0, 0, 1])
    forms = {
        "string": lambda v: pa.array(v, pa.string()),
        "large_string": lambda v: pa.array(v, pa.large_string()),
        "binary": lambda v: pa.array([x.encode() for x in v], pa.binary()),
        "dictionary": lambda v: pa.array(v).dictionary_encode(),
        "dictionary int8": lambda v: pa.DictionaryArray.from_arrays(
            pa.array(np.unique(v, return_inverse=True)[1].astype(np.int8)),
            pa.array(np.unique(v)).cast(pa.string())),
    }
    for i, (name, form) in enumerate(forms.items()):
        p = _parquet_from(tmp_path, f"w{i}.parquet", address=addr, kind=form(kinds),
                          privilege=form(privs))
        assert np.array_equal(read_trace(p), want), name
    # integers: kind 0/1/2, privilege a CPL
    p = _parquet_from(tmp_path, "ints.parquet", address=addr,
                      kind=pa.array([0, 1, 2, 1, 2, 0, 2, 0], pa.int8()),
                      privilege=pa.array([3, 0, 3, 1, 3, 2, 0, 3], pa.uint8()))
    assert np.array_equal(read_trace(p), want)
    # a pandas categorical, and a dictionary entry no row uses (not an error)
    df = pd.DataFrame({"address": np.arange(8, dtype=np.uint64) * 4096,
                       "kind": pd.Categorical(kinds, categories=sorted(set(kinds)) + ["jump"]),
                       "privilege": privs})
    df.to_parquet(tmp_path / "cat.parquet")
    assert np.array_equal(read_trace(tmp_path / "cat.parquet"), want)


def test_parquet_number_columns_in_any_type(tmp_path):
    import pyarrow as pa
    want = make_accesses([0x1000, 0x2000, 0x3000, 0x4000, 0x5000], 0, user=1,
                         size=[1, 2, 4, 8, 4096], asid=[0, 1, 2, 3, 4], ac=[0, 1, 0, 1, 0])
    addr_forms = [pa.array(want["addr"]), pa.array(want["addr"].astype(np.int64)),
                  pa.array([hex(int(a)) for a in want["addr"]]),
                  pa.array([str(int(a)) for a in want["addr"]]).dictionary_encode()]
    num_forms = [lambda v: pa.array(v, pa.uint32()), lambda v: pa.array(v, pa.int64()),
                 lambda v: pa.array(np.asarray(v, float)), lambda v: pa.array([str(x) for x in v]),
                 lambda v: pa.array(v, pa.int16()).dictionary_encode()]
    for i, a in enumerate(addr_forms):
        for j, f in enumerate(num_forms):
            ac = pa.array(want["ac"].astype(bool)) if j == 0 else f(want["ac"].tolist())
            p = _parquet_from(tmp_path, f"n{i}{j}.parquet", ADDRESS=a,
                              size=f(want["size"].tolist()), asid=f(want["asid"].tolist()), ac=ac)
            assert np.array_equal(read_trace(p), want), (i, j)


def test_parquet_reads_only_the_schema_columns(tmp_path):
    import pyarrow as pa
    p = _parquet_from(tmp_path, "x.parquet", address=pa.array([1, 2], pa.uint64()),
                      other=pa.array([[1, 2], None], pa.list_(pa.int64())),
                      note=pa.array(["a", None]), timestamp=pa.array([5, None], pa.int64()))
    r = ParquetReader(p)
    (b, extras), = list(r.iter_tables())
    assert list(b["addr"]) == [1, 2]
    assert extras["timestamp"][0] == 5 and np.isnan(extras["timestamp"][1])


@ENGINES
@pytest.mark.parametrize("text, rows", [("address,kind\n", 0), ("address,kind", 0),
                                        ("address,kind\r\n", 0), ("address,kind\n0x1,w", 1),
                                        ("\ufeffaddress,kind\n0x1,w\n", 1)])
def test_csv_header_only_and_bom(tmp_path, engine, text, rows):
    p = tmp_path / "t.csv"
    p.write_text(text, encoding="utf-8")
    b = CsvReader(p, engine=engine).read()
    assert b.shape == (rows,) and (rows == 0 or (b["addr"][0], b["kind"][0]) == (1, 1))
