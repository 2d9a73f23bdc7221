"""Synthetic generators: seeded, in range, with the asked-for distributions."""
import numpy as np
import pytest

from vecmmu import ACCESS_DTYPE
from vecmmu.io import synth


def test_uniform_is_seeded_and_in_range():
    a = synth.uniform(100_000, 0x400000, 1 << 20, kinds=(1, 1, 0), seed=5, align=8)
    b = synth.uniform(100_000, 0x400000, 1 << 20, kinds=(1, 1, 0), seed=5, align=8)
    c = synth.uniform(100_000, 0x400000, 1 << 20, kinds=(1, 1, 0), seed=6, align=8)
    assert a.dtype == ACCESS_DTYPE and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a["addr"].min() >= 0x400000 and a["addr"].max() < 0x500000
    assert (a["addr"] % 8 == 0).all()
    assert set(np.unique(a["kind"])) == {0, 1} and abs((a["kind"] == 1).mean() - 0.5) < 0.01


def test_zipf_rank_frequencies():
    t = synth.zipf(400_000, 0, 1000, alpha=1.0, scatter=False, seed=1)
    counts = np.bincount((t["addr"] >> np.uint64(12)).astype(np.int64), minlength=1000)
    # P(rank k) ~ 1/k: rank 1 about twice rank 2, ten times rank 10
    assert 1.8 < counts[0] / counts[1] < 2.2 and 8 < counts[0] / counts[9] < 12
    s = synth.zipf(400_000, 0, 1000, alpha=1.0, scatter=True, seed=1)
    assert np.array_equal(np.sort(np.bincount((s["addr"] >> np.uint64(12)).astype(np.int64),
                                              minlength=1000)), np.sort(counts))


def test_strided_wraps_and_goes_down():
    t = synth.strided(10, 0x1000, 0x800, size=0x2000)
    assert [int(a) - 0x1000 for a in t["addr"]] == [0, 0x800, 0x1000, 0x1800, 0, 0x800, 0x1000,
                                                     0x1800, 0, 0x800]
    d = synth.strided(5, 0x2000, -8)
    assert [int(a) for a in d["addr"]] == [0x2000, 0x1FF8, 0x1FF0, 0x1FE8, 0x1FE0]


def test_generate_streams_in_chunks_and_continues_strides():
    parts = list(synth.generate("strided", 10, chunk=4, start=0, stride=64))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert [int(a) for a in np.concatenate(parts)["addr"]] == [64 * i for i in range(10)]
    z = list(synth.generate("zipf", 1000, chunk=300, start=0, pages=16, seed=2))
    assert sum(len(p) for p in z) == 1000


def test_region_mix():
    t = synth.region_mix(100_000, [
        dict(start=0x400000, size=1 << 16, weight=3, kinds=(0, 0, 1)),
        dict(start=0x10000000, size=1 << 24, pattern="zipf", kinds=(1, 1, 0), user=False),
        dict(start=0x7FFF0000, size=1 << 16, pattern="strided", stride=-8, weight=1)], seed=4)
    code = (t["addr"] >= 0x400000) & (t["addr"] < 0x410000)
    assert abs(code.mean() - 0.6) < 0.001 and (t["kind"][code] == 2).all()
    heap = (t["addr"] >= 0x10000000) & (t["addr"] < 0x11000000)
    assert abs(heap.mean() - 0.2) < 0.001 and (t["user"][heap] == 0).all()
    stack = t["addr"][(t["addr"] >= 0x7FFF0000) & (t["addr"] < 0x80000000)]
    assert stack.shape[0] == 20_000 and stack.max() == 0x7FFFFFFF
    with pytest.raises(ValueError, match="unknown keys"):
        synth.region_mix(10, [dict(start=0, size=10, colour="red")])
    with pytest.raises(ValueError, match="unknown pattern"):
        synth.region_mix(10, [dict(start=0, size=10, pattern="spiral")])
    with pytest.raises(ValueError, match="three non-negative weights"):
        synth.uniform(10, 0, 10, kinds=(1, 2))
