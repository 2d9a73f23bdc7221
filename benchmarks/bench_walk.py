"""Speed benchmark of the vecmmu guest walker (``PageWalk.translate``), side by side.

    python benchmarks/bench_walk.py [--n N] [--quick]

Two guests, 4-level paging with NXE, WP, SMEP, SMAP and PKE (a modern kernel's setup):

(a) large: >= 1 M 4 KiB pages at scattered user-half addresses (runs of 16 pages at random
    places), frames a random permutation: the tables (hundreds of MB) do not fit in cache;
(b) small: 64 pages in one page table: the tables stay in L1/L2.

N random mapped addresses (random offsets) with a mix of reads, writes and fetches by user
and supervisor code that mostly succeeds (about 1 % of accesses get a random kind and
privilege, so some fault) go through each contender; translations per second are the best
of three timed rounds (each round calls every contender once in turn, so load from other
jobs hits them alike) after a warm-up call each (compilation excluded). See README.md for what
each row means. Speed targets are printed as PASS/MISS; the exit status is 0 either way.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO, Row, Target, best_times, cpu_snapshot, log,  # noqa: E402
                    machine_line, other_cpu_use, ratio, target_ratio, with_threads)
from vecmmu import Mmu, make_accesses  # noqa: E402
from vecmmu.bufpool import POOL  # noqa: E402
from vecmmu.kernels import cpu_walk as K  # noqa: E402
from vecmmu import walk as W  # noqa: E402
from vecmmu.kernels.physmem import prefetch  # noqa: E402
from vecmmu.kernels.walkers import walk_x86_flat  # noqa: E402
from numpy_walk import NumpyWalk, access_flags  # noqa: E402

PKRU = 0x5555_5554        # access-disable for keys 1..15: key 0 pages pass, the check still runs


# ---------------------------------------------------------------------------------------------
# the naive baseline: a plain 4-level walk, present bit only (no rights, no reserved bits)
# ---------------------------------------------------------------------------------------------
ADDR_MASK = np.int64(0x000F_FFFF_FFFF_F000)


def _naive_body(addr, ram64, base, root, gpa, fault, i):
    va = addr[i]
    t = root
    ok = True
    for level in range(4, 0, -1):
        e = ram64[((t - base) >> 3) + ((va >> (3 + 9 * level)) & 511)]
        if (e & 1) == 0:
            ok = False
            break
        t = e & ADDR_MASK
    if ok:
        gpa[i] = t | (va & 0xFFF)
        fault[i] = 0
    else:
        gpa[i] = 0
        fault[i] = 1


_naive_body_jit = numba.njit(inline="always")(_naive_body)


@numba.njit(parallel=False, boundscheck=False)
def naive_walk(addr, ram64, base, root):
    n = addr.shape[0]
    gpa = np.empty(n, np.int64)
    fault = np.empty(n, np.uint8)
    for i in range(n):
        _naive_body_jit(addr, ram64, base, root, gpa, fault, i)
    return gpa, fault


@numba.njit(parallel=True, boundscheck=False)
def naive_walk_par(addr, ram64, base, root):
    n = addr.shape[0]
    gpa = np.empty(n, np.int64)
    fault = np.empty(n, np.uint8)
    for i in numba.prange(n):
        _naive_body_jit(addr, ram64, base, root, gpa, fault, i)
    return gpa, fault


# the naive loop of the same walk: vecmmu's own per-address walker (walk_x86_flat: every rule of
# translate(), the format as data), called once per access in input order on one thread, its
# results stored into the same eleven columns: translate() without its engine (parts on threads,
# the table prefetch, the walk memo, streaming stores, recycled buffers). Compiled as the
# library's kernels are (no reference counting: with it, every array use in the inlined walker
# costs an atomic pair, and the loop runs several times slower).
@numba.njit(boundscheck=False, _nrt=False)
def _naive_full_loop(addr, af, root, pdptes, pkru, fp, rsvd, perms, wopts, mem, tr, words,
                     bytes_):
    for i in range(addr.shape[0]):
        (f, ec, q, st, lvl, glvl, ea, ev, leaf, sh, acc, pkey, refs, gpa, hpa, fg, tsh,
         tacc) = walk_x86_flat(i, addr[i], af[i], root, pdptes, 0, pkru, fp, rsvd, perms, wopts,
                               mem, False, tr, tr, None, 0, True)
        words[0, i] = gpa
        words[1, i] = ec
        words[2, i] = ea
        words[3, i] = ev
        bytes_[0, i] = f
        bytes_[1, i] = lvl
        bytes_[2, i] = leaf
        bytes_[3, i] = sh
        bytes_[4, i] = acc
        bytes_[5, i] = pkey
        bytes_[6, i] = refs


def naive_full_walk(addr, af, root, pdptes, pkru, fp, rsvd, perms, wopts, mem):
    """:func:`_naive_full_loop` into new result columns: ``(words (4, n) int64: gpa, error
    code, entry address, entry value; bytes (7, n) uint8: fault, fault level, leaf level,
    page shift, acc, pkey, refs)``."""
    n = addr.shape[0]
    words, bytes_ = np.empty((4, n), np.int64), np.empty((7, n), np.uint8)
    _naive_full_loop(addr, af, root, pdptes, pkru, fp, rsvd, perms, wopts, mem,
                     np.zeros((1, 5), np.int64), words, bytes_)
    return words, bytes_


def full_walk_args(g: "Guest", addr, af):
    """The arguments of :func:`naive_full_walk` for guest ``g`` (one address space)."""
    w = g.walker
    return (addr, af, np.int64(w._roots[0]), w._pdptes_i, np.int64(PKRU), w._fp,
            w.format.rsvd_table(), w.format.perm_table(), w._wopts, w.mem.slot_pointers())


# the memory bound: the same present-bit walk, level by level over blocks of walks with every
# entry requested (prefetch) a block ahead, so a thread has as many table misses in flight as
# the hardware allows. No real walker can beat it: it is the rate at which this machine reads
# the entries at all. Used to tell how much of a target the hardware leaves.
BOUND_BLOCK = 128


@numba.njit(parallel=True, boundscheck=False)
def bound_walk(addr, ram64, base, root, parts):
    n = addr.shape[0]
    gpa = np.empty(n, np.int64)
    fault = np.empty(n, np.uint8)
    tabs = np.empty((parts, BOUND_BLOCK), np.int64)
    p0 = ram64.ctypes.data
    for t in numba.prange(parts):
        tab = tabs[t]
        lo = t * n // parts
        hi = (t + 1) * n // parts
        for b0 in range(lo, hi, BOUND_BLOCK):
            m = min(hi, b0 + BOUND_BLOCK) - b0
            for k in range(m):
                tab[k] = root
            for level in range(4, 0, -1):
                for k in range(m):
                    if tab[k] >= 0:
                        prefetch(p0 + (tab[k] - base) + ((addr[b0 + k] >> (9 * level)) & (511 * 8)))
                for k in range(m):
                    if tab[k] >= 0:
                        e = ram64[((tab[k] - base) >> 3) + ((addr[b0 + k] >> (3 + 9 * level)) & 511)]
                        tab[k] = e & ADDR_MASK if (e & 1) != 0 else np.int64(-1)
            for k in range(m):
                i = b0 + k
                if tab[k] >= 0:
                    gpa[i] = tab[k] | (addr[i] & 0xFFF)
                    fault[i] = 0
                else:
                    gpa[i] = 0
                    fault[i] = 1
    return gpa, fault


# ---------------------------------------------------------------------------------------------
# guests
# ---------------------------------------------------------------------------------------------
# page classes: (user, writable, nx, probability); accesses respect the class
CLASSES = [(True, True, True, 0.5),     # user data: user read/write
           (True, False, False, 0.2),   # user code: user read/fetch
           (False, True, True, 0.2),    # kernel data: supervisor read/write
           (False, False, False, 0.1)]  # kernel code: supervisor read/fetch


LARGE, SMALL = "(a) large", "(b) small"


def new_mmu(ram_size, **kw):
    return Mmu.for_mode("4level", ram_size=ram_size, smep=True, smap=True, pke=True, **kw)


class Guest:
    """One address space: the Mmu, its walker, and per mapped page its VA and class."""

    def __init__(self, case, name, mmu, page_va, page_cls, build_s):
        self.case, self.name, self.mmu, self.build_s = case, name, mmu, build_s
        self.page_va, self.page_cls = page_va, page_cls
        self.walker = mmu.walker(pkru=PKRU)
        self.ram = mmu._ram                 # the RAM slot's backing (for the baselines)
        self.root = mmu.cr3() & mmu.role.root_mask()
        self.ram64 = self.ram.view(np.int64)


def build_large(npages, run, rng):
    nruns = npages // run
    npages = nruns * run
    ram = npages * 4096 + nruns * 2 * 4096 + (8 << 20)
    t0 = time.perf_counter()
    mmu = new_mmu(ram)
    frames_base = mmu.alloc(npages * 4096)
    frames = np.uint64(frames_base) + rng.permutation(npages).astype(np.uint64) * np.uint64(4096)
    slots = (1 << 47) // (run * 4096)
    starts = rng.choice(slots, size=nruns, replace=False).astype(np.int64) * (run * 4096)
    cls = rng.choice(len(CLASSES), size=nruns, p=[c[3] for c in CLASSES])
    size = run * 4096
    for j in range(nruns):
        u, w, x, _ = CLASSES[cls[j]]
        mmu.map(int(starts[j]), size, pa=frames[j * run:(j + 1) * run], user=u, writable=w, nx=x)
    build_s = time.perf_counter() - t0
    page_va = (starts[:, None] + np.arange(run, dtype=np.int64)[None, :] * 4096).reshape(-1)
    return Guest(LARGE, f"(a) large: {npages:,} scattered 4K pages", mmu, page_va,
                 np.repeat(cls, run), build_s)


def build_small(rng, npages=64):
    t0 = time.perf_counter()
    mmu = new_mmu(16 << 20)
    frames_base = mmu.alloc(npages * 4096)
    frames = np.uint64(frames_base) + rng.permutation(npages).astype(np.uint64) * np.uint64(4096)
    va0 = 0x7F12_3440_0000
    cls = rng.choice(len(CLASSES), size=npages // 8, p=[c[3] for c in CLASSES])
    for j in range(npages // 8):
        u, w, x, _ = CLASSES[cls[j]]
        mmu.map(va0 + j * 8 * 4096, 8 * 4096, pa=frames[j * 8:(j + 1) * 8], user=u, writable=w, nx=x)
    build_s = time.perf_counter() - t0
    page_va = va0 + np.arange(npages, dtype=np.int64) * 4096
    return Guest(SMALL, f"(b) small: {npages} pages, one page table", mmu, page_va,
                 np.repeat(cls, 8), build_s)


def make_workload(g: Guest, n, rng, noise=0.01):
    """``(batch, addr_i64, af)``: n accesses to random mapped pages at random offsets."""
    pg = rng.integers(0, g.page_va.shape[0], n)
    addr = g.page_va[pg] + rng.integers(0, 4096, n)
    cls = g.page_cls[pg]
    user = np.array([c[0] for c in CLASSES], dtype=np.uint8)[cls]
    code = np.array([not c[2] for c in CLASSES])[cls]
    r = rng.random(n)
    kind = np.where(code, np.where(r < 0.6, 2, 0), np.where(r < 0.3, 1, 0)).astype(np.uint8)
    odd = rng.random(n) < noise
    kind[odd] = rng.integers(0, 3, int(odd.sum()))
    user[odd] = rng.integers(0, 2, int(odd.sum()))
    batch = make_accesses(addr.view(np.uint64), kind, user=user)
    return batch, np.ascontiguousarray(addr.astype(np.int64)), access_flags(kind, user)


# ---------------------------------------------------------------------------------------------
# contenders
# ---------------------------------------------------------------------------------------------
class KernelDirect:
    """The kernel alone: replays the exact ``cpu_translate`` calls one ``translate()`` makes
    (same arguments, outputs already allocated, the same parts on the same threads), so
    wrapper time (validation, the flag word, output allocation) is left out. The calls are
    captured by wrapping the ``run_parts`` that ``vecmmu.walk`` calls, so this follows the
    kernel's signature."""

    def __init__(self, walker, batch, threads=1):
        real = W.run_parts
        self.calls = []

        def spy(kernel, parts, *a):
            if kernel is K.cpu_translate:
                self.calls.append((parts, a))
            return real(kernel, parts, *a)

        W.run_parts = spy
        try:
            walker.translate(batch, threads=threads)
        finally:
            W.run_parts = real
        if not self.calls:
            raise RuntimeError("PageWalk.translate no longer runs kernels.cpu_walk.cpu_translate "
                               "through run_parts")
        self.run, self.walker = real, walker
        # the epoch's place among the arguments after the part number
        self.epoch_at = list(inspect.signature(K.cpu_translate.py_func).parameters).index("epoch") - 1

    def __call__(self):
        for parts, a in self.calls:
            # a new memo epoch per replay, as translate() takes one per call: replaying the
            # captured epoch would find every page already walked
            a = list(a)
            a[self.epoch_at] = self.walker._memo.next_epoch()
            self.run(K.cpu_translate, parts, *a)


