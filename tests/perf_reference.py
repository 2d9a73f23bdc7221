"""A plain-Python model of the translation caches: the oracle for vecmmu.perf.

Written from the rules (SDM Vol. 3 §4.10.3-4.10.4, §28.3.3), one object per structure, one
OrderedDict per set for LRU order. It shares no code with :mod:`vecmmu.kernels.tlb`; it reads
a :class:`vecmmu.perf.TlbConfig` as a plain description (sizes, ways, page sizes) and a traced
:class:`vecmmu.Translation`.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

SIZE_SHIFTS = {"4K": (12,), "2M": (21, 22), "4M": (21, 22), "1G": (30,)}


class Structure:
    """A set-associative LRU cache of (key, pcid, vpid, eptp) -> global flag."""

    def __init__(self, cache, label, shifts=()):
        self.ways = cache.entries if cache.ways is None else cache.ways
        self.nsets = cache.entries // self.ways
        self.sets = [OrderedDict() for _ in range(self.nsets)]
        self.label = label
        self.shifts = sorted({s for name in cache.sizes for s in SIZE_SHIFTS[name]}) if shifts else ()

    def _set(self, idx):
        return self.sets[idx % self.nsets]

    def find(self, idx, match):
        s = self._set(idx)
        for k in list(s):
            if match(k, s[k]):
                s.move_to_end(k)
                return k, s[k]
        return None

    def add(self, idx, k, glob):
        s = self._set(idx)
        if k in s:
            s.move_to_end(k)
        elif len(s) >= self.ways:
            s.popitem(last=False)
        s[k] = glob

    def drop(self, pred):
        for s in self.sets:
            for k in [k for k in s if pred(k, s[k])]:
                del s[k]


class RefModel:
    def __init__(self, config, index_bits=9):
        self.cfg = config
        self.ib = index_bits
        self.l1 = [Structure(c, c.name or f"L1 {'/'.join(c.sizes)}", True) for c in config.l1]
        self.l2 = [Structure(c, c.name or f"L2 {'/'.join(c.sizes)}", True) for c in config.l2]
        self.ntlb = [Structure(c, "ntlb", True) for c in config.ntlb]
        self.psc, self.tpsc = {}, {}
        labels = {5: "PML5E cache", 4: "PML4E cache", 3: "PDPTE cache", 2: "PDE cache"}
        for lvl, f in ((5, "pml5e"), (4, "pml4e"), (3, "pdpte"), (2, "pde")):
            c = getattr(config, f)
            if c is not None:
                self.psc[lvl] = Structure(c, c.name or labels[lvl])
            c = getattr(config, "ept_" + f)
            if c is not None:
                self.tpsc[lvl] = Structure(c, "tdp")
        self.pte = Structure(config.pte, "PTE cache") if config.pte is not None else None
        self.line = config.pte_line
        self.pcid = self.vpid = self.eptp = 0
        self.now = 0

    # -- TLB lookups ----------------------------------------------------------------------
    def tlb_find(self, s, va, ctx_ok):
        for sh in s.shifts:
            vpn = va >> sh
            got = s.find(vpn, lambda k, g: k[0] == (vpn, sh) and ctx_ok(k, g))
            if got is not None:
                return sh, got[1]
        return None

    def tlb_add(self, structs, va, sh, glob, ctx):
        for s in structs:
            if sh in s.shifts:
                s.add(va >> sh, ((va >> sh, sh), *ctx), glob)

    # -- invalidation -----------------------------------------------------------------------
    def all_tlbs(self):
        return self.l1 + self.l2

    def drop_tlbs(self, pred):
        for s in self.all_tlbs():
            s.drop(pred)

    def drop_pscs(self, pred):
        for s in self.psc.values():
            s.drop(pred)
        if self.pte is not None:
            self.pte.drop(lambda k, g: True)

    def drop_va(self, va, pred):
        for s in self.all_tlbs():
            for sh in s.shifts:
                vpn = va >> sh
                s.drop(lambda k, g: k[0] == (vpn, sh) and pred(k, g))

    def event(self, kind, op, tag):
        vp = self.vpid
        if kind == "CR3":
            noflush = False
            if self.cfg.pcide:
                self.pcid, noflush = op & 0xFFF, bool(op >> 63)
            else:
                self.pcid = 0
            if not noflush:
                p = self.pcid
                self.drop_tlbs(lambda k, g: k[1] == p and k[2] == vp and not g)
                self.drop_pscs(lambda k, g: k[1] == p and k[2] == vp)
        elif kind == "INVLPG":
            p = self.pcid
            self.drop_va(op, lambda k, g: k[2] == vp and (k[1] == p or g))
            self.drop_pscs(lambda k, g: k[1] == p and k[2] == vp)
        elif kind == "INVPCID_ADDR":
            self.drop_va(op, lambda k, g: k[1] == tag and k[2] == vp and not g)
            self.drop_pscs(lambda k, g: k[1] == tag and k[2] == vp)
        elif kind == "INVPCID_CTX":
            self.drop_tlbs(lambda k, g: k[1] == tag and k[2] == vp and not g)
            self.drop_pscs(lambda k, g: k[1] == tag and k[2] == vp)
        elif kind in ("INVPCID_ALL", "FLUSH_ALL"):
            self.drop_tlbs(lambda k, g: k[2] == vp)
            self.drop_pscs(lambda k, g: k[2] == vp)
        elif kind == "INVPCID_ALL_NONGLOBAL":
            self.drop_tlbs(lambda k, g: k[2] == vp and not g)
            self.drop_pscs(lambda k, g: k[2] == vp)
        elif kind == "SET_VPID":
            self.vpid = op
        elif kind == "SET_EPTP":
            self.eptp = op
        elif kind == "INVVPID_ADDR":
            self.drop_va(op, lambda k, g: k[2] == tag)
            self.drop_pscs(lambda k, g: k[2] == tag)
        elif kind == "INVVPID_CTX":
            self.drop_tlbs(lambda k, g: k[2] == tag)
            self.drop_pscs(lambda k, g: k[2] == tag)
        elif kind == "INVVPID_CTX_NONGLOBAL":
            self.drop_tlbs(lambda k, g: k[2] == tag and not g)
            self.drop_pscs(lambda k, g: k[2] == tag)
        elif kind == "INVVPID_ALL":
            self.drop_tlbs(lambda k, g: True)
            self.drop_pscs(lambda k, g: True)
        elif kind in ("INVEPT_CTX", "INVEPT_ALL"):
            every = kind == "INVEPT_ALL"
            pred = (lambda k, g: True) if every else (lambda k, g: k[3] == tag)
            self.drop_tlbs(pred)
            self.drop_pscs(pred)
            for s in self.ntlb + list(self.tpsc.values()):
                s.drop(pred)
        else:
            raise ValueError(kind)

    # -- walks ------------------------------------------------------------------------------
    def read_entry(self, addr, guest):
        """1 if the entry comes from memory, 0 if the PTE cache has it."""
        if self.pte is None:
            return 1
        key = (addr // self.line, guest)
        idx = addr // self.line
        if self.pte.find(idx, lambda k, g: k[0] == key) is not None:
            return 0
        self.pte.add(idx, (key, 0, 0, 0), 0)
        return 1

    def nested(self, gpa, row, st):
        """GPA -> HPA for one guest table access or the final GPA; row = TDP addresses by level."""
        levels = [t for t in range(1, 6) if row[t - 1] >= 0]
        if not levels:
            return
        tleaf = min(levels)
        st["ntlb_lookups"] += 1
        ep = self.eptp
        for s in self.ntlb:
            if self.tlb_find(s, gpa, lambda k, g: k[3] == ep) is not None:
                st["ntlb_hits"] += 1
                return
        start = 6
        for t in range(2, 6):
            if t in self.tpsc and t > tleaf and row[t - 1] >= 0:
                key = gpa >> (12 + 9 * (t - 1))
                if self.tpsc[t].find(key, lambda k, g: k[0] == key and k[3] == ep) is not None:
                    start = t
                    break
        for t in range(start - 1, 0, -1):
            if row[t - 1] < 0:
                continue
            st["entries"] += 1
            r = self.read_entry(int(row[t - 1]), False)
            st["refs"] += r
            st["pte_hits"] += 1 - r
            if t > tleaf and t in self.tpsc:
                key = gpa >> (12 + 9 * (t - 1))
                self.tpsc[t].add(key, (key, 0, 0, ep), 0)
        self.tlb_add(self.ntlb, gpa, 12 + 9 * (tleaf - 1), 0, (0, 0, ep))

    def access(self, va, shift, glob, leaf, trace, gpa, ttrace):
        ctx = (self.pcid, self.vpid, self.eptp)
        st = dict(hit="walk", served="memory", psc_level=0, refs=0, entries=0, pte_hits=0,
                  ntlb_hits=0, ntlb_lookups=0)

        def ctx_ok(k, g):
            return tuple(k[1:]) == ctx or (g and tuple(k[2:]) == ctx[1:])

        for s in self.l1:
            if self.tlb_find(s, va, ctx_ok) is not None:
                st.update(hit="L1", served=s.label)
                return st
        for s in self.l2:
            got = self.tlb_find(s, va, ctx_ok)
            if got is not None:
                st.update(hit="L2", served=s.label)
                self.tlb_add(self.l1, va, got[0], got[1], ctx)
                return st
        start = 6
        for lvl in range(2, 6):
            if lvl in self.psc and lvl > leaf and trace[lvl - 1] >= 0:
                key = va >> (12 + self.ib * (lvl - 1))
                if self.psc[lvl].find(key, lambda k, g: k[0] == key and tuple(k[1:]) == ctx) is not None:
                    start = lvl
                    st.update(served=self.psc[lvl].label, psc_level=lvl)
                    break
        for lvl in range(start - 1, 0, -1):
            ea = int(trace[lvl - 1])
            if ea < 0:
                continue
            if ttrace is not None:
                self.nested(ea, ttrace[lvl - 1], st)
            st["entries"] += 1
            r = self.read_entry(ea, ttrace is not None)
            st["refs"] += r
            st["pte_hits"] += 1 - r
            if lvl > leaf and lvl in self.psc:
                key = va >> (12 + self.ib * (lvl - 1))
                self.psc[lvl].add(key, (key, *ctx), 0)
        if ttrace is not None:
            self.nested(gpa, ttrace[5], st)
        if shift:
            self.tlb_add(self.l2, va, shift, glob, ctx)
            self.tlb_add(self.l1, va, shift, glob, ctx)
        return st

    def run(self, res, events=()):
        """Per translation: dict(hit, served, psc_level, refs, entries, pte_hits, ntlb_*).
        ``events``: (pos, kind name, operand, tag) with pos an access index."""
        from vecmmu.bits import Fault
        n = len(res)
        cols = res.columns()
        nested = res.tdp_trace is not None
        access = cols["access"]
        events = [tuple(e) + (0,) * (4 - len(e)) for e in events]
        evs = sorted(((int(np.searchsorted(access, p, "left")), j, k, op, tag)
                      for j, (p, k, op, tag) in enumerate(events)))
        out = []
        e = 0
        pge = self.cfg.pge
        for i in range(n):
            while e < len(evs) and evs[e][0] <= i:
                _, _, k, op, tag = evs[e]
                self.event(k.upper(), int(op), int(tag))
                e += 1
            if cols["fault"][i] != Fault.NONE:
                out.append(dict(hit="fault", served="fault", psc_level=0, refs=int(cols["refs"][i]),
                                entries=0, pte_hits=0, ntlb_hits=0, ntlb_lookups=0))
                continue
            leaf = int(cols["leaf_level"][i])
            shift = int(cols["page_shift"][i])
            if nested:
                shift = min(shift or 12, int(cols["tdp_page_shift"][i]))
            glob = int(pge and (int(res.trace_value[i, leaf - 1]) >> 8) & 1)
            va = int(cols["addr"][i])
            out.append(self.access(va, shift, glob, leaf, res.trace_addr[i],
                                   int(cols["gpa"][i]) if nested else 0,
                                   res.tdp_trace[0][i] if nested else None))
        return out
