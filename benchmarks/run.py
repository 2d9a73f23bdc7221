"""Every vecmmu benchmark in one run, one table: each contender next to its baseline(s),
measured in the same run, then the targets as PASS/MISS lines.

    python benchmarks/run.py [--quick] [--only walk,nested,whatif,tlb,readers,startup]

Families (the measuring code is the ``bench_*.py`` scripts' own functions):

* walk     1-D guest walk on (a) a large scattered table and (b) a small one: translate()
           with 1 and 2 threads, order="input" and order="grouped", the kernel alone; the
           naive Numba loop (1 thread, input order), the numpy walk, the reference walker
* nested   the 2-D walk over 4-level EPT next to the 1-D walk of the same guest and
           tests/reference_tdp.py
* whatif   a sweep of 16 decision-only configurations (and 12 + 4 walk-changing) next to
           as many separate walks
* tlb      the TLB / paging-structure-cache model, native and nested, next to the
           plain-Python model of the same caches (tests/perf_reference.py); a sweep of 8
           configurations next to 8 separate calls
* readers  lackey, ChampSim, CSV and Parquet readers next to a plain-Python / numpy /
           pandas baseline on the same generated files
* startup  cold (fresh Numba cache) and warm start of a child process next to
           ``python -c 'import numpy, numba'``; the first call of each other kernel
           family on an empty cache (a note line)

The report goes to stdout, progress to stderr. The exit status is 0 whatever the speeds
(a MISS fails nothing); 1 only if a correctness check found a mismatch.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (cpu_snapshot, find, fmt_rate, fmt_ratio, log, machine_line,  # noqa: E402
                    other_cpu_use)

FAMILIES = ("walk", "nested", "whatif", "tlb", "readers", "startup")

# sizes per family: (default, --quick)
SIZES = {
    "walk": dict(n=(10_000_000, 2_000_000), pages=(1 << 20, 1 << 18), numpy_n=(2_000_000, 1_000_000),
                 ref_n=(20_000, 5_000), repeats=(3, 3)),
    "nested": dict(n=(2_000_000, 500_000), pages=(16384, 16384), ref_n=(5_000, 1_000), repeats=(3, 3)),
    "whatif": dict(n=(10_000_000, 2_000_000)),
    "tlb": dict(native_limit=(None, 1_000_000), nested_n=(1_000_000, 200_000),
                ref_n=(100_000, 20_000), repeats=(3, 3)),
    "readers": dict(n=(5_000_000, 1_000_000), repeats=(2, 2)),
}


def sizes(family, quick):
    return {k: v[1 if quick else 0] for k, v in SIZES[family].items()}


UNITS = {"translations": "M translations/s", "accesses": "M accesses/s",
         "access-configs": "M access-configs/s", "records": "M records/s", "s": "s (wall)"}


# -- the families ---------------------------------------------------------------------------------
def run_walk(quick, threads):
    import numpy as np

    import bench_walk as W
    s = sizes("walk", quick)
    W.prepare()
    rng = np.random.default_rng(12345)
    log(f"walk: building (a) with {s['pages']:,} pages ...")
    large = W.build_large(s["pages"], 16, rng)
    small = W.build_small(rng)
    tables = (large.mmu.allocated - large.page_va.shape[0] * 4096) / 2**20
    notes = [f"walk {W.LARGE}: {large.page_va.shape[0]:,} 4 KiB pages in 16-page runs at random "
             f"user-half addresses, frames a random permutation ({tables:,.0f} MiB of tables, "
             f"built in {large.build_s:.1f} s); {W.SMALL}: 64 pages in one page table. 4-level "
             f"paging, NXE/WP/SMEP/SMAP/PKE; random mapped pages, ~1 % of accesses fault",
             "walk: order=grouped groups each thread's share of a 1 M chunk by 2 MiB region inside the call (counted), "
             "results in input order; 't' = threads"]
    rows, checks = [], []
    for g in (large, small):
        r, c, _ = W.measure_case(g, s["n"], rng, threads=threads, orders=("input", "grouped"),
                                 kernel_threads=(1,), naive_threads=(1,),
                                 bound_threads=threads if g is large else (), numpy_n=s["numpy_n"],
                                 ref_n=s["ref_n"], repeats=s["repeats"])
        rows += r
        checks += c
    del large, small
    r, c, note = W.measure_trace(threads, repeats=s["repeats"])
    rows += r
    checks += c
    notes.append(note)
    return rows, checks, notes, lambda all_rows: W.walk_targets(all_rows, max(threads))


def run_nested(quick, threads):
    import bench_nested as N
    from vecmmu import EptRole
    s = sizes("nested", quick)
    rows, checks = N.measure_case("EPT 4-level", "4level", EptRole(), s["n"], s["pages"],
                                  threads=threads, repeats=s["repeats"], ref_n=s["ref_n"])
    notes = [f"nested: 4-level guest, {s['pages']:,} contiguous user pages over 4-level EPT with "
             f"4 KiB pages; random user reads; 24 entries read per 2-D walk, 4 per 1-D walk; "
             f"'80 % hot': 80 % of the reads go to 64 of the pages (the 2-D walk memo's case)"]
    return rows, checks, notes, None


def run_whatif(quick, threads):
    import bench_whatif as WI
    s = sizes("whatif", quick)
    rows, checks = WI.measure(s["n"])
    notes = [f"whatif: demo guest, {s['n']:,} accesses x 16 configurations (rate counts "
             f"access x configuration decisions); each side timed once, after a compiling run"]
    return rows, checks, notes, WI.targets


def run_tlb(quick, threads):
    import bench_tlb as T
    rows, checks = T.measure(**sizes("tlb", quick))
    notes = ["tlb: TlbConfig.skylake(); native = data/wordfreq.lackey.xz through its "
             "/proc/self/maps; nested = 4-level guest over 4-level EPT, 80 % of accesses to 64 "
             "hot pages; the Python model runs on the first translations only"]
    return rows, checks, notes, T.targets


def run_readers(quick, threads):
    import bench_readers as R
    s = sizes("readers", quick)
    rows, checks = R.measure(s["n"], repeats=s["repeats"])
    notes = [f"readers: one {s['n']:,}-access synthetic trace written as each format (ChampSim: "
             f"one instruction per 3 accesses); records = lines / instructions / rows; plain "
             f"files; vecmmu readers best of {s['repeats']}, Python-loop baselines one run"]
    return rows, checks, notes, None


def run_startup(quick, threads):
    import bench_walk as W
    log("startup: cold and warm start subprocesses ...")
    rows = W.startup_rows(sys.executable)
    cold, warm = rows[0].extra, rows[1].extra
    notes = [f"startup: child imports vecmmu, maps 16 pages, translates 10 addresses; cold split "
             f"import {cold['imp']:.2f} + map {cold['build']:.2f} + translate "
             f"{cold['translate']:.2f} s, warm {warm['imp']:.2f} + {warm['build']:.2f} + "
             f"{warm['translate']:.2f} s"]
    log("startup: first calls on an empty Numba cache ...")
    fc = W.first_call_times(sys.executable)
    notes.append("startup: first calls in one child on an empty Numba cache (mostly compiling), "
                 "in this order: " + ", ".join(f"{k} {v:.2f} s" for k, v in fc.items()))
    return rows, [], notes, W.startup_targets


RUNNERS = {"walk": run_walk, "nested": run_nested, "whatif": run_whatif, "tlb": run_tlb,
           "readers": run_readers, "startup": run_startup}


# -- the report -----------------------------------------------------------------------------------
def versus(row, rows):
    """The 'x baseline' cell: this row against each of its baselines."""
    parts = []
    for name in row.vs:
        b = find(rows, row.family, row.case, name)
        if b is None:
            continue
        if row.is_time:
            parts.append(f"{row.seconds / b.seconds:.1f}x the time of {b.label}")
        else:
            parts.append(f"{fmt_ratio(row.rate / b.rate)} {b.label}")
    if not parts and any(row.contender in r.vs for r in rows if r.family == row.family
                         and r.case == row.case):
        return "(baseline)"
    return ", ".join(parts)


def table(rows) -> list[str]:
    cols = ("family", "case", "contender", "n", "rate", "unit", "x baseline (same run)")
    cells = []
    for r in rows:
        rate = f"{r.seconds:.2f}" if r.is_time else fmt_rate(r.rate / 1e6)
        n = "" if r.is_time else f"{r.n:,}"
        cells.append((r.family, r.case, r.contender, n, rate, UNITS.get(r.unit, r.unit),
                      versus(r, rows)))
    w = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    right = {3, 4}

    def line(vals):
        return "  ".join((v.rjust(w[i]) if i in right else v.ljust(w[i])) for i, v in
                         enumerate(vals)).rstrip()

    out = [line(cols), "-" * len(line(cols))]
    prev = None
    for r, c in zip(rows, cells):
        if prev is not None and r.family != prev:
            out.append("")
        out.append(line(c))
        prev = r.family
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Families: " + ", ".join(FAMILIES))
    ap.add_argument("--quick", action="store_true", help="smaller inputs (about a minute on a 2-core machine)")
    ap.add_argument("--only", default=",".join(FAMILIES),
                    help="comma-separated families to run (default: all)")
    args = ap.parse_args(argv)
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    bad = [f for f in only if f not in RUNNERS]
    if bad:
        ap.error(f"unknown famil{'y' if len(bad) == 1 else 'ies'} {', '.join(bad)}; "
                 f"choose from {', '.join(FAMILIES)}")

    import numba
    nthreads = numba.config.NUMBA_NUM_THREADS
    threads = tuple(sorted({1, min(2, nthreads)}))
    t_start = time.perf_counter()
    cpu0 = cpu_snapshot()
    rows, checks, notes, target_fns, took = [], [], [], [], []
    for fam in FAMILIES:
        if fam not in only:
            continue
        t0 = time.perf_counter()
        log(f"== {fam}")
        r, c, nt, tf = RUNNERS[fam](args.quick, threads)
        rows += r
        checks += c
        notes += nt
        if tf is not None:
            target_fns.append(tf)
        took.append(f"{fam} {time.perf_counter() - t0:.0f} s")
        log(f"== {fam}: {took[-1]}")
        gc.collect()
    others = other_cpu_use(cpu0)
    total = time.perf_counter() - t_start

    cmd = "python benchmarks/run.py" + (" --quick" if args.quick else "") + \
        ("" if set(only) == set(FAMILIES) else f" --only {','.join(only)}")
    print(f"$ {cmd}")
    print(f"machine: {machine_line()}")
    print("rates: best of a few timed calls after a warm-up (walk and nested: in rounds that "
          "call every contender in turn) unless noted below; every ratio is between two rows "
          "of this run (absolute rates on this shared machine are noise)")
    print()
    for ln in table(rows):
        print(ln)
    print()
    tail = [f"took {total:.0f} s ({', '.join(took)})" + (
        f"; other processes used {others:.2f} of {os.cpu_count()} cores on average"
        if others is not None else "")]
    for nt in notes + tail:
        print(textwrap.fill(nt, 100, subsequent_indent="    "))
    if checks:
        print()
        print("correctness (same run):")
        for c in checks:
            print("  " + c)
    print()
    print("targets (ratios from this run; a MISS fails nothing):")
    for tf in target_fns:
        for t in tf(rows):
            print("  " + t.line())
    return 1 if any(c.startswith("MISMATCH") for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