def ref_reader(ram, base):
    end = base + ram.shape[0]

    def read(addr, n):
        if addr < base or addr + n > end:
            return None
        o = addr - base
        return int.from_bytes(ram[o:o + n].tobytes(), "little")
    return read


REF_FAULT = {"none": 0, "pf": 1, "gp": 2, "ss": 3, "unbacked": 7}


def run_reference(g: Guest, batch, pkru):
    """Translate with tests/reference.py; returns (fault, gpa, error_code) arrays."""
    import reference as ref                         # tests/reference.py
    regs = dict(g.mmu.role.registers(), cr3=g.mmu.cr3(), maxphyaddr=g.mmu.role.maxphyaddr,
                gbpages=g.mmu.role.gbpages, vendor=g.mmu.role.vendor, pkru=pkru)
    read = ref_reader(g.ram, g.mmu.ram_base)
    n = batch.shape[0]
    fault = np.zeros(n, np.uint8)
    gpa = np.zeros(n, np.uint64)
    ec = np.zeros(n, np.uint64)
    for i in range(n):
        b = batch[i]
        acc = dict(addr=int(b["addr"]), kind=int(b["kind"]), user=bool(b["user"]), ac=bool(b["ac"]),
                   implicit=bool(b["implicit"]), stack=bool(b["stack"]))
        r = ref.translate(read, regs, acc)
        fault[i] = REF_FAULT[r["fault"]]
        gpa[i] = r["gpa"] or 0
        ec[i] = r["error_code"]
    return fault, gpa, ec


