"""What-if sweep speed: one walk + K table-lookup decisions against K separate walks.

    .venv/bin/python benchmarks/bench_whatif.py [--n 10000000] [--threads 2]

Prints a table of ratios measured side by side in one run (absolute times on a shared
machine are noise). Never fails on speed. ``walk s`` / ``decide s`` split the sweep's
time: the permissive walk(s) (in chunks, keeping a few narrow columns per access) and the
decision kernel (a prange over accesses, the K variants inner, writing the (n, K) u1
fault matrix). The K separate walks each make a full result and drop it (the allocator
reuses its memory), as a loop over configurations would. Each side runs once, after a
compiling run on 20 k accesses; the fault matrices must be equal.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, log, machine_line, ratio, target_ratio  # noqa: E402
from vecmmu import PageWalk, demo  # noqa: E402
from vecmmu.analysis.whatif import Variant, whatif  # noqa: E402

FAMILY = "whatif"
DECIDE = [Variant(f"wp{wp} smep{se} smap{sa} pke{pk}", wp=bool(wp), smep=bool(se), smap=bool(sa),
                  pke=bool(pk))
          for wp in (0, 1) for se in (0, 1) for sa in (0, 1) for pk in (0, 1)]        # 16
MIXED = DECIDE[:12] + [Variant("nxe0", nxe=False), Variant("nxe0 smap0", nxe=False, smap=False),
                       Variant("nxe0 wp0", nxe=False, wp=False), Variant("pkru ad1", pkru=4)]
SETS = {"16 decision-only": DECIDE, "12 decision + 4 walk-changing": MIXED}
SWEEP = "whatif() sweep"


def separate_name(k):
    return f"{k} separate translate() walks"


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


def measure(n, *, sets=tuple(SETS), threads=None, seed=1):
    """Each sweep in ``sets`` (keys of :data:`SETS`) and its separate walks over ``n``
    accesses of the demo guest: ``(rows, checks)``. Rates count access × configuration
    decisions; the sweep row's ``extra`` holds its walks and walk/decide split."""
    mmu = demo.build_guest()
    w = mmu.walker()
    acc = demo.make_trace(n, seed=seed)
    small = acc[:20000]
    rows, checks = [], []
    for case in sets:
        variants = SETS[case]
        k = len(variants)
        log(f"whatif {case}: compile, then sweep and {k} walks over {n:,} accesses ...")
        run(w, small, variants, threads)                      # compile everything first
        separate_walks(w, small, variants, threads)
        t_sweep, wi = run(w, acc, variants, threads)
        t_walks, b = separate_walks(w, acc, variants, threads)
        same = np.array_equal(wi.fault, b)
        checks.append(f"{'ok      ' if same else 'MISMATCH'} what-if sweep == {k} separate walks "
                      f"(fault matrix, {n:,} x {k}), {case}")
        rows.append(Row(FAMILY, case, SWEEP, n * k, t_sweep, "access-configs", (separate_name(k),),
                        extra=dict(walks=wi.timing["walks"], walk_s=wi.timing["walk_seconds"],
                                   decide_s=wi.timing["decide_seconds"])))
        rows.append(Row(FAMILY, case, separate_name(k), n * k, t_walks, "access-configs",
                        short="separate walks"))
        del wi, b
    return rows, checks


def targets(rows):
    case = "16 decision-only"
    return [target_ratio(f"what-if: sweep of {case} configs >= 5x 16 separate walks",
                         ratio(rows, FAMILY, case, SWEEP, separate_name(16)), 5)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    rows, checks = measure(args.n, threads=args.threads)
    print(f"machine: {machine_line()}")
    print(f"demo guest, {args.n:,} accesses, threads={args.threads or 'all'}")
    print(f"{'sweep':32s} {'walks':>5s} {'sweep s':>8s} {'walk s':>7s} {'decide s':>9s} "
          f"{'K walks s':>10s} {'speed-up':>9s}")
    for case in SETS:
        s = next(r for r in rows if r.case == case and r.contender == SWEEP)
        b = next(r for r in rows if r.case == case and r.contender != SWEEP)
        print(f"{case:32s} {s.extra['walks']:5d} {s.seconds:8.2f} {s.extra['walk_s']:7.2f} "
              f"{s.extra['decide_s']:9.2f} {b.seconds:10.2f} {b.seconds / s.seconds:8.1f}x")
    for c in checks:
        print(c)
    for t in targets(rows):
        print(t.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
