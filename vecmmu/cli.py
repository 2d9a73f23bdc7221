"""The ``vecmmu`` command.

    vecmmu demo [--n N] [--seed S]
        build the demo guest, translate a synthetic trace, print a fault summary
    vecmmu translate --dump FILE [--efer X] [--maxphyaddr N] [--vendor V] ADDR...
        translate linear addresses on a QEMU ELF memory dump (the dumped CR3)
    vecmmu info --dump FILE
        memslots and vCPU registers of a dump

Errors print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
import time

EPILOG = """examples:
  vecmmu demo
  vecmmu demo --n 5000000 --seed 3
  vecmmu translate --dump guest.elf.gz --user 0x400000 0x7ffc0000 0xffffffff81000000
  vecmmu translate --dump guest.elf.gz --kind write --semantics kvm 0x601000
  vecmmu info --dump guest.elf.gz
"""


def _int(s: str) -> int:
    try:
        return int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer (use 0x... for hex)") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vecmmu", description="Batch x86 address translation "
                                "(KVM-shaped MMU: PageFormat, PageWalk, Mmu).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="translate a synthetic trace on a built guest",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  vecmmu demo --n 2000000")
    d.add_argument("--n", type=_int, default=2_000_000, help="accesses to translate (default 2M)")
    d.add_argument("--seed", type=_int, default=0)
    d.add_argument("--threads", type=_int, default=None)

    t = sub.add_parser("translate", help="translate addresses on a memory dump",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  vecmmu translate --dump guest.elf.gz --user 0x400000")
    t.add_argument("--dump", required=True, help="QEMU dump-guest-memory ELF core (.gz ok)")
    t.add_argument("--vcpu", type=_int, default=0)
    t.add_argument("--efer", type=_int, default=None, help="EFER (default: inferred, and said so)")
    t.add_argument("--maxphyaddr", type=_int, default=52, help="guest MAXPHYADDR (default 52)")
    t.add_argument("--vendor", choices=["intel", "amd"], default="intel")
    t.add_argument("--pkru", type=_int, default=0)
    t.add_argument("--kind", choices=["read", "write", "fetch"], default="read")
    t.add_argument("--user", action="store_true", help="user-mode (CPL 3) accesses")
    t.add_argument("--semantics", choices=["hardware", "kvm"], default="hardware")
    t.add_argument("--trace", action="store_true", help="print every entry read")
    t.add_argument("addr", nargs="+", type=_int)

    i = sub.add_parser("info", help="describe a memory dump")
    i.add_argument("--dump", required=True)
    return p


def _summary_table(res) -> str:
    import pandas as pd
    df = res.to_frame()
    tab = (df.groupby(["fault", "kind", "privilege"], observed=True).size().rename("count")
           .reset_index())
    tab["share"] = (tab["count"] / len(df)).map(lambda x: f"{x:7.2%}")
    codes = (df[df["fault"] == "#PF"].groupby("error_code").size().rename("count").reset_index())
    codes["error_code"] = codes["error_code"].map(lambda c: f"{int(c):#04x} " + _ec_words(int(c)))
    with pd.option_context("display.width", 120):
        return tab.to_string(index=False) + "\n\n#PF error codes:\n" + codes.to_string(index=False)


def _ec_words(c: int) -> str:
    words = [w for b, w in ((1, "P"), (2, "W"), (4, "U"), (8, "RSVD"), (16, "I/D"), (32, "PK")) if c & b]
    return "(" + ("|".join(words) or "not present, supervisor read") + ")"


def cmd_demo(args) -> int:
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
    print(_summary_table(res))
    df = res.to_frame()
    print(f"\nmean paging-structure reads per walk: {df['refs'].mean():.2f}; page sizes: "
          + ", ".join(f"{k} {v:,}" for k, v in df["page_size"].value_counts().items() if v))
    return 0


def cmd_translate(args) -> int:
    from .io import open_dump
    from .walk import PageWalk
    dump = open_dump(args.dump)
    regs = dump.regs(args.vcpu, efer=args.efer)
    if regs.get("efer_inferred"):
        print(f"note: EFER not in the dump; inferred {regs['efer']:#x} (pass --efer to set it)",
              file=sys.stderr)
    walk = PageWalk.from_regs(dump.mem, cr0=regs["cr0"], cr3=regs["cr3"], cr4=regs["cr4"],
                              efer=regs["efer"], maxphyaddr=args.maxphyaddr, vendor=args.vendor,
                              semantics=args.semantics, pkru=args.pkru)
    if args.trace:
        for a in args.addr:
            print(walk.explain(a, args.kind, user=args.user))
        return 0
    res = walk.translate(args.addr, args.kind, user=args.user)
    df = res.to_frame()[["addr", "fault", "gpa", "error_code", "page_size", "rights", "pkey",
                         "fault_level", "entry_addr", "entry_value"]]
    for col in ("addr", "gpa", "error_code", "entry_addr", "entry_value"):
        df[col] = df[col].map(lambda v: "-" if v is None or str(v) == "<NA>" else f"{int(v):#x}")
    print(df.to_string(index=False))
    return 0


def cmd_info(args) -> int:
    from .io import open_dump
    print(repr(open_dump(args.dump)))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"demo": cmd_demo, "translate": cmd_translate, "info": cmd_info}[args.cmd](args)
    except (ValueError, TypeError, OSError, PermissionError) as e:
        print(f"vecmmu {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
