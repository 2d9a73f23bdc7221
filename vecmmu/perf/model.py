"""Trace-driven translation-cache models over traced walk results.

:func:`simulate` replays a translated trace (``PageWalk.translate(..., trace=True)``)
through the caches of a :class:`~vecmmu.perf.TlbConfig`, with an event stream of context
switches and invalidations, and reports per access which structure served it and how many
paging-structure entries came from memory. :func:`sweep` does the same for many
configurations in one call (in parallel) and returns one row of rates per configuration.

What a walk costs: the entries the walker read (the trace), minus the levels a
paging-structure-cache hit skips, minus the entries the PTE cache holds; in a 2-D walk
every remaining guest entry first needs its GPA translated (nested TLB, else a TDP walk that
a TDP paging-structure cache may shorten), and so does the final GPA. With no caches the
count equals the walker's ``refs``: (n+1)(m+1)-1 for an n-level guest over an m-level TDP.

Accesses that fault are not cached (a TLB holds translations, and the model fills nothing
for a faulting walk); they are charged the walker's ``refs``. The model replays the
entries the walk saw: it does not model stale entries after the tables change.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..bits import Fault
from ..bufpool import POOL
from ..kernels import tlb as KT
from ..kernels._jit import parts_for, run_parts
from .config import TlbConfig
from .events import make_events

HIT_CATEGORIES = pd.CategoricalDtype(["L1", "L2", "walk", "fault"])
_G_BIT = np.int64(1 << 8)


def uncached_refs(guest_levels: int, tdp_levels: int = 0) -> int:
    """Paging-structure references of an uncached walk: (n+1)(m+1)-1 (n for a 1-D walk)."""
    return (guest_levels + 1) * (tdp_levels + 1) - 1


class _Inputs:
    """The columns of a traced Translation, as the kernel takes them."""

    def __init__(self, res, index_bits):
        if res.trace_addr is None:
            raise ValueError("the model needs the entries each walk read: translate(..., trace=True)")
        cols = res.columns()
        n = len(res)
        self.n = n
        self.nested = res.tdp_trace is not None
        if index_bits is None:
            index_bits = 10 if res.mode_name.startswith("32-bit") else 9
        self.index_bits = int(index_bits)
        self.va = np.ascontiguousarray(cols["addr"]).view(np.int64)
        self.ok = (cols["fault"] == Fault.NONE).astype(np.uint8)
        self.leaf = np.ascontiguousarray(cols["leaf_level"], dtype=np.uint8)
        if self.nested:
            eff = res.effective_page_size
            self.shift = np.where(eff > 0, np.log2(np.maximum(eff, 1)), 0).astype(np.uint8)
            self.gpa = np.ascontiguousarray(cols["gpa"]).view(np.int64)
            self.ttr = np.ascontiguousarray(res.tdp_trace[0], dtype=np.int64)
        else:
            self.shift = np.ascontiguousarray(cols["page_shift"], dtype=np.uint8)
            self.gpa = np.zeros(1, np.int64)
            self.ttr = np.full((1, 6, 5), -1, np.int64)
        self.tra = np.ascontiguousarray(res.trace_addr, dtype=np.int64)
        tv = np.asarray(res.trace_value, dtype=np.int64)
        lvl = np.clip(self.leaf.astype(np.int64) - 1, 0, 4)
        self.glob = ((tv[np.arange(n), lvl] & _G_BIT) != 0).astype(np.uint8) & self.ok
        self.refs = np.ascontiguousarray(cols["refs"], dtype=np.uint8)
        self.access = cols["access"]
        self.part = cols["part"]
        self.addr = cols["addr"]

    def events(self, events):
        ev = make_events(events)
        rows = np.searchsorted(self.access, ev["pos"], side="left").astype(np.int64)
        return (rows, ev["kind"].astype(np.int64), ev["operand"].view(np.int64).copy(),
                ev["tag"].astype(np.int64))

    def args(self):
        return (self.va, self.ok, self.leaf, self.shift, self.glob, self.refs, self.tra,
                self.gpa, self.ttr, self.nested)


def _rates(c: np.ndarray, nested: bool) -> dict:
    n = max(int(c[KT.C_N]), 1)
    ok = max(int(c[KT.C_N] - c[KT.C_FAULT]), 1)
    walks = int(c[KT.C_WALK])
    d = {
        "accesses": int(c[KT.C_N]),
        "faults": int(c[KT.C_FAULT]),
        "l1_hits": int(c[KT.C_L1]), "l2_hits": int(c[KT.C_L2]), "walks": walks,
        "l1_hit_rate": c[KT.C_L1] / ok,
        "l2_hit_rate": c[KT.C_L2] / max(ok - int(c[KT.C_L1]), 1),
        "tlb_miss_rate": walks / ok,
        "refs": int(c[KT.C_REFS]),
        "refs_per_access": c[KT.C_REFS] / n,
        "refs_per_walk": c[KT.C_WALK_REFS] / max(walks, 1),
        "pde_hits": int(c[KT.C_PSC2]), "pdpte_hits": int(c[KT.C_PSC3]),
        "pml4e_hits": int(c[KT.C_PSC4]), "pml5e_hits": int(c[KT.C_PSC5]),
        "psc_hit_rate": (c[KT.C_PSC2] + c[KT.C_PSC3] + c[KT.C_PSC4] + c[KT.C_PSC5]) / max(walks, 1),
        "pte_cache_hits": int(c[KT.C_PTE_HITS]),
        "events": int(c[KT.C_EVENTS]),
    }
    if nested:
        d["ntlb_lookups"] = int(c[KT.C_NTLB_LOOKUPS])
        d["ntlb_hit_rate"] = c[KT.C_NTLB_HITS] / max(int(c[KT.C_NTLB_LOOKUPS]), 1)
    return d


def _unique(names):
    seen, out = {}, []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


class TlbRun:
    """Per-access outcome of one simulation (:func:`simulate`).

    ``hit`` (0 L1, 1 L2, 2 walk, 3 fault), ``structure`` (index into ``labels`` of the TLB
    that hit or the paging-structure cache the walk started below; -1: a full walk or a
    fault), ``psc_level`` (level of that paging-structure-cache hit; 0 none), ``refs``
    (entries read from memory), ``entries`` (entries the walk needed after the skip),
    ``pte_hits``, ``ntlb_hits``, ``ntlb_lookups``; ``counters`` the totals.
    """

    def __init__(self, inp: _Inputs, config: TlbConfig, labels, out, counters):
        self.config = config
        self.labels = labels
        self._inp = inp
        self.out = out
        self.counters = counters
        for name, j in (("hit", KT.O_HIT), ("structure", KT.O_SID), ("psc_level", KT.O_PSC),
                        ("refs", KT.O_REFS), ("entries", KT.O_ENTRIES), ("pte_hits", KT.O_PTE_HITS),
                        ("ntlb_hits", KT.O_NTLB_HITS), ("ntlb_lookups", KT.O_NTLB_LOOKUPS)):
            setattr(self, name, out[:, j])

    def __len__(self):
        return self.out.shape[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per translation: access, part, addr, hit (L1/L2/walk/fault), served_by
        (the structure's label; "memory" for a full walk), psc_level, refs, entries,
        pte_hits (and ntlb_hits, ntlb_lookups for a 2-D walk)."""
        inp = self._inp
        cats = list(self.labels) + ["memory", "fault"]
        sid = self.structure.astype(np.int64)
        code = np.where(sid >= 0, sid, np.where(self.hit == KT.HIT_FAULT, len(cats) - 1, len(cats) - 2))
        df = pd.DataFrame({
            "access": inp.access, "part": inp.part,
            "addr": pd.arrays.IntegerArray(np.ascontiguousarray(inp.addr).view(np.uint64),
                                           np.zeros(len(self), bool)),
            "hit": pd.Categorical.from_codes(self.hit.astype(np.int8), dtype=HIT_CATEGORIES),
            "served_by": pd.Categorical.from_codes(code, categories=_unique(cats)),
            "psc_level": self.psc_level.astype(np.uint8),
            "refs": self.refs.astype(np.uint8),
            "entries": self.entries.astype(np.uint8),
            "pte_hits": self.pte_hits.astype(np.uint8),
        })
        if inp.nested:
            df["ntlb_hits"] = self.ntlb_hits.astype(np.uint8)
            df["ntlb_lookups"] = self.ntlb_lookups.astype(np.uint8)
        return df

    def summary(self) -> pd.DataFrame:
        """One row: hit rates and references per access and per walk."""
        return pd.DataFrame([{"config": self.config.name or str(self.config),
                              **_rates(self.counters, self._inp.nested)}])

    def __repr__(self) -> str:
        r = _rates(self.counters, self._inp.nested)
        return (f"TlbRun({r['accesses']:,} translations; L1 {r['l1_hit_rate']:.2%}, walks "
                f"{r['tlb_miss_rate']:.2%}, {r['refs_per_access']:.3f} refs/access)")


