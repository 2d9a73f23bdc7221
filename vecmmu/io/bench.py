"""Reader speeds: write synthetic files of every format, read them back, time it.

``vecmmu bench --readers`` prints this table; numbers are records per second of the
reader alone (decompression included, translation excluded), best of two runs.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from . import synth
from .champsim import ChampSimReader, write_champsim
from .lackey import LackeyReader, write_lackey
from .tables import CsvReader, ParquetReader, write_csv, write_parquet


def _time(make_reader):
    best, n, recs = 1e9, 0, 0
    for _ in range(2):
        r = make_reader()
        t = time.perf_counter()
        n = sum(b.shape[0] for b in r)
        best = min(best, time.perf_counter() - t)
        recs = r.records
    return best, n, recs


def reader_speeds(n: int = 10_000_000, tmpdir: str | None = None) -> str:
    """A table of reader speeds over ``n``-record files (CSV: ``n // 10`` rows)."""
    rng = np.random.default_rng(0)
    trace = synth.region_mix(n, [dict(start=0x400000, size=1 << 20, kinds=(0, 0, 1), access_size=4),
                                 dict(start=0x1000000, size=64 << 20, pattern="zipf",
                                      kinds=(0.7, 0.3, 0), access_size=8),
                                 dict(start=0x7ffff0000000, size=1 << 20, pattern="strided",
                                      stride=-8, kinds=(0.5, 0.5, 0), access_size=8)], seed=rng)
    rows = []
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        files = {}
        files["lackey"] = os.path.join(d, "t.lackey")
        write_lackey(files["lackey"], trace)
        files["lackey.gz"] = os.path.join(d, "t.lackey.gz")
        os.system(f"gzip -1 -c {files['lackey']} > {files['lackey.gz']}")
        nrec = n // 3
        ip = trace["addr"][:nrec].copy()
        src = np.zeros((nrec, 4), np.uint64)
        src[:, 0] = trace["addr"][nrec:2 * nrec]
        dst = np.zeros((nrec, 2), np.uint64)
        dst[::2, 0] = trace["addr"][2 * nrec:3 * nrec:2][: dst[::2].shape[0]]
        files["champsim"] = os.path.join(d, "t.champsim")
        write_champsim(files["champsim"], ip, src, dst)
        files["champsim.xz"] = os.path.join(d, "t.champsim.xz")
        os.system(f"xz -0 -T1 -c {files['champsim']} > {files['champsim.xz']}")
        files["parquet"] = os.path.join(d, "t.parquet")
        write_parquet(files["parquet"], trace)
        files["csv"] = os.path.join(d, "t.csv")
        write_csv(files["csv"], trace[: n // 10])
        cases = [("lackey", lambda: LackeyReader(files["lackey"]), "lines"),
                 ("lackey .gz", lambda: LackeyReader(files["lackey.gz"]), "lines"),
                 ("champsim", lambda: ChampSimReader(files["champsim"]), "records"),
                 ("champsim .xz", lambda: ChampSimReader(files["champsim.xz"]), "records"),
                 ("parquet", lambda: ParquetReader(files["parquet"]), "rows"),
                 ("csv", lambda: CsvReader(files["csv"]), "rows")]
        LackeyReader(files["lackey"], chunk=1024).read(100)       # compile outside the timing
        ChampSimReader(files["champsim"], chunk=1024).read(100)
        for name, make, unit in cases:
            dt, nacc, recs = _time(make)
            size = os.path.getsize(files[name.replace(" .", ".").replace(" ", "")])
            rows.append((name, recs, unit, nacc, size, dt))
    lines = [f"{'reader':<14}{'records':>12} {'unit':<8}{'accesses':>12}{'file MB':>9}"
             f"{'seconds':>9}{'M rec/s':>9}{'M acc/s':>9}"]
    for name, recs, unit, nacc, size, dt in rows:
        lines.append(f"{name:<14}{recs:>12,} {unit:<8}{nacc:>12,}{size / 1e6:>9.1f}{dt:>9.2f}"
                     f"{recs / dt / 1e6:>9.1f}{nacc / dt / 1e6:>9.1f}")
    return "\n".join(lines)
