"""The lackey reader: records, M = read then write, chunking, compression, bad lines."""
import gzip
import lzma
import warnings

import numpy as np
import pytest

from vecmmu import ACCESS_DTYPE
from vecmmu.io import TraceError, TraceWarning, open_trace, read_trace
from vecmmu.io.lackey import LackeyReader, write_lackey

SAMPLE = b"""==8358== Lackey, an example Valgrind tool
==8358== Command: ./t
==8358== 
I  0401ab70,3
 S 1fff000778,8
 L 0403f1a0,4
 M 0025747C,1
I  0401ab73,5

 L 7ffffffffff8,16
--8358-- a debug line
==8358== Exit code:       0
"""


def _expect():
    return [(0x401AB70, 2, 3), (0x1FFF000778, 1, 8), (0x403F1A0, 0, 4), (0x25747C, 0, 1),
            (0x25747C, 1, 1), (0x401AB73, 2, 5), (0x7FFFFFFFFFF8, 0, 16)]


def _rows(b):
    return [(int(a), int(k), int(s)) for a, k, s in zip(b["addr"], b["kind"], b["size"])]


@pytest.mark.nojit
def test_records_kinds_sizes(tmp_path):
    p = tmp_path / "t.lackey"
    p.write_bytes(SAMPLE)
    r = LackeyReader(p)
    b = r.read()
    assert b.dtype == ACCESS_DTYPE
    assert _rows(b) == _expect()
    assert (b["user"] == 1).all() and (b["asid"] == 0).all() and (b["ac"] == 0).all()
    assert r.accesses == 7


@pytest.mark.nojit
@pytest.mark.parametrize("chunk,block", [(16, 4096), (16, 7), (1 << 20, 1 << 24)])
def test_chunk_and_block_boundaries_do_not_change_the_result(tmp_path, chunk, block):
    """Lines cut by the end of a read block, and an M that needs two output slots at
    the end of a batch, are carried over correctly."""
    rng = np.random.default_rng(1)
    lines = []
    exp = []
    for i in range(5000):
        a = int(rng.integers(0, 1 << 47))
        s = int(rng.integers(1, 64))
        c = "ILSM"[i % 4]
        lines.append(f"{'I ' if c == 'I' else ' ' + c} {a:08x},{s}")
        exp += [(a, 0, s), (a, 1, s)] if c == "M" else [(a, {"I": 2, "L": 0, "S": 1}[c], s)]
    p = tmp_path / "t.lackey"
    p.write_text("\n".join(lines))            # no newline at the end
    r = LackeyReader(p, chunk=chunk, block=block)
    got = []
    for b in r:
        assert b.shape[0] <= chunk
        got += _rows(b)
    assert got == exp
    assert r.records == 5000


@pytest.mark.parametrize("comp", ["gz", "xz"])
def test_compressed(tmp_path, comp):
    p = tmp_path / f"t.lackey.{comp}"
    (gzip if comp == "gz" else lzma).open(p, "wb").write(SAMPLE)
    assert _rows(read_trace(p)) == _expect()


def test_crlf_and_0x(tmp_path):
    p = tmp_path / "t.lackey"
    p.write_bytes(b"I  0x401000,4\r\n L 0X10,8\r\n")
    assert _rows(read_trace(p, "lackey")) == [(0x401000, 2, 4), (0x10, 0, 8)]


@pytest.mark.nojit
@pytest.mark.parametrize("line,lineno,words", [
    (b" L 12zz34,4", 5, "not hexadecimal"),
    (b" X 1234,4", 5, "not a lackey record"),
    (b" L 1234", 5, "no ',size'"),
    (b" L 1234,", 5, "size is not a decimal"),
    (b" L 1234,4a", 5, "size is not a decimal"),
    (b" L 1234,4x", 5, "unexpected text after the size"),
    (b" L 1234,0", 5, "1 .. 2**32-1"),
    (b" L 12345678901234567,4", 5, "more than 16 hex digits"),
    (b" L 1234,4 junk", 5, "unexpected text"),
    (b"hello world", 5, "not a lackey record"),
])
def test_bad_line_names_file_line_and_field(tmp_path, line, lineno, words):
    p = tmp_path / "bad.lackey"
    p.write_bytes(b"==1== x\nI  1000,4\n L 2000,8\n\n" + line + b"\nI  1004,4\n")
    with pytest.raises(TraceError) as e:
        read_trace(p, "lackey")
    msg = str(e.value)
    assert f"bad.lackey:{lineno}:" in msg and words in msg
    assert line.decode()[:10] in msg


def test_bad_line_after_many_blocks_has_the_right_number(tmp_path):
    p = tmp_path / "bad.lackey"
    body = b"I  1000,4\n" * 100_000 + b" L 1234,Q\n"
    p.write_bytes(body)
    with pytest.raises(TraceError, match=r"bad.lackey:100001:"):
        LackeyReader(p, block=4096, chunk=1000).read()


def test_truncated_last_line(tmp_path):
    p = tmp_path / "cut.lackey"
    p.write_bytes(b"I  1000,4\n L 2000,8\n S 30")          # cut inside the address
    with pytest.raises(TraceError, match=r"cut.lackey:3: no ',size'"):
        read_trace(p)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(SAMPLE * 2000)
    p = tmp_path / "cut.lackey.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="corrupt or truncated gzip"):
        read_trace(p, "lackey")


def test_skip_mode_warns_once_with_the_first_bad_line(tmp_path):
    p = tmp_path / "t.lackey"
    p.write_bytes(b"I  1000,4\n L zz,4\n S 2000,8\n L 3000\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = LackeyReader(p, errors="skip")
        b = r.read()
    assert _rows(b) == [(0x1000, 2, 4), (0x2000, 1, 8)]
    assert r.skipped == 2
    msgs = [str(x.message) for x in w if issubclass(x.category, TraceWarning)]
    assert len(msgs) == 1 and "skipped 2 bad line(s)" in msgs[0] and "t.lackey:2:" in msgs[0]


def test_no_records_is_an_error(tmp_path):
    p = tmp_path / "t.lackey"
    p.write_bytes(b"==1== Lackey\n==1== Counted 3 calls\n")
    with pytest.raises(TraceError, match="no lackey records.*--trace-mem=yes"):
        read_trace(p, "lackey")


def test_writer_round_trip(tmp_path):
    from vecmmu.io import synth
    t = synth.uniform(20_000, 0, 1 << 47, kinds=(1, 1, 1), access_size=8, seed=3)
    p = tmp_path / "w.lackey.gz"
    assert write_lackey(p, t) == 20_000
    back = read_trace(p)
    assert np.array_equal(back["addr"], t["addr"]) and np.array_equal(back["kind"], t["kind"])
    assert np.array_equal(back["size"], t["size"])


def test_detection(tmp_path):
    p = tmp_path / "noext"
    p.write_bytes(SAMPLE)
    assert open_trace(p).format == "lackey"
