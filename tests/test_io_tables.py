"""CSV and Parquet traces: the documented schema, address spaces from cr3/pid, errors."""
import gzip

import numpy as np
import pandas as pd
import pytest

from vecmmu import make_accesses
from vecmmu.io import TraceError, open_trace, read_trace
from vecmmu.io.tables import CsvReader, ParquetReader, write_csv, write_parquet

pytest.importorskip("pyarrow")

CSV = """address,kind,privilege,size,timestamp,cpu,pid
0x400000,fetch,user,4,10,0,77
4198400,read,user,8,11,0,77
0xffffffff81000000,w,supervisor,8,12,1,5
0x7ffc0000,WRITE,3,16,13,1,77
0x1000,x,0,1,14,0,9
"""


def test_csv_schema(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(CSV)
    r = CsvReader(p)
    tabs = list(r.iter_tables())
    b, extras = tabs[0]
    assert [int(a) for a in b["addr"]] == [0x400000, 4198400, 0xFFFFFFFF81000000, 0x7FFC0000, 0x1000]
    assert list(b["kind"]) == [2, 0, 1, 1, 2]
    assert list(b["user"]) == [1, 1, 0, 1, 0]
    assert list(b["size"]) == [4, 8, 8, 16, 1]
    assert list(b["asid"]) == [0, 0, 1, 0, 2]           # pid 77, 5, 9 in order of appearance
    assert r.asid_keys == [77, 5, 9]
    assert list(extras["timestamp"]) == [10, 11, 12, 13, 14] and list(extras["cpu"]) == [0, 0, 1, 1, 0]


def test_csv_defaults_and_gzip_and_chunks(tmp_path):
    p = tmp_path / "t.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("addr\n" + "\n".join(hex(0x1000 * i) for i in range(1000)) + "\n")
    parts = list(CsvReader(p, chunk=300))
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
])
def test_csv_bad_value_names_line_and_column(tmp_path, row, col, words):
    p = tmp_path / "bad.csv"
    p.write_text("address,kind,privilege,size\n0x1,read,user,1\n0x2,read,user,1\n" + row + "\n")
    with pytest.raises(TraceError) as e:
        read_trace(p, "csv")
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
