"""What-if sweep speed: one walk + K table-lookup decisions against K separate walks.

    .venv/bin/python benchmarks/bench_whatif.py [--n 10000000] [--threads 2]

Prints a table of ratios measured side by side in one run (absolute times on a shared
machine are noise). Never fails on speed. ``walk s`` / ``decide s`` split the sweep's
time: the permissive walk(s) (in chunks, keeping a few narrow columns per access) and the
decision kernel (a prange over accesses, the K variants inner, writing the (n, K) u1
fault matrix). The K separate walks each make a full result and drop it (the allocator
reuses its memory), as a loop over configurations would.
"""
import argparse
import time

import dataclasses

import numpy as np

from vecmmu import PageWalk

from vecmmu import demo
from vecmmu.analysis.whatif import Variant, whatif

DECIDE = [Variant(f"wp{wp} smep{se} smap{sa} pke{pk}", wp=bool(wp), smep=bool(se), smap=bool(sa),
                  pke=bool(pk))
          for wp in (0, 1) for se in (0, 1) for sa in (0, 1) for pk in (0, 1)]        # 16
MIXED = DECIDE[:12] + [Variant("nxe0", nxe=False), Variant("nxe0 smap0", nxe=False, smap=False),
                       Variant("nxe0 wp0", nxe=False, wp=False), Variant("pkru ad1", pkru=4)]


def run(walker, acc, variants, threads):
    t0 = time.perf_counter()
    wi = whatif(walker, acc, variants, baseline=False, threads=threads)
    return time.perf_counter() - t0, wi


def separate_walks(walker, acc, variants, threads):
    """What a user does without the sweep: one full walk per configuration."""
    t0 = time.perf_counter()
    out = np.empty((len(acc), len(variants)), np.uint8)
    for k, v in enumerate(variants):
        role = dataclasses.replace(walker.role, **{f: getattr(v, f) for f in
                                                   ("wp", "smep", "smap", "pke", "nxe", "pse")
                                                   if getattr(v, f) is not None})
        w = PageWalk(role, walker.mem, walker.cr3,
                     pkru=v.pkru if v.pkru is not None else int(walker.pkru[0]))
        out[:, k] = w.translate(acc, threads=threads).fault
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    mmu = demo.build_guest()
    w = mmu.walker()
    acc = demo.make_trace(args.n, seed=1)
    small = acc[:20000]
    for v in (DECIDE, MIXED):                                # compile everything first
        run(w, small, v, args.threads)
        separate_walks(w, small, v, args.threads)
    rows = []
    for label, variants in (("16 decision-only", DECIDE), ("12 decision + 4 walk-changing", MIXED)):
        t_sweep, wi = run(w, acc, variants, args.threads)
        t_walks, b = separate_walks(w, acc, variants, args.threads)
        assert np.array_equal(wi.fault, b), "sweep and separate walks disagree"
        rows.append((label, wi.timing["walks"], t_sweep, wi.timing["walk_seconds"],
                     wi.timing["decide_seconds"], t_walks, t_walks / t_sweep))
        del wi
    print(f"demo guest, {args.n:,} accesses, threads={args.threads or 'all'}")
    print(f"{'sweep':32s} {'walks':>5s} {'sweep s':>8s} {'walk s':>7s} {'decide s':>9s} "
          f"{'K walks s':>10s} {'speed-up':>9s}")
    for label, nw, ts, twk, td, tw, r in rows:
        print(f"{label:32s} {nw:5d} {ts:8.2f} {twk:7.2f} {td:9.2f} {tw:10.2f} {r:8.1f}x")


if __name__ == "__main__":
    main()
