"""Dask scale-out: results on a LocalCluster (threads and processes) equal the in-process path."""
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from vecmmu import Mmu  # noqa: E402
from vecmmu.analysis.stats import TraceStats  # noqa: E402
from vecmmu.io import TraceError, write_parquet  # noqa: E402
from vecmmu.io.synth import uniform  # noqa: E402
from vecmmu.scale import WalkSpec, cluster  # noqa: E402

N_PER_FILE = 20_000


def _tables():
    mmu = Mmu.for_mode("4level", ram_size=1 << 24)
    mmu.map(0x400000, 0x40000, user=True)
    mmu.map(0x600000, 0x200000, user=True, page_size=2 << 20)
    mmu.map(0x500000, 0x10000, user=False, writable=False)
    return mmu


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    parts = []
    for i in range(3):
        b = uniform(N_PER_FILE, 0x3f0000, 0x420000, kinds=(2, 1, 1), seed=i)
        b["user"][::5] = 0
        b["size"][::7] = 8
        parts.append(b)
        write_parquet(d / f"part{i}.parquet", b)
    return d, np.concatenate(parts)


@pytest.fixture(scope="module", params=["threads", "processes"])
def client(request):
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=request.param == "processes",
                      dashboard_address=None) as lc, Client(lc) as c:
        yield c


def _stats(res):
    st = TraceStats()
    st.add(res)
    return st


def test_translate_equals_in_process(dataset, client):
    path, whole = dataset
    walk = _tables().walker()
    ref = walk.translate(whole).to_frame()
    got = cluster.translate(path, walk, client=client).compute()
    assert got.shape[0] == ref.shape[0] > whole.shape[0]          # some accesses were split
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref)


def test_stats_equal_in_process(dataset, client):
    path, whole = dataset
    walk = _tables().walker()
    st = cluster.trace_stats(path, walk, client=client, split_every=2)
    ref = _stats(walk.translate(whole))
    assert st.text() == ref.text()
    assert np.array_equal(st.by_class, ref.by_class) and st.codes == ref.codes
    assert st.fault_pages == ref.fault_pages and st.accesses == whole.shape[0]


def test_ad_snapshot_or_reduced(dataset, client):
    path, whole = dataset
    spec = WalkSpec.of(_tables().walker())
    ref = spec.build()
    ref_stats = _stats(ref.translate(whole, ad="snapshot"))
    got = spec.build()
    start = got.mem.backings[0].copy()
    st = cluster.trace_stats(path, got, client=client, ad="snapshot", write_back=True)
    assert st.text() == ref_stats.text()
    assert (got.mem.backings[0] != start).sum() > 0                 # flags were written back
    assert np.array_equal(got.mem.backings[0], ref.mem.backings[0])
    # without write_back the caller's memory is untouched
    other = spec.build()
    cluster.trace_stats(path, other, client=client, ad="snapshot")
    assert np.array_equal(other.mem.backings[0], start)


def test_local_scheduler_without_client(dataset):
    path, whole = dataset
    walk = _tables().walker()
    st = cluster.trace_stats(path, walk)
    assert st.text() == _stats(walk.translate(whole)).text()


def test_refusals(dataset):
    path, _ = dataset
    walk = _tables().walker()
    with pytest.raises(ValueError, match="snapshot mode only"):
        cluster.trace_stats(path, walk, ad="trace")
    with pytest.raises(ValueError, match="needs ad='snapshot'"):
        cluster.trace_stats(path, walk, write_back=True)
    with pytest.raises(ValueError, match="never writes A/D"):
        cluster.translate(path, walk, ad="snapshot")
    with pytest.raises(TypeError, match="PageWalk"):
        cluster.trace_stats(path, "not a walker")


def test_bad_partition_names_the_row():
    walk = _tables().walker()
    df = pd.DataFrame({"address": [0x400000, 0x400001, 0x400002],
                       "kind": ["read", "jump", "write"]})
    with pytest.raises(TraceError, match=r"row 1: column 'kind': 'jump'"):
        cluster.trace_stats(df, walk)


def test_spec_round_trip_nested_and_pae():
    from vecmmu import NestedGuest
    for mode in ("pae", "32bit", "5level"):
        mmu = Mmu.for_mode(mode, ram_size=1 << 24)
        mmu.map(0x400000, 0x3000, user=True)
        w = mmu.walker()
        addrs = np.arange(0x3ff000, 0x404000, 0x321, dtype=np.uint64)
        a = w.translate(addrs, user=True).to_frame()
        spec = WalkSpec.of(w)
        assert spec.mem.nbytes < 1 << 20                           # zeros are not shipped
        pd.testing.assert_frame_equal(spec.build().translate(addrs, user=True).to_frame(), a)
    from vecmmu import CpuRole, EptRole
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=1 << 24)
    g.guest.map(0x400000, 0x3000, user=True)
    w = g.walker()
    addrs = np.arange(0x3ff000, 0x404000, 0x321, dtype=np.uint64)
    pd.testing.assert_frame_equal(WalkSpec.of(w).build().translate(addrs, user=True).to_frame(),
                                  w.translate(addrs, user=True).to_frame())
