"""Address spaces from the real world: Linux ``/proc/PID/maps`` (or ``smaps``), a pagemap
snapshot, or the distinct pages of a trace, built into guest page tables with :class:`Mmu`.

:func:`address_space_from_maps` turns every VMA into user pages (4-level paging, 5-level
when an address needs it) with the VMA's rights as x86 can express them:

=============== =======================================================================
VMA perms       pages
=============== =======================================================================
``r``           present, read-only, XD set
``w``           writable (x86 has no write-only page: ``-w-`` is readable too)
``x``           XD clear (``--x`` is readable too unless its pkey says otherwise: Linux
                backs execute-only memory with protection key 1, which ``smaps`` shows)
``---``         not mapped (PROT_NONE pages are not present: any access faults)
=============== =======================================================================

``smaps`` input adds each VMA's ``ProtectionKey`` (the pages' pkey) and
``KernelPageSize`` (2048 kB: hugetlb, mapped with 2 MiB pages). With ``huge=True`` every
2 MiB-aligned 2 MiB part of a VMA is one 2 MiB page (with a pagemap: only where its 512
frames are present, contiguous and aligned, as a transparent huge page is). VMAs in the
kernel half (``[vsyscall]``, which Linux emulates) are left out: such addresses fault. Rights are the VMA's: a private file mapping
that has not been written yet is writable here, though Linux maps it read-only until the
copy-on-write fault.

Frames: with a pagemap snapshot (:func:`read_pagemap`) a present page gets its real PFN
and a page that is not present is left unmapped (``absent="fault"``, the default) or
given a made-up frame (``absent="map"``); without one every page gets a made-up frame,
contiguous per VMA from ``FRAME_BASE``. Data pages are never read, so all frames are
backed by one shared zero buffer (a memslot per GiB that holds frames); the tables live
in the Mmu's own RAM above them.

:func:`address_space_from_trace` maps the distinct pages a trace touches (per address
space), with the rights it used (``rights="observed"``: W where written, X where
fetched) or all rights (``rights="all"``).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..access import ACCESS_DTYPE
from ..memory import PhysMem
from ..mmu import Mmu
from ..role import CpuRole
from ._files import InputFile, TraceError, TraceWarning, check_path

PAGE = 4096
HUGE = 2 << 20
FRAME_BASE = 1 << 32            # made-up frames start here (4 GiB)
GIB = 1 << 30
USER_TOP_4 = 1 << 47
USER_TOP_5 = 1 << 56

PM_PRESENT = 1 << 63
PM_SWAPPED = 1 << 62
PM_PFN_MASK = (1 << 55) - 1

_MAPS_RE = re.compile(
    r"^([0-9a-fA-F]+)-([0-9a-fA-F]+)\s+([r-][w-][x-][ps])\s+([0-9a-fA-F]+)\s+"
    r"([0-9a-fA-F]+:[0-9a-fA-F]+)\s+(\d+)\s*(.*)$")
_SMAPS_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$")

VMA_COLUMNS = ("start", "end", "perms", "offset", "dev", "inode", "path", "pkey",
               "kernel_page_size", "anon_huge")


def parse_maps(source) -> pd.DataFrame:
    """VMAs of a ``/proc/PID/maps`` or ``/proc/PID/smaps`` file (a path, or the text).

    Columns: ``start``, ``end`` (UInt64), ``perms`` ('rw-p'), ``offset``, ``dev``,
    ``inode``, ``path``, ``pkey`` (from smaps' ProtectionKey, else 0),
    ``kernel_page_size`` (bytes; 4096 unless smaps says otherwise), ``anon_huge``
    (smaps' AnonHugePages in bytes). Bad lines raise :class:`TraceError` with the line.
    """
    if isinstance(source, (bytes, str)) and ("\n" in str(source) or not str(source).strip()):
        text, name = source.decode() if isinstance(source, bytes) else source, "<maps text>"
    else:
        p = check_path(source)
        with InputFile(p) as f:
            data = f.read(1 << 30)
        try:
            text = data.decode("utf-8", errors="surrogateescape")
        except UnicodeDecodeError:
            raise TraceError(f"{p}: not a text file") from None
        name = str(p)
    rows = []
    for ln, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _MAPS_RE.match(line)
        if m:
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end <= start or start % PAGE or end % PAGE:
                raise TraceError(f"{name}:{ln}: VMA {m.group(1)}-{m.group(2)} is empty, "
                                 f"reversed or not page-aligned: {line.strip()!r}")
            if rows and start < rows[-1]["end"]:
                raise TraceError(f"{name}:{ln}: VMA {start:#x}-{end:#x} overlaps or precedes the "
                                 f"one before it (ends {rows[-1]['end']:#x}); maps lines must be "
                                 f"sorted and disjoint")
            rows.append(dict(start=start, end=end, perms=m.group(3), offset=int(m.group(4), 16),
                             dev=m.group(5), inode=int(m.group(6)), path=m.group(7).strip(),
                             pkey=0, kernel_page_size=PAGE, anon_huge=0))
            continue
        k = _SMAPS_KEY.match(line)
        if k and rows:
            key, val = k.group(1), k.group(2).strip()
            try:
                if key == "ProtectionKey":
                    rows[-1]["pkey"] = int(val)
                    if not 0 <= rows[-1]["pkey"] <= 15:
                        raise ValueError
                elif key == "KernelPageSize":
                    rows[-1]["kernel_page_size"] = _kb(val)
                elif key == "AnonHugePages":
                    rows[-1]["anon_huge"] = _kb(val)
            except ValueError:
                raise TraceError(f"{name}:{ln}: bad smaps field {key}: {val!r}") from None
            continue
        what = "a maps line (start-end perms offset dev inode [path])"
        raise TraceError(f"{name}:{ln}: not {what}: {line.strip()[:100]!r}")
    if not rows:
        raise TraceError(f"{name}: no VMAs (empty maps file)")
    df = pd.DataFrame(rows, columns=list(VMA_COLUMNS))
    df["start"] = df["start"].astype("UInt64")
    df["end"] = df["end"].astype("UInt64")
    return df


def _kb(val: str) -> int:
    parts = val.split()
    if len(parts) != 2 or parts[1] != "kB":
        raise ValueError(val)
    return int(parts[0]) * 1024


# -- pagemap -----------------------------------------------------------------------------------

def read_pagemap(source, vmas: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(vpn, entry)`` arrays (u64) from a pagemap snapshot.

    ``source`` is an ``.npz`` with arrays ``vpn`` and ``entry`` (what
    :func:`capture_pagemap` writes), or a file laid out like ``/proc/PID/pagemap`` (entry
    of virtual page n at byte 8n: the live file, or a sparse copy of it), read at the
    pages of ``vmas``. Entry bits: 63 present, 62 swapped, 54:0 PFN (zero when read
    without CAP_SYS_ADMIN).
    """
    p = os.fspath(source)
    if str(p).endswith(".npz"):
        check_path(p)
        try:
            z = np.load(p)
            vpn, entry = np.asarray(z["vpn"], np.uint64), np.asarray(z["entry"], np.uint64)
        except (KeyError, ValueError, OSError) as e:
            raise TraceError(f"{p}: not a pagemap snapshot (.npz with 'vpn' and 'entry'): {e}") from None
        if vpn.shape != entry.shape:
            raise TraceError(f"{p}: 'vpn' has {vpn.shape[0]} values but 'entry' {entry.shape[0]}")
        return vpn, entry
    if vmas is None:
        raise ValueError("reading a raw pagemap needs the VMAs (which pages to read)")
    vpns, entries = [], []
    with open(p, "rb") as f:
        for s, e in zip(vmas["start"].to_numpy(np.uint64), vmas["end"].to_numpy(np.uint64)):
            if int(s) >= USER_TOP_5:
                continue
            lo, hi = int(s) // PAGE, int(e) // PAGE
            f.seek(lo * 8)
            raw = f.read((hi - lo) * 8)
            got = len(raw) // 8
            vpns.append(np.arange(lo, lo + got, dtype=np.uint64))
            entries.append(np.frombuffer(raw[:got * 8], dtype="<u8").astype(np.uint64))
    if not vpns:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    return np.concatenate(vpns), np.concatenate(entries)


def capture_pagemap(pid, out) -> int:
    """Save the pagemap entries of every VMA of a live process ``pid`` ('self' works) as
    an ``.npz`` snapshot; returns the number of pages. PFNs are real only with
    CAP_SYS_ADMIN (else zero)."""
    vmas = parse_maps(f"/proc/{pid}/maps")
    vpn, entry = read_pagemap(f"/proc/{pid}/pagemap", vmas)
    np.savez_compressed(out, vpn=vpn, entry=entry)
    return int(vpn.shape[0])


# -- building ----------------------------------------------------------------------------------

@dataclass
class AddressSpace:
    """Page tables built from real-world inputs.

    ``mmu`` (the :class:`Mmu` with the tables), ``vmas`` (a DataFrame: one row per region
    with its rights and how many pages were mapped), ``source`` (what it was built from),
    ``pkru`` (PKRU to walk with). :meth:`walker` gives the :class:`~vecmmu.PageWalk`;
    :meth:`region_of` the row of ``vmas`` holding each address (-1 outside).
    """
    mmu: Mmu
    vmas: pd.DataFrame
    source: str
    pkru: int = 0

    def walker(self, **kw):
        kw.setdefault("pkru", self.pkru)
        return self.mmu.walker(**kw)

    def region_of(self, addr, asid=None) -> np.ndarray:
        addr = np.asarray(addr, dtype=np.uint64)
        starts = self.vmas["start"].to_numpy(np.uint64)
        ends = self.vmas["end"].to_numpy(np.uint64)
        if "asid" in self.vmas and asid is not None and self.vmas["asid"].nunique() > 1:
            out = np.full(addr.shape[0], -1, dtype=np.int64)
            asid = np.broadcast_to(np.asarray(asid), addr.shape)
            for a in np.unique(asid):
                rows = np.flatnonzero(self.vmas["asid"].to_numpy() == a)
                sel = asid == a
                idx = np.searchsorted(starts[rows], addr[sel], side="right") - 1
                ok = (idx >= 0) & (addr[sel] < ends[rows][np.maximum(idx, 0)])
                out[sel] = np.where(ok, rows[np.maximum(idx, 0)], -1)
            return out
        idx = np.searchsorted(starts, addr, side="right") - 1
        ok = (idx >= 0) & (addr < ends[np.maximum(idx, 0)])
        return np.where(ok, idx, -1)

    def __repr__(self) -> str:
        mapped = int(self.vmas["pages"].sum()) if "pages" in self.vmas else 0
        return (f"AddressSpace({self.source}: {len(self.vmas)} regions, {mapped:,} pages "
                f"mapped, {self.mmu!r})")


class _Frames:
    """Frame memory: made-up or real frames, backed by one shared zero buffer."""

    def __init__(self):
        self.next = FRAME_BASE
        self.used: list[np.ndarray] = []

    def take(self, size: int, align: int = PAGE) -> int:
        start = (self.next + align - 1) // align * align
        self.next = start + size
        self.used.append(np.array([start, start + size], dtype=np.uint64))
        return start

    def add(self, pas: np.ndarray, size: int):
        if pas.size:
            self.used.append(np.stack([pas, pas + np.uint64(size)], axis=1).reshape(-1))

    def memory(self) -> tuple[PhysMem, int]:
        """A PhysMem with one memslot per GiB window that holds frames, and the first free
        GiB-aligned address above them (where the tables go)."""
        mem = PhysMem()
        if not self.used:
            return mem, FRAME_BASE
        pts = np.concatenate(self.used).reshape(-1, 2)
        lo_w = pts[:, 0] // np.uint64(GIB)
        hi_w = (pts[:, 1] - np.uint64(1)) // np.uint64(GIB)
        windows = np.unique(np.concatenate([np.arange(int(a), int(b) + 1, dtype=np.uint64)
                                            if b > a else np.array([a], dtype=np.uint64)
                                            for a, b in zip(lo_w, hi_w)]))
        # calloc'd: costs no memory until written, and nothing writes it (the slots are
        # read-only). The array itself stays writable: kernels take every backing in one
        # homogeneous tuple, and the Mmu's RAM is a writable array.
        zero = np.zeros(GIB, dtype=np.uint8)
        # merge adjacent windows into one slot each (a slot may not exceed the buffer)
        for w in windows:
            mem.add_slot(int(w) * GIB, zero, size=GIB, name=f"frames@{int(w)}G", writable=False)
        top = (int(windows.max()) + 1) * GIB
        return mem, top


def _role(max_va: int, **role_kw) -> CpuRole:
    mode = "5level" if max_va > USER_TOP_4 else "4level"
    for k, v in dict(smep=True, smap=True, pke=True).items():
        role_kw.setdefault(k, v)
    return CpuRole.for_mode(mode, **role_kw)


def _table_ram(n4k: int, nregions: int) -> int:
    est = (n4k // 512 + 4 * nregions + 64) * PAGE * 2 + (8 << 20)
    return (est + HUGE - 1) // HUGE * HUGE


def address_space_from_maps(maps, pagemap=None, *, huge: bool = False, absent: str | None = None,
                            pkru: int = 0, **role_kw) -> AddressSpace:
    """Page tables for the VMAs of a maps/smaps file (path, text or :func:`parse_maps`
    frame), with frames from a pagemap snapshot (path, or ``(vpn, entry)`` arrays) when
    given. See the module docstring for the rules; ``role_kw`` go to
    :meth:`CpuRole.for_mode` (default SMEP, SMAP and PKE on)."""
    vmas = maps if isinstance(maps, pd.DataFrame) else parse_maps(maps)
    src = "maps" if isinstance(maps, pd.DataFrame) else f"maps {os.fspath(maps)}" \
        if not (isinstance(maps, str) and "\n" in maps) else "maps text"
    if absent is None:
        absent = "fault" if pagemap is not None else "map"
    if absent not in ("fault", "map"):
        raise ValueError(f"absent must be 'fault' or 'map', not {absent!r}")
    pm = None
    if pagemap is not None:
        vpn, entry = pagemap if isinstance(pagemap, tuple) else read_pagemap(pagemap, vmas)
        order = np.argsort(vpn)
        pm = (vpn[order], entry[order])
        present = (entry & np.uint64(PM_PRESENT)) != 0
        if present.any() and not (entry[present] & np.uint64(PM_PFN_MASK)).any():
            warnings.warn(f"{src}: the pagemap's present pages all have PFN 0 (it was read without "
                          f"CAP_SYS_ADMIN); those pages get made-up frames", TraceWarning, stacklevel=2)
            pm = (pm[0], np.where((pm[1] & np.uint64(PM_PRESENT)) != 0,
                                  pm[1] | np.uint64(PM_PFN_MASK), pm[1]))   # marked: make up
    user = vmas[vmas["start"].to_numpy(np.uint64) < np.uint64(USER_TOP_5)]
    ends = user["end"].to_numpy(np.uint64)
    max_va = int(ends.max()) if len(user) else 0
    frames = _Frames()
    plan = []                      # (va, size, page_size, pa array or None, rights)
    pages = []
    for row in user.itertuples(index=False):
        start, end, perms = int(row.start), int(row.end), row.perms
        r, w, x = perms[0] == "r", perms[1] == "w", perms[2] == "x"
        if not (r or w or x):
            pages.append(0)
            continue
        rights = dict(writable=w, nx=not x, pkey=int(row.pkey), user=True)
        ps_vma = HUGE if int(row.kernel_page_size) == HUGE else PAGE
        n = 0
        for va, size, ps in _split(start, end, huge or ps_vma == HUGE):
            if ps_vma == HUGE and ps != HUGE:
                raise TraceError(f"{src}: VMA {start:#x}-{end:#x} has 2048 kB pages but is not "
                                 f"2 MiB-aligned")
            if pm is None:
                plan.append((va, size, ps, frames.take(size, ps), rights))
                n += size // ps
                continue
            for cva, csize, cps, pas in _with_pagemap(pm, va, size, ps, absent, frames):
                plan.append((cva, csize, cps, pas, rights))
                n += csize // cps
        pages.append(n)
    mem, top = frames.memory()
    n4k = sum(s // PAGE for _, s, ps, _, _ in plan if ps == PAGE)
    role = _role(max_va, **role_kw)
    mmu = Mmu(role, ram_size=_table_ram(n4k, len(plan)), ram_base=top, mem=mem)
    for va, size, ps, pa, rights in plan:
        mmu.map(va, size, pa=pa, page_size=ps, **rights)
    out = user.reset_index(drop=True).copy()
    out["pages"] = np.array(pages, dtype=np.int64)
    return AddressSpace(mmu, out, src, pkru)


def _split(start, end, huge):
    """``(va, size, page_size)`` pieces of [start, end): 2 MiB pages where aligned."""
    if not huge:
        yield start, end - start, PAGE
        return
    h0 = (start + HUGE - 1) // HUGE * HUGE
    h1 = end // HUGE * HUGE
    if h1 <= h0:
        yield start, end - start, PAGE
        return
    if h0 > start:
        yield start, h0 - start, PAGE
    yield h0, h1 - h0, HUGE
    if end > h1:
        yield h1, end - h1, PAGE


def _with_pagemap(pm, va, size, ps, absent, frames):
    """Pieces of one range with the pagemap's frames: present pages keep their PFN; a
    2 MiB piece stays 2 MiB only where its 512 frames are present, contiguous and aligned."""
    vpn, entry = pm
    lo, hi = va // PAGE, (va + size) // PAGE
    i0, i1 = np.searchsorted(vpn, [lo, hi])
    e = np.zeros(hi - lo, dtype=np.uint64)
    e[(vpn[i0:i1] - np.uint64(lo)).astype(np.int64)] = entry[i0:i1]
    present = (e & np.uint64(PM_PRESENT)) != 0
    pfn = e & np.uint64(PM_PFN_MASK)
    madeup = present & (pfn == np.uint64(PM_PFN_MASK))
    if ps == HUGE:
        for k in range(0, hi - lo, 512):
            p = present[k:k + 512]
            f = pfn[k:k + 512]
            if p.all() and not madeup[k:k + 512].any() and int(f[0]) % 512 == 0 and \
                    np.array_equal(f, f[0] + np.arange(512, dtype=np.uint64)):
                frames.add(np.array([int(f[0]) * PAGE], np.uint64), HUGE)
                yield va + k * PAGE, HUGE, HUGE, int(f[0]) * PAGE
            else:
                yield from _with_pagemap(pm, va + k * PAGE, HUGE, PAGE, absent, frames)
        return
    pas = pfn * np.uint64(PAGE)
    if madeup.any():
        for j in np.flatnonzero(madeup):
            pas[j] = frames.take(PAGE)
    if absent == "map":
        for j in np.flatnonzero(~present):
            pas[j] = frames.take(PAGE)
        keep = np.ones(hi - lo, dtype=bool)
    else:
        keep = present
    frames.add(pas[keep & ~madeup], PAGE)
    # runs of kept pages
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    for run in np.split(idx, breaks):
        yield va + int(run[0]) * PAGE, run.size * PAGE, PAGE, pas[run]


def address_space_from_trace(trace, *, rights: str = "observed", huge: bool = False,
                             pkru: int = 0, **role_kw) -> AddressSpace:
    """Page tables mapping every page a trace touches (an access batch, or an iterable of
    batches: a trace reader), one address space per ``asid``. ``rights="observed"`` gives
    each page the rights the trace used (always R; W if written; X if fetched);
    ``rights="all"`` makes every page RWX. Pages are user pages in the user half only
    (non-canonical and kernel-half addresses are left unmapped). ``huge`` maps a 2 MiB
    region as one 2 MiB page when the trace touches all of it with one set of rights...
    which traces rarely do; it is mostly for synthetic traces."""
    if rights not in ("observed", "all"):
        raise ValueError(f"rights must be 'observed' or 'all', not {rights!r}")
    batches = [trace] if isinstance(trace, np.ndarray) else trace
    keys = []
    n_acc = 0
    for b in batches:
        if not (isinstance(b, np.ndarray) and b.dtype == ACCESS_DTYPE):
            raise TypeError("address_space_from_trace takes access batches (ACCESS_DTYPE)")
        n_acc += b.shape[0]
        addr = b["addr"]
        last = addr + (b["size"].astype(np.uint64) - np.uint64(1))
        flag = np.where(b["kind"] == 1, 2, np.where(b["kind"] == 2, 4, 1)).astype(np.uint64)
        for a in (addr, last):
            k = _page_keys(a, b["asid"], flag)
            keys.append(_reduce(k))
        if sum(k.shape[0] for k in keys) > 1 << 22:
            keys = [_reduce(np.concatenate(keys))]
    if not keys:
        raise ValueError("the trace has no accesses: no pages to map")
    k = _reduce(np.concatenate(keys))
    asid = (k[:, 0] >> np.uint64(48)).astype(np.int64)
    vpn = k[:, 0] & np.uint64((1 << 48) - 1)
    flags = k[:, 1]
    user_half = vpn < np.uint64(USER_TOP_5 // PAGE)
    asid, vpn, flags = asid[user_half], vpn[user_half], flags[user_half]
    if rights == "all":
        flags = np.full_like(flags, 7)
    max_va = int(vpn.max() + 1) * PAGE if vpn.size else 0
    role = _role(max_va, **role_kw)
    frames = _Frames()
    rows = []
    plan = []
    for a in range(int(asid.max()) + 1 if asid.size else 1):
        sel = asid == a
        v, f = vpn[sel], flags[sel]
        if not v.size:
            continue
        brk = np.flatnonzero((np.diff(v) != 1) | (np.diff(f) != 0)) + 1
        for run_v, run_f in zip(np.split(v, brk), np.split(f, brk)):
            start, end = int(run_v[0]) * PAGE, (int(run_v[-1]) + 1) * PAGE
            fl = int(run_f[0])
            r = dict(writable=bool(fl & 2), nx=not fl & 4, user=True)
            for va, size, ps in _split(start, end, huge):
                plan.append((a, va, size, ps, frames.take(size, ps), r))
            rows.append(dict(asid=a, start=start, end=end,
                             perms="r" + ("w" if fl & 2 else "-") + ("x" if fl & 4 else "-") + "p",
                             path="", pkey=0, pages=(end - start) // PAGE))
    mem, top = frames.memory()
    mmu = Mmu(role, ram_size=_table_ram(int(vpn.size), len(plan)), ram_base=top, mem=mem)
    for a in range(1, (int(asid.max()) + 1) if asid.size else 1):
        mmu.new_address_space()
    for a, va, size, ps, pa, r in plan:
        mmu.map(va, size, pa=pa, page_size=ps, asid=a, **r)
    vm = pd.DataFrame(rows, columns=["asid", "start", "end", "perms", "path", "pkey", "pages"])
    vm["start"] = vm["start"].astype("UInt64")
    vm["end"] = vm["end"].astype("UInt64")
    return AddressSpace(mmu, vm, f"trace ({n_acc:,} accesses)", pkru)


def _page_keys(addr, asid, flag):
    """(asid << 48 | vpn, rights flag) rows for canonical addresses (vpn of the
    sign-extended address is masked to 48 bits only for user-half addresses)."""
    canon_user = addr < np.uint64(USER_TOP_5)
    vpn = addr[canon_user] >> np.uint64(12)
    key = (asid[canon_user].astype(np.uint64) << np.uint64(48)) | vpn
    return np.stack([key, flag[canon_user]], axis=1)


def _reduce(k):
    """Unique keys with their flags OR-ed."""
    if k.shape[0] == 0:
        return k
    order = np.argsort(k[:, 0], kind="stable")
    ks = k[order]
    starts = np.flatnonzero(np.concatenate([[True], ks[1:, 0] != ks[:-1, 0]]))
    return np.stack([ks[starts, 0], np.bitwise_or.reduceat(ks[:, 1], starts)], axis=1)