def kernel_columns(g: Guest, batch, pkru=None):
    r = g.walker.translate(batch, pkru=pkru)
    return r.fault, r.gpa, r.error_code, r


def compare(what, a, b):
    names = ("fault", "gpa", "error_code")
    bad = [nm for nm, x, y in zip(names, a, b) if not np.array_equal(np.asarray(x), np.asarray(y))]
    if bad:
        i = int(np.flatnonzero(np.asarray(a[names.index(bad[0])]) != np.asarray(b[names.index(bad[0])]))[0])
        detail = ", ".join(f"{nm} {int(x[i]):#x} vs {int(y[i]):#x}" for nm, x, y in zip(names, a, b))
        return f"MISMATCH {what}: {bad} differ (first at {i}: {detail})"
    return f"ok       {what}: fault, gpa and error code equal on {len(a[0]):,} accesses"


# ---------------------------------------------------------------------------------------------
# a guest with every path of the walk, for the numpy-walk equivalence check
# ---------------------------------------------------------------------------------------------
def edge_case_check(rng, n=200_000):
    mmu = new_mmu(64 << 20, maxphyaddr=46)
    va_list = []
    for j in range(64):                              # 4 KiB pages, every class, some pkeys
        u, w, x = rng.integers(0, 2, 3).astype(bool)
        va = 0x0000_1000_0000 + j * 0x1000 * 3
        mmu.map(va, 0x2000, user=bool(u), writable=bool(w), nx=bool(x), pkey=int(rng.integers(0, 4)))
        va_list += [va, va + 0x1000, va + 0x2000]    # the third page is not mapped
    mmu.map(0x4000_0000_0000 - (4 << 20), 2 << 20, page_size=2 << 20, user=True)   # 2 MiB
    va_list.append(0x4000_0000_0000 - (4 << 20))
    mmu.map(0x2000_0000_0000, 1 << 30, pa=1 << 40, page_size=1 << 30, user=True)  # 1 GiB, unbacked
    va_list.append(0x2000_0000_0000 + (123 << 21))
    mmu.map(0x3000_0000_0000, 0x1000, pa=1 << 41, user=True)        # 4 KiB frame outside RAM
    va_list.append(0x3000_0000_0000)
    for k, (lvl, bits) in enumerate([(1, 1 << 50), (2, 1 << 47), (3, 1 << 46), (4, 1 << 7)]):
        va = 0x5000_0000_0000 + k * (1 << 39) + k * 0x1000         # reserved bits per level
        mmu.map(va, 0x1000, user=True)
        mmu.set_entry(va, lvl, set_bits=bits)
        va_list.append(va)
    va = 0x6000_0000_0000                                           # a PDE pointing outside RAM
    mmu.map(va, 0x1000, user=True)
    mmu.set_entry(va, 2, value=(1 << 40) | 0x7)
    va_list.append(va)
    va = 0x6800_0000_0000                                           # an upper level without U/W
    mmu.map(va, 0x1000, user=True)
    mmu.set_entry(va, 3, clear_bits=0x6)
    va_list.append(va)
    va_list += [0x0000_8000_0000_0000, 0xFFFF_8000_0000_0000, 0x7FFF_FFFF_F000]  # non-canonical etc.
    vas = np.array(va_list, dtype=np.uint64)
    addr = vas[rng.integers(0, vas.shape[0], n)] + rng.integers(0, 4096, n).astype(np.uint64)
    kind = rng.integers(0, 3, n)
    flags = rng.integers(0, 2, (4, n)).astype(np.uint8)
    flags[2] &= rng.random(n) < 0.2                                  # implicit: rarer
    pkru = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.int64)
    pkru[rng.random(n) < 0.5] = 0
    batch = make_accesses(addr, kind, user=flags[0], ac=flags[1], implicit=flags[2], stack=flags[3])
    w = mmu.walker()
    r = w.translate(batch, pkru=pkru)
    kern = (r.fault, r.gpa, r.error_code)
    nw = NumpyWalk(mmu._ram, mmu.ram_base, mmu.cr3() & mmu.role.root_mask(), w.format)
    got = nw.translate(addr, access_flags(kind, flags[0], flags[1], flags[2], flags[3]), pkru=pkru)
    counts = np.bincount(r.fault, minlength=8)
    what = (f"numpy walk == kernel, edge-case guest (none {counts[0]}, #PF {counts[1]}, #GP {counts[2]}, "
            f"#SS {counts[3]}, unbacked {counts[7]}; rsvd {int(((r.error_code & 8) != 0).sum())}, "
            f"PK {int(((r.error_code & 32) != 0).sum())})")
    return compare(what, got, kern)


