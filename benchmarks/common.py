"""What every benchmark script shares: the measured row, the timer, targets, machine notes.

A :class:`Row` is one contender measured on one case: ``n`` items (translations, accesses,
records, ...) in ``seconds`` (the best of a few timed calls), and the contenders of the same
family and case it is compared with (``vs``, measured in the same run). ``benchmarks/run.py``
gathers the rows of every family into one table; each ``bench_*.py`` also prints its own.
"""
from __future__ import annotations

import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO / "tests"), str(REPO), str(HERE)):      # reference walkers, vecmmu, siblings
    if _p not in sys.path:
        sys.path.insert(0, _p)


def log(*a):
    """Progress: to stderr, so stdout holds the report only."""
    print(*a, file=sys.stderr, flush=True)


@dataclass
class Row:
    """One contender on one case.

    ``unit`` names what ``n`` counts ("translations", "accesses", "records", ...); a row with
    ``unit == "s"`` is a duration (lower is better) and ``n`` is ignored. ``vs`` lists the
    contenders (same family and case) this row is compared with; ``short`` is this row's
    name where another row is compared with it (default: ``contender``).
    """
    family: str
    case: str
    contender: str
    n: int
    seconds: float
    unit: str
    vs: tuple = ()
    short: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")

    @property
    def label(self) -> str:
        return self.short or self.contender

    @property
    def is_time(self) -> bool:
        return self.unit == "s"


def find(rows, family, case, contender):
    for r in rows:
        if r.family == family and r.case == case and r.contender == contender:
            return r
    return None


def ratio(rows, family, case, contender, baseline) -> float:
    """rate(contender) / rate(baseline) (for durations: baseline time / contender time, so
    above 1 is better either way); NaN if either row is missing."""
    a, b = find(rows, family, case, contender), find(rows, family, case, baseline)
    if a is None or b is None:
        return float("nan")
    if a.is_time:
        return b.seconds / a.seconds
    return a.rate / b.rate


def best_time(fn, repeats=3, warmup=True):
    """Best wall time of ``repeats`` calls of ``fn``, after one untimed warm-up call
    (compilation, first-touch page faults) unless ``warmup`` is False."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def best_times(fns: dict, repeats=3, warmup=True) -> dict:
    """Best wall time of each of ``fns`` (name -> callable), timed in ``repeats`` rounds
    that call every function once in turn (after one warm-up call each), so a burst of
    load from other jobs on a shared machine hits every contender alike rather than all
    the repeats of one. Each round calls them in another order (a seeded shuffle), so
    none always runs right after the same one: what a contender leaves behind (freed
    memory that the kernel must compact into huge pages again, evicted caches) would
    otherwise always land on the same neighbour. Measured: with a fixed order, the
    contender after the numpy walk ran at 0.6x its speed in any other position."""
    if warmup:
        for fn in fns.values():
            fn()
    best = dict.fromkeys(fns, float("inf"))
    names = list(fns)
    rng = random.Random(len(names))
    for r in range(max(1, repeats)):
        order = names if r == 0 else rng.sample(names, len(names))
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def with_threads(k, fn):
    """``fn`` run with numba's thread count set to ``k`` (restored afterwards)."""
    import numba

    def run():
        old = numba.get_num_threads()
        numba.set_num_threads(k)
        try:
            return fn()
        finally:
            numba.set_num_threads(old)
    return run


@dataclass
class Target:
    label: str
    value: str
    ok: bool

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'MISS'}  {self.label}: {self.value}"


def target_ratio(label, value, threshold, unit="x") -> Target:
    """A ratio target (PASS when value >= threshold; a missing measurement is a MISS)."""
    ok = value == value and value >= threshold
    return Target(label, "not measured" if value != value else f"{value:.3g}{unit}", ok)


def machine_line() -> str:
    import numba
    import numpy as np

    import vecmmu
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, numba threads "
            f"{numba.config.NUMBA_NUM_THREADS}; python {platform.python_version()}, numpy "
            f"{np.__version__}, numba {numba.__version__}, vecmmu {vecmmu.__version__} "
            f"(from {Path(vecmmu.__file__).parent})")


def cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its
    children, wall time), to tell how much of the machine other jobs took (Linux)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return None
    t = os.times()
    busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    return busy, t.user + t.system + t.children_user + t.children_system, time.perf_counter()


def other_cpu_use(start):
    """Cores used on average by other processes since ``start`` (a :func:`cpu_snapshot`)."""
    end = cpu_snapshot()
    if start is None or end is None:
        return None
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])) / (end[2] - start[2])


def fmt_rate(x: float) -> str:
    """Three significant digits, no exponent for the magnitudes seen here."""
    if x != x:
        return "nan"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def fmt_ratio(x: float) -> str:
    if x != x:
        return "nan"
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"
