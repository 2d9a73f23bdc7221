"""Fault statistics of translated traces.

:class:`TraceStats` accumulates counts over the chunks of a trace (so a trace larger than
memory gets one summary); :func:`fault_summary`, :func:`error_code_table` and
:func:`region_summary` summarise one :class:`~vecmmu.Translation`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..bits import FAULT_NAMES, Fault
from ..result import FAULT_CATEGORIES, KIND_CATEGORIES, PRIV_CATEGORIES

EC_BITS = ((1, "P"), (2, "W"), (4, "U"), (8, "RSVD"), (16, "I/D"), (32, "PK"))


def error_code_words(code: int) -> str:
    """'P|W|U' style names of a #PF error code's bits."""
    return "|".join(w for b, w in EC_BITS if code & b) or "-"


class TraceStats:
    """Counts over translated chunks: by fault class × kind × privilege, #PF error codes,
    page sizes, faulting pages, and (when ``regions`` are given: an array of region
    numbers per translation) by region."""

    def __init__(self):
        self.by_class = np.zeros((256, 3, 2), dtype=np.int64)
        self.codes: dict[int, int] = {}
        self.shifts = np.zeros(64, dtype=np.int64)
        self.refs = 0
        self.n = 0
        self.accesses = 0
        self.fault_pages: dict[int, int] = {}
        self.region_counts: dict[tuple[int, int], int] = {}
        self.pages = set()

    def add(self, res, regions: np.ndarray | None = None, *, n_accesses: int | None = None) -> None:
        f = res.fault.astype(np.int64)
        np.add.at(self.by_class, (f, res.kind.astype(np.int64), res.user.astype(np.int64)), 1)
        pf = res.fault == Fault.PF
        if pf.any():
            c, k = np.unique(res.error_code[pf], return_counts=True)
            for code, cnt in zip(c, k):
                self.codes[int(code)] = self.codes.get(int(code), 0) + int(cnt)
        bad = res.fault != Fault.NONE
        if bad.any():
            pg, k = np.unique(res.addr[bad] >> np.uint64(12), return_counts=True)
            for p, cnt in zip(pg, k):
                self.fault_pages[int(p)] = self.fault_pages.get(int(p), 0) + int(cnt)
        self.shifts += np.bincount(res.page_shift, minlength=64)[:64]
        self.refs += int(res.refs.sum())
        self.n += len(res)
        self.accesses += int(n_accesses if n_accesses is not None else
                             (res.part == 0).sum())
        if regions is not None:
            key = regions.astype(np.int64) * 256 + f
            u, k = np.unique(key, return_counts=True)
            for kk, cnt in zip(u, k):
                t = (int(kk) // 256, int(kk) % 256)
                self.region_counts[t] = self.region_counts.get(t, 0) + int(cnt)
        for p in np.unique(res.addr >> np.uint64(12))[:1 << 20]:
            if len(self.pages) < 1 << 22:
                self.pages.add(int(p))

    def summary(self) -> pd.DataFrame:
        """Rows (fault, kind, privilege) with count and share of translations."""
        rows = []
        for fv, kind, user in zip(*np.nonzero(self.by_class)):
            rows.append((FAULT_NAMES.get(int(fv), str(fv)), int(kind), int(user),
                         int(self.by_class[fv, kind, user])))
        df = pd.DataFrame(rows, columns=["fault", "kind", "privilege", "count"])
        df["fault"] = pd.Categorical(df["fault"], dtype=FAULT_CATEGORIES)
        df["kind"] = pd.Categorical.from_codes(df["kind"].to_numpy(np.int8), dtype=KIND_CATEGORIES)
        df["privilege"] = pd.Categorical.from_codes(df["privilege"].to_numpy(np.int8), dtype=PRIV_CATEGORIES)
        df["share"] = df["count"] / max(self.n, 1)
        return df.sort_values(["fault", "kind", "privilege"], ignore_index=True)

    def error_codes(self) -> pd.DataFrame:
        df = pd.DataFrame(sorted(self.codes.items()), columns=["error_code", "count"])
        df["meaning"] = [error_code_words(c) for c in df["error_code"]]
        return df

    def page_sizes(self) -> pd.Series:
        names = {12: "4K", 21: "2M", 22: "4M", 30: "1G", 0: "none"}
        return pd.Series({names.get(s, str(s)): int(c) for s, c in enumerate(self.shifts) if c},
                         name="translations")

    def top_fault_pages(self, k: int = 10) -> pd.DataFrame:
        items = sorted(self.fault_pages.items(), key=lambda t: -t[1])[:k]
        return pd.DataFrame({"page": [f"{p << 12:#x}" for p, _ in items],
                             "faults": [c for _, c in items]})

    def by_region(self, names) -> pd.DataFrame:
        rows = [(names[r] if 0 <= r < len(names) else "(no region)", FAULT_NAMES.get(f, str(f)), c)
                for (r, f), c in self.region_counts.items()]
        df = pd.DataFrame(rows, columns=["region", "fault", "count"])
        return (df.pivot_table(index="region", columns="fault", values="count", aggfunc="sum",
                               fill_value=0).sort_values(by=list(df["fault"].unique())[:1],
                                                         ascending=False))

    def text(self) -> str:
        s = self.summary()
        s["share"] = s["share"].map(lambda x: f"{x:7.2%}")
        out = [f"{self.accesses:,} accesses, {self.n:,} translations, "
               f"{len(self.pages):,} distinct pages, "
               f"{self.refs / max(self.n, 1):.2f} paging-structure reads per walk", "",
               s.to_string(index=False)]
        if self.codes:
            e = self.error_codes()
            e["error_code"] = e["error_code"].map(lambda c: f"{c:#04x}")
            out += ["", "#PF error codes:", e.to_string(index=False)]
        if self.fault_pages:
            out += ["", "most-faulting pages:", self.top_fault_pages(5).to_string(index=False)]
        return "\n".join(out)


def fault_summary(res) -> pd.DataFrame:
    """Counts and shares by fault class, kind and privilege of one result."""
    st = TraceStats()
    st.add(res)
    return st.summary()


def error_code_table(res) -> pd.DataFrame:
    st = TraceStats()
    st.add(res)
    return st.error_codes()


def region_summary(res, space) -> pd.DataFrame:
    """Translations per region (VMA) of an :class:`~vecmmu.io.procmaps.AddressSpace` and
    fault class (a region × fault table; ``(none)`` for addresses outside every region)."""
    reg = space.region_of(res.addr, res.asid)
    names = np.array([f"{int(s):#x} {p or ''}".strip()
                      for s, p in zip(space.vmas["start"], space.vmas["path"])] + ["(none)"],
                     dtype=object)
    df = pd.DataFrame({"region": names[reg],
                       "fault": pd.Categorical.from_codes(_fault_codes(res.fault),
                                                          dtype=FAULT_CATEGORIES)})
    return df.groupby(["region", "fault"], observed=True).size().unstack(fill_value=0)


def _fault_codes(fault):
    lut = np.full(256, -1, dtype=np.int8)
    for j, f in enumerate(Fault):
        lut[f.value] = j
    return lut[fault]
