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


# --- tidy fault statistics (categoricals throughout) ------------------------------------------

REGION_SHIFTS = {"page": 12, "4K": 12, "2M": 21, "1G": 30}
HALF_CATEGORIES = pd.CategoricalDtype(["user", "kernel"])
LEVEL_CATEGORIES = pd.CategoricalDtype([1, 2, 3, 4, 5], ordered=True)


def region_labels(addr, by: str = "2M", *, named: dict | None = None) -> pd.Categorical:
    """A categorical label per address: ``"page"``/``"2M"``/``"1G"`` (the aligned region's
    start, hex), ``"half"`` (user or kernel half: bit 63 of a canonical address), or
    ``"named"`` with ``named={label: (start, end)}`` (``"(other)"`` elsewhere)."""
    a = np.asarray(addr).astype(np.uint64, copy=False)
    if by == "half":
        return pd.Categorical.from_codes((a >> np.uint64(63)).astype(np.int8), dtype=HALF_CATEGORIES)
    if by == "named":
        if not named:
            raise ValueError("by='named' needs named={label: (start, end)}")
        codes = np.full(a.shape, len(named), np.int16)
        for j, (lo, hi) in enumerate(named.values()):
            codes[(a >= np.uint64(lo)) & (a < np.uint64(hi)) & (codes == len(named))] = j
        return pd.Categorical.from_codes(codes, categories=list(named) + ["(other)"])
    if by not in REGION_SHIFTS:
        raise ValueError(f"by must be one of {sorted(REGION_SHIFTS)}, 'half' or 'named', not {by!r}")
    sh = np.uint64(REGION_SHIFTS[by])
    u, inv = np.unique(a >> sh, return_inverse=True)
    cats = [f"{int(x) << int(sh):#x}" for x in u]
    return pd.Categorical.from_codes(inv.astype(np.int64).reshape(-1), categories=cats)


def memslot_labels(mem, pa, valid=None) -> pd.Categorical:
    """The memslot (by name) holding each physical address; ``(none)`` where none does or
    where ``valid`` is False."""
    pa = np.asarray(pa).astype(np.uint64, copy=False)
    codes = np.full(pa.shape, len(mem.slots), np.int16)
    for j, s in enumerate(mem.slots):
        codes[(pa >= np.uint64(s.base)) & (pa < np.uint64(s.end))] = j
    if valid is not None:
        codes[~np.asarray(valid, bool)] = len(mem.slots)
    names = [s.name for s in mem.slots]
    names = [f"{n} ({j})" if names.count(n) > 1 else n for j, n in enumerate(names)]
    return pd.Categorical.from_codes(codes, categories=names + ["(none)"])


def fault_frame(res, *, space=None, mem=None, named: dict | None = None) -> pd.DataFrame:
    """``res.to_frame()`` plus analysis columns, all categorical: ``half`` (user/kernel),
    ``region_2m``, ``region_1g``, ``level`` (the faulting level, NA when none), ``pkey``,
    ``vma`` (with ``space``, an AddressSpace), ``memslot`` (with ``mem``: the slot
    of the final physical address, HPA for 2-D walks) and ``named`` (with ``named``)."""
    df = res.to_frame()
    c = res.columns()
    df["half"] = region_labels(c["addr"], "half")
    df["region_2m"] = region_labels(c["addr"], "2M")
    df["region_1g"] = region_labels(c["addr"], "1G")
    lv = c["fault_level"].astype(np.int8) - 1
    lv[(c["fault"] == Fault.NONE) | (lv < 0)] = -1
    df["level"] = pd.Categorical.from_codes(lv, dtype=LEVEL_CATEGORIES)
    if "pkey" in df:
        df["pkey"] = pd.Categorical(df["pkey"], categories=list(range(16)))
    if space is not None:
        reg = space.region_of(c["addr"], c["asid"])
        names = [f"{int(s):#x} {p or ''}".strip()
                 for s, p in zip(space.vmas["start"], space.vmas["path"])]
        codes = np.where(reg < 0, len(names), reg)
        df["vma"] = pd.Categorical.from_codes(codes, categories=names + ["(none)"])
    if mem is not None:
        if "hpa" in c:
            df["memslot"] = memslot_labels(mem, c["hpa"], res.has_hpa)
        else:
            df["memslot"] = memslot_labels(mem, c["gpa"], res.has_gpa)
    if named:
        df["named"] = region_labels(c["addr"], "named", named=named)
    return df


def fault_stats(res, by=("fault", "kind", "privilege"), *, faults_only: bool = False,
                space=None, mem=None, named: dict | None = None) -> pd.DataFrame:
    """Counts and shares grouped by any columns of :func:`fault_frame` (for example
    ``("fault", "stage")``, ``("region_2m", "fault")``, ``("pkey",)``, ``("page_size",)``,
    ``("level", "fault")``, ``("vma", "fault")``, ``("memslot",)``, ``("half", "fault")``).
    ``share`` is of all translations (of faulting ones with ``faults_only``)."""
    df = fault_frame(res, space=space, mem=mem, named=named)
    if faults_only:
        df = df[df["fault"] != "none"]
    by = [by] if isinstance(by, str) else list(by)
    missing = [b for b in by if b not in df]
    if missing:
        raise ValueError(f"cannot group by {missing}: available {list(df.columns)}")
    out = df.groupby(by, observed=True).size().rename("count").reset_index()
    out["share"] = out["count"] / max(len(df), 1)
    return out.sort_values("count", ascending=False, ignore_index=True)


def top_faulting_pages(res, k: int = 10, *, page_shift: int = 12) -> pd.DataFrame:
    """The ``k`` pages (of ``2**page_shift`` bytes) with the most faults: page, faults,
    the most common fault class there, and the share of that page's translations."""
    c = res.columns()
    bad = c["fault"] != Fault.NONE
    if not bad.any():
        return pd.DataFrame({"page": pd.array([], dtype="UInt64"), "faults": [], "fault": [],
                             "fault_share": []})
    pg = c["addr"] >> np.uint64(page_shift)
    u, cnt = np.unique(pg[bad], return_counts=True)
    top = np.argsort(-cnt, kind="stable")[:k]
    rows = []
    for j in top:
        sel = pg == u[j]
        fv, fc = np.unique(c["fault"][sel & bad], return_counts=True)
        rows.append((int(u[j]) << page_shift, int(cnt[j]), FAULT_NAMES[int(fv[np.argmax(fc)])],
                     cnt[j] / max(int(sel.sum()), 1)))
    df = pd.DataFrame(rows, columns=["page", "faults", "fault", "fault_share"])
    df["page"] = pd.array(df["page"].to_numpy(np.uint64), dtype="UInt64")
    df["fault"] = pd.Categorical(df["fault"], dtype=FAULT_CATEGORIES)
    return df
