"""What-if permission studies: walk once, decide many times, where that is exact.

>>> wi = whatif(walker, trace, [Variant("no SMAP", smap=False),
...                             Variant("kernel text XS only", overlays=[Overlay(...)])])
>>> wi.summary()          # tidy: variant, fault, stage, count, share
>>> wi.matrix             # per access: the fault class under every variant
>>> wi.diff("no SMAP")    # accesses that newly fault / stop faulting against the baseline

A variant changes *decision-only* settings (CR0.WP, CR4.SMEP/SMAP/PKE, EFLAGS.AC, PKRU,
EPT permission overlays on GPAs that hold no guest tables) and/or *walk-changing* ones
(EFER.NXE, CR4.PSE, EPT MBEC / execute-only / A-D / advanced information, NPT GMET and NXE,
overlays on GPAs holding guest tables). Variants are grouped by their walk-changing
settings; each group is walked once (a *walk record*: the guest's most permissive
decision settings, so every access that faults there faults under every variant of the
group), then each variant is re-decided from the record by permission-table lookups
(:mod:`vecmmu.kernels.decide`). The result of every variant equals a full re-walk with
that configuration (``tests/test_whatif.py`` checks it column by column).

What the record must hold for exact re-decisions: the accumulated ACC rights and pkey of
the guest leaf; whether the walk reached the leaf (``leaf_level > 0``: no non-permission
guest fault); the I/D reporting of the variant's format (``FMT_PFERR_FETCH``, which SMEP
changes); for 2-D walks the outcome of the final GPA's TDP walk, its rights ``tdp_acc`` and
page size, and the guest U/S bit (MBEC decides fetches by it). Columns the record lacks for
a few rows (the guest leaf entry behind a final-GPA fault that the variant turns into a
guest #PF; the TDP leaf entry behind a new overlay violation) are completed by re-walking
those rows only when a full result is asked for (:meth:`WhatIf.result`); the matrix and
the summaries never need them.

Speed: a record is walked in chunks and keeps only the narrow columns above (a few bytes
per access; 2-D records also the final GPA); the decision kernel
(:func:`vecmmu.kernels.decide.decide_sweep`) runs over accesses in parallel parts with the
variants in the inner loop, writing the (n, K) u1 fault matrix (and the stage matrix for 2-D
walks; 1-D walks have no stages, and theirs stays untouched zero pages). A variant's
full result walks the record's batch once more (every column) and re-decides it.

NPT GMET is treated as walk-changing: it also decides every NPT table access, whose
rights the record does not keep.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..access import ACCESS_DTYPE, as_accesses
from ..bits import FAULT_NAMES, Fault
from ..bufpool import POOL
from ..format import FMT_PFERR_FETCH, PageFormat
from ..kernels import decide as KD
from ..kernels._jit import PASS_UNIT, parts_for, run_parts
from ..kernels.tdp_walk import NESTED_COLS
from ..result import COLUMNS, STAGE_CATEGORIES, Translation
from . import overlay as OV
from .overlay import Overlay

F_OVERLAY_MISCONFIG = KD.F_OVERLAY_MISCONFIG
WHATIF_FAULT_NAMES = [FAULT_NAMES[f.value] for f in Fault] + ["overlay misconfig"]
WHATIF_FAULT_CATEGORIES = pd.CategoricalDtype(WHATIF_FAULT_NAMES)
_CODE = np.full(256, -1, np.int8)
for _j, _f in enumerate(Fault):
    _CODE[_f.value] = _j
_CODE[F_OVERLAY_MISCONFIG] = len(Fault)

CPU_DECIDE = ("wp", "smep", "smap", "pke")
CPU_WALK = ("nxe", "pse")
TDP_WALK = ("mbec", "execonly", "ad", "advanced_info", "gmet")


@dataclass(frozen=True)
class Variant:
    """One configuration of a what-if sweep. ``None`` keeps the walker's setting.

    Decision-only: ``wp``, ``smep``, ``smap``, ``pke`` (guest CR0/CR4), ``pkru``, ``ac``
    (EFLAGS.AC forced for every access; None keeps the trace's), ``overlays``.
    Walk-changing: ``nxe``, ``pse`` (guest), ``mbec``, ``execonly``, ``ad``,
    ``advanced_info`` (EPT), ``gmet`` (NPT), and overlays on GPAs holding guest tables.
    """
    name: str
    wp: bool | None = None
    smep: bool | None = None
    smap: bool | None = None
    pke: bool | None = None
    pkru: int | None = None
    ac: bool | None = None
    nxe: bool | None = None
    pse: bool | None = None
    mbec: bool | None = None
    execonly: bool | None = None
    ad: bool | None = None
    advanced_info: bool | None = None
    gmet: bool | None = None
    overlays: tuple = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "overlays", tuple(self.overlays))
        for o in self.overlays:
            if not isinstance(o, Overlay):
                raise TypeError(f"variant {self.name!r}: overlays must be Overlay objects, not "
                                f"{type(o).__name__}")

    @classmethod
    def parse(cls, text: str) -> "Variant":
        """``"name:smap=0,smep=1,pkru=0x4,overlay=0x1000+0x2000:r-xs"`` (CLI form).
        Overlay rights: any of ``r w xs xu`` joined by ``-`` (``none`` for no rights)."""
        name, _, rest = text.partition(":")
        kw: dict = {}
        ovs = []
        for item in filter(None, (x.strip() for x in rest.split(","))):
            key, eq, val = item.partition("=")
            if not eq:
                raise ValueError(f"variant {name!r}: {item!r} is not key=value")
            key = key.strip().lower()
            if key == "overlay":
                rng, _, rights = val.partition(":")
                start, _, size = rng.partition("+")
                want = set() if rights in ("", "none") else set(rights.split("-"))
                bad = want - {"r", "w", "xs", "xu"}
                if bad or not size:
                    raise ValueError(f"variant {name!r}: overlay {val!r} should be "
                                     f"START+SIZE:RIGHTS with rights among r-w-xs-xu")
                ovs.append(Overlay(int(start, 0), int(size, 0), r="r" in want, w="w" in want,
                                   xs="xs" in want, xu="xu" in want))
            elif key == "pkru":
                kw["pkru"] = int(val, 0)
            elif key in CPU_DECIDE + CPU_WALK + TDP_WALK + ("ac",):
                if val.lower() not in ("0", "1", "true", "false", "on", "off"):
                    raise ValueError(f"variant {name!r}: {key}={val!r} should be 0 or 1")
                kw[key] = val.lower() in ("1", "true", "on")
            else:
                raise ValueError(f"variant {name!r}: unknown setting {key!r}; use one of "
                                 f"{', '.join(CPU_DECIDE + CPU_WALK + TDP_WALK)}, ac, pkru, overlay")
        return cls(name=name.strip(), overlays=tuple(ovs), **kw)

    def describe(self) -> str:
        parts = [f"{k}={int(v) if isinstance(v, bool) else hex(v)}"
                 for k, v in dataclasses.asdict(self).items()
                 if k not in ("name", "overlays") and v is not None]
        parts += [f"overlay {o}" for o in self.overlays]
        return ", ".join(parts) or "(as walked)"


BASELINE = Variant("baseline")


# --- walker variants ---------------------------------------------------------------------------

def _walker_for(walker, cpu_kw: dict, tdp_kw: dict, mem=None):
    """A PageWalk like ``walker`` with role fields replaced (and other host memory)."""
    from ..walk import PageWalk
    from ..bits import PagingMode
    mem = walker.mem if mem is None else mem
    tdp = None
    if walker.tdp is not None:
        t = walker.tdp
        tdp_kw = dict(tdp_kw)
        if (t.kind == "ept" and "mbec" in tdp_kw and "advanced_info" not in tdp_kw
                and t.role.advanced_info == t.role.mbec):
            tdp_kw["advanced_info"] = tdp_kw["mbec"]       # the default follows MBEC
        trole = dataclasses.replace(t.role, **tdp_kw) if tdp_kw else t.role
        tdp = PageWalk(trole, mem, t.cr3[0], semantics=t.semantics)
    elif tdp_kw:
        raise ValueError(f"{sorted(tdp_kw)} are EPT/NPT settings; this walker has no TDP")
    role = walker.role.replace(**cpu_kw) if cpu_kw else walker.role
    pd_ = None
    if role.mode is PagingMode.PAE and not (tdp is not None and tdp.kind == "npt"
                                            and walker.semantics == "hardware"):
        pd_ = walker.pdptes
    return PageWalk(role, mem, walker.cr3, pdptes=pd_, semantics=walker.semantics,
                    pkru=walker.pkru, tdp=tdp)


def _replace_role(role, **kw):
    return dataclasses.replace(role, **kw)


def _walk_key(walker, v: Variant):
    cpu = tuple((k, getattr(v, k)) for k in CPU_WALK if getattr(v, k) is not None)
    tdp = tuple((k, getattr(v, k)) for k in TDP_WALK if getattr(v, k) is not None)
    return cpu, tdp


_NARROW_1D = ("fault", "leaf_level", "acc", "pkey")
_NARROW_2D = _NARROW_1D + ("stage", "fault_level", "gpa", "tdp_page_shift", "tdp_acc")
_FLAG_OFFSETS = tuple(ACCESS_DTYPE.fields[f][1] for f in ("kind", "user", "ac", "implicit"))
_ONE_U1 = np.zeros(1, np.uint8)
_ONE_I8 = np.zeros(1, np.int64)
RECORD_CHUNK = 1 << 18


class WalkRecord:
    """One permissive walk of a batch under one set of walk-changing settings.

    The walk runs in chunks of ``chunk`` accesses and keeps only the narrow columns a class
    decision needs (``cols``: u1 fault, leaf_level, acc, pkey; for 2-D walks also stage,
    fault_level, tdp_page_shift, tdp_acc and u8 gpa), so memory is one chunk's full result
    plus a few bytes per access, and the chunk's buffers are reused. :meth:`full` (every
    column, one more walk) and :attr:`rec` (the (18, n) int64 matrix of
    :func:`vecmmu.kernels.decide.decide_full`) are made only when a variant's full result
    is asked for. ``table_pages``: the guest-table GPAs (>> 12) the batch's walks read
    (only collected for 2-D walks when overlays ask for it); ``seconds``: the walk's time."""

    def __init__(self, walker, acc, *, collect_tables: bool = False, chunk: int = RECORD_CHUNK,
                 threads=None):
        self.walker = walker
        self.threads = threads
        self.walker_permissive = permissive_walker(walker)
        self.nested = walker.tdp is not None
        collect = collect_tables and self.nested
        names = _NARROW_2D if self.nested else _NARROW_1D
        t0 = time.perf_counter()
        parts: dict = {k: [] for k in names + ("addr", "access", "part")}
        pages = []
        addr_views = True            # every row's address is the batch's own (no copy kept)
        split = False
        n_in = acc.shape[0]
        chunk = min(int(chunk), 1 << 16) if collect else int(chunk)    # traces are wide
        starts = range(0, max(n_in, 1), chunk)
        for lo in starts:
            a = acc[lo:lo + chunk]
            r = self.walker_permissive.translate(a, trace=collect, threads=threads)
            for k in names:
                parts[k].append(getattr(r, k))
            ra = r.addr
            if len(r) != a.shape[0]:
                split = True
                parts["access"].append(r.access + lo)
                parts["part"].append(r.part)
            else:
                parts["access"].append(None)
                parts["part"].append(None)
            own = len(r) == a.shape[0] and np.may_share_memory(ra, a)
            addr_views &= own
            parts["addr"].append(None if own else np.array(ra))
            if collect:
                ta = r.trace_addr
                pages.append(np.unique(ta[ta >= 0] >> 12))
            del r, ra
        self.cols = {k: _cat(parts[k]) for k in names}
        if split:
            self.cols["access"] = _cat([x if x is not None else np.arange(lo, min(lo + chunk, n_in))
                                        for lo, x in zip(starts, parts["access"])])
            self.cols["part"] = _cat([x if x is not None else np.zeros(min(chunk, n_in - lo), np.uint8)
                                      for lo, x in zip(starts, parts["part"])])
        if addr_views:
            self.cols["addr"] = acc["addr"]
        else:
            self.cols["addr"] = _cat([x if x is not None else np.array(acc["addr"][lo:lo + chunk])
                                      for lo, x in zip(starts, parts["addr"])])
        self.table_pages = (np.unique(np.concatenate(pages)) if pages else np.zeros(0, np.int64)) \
            if collect else None
        self.seconds = time.perf_counter() - t0
        self.n = len(self.cols["fault"])
        self.acc = acc
        # the batch rows behind the record rows, as bytes (kind, user, ac, implicit inside)
        rows = acc[self.cols["access"]] if split else np.ascontiguousarray(acc)
        self.rows = rows
        self.acc_bytes = rows.view(np.uint8).reshape(self.n, ACCESS_DTYPE.itemsize)
        self._rec = None
        self._full = None

    @property
    def access(self) -> np.ndarray:
        a = self.cols.get("access")
        return np.arange(self.n, dtype=np.int64) if a is None else a

    @property
    def addr(self) -> np.ndarray:
        return self.cols["addr"]

    def full(self) -> dict:
        """Every result column of the permissive walk (walked again, once, on first use)."""
        if self._full is None:
            self._full = self.walker_permissive.translate(self.acc, threads=self.threads).columns()
        return self._full

    @property
    def rec(self) -> np.ndarray:
        """The (18, n) int64 record :func:`vecmmu.kernels.decide.decide_full` reads."""
        if self._rec is None:
            cols = self.full()
            rec = np.empty((KD.N_REC, self.n), np.int64)
            for j, name in enumerate(NESTED_COLS):
                if name in cols:
                    c = cols[name]
                    rec[j] = c.view(np.int64) if c.dtype == np.uint64 else c
                else:
                    rec[j] = 0
            self._rec = rec
        return self._rec

    def flags(self, name) -> np.ndarray:
        """A contiguous copy of one access field per record row (kind, user, ac, implicit)."""
        return np.ascontiguousarray(self.rows[name])

    def decide(self, vps, perms, tperms, ov, kcols, fault, stage, write_stage):
        """Class (and stage) of every row under the variants ``vps``, into the columns
        ``kcols`` of ``fault`` / ``stage``."""
        c = self.cols
        if self.nested:
            extra = (c["stage"], c["leaf_level"], c["acc"], c["pkey"], c["fault_level"],
                     c["gpa"].view(np.int64), c["tdp_page_shift"], c["tdp_acc"])
        else:
            extra = (_ONE_U1, c["leaf_level"], c["acc"], c["pkey"], _ONE_U1, _ONE_I8, _ONE_U1,
                     _ONE_U1)
        parts = parts_for(c["fault"].shape[0], PASS_UNIT)
        run_parts(KD.decide_sweep, parts, parts, c["fault"], *extra, self.acc_bytes,
                  *_FLAG_OFFSETS, self.nested, vps, perms, tperms, ov, kcols, fault, stage,
                  write_stage)


