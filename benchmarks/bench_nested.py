"""Nested (two-dimensional) walk speed next to the 1-D walk of the same guest tables.

    python benchmarks/bench_nested.py [--n N] [--pages P] [--threads K] [--ref-n M]

One run, one table: translations/s and memory references/s (paging-structure entries
read, guest and TDP) of the guest's own 1-D walk and of the 2-D walk over 4-level EPT,
5-level EPT (with a 5-level guest) and NPT, and of the nested reference walker
(tests/reference_tdp.py, one call per address) on the first ``--ref-n`` addresses, checked
equal to the 2-D walk. Ratios are what to quote: the machine is a shared 2-core box.
Never fails on speed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, best_times, log, machine_line  # noqa: E402
from vecmmu import CpuRole, EptRole, NestedGuest, NptRole  # noqa: E402
from vecmmu import bits as B  # noqa: E402

FAMILY = "nested"
REF = "reference_tdp (tests/)"


def one_d_name(k):
    return f"1-D guest walk {k}t"


def two_d_name(k):
    return f"2-D walk {k}t"


NOMEMO = "2-D walk 1t, memo=False"
HOT = "2-D walk 1t, 80 % to 64 hot pages"
HOT_NOMEMO = "2-D walk 1t, 80 % hot, memo=False"


def build(guest_mode, tdp_role, pages, seed=1):
    """A guest of ``pages`` contiguous user pages (A and D set) behind 4 KiB TDP pages."""
    g = NestedGuest(CpuRole.for_mode(guest_mode, maxphyaddr=46), tdp_role, guest_ram=256 << 20,
                    tdp_page_size=4096)
    base = 0x7F0000000000
    g.guest.map(base, pages * 4096, user=True, accessed=True, dirty=True)
    return g, base


def reference_inputs(g):
    """``(read, regs, tdp)`` for tests/reference_tdp.translate_nested on guest ``g``."""
    host = g.host

    def read(addr, n):                        # the reference walkers' view of memory
        if addr < 0 or not host.is_backed(addr, n):
            return None
        return int.from_bytes(host.read(addr, n), "little")

    role = g.guest.role
    regs = dict(role.registers(), cr3=g.guest.cr3(), maxphyaddr=role.maxphyaddr,
                gbpages=role.gbpages, vendor=role.vendor, pkru=0)
    t = g.tdp.role
    if t.kind == "ept":
        tdp = dict(kind="ept", eptp=g.tdp.cr3(), execonly=t.execonly, mbec=t.mbec,
                   huge_level=t.huge_level, advanced_info=t.advanced_info, maxphyaddr=t.maxphyaddr)
    else:
        cr4 = B.CR4_PAE | (B.CR4_LA57 if t.gpa_bits == 57 else 0)
        efer = B.EFER_LME | B.EFER_LMA | (B.EFER_NXE if t.nxe else 0)
        tdp = dict(kind="npt", ncr3=g.tdp.cr3(), cr4=cr4, efer=efer, gmet=t.gmet,
                   l1_smep=t.l1_smep, maxphyaddr=t.maxphyaddr, gbpages=t.gbpages)
    return read, regs, tdp


def run_reference(g, addr):
    """The nested reference walker on ``addr`` (user reads): ``(seconds, fault, hpa)``."""
    import reference_tdp as rt
    read, regs, tdp = reference_inputs(g)
    n = addr.shape[0]
    fault = np.empty(n, object)
    hpa = np.zeros(n, np.uint64)
    t0 = time.perf_counter()
    for i in range(n):
        r = rt.translate_nested(read, regs, tdp, dict(addr=int(addr[i]), kind=0, user=True,
                                                      ac=False, implicit=False, stack=False))
        fault[i] = r["fault"]
        hpa[i] = r["hpa"] or 0
    return time.perf_counter() - t0, fault, hpa


def measure_case(case, guest_mode, tdp_role, n, pages, *, threads=(1,), repeats=3, ref_n=0,
                 seed=1):
    """The 1-D and 2-D walks of one nested guest at every thread count (best of ``repeats``
    interleaved rounds after a warm-up call each), and the reference walker, once, on the
    first ``ref_n`` addresses: ``(rows, checks)``. Rows carry
    ``extra=dict(refs=..., ok=...)`` (mean entries read per walk, share without fault)."""
    log(f"nested {case}: building {pages:,} pages ...")
    g, base = build(guest_mode, tdp_role, pages, seed)
    rng = np.random.default_rng(seed)
    addr = np.uint64(base) + rng.integers(0, pages * 4096, n, dtype=np.uint64)
    one_d, two_d = g.guest.walker(), g.walker()
    rows, checks, ref_row = [], [], None
    timed, results = {}, {}
    for k in threads:
        for name, w, vs in ((one_d_name(k), one_d, ()), (two_d_name(k), two_d, (one_d_name(k), NOMEMO, REF))):
            w.translate(addr[:1000], user=True, threads=k)           # compile
            r = w.translate(addr, user=True, threads=k)              # the warm-up call
            results[name] = (vs, dict(refs=float(r.refs.astype(np.int64).mean()),
                                      ok=float((r.fault == 0).mean())),
                             (r.fault[:ref_n].copy(), r.hpa[:ref_n].copy()) if w is two_d else None)
            del r
            timed[name] = lambda w=w, k=k: w.translate(addr, user=True, threads=k)
    # the 2-D walk memo: the uniform workload without it, and a skewed one with and without
    hot = np.uint64(base) + rng.choice(pages, 64, replace=False).astype(np.uint64) * np.uint64(4096)
    haddr = np.where(rng.random(n) < 0.8, hot[rng.integers(0, 64, n)],
                     np.uint64(base) + rng.integers(0, pages, n, dtype=np.uint64) * np.uint64(4096))
    haddr = haddr + rng.integers(0, 4096, n, dtype=np.uint64)
    for name, a, memo, vs in ((NOMEMO, addr, False, (one_d_name(1), REF)),
                              (HOT, haddr, True, (HOT_NOMEMO,)),
                              (HOT_NOMEMO, haddr, False, ())):
        r = two_d.translate(a, user=True, threads=1, memo=memo)
        results[name] = (vs, dict(refs=float(r.refs.astype(np.int64).mean()),
                                  ok=float((r.fault == 0).mean())), None)
        del r
        timed[name] = lambda a=a, memo=memo: two_d.translate(a, user=True, threads=1, memo=memo)
    log(f"  {len(timed)} walks: {repeats} interleaved rounds")
    best = best_times(timed, repeats, warmup=False)
    for name, (vs, extra, _head) in results.items():
        short = {NOMEMO: "no memo", HOT_NOMEMO: "no memo"}.get(
            name, "1-D walk" if name.startswith("1-D") else "")
        rows.append(Row(FAMILY, case, name, n, best[name], "translations", vs, short=short,
                        extra=extra))
    if ref_n:
        kfault, khpa = results[two_d_name(threads[0])][2]
        m = min(ref_n, n)
        log(f"  {REF} on {m:,}")
        dt, fault, hpa = run_reference(g, addr[:m])
        ref_row = Row(FAMILY, case, REF, m, dt, "translations", short="reference_tdp")
        same = (np.array_equal(fault == "none", kfault == 0)
                and np.array_equal(hpa, np.where(kfault == 0, khpa, 0)))
        checks.append(f"{'ok      ' if same else 'MISMATCH'} {REF} == 2-D walk (fault, HPA) "
                      f"on {m:,} accesses, {case}")
    del results
    return rows + ([ref_row] if ref_row else []), checks


CASES = {"ept4": ("EPT 4-level", "4level", EptRole()),
         "ept5": ("EPT 5-level", "5level", EptRole(levels=5)),
         "npt4": ("NPT 4-level", "4level", NptRole())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--pages", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref-n", type=int, default=2000, help="addresses for reference_tdp (0: skip)")
    a = ap.parse_args(argv)
    print(f"machine: {machine_line()}; threads={a.threads}; shared machine: read the ratios")
    print(f"{a.n:,} random user reads over {a.pages:,} mapped 4 KiB pages (4 KiB TDP pages), "
          f"best of 3; reference_tdp on the first {a.ref_n:,}\n")
    rows, checks = [], []
    for key, (case, mode, role) in CASES.items():
        r, c = measure_case(case, mode, role, a.n, a.pages, threads=(a.threads,), ref_n=a.ref_n)
        rows += r
        checks += c
    print(f"{'walk':26s} {'guest':7s} {'M transl/s':>11s} {'refs/walk':>10s} {'M refs/s':>9s} "
          f"{'ok':>6s} {'x 1-D':>6s} {'x ref':>7s}")
    for key, (case, mode, _role) in CASES.items():
        cr = {r.contender: r for r in rows if r.case == case}
        base, ref = cr[one_d_name(a.threads)], cr.get(REF)
        for name in (one_d_name(a.threads), two_d_name(a.threads)):
            r = cr[name]
            label = "1-D guest walk" if name == one_d_name(a.threads) else f"2-D over {case}"
            xref = f"{r.rate / ref.rate:7.0f}" if ref else f"{'':7s}"
            print(f"{label:26s} {mode:7s} {r.rate / 1e6:11.2f} {r.extra['refs']:10.1f} "
                  f"{r.rate * r.extra['refs'] / 1e6:9.1f} {r.extra['ok']:6.1%} "
                  f"{r.rate / base.rate:6.2f} {xref}")
        if ref:
            print(f"{'reference_tdp (tests/)':26s} {mode:7s} {ref.rate / 1e6:11.4f}")
    print("\nanchors: an uncached 4-on-4 walk reads 24 entries, 5-on-5 reads 35 ((n+1)(m+1)-1)")
    for c in checks:
        print(c)


if __name__ == "__main__":
    main()
