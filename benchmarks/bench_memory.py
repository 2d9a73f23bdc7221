"""Peak memory of streaming a trace: the ceiling must not grow with the trace.

    python benchmarks/bench_memory.py [--sizes 10e6,100e6] [--formats parquet,lackey,csv]
                                      [--chunk 1048576] [--keep DIR]

For each format and size, a synthetic trace (uniform over 64 MiB of a 4-level guest with
a 2 MiB-page hole, so faults and two page sizes occur) is generated on the fly into a
temporary directory by a child process, then a *fresh* child process summarises it with
:func:`vecmmu.scale.stream.summarise` and reports its own ``ru_maxrss`` (peak resident
set). One table: records, file size, summarise time, rate and peak RSS, and the ratio of
each peak to the smallest size's peak. The machine's memory is not a pass/fail criterion:
the script always exits 0 and prints PASS/MISS for "peak RSS grows < 1.25x for 10x the
records".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD_GEN = r"""
import sys
from vecmmu.io import write_csv, write_lackey, write_parquet
from vecmmu.io.synth import generate
fmt, n, path = sys.argv[1], int(float(sys.argv[2])), sys.argv[3]
batches = generate("uniform", n, chunk=1 << 21, seed=1, start=0x10000000, size=0x4000000,
                   kinds=(6, 3, 1))
{"parquet": write_parquet, "csv": write_csv, "lackey": write_lackey}[fmt](path, batches)
"""

CHILD_SUM = r"""
import json, resource, sys, time
from vecmmu import Mmu
from vecmmu.scale.stream import summarise
path, chunk = sys.argv[1], int(sys.argv[2])
mmu = Mmu.for_mode("4level", ram_size=1 << 28)
mmu.map(0x10000000, 0x1000000, user=True)
mmu.map(0x11200000, 0x1000000, user=True, page_size=2 << 20)
mmu.map(0x13000000, 0x1000000, user=False)
walk = mmu.walker()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
st = summarise(path, walk, chunk=chunk)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"accesses": st.accesses, "n": st.n, "seconds": dt, "peak_kib": peak,
                  "setup_kib": base}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10e6,100e6")
    ap.add_argument("--formats", default="parquet,lackey")
    ap.add_argument("--chunk", type=int, default=1 << 20)
    ap.add_argument("--keep", default=None, help="directory to keep the generated traces in")
    a = ap.parse_args(argv)
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = a.keep or tmp
        for fmt in a.formats.split(","):
            for n in sizes:
                path = os.path.join(d, f"trace_{n}.{fmt}")
                if not os.path.exists(path):
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-c", CHILD_GEN, fmt, str(n), path],
                                   check=True, env=env)
                    print(f"generated {path} in {time.perf_counter() - t0:.1f} s",
                          file=sys.stderr)
                out = subprocess.run([sys.executable, "-c", CHILD_SUM, path, str(a.chunk)],
                                     check=True, env=env, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r.update(fmt=fmt, records=n, file_mib=os.path.getsize(path) / 2**20)
                rows.append(r)
                print(f"{fmt} {n:,}: peak {r['peak_kib'] / 1024:.0f} MiB", file=sys.stderr)
    print(f"chunk = {a.chunk:,} accesses; peak RSS = ru_maxrss of a fresh process "
          f"(after import + table build: 'setup')")
    print(f"{'format':8} {'records':>12} {'file MiB':>9} {'seconds':>8} {'M acc/s':>8} "
          f"{'setup MiB':>9} {'peak MiB':>9} {'vs first':>8}")
    ok = True
    for fmt in a.formats.split(","):
        rs = [r for r in rows if r["fmt"] == fmt]
        first = rs[0]["peak_kib"]
        for r in rs:
            ratio = r["peak_kib"] / first
            ok &= ratio < 1.25
            print(f"{fmt:8} {r['records']:>12,} {r['file_mib']:>9.1f} {r['seconds']:>8.1f} "
                  f"{r['accesses'] / r['seconds'] / 1e6:>8.2f} {r['setup_kib'] / 1024:>9.0f} "
                  f"{r['peak_kib'] / 1024:>9.0f} {ratio:>7.2f}x")
    print(("PASS" if ok else "MISS") + ": peak RSS grows < 1.25x for 10x the records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