# ---------------------------------------------------------------------------------------------
# cold and warm start
# ---------------------------------------------------------------------------------------------
STARTUP = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    import vecmmu
    t1 = time.perf_counter()
    mmu = vecmmu.Mmu.for_mode("4level", ram_size=1 << 24)
    mmu.map(0x400000, 0x10000, user=True)
    t2 = time.perf_counter()
    r = mmu.walker().translate(0x400000 + np.arange(10, dtype=np.uint64) * 0x1000 + 8, kind="read", user=True)
    assert (r.fault == 0).all()
    t3 = time.perf_counter()
    print(json.dumps(dict(imp=t1 - t0, build=t2 - t1, translate=t3 - t2)))
""")


FIRST_CALLS = textwrap.dedent("""
    import json, time
    import numpy as np
    import vecmmu
    from vecmmu.analysis.whatif import whatif
    from vecmmu.perf import TlbConfig, simulate, sweep
    out = {}
    def timed(name, fn):
        t0 = time.perf_counter()
        r = fn()
        out[name] = time.perf_counter() - t0
        return r
    mmu = vecmmu.Mmu.for_mode("4level", ram_size=1 << 24, smep=True)
    mmu.map(0x400000, 0x10000, user=True)
    w = mmu.walker()
    a = 0x400000 + np.arange(100, dtype=np.uint64) * 0x100
    timed("translate", lambda: w.translate(a, kind="read", user=True))
    timed("whatif", lambda: whatif(w, a, ["nosmep:smep=0"], kind="fetch"))
    r = timed("trace", lambda: w.translate(a, trace=True))
    timed("simulate", lambda: simulate(r))
    timed("sweep", lambda: sweep(r, [TlbConfig.skylake(), TlbConfig.skylake()]))
    g = vecmmu.NestedGuest(vecmmu.CpuRole.for_mode("4level", maxphyaddr=46),
                           vecmmu.EptRole(), tdp_page_size=4096, guest_ram=1 << 24)
    g.guest.map(0x400000, 0x10000, user=True)
    timed("nested", lambda: g.walker().translate(a, kind="read", user=True))
    print(json.dumps(out))
