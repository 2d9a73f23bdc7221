"""ChampSim input_instr traces: layout, order of accesses, wrong sizes, compression."""
import lzma

import numpy as np
import pytest

from vecmmu.io import TraceError, open_trace, read_trace
from vecmmu.io.champsim import INPUT_INSTR_DTYPE, ChampSimReader, write_champsim


def test_record_layout_is_64_bytes_with_the_documented_offsets():
    d = INPUT_INSTR_DTYPE
    assert d.itemsize == 64
    assert [d.fields[n][1] for n in ("ip", "is_branch", "branch_taken", "destination_registers",
                                     "source_registers", "destination_memory",
                                     "source_memory")] == [0, 8, 9, 10, 12, 16, 32]


def _hand_record(ip, dst=(0, 0), src=(0, 0, 0, 0), br=(0, 0)):
    import struct
    return struct.pack("<QBB2B4B2Q4Q", ip, br[0], br[1], 1, 2, 3, 4, 5, 6, *dst, *src)


@pytest.mark.nojit
def test_accesses_in_order_fetch_loads_stores(tmp_path):
    p = tmp_path / "t.champsim"
    p.write_bytes(_hand_record(0x401000, dst=(0x7000, 0), src=(0x5000, 0, 0x6000, 0), br=(1, 1))
                  + _hand_record(0x401004))
    r = ChampSimReader(p, fetch_size=4, data_size=8)
    b = r.read()
    assert [(int(a), int(k), int(s)) for a, k, s in zip(b["addr"], b["kind"], b["size"])] == [
        (0x401000, 2, 4), (0x5000, 0, 8), (0x6000, 0, 8), (0x7000, 1, 8), (0x401004, 2, 4)]
    assert (b["user"] == 1).all()
    assert r.records == 2 and r.accesses == 5


def test_chunks_and_xz(tmp_path):
    rng = np.random.default_rng(0)
    n = 10_000
    ip = rng.integers(1, 1 << 47, n, dtype=np.uint64)
    src = rng.integers(0, 1 << 47, (n, 4), dtype=np.uint64) * (rng.random((n, 4)) < 0.3)
    dst = rng.integers(0, 1 << 47, (n, 2), dtype=np.uint64) * (rng.random((n, 2)) < 0.2)
    plain = tmp_path / "t.champsimtrace"
    write_champsim(plain, ip, src, dst)
    xz = tmp_path / "t.champsimtrace.xz"
    xz.write_bytes(lzma.compress(plain.read_bytes()))
    whole = read_trace(plain)
    parts = list(ChampSimReader(xz, chunk=100))
    assert all(b.shape[0] <= 100 for b in parts)
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.shape[0] == n + int((src != 0).sum() + (dst != 0).sum())
    assert open_trace(xz).format == "champsim"


def test_wrong_size_is_refused_with_record_count(tmp_path):
    p = tmp_path / "t.champsim"
    p.write_bytes(_hand_record(0x1000) * 3 + b"\0" * 24)
    with pytest.raises(TraceError, match=r"216 bytes is not a whole number of 64-byte.*3 records "
                                         r"and 24 bytes left over"):
        ChampSimReader(p)


def test_truncated_xz_stream_names_the_partial_record(tmp_path):
    p = tmp_path / "t.champsim.xz"
    p.write_bytes(lzma.compress(_hand_record(0x1000) * 5 + b"\1" * 10))
    with pytest.raises(TraceError, match=r"record 5 at byte offset 0x140 has only 10 bytes"):
        read_trace(p, "champsim")


def test_cut_xz_file(tmp_path):
    data = lzma.compress(_hand_record(0x1000) * 5000)
    p = tmp_path / "cut.champsim.xz"
    p.write_bytes(data[:len(data) // 2])
    with pytest.raises(TraceError, match="corrupt or truncated xz"):
        read_trace(p, "champsim")


def test_other_record_layout_is_detected(tmp_path):
    """A 64-byte-multiple file whose branch bytes are not 0/1 is not input_instr."""
    p = tmp_path / "t.champsim"
    p.write_bytes(_hand_record(0x1000) + _hand_record(0x2000, br=(7, 0)))
    with pytest.raises(TraceError, match=r"record 1 \(byte offset 0x40\): is_branch = 7"):
        read_trace(p, "champsim")


def test_empty_file(tmp_path):
    p = tmp_path / "e.champsim"
    p.write_bytes(b"")
    with pytest.raises(TraceError, match="empty"):
        ChampSimReader(p)
