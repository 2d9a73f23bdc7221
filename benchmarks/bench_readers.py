"""Trace-reader speed (vecmmu.io) next to what one would write without it, in one run.

    python benchmarks/bench_readers.py [--n 3000000] [--repeats 2]

One synthetic trace of ``--n`` accesses (code fetches, a Zipf heap, a descending stack; a
tenth of them 8-byte accesses at page ends, so some cross a page) is written as lackey
text, a ChampSim binary (one instruction per three accesses: its fetch, one load, a store
every other record), CSV and Parquet in a temporary directory. Each file is then read by
its vecmmu reader (all batches, decompression none: plain files) and by a baseline that
produces the same address, kind and size arrays:

* lackey: a plain-Python loop over the lines (``bytes.split``, ``int(x, 16)``);
* ChampSim: numpy (``np.fromfile`` with the record dtype, the seven address columns
  masked where non-zero, in record order);
* CSV: ``pandas.read_csv`` plus ``int(x, 16)`` on the address column and a kind map;
* Parquet: ``pandas.read_parquet`` plus a kind map.

Rates are records (lines, instructions, rows) per second, best of ``--repeats`` after a
warm-up (the Python loops: one run, no warm-up). The baselines' arrays are checked equal to
the readers'. Never fails on speed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, best_time, log, machine_line, ratio  # noqa: E402
from vecmmu.io import synth  # noqa: E402
from vecmmu.io.champsim import INPUT_INSTR_DTYPE, ChampSimReader, write_champsim  # noqa: E402
from vecmmu.io.lackey import LackeyReader, write_lackey  # noqa: E402
from vecmmu.io.tables import CsvReader, ParquetReader, write_csv, write_parquet  # noqa: E402

FAMILY = "readers"
FORMATS = ("lackey", "champsim", "csv", "parquet")
READER = {"lackey": "LackeyReader", "champsim": "ChampSimReader", "csv": "CsvReader",
          "parquet": "ParquetReader"}
BASELINE = {"lackey": "plain-Python line loop", "champsim": "numpy fromfile + masks",
            "csv": "pandas.read_csv + int(x, 16)", "parquet": "pandas.read_parquet + map"}
SHORT = {"lackey": "Python loop", "champsim": "numpy", "csv": "pandas", "parquet": "pandas"}
RECORD = {"lackey": "lines", "champsim": "instructions", "csv": "rows", "parquet": "rows"}


def make_trace(n, seed=0):
    """``n`` accesses: fetches in 1 MiB of code, a Zipf heap, a stack walked downwards."""
    return synth.region_mix(n, [
        dict(start=0x400000, size=1 << 20, kinds=(0, 0, 1), access_size=4, weight=3),
        dict(start=0x1000000, size=64 << 20, pattern="zipf", kinds=(0.7, 0.3, 0), access_size=8,
             weight=5),
        dict(start=0x7FFFF0000000, size=1 << 20, pattern="strided", stride=-8, kinds=(0.5, 0.5, 0),
             access_size=8, weight=2)], seed=seed)


def write_files(d, n, seed=0):
    """The four files in directory ``d``: ``{format: (path, records)}``."""
    trace = make_trace(n, seed)
    files = {}
    log(f"readers: writing {n:,}-record files ...")
    p = os.path.join(d, "t.lackey")
    files["lackey"] = (p, write_lackey(p, trace))
    m = n // 3                      # ChampSim: instruction = a fetch, a load, every other one a store
    ip = trace["addr"][:m]
    src = trace["addr"][m:2 * m].reshape(-1, 1)
    dst = np.zeros((m, 1), np.uint64)
    dst[::2, 0] = trace["addr"][2 * m:3 * m][::2]
    p = os.path.join(d, "t.champsim")
    files["champsim"] = (p, write_champsim(p, ip, src, dst))
    p = os.path.join(d, "t.csv")
    files["csv"] = (p, write_csv(p, trace))
    p = os.path.join(d, "t.parquet")
    files["parquet"] = (p, write_parquet(p, trace))
    return files


# -- baselines: the same (addr, kind, size) arrays without vecmmu ------------------------------
LACKEY_KIND = {b"I": 2, b"L": 0, b"S": 1}


def python_lackey(path):
    addr, kind, size = [], [], []
    with open(path, "rb") as f:
        for line in f:
            tag = line[:2].strip()
            if not tag or tag.startswith(b"="):
                continue
            a, s = line[3:].split(b",")
            a, s = int(a, 16), int(s)
            if tag == b"M":                     # modify: a load, then a store
                addr += (a, a)
                kind += (0, 1)
                size += (s, s)
            else:
                addr.append(a)
                kind.append(LACKEY_KIND[tag])
                size.append(s)
    return (np.array(addr, np.uint64), np.array(kind, np.uint8), np.array(size, np.uint32),
            len(addr))


def numpy_champsim(path):
    rec = np.fromfile(path, dtype=INPUT_INSTR_DTYPE)
    cols = np.concatenate([rec["ip"][:, None], rec["source_memory"], rec["destination_memory"]],
                          axis=1)
    keep = cols != 0
    keep[:, 0] = True                           # every instruction is fetched
    kinds = np.broadcast_to(np.array([2, 0, 0, 0, 0, 1, 1], np.uint8), cols.shape)
    addr = cols[keep]
    return addr, kinds[keep], np.ones(addr.shape[0], np.uint32), rec.shape[0]


KIND_WORD = {"read": 0, "write": 1, "fetch": 2}


def pandas_csv(path):
    import pandas as pd
    df = pd.read_csv(path, dtype={"address": str})
    addr = np.array([int(x, 16) for x in df["address"]], np.uint64)
    return (addr, df["kind"].map(KIND_WORD).to_numpy(np.uint8), df["size"].to_numpy(np.uint32),
            len(df))


def pandas_parquet(path):
    import pandas as pd
    df = pd.read_parquet(path)
    kind = df["kind"].astype(str).map(KIND_WORD).to_numpy(np.uint8)
    return df["address"].to_numpy(np.uint64), kind, df["size"].to_numpy(np.uint32), len(df)


BASELINE_FN = {"lackey": python_lackey, "champsim": numpy_champsim, "csv": pandas_csv,
               "parquet": pandas_parquet}
READER_CLS = {"lackey": LackeyReader, "champsim": ChampSimReader, "csv": CsvReader,
              "parquet": ParquetReader}


def read_all(fmt, path):
    """The vecmmu reader over the whole file: ``(batches, reader)``."""
    r = READER_CLS[fmt](path, progress=False)
    return list(r), r


def measure(n, *, formats=FORMATS, repeats=2, seed=0, tmpdir=None):
    """Every reader and its baseline on ``n``-access files: ``(rows, checks)``."""
    rows, checks = [], []
    with tempfile.TemporaryDirectory(prefix="vecmmu-bench-readers-", dir=tmpdir) as d:
        files = write_files(d, n, seed)
        for fmt in formats:
            path, nrec = files[fmt]
            log(f"readers {fmt}: {os.path.getsize(path) / 1e6:.0f} MB ...")
            out = {}
            t = best_time(lambda: out.__setitem__("r", read_all(fmt, path)), repeats)
            batches, reader = out.pop("r")
            nacc = sum(b.shape[0] for b in batches)
            rows.append(Row(FAMILY, fmt, READER[fmt], reader.records, t, "records", (BASELINE[fmt],),
                            extra=dict(accesses=nacc, mb=os.path.getsize(path) / 1e6,
                                       unit=RECORD[fmt])))
            python = fmt in ("lackey", "csv")          # Python loops: no warm-up, one run
            t = best_time(lambda: out.__setitem__("b", BASELINE_FN[fmt](path)),
                          1 if python else repeats, warmup=not python)
            addr, kind, size, brec = out.pop("b")
            rows.append(Row(FAMILY, fmt, BASELINE[fmt], brec, t, "records", short=SHORT[fmt]))
            got = np.concatenate(batches) if len(batches) > 1 else batches[0]
            same = (brec == reader.records and np.array_equal(got["addr"], addr)
                    and np.array_equal(got["kind"], kind) and np.array_equal(got["size"], size))
            checks.append(f"{'ok      ' if same else 'MISMATCH'} {BASELINE[fmt]} == {READER[fmt]} "
                          f"(address, kind, size of {nacc:,} accesses from {reader.records:,} "
                          f"{RECORD[fmt]})")
            del batches, got, addr, kind, size
    return rows, checks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3_000_000, help="accesses in the trace")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--formats", default=",".join(FORMATS))
    a = ap.parse_args(argv)
    rows, checks = measure(a.n, formats=a.formats.split(","), repeats=a.repeats)
    print(f"machine: {machine_line()}")
    print(f"{a.n:,}-access synthetic trace in each format (plain files); best of {a.repeats}")
    print(f"{'format':<9}{'reader':<16}{'records':>11} {'unit':<13}{'accesses':>11}{'MB':>7}"
          f"{'M rec/s':>9}   {'baseline':<30}{'M rec/s':>9}{'x base':>8}")
    for fmt in a.formats.split(","):
        r = next(x for x in rows if x.case == fmt and x.contender == READER[fmt])
        b = next(x for x in rows if x.case == fmt and x.contender == BASELINE[fmt])
        print(f"{fmt:<9}{r.contender:<16}{r.n:>11,} {r.extra['unit']:<13}{r.extra['accesses']:>11,}"
              f"{r.extra['mb']:>7.0f}{r.rate / 1e6:>9.2f}   {b.contender:<30}{b.rate / 1e6:>9.2f}"
              f"{ratio(rows, FAMILY, fmt, r.contender, b.contender):>7.1f}x")
    for c in checks:
        print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
