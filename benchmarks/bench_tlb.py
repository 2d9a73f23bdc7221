"""Speed of the translation-cache model (vecmmu.perf) next to a plain-Python model of the
same caches (tests/perf_reference.py), in one run.

    python benchmarks/bench_tlb.py [--quick] [--ref-n N]

Cases (all with the Skylake-like TlbConfig, every structure on):

* native: the bundled real trace (data/wordfreq.lackey.xz, 3.6 M accesses, 4-level paging
  from data/wordfreq.maps), walked once with trace=True; then the model replays it;
* nested: a 4-level guest over 4-level EPT (4 KiB EPT pages), 1 M accesses with locality
  (80 % to 64 hot pages, the rest over 16 k pages);
* sweep: 8 configurations (the base scaled by 1/8 .. 16) over the native trace in one call,
  configurations in parallel, next to 8 separate simulate() calls; rate = accesses ×
  configurations per second.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Row, best_time, log, machine_line, ratio, target_ratio  # noqa: E402
from perf_reference import RefModel  # noqa: E402  (tests/)
from vecmmu import CpuRole, EptRole, NestedGuest  # noqa: E402
from vecmmu.io import address_space_from_maps, read_trace  # noqa: E402
from vecmmu.perf import TlbConfig, simulate, sweep  # noqa: E402

FAMILY = "tlb"
NATIVE, NESTED, SWEEP_CASE = "native 4-level, wordfreq", "nested 4/4, EPT 4K", "sweep, 8 configs"
MODEL = "simulate() model"
PYREF = "plain-Python model (tests/)"
SWEEP = "sweep(), configs in parallel"
SEPARATE = "8 separate simulate() calls"
SCALES = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16)


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


def oracle_time(res, cfg, n):
    """Seconds the Python model takes on the first ``n`` translations, and its output."""
    h = _Head(res, n)
    t = time.perf_counter()
    out = RefModel(cfg).run(h, [])
    return time.perf_counter() - t, out


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


def measure(*, native_limit=None, nested_n=1_000_000, ref_n=100_000, repeats=3, do_sweep=True):
    """The model on the native and nested traces next to the Python model (on the first
    ``ref_n`` translations), and the 8-configuration sweep next to 8 separate calls:
    ``(rows, checks)``. Model rows carry ``extra=dict(l1_hit=..., refs_per_access=...)``."""
    cfg = TlbConfig.skylake()
    rows, checks = [], []
    log("tlb: walking the native trace (trace=True) ...")
    nat = native_trace(native_limit)
    log("tlb: walking the nested trace ...")
    nst = nested_trace(nested_n)
    for case, res in ((NATIVE, nat), (NESTED, nst)):
        log(f"tlb {case}: model ...")
        dt = best_time(lambda: simulate(res, cfg), repeats)
        m = min(ref_n, len(res))
        log(f"tlb {case}: Python model on {m:,} ...")
        ref_dt, out = oracle_time(res, cfg, m)
        got = simulate(res, cfg)
        same = all(int(got.refs[i]) == o["refs"] for i, o in enumerate(out))
        checks.append(f"{'ok      ' if same else 'MISMATCH'} TLB model == Python model (references "
                      f"per access) on {m:,} translations, {case}")
        s = got.summary().iloc[0]
        rows.append(Row(FAMILY, case, MODEL, len(res), dt, "accesses", (PYREF,),
                        extra=dict(l1_hit=float(s["l1_hit_rate"]),
                                   refs_per_access=float(s["refs_per_access"]), same=same)))
        rows.append(Row(FAMILY, case, PYREF, m, ref_dt, "accesses", short="Python model"))
    if do_sweep:
        configs = [cfg.scaled(f) for f in SCALES]
        k = len(configs)
        log(f"tlb: sweep of {k} configurations ({numba.get_num_threads()} threads) ...")
        dt = best_time(lambda: sweep(nat, configs), repeats)
        rows.append(Row(FAMILY, SWEEP_CASE, SWEEP, len(nat) * k, dt, "access-configs", (SEPARATE,)))
        dt = best_time(lambda: [simulate(nat, c) for c in configs], repeats)
        rows.append(Row(FAMILY, SWEEP_CASE, SEPARATE, len(nat) * k, dt, "access-configs",
                        short="separate calls"))
    return rows, checks


def targets(rows):
    return [target_ratio(f"TLB model, {case}: >= 100x the plain-Python model",
                         ratio(rows, FAMILY, case, MODEL, PYREF), 100) for case in (NATIVE, NESTED)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 M native accesses, 200 k nested")
    ap.add_argument("--ref-n", type=int, default=100_000, help="translations given to the Python model")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    rows, checks = measure(native_limit=1_000_000 if a.quick else None,
                           nested_n=200_000 if a.quick else 1_000_000, ref_n=a.ref_n,
                           repeats=a.repeats)
    threads = numba.get_num_threads()
    print(f"TLB model (vecmmu.perf, TlbConfig.skylake()) vs the plain-Python model of the same "
          f"caches; {threads} threads")
    print(f"machine: {machine_line()}")
    print(f"{'case':<28}{'translations':>14}{'model M/s':>12}{'Python k/s':>12}{'ratio':>9}"
          f"{'same refs':>11}{'L1 hit':>9}{'refs/acc':>10}")
    for case in (NATIVE, NESTED):
        m = next(r for r in rows if r.case == case and r.contender == MODEL)
        p = next(r for r in rows if r.case == case and r.contender == PYREF)
        print(f"{case:<28}{m.n:>14,}{m.rate / 1e6:>12.1f}{p.rate / 1e3:>12.1f}{m.rate / p.rate:>8.0f}×"
              f"{'yes' if m.extra['same'] else 'NO':>11}{m.extra['l1_hit']:>9.2%}"
              f"{m.extra['refs_per_access']:>10.3f}")
    sw = next(r for r in rows if r.contender == SWEEP)
    sep = next(r for r in rows if r.contender == SEPARATE)
    print(f"{'sweep, 8 configs':<28}{sw.n:>14,}{sw.rate / 1e6:>12.1f}{'':>12}{'':>9}"
          f"   ({sw.rate / sep.rate:.2f}x 8 separate simulate() calls)")
    for c in checks:
        print(c)
    for t in targets(rows):
        print(t.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