def simulate(res, config: TlbConfig | None = None, events=None, *, index_bits: int | None = None) -> TlbRun:
    """Replay a traced :class:`~vecmmu.Translation` through the caches of ``config``
    (default :meth:`TlbConfig.skylake`), applying ``events`` (:func:`make_events`) in order.

    >>> from vecmmu import Mmu
    >>> from vecmmu.perf import Cache, TlbConfig, simulate
    >>> mmu = Mmu.for_mode("4level"); _ = mmu.map(0x400000, 0x4000, user=True)
    >>> r = mmu.walker().translate([0x400000, 0x401000, 0x400008], user=True, trace=True)
    >>> run = simulate(r, TlbConfig(l1=Cache(64, 4), pde=Cache(32)))
    >>> run.to_frame()[["hit", "served_by", "refs"]].values.tolist()
    [['walk', 'memory', 4], ['walk', 'PDE cache', 1], ['L1', 'L1 4K', 0]]
    """
    config = TlbConfig.skylake() if config is None else config
    inp = _Inputs(res, index_bits)
    plan, geom, n_ent, labels = config.compile(inp.index_bits)
    st = np.empty((n_ent, 4), np.int64)
    out = POOL.empty((inp.n, KT.O_COLS), np.int16)      # every row is written
    counters = np.zeros(KT.C_LEN, np.int64)
    KT.run_model(plan, geom, st, *inp.args(), *inp.events(events), out, counters)
    return TlbRun(inp, config, labels, out, counters)


