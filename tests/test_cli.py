"""The vecmmu command: every subcommand on small real inputs, and one-line errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DUMP_FILE
from test_dump_reader import build_core, note, prstatus64
from vecmmu.cli import main
from vecmmu.io import read_trace

DATA = Path(__file__).resolve().parents[1] / "data"
TRACE = DATA / "wordfreq.lackey.xz"
MAPS = DATA / "wordfreq.maps"

LACKEY = b"""==1== Lackey
I  00109000,4
 L 0010c010,8
 S 0010c018,8
 M 0010c020,4
 L 00500000,8
I  00108000,2
"""
SMALL_MAPS = """\
00108000-00109000 r--p 00000000 00:02 12   /prog
00109000-0010a000 r-xp 00001000 00:02 12   /prog
0010c000-0010d000 rw-p 00003000 00:02 12   /prog
"""


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def small(tmp_path):
    t = tmp_path / "p.lackey"
    t.write_bytes(LACKEY)
    m = tmp_path / "p.maps"
    m.write_text(SMALL_MAPS)
    return t, m


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and "vecmmu maps --dump" in out
    for sub in ("translate", "stats", "maps", "trace", "bench", "demo", "info"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        assert "example" in capsys.readouterr().out


def test_demo_synthetic(capsys):
    rc, out, _ = run(capsys, "demo", "--n", 20000)
    assert rc == 0 and "M translations/s" in out and "#PF error codes" in out


def test_demo_bundled_trace(capsys):
    """The bundled real trace over its own maps: RELRO writes before mprotect fault as
    write-protection faults (P|W|U), and pages unmapped before the snapshot as not-present."""
    rc, out, _ = run(capsys, "demo", "--trace-file", TRACE)
    assert rc == 0
    assert "maps " + str(MAPS) in out or "wordfreq.maps" in out
    assert "0x07   " in out and "P|W|U" in out
    assert "libc.so.6" in out


def test_translate_trace_with_maps(capsys, small, tmp_path):
    t, m = small
    rc, out, _ = run(capsys, "translate", "--trace-file", t, "--maps", m)
    assert rc == 0
    lines = out.splitlines()
    assert "fault" in lines[0] and len(lines) == 1 + 7           # M is two rows
    assert "#PF" in lines[6] and "0x500000" in lines[6]          # outside every VMA
    assert "#PF" in lines[7] and "0x15" in lines[7]              # fetch from r--: P|U|I/D
    pq = tmp_path / "out.parquet"
    rc, _, err = run(capsys, "translate", "--trace-file", t, "--maps", m, "-o", pq)
    import pandas as pd
    df = pd.read_parquet(pq)
    assert rc == 0 and len(df) == 7 and list(df["fault"].astype(str)).count("#PF") == 2
    assert "7 translations" in err
    csv = tmp_path / "out.csv"
    run(capsys, "translate", "--trace-file", t, "--maps", m, "-o", csv)
    assert pd.read_csv(csv)["addr"].iloc[0] == "0x109000"


def test_translate_trace_without_space_uses_its_pages(capsys, small):
    t, _ = small
    rc, out, err = run(capsys, "translate", "--trace-file", t)
    assert rc == 0 and "mapping the pages" in err
    assert out.count("none") == 7                  # every page the trace touches is mapped


def test_stats_by_region(capsys, small):
    t, m = small
    rc, out, _ = run(capsys, "stats", "--trace-file", t, "--maps", m, "--by-region")
    assert rc == 0 and "7 translations" in out and "translations by region" in out
    assert "(no region)" in out and "/prog" in out


def test_trace_info_convert_generate(capsys, small, tmp_path):
    t, _ = small
    rc, out, _ = run(capsys, "trace", "info", t)
    assert rc == 0 and "lackey trace" in out and "7 accesses" in out and "fetch 2" in out
    pq = tmp_path / "c.parquet"
    rc, out, _ = run(capsys, "trace", "convert", t, pq)
    assert rc == 0 and np.array_equal(read_trace(pq), read_trace(t))
    g = tmp_path / "g.csv"
    rc, out, _ = run(capsys, "trace", "generate", "zipf", "--n", "1K", "--start", "0x7f0000000000",
                     "--size", "1M", "--seed", 3, "--kinds", "1,1,0", "-o", g)
    b = read_trace(g)
    assert rc == 0 and len(b) == 1024 and b["addr"].min() >= 0x7F0000000000
    assert set(np.unique(b["kind"])) == {0, 1}


def test_maps_from_a_maps_file(capsys):
    rc, out, _ = run(capsys, "maps", "--maps", MAPS, "--user", "--wx")
    assert rc == 0 and "rwux" in out                       # valgrind's rwx translation cache


def test_bench_readers(capsys):
    rc, out, _ = run(capsys, "bench", "--readers", "--records", 30000)
    assert rc == 0 and "lackey" in out and "champsim .xz" in out and "M rec/s" in out


@pytest.mark.parametrize("argv,words", [
    (["translate", "--trace-file", "/nonexistent.lackey"], "no such file"),
    (["translate", "--dump", "/nonexistent.elf", "0x1000"], "no such dump file"),
    (["translate", "0x1000"], "no address space"),
    (["translate"], "nothing to translate"),
    (["maps"], "maps needs --dump"),
    (["stats", "--trace-file", "TRACE", "--dump", "X", "--maps", "Y"], "either --dump or --maps"),
])
def test_errors_are_one_line(capsys, small, argv, words):
    t, _ = small
    rc, out, err = run(capsys, *[str(t) if a == "TRACE" else a for a in argv])
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_bad_trace_line_is_reported_with_file_and_line(capsys, tmp_path):
    p = tmp_path / "bad.lackey"
    p.write_bytes(b"I  1000,4\n L 12g4,8\n")
    rc, _, err = run(capsys, "stats", "--trace-file", p)
    assert rc == 2 and "bad.lackey:2: the address is not hexadecimal" in err


def test_wrong_champsim_size(capsys, tmp_path):
    p = tmp_path / "t.champsimtrace"
    p.write_bytes(b"\0" * 100)
    rc, _, err = run(capsys, "trace", "info", p, "--format", "champsim")
    assert rc == 2 and "not a whole number of 64-byte" in err


def test_elf_that_is_not_a_qemu_core(capsys, tmp_path):
    exe = tmp_path / "prog.elf"
    build_core(exe, [(0x100000, b"\0" * 4096)], e_type=2)
    rc, _, err = run(capsys, "maps", "--dump", exe)
    assert rc == 2 and "ELF executable, not a core dump" in err
    core = tmp_path / "proc.core"
    build_core(core, [(0x100000, b"\0" * 4096)], [note(b"CORE", 1, prstatus64(1, 0x401000, 0x7ff0))])
    rc, _, err = run(capsys, "translate", "--dump", core, "0x1000")
    assert rc == 2 and "no QEMU CPU notes" in err and len(err.strip().splitlines()) == 1


def test_entry_point_exit_status(tmp_path):
    p = subprocess.run([sys.executable, "-m", "vecmmu.cli", "translate", "--trace-file",
                        str(tmp_path / "missing")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("vecmmu translate: error:")


@pytest.mark.dump
def test_maps_on_the_real_dump(capsys, tmp_path):
    if not DUMP_FILE.exists():
        pytest.skip("real dump not present")
    base = ["maps", "--dump", DUMP_FILE, "--vendor", "amd", "--maxphyaddr", 40]
    rc, out, err = run(capsys, *base, "--user")
    assert rc == 0 and "73,883 pages" in out and "28 ranges match" in out
    assert "0x00007f4758fe3000-0x00007f4758fe5000" in out            # the pkey-1 exec-only page
    rc, out, _ = run(capsys, *base, "--pkey", 2)
    assert "0x00007f4758fe1000-0x00007f4758fe3000" in out and "1 ranges match" in out
    rc, out, _ = run(capsys, *base, "--policy")
    assert "policy violations: 0" in out
    csv = tmp_path / "k.csv"
    rc, _, _ = run(capsys, *base, "--supervisor", "--page-size", "2M", "-o", csv)
    import pandas as pd
    df = pd.read_csv(csv)
    assert rc == 0 and (df["page_size"] == "2M").all() and not df["user"].any()
    rc, out, _ = run(capsys, "translate", "--dump", DUMP_FILE, "--vendor", "amd", "--maxphyaddr", 40,
                     "--user", "0x7f4758fed000")
    assert rc == 0 and "0x29d4000" in out