""")


def first_call_times(py):
    """Seconds of each first call in one child on an empty Numba cache, in this order:
    a 1-D translate(), whatif() (after it), a traced translate(), simulate(), sweep()
    (after simulate), and a 2-D translate() over EPT: most of each is compiling."""
    with tempfile.TemporaryDirectory(prefix="vecmmu-numba-cache-") as d:
        p = subprocess.run([py, "-c", FIRST_CALLS], env=dict(os.environ, NUMBA_CACHE_DIR=d),
                           cwd=str(REPO), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"first-call script failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def startup_times(py, warm_runs=3):
    with tempfile.TemporaryDirectory(prefix="vecmmu-numba-cache-") as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        out = []
        for _ in range(1 + warm_runs):
            t0 = time.perf_counter()
            p = subprocess.run([py, "-c", STARTUP], env=env, cwd=str(REPO), capture_output=True,
                               text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                raise RuntimeError(f"startup script failed:\n{p.stderr}")
            out.append((wall, json.loads(p.stdout.strip().splitlines()[-1])))
    t0 = time.perf_counter()
    subprocess.run([py, "-c", "import numpy, numba"], capture_output=True)
    bare = time.perf_counter() - t0
    return out[0], min(out[1:], key=lambda x: x[0]), bare


STARTUP_FAMILY = "startup"
STARTUP_CASE = "import+map+translate"
COLD = "cold: fresh NUMBA_CACHE_DIR"
WARM = "warm: same cache, best of 3"
BARE = "python -c 'import numpy, numba'"


def startup_rows(py=sys.executable, warm_runs=3):
    """Cold and warm start as duration rows (the child's own split in ``extra``), next to a
    bare ``import numpy, numba``."""
    (cw, cj), (ww, wj), bare = startup_times(py, warm_runs)
    return [Row(STARTUP_FAMILY, STARTUP_CASE, COLD, 1, cw, "s", (BARE,), extra=cj),
            Row(STARTUP_FAMILY, STARTUP_CASE, WARM, 1, ww, "s", (BARE,), extra=wj),
            Row(STARTUP_FAMILY, STARTUP_CASE, BARE, 1, bare, "s", short="import numpy, numba")]


def startup_targets(rows):
    out = []
    for name, label, limit in ((WARM, "warm start about a second (<= 1.5 s wall)", 1.5),
                               (COLD, "cold import + compile in seconds (<= 10 s wall)", 10.0)):
        r = next((r for r in rows if r.family == STARTUP_FAMILY and r.contender == name), None)
        if r is not None:
            out.append(Target(label, f"{r.seconds:.2f} s", r.seconds <= limit))
    return out


# ---------------------------------------------------------------------------------------------
# the measurements (benchmarks/run.py calls these too)
# ---------------------------------------------------------------------------------------------
FAMILY = "walk"
NAIVE = "naive Numba loop 1t, input order"
NAIVE_FULL = "naive loop of the same walk 1t, input order"
NAIVE_PAR = "naive Numba loop 2t*"
NUMPY = "numpy walk, same semantics"
REFW = "reference walker (tests/)"
SORTED = "translate() 1t, pre-sorted addr*"
NAIVE_SORTED = "naive Numba loop 1t, pre-sorted addr*"
NOPF = "translate() 1t, order=input, prefetch=False"
NOMEMO = "translate() 1t, order=input, memo=False"
FRESH = "translate() {k}t, order=input, fresh buffers"
SHORT = {NAIVE: "naive loop", NAIVE_FULL: "naive same-walk loop", NUMPY: "numpy walk",
         REFW: "reference walker", NOPF: "no prefetch", NOMEMO: "no memo",
         NAIVE_SORTED: "naive loop pre-sorted",
         **{FRESH.format(k=k): "fresh buffers" for k in (1, 2)}}


def translate_name(k, order):
    return f"translate() {k}t, order={order}"


def kernel_name(k):
    return f"cpu_translate kernel only, {k}t"


def bound_name(k):
    return f"memory bound: present-bit walk, {k}t*"


def fresh_buffers(fn):
    """``fn`` with result-buffer recycling off (``vecmmu.bufpool.POOL``): every column of
    its result is new memory, faulted in by the kernel, as before the pool existed."""
    def run():
        old = POOL.max_bytes
        POOL.max_bytes = 0
        POOL.clear()
        try:
            return fn()
        finally:
            POOL.max_bytes = old
    return run


def prepare():
    """Compile the table builder and start the threading layer outside any timing."""
    new_mmu(1 << 20).map(0x1000, 0x1000)
    naive_walk_par(np.zeros(4, np.int64), np.zeros(512, np.int64), 0, 0)


def measure_case(g: Guest, n, rng, *, threads=(1, 2), orders=("input", "grouped"),
                 kernel_threads=(1,), naive_threads=(1,), bound_threads=(), sorted_row=False,
                 numpy_n=2_000_000, ref_n=20_000, repeats=3):
    """Every contender on one guest: ``(rows, checks, info)``.

    ``n`` random accesses (:func:`make_workload`); ``translate()`` for every thread count
    and order; the kernel alone (:class:`KernelDirect`) for ``kernel_threads``; the
    numpy walk on the first ``numpy_n``; the naive loop (1 thread; also under ``prange``
    when 2 is in ``naive_threads``); the memory-bound walk (:func:`bound_walk`) for
    ``bound_threads``: best of ``repeats`` interleaved rounds
    (:func:`common.best_times`); the reference walker, once, on the first ``ref_n``. Checks
    (strings starting "ok" or "MISMATCH") compare the numpy walk, the naive loop and the
    reference walker with the kernel first, which also compiles everything."""
    case = g.case
    log(f"walk {g.name}: workload of {n:,} ...")
    batch, addr, af = make_workload(g, n, rng)
    w = g.walker
    rows, checks = [], []

    def add(contender, nn, t, vs):
        rows.append(Row(FAMILY, case, contender, nn, t, "translations", vs, SHORT.get(contender, "")))

    fk, gk, ek, r = kernel_columns(g, batch)
    info = dict(fault_rate=float((fk != 0).mean()))
    sl = slice(0, min(n, 200_000))
    nw = NumpyWalk(g.ram, g.mmu.ram_base, g.root, w.format, pkru=PKRU)
    got = nw.translate(addr[sl], af[sl])
    checks.append(compare(f"numpy walk == kernel, case {case}", got, (fk[sl], gk[sl], ek[sl])))
    ngpa, nfault = naive_walk(addr, g.ram64, g.mmu.ram_base, g.root)
    ok = fk == 0
    same = np.array_equal(ngpa[ok].view(np.uint64), gk[ok]) and not nfault[ok].any()
    checks.append(f"{'ok      ' if same else 'MISMATCH'} naive loop == kernel GPA on the "
                  f"{int(ok.sum()):,} successful accesses, case {case}")
    fargs = full_walk_args(g, addr, af)
    words, bytes_ = naive_full_walk(*fargs)
    cols = (r.gpa, r.error_code, r.entry_addr, r.entry_value, r.fault, r.fault_level, r.leaf_level,
            r.page_shift, r.acc, r.pkey, r.refs)
    mine = tuple(words) + tuple(bytes_)
    same = all(np.array_equal(np.asarray(c).view(x.dtype) if c.dtype.itemsize == 8 else c, x)
               for c, x in zip(cols, mine))
    checks.append(f"{'ok      ' if same else 'MISMATCH'} naive loop of the same walk == kernel "
                  f"(all 11 result columns of {n:,} accesses), case {case}")
    del words, bytes_, cols, mine
    for k in bound_threads:
        bgpa, bfault = bound_walk(addr, g.ram64, g.mmu.ram_base, g.root, k)
        same = np.array_equal(bgpa, ngpa) and np.array_equal(bfault, nfault)
        checks.append(f"{'ok      ' if same else 'MISMATCH'} memory-bound walk ({k}t) == naive loop "
                      f"(gpa and fault of all {n:,} accesses), case {case}")
    del r, ngpa, nfault

    # every contender, timed in interleaved rounds (common.best_times)
    timed = {}                                   # name -> (callable, n, baselines)
    for order in orders:
        for k in threads:
            timed[translate_name(k, order)] = (
                lambda k=k, order=order: w.translate(batch, threads=k, order=order), n,
                (NAIVE, NAIVE_FULL, NUMPY, NOPF, NOMEMO)
                + ((FRESH.format(k=k),) if order == "input" else ()))
    if "input" in orders:            # the same walk without the table prefetch, or the memo
        timed[NOPF] = (lambda: w.translate(batch, threads=1, prefetch=False), n, (NAIVE, NUMPY))
        timed[NOMEMO] = (lambda: w.translate(batch, threads=1, memo=False), n, (NAIVE, NUMPY))
        for k in threads:        # result memory allocated fresh each call (recycling off)
            timed[FRESH.format(k=k)] = (fresh_buffers(lambda k=k: w.translate(batch, threads=k)),
                                        n, (NAIVE, NUMPY))
    if sorted_row:
        sbatch = batch[np.argsort(batch["addr"], kind="stable")]
        timed[SORTED] = (lambda: w.translate(sbatch, threads=1), n, (NAIVE, NUMPY, NAIVE_SORTED))
        # what order alone gives a walk that does nothing else (the ceiling of any grouping)
        saddr = np.ascontiguousarray(sbatch["addr"].view(np.int64))
        timed[NAIVE_SORTED] = (lambda: naive_walk(saddr, g.ram64, g.mmu.ram_base, g.root), n,
                               (NAIVE,))
    kd = KernelDirect(w, batch) if kernel_threads else None
    for k in kernel_threads:
        timed[kernel_name(k)] = (with_threads(k, kd), n, (NAIVE, NUMPY))
    timed[NAIVE] = (lambda: naive_walk(addr, g.ram64, g.mmu.ram_base, g.root), n, (NUMPY,))
    timed[NAIVE_FULL] = (lambda: naive_full_walk(*fargs), n, (NAIVE, NUMPY))
    if 2 in naive_threads and numba.config.NUMBA_NUM_THREADS > 1:
        timed[NAIVE_PAR] = (with_threads(2, lambda: naive_walk_par(addr, g.ram64, g.mmu.ram_base,
                                                                   g.root)), n, (NAIVE, NUMPY))
    for k in bound_threads:
        timed[bound_name(k)] = (with_threads(k, lambda k=k: bound_walk(
            addr, g.ram64, g.mmu.ram_base, g.root, k)), n, (NAIVE, NUMPY))
    np_n = min(numpy_n, n)
    a_np, af_np = addr[:np_n], af[:np_n]
    timed[NUMPY] = (lambda: nw.translate(a_np, af_np), np_n, (REFW,))
    log(f"  {len(timed)} contenders: a warm-up call each, then {repeats} interleaved rounds")
    best = best_times({name: v[0] for name, v in timed.items()}, repeats)
    for name, (_fn, nn, vs) in timed.items():
        add(name, nn, best[name], vs)
    del timed, kd
    log("  reference walker")
    ref_n = min(ref_n, n)
    t0 = time.perf_counter()
    ref_out = run_reference(g, batch[:ref_n], PKRU)
    add(REFW, ref_n, time.perf_counter() - t0, ())
    checks.append(compare(f"reference == kernel, case {case}", ref_out,
                          (fk[:ref_n], gk[:ref_n], ek[:ref_n])))
    return rows, checks, info


TRACE = "(c) wordfreq"
TRACE_FILE = REPO / "data" / "wordfreq.lackey.xz"


def measure_trace(threads=(1, 2), repeats=3):
    """A real trace: data/wordfreq.lackey.xz through the address space of its
    /proc/self/maps (data/wordfreq.maps): ``translate()`` for every thread count, with and
    without the walk memo, next to the naive loop on the same tables. ``(rows, checks,
    note)``."""
    from vecmmu.access import concat_accesses
    from vecmmu.io import open_trace
    from vecmmu.io.procmaps import address_space_from_maps
    sp = address_space_from_maps(str(TRACE_FILE.with_name("wordfreq.maps")))
    batch = concat_accesses(list(open_trace(str(TRACE_FILE))))
    n = batch.shape[0]
    g = Guest(TRACE, f"{TRACE}: {n:,} accesses of a real lackey trace", sp.mmu, None, None, 0.0)
    w = sp.walker()
    addr = np.ascontiguousarray(batch["addr"].view(np.int64))
    r = w.translate(batch)
    first = r.part == 0
    ok = r.fault[first] == 0
    ngpa, nfault = naive_walk(addr, g.ram64, g.mmu.ram_base, g.root)
    same = np.array_equal(ngpa[ok].view(np.uint64), r.gpa[first][ok]) and not nfault[ok].any()
    checks = [f"{'ok      ' if same else 'MISMATCH'} naive loop == kernel GPA on the "
              f"{int(ok.sum()):,} successful accesses, case {TRACE}"]
    timed = {translate_name(k, "input"): (lambda k=k: w.translate(batch, threads=k), (NAIVE, NOMEMO))
             for k in threads}
    timed[NOMEMO] = (lambda: w.translate(batch, threads=1, memo=False), (NAIVE,))
    timed[NAIVE] = (lambda: naive_walk(addr, g.ram64, g.mmu.ram_base, g.root), ())
    log(f"walk {TRACE}: {len(timed)} contenders, {repeats} rounds")
    best = best_times({k: v[0] for k, v in timed.items()}, repeats)
    rows = [Row(FAMILY, TRACE, k, n if k == NAIVE else len(r), best[k], "translations", v[1],
                SHORT.get(k, "")) for k, v in timed.items()]   # translate(): one per page touched
    pages = np.unique(batch["addr"] >> np.uint64(12)).shape[0]
    note = (f"walk {TRACE}: data/wordfreq.lackey.xz ({n:,} accesses, {pages:,} distinct pages, "
            f"some crossing a page: {len(r):,} translations) through data/wordfreq.maps")
    return rows, checks, note


def walk_targets(rows, default_threads=None):
    """The issue's walk targets, as ratios of ``rows`` (rows that were not measured are
    left out)."""
    k = default_threads or numba.config.NUMBA_NUM_THREADS
    out = []
    # issue 6's "large-table case >= 2x a naive sequential-order loop", against each naive loop:
    # the same walk (every rule) and the present-bit walk (no rights, no reserved bits)
    for base, what in ((NAIVE_FULL, "the naive loop of the same walk"),
                       (NAIVE, "the present-bit naive loop")):
        cands = [(ratio(rows, FAMILY, LARGE, translate_name(k, o), base), o)
                 for o in ("input", "grouped")]
        cands = [c for c in cands if c[0] == c[0]]
        if cands:
            best, order = max(cands)
            t = target_ratio(f"{LARGE}: translate() best order ({order}), default threads ({k}) "
                             f">= 2x {what} (input order, 1 thread)", best, 2)
            if base == NAIVE:            # what the hardware leaves: the reads alone
                bound = ratio(rows, FAMILY, LARGE, bound_name(k), NAIVE)
                if bound == bound:
                    t.value += f" (the memory-bound walk with {k} threads: {bound:.3g}x)"
            out.append(t)
    for name, what in ((translate_name(1, "input"), "translate() 1 thread"),
                       (kernel_name(1), "cpu_translate kernel only")):
        if any(r.family == FAMILY and r.case == SMALL and r.contender == name for r in rows):
            out.append(target_ratio(f"{SMALL}: {what} >= 5x numpy walk",
                                    ratio(rows, FAMILY, SMALL, name, NUMPY), 5))
            out.append(target_ratio(f"{SMALL}: {what} >= 0.75x naive loop",
                                    ratio(rows, FAMILY, SMALL, name, NAIVE), 0.75))
    return out


# ---------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="addresses per case (default 10 M; quick 1 M)")
    ap.add_argument("--pages", type=int, default=None, help="pages in guest (a) (default 2**20; quick 100 k)")
    ap.add_argument("--run-pages", type=int, default=16, help="contiguous pages per mapped run in (a)")
    ap.add_argument("--numpy-n", type=int, default=2_000_000, help="addresses for the numpy walk")
    ap.add_argument("--ref-n", type=int, default=20_000, help="addresses for the reference walker")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--quick", action="store_true", help="1 M addresses, 100 k pages (under a minute)")
    ap.add_argument("--no-startup", action="store_true", help="skip the cold/warm start subprocesses")
    args = ap.parse_args(argv)
    n = args.n or (1_000_000 if args.quick else 10_000_000)
    npages = args.pages or (100_000 if args.quick else 1 << 20)
    ref_n = min(args.ref_n, 5_000) if args.quick else args.ref_n
    np_n = min(args.numpy_n, n)
    rng = np.random.default_rng(args.seed)
    nthreads = numba.config.NUMBA_NUM_THREADS
    threads = sorted({1, min(2, nthreads)})

    prepare()
    print("vecmmu walk benchmark")
    print(f"  machine: {machine_line()}; threading layer {numba.threading_layer()}")
    print(f"  this machine is shared ({os.cpu_count()} cores, other jobs may run): absolute figures "
          f"are noise, read the ratios (all from this one run)")
    cpu0 = cpu_snapshot()
    print(f"  {n:,} addresses per case; best of {args.repeats} interleaved rounds after a "
          f"warm-up; numpy walk on {np_n:,}, reference walker on {ref_n:,} (rates are per "
          f"second either way)")

    log("building guests ...")
    large = build_large(npages, args.run_pages, rng)
    small = build_small(rng)
    print(f"  build {large.page_va.shape[0]:,} pages ({args.run_pages}-page runs at random "
          f"places): {large.build_s:.2f} s  ({large.mmu.allocated / 2**20:,.0f} MiB allocated, "
          f"tables {(large.mmu.allocated - large.page_va.shape[0] * 4096) / 2**20:,.0f} MiB)")

    rows, checks, info = [], [], {}
    for g in (large, small):
        r, c, i = measure_case(g, n, rng, threads=threads, orders=("input", "grouped"),
                               kernel_threads=threads, naive_threads=threads, bound_threads=threads,
                               sorted_row=g is large, numpy_n=np_n, ref_n=ref_n,
                               repeats=args.repeats)
        rows += r
        checks += c
        info[g.case] = i

    log("edge-case equivalence check ...")
    checks.append(edge_case_check(rng))

    startup = []
    if not args.no_startup:
        log("cold and warm start subprocesses ...")
        startup = startup_rows(sys.executable)

    # -- the table ------------------------------------------------------------------------
    print()
    hdr = f"{'contender':<36} {'case':<10} {'addresses':>11} {'M transl/s':>11} {'x naive':>8} {'x numpy':>8}"
    print(hdr)
    print("-" * len(hdr))
    for case in (LARGE, SMALL):
        for r in rows:
            if r.case == case:
                print(f"{r.contender:<36} {case:<10} {r.n:>11,} {r.rate / 1e6:>11.3f} "
                      f"{ratio(rows, FAMILY, case, r.contender, NAIVE):>8.3f} "
                      f"{ratio(rows, FAMILY, case, r.contender, NUMPY):>8.2f}")
        print()
    print(f"{large.name}; {small.name}")
    print(f"failing accesses (by design, ~1 % noise): {LARGE} {info[LARGE]['fault_rate']:.2%}, "
          f"{SMALL} {info[SMALL]['fault_rate']:.2%}")
    print("order=grouped: each thread's share of a 1 M chunk grouped by 2 MiB region inside the call (counted), "
          "results in input order")
    print("* informational: pre-sorted = the same batch sorted by address (sort time not counted); "
          "naive 2t = prange version of the naive loop")
    others = other_cpu_use(cpu0)
    if others is not None:
        print(f"other processes used {others:.2f} of {os.cpu_count()} cores on average during this run"
              + (": the 2-thread rows mean little" if others > 0.3 else ""))

    if startup:
        print()
        for r in startup[:2]:
            part = r.extra
            print(f"{r.contender + ':':<36}{r.seconds:6.2f} s wall  (import {part['imp']:.2f} s, "
                  f"first map {part['build']:.2f} s, first translate {part['translate']:.2f} s)")
        print(f"  for scale: {BARE} takes {startup[2].seconds:.2f} s here")

    print()
    print("correctness:")
    for c in checks:
        print("  " + c)

    print()
    print("targets (ratios from this run; a MISS does not fail anything):")
    for t in walk_targets(rows) + startup_targets(startup):
        print("  " + t.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