def _cat(arrays):
    arrays = list(arrays)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _has(r, name) -> bool:
    try:
        getattr(r, name)
    except AttributeError:
        return False
    return True


def permissive_walker(walker):
    """``walker`` with the guest's most permissive decision settings (CR0.WP, SMEP, SMAP
    and PKE off, PKRU 0): an access that faults there faults under every decision-only
    variant; the walk and the TDP are unchanged."""
    from ..walk import PageWalk
    prole = _replace_role(walker.role, wp=False, smep=False, smap=False, pke=False)
    return PageWalk(prole, walker.mem, walker.cr3,
                    pdptes=walker.pdptes if _pdpte_regs(walker) else None,
                    semantics=walker.semantics, pkru=0, tdp=walker.tdp)


def _pdpte_regs(walker) -> bool:
    from ..bits import PagingMode
    return (walker.role.mode is PagingMode.PAE
            and not (walker.tdp is not None and walker.tdp.kind == "npt"
                     and walker.semantics == "hardware"))


# --- the sweep -----------------------------------------------------------------------------

class WhatIf:
    """Results of a sweep: ``matrix`` (rows × variants fault classes, a DataFrame of
    categoricals), :meth:`summary`, :meth:`diff`, :meth:`result` (a full
    :class:`~vecmmu.Translation` of one variant), ``plan`` (how each variant was computed)."""

    def __init__(self, walker, acc, variants, records, assign, fault, stage, plan, regions=None):
        self.walker = walker
        self.accesses = acc
        self.variants = list(variants)
        self.names = [v.name for v in self.variants]
        self._records = records
        self._assign = assign
        self.fault = fault                 # (n, K) u1 fault codes (vecmmu.bits.Fault, 8 = overlay)
        self.stage = stage                 # (n, K) u1 stages
        self.plan = plan
        base = records[assign[0][0]]
        self._base = base
        self.addr = base.addr
        self.kind = base.rows["kind"]
        self.user = base.rows["user"]
        self.gpa = base.cols.get("gpa")
        self.nested = walker.tdp is not None

    @property
    def access_index(self) -> np.ndarray:
        """The batch index of every row (rows = accesses unless an access crossed a page)."""
        return self._base.access

    @property
    def baseline(self) -> str:
        return self.names[0]

    def _faults(self, k) -> pd.Categorical:
        return pd.Categorical.from_codes(_CODE[self.fault[:, k]], dtype=WHATIF_FAULT_CATEGORIES)

    @property
    def matrix(self) -> pd.DataFrame:
        """One row per translation, one categorical column per variant: the fault class."""
        data = {"access": self.access_index, "addr": self.addr}
        for k, n in enumerate(self.names):
            data[n] = self._faults(k)
        return pd.DataFrame(data, copy=False)

    def summary(self) -> pd.DataFrame:
        """Tidy counts: (variant, fault, stage, count, share) over all translations."""
        n = self.fault.shape[0]
        rows = []
        for k, name in enumerate(self.names):
            key = self.fault[:, k].astype(np.int64) * 4 + self.stage[:, k]
            u, c = np.unique(key, return_counts=True)
            for kk, cnt in zip(u, c):
                rows.append((name, WHATIF_FAULT_NAMES[_CODE[kk // 4]], int(kk % 4), int(cnt)))
        df = pd.DataFrame(rows, columns=["variant", "fault", "stage", "count"])
        df["variant"] = pd.Categorical(df["variant"], categories=self.names, ordered=True)
        df["fault"] = pd.Categorical(df["fault"], dtype=WHATIF_FAULT_CATEGORIES)
        if not self.nested:
            df["stage"] = np.where(df["fault"] == "none", 0, 1)
        df["stage"] = pd.Categorical.from_codes(df["stage"].to_numpy(np.int8), dtype=STAGE_CATEGORIES)
        df["share"] = df["count"] / max(n, 1)
        return df.sort_values(["variant", "fault", "stage"], ignore_index=True)

    def totals(self) -> pd.DataFrame:
        """Per variant: translations, faults, fault share, and how it was computed."""
        nf = (self.fault != 0).sum(axis=0)
        return pd.DataFrame({"variant": self.names, "faults": nf,
                             "share": nf / max(self.fault.shape[0], 1),
                             "method": [self.plan[n]["method"] for n in self.names]})

    def changed(self, variant: str, baseline: str | None = None) -> np.ndarray:
        """Rows whose fault class differs from the baseline's."""
        k, b = self.names.index(variant), self.names.index(baseline or self.baseline)
        return self.fault[:, k] != self.fault[:, b]

    def diff(self, variant: str, baseline: str | None = None, *, by=None) -> pd.DataFrame:
        """Rows whose outcome differs from ``baseline`` (default: the first variant):
        ``change`` is ``newly faults``, ``stops faulting`` or ``fault changes``. With
        ``by`` (``"region"`` with ``regions=``, ``"2M"``, ``"1G"``, ``"page"``, ``"half"``,
        or an array of labels per row) the rows are counted per group instead."""
        b = baseline or self.baseline
        kv, kb = self.names.index(variant), self.names.index(b)
        fv, fb = self.fault[:, kv], self.fault[:, kb]
        rows = np.flatnonzero(fv != fb)
        change = np.where(fb[rows] == 0, 0, np.where(fv[rows] == 0, 1, 2))
        df = pd.DataFrame({
            "access": self.access_index[rows],
            "addr": pd.arrays.IntegerArray(self.addr[rows].astype(np.uint64),
                                           np.zeros(rows.size, bool)),
            "kind": pd.Categorical.from_codes(self.kind[rows].astype(np.int8),
                                              categories=["read", "write", "fetch"]),
            "privilege": pd.Categorical.from_codes(self.user[rows].astype(np.int8),
                                                   categories=["supervisor", "user"]),
            b: pd.Categorical.from_codes(_CODE[fb[rows]], dtype=WHATIF_FAULT_CATEGORIES),
            variant: pd.Categorical.from_codes(_CODE[fv[rows]], dtype=WHATIF_FAULT_CATEGORIES),
            "change": pd.Categorical.from_codes(change.astype(np.int8),
                                                categories=["newly faults", "stops faulting",
                                                            "fault changes"]),
        })
        if by is None:
            return df
        from .stats import region_labels
        labels = region_labels(self.addr, by)[rows] if isinstance(by, str) else np.asarray(by)[rows]
        df["region"] = labels
        out = df.groupby(["region", "change"], observed=False).size().unstack(fill_value=0)
        out = out.loc[out.sum(axis=1) > 0]
        return out.iloc[np.argsort(-out.sum(axis=1).to_numpy(), kind="stable")]

    def by_region(self, by="2M") -> pd.DataFrame:
        """Faults per region × variant (the heatmap's data)."""
        from .stats import region_labels
        labels = region_labels(self.addr, by) if isinstance(by, str) else np.asarray(by)
        data = {n: (self.fault[:, k] != 0) for k, n in enumerate(self.names)}
        df = pd.DataFrame(data)
        df["region"] = labels
        return df.groupby("region", observed=True, sort=True).sum()

    def result(self, variant: str) -> Translation:
        """A full :class:`~vecmmu.Translation` of one variant (every column), equal to a
        re-walk with that configuration (rows the record cannot complete are re-walked)."""
        k = self.names.index(variant)
        rk, v = self._assign[k]
        R = self._records[rk]
        p = self.plan[variant]
        out = np.empty((R.n, KD.N_REC), np.int64)
        need = np.empty(R.n, np.int8)
        parts = parts_for(R.n, PASS_UNIT)
        run_parts(KD.decide_full, parts, parts, R.rec, R.flags("kind"), R.flags("user"),
                  R.flags("ac"), R.flags("implicit"), p["vp"], p["perms"], p["tperms"], p["ov"],
                  out, need)
        full = R.full()
        cols = {k2: full[k2] for k2 in ("access", "part", "addr", "asid", "kind", "user")}
        names = NESTED_COLS if self.nested else [c for c in COLUMNS if c in NESTED_COLS]
        from ..walk import _typed
        for name in names:
            cols[name] = _typed(name, out[:, NESTED_COLS.index(name)])
        rew = np.flatnonzero(need == KD.NEED_REWALK)
        if rew.size:
            w = p["walker"]
            sel = R.acc[R.access[rew]]
            sel["addr"] = full["addr"][rew]
            sel["size"] = 1
            if v.ac is not None:
                sel["ac"] = int(v.ac)
            r = w.translate(sel, pkru=p["pkru"])
            for name in names:
                cols[name][rew] = getattr(r, name)
        tl = np.flatnonzero(need == KD.NEED_TDP_LEAF)
        if tl.size:
            t = self._records[rk].walker.tdp
            r = t.translate(cols["gpa"][tl], "read", user=False)
            cols["entry_addr"][tl] = r.entry_addr
            cols["entry_value"][tl] = r.entry_value
        name = R.walker.role.mode.name
        return Translation(cols, None, mode_name=f"what-if {variant!r} ({name})",
                           semantics=R.walker.semantics)


def _variant_params(R: WalkRecord, v: Variant, ov_lo: int, ov_hi: int, segs_fn):
    w = R.walker
    role = w.role.replace(**{k: getattr(v, k) for k in CPU_DECIDE if getattr(v, k) is not None})
    fmt = PageFormat.for_cpu(role, w.semantics,
                             pdpte_from_memory=(w.tdp is not None and w.tdp.kind == "npt"
                                                and w.semantics == "hardware"))
    pkru = int(v.pkru) if v.pkru is not None else int(w.pkru[0])
    vp = np.zeros(KD.N_VP, np.int64)
    vp[KD.VP_PKRU_MASK] = int(fmt.pkru_mask)
    vp[KD.VP_PKRU] = pkru
    vp[KD.VP_PFERR_FETCH] = int(bool(fmt.flags & FMT_PFERR_FETCH))
    vp[KD.VP_AC] = -1 if v.ac is None else int(v.ac)
    vp[KD.VP_OV_LO], vp[KD.VP_OV_HI] = ov_lo, ov_hi
    tperms = np.zeros(16, np.uint16)
    if w.tdp is not None:
        tf = w.tdp.format
        vp[KD.VP_TFLAGS] = int(tf.flags) | (KD.FMT_EXECONLY if getattr(w.tdp.role, "execonly", True)
                                            else 0)
        vp[KD.VP_TROOT] = int(tf.root_level)
        tperms = np.array(tf.permissions, np.uint16)   # writable, as the zeros above: one kernel type
    vp[KD.VP_KVM] = int(w.semantics == "kvm")
    from ..walk import PageWalk
    vwalker = PageWalk(role, w.mem, w.cr3, pdptes=w.pdptes if _pdpte_regs(w) else None,
                       semantics=w.semantics, pkru=pkru, tdp=w.tdp)
    return dict(vp=vp, perms=np.asarray(fmt.permissions, np.uint16), tperms=tperms,
                pkru=pkru, walker=vwalker)


def whatif(walker, accesses, variants, *, baseline: bool = True, threads=None,
           force_rewalk: bool = False, chunk: int = RECORD_CHUNK, **batch_kw) -> WhatIf:
    """Run a what-if sweep.

    ``walker``: a :class:`~vecmmu.PageWalk` (1-D or 2-D). ``accesses``: an access batch
    (or anything ``PageWalk.translate`` takes, with ``batch_kw``). ``variants``: a list of
    :class:`Variant` (or ``"name:key=value,..."`` strings); unless ``baseline=False`` the
    walker's own configuration is prepended as ``"baseline"``. ``force_rewalk``: walk every
    variant separately (for tests and benchmarks). ``chunk``: accesses per walk call (a
    record keeps a few bytes per access; one chunk's full result is the rest).
    """
    acc = as_accesses(accesses, **batch_kw)
    vs = [Variant.parse(v) if isinstance(v, str) else v for v in variants]
    if baseline and not any(v.name == "baseline" for v in vs):
        vs = [BASELINE] + vs
    names = [v.name for v in vs]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique: {names}")
    if walker.kind not in ("cpu", "nested"):
        raise ValueError("what-if sweeps take a guest walker (cpu_walk, or one on a tdp_walk)")
    any_ov = any(v.overlays for v in vs)
    if any_ov and (walker.tdp is None or walker.tdp.kind != "ept"):
        raise ValueError("overlays model EPT rights: they need a guest walker on an EPT tdp_walk")

    records: dict = {}
    plan: dict = {}
    assign = []
    # the base record (no walk-changing settings) also finds the guest-table pages
    base_key = ((), (), ())
    table_pages = None
    if any_ov:
        R0 = WalkRecord(walker, acc, collect_tables=True, threads=threads, chunk=chunk)
        records[base_key] = R0
        table_pages = R0.table_pages
    for i, v in enumerate(vs):
        cpu, tdp = _walk_key(walker, v)
        tab = tuple(OV.touches(v.overlays, table_pages)) if v.overlays else ()
        key = (cpu, tdp, tab) if not force_rewalk else ("own", i)
        if key not in records:
            w = walker
            if cpu or tdp or tab:
                mem = None
                if tab:
                    tw = _walker_for(walker, {}, dict(tdp)).tdp
                    mem, _mod = OV.apply_to_ept(tw, tab)
                w = _walker_for(walker, dict(cpu), dict(tdp), mem=mem)
            elif force_rewalk:
                w = _walker_for(walker, {}, {})
            records[key] = WalkRecord(w, acc, threads=threads, chunk=chunk)
        assign.append((key, v))
        if cpu or tdp or tab or force_rewalk:
            method = "re-walk" + (" (overlay on guest tables)" if tab else "")
        else:
            method = "decided from record"
        plan[v.name] = {"method": method, "key": key}
    # overlay segments of every variant, concatenated
    segs, vps, perms, tperms = [], [], [], []
    lo = 0
    for key, v in assign:
        s = OV.segments(v.overlays)
        segs.append(s)
        p = _variant_params(records[key], v, lo, lo + s.shape[0], None)
        p["ov"] = np.ascontiguousarray(s) if s.size else np.zeros((1, 3), np.int64)
        p["vp"] = p["vp"].copy()
        p["vp"][KD.VP_OV_LO], p["vp"][KD.VP_OV_HI] = 0, s.shape[0]
        plan[v.name].update(p)
        vp = p["vp"].copy()
        vp[KD.VP_OV_LO], vp[KD.VP_OV_HI] = lo, lo + s.shape[0]
        vps.append(vp)
        perms.append(p["perms"])
        tperms.append(p["tperms"])
        lo += s.shape[0]
    ov_all = np.ascontiguousarray(np.concatenate(segs)) if lo else np.zeros((1, 3), np.int64)
    base = records[assign[0][0]]
    n = base.n
    K = len(vs)
    fault = POOL.empty((n, K), np.uint8)           # every cell is written
    nested = walker.tdp is not None
    # a 1-D walk has no stages: the stage matrix stays untouched zero pages
    stage = POOL.empty((n, K), np.uint8) if nested else np.zeros((n, K), np.uint8)
    t0 = time.perf_counter()
    # variants that share a record are decided together (one pass over the record)
    for key in dict.fromkeys(k for k, _ in assign):
        ks = [j for j, (k2, _) in enumerate(assign) if k2 == key]
        R = records[key]
        if R.n != n:
            raise RuntimeError("records differ in length (page-crossing splits differ)")
        R.decide(np.stack([vps[j] for j in ks]), np.stack([perms[j] for j in ks]),
                 np.stack([tperms[j] for j in ks]), ov_all, np.asarray(ks, np.int64),
                 fault, stage, nested)
    decide_s = time.perf_counter() - t0
    wi = WhatIf(walker, acc, vs, records, assign, fault, stage, plan)
    wi.timing = {"walks": len(records), "walk_seconds": sum(r.seconds for r in records.values()),
                 "decide_seconds": decide_s}
    return wi
