"""Nested (two-dimensional) walk speed next to the 1-D walk of the same guest tables.

    python benchmarks/bench_nested.py [--n N] [--pages P]

One run, one table: translations/s and memory references/s (paging-structure entries
read, guest and TDP) of the guest's own 1-D walk and of the 2-D walk over 4-level EPT,
5-level EPT (with a 5-level guest) and NPT. Ratios are what to quote: the machine is a
shared 2-core box. Never fails on speed.
"""
from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np

from vecmmu import CpuRole, EptRole, NestedGuest, NptRole


def best(f, repeats=3):
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = f()
        t.append(time.perf_counter() - t0)
    return min(t), r


def case(name, guest_mode, tdp_role, n, pages, threads):
    g = NestedGuest(CpuRole.for_mode(guest_mode, maxphyaddr=46), tdp_role, guest_ram=256 << 20,
                    tdp_page_size=4096)
    rng = np.random.default_rng(1)
    base = 0x7F0000000000 if guest_mode == "4level" else 0x7F0000000000
    g.guest.map(base, pages * 4096, user=True, accessed=True, dirty=True)
    addr = np.uint64(base) + rng.integers(0, pages * 4096, n, dtype=np.uint64)
    one_d = g.guest.walker()             # the guest's own tables, guest-physical memory
    two_d = g.walker()
    rows = []
    for label, w in (("1-D guest walk", one_d), (f"2-D over {name}", two_d)):
        w.translate(addr[:1000], user=True, threads=threads)           # compile / warm
        dt, r = best(lambda: w.translate(addr, user=True, threads=threads))
        refs = float(r.refs.astype(np.int64).mean())
        ok = float((r.fault == 0).mean())
        rows.append((label, guest_mode, n / dt / 1e6, refs, n * refs / dt / 1e6, ok))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--pages", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, numba {numba.__version__}, threads={a.threads}; "
          f"shared machine: read the ratios")
    print(f"{a.n:,} random user reads over {a.pages:,} mapped 4 KiB pages (4 KiB TDP pages), "
          f"best of 3\n")
    rows = []
    rows += case("EPT 4-level", "4level", EptRole(), a.n, a.pages, a.threads)
    rows += case("EPT 5-level", "5level", EptRole(levels=5), a.n, a.pages, a.threads)
    rows += case("NPT 4-level", "4level", NptRole(), a.n, a.pages, a.threads)
    print(f"{'walk':26s} {'guest':7s} {'M transl/s':>11s} {'refs/walk':>10s} {'M refs/s':>9s} "
          f"{'ok':>6s} {'x 1-D':>6s}")
    base = None
    for label, mode, mps, refs, rps, ok in rows:
        if label.startswith("1-D"):
            base = mps
        print(f"{label:26s} {mode:7s} {mps:11.2f} {refs:10.1f} {rps:9.1f} {ok:6.1%} {mps / base:6.2f}")
    print("\nanchors: an uncached 4-on-4 walk reads 24 entries, 5-on-5 reads 35 ((n+1)(m+1)-1)")


if __name__ == "__main__":
    main()
