"""Mapping listings: every leaf a page-table hierarchy maps, merged into ranges.

:func:`list_mappings` scans the tables of a :class:`~vecmmu.PageWalk` (any paging mode:
32-bit, PAE, 4-level, 5-level) with the jitted :func:`vecmmu.kernels.scan.scan_tables`
and returns a :class:`Mappings`: one row per range of consecutive pages with the same
page size, rights, pkey and attributes, like Linux's ``ptdump`` or QEMU's ``info mem``.
Rights are the accumulated rights a walk decides on (W and U AND-ed over the levels, XD
OR-ed). A leaf with W=0 and D=1 is flagged ``shadow_stack`` (a possible CET shadow-stack
page: vecmmu does not model CET). Entries with reserved bits and tables outside memory
are listed in ``anomalies`` (the walk would fault there), not as mappings.

Filters: :meth:`Mappings.filter` (writable+executable, user, supervisor, pkey, page
size, shadow stack, kernel half). Policy checks: :func:`policy_violations` (W+X pages;
user-accessible pages in the kernel half).

``enc_mask`` is an optional mask of entry bits to clear before use: the C-bit of an AMD
SME/SEV guest or the shared bit of a TDX guest (e.g. ``1 << 47`` or ``1 << 51``). It
applies to this listing only; a walk (``PageWalk.translate``) does not take it yet.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..bits import PagingMode
from ..kernels import scan as K
from ..result import PAGE_SIZE_CATEGORIES, acc_string

_SHIFT_NAME = {12: "4K", 21: "2M", 22: "4M", 30: "1G"}
ANOMALY_NAMES = {K.AN_RESERVED: "reserved bits set", K.AN_UNBACKED_TABLE: "table outside memory",
                 K.AN_UNBACKED_ENTRY: "entry outside memory"}
POLICIES = ("W+X", "user page in kernel half")


class ScanWarning(UserWarning):
    """A scan that stopped early (entry budget) or lost anomaly records (capacity)."""


class Mappings:
    """Result of :func:`list_mappings`.

    ``ranges``: a DataFrame, one row per range, columns ``start``, ``last`` (the last
    byte, so a range that reaches the top of the address space is exact), ``size``,
    ``pages``, ``page_size`` (categorical), ``level``, ``pa`` (frame of the first page),
    ``pa_contiguous`` (pa + offset is exact for the whole range), ``rights`` ('rwux'),
    ``writable``, ``user``, ``executable``, ``pkey``, ``global``, ``pwt``, ``pcd``,
    ``pat``, ``shadow_stack``, ``unbacked`` (a page not wholly in memory: MMIO or a
    hole in the dump), ``kernel_half``.
    ``anomalies``: ``va``, ``level``, ``entry_addr``, ``entry_value``, ``what``.
    ``truncated`` is True when the entry budget ran out (the listing is partial);
    ``entries_read`` counts the entries read.
    """

    def __init__(self, ranges: pd.DataFrame, anomalies: pd.DataFrame, *, truncated=False,
                 entries_read=0, description=""):
        self.ranges = ranges
        self.anomalies = anomalies
        self.truncated = truncated
        self.entries_read = entries_read
        self.description = description

    def __len__(self) -> int:
        return len(self.ranges)

    def to_frame(self) -> pd.DataFrame:
        return self.ranges

    @property
    def pages(self) -> int:
        return int(self.ranges["pages"].sum())

    def filter(self, *, wx: bool | None = None, writable: bool | None = None,
               executable: bool | None = None, user: bool | None = None,
               supervisor: bool | None = None, pkey: int | None = None,
               page_size: str | None = None, shadow_stack: bool | None = None,
               kernel_half: bool | None = None) -> "Mappings":
        """Ranges matching every given condition (None: any)."""
        r = self.ranges
        m = np.ones(len(r), dtype=bool)
        if wx is not None:
            m &= (r["writable"] & r["executable"]).to_numpy() == wx
        for col, val in (("writable", writable), ("executable", executable), ("user", user),
                         ("shadow_stack", shadow_stack), ("kernel_half", kernel_half)):
            if val is not None:
                m &= r[col].to_numpy() == val
        if supervisor is not None:
            m &= (~r["user"].to_numpy()) == supervisor
        if pkey is not None:
            m &= r["pkey"].to_numpy() == pkey
        if page_size is not None:
            if page_size not in PAGE_SIZE_CATEGORIES.categories:
                raise ValueError(f"page_size must be one of {list(PAGE_SIZE_CATEGORIES.categories)}")
            m &= (r["page_size"] == page_size).to_numpy()
        return Mappings(r[m].reset_index(drop=True), self.anomalies, truncated=self.truncated,
                        entries_read=self.entries_read, description=self.description)

    def lookup(self, va) -> np.ndarray:
        """Row of :attr:`ranges` holding each address (-1 where nothing maps it)."""
        va = np.asarray(va, dtype=np.uint64).reshape(-1)
        if len(self.ranges) == 0:
            return np.full(va.shape[0], -1, dtype=np.int64)
        start = self.ranges["start"].to_numpy(np.uint64)
        last = self.ranges["last"].to_numpy(np.uint64)
        order = np.argsort(start, kind="stable")
        i = np.searchsorted(start[order], va, side="right") - 1
        ok = (i >= 0) & (va <= last[order][np.maximum(i, 0)])
        return np.where(ok, order[np.maximum(i, 0)], -1)

    def translate(self, va) -> np.ndarray:
        """Physical address of each address per this listing (needs ``pa_contiguous``
        ranges, as ``merge="frames"`` gives); -1 (as u64 max) where not mapped."""
        va = np.asarray(va, dtype=np.uint64).reshape(-1)
        row = self.lookup(va)
        r = self.ranges
        ok = row >= 0
        out = np.full(va.shape[0], np.iinfo(np.uint64).max, dtype=np.uint64)
        rr = row[ok]
        if not r["pa_contiguous"].to_numpy()[rr].all():
            raise ValueError("this listing merges ranges whose frames are not contiguous; use "
                             "list_mappings(..., merge='frames') to translate from it")
        out[ok] = r["pa"].to_numpy(np.uint64)[rr] + (va[ok] - r["start"].to_numpy(np.uint64)[rr])
        return out

    def to_text(self, limit: int | None = None) -> str:
        """A ptdump-like listing: ``start-end  size  page  rights  pkey  flags  pa``."""
        r = self.ranges
        lines = [f"{'start':>18}-{'end':<18} {'size':>9} {'pages':>7} {'page':>4} "
                 f"{'rights':6} {'pkey':>4}  {'pa':>14}  flags"]
        n = len(r) if limit is None else min(limit, len(r))
        h = r.head(n)
        cols = [h[c].to_numpy() for c in ("start", "last", "size", "pages", "page_size", "rights",
                                          "pkey", "pa", "pa_contiguous", "global", "pwt", "pcd",
                                          "pat", "shadow_stack", "unbacked")]
        for (start, last, size, pages, ps, rights, pkey, pa, contig, g, pwt, pcd, pat, ss,
             unb) in zip(*cols):
            end = (int(last) + 1) & (2**64 - 1)
            flags = [f for f, on in (("G", g), ("PWT", pwt), ("PCD", pcd), ("PAT", pat),
                                     ("SS?", ss), ("UNBACKED", unb)) if on]
            pa_s = f"{int(pa):#x}" + ("" if contig else "~")
            lines.append(f"{int(start):#018x}-{end:#018x} {_size(int(size)):>9} {int(pages):>7} "
                         f"{ps:>4} {rights:6} {int(pkey):>4}  {pa_s:>14}  {' '.join(flags)}")
        if n < len(r):
            lines.append(f"... {len(r) - n} more range(s)")
        return "\n".join(lines)

    def summary(self) -> pd.DataFrame:
        """Bytes and pages by page size, rights and privilege."""
        r = self.ranges.assign(privilege=np.where(self.ranges["user"], "user", "supervisor"))
        return (r.groupby(["privilege", "rights", "page_size"], observed=True)
                .agg(ranges=("size", "size"), pages=("pages", "sum"), bytes=("size", "sum"))
                .reset_index())

    def __repr__(self) -> str:
        t = " (TRUNCATED)" if self.truncated else ""
        return (f"Mappings({self.description}: {len(self.ranges)} ranges, {self.pages:,} pages, "
                f"{len(self.anomalies)} anomalies{t})")


def _size(n: int) -> str:
    for unit, s in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << s and n % (1 << s) == 0:
            return f"{n >> s}{unit}"
    return str(n)


def _fmt_field(fmt, name):
    return int(fmt.record[name])


def list_mappings(walk, asid: int = 0, *, merge: str = "attrs", enc_mask: int = 0,
                  max_entries: int = 1 << 26, capacity: int = 1 << 16, start: int | None = None,
                  end: int | None = None, kernel_start: int | None = None) -> Mappings:
    """Every mapping of one address space of ``walk`` (a guest ``PageWalk``).

    ``merge="attrs"`` merges consecutive pages with equal attributes whatever their frames
    (ptdump's view; ``pa`` is the first page's frame and ``pa_contiguous`` says whether
    the rest follow); ``merge="frames"`` also requires contiguous frames (every range
    translates exactly; longer listing). ``start``/``end`` limit the scan to a virtual
    range (canonical addresses). ``max_entries`` bounds the entries read: garbage
    tables cannot hang the scan; when it runs out the listing is marked ``truncated``
    with a warning. ``kernel_start`` is where the kernel half begins (default: the upper
    canonical half in 4/5-level paging, 0xC0000000 in 32-bit and PAE paging).
    """
    if merge not in ("attrs", "frames"):
        raise ValueError(f"merge must be 'attrs' or 'frames', not {merge!r}")
    role = walk.role
    if role.mode is PagingMode.NONE:
        raise ValueError("paging is off: there are no tables to list")
    if not 0 <= asid < len(walk.cr3):
        raise ValueError(f"asid {asid} out of range: the walker has {len(walk.cr3)} CR3 value(s)")
    fmt = walk.format
    root_level = _fmt_field(fmt, "root_level")
    pte_size = _fmt_field(fmt, "pte_size")
    index_bits = _fmt_field(fmt, "index_bits")
    va_bits = _fmt_field(fmt, "va_bits")
    raw_bits = 12 + root_level * index_bits if role.mode is not PagingMode.PAE else 32
    raw_bits = min(raw_bits, 64)
    raw_top = 1 << raw_bits
    sign = va_bits > 32

    def to_raw(v):
        return int(v) & (raw_top - 1)

    lo = 0 if start is None else to_raw(start)
    hi = raw_top if end is None else (to_raw(end) or raw_top)
    if start is not None and end is not None and hi <= lo:
        raise ValueError(f"empty range: start {start:#x}, end {end:#x}")
    root = int(walk.cr3[asid]) & role.root_mask()
    use_pd = role.mode is PagingMode.PAE
    pdptes = (np.asarray(walk.pdptes[asid], dtype=np.uint64) if use_pd
              else np.zeros(4, np.uint64)).view(np.int64)
    if not use_pd and not walk.mem.is_backed(root, 4096):
        raise ValueError(f"the root table at {root:#x} (CR3={walk.cr3[asid]:#x}) is not in memory "
                         f"({walk.mem.describe()})")
    slot_args = walk.mem.slot_pointers()       # host addresses: one signature for any memslots
    rsvd = fmt.rsvd_table()
    params = [np.int64(np.uint64(_fmt_field(fmt, f)).view(np.int64)) if _fmt_field(fmt, f) >= 1 << 63
              else np.int64(_fmt_field(fmt, f))
              for f in ("leaf_levels", "addr_mask", "nx_flip", "exec_force", "pse36_mask")]
    enc = np.int64(np.uint64(int(enc_mask) & (2**64 - 1)).view(np.int64))
    cap = max(int(capacity), 16)
    parts, anoms = [], []
    n_anom_total = 0
    reads_total = 0
    truncated = False
    va_lo = lo
    while True:
        out = [np.empty(cap, np.int64) for _ in range(9)]
        aout = [np.empty(cap, np.int64) for _ in range(5)]
        budget = max(int(max_entries) - reads_total, 0)
        n_r, n_a, status, reads, stop = K.scan_tables(
            root, root_level, pte_size, index_bits, raw_bits if use_pd else va_bits,
            *params, pdptes, use_pd, rsvd, enc, 1 if merge == "frames" else 0,
            budget, va_lo, hi, *slot_args, *out, *aout)
        n_r, n_a, reads = int(n_r), int(n_a), int(reads)
        reads_total += reads
        parts.append([o[:n_r] for o in out])
        anoms.append([a[:min(n_a, cap)] for a in aout])
        n_anom_total += n_a
        if status == K.SC_FULL:
            va_lo = int(stop)
            continue
        if status == K.SC_BUDGET:
            truncated = True
            warnings.warn(f"list_mappings: stopped after {reads_total:,} entries (max_entries) at "
                          f"virtual address {_canon(int(stop), va_bits, sign):#x}; the listing is "
                          f"partial (garbage or looping tables?); raise max_entries to go on",
                          ScanWarning, stacklevel=2)
        break
    if n_anom_total > sum(a[0].shape[0] for a in anoms):
        warnings.warn(f"list_mappings: {n_anom_total} anomalies, only the first "
                      f"{sum(a[0].shape[0] for a in anoms)} recorded", ScanWarning, stacklevel=2)
    cols = [np.concatenate([p[j] for p in parts]) for j in range(9)]
    ranges = _ranges_frame(cols, va_bits, sign, merge, kernel_start, role)
    acols = [np.concatenate([a[j] for a in anoms]) for j in range(5)]
    anomalies = pd.DataFrame({
        "va": pd.array(_canon_arr(acols[0], va_bits, sign), dtype="UInt64"),
        "level": acols[1].astype(np.uint8),
        "entry_addr": pd.array(acols[2].view(np.uint64), dtype="UInt64"),
        "entry_value": pd.array(acols[3].view(np.uint64), dtype="UInt64"),
        "what": pd.Categorical([ANOMALY_NAMES[int(k)] for k in acols[4]],
                               categories=list(ANOMALY_NAMES.values())),
    })
    desc = f"{walk.role.mode.name.lower()} CR3={int(walk.cr3[asid]):#x}"
    return Mappings(ranges, anomalies, truncated=truncated, entries_read=reads_total,
                    description=desc)


def _canon(v: int, va_bits: int, sign: bool) -> int:
    if sign and v >> (va_bits - 1) & 1:
        return (v | ~((1 << va_bits) - 1)) & (2**64 - 1)
    return v


def _canon_arr(v: np.ndarray, va_bits: int, sign: bool) -> np.ndarray:
    u = v.view(np.uint64).copy()
    if sign:
        hi = (u >> np.uint64(va_bits - 1)) & np.uint64(1)
        u[hi == 1] |= np.uint64(~((1 << va_bits) - 1) & (2**64 - 1))
    return u


def _ranges_frame(cols, va_bits, sign, merge, kernel_start, role) -> pd.DataFrame:
    va, end, pa, pages, shift, level, acc, pkey, flags = cols
    if va.shape[0] > 1:      # ranges cut at a scan-chunk boundary: join them again
        same = ((va[1:] == end[:-1]) & (shift[1:] == shift[:-1]) & (level[1:] == level[:-1])
                & (acc[1:] == acc[:-1]) & (pkey[1:] == pkey[:-1])
                & ((flags[1:] | K.RF_PA_CONTIG) == (flags[:-1] | K.RF_PA_CONTIG)))
        if sign:
            same &= va[1:] != (1 << (va_bits - 1))
        contig = pa[1:] == pa[:-1] + pages[:-1] * (np.int64(1) << shift[:-1])
        if merge == "frames":
            same &= contig
        if same.any():
            first = np.flatnonzero(np.concatenate([[True], ~same]))
            lastk = np.concatenate([first[1:] - 1, [va.shape[0] - 1]])
            allc = np.ones(va.shape[0], bool)
            allc[1:] = contig | ~same
            fl_and = np.bitwise_and.reduceat(flags, first)
            c_ok = np.logical_and.reduceat(allc, first) & ((fl_and & K.RF_PA_CONTIG) != 0)
            va, end, pa = va[first], end[lastk], pa[first]
            pages = np.add.reduceat(pages, first)
            shift, level, acc, pkey = shift[first], level[first], acc[first], pkey[first]
            flags = np.where(c_ok, flags[first] | K.RF_PA_CONTIG, flags[first] & ~K.RF_PA_CONTIG)
            del grp
    start = _canon_arr(va, va_bits, sign)
    last = _canon_arr(end - 1, va_bits, sign)
    size = (end - va).view(np.uint64)
    if kernel_start is None:
        kernel_start = 1 << 63 if role.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5) else 0xC0000000
    codes = np.array([{12: 0, 21: 1, 22: 2, 30: 3}[int(s)] for s in shift], dtype=np.int8) \
        if shift.size else np.zeros(0, np.int8)
    f = flags
    return pd.DataFrame({
        "start": pd.array(start, dtype="UInt64"),
        "last": pd.array(last, dtype="UInt64"),
        "size": pd.array(size, dtype="UInt64"),
        "pages": pages.astype(np.int64),
        "page_size": pd.Categorical.from_codes(codes, dtype=PAGE_SIZE_CATEGORIES),
        "level": level.astype(np.uint8),
        "pa": pd.array(pa.view(np.uint64), dtype="UInt64"),
        "pa_contiguous": (f & K.RF_PA_CONTIG) != 0,
        "rights": acc_string(acc),
        "writable": (acc & 2) != 0,
        "user": (acc & 4) != 0,
        "executable": (acc & 8) != 0,
        "pkey": pkey.astype(np.uint8),
        "global": (f & K.RF_GLOBAL) != 0,
        "pwt": (f & K.RF_PWT) != 0,
        "pcd": (f & K.RF_PCD) != 0,
        "pat": (f & K.RF_PAT) != 0,
        "shadow_stack": (f & K.RF_SHADOW_STACK) != 0,
        "unbacked": (f & K.RF_UNBACKED) != 0,
        "kernel_half": last >= np.uint64(kernel_start),
    })


def policy_violations(m: Mappings) -> pd.DataFrame:
    """Ranges that break a policy, one row per (range, policy): ``W+X`` (writable and
    executable: W^X is broken) and ``user page in kernel half`` (user-accessible
    mappings at or above the kernel split). Columns: ``policy`` then the range's."""
    r = m.ranges
    out = []
    for name, mask in (("W+X", r["writable"] & r["executable"]),
                       ("user page in kernel half", r["user"] & r["kernel_half"])):
        sel = r[mask.to_numpy()]
        if len(sel):
            out.append(sel.assign(policy=name))
    if not out:
        return r.iloc[0:0].assign(policy=pd.Series(dtype=str))[["policy"] + list(r.columns)]
    df = pd.concat(out, ignore_index=True)
    df["policy"] = pd.Categorical(df["policy"], categories=list(POLICIES))
    return df[["policy"] + list(r.columns)]