def sweep(res, configs, events=None, *, index_bits: int | None = None, labels=None,
          threads: int | None = None) -> pd.DataFrame:
    """Simulate every configuration in ``configs`` (a list of :class:`TlbConfig`, or a dict
    label → config) over the same trace and events, in parallel; one row per configuration
    with its hit rates and references per access / per walk (see :meth:`TlbRun.summary`).

    Sizes sweep easily with :meth:`TlbConfig.scaled` or :meth:`TlbConfig.replace`, e.g.
    ``sweep(r, {n: base.replace(l2=Cache(n, 8, ("4K", "2M"))) for n in (64, 256, 1024)})``.
    """
    if isinstance(configs, dict):
        labels, configs = list(configs.keys()), list(configs.values())
    configs = list(configs)
    if not configs:
        raise ValueError("sweep needs at least one configuration")
    if labels is None:
        labels = [c.name or str(c) for c in configs]
    inp = _Inputs(res, index_bits)
    compiled = [c.compile(inp.index_bits) for c in configs]
    k = len(configs)
    s_max = max(g.shape[0] for _, g, _, _ in compiled)
    e_max = max(n for _, _, n, _ in compiled)
    plans = np.stack([p for p, _, _, _ in compiled])
    geoms = np.zeros((k, s_max, KT.G_COLS), np.int64)
    for j, (_, g, _, _) in enumerate(compiled):
        geoms[j, :g.shape[0]] = g
    sts = np.empty((k, e_max, 4), np.int64)
    counters = np.zeros((k, KT.C_LEN), np.int64)
    from ..walk import _num_threads
    with _num_threads(threads):
        parts = parts_for(k, 1)
        run_parts(KT.sweep_model, parts, parts, plans, geoms, sts, *inp.args(),
                  *inp.events(events), counters)
    rows = [{"config": lab, **_rates(counters[j], inp.nested)} for j, lab in enumerate(labels)]
    return pd.DataFrame(rows)
