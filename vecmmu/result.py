"""Translation results: one typed record of equal-length arrays, with ``to_frame()``.

One row per translation. An access that crosses a 4 KiB boundary is two rows (``part`` 0
and 1) with the same ``access`` index; otherwise row i is access i.

============ ===== ===================================================================
column       dtype meaning
============ ===== ===================================================================
access       i8    index of the access in the batch
part         u1    0, or 1 for the second page of a page-crossing access
addr         u8    linear address translated (32-bit modes: truncated to 32 bits by the walk)
asid         u4    address space
kind, user   u1    from the batch
gpa          u8    guest-physical address (valid when ``has_gpa``)
fault        u1    :class:`vecmmu.bits.Fault`
error_code   u8    #PF error code (P W U RSVD I/D PK); 0 for other classes
fault_level  u1    level of the failing entry (leaf level for permission faults; level of
                   the unbacked table read; 0 for #GP and an unbacked final address)
entry_addr   u8    the failing entry's address (the leaf on success; the unbacked
entry_value  u8    address for UNBACKED) and value
leaf_level   u1    1 = 4 KiB, 2 = 2/4 MiB, 3 = 1 GiB; 0 when no leaf was reached
page_shift   u1    log2 of the page size (0 when no leaf)
acc          u1    accumulated ACC rights (READ=1 WRITE=2 USER=4 EXEC=8)
pkey         u1    protection key of the leaf (64-bit formats)
refs         u1    paging-structure entries read from memory
============ ===== ===================================================================

Two-dimensional walks (a cpu_walk on a tdp_walk) add:

============== ===== =================================================================
stage          u1    0 none, 1 guest (#PF/#GP), 2 nested fault on a guest paging-structure
                     access, 3 nested fault on the final GPA
exit_qual      u8    EPT violation exit qualification (0 otherwise); an #NPF's EXITINFO1
                     is its ``error_code`` (bits 32/33 = final/table)
fault_gpa      u8    the GPA a nested fault is about (full address; page-aligned with KVM)
guest_level    u1    for stage 2, the guest level whose table access faulted
hpa            u8    host-physical address (valid when ``has_hpa``)
tdp_page_shift u1    log2 of the TDP page that maps the final GPA
tdp_acc        u1    TDP rights of that translation (R=1 W=2 XU/U=4 XS/X=8)
============== ===== =================================================================

For nested faults ``fault_level``/``entry_*`` describe the failing TDP entry. A tdp_walk's
own results have ``addr`` = GPA, ``hpa``, ``stage``, ``exit_qual`` and the entry columns.

``trace_addr`` / ``trace_value`` (shape ``(n, 5)``, column ``level - 1``, -1 where no entry
was read at that level) are present when the walk was asked for a trace; a 2-D walk adds
``tdp_trace = (addr, value)`` of shape ``(n, 6, 5)``: row = guest level - 1 (5 = final
GPA), column = TDP level - 1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .bits import FAULT_NAMES, Fault

COLUMNS = ("access", "part", "addr", "asid", "kind", "user", "gpa", "fault", "error_code",
           "fault_level", "entry_addr", "entry_value", "leaf_level", "page_shift", "acc", "pkey",
           "refs")

FAULT_CATEGORIES = pd.CategoricalDtype([FAULT_NAMES[f.value] for f in Fault], ordered=False)
STAGE_CATEGORIES = pd.CategoricalDtype(["none", "guest", "table", "final"])
KIND_CATEGORIES = pd.CategoricalDtype(["read", "write", "fetch"])
PRIV_CATEGORIES = pd.CategoricalDtype(["supervisor", "user"])
PAGE_SIZE_CATEGORIES = pd.CategoricalDtype(["4K", "2M", "4M", "1G"], ordered=True)
_SHIFT_CODE = np.full(64, -1, dtype=np.int8)
_SHIFT_CODE[12], _SHIFT_CODE[21], _SHIFT_CODE[22], _SHIFT_CODE[30] = 0, 1, 2, 3
_FAULT_CODE = np.full(256, -1, dtype=np.int8)
for _j, _f in enumerate(Fault):
    _FAULT_CODE[_f.value] = _j


def _u64(values: np.ndarray, valid: np.ndarray | None = None) -> pd.arrays.IntegerArray:
    values = np.ascontiguousarray(values).view(np.uint64)
    mask = np.zeros(values.shape, dtype=bool) if valid is None else ~valid
    return pd.arrays.IntegerArray(values, mask)


def acc_string(acc: np.ndarray) -> np.ndarray:
    """'rwux'-style strings for ACC values (``-`` where a right is missing)."""
    table = np.array(["".join(c if a & b else "-" for c, b in zip("rwux", (1, 2, 4, 8)))
                      for a in range(16)])
    return table[np.asarray(acc, dtype=np.int64) & 15]


class Translation:
    """Results of one batch translation; columns are attributes (numpy arrays)."""

    def __init__(self, cols: dict, trace: tuple | None = None, *, tdp_trace: tuple | None = None,
                 mode_name: str = "", semantics: str = "hardware"):
        n = {len(v) for v in cols.values() if v is not None}
        if len(n) != 1:
            raise ValueError("result columns differ in length")
        self._cols = cols
        self.trace_addr, self.trace_value = trace if trace is not None else (None, None)
        self.tdp_trace = tdp_trace
        self.mode_name = mode_name
        self.semantics = semantics

    def __getattr__(self, name):
        cols = self.__dict__.get("_cols")
        if cols is not None:
            if name in cols:
                return cols[name]
            if name in ("access", "part"):           # no access was split: made on demand
                n = len(cols["addr"])
                return np.arange(n, dtype=np.int64) if name == "access" else np.zeros(n, np.uint8)
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self._cols["addr"])

    # -- derived columns ---------------------------------------------------------------------
    @property
    def nested(self) -> bool:
        return "stage" in self._cols and "gpa" in self._cols

    @property
    def has_gpa(self) -> np.ndarray:
        """Rows with a guest-physical address: the guest walk completed (success, an
        unbacked final address, or a nested fault on the final GPA or on the guest
        A/D-flag write that follows it)."""
        c = self._cols
        f = c["fault"]
        if "gpa" not in c:
            return np.ones(f.shape, dtype=bool)          # a tdp_walk: addr is the GPA
        if "stage" in c:
            st = c["stage"]
            return (f == Fault.NONE) | (st == 3) | ((st == 2) & (c["leaf_level"] > 0))
        return (f == Fault.NONE) | ((f == Fault.UNBACKED) & (c["fault_level"] == 0))

    @property
    def has_hpa(self) -> np.ndarray:
        c = self._cols
        if "hpa" not in c:
            return np.zeros(c["fault"].shape, dtype=bool)
        f, st = c["fault"], c["stage"]
        if "gpa" not in c:                                 # a tdp_walk: the HPA itself unbacked
            return (f == Fault.NONE) | ((f == Fault.UNBACKED) & (c["fault_level"] == 0))
        return (f == Fault.NONE) | ((f == Fault.UNBACKED) & (st == 3) & (c["fault_level"] == 0))

    @property
    def effective_page_size(self) -> np.ndarray:
        """What a TLB may cache: the smaller of the guest and TDP pages (successes only)."""
        ps = self.page_size
        if "tdp_page_shift" not in self._cols:
            return ps
        t = self._cols["tdp_page_shift"].astype(np.uint64)
        tps = np.where(t > 0, np.uint64(1) << t, np.uint64(0))
        g = np.where(ps > 0, ps, np.uint64(4096))
        return np.where(self._cols["fault"] == Fault.NONE, np.minimum(g, tps), np.uint64(0))

    @property
    def ok(self) -> np.ndarray:
        return self._cols["fault"] == Fault.NONE

    @property
    def page_size(self) -> np.ndarray:
        s = self._cols["page_shift"].astype(np.uint64)
        return np.where(s > 0, np.uint64(1) << s, np.uint64(0))

    @property
    def cr2(self) -> np.ndarray:
        """CR2 of each #PF (the linear address); 0 elsewhere."""
        return np.where(self._cols["fault"] == Fault.PF, self._cols["addr"], np.uint64(0))

    def columns(self) -> dict:
        out = dict(self._cols)
        for k in ("access", "part"):
            out.setdefault(k, getattr(self, k))
        return out

    # -- pandas ---------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """A tidy DataFrame, one row per translation.

        Addresses are ``UInt64`` with ``<NA>`` where they do not exist (``gpa`` on a
        fault, ``cr2`` unless #PF, ``entry_*`` when no entry was involved); fault class,
        access kind, privilege and page size are categoricals.
        """
        c = self._cols
        fault = c["fault"]
        pf = fault == Fault.PF
        entry_valid = (c["fault_level"] > 0) | (c["leaf_level"] > 0) | (fault == Fault.UNBACKED)
        data = {
            "access": self.access,
            "part": self.part,
            "asid": c["asid"],
            "addr": _u64(c["addr"]),
            "kind": pd.Categorical.from_codes(c["kind"].astype(np.int8), dtype=KIND_CATEGORIES),
            "privilege": pd.Categorical.from_codes(c["user"].astype(np.int8), dtype=PRIV_CATEGORIES),
            "fault": pd.Categorical.from_codes(_FAULT_CODE[fault], dtype=FAULT_CATEGORIES),
        }
        if "stage" in c:
            data["stage"] = pd.Categorical.from_codes(c["stage"].astype(np.int8), dtype=STAGE_CATEGORIES)
        if "gpa" in c:
            data["gpa"] = _u64(c["gpa"], self.has_gpa)
        if "hpa" in c:
            data["hpa"] = _u64(c["hpa"], self.has_hpa)
        data["error_code"] = _u64(c["error_code"])
        if "exit_qual" in c:
            data["exit_qual"] = _u64(c["exit_qual"])
        if "fault_gpa" in c:
            data["fault_gpa"] = _u64(c["fault_gpa"], (c["stage"] >= 2) & (fault != Fault.NONE))
        if "gpa" in c and "stage" not in c:
            data["cr2"] = _u64(c["addr"], pf)
        elif "gpa" in c:
            data["cr2"] = _u64(c["addr"], pf & (c["stage"] == 1))
        data["fault_level"] = c["fault_level"]
        if "guest_level" in c:
            data["guest_level"] = c["guest_level"]
        data["entry_addr"] = _u64(c["entry_addr"], entry_valid)
        data["entry_value"] = _u64(c["entry_value"], entry_valid & (fault != Fault.UNBACKED))
        data["leaf_level"] = c["leaf_level"]
        data["page_size"] = pd.Categorical.from_codes(_SHIFT_CODE[c["page_shift"]],
                                                      dtype=PAGE_SIZE_CATEGORIES)
        if "tdp_page_shift" in c:
            data["tdp_page_size"] = pd.Categorical.from_codes(_SHIFT_CODE[c["tdp_page_shift"]],
                                                              dtype=PAGE_SIZE_CATEGORIES)
            eff = self.effective_page_size
            shift = np.where(eff > 0, np.log2(np.maximum(eff, 1)).astype(np.int64), 0)
            data["effective_page_size"] = pd.Categorical.from_codes(_SHIFT_CODE[shift],
                                                                    dtype=PAGE_SIZE_CATEGORIES)
        data["rights"] = acc_string(c["acc"])
        data["acc"] = c["acc"]
        if "tdp_acc" in c:
            data["tdp_rights"] = acc_string(c["tdp_acc"])
        if "pkey" in c:
            data["pkey"] = c["pkey"]
        data["refs"] = c["refs"]
        return pd.DataFrame(data, copy=False)

    def trace_frame(self) -> pd.DataFrame:
        """The per-level trace in long form: (access, part, level, entry_addr, entry_value)."""
        if self.trace_addr is None:
            raise ValueError("this result has no trace: translate(..., trace=True)")
        rows, cols = np.nonzero(self.trace_addr >= 0)
        return pd.DataFrame({
            "access": self.access[rows],
            "part": self.part[rows],
            "level": (cols + 1).astype(np.uint8),
            "entry_addr": _u64(self.trace_addr[rows, cols]),
            "entry_value": _u64(self.trace_value[rows, cols]),
        }).sort_values(["access", "part", "level"], ascending=[True, True, False], ignore_index=True)

    def tdp_trace_frame(self) -> pd.DataFrame:
        """The TDP entries behind each guest table access and the final GPA, long form:
        (access, part, guest_level (0 = final GPA), tdp_level, entry_addr, entry_value)."""
        if self.tdp_trace is None:
            raise ValueError("this result has no 2-D trace: translate(..., trace=True) on a nested walk")
        ta, tv = self.tdp_trace
        rows, g, t = np.nonzero(ta >= 0)
        glevel = np.where(g == 5, 0, g + 1).astype(np.uint8)
        return pd.DataFrame({
            "access": self.access[rows], "part": self.part[rows],
            "guest_level": glevel, "tdp_level": (t + 1).astype(np.uint8),
            "entry_addr": _u64(ta[rows, g, t]), "entry_value": _u64(tv[rows, g, t]),
        })

    def summary(self, by=("fault", "kind", "privilege"), **kw) -> pd.DataFrame:
        """Counts and shares by fault class, access kind and privilege (or any columns of
        :func:`vecmmu.analysis.stats.fault_frame`): :func:`vecmmu.analysis.stats.fault_stats`."""
        from .analysis.stats import fault_stats
        return fault_stats(self, by, **kw)

    def __repr__(self) -> str:
        f = self._cols["fault"]
        counts = ", ".join(f"{FAULT_NAMES[int(v)]}: {int(n)}" for v, n in
                           zip(*np.unique(f, return_counts=True)))
        return f"Translation({len(self)} rows, {self.mode_name}, {self.semantics}; {counts})"
