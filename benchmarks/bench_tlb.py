"""Speed of the translation-cache model (vecmmu.perf) next to a plain-Python model of the
same caches (tests/perf_reference.py), in one run.

    python benchmarks/bench_tlb.py [--quick] [--ref-n N]

Cases (all with the Skylake-like TlbConfig, every structure on):

* native: the bundled real trace (data/wordfreq.lackey.xz, 3.6 M accesses, 4-level paging
  from data/wordfreq.maps), walked once with trace=True; then the model replays it;
* nested: a 4-level guest over 4-level EPT (4 KiB EPT pages), 1 M accesses with locality
  (80 % to 64 hot pages, the rest over 16 k pages);
* sweep: 8 configurations (the base scaled by 1/8 .. 16) over the native trace in one call,
  configurations in parallel; rate = accesses × configurations per second.

The Python model runs on the first ``--ref-n`` translations. Rates are the best of three
calls after a warm-up (compilation excluded). Target: model ≥ 100× the Python model
(printed as PASS/MISS; about 20 M accesses/s on one core, for information). Exit status 0.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from perf_reference import RefModel  # noqa: E402
from vecmmu import CpuRole, EptRole, NestedGuest  # noqa: E402
from vecmmu.io import address_space_from_maps, read_trace  # noqa: E402
from vecmmu.perf import TlbConfig, simulate, sweep  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def best(fn, repeats=3):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


class _Head:
    """The first n rows of a traced Translation, as the Python model reads them."""

    def __init__(self, res, n):
        self._cols = {k: v[:n] for k, v in res.columns().items()}
        self.trace_addr, self.trace_value = res.trace_addr[:n], res.trace_value[:n]
        self.tdp_trace = (None if res.tdp_trace is None
                          else (res.tdp_trace[0][:n], res.tdp_trace[1][:n]))
        self.n = n

    def columns(self):
        return self._cols

    def __len__(self):
        return self.n


def oracle_rate(res, cfg, n):
    h = _Head(res, n)
    t = time.perf_counter()
    out = RefModel(cfg).run(h, [])
    return n / (time.perf_counter() - t), out


def native_trace(limit):
    sp = address_space_from_maps(str(REPO / "data" / "wordfreq.maps"))
    t = read_trace(str(REPO / "data" / "wordfreq.lackey.xz"), limit=limit)
    return sp.walker().translate(t, trace=True)


def nested_trace(n, seed=1):
    rng = np.random.default_rng(seed)
    g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole(), guest_ram=256 << 20,
                    tdp_page_size=4096)
    starts = np.unique(rng.integers(0, 1 << 26, 1024)).astype(np.uint64) << np.uint64(21)
    for s in starts:
        g.guest.map(int(s), 16 << 12, user=True)
    pages = (starts[:, None] + (np.arange(16, dtype=np.uint64) << np.uint64(12))[None, :]).ravel()
    hot = pages[rng.integers(0, pages.size, 64)]
    pick = np.where(rng.random(n) < 0.8, hot[rng.integers(0, hot.size, n)],
                    pages[rng.integers(0, pages.size, n)])
    addrs = pick + rng.integers(0, 4096, n).astype(np.uint64)
    return g.walker().translate(addrs, user=True, trace=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 M native accesses, 200 k nested")
    ap.add_argument("--ref-n", type=int, default=100_000, help="translations given to the Python model")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    cfg = TlbConfig.skylake()
    rows = []

    log("walking the native trace (trace=True) ...")
    nat = native_trace(1_000_000 if a.quick else None)
    log("walking the nested trace ...")
    nst = nested_trace(200_000 if a.quick else 1_000_000)

    for name, res in (("native 4-level, wordfreq", nat), ("nested 4/4, EPT 4K", nst)):
        log(f"{name}: model ...")
        dt = best(lambda: simulate(res, cfg), a.repeats)
        model = len(res) / dt
        m = min(a.ref_n, len(res))
        log(f"{name}: Python model on {m:,} ...")
        ref, out = oracle_rate(res, cfg, m)
        got = simulate(res, cfg)
        same = all(int(got.refs[i]) == o["refs"] for i, o in enumerate(out))
        s = got.summary().iloc[0]
        rows.append((name, len(res), model, ref, same, s["l1_hit_rate"], s["refs_per_access"]))

    configs = [cfg.scaled(f) for f in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16)]
    threads = numba.get_num_threads()
    log(f"sweep of {len(configs)} configurations ({threads} threads) ...")
    dt = best(lambda: sweep(nat, configs), a.repeats)
    sweep_rate = len(nat) * len(configs) / dt

    print(f"TLB model (vecmmu.perf, TlbConfig.skylake()) vs the plain-Python model of the same "
          f"caches; numba {numba.__version__}, {threads} threads")
    print(f"{'case':<28}{'translations':>14}{'model M/s':>12}{'Python k/s':>12}{'ratio':>9}"
          f"{'same refs':>11}{'L1 hit':>9}{'refs/acc':>10}")
    for name, n, model, ref, same, l1, rpa in rows:
        print(f"{name:<28}{n:>14,}{model / 1e6:>12.1f}{ref / 1e3:>12.1f}{model / ref:>8.0f}×"
              f"{'yes' if same else 'NO':>11}{l1:>9.2%}{rpa:>10.3f}")
    print(f"{'sweep, 8 configs':<28}{len(nat) * len(configs):>14,}{sweep_rate / 1e6:>12.1f}"
          f"{'':>12}{'':>9}")
    for name, n, model, ref, same, *_ in rows:
        ok = model / ref >= 100
        print(f"{'PASS' if ok else 'MISS'}: {name}: model {model / ref:.0f}× the Python model "
              f"(target ≥ 100×); {model / 1e6:.1f} M accesses/s (about 20 M/s expected on one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
