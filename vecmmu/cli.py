"""The ``vecmmu`` command.

    vecmmu demo       translate a trace (synthetic, or --trace-file) and print a fault summary
    vecmmu translate  translate addresses or a trace file on a dump, a maps file or the trace's pages
    vecmmu stats      fault statistics of a trace over an address space
    vecmmu maps       list the mappings of a dump's (or a maps file's) page tables, with filters
    vecmmu trace      convert, generate or describe trace files
    vecmmu bench      reader and walker speed
    vecmmu info       memslots and vCPU registers of a dump

Errors print one line on stderr and exit with status 2. Progress lines go to stderr, only
when it is a terminal (``--progress`` / ``--no-progress`` to choose).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .access import concat_accesses

EPILOG = """examples:
  vecmmu demo
  vecmmu demo --trace-file data/wordfreq.lackey.xz
  vecmmu translate --dump guest.elf.gz --user 0x400000 0x7ffc0000 0xffffffff81000000
  vecmmu translate --trace-file run.lackey.gz --maps run.maps -o out.parquet
  vecmmu stats --trace-file data/wordfreq.lackey.xz --maps data/wordfreq.maps --by-region
  vecmmu maps --dump guest.elf.gz --user --wx
  vecmmu maps --dump guest.elf.gz --policy
  vecmmu trace convert run.lackey.gz run.parquet
  vecmmu trace generate zipf --n 1000000 --start 0x7f0000000000 --size 1G -o z.parquet
  vecmmu info --dump guest.elf.gz
"""

HERE = Path(__file__).resolve().parent


def _int(s: str) -> int:
    try:
        return int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer (use 0x... for hex)") from None


def _bytes(s: str) -> int:
    """Sizes like 4096, 0x1000, 64K, 2M, 1G."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = s.strip().lower().rstrip("b").rstrip("i")
    if t and t[-1] in units:
        try:
            return int(float(t[:-1]) * units[t[-1]])
        except ValueError:
            pass
    try:
        return int(t, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a size (e.g. 4096, 0x1000, 64K, 2M, 1G)") from None


def _kinds(s: str):
    try:
        v = [float(x) for x in s.split(",")]
    except ValueError:
        v = []
    if len(v) != 3 or min(v) < 0 or sum(v) <= 0:
        raise argparse.ArgumentTypeError(f"{s!r}: give three weights read,write,fetch (e.g. 0.7,0.3,0)")
    return tuple(v)


class _Fmt(argparse.RawDescriptionHelpFormatter):
    pass


def _sub(sub, name, help, examples):
    return sub.add_parser(name, help=help, description=help, formatter_class=_Fmt,
                          epilog="examples:\n" + "\n".join("  " + e for e in examples))


def _progress_args(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")


def _space_args(p, *, dump_required=False):
    g = p.add_argument_group("address space (one of --dump, --maps; default: the trace's own pages)")
    g.add_argument("--dump", required=dump_required,
                   help="QEMU dump-guest-memory ELF core (.gz ok): walk the dumped CR3")
    g.add_argument("--vcpu", type=_int, default=0, help="vCPU of the dump (default 0)")
    g.add_argument("--cr3", type=_int, default=None, help="walk this CR3 instead of the vCPU's")
    g.add_argument("--efer", type=_int, default=None, help="EFER (default: inferred, and said so)")
    g.add_argument("--maxphyaddr", type=_int, default=52, help="guest MAXPHYADDR (default 52)")
    g.add_argument("--vendor", choices=["intel", "amd"], default="intel",
                   help="CPU vendor (AMD: PML4E bit 8 reserved; default intel)")
    g.add_argument("--enc-mask", type=_int, default=0,
                   help="with --dump: entry bits to clear first: SME/SEV C-bit or TDX shared bit "
                        "(e.g. 0x800000000000)")
    g.add_argument("--maps", help="/proc/PID/maps or smaps of the traced process")
    g.add_argument("--pagemap", help="pagemap snapshot (.npz, or a pagemap-layout file) for real frames")
    g.add_argument("--huge", action="store_true",
                   help="2 MiB pages where a VMA (and the pagemap) allows")
    g.add_argument("--rights", choices=["observed", "all"], default="observed",
                   help="without --maps/--dump: page rights from the trace's use (default) or rwx")
    p.add_argument("--semantics", choices=["hardware", "kvm"], default="hardware")
    p.add_argument("--pkru", type=_int, default=0, help="PKRU (default 0: every key allowed)")


def _trace_args(p, required=False):
    p.add_argument("--trace-file", required=required,
                   help="trace: lackey, ChampSim, CSV or Parquet (.gz/.xz ok; format detected)")
    p.add_argument("--format", choices=["lackey", "champsim", "csv", "parquet"],
                   help="trace format (default: detected)")
    p.add_argument("--limit", type=_int, default=None, help="use only the first N accesses")
    p.add_argument("--chunk", type=_int, default=1 << 22, help="accesses per batch (default 4M)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vecmmu", description="Batch x86 address translation "
                                "(KVM-shaped MMU: PageFormat, PageWalk, Mmu).",
                                formatter_class=_Fmt, epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = _sub(sub, "demo", "translate a trace on a guest and print a fault summary",
             ["vecmmu demo", "vecmmu demo --n 5000000 --seed 3",
              "vecmmu demo --trace-file data/wordfreq.lackey.xz"])
    d.add_argument("--n", type=_int, default=2_000_000, help="synthetic accesses (default 2M)")
    d.add_argument("--seed", type=_int, default=0)
    d.add_argument("--threads", type=_int, default=None)
    d.add_argument("--trace-file", help="a real trace instead of the synthetic guest; its address "
                   "space comes from --maps, else from FILE's sibling NAME.maps, else its own pages")
    d.add_argument("--maps", help="maps file for --trace-file")
    _progress_args(d)

    t = _sub(sub, "translate", "translate addresses or a trace file",
             ["vecmmu translate --dump guest.elf.gz --user 0x400000 0xffffffff81000000",
              "vecmmu translate --dump guest.elf.gz --trace 0x7f4758fed000",
              "vecmmu translate --trace-file run.lackey.gz --maps run.maps -o run.parquet",
              "vecmmu translate --trace-file t.csv --max-rows 50"])
    _space_args(t)
    _trace_args(t)
    t.add_argument("--kind", choices=["read", "write", "fetch"], default="read",
                   help="kind of the ADDR accesses (default read)")
    t.add_argument("--user", action="store_true", help="ADDR accesses are user-mode (CPL 3)")
    t.add_argument("--trace", action="store_true", help="print every entry read (ADDR only)")
    t.add_argument("-o", "--output", help="write every translation to FILE (.csv, .csv.gz, .parquet)")
    t.add_argument("--max-rows", type=_int, default=20,
                   help="rows to print when there is no --output (default 20)")
    t.add_argument("addr", nargs="*", type=_int, help="linear addresses")
    _progress_args(t)

    s = _sub(sub, "stats", "fault statistics of a trace over an address space",
             ["vecmmu stats --trace-file data/wordfreq.lackey.xz --maps data/wordfreq.maps",
              "vecmmu stats --trace-file run.champsimtrace.xz --by-region",
              "vecmmu stats --trace-file t.parquet --dump guest.elf.gz --semantics kvm"])
    _space_args(s)
    _trace_args(s, required=True)
    s.add_argument("--by-region", action="store_true", help="faults per VMA / region")
    s.add_argument("--threads", type=_int, default=None)
    _progress_args(s)

    wi = _sub(sub, "whatif", "what-if permission sweep: fault counts under named variants",
              ["vecmmu whatif --variant 'no SMAP:smap=0' --variant 'no NX:nxe=0'",
               "vecmmu whatif --variant 'pkey1 AD:pkru=0x4' --diff 'pkey1 AD'",
               "vecmmu whatif --trace-file data/wordfreq.lackey.xz --maps data/wordfreq.maps "
               "--variant 'WP off:wp=0'"])
    _space_args(wi)
    _trace_args(wi)
    wi.add_argument("--n", type=_int, default=1_000_000,
                    help="synthetic accesses on the demo guest when no --trace-file (default 1M)")
    wi.add_argument("--seed", type=_int, default=0)
    wi.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VAL,...",
                    help="a variant (repeatable); keys: wp smep smap pke ac pkru nxe pse mbec "
                    "execonly ad advanced_info gmet overlay=START+SIZE:r-w-xs-xu")
    wi.add_argument("--diff", metavar="NAME", help="also list what changes under NAME, by 2 MiB region")
    wi.add_argument("--threads", type=_int, default=None)
    _progress_args(wi)

    m = _sub(sub, "maps", "list the mappings of page tables (merged ranges), with filters",
             ["vecmmu maps --dump guest.elf.gz", "vecmmu maps --dump guest.elf.gz --user --wx",
              "vecmmu maps --dump guest.elf.gz --supervisor --page-size 2M -o k.csv",
              "vecmmu maps --dump guest.elf.gz --policy",
              "vecmmu maps --maps run.smaps --pagemap run.pagemap.npz"])
    _space_args(m)
    f = m.add_argument_group("filters")
    f.add_argument("--wx", action="store_true", help="writable and executable ranges only")
    pr = f.add_mutually_exclusive_group()
    pr.add_argument("--user", action="store_true", help="user-accessible ranges only")
    pr.add_argument("--supervisor", action="store_true", help="supervisor-only ranges only")
    f.add_argument("--pkey", type=_int, default=None, help="ranges with this protection key")
    f.add_argument("--page-size", choices=["4K", "2M", "4M", "1G"], default=None)
    f.add_argument("--shadow-stack", action="store_true",
                   help="leaves with W=0 and D=1 only (possible CET shadow-stack pages)")
    f.add_argument("--start", type=_int, default=None, help="first virtual address to scan")
    f.add_argument("--end", type=_int, default=None, help="end of the virtual range to scan")
    m.add_argument("--policy", action="store_true",
                   help="list policy violations (W+X pages, user pages in the kernel half)")
    m.add_argument("--by-frame", action="store_true",
                   help="split ranges where frames are not contiguous (pa exact for every page)")
    m.add_argument("--max-entries", type=_int, default=1 << 26,
                   help="bound on entries read (garbage tables cannot hang the scan; default 64M)")
    m.add_argument("--summary", action="store_true", help="bytes by privilege, rights and page size")
    m.add_argument("-o", "--output", help="write the ranges to FILE (.csv or .parquet)")
    m.add_argument("--max-rows", type=_int, default=None, help="rows to print (default all)")

    tr = _sub(sub, "trace", "convert, generate or describe trace files",
              ["vecmmu trace info data/wordfreq.lackey.xz",
               "vecmmu trace convert run.lackey.gz run.parquet",
               "vecmmu trace convert t.parquet t.csv.gz --limit 1000",
               "vecmmu trace generate uniform --n 1M --start 0x400000 --size 64M -o u.parquet",
               "vecmmu trace generate zipf --n 1M --start 0x7f0000000000 --size 1G --alpha 1.2 -o z.csv",
               "vecmmu trace generate strided --n 1M --start 0x1000000 --stride 64 --kinds 0.5,0.5,0 -o s.parquet"])
    tsub = tr.add_subparsers(dest="trace_cmd", required=True, metavar="ACTION")
    ti = tsub.add_parser("info", help="format, size and contents of a trace")
    ti.add_argument("file")
    ti.add_argument("--format", choices=["lackey", "champsim", "csv", "parquet"])
    _progress_args(ti)
    tc = tsub.add_parser("convert", help="convert a trace to Parquet or CSV (by OUT's name)")
    tc.add_argument("input")
    tc.add_argument("output", help="OUT.parquet, OUT.csv or OUT.csv.gz")
    tc.add_argument("--format", choices=["lackey", "champsim", "csv", "parquet"], help="input format")
    tc.add_argument("--limit", type=_int, default=None)
    _progress_args(tc)
    tg = tsub.add_parser("generate", help="a synthetic trace with a seed")
    tg.add_argument("pattern", choices=["uniform", "zipf", "strided"])
    tg.add_argument("--n", type=_bytes, required=True, help="accesses (1M = 1048576)")
    tg.add_argument("--start", type=_int, required=True, help="first address of the region")
    tg.add_argument("--size", type=_bytes, default=1 << 30, help="region size (default 1G)")
    tg.add_argument("--alpha", type=float, default=1.0, help="zipf exponent (default 1.0)")
    tg.add_argument("--stride", type=_int, default=64, help="strided step in bytes (default 64)")
    tg.add_argument("--kinds", type=_kinds, default=(1, 0, 0),
                    help="weights read,write,fetch (default 1,0,0)")
    tg.add_argument("--privilege", choices=["user", "supervisor"], default="user")
    tg.add_argument("--access-size", type=_int, default=1, help="bytes per access (default 1)")
    tg.add_argument("--seed", type=_int, default=0)
    tg.add_argument("-o", "--output", required=True, help="OUT.parquet, OUT.csv or OUT.csv.gz")

    b = _sub(sub, "bench", "reader speeds, then the walker benchmark (benchmarks/bench_walk.py)",
             ["vecmmu bench --readers", "vecmmu bench --quick"])
    b.add_argument("--readers", action="store_true", help="only the trace-reader speeds")
    b.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    b.add_argument("--records", type=_int, default=None,
                   help="records per reader file (default 10M; quick 1M)")

    i = _sub(sub, "info", "describe a memory dump", ["vecmmu info --dump guest.elf.gz"])
    i.add_argument("--dump", required=True)
    return p


# -- helpers -------------------------------------------------------------------------------------

def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def _hexcol(df, cols):
    for col in cols:
        if col in df:
            df[col] = df[col].map(lambda v: "-" if v is None or str(v) == "<NA>" else f"{int(v):#x}")
    return df


def _open_reader(args, path=None):
    from .io import open_trace
    kw = dict(chunk=args.chunk) if hasattr(args, "chunk") else {}
    kw["progress"] = getattr(args, "progress", None)
    return open_trace(path or args.trace_file, getattr(args, "format", None), **kw)


def _limited(reader, limit):
    n = 0
    for b in reader:
        if limit is not None and n + b.shape[0] >= limit:
            yield b[:limit - n]
            return
        n += b.shape[0]
        yield b


def _dump_walker(args):
    from .io import open_dump
    from .walk import PageWalk
    dump = open_dump(args.dump)
    regs = dump.regs(args.vcpu, efer=args.efer)
    if regs.get("efer_inferred"):
        _note(f"EFER not in the dump; inferred {regs['efer']:#x} (pass --efer to set it)")
    cr3 = regs["cr3"] if args.cr3 is None else args.cr3
    return PageWalk.from_regs(dump.mem, cr0=regs["cr0"], cr3=cr3, cr4=regs["cr4"],
                              efer=regs["efer"], maxphyaddr=args.maxphyaddr, vendor=args.vendor,
                              semantics=args.semantics, pkru=args.pkru,
                              enc_mask=getattr(args, "enc_mask", 0))


def _space(args, trace_path=None):
    """(walker, AddressSpace or None, description) from --dump / --maps / the trace."""
    if getattr(args, "dump", None):
        if args.maps or args.pagemap:
            raise ValueError("give either --dump or --maps/--pagemap, not both")
        w = _dump_walker(args)
        return w, None, f"dump {args.dump} (CR3={w.cr3[0]:#x})"
    from .io.procmaps import address_space_from_maps, address_space_from_trace
    if getattr(args, "pagemap", None) and not args.maps:
        raise ValueError("--pagemap needs --maps (the VMAs it describes)")
    if args.maps:
        sp = address_space_from_maps(args.maps, args.pagemap, huge=args.huge, pkru=args.pkru)
    elif trace_path is not None:
        reader = _open_reader(args, trace_path)
        _note(f"no --maps or --dump: mapping the pages {Path(trace_path).name} touches "
              f"(rights: {args.rights})")
        sp = address_space_from_trace(_limited(reader, getattr(args, "limit", None)),
                                      rights=args.rights, huge=args.huge, pkru=args.pkru)
    else:
        raise ValueError("no address space: give --dump FILE, --maps FILE, or --trace-file FILE")
    return sp.walker(semantics=args.semantics), sp, sp.source


# -- commands --------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    if args.trace_file:
        return _demo_trace(args)
    from .demo import build_guest, make_trace
    t0 = time.perf_counter()
    mmu = build_guest()
    trace = make_trace(args.n, args.seed)
    t1 = time.perf_counter()
    walk = mmu.walker(pkru=1 << 2)          # PKRU: AD for key 1
    walk.translate(trace[:16])              # compile (or load from cache) before timing
    t2 = time.perf_counter()
    res = walk.translate(trace, threads=args.threads)
    t3 = time.perf_counter()
    print(f"guest: {mmu}")
    print(f"trace: {len(trace):,} accesses (seed {args.seed}); built in {t1 - t0:.2f} s")
    print(f"translated in {t3 - t2:.3f} s ({len(res) / (t3 - t2) / 1e6:.1f} M translations/s; "
          f"warm-up {t2 - t1:.2f} s)\n")
    from .analysis.stats import TraceStats
    st = TraceStats()
    st.add(res)
    print(st.text())
    print("\npage sizes: " + ", ".join(f"{k} {v:,}" for k, v in st.page_sizes().items()))
    return 0


def _sibling_maps(path: str) -> str | None:
    p = Path(path)
    name = p.name
    for suf in (".xz", ".gz", ".bz2"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    for suf in (".lackey", ".txt", ".csv", ".parquet", ".champsimtrace", ".champsim", ".trace"):
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    for cand in (p.with_name(name + ".maps"), p.with_name(name + ".smaps")):
        if cand.exists():
            return str(cand)
    return None


def _demo_trace(args) -> int:
    from .io import open_trace
    from .io.procmaps import address_space_from_maps, address_space_from_trace
    t0 = time.perf_counter()
    maps = args.maps or _sibling_maps(args.trace_file)
    if maps:
        sp = address_space_from_maps(maps)
    else:
        _note(f"no maps file next to {args.trace_file}: mapping the pages the trace touches")
        sp = address_space_from_trace(open_trace(args.trace_file, progress=args.progress))
    walk = sp.walker()
    t1 = time.perf_counter()
    walk.translate(open_trace(args.trace_file, chunk=16).read(16))   # compile (or load) first
    t2 = time.perf_counter()
    st, n, tt = _run_stats(walk, sp, open_trace(args.trace_file, progress=args.progress), None,
                           args.threads)
    t3 = time.perf_counter()
    print(f"trace: {args.trace_file} ({n:,} accesses)")
    print(f"address space: {sp}")
    print(f"built in {t1 - t0:.2f} s, warm-up {t2 - t1:.2f} s; read, translated and counted in "
          f"{t3 - t2:.2f} s ({n / max(t3 - t2, 1e-9) / 1e6:.1f} M accesses/s; the walks alone "
          f"{tt:.3f} s, {st.n / max(tt, 1e-9) / 1e6:.0f} M translations/s)\n")
    print(st.text())
    names = _region_names(sp)
    print("\ntranslations by region (top 12):")
    print(_region_table(st, names, 12))
    return 0


def _region_names(sp):
    return [f"{int(s):#x} {p or ''}".strip() if isinstance(p, str) else f"{int(s):#x}"
            for s, p in zip(sp.vmas["start"], sp.vmas["path"])]


def _region_table(st, names, top=None) -> str:
    import pandas as pd
    rows = {}
    for (r, f), c in st.region_counts.items():
        key = names[r] if 0 <= r < len(names) else "(no region)"
        rows.setdefault(key, {})
        from .bits import FAULT_NAMES
        rows[key][FAULT_NAMES.get(f, str(f))] = rows[key].get(FAULT_NAMES.get(f, str(f)), 0) + c
    df = pd.DataFrame.from_dict(rows, orient="index").fillna(0).astype(np.int64)
    df["total"] = df.sum(axis=1)
    df = df.sort_values("total", ascending=False)
    if top:
        df = df.head(top)
    df.index.name = "region"
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        return df.to_string()


def _run_stats(walk, sp, batches, limit, threads):
    from .analysis.stats import TraceStats
    st = TraceStats()
    n = 0
    tt = 0.0
    for b in _limited(batches, limit):
        t = time.perf_counter()
        res = walk.translate(b, threads=threads)
        tt += time.perf_counter() - t
        reg = sp.region_of(res.addr, res.asid) if sp is not None else None
        st.add(res, reg, n_accesses=b.shape[0])
        n += b.shape[0]
    if n == 0:
        raise ValueError("the trace has no accesses")
    return st, n, tt


def cmd_translate(args) -> int:
    if args.addr and args.trace_file:
        raise ValueError("give addresses or --trace-file, not both")
    if not args.addr and not args.trace_file:
        raise ValueError("nothing to translate: give addresses or --trace-file FILE")
    walk, sp, desc = _space(args, args.trace_file)
    if args.addr:
        if args.trace:
            for a in args.addr:
                print(walk.explain(a, args.kind, user=args.user))
            return 0
        res = walk.translate(args.addr, args.kind, user=args.user)
        _emit_results([res], args)
        return 0
    if args.trace:
        raise ValueError("--trace explains single addresses; give ADDR arguments")
    reader = _open_reader(args)
    results = (walk.translate(b) for b in _limited(reader, args.limit))
    n = _emit_results(results, args)
    if args.output:
        print(f"{n:,} translations of {args.trace_file} ({desc}) written to {args.output}",
              file=sys.stderr)
    return 0


_COLS = ["access", "part", "addr", "kind", "privilege", "fault", "gpa", "error_code", "page_size",
         "rights", "pkey", "fault_level", "entry_addr", "entry_value"]


def _emit_results(results, args) -> int:
    """Write results to --output (streamed), or print the first --max-rows."""
    import pandas as pd
    out = args.output
    n = 0
    if out is None:
        shown = []
        counts = {}
        for res in results:
            df = res.to_frame()
            if sum(len(x) for x in shown) < args.max_rows:
                shown.append(df[_COLS].head(args.max_rows))
            for k, v in df["fault"].value_counts().items():
                counts[k] = counts.get(k, 0) + int(v)
            n += len(df)
        table = pd.concat(shown).head(args.max_rows) if shown else None
        if table is not None:
            table = _hexcol(table.copy(), ("addr", "gpa", "error_code", "entry_addr", "entry_value"))
            with pd.option_context("display.width", 200):
                print(table.to_string(index=False))
        if n > args.max_rows:
            print(f"... {n - args.max_rows:,} more; {n:,} translations: "
                  + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v))
        return n
    low = out.lower()
    if low.endswith(".parquet") or low.endswith(".pq"):
        from .io.tables import _pyarrow
        pa, pq = _pyarrow()
        writer = None
        try:
            for res in results:
                t = pa.Table.from_pandas(res.to_frame(), preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(out, t.schema, compression="zstd")
                writer.write_table(t)
                n += len(res)
        finally:
            if writer is not None:
                writer.close()
        return n
    if low.endswith(".csv") or low.endswith(".csv.gz"):
        import gzip
        opener = gzip.open if low.endswith(".gz") else open
        with opener(out, "wt", newline="") as f:
            first = True
            for res in results:
                df = res.to_frame()
                df = _hexcol(df, ("addr", "gpa", "entry_addr", "entry_value"))
                df.to_csv(f, header=first, index=False)
                first = False
                n += len(res)
        return n
    raise ValueError(f"{out}: output must end in .csv, .csv.gz or .parquet")


def cmd_stats(args) -> int:
    walk, sp, desc = _space(args, args.trace_file)
    reader = _open_reader(args)
    st, n, _tt = _run_stats(walk, sp, reader, args.limit, args.threads)
    print(f"{args.trace_file}: {reader.format} trace; address space: {desc}")
    print(st.text())
    if args.by_region:
        if sp is None:
            print("\n(--by-region needs --maps or the trace's own pages; a dump has no regions)")
        else:
            print("\ntranslations by region:")
            print(_region_table(st, _region_names(sp)))
    return 0


def cmd_maps(args) -> int:
    from .analysis.mappings import list_mappings, policy_violations
    if args.dump:
        walk, _sp, desc = _space(args)
    elif args.maps:
        walk, _sp, desc = _space(args)
    else:
        raise ValueError("maps needs --dump FILE (or --maps FILE)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = list_mappings(walk, merge="frames" if args.by_frame else "attrs", enc_mask=args.enc_mask,
                          max_entries=args.max_entries, start=args.start, end=args.end)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    sel = m.filter(wx=True if args.wx else None, user=True if args.user else None,
                   supervisor=True if args.supervisor else None, pkey=args.pkey,
                   page_size=args.page_size, shadow_stack=True if args.shadow_stack else None)
    print(f"{desc}: {len(m):,} ranges, {m.pages:,} pages, {m.entries_read:,} entries read"
          + (" (TRUNCATED)" if m.truncated else ""))
    if len(m.anomalies):
        print(f"{len(m.anomalies)} anomalies (the walk faults there):")
        a = _hexcol(m.anomalies.head(20).copy(), ("va", "entry_addr", "entry_value"))
        print(a.to_string(index=False))
    if args.policy:
        v = policy_violations(sel)
        print(f"policy violations: {len(v)}" + (":" if len(v) else ""))
        if len(v):
            print(_hexcol(v[["policy", "start", "last", "rights", "page_size", "pkey"]].copy(),
                          ("start", "last")).to_string(index=False))
        return 0
    if args.summary:
        print(sel.summary().to_string(index=False))
        return 0
    if args.output:
        low = args.output.lower()
        df = sel.to_frame()
        if low.endswith(".parquet"):
            df.to_parquet(args.output, index=False)
        elif low.endswith(".csv") or low.endswith(".csv.gz"):
            _hexcol(df.copy(), ("start", "last", "pa")).to_csv(args.output, index=False)
        else:
            raise ValueError(f"{args.output}: output must end in .csv, .csv.gz or .parquet")
        print(f"{len(sel):,} ranges written to {args.output}", file=sys.stderr)
        return 0
    if len(sel) != len(m):
        print(f"{len(sel):,} ranges match the filters")
    print(sel.to_text(args.max_rows))
    return 0


def cmd_trace(args) -> int:
    return {"info": _trace_info, "convert": _trace_convert, "generate": _trace_generate}[args.trace_cmd](args)


def _trace_info(args) -> int:
    from .io import open_trace
    r = open_trace(args.file, args.format, progress=args.progress)
    kinds = np.zeros(3, np.int64)
    user = 0
    n = 0
    lo, hi = None, None
    pages = []
    sizes = np.zeros(1, np.int64)
    t = time.perf_counter()
    for b in r:
        kinds += np.bincount(b["kind"], minlength=3)[:3]
        user += int(b["user"].sum())
        n += b.shape[0]
        a = b["addr"]
        lo = a.min() if lo is None else min(lo, a.min())
        hi = a.max() if hi is None else max(hi, a.max())
        pages.append(np.unique(a >> np.uint64(12)))
        if len(pages) > 8:
            pages = [np.unique(np.concatenate(pages))]
        sizes = sizes + np.int64(b["size"].astype(np.int64).sum())
    dt = time.perf_counter() - t
    npages = np.unique(np.concatenate(pages)).shape[0] if pages else 0
    print(f"{args.file}: {r.format} trace, {r.records:,} records, {n:,} accesses "
          f"(read {kinds[0]:,}, write {kinds[1]:,}, fetch {kinds[2]:,}; user {user:,})")
    if n:
        print(f"addresses {int(lo):#x} .. {int(hi):#x}; {npages:,} distinct 4 KiB pages; "
              f"mean size {int(sizes[0]) / n:.2f} bytes")
    print(f"read in {dt:.2f} s ({n / max(dt, 1e-9) / 1e6:.1f} M accesses/s)")
    if r.asid_keys and len(r.asid_keys) > 1:
        print(f"address spaces: {len(r.asid_keys)} ({', '.join(hex(k) for k in r.asid_keys[:8])}"
              + (" ..." if len(r.asid_keys) > 8 else "") + ")")
    return 0


def _writer_for(path):
    low = str(path).lower()
    if low.endswith(".parquet") or low.endswith(".pq"):
        from .io.tables import write_parquet
        return write_parquet
    if low.endswith(".csv") or low.endswith(".csv.gz"):
        from .io.tables import write_csv
        return write_csv
    raise ValueError(f"{path}: output must end in .parquet, .csv or .csv.gz")


def _trace_convert(args) -> int:
    from .io import open_trace
    write = _writer_for(args.output)
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise ValueError("input and output are the same file")
    r = open_trace(args.input, args.format, progress=args.progress)
    batches = _limited(r, args.limit)
    if write.__name__ == "write_csv" and args.output.lower().endswith(".gz"):
        batches = [concat_accesses(batches)]
    kw = {}
    if write.__name__ == "write_parquet" and len(r.asid_keys) > 1:
        kw = {}
    n = write(args.output, batches, **kw)
    print(f"{args.input} ({r.format}) -> {args.output}: {n:,} accesses")
    return 0


def _trace_generate(args) -> int:
    from .io import synth
    write = _writer_for(args.output)
    kw = dict(kinds=args.kinds, user=args.privilege == "user", access_size=args.access_size)
    if args.pattern == "uniform":
        kw.update(start=args.start, size=args.size)
    elif args.pattern == "zipf":
        kw.update(start=args.start, pages=max(args.size // 4096, 1), alpha=args.alpha)
    else:
        kw.update(start=args.start, stride=args.stride, size=args.size)
    batches = synth.generate(args.pattern, args.n, seed=args.seed, **kw)
    if write.__name__ == "write_csv" and args.output.lower().endswith(".gz"):
        batches = [concat_accesses(batches)]
    n = write(args.output, batches)
    print(f"{args.pattern}: {n:,} accesses (seed {args.seed}) -> {args.output}")
    return 0


def cmd_bench(args) -> int:
    from .io.bench import reader_speeds
    n = args.records or (1_000_000 if args.quick else 10_000_000)
    print(reader_speeds(n))
    if args.readers:
        return 0
    script = HERE.parent / "benchmarks" / "bench_walk.py"
    if not script.exists():
        print(f"\n(no {script}: the walker benchmark ships with the source repository)")
        return 0
    print(f"\n$ python {script.relative_to(HERE.parent)}" + (" --quick" if args.quick else ""))
    sys.stdout.flush()
    return subprocess.call([sys.executable, str(script)] + (["--quick"] if args.quick else []))


def cmd_info(args) -> int:
    from .io import open_dump
    print(repr(open_dump(args.dump)))
    return 0


def cmd_whatif(args) -> int:
    from .analysis.whatif import whatif
    if not args.variant:
        raise ValueError("give at least one --variant NAME:KEY=VALUE,... (e.g. 'no SMAP:smap=0')")
    if args.trace_file or args.dump or args.maps:
        walk, _sp, desc = _space(args, args.trace_file)
        if args.trace_file:
            parts = list(_limited(_open_reader(args), args.limit))
            acc = concat_accesses(parts) if parts else None
        else:
            raise ValueError("--dump/--maps need --trace-file (the accesses to study)")
    else:
        from .demo import build_guest, make_trace
        walk = build_guest().walker(pkru=args.pkru, semantics=args.semantics)
        acc = make_trace(args.n, args.seed)
        desc = f"demo guest (SMEP, SMAP, PKE; PKRU={args.pkru:#x}), {args.n:,} synthetic accesses"
    t0 = time.perf_counter()
    res = whatif(walk, acc, args.variant, threads=args.threads)
    dt = time.perf_counter() - t0
    print(f"{desc}\n{len(res.addr):,} translations, {len(res.names)} variants, "
          f"{res.timing['walks']} walk(s), {dt:.2f} s\n")
    t = res.totals()
    t["share"] = t["share"].map(lambda x: f"{x:7.2%}")
    print(t.to_string(index=False))
    s = res.summary()
    s = s[s["fault"] != "none"].copy()
    s["share"] = s["share"].map(lambda x: f"{x:7.2%}")
    print("\nfaults by variant, class and stage:")
    print(s.to_string(index=False))
    if args.diff:
        if args.diff not in res.names:
            raise ValueError(f"--diff {args.diff!r} is not a variant ({', '.join(res.names)})")
        print(f"\n{args.diff!r} against the baseline, by 2 MiB region:")
        print(res.diff(args.diff, by="2M").head(15).to_string())
    return 0


COMMANDS = {"whatif": cmd_whatif, "demo": cmd_demo, "translate": cmd_translate, "stats": cmd_stats, "maps": cmd_maps,
            "trace": cmd_trace, "bench": cmd_bench, "info": cmd_info}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}",
                                                                  file=sys.stderr)
            return COMMANDS[args.cmd](args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, TypeError, OSError, ImportError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"vecmmu {args.cmd}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
