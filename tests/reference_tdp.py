"""The slow, obvious reference for nested (two-dimensional) translation: EPT and NPT.

Written from the rules in ``../shared/DESIGN.md`` ("The semantics"),
``reference/kvm-mmu-semantics.md`` (sections 1.2, 2, 3, 4.2, 4.3, 5.2, 6.2-6.4, 7.2-7.6, 8) and
``reference/kvm-vs-hardware.md`` (K1-K4, K7, K10-K13, R1-R12, R17, R18), not from any walker's
source. Like :mod:`reference` it imports nothing from :mod:`vecmmu`. The guest's own rules
(canonical check, reserved bits, leaves, rights, PKU, error code) are :mod:`reference`'s helper
functions, called one level at a time; this module adds the TDP walk under every guest
paging-structure access and under the final guest-physical address.

Public API::

    tdp_translate(read, tdp, gpa, access, semantics="hardware") -> dict
    translate_nested(read, regs, tdp, access, semantics="hardware") -> dict

``read(addr, nbytes)`` is host-physical memory (an int, or ``None`` where nothing backs the
address). Guest tables live at guest-physical addresses, so every guest entry read is
GPA -> (TDP walk) -> HPA -> ``read(HPA)``.

``tdp``:
  EPT: kind="ept", eptp (bits 2:0 memory type, 5:3 walk length - 1, 6 EPT A/D, 51:12 root),
       execonly (False), mbec (False), huge_level (3), advanced_info (= mbec), maxphyaddr (52).
  NPT: kind="npt", ncr3, cr4, efer (L1's; 5-level if EFER.LMA and CR4.LA57, 4-level if LMA,
       PAE if CR4.PAE without LMA; 32-bit NPT is rejected), gmet (False), l1_smep (False),
       maxphyaddr (52), gbpages (True).

Readings where the documents are silent are listed in the docstrings of the functions that
take them, and collected in the module's report (see ``READINGS`` below).
"""
from __future__ import annotations

import reference as ref
from reference import (ACC_ALL, ACC_EXEC, ACC_READ, ACC_USER, ACC_WRITE, FETCH, PFERR_ID,
                       PFERR_P, PFERR_RSVD, PFERR_U, PFERR_W, READ, U32, U64, WRITE, bits)

__all__ = ["tdp_translate", "translate_nested", "tdp_config"]

# ---------------------------------------------------------------------------------------
# Architectural bit positions (local on purpose).
# ---------------------------------------------------------------------------------------
EPT_R = 1 << 0
EPT_W = 1 << 1
EPT_XS = 1 << 2            # "X" without MBEC; supervisor-mode execute with MBEC
EPT_PS = 1 << 7
EPT_XU = 1 << 10           # user-mode execute (MBEC only)
EPTP_AD = 1 << 6

GUEST_A = 1 << 5           # x86 accessed (32-bit and 64-bit formats)
GUEST_D = 1 << 6           # x86 dirty

# EPT violation exit qualification.
Q_READ = 1 << 0
Q_WRITE = 1 << 1
Q_FETCH = 1 << 2
Q_PROT_R = 1 << 3
Q_PROT_W = 1 << 4
Q_PROT_XS = 1 << 5
Q_PROT_XU = 1 << 6
Q_GVA_VALID = 1 << 7
Q_GVA_TRANSLATED = 1 << 8
Q_GVA_USER = 1 << 9
Q_GVA_WRITABLE = 1 << 10
Q_GVA_NX = 1 << 11

# #NPF EXITINFO1 stage bits.
NPF_FINAL = 1 << 32
NPF_TABLE = 1 << 33

CR0_PG = ref.CR0_PG
CR0_WP = ref.CR0_WP
CR4_PAE = ref.CR4_PAE
CR4_LA57 = ref.CR4_LA57
CR4_SMAP = ref.CR4_SMAP
CR4_PKE = ref.CR4_PKE
EFER_LMA = ref.EFER_LMA
EFER_NXE = ref.EFER_NXE

PAGE_MASK = ~0xFFF & U64

READINGS = """
- EPTP validity (R8): memory type 0 or 6, walk length 4 or 5, bits 11:7 zero, bits 63:MAXPHYADDR
  zero; anything else raises ValueError (a VM-entry check, not a fault).
- Reach (R7): a GPA at or above the TDP's reach (48 bits for 4 levels, 52 for 5, 32 for PAE NPT)
  raises ValueError; translate_nested also rejects, up front, a guest whose mode can produce
  such GPAs (PAE/4/5-level: guest MAXPHYADDR; 32-bit: min(MAXPHYADDR, 40); paging off: 32).
- kvm mode, unbacked EPT/NPT entry: KVM reads the entry before AND-ing it into pte_access, so
  the qualification's bits 3-6 are the AND of the entries above the unreadable one (all ones
  at the root); entry_value is 0.
- tdp_acc USER is the AND of EPT bit 10 whether or not MBEC is on (KVM's gpte_access sets it
  unconditionally); MBEC only decides whether the permission check and qualification bit 6
  use it.
- Standalone tdp_translate: qualification bits 7 and 8 as for a walk (GVA valid; translated
  unless table=True); bits 9-11 from access['guest_acc'] (default: READ|WRITE|EXEC, plus USER
  when access['user']). A table access ignores kind/user and uses the table-access rules.
- NPT with GMET: the final access's U is reference.access_is_user (CPL3 and not implicit).
- Guest A/D-flag check (hardware, EPT A/D off): runs after the final GPA translated and before
  the final HPA's backing check (the data access comes after the flag updates).
"""


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------
def tdp_config(tdp):
    """Validate a ``tdp`` dict and return a flat configuration dict."""
    kind = tdp.get("kind")
    m = tdp.get("maxphyaddr", 52)
    if kind == "ept":
        eptp = tdp["eptp"] & U64
        memtype = eptp & 7
        levels = ((eptp >> 3) & 7) + 1
        if memtype not in (0, 6):
            raise ValueError(f"EPTP memory type {memtype} is not UC (0) or WB (6)")
        if levels not in (4, 5):
            raise ValueError(f"EPTP walk length {levels} is not 4 or 5")
        if eptp & bits(11, 7):
            raise ValueError("EPTP bits 11:7 must be 0")
        if eptp & bits(63, m):
            raise ValueError(f"EPTP bits 63:{m} must be 0")
        huge = tdp.get("huge_level", 3)
        if huge not in (1, 2, 3):
            raise ValueError("huge_level must be 1, 2 or 3")
        mbec = bool(tdp.get("mbec", False))
        return dict(kind="ept", levels=levels, root=eptp & bits(51, 12),
                    ad=bool(eptp & EPTP_AD), execonly=bool(tdp.get("execonly", False)),
                    mbec=mbec, huge_level=huge,
                    advanced=bool(tdp.get("advanced_info", mbec)), maxphyaddr=m,
                    reach=min(52, 12 + 9 * levels))
    if kind == "npt":
        cr4, efer = tdp["cr4"], tdp["efer"]
        if efer & EFER_LMA:
            if not cr4 & CR4_PAE:
                raise ValueError("L1 EFER.LMA without CR4.PAE")
            mode = ref.PAGING_5 if cr4 & CR4_LA57 else ref.PAGING_4
        elif cr4 & CR4_PAE:
            mode = ref.PAGING_PAE
        else:
            raise ValueError("32-bit (non-PAE) NPT is not supported")
        # The nested-NPT walker's registers: CR0 forced to PG|WP, CR4 without PKE and SMAP,
        # L1's EFER (NXE decides whether bit 63 is reserved), host MAXPHYADDR, AMD rules.
        l1 = dict(cr0=CR0_PG | CR0_WP, cr4=cr4 & ~(CR4_PKE | CR4_SMAP) & U64, efer=efer,
                  maxphyaddr=m, gbpages=tdp.get("gbpages", True), vendor="amd")
        reach = {ref.PAGING_PAE: 32, ref.PAGING_4: 48, ref.PAGING_5: 52}[mode]
        return dict(kind="npt", mode=mode, ncr3=tdp["ncr3"] & U64, regs=l1,
                    nxe=bool(efer & EFER_NXE), gmet=bool(tdp.get("gmet", False)),
                    l1_smep=bool(tdp.get("l1_smep", False)), maxphyaddr=m, reach=reach)
    raise ValueError(f"tdp kind must be 'ept' or 'npt', not {kind!r}")


# ---------------------------------------------------------------------------------------
# EPT format
# ---------------------------------------------------------------------------------------
def ept_present(entry, cfg):
    """Any of R/W/XS, or XU when MBEC is on."""
    return bool(entry & (EPT_R | EPT_W | EPT_XS)) or (cfg["mbec"] and bool(entry & EPT_XU))


def ept_reserved_mask(cfg, level, bit7):
    """Semantics 6.2: MAXPHYADDR bits; 7:3 in PML5E/PML4E; 6:3 in non-leaf PDPTE/PDE;
    bit 7 above huge_level; 29:12 / 20:12 in 1 GiB / 2 MiB leaves; nothing else at level 1."""
    mask = bits(51, cfg["maxphyaddr"])
    if level >= 4:
        return mask | bits(7, 3)
    if level == 1:
        return mask                          # bit 7 ignored, memtype/IPAT allowed
    if not bit7:
        return mask | bits(6, 3)             # non-leaf: no memory type, no IPAT
    mask |= bits(29, 12) if level == 3 else bits(20, 12)
    if cfg["huge_level"] < level:
        mask |= EPT_PS
    return mask


def ept_bad_mt_xwr(entry, cfg):
    """Semantics 6.3 (and R5): memory type 2, 3, 7; XWR 010 or 110; 100 without exec-only.
    With MBEC an XU bit counts as X for this check."""
    memtype = (entry >> 3) & 7
    xwr = entry & 7
    if cfg["mbec"] and entry & EPT_XU:
        xwr |= EPT_XS
    if memtype in (2, 3, 7):
        return True
    if xwr in (0b010, 0b110):
        return True
    return xwr == 0b100 and not cfg["execonly"]


def ept_acc(raw):
    """ACC layout of the AND of EPT entries: R=1, W=2, XU=4, XS=8."""
    acc = 0
    if raw & EPT_R:
        acc |= ACC_READ
    if raw & EPT_W:
        acc |= ACC_WRITE
    if raw & EPT_XU:
        acc |= ACC_USER
    if raw & EPT_XS:
        acc |= ACC_EXEC
    return acc


def ept_allows(raw, req, cfg):
    """Semantics 5.2, EPT column (smep = MBEC)."""
    if req["kind"] == WRITE:
        return bool(raw & EPT_W)
    if req["kind"] == FETCH:
        if cfg["mbec"] and req["user"]:
            return bool(raw & EPT_XU)
        return bool(raw & EPT_XS)
    return bool(raw & EPT_R)


# ---------------------------------------------------------------------------------------
# NPT permission (semantics 5.2, x86 column with tdp=True, smep=GMET, smap=False, wp=True)
# ---------------------------------------------------------------------------------------
def npt_fault(acc, req, cfg):
    w = req["kind"] == WRITE
    f = req["kind"] == FETCH
    u = req["user"]
    gmet = cfg["gmet"]
    if w and not acc & ACC_WRITE:
        return True
    if u and not acc & ACC_USER and not gmet:
        return True
    if f and cfg["nxe"] and not acc & ACC_EXEC:
        return True
    if gmet and f and not u and acc & ACC_USER:
        return True
    return False


# ---------------------------------------------------------------------------------------
# One TDP walk
# ---------------------------------------------------------------------------------------
def table_request(cfg, semantics):
    """The access a guest paging-structure read makes of the TDP (hardware / K1)."""
    if cfg["kind"] == "npt":
        return dict(kind=WRITE, user=True, table=True)           # user write, also under GMET
    write = semantics == "kvm" or cfg["ad"]
    return dict(kind=WRITE if write else READ, user=False, table=True)


def _outcome(**kw):
    out = dict(status="ok", hpa=None, leaf_level=0, page_size=0, acc=0, raw=U64,
               fault_level=0, entry_addr=0, entry_value=0, code=0, leaf_addr=0, leaf_value=0)
    out.update(kw)
    return out


def _ept_walk(read, cfg, gpa, req, semantics, glevel, log):
    raw = U64                       # AND of every entry read, failing one included
    table = cfg["root"]
    level = cfg["levels"]
    while True:
        addr = table + ((gpa >> (12 + 9 * (level - 1))) & 0x1FF) * 8
        entry = read(addr, 8)
        if entry is None:
            if semantics == "hardware":
                return _outcome(status="unbacked", raw=raw, fault_level=level,
                                entry_addr=addr, entry_value=0)
            # KVM: the read fails before the entry joins pte_access; reported as P=0.
            return _outcome(status="violation", raw=raw, fault_level=level,
                            entry_addr=addr, entry_value=0)
        log.append((glevel, level, addr, entry))
        raw &= entry
        if not ept_present(entry, cfg):
            return _outcome(status="violation", raw=raw, fault_level=level,
                            entry_addr=addr, entry_value=entry)
        if entry & ept_reserved_mask(cfg, level, bool(entry & EPT_PS)) \
                or ept_bad_mt_xwr(entry, cfg):
            return _outcome(status="misconfig", raw=raw, fault_level=level,
                            entry_addr=addr, entry_value=entry)
        if level == 1 or entry & EPT_PS:
            break
        table = entry & bits(51, 12)
        level -= 1
    size = 1 << (12 + 9 * (level - 1))
    hpa = (entry & bits(51, 12 + 9 * (level - 1))) + (gpa & (size - 1))
    leaf = dict(leaf_level=level, page_size=size, acc=ept_acc(raw), raw=raw,
                leaf_addr=addr, leaf_value=entry)
    if not ept_allows(raw, req, cfg):
        return _outcome(status="violation", fault_level=level, entry_addr=addr,
                        entry_value=entry, **leaf)
    return _outcome(hpa=hpa, **leaf)


def _npt_walk(read, cfg, gpa, req, semantics, glevel, log):
    mode, l1 = cfg["mode"], cfg["regs"]
    m = cfg["maxphyaddr"]

    def fault(status, level, addr, value, code=0, **kw):
        return _outcome(status=status, fault_level=level, entry_addr=addr, entry_value=value,
                        code=code, **kw)

    if mode == ref.PAGING_PAE:
        # PAE NPT: the PDPTE is read from memory on every walk (a reference).
        addr = ((cfg["ncr3"] & ~0x1F) & U64) + 8 * ((gpa >> 30) & 3)
        pdpte = read(addr, 8)
        if pdpte is None:
            if semantics == "hardware":
                return fault("unbacked", 3, addr, 0)
            return fault("npf", 3, addr, 0)
        log.append((glevel, 3, addr, pdpte))
        if not pdpte & ref.P:
            return fault("npf", 3, addr, pdpte)
        if semantics == "hardware" and pdpte & (bits(63, m) | bits(8, 5) | bits(2, 1)):
            return fault("npf", 3, addr, pdpte, PFERR_P | PFERR_RSVD)
        table = ref.next_table(mode, pdpte)
        level = 2
    else:
        table = cfg["ncr3"] & bits(m - 1, 12)
        level = 5 if mode == ref.PAGING_5 else 4

    writable = user = executable = True
    while True:
        addr = table + ref.table_index(mode, gpa, level) * 8
        entry = read(addr, 8)
        if entry is None:
            if semantics == "hardware":
                return fault("unbacked", level, addr, 0)
            return fault("npf", level, addr, 0)
        log.append((glevel, level, addr, entry))
        if not entry & ref.P:
            return fault("npf", level, addr, entry)
        if entry & ref.reserved_mask(mode, level, (entry >> 7) & 1, l1, semantics):
            return fault("npf", level, addr, entry, PFERR_P | PFERR_RSVD)
        writable = writable and bool(entry & ref.RW)
        user = user and bool(entry & ref.US)
        executable = executable and not entry & ref.XD
        if ref.is_leaf(mode, level, entry, l1):
            break
        table = ref.next_table(mode, entry)
        level -= 1
    acc = ref.acc_rights(writable, user, executable)
    size = ref.page_size(mode, level)
    hpa = ref.leaf_frame(mode, level, entry, l1, semantics) + (gpa & (size - 1))
    leaf = dict(leaf_level=level, page_size=size, acc=acc, leaf_addr=addr, leaf_value=entry)
    if npt_fault(acc, req, cfg):
        return fault("npf", level, addr, entry, PFERR_P, **leaf)
    return _outcome(hpa=hpa, **leaf)


def tdp_walk(read, cfg, gpa, req, semantics, glevel, log):
    """Translate one GPA. `req`: kind, user, table. Appends every entry read to `log` as
    (glevel, tdp_level, hpa, value). Returns an outcome dict (status ok / violation /
    misconfig / npf / unbacked)."""
    if gpa < 0 or gpa >= 1 << cfg["reach"]:
        raise ValueError(f"GPA {gpa:#x} is beyond the {cfg['reach']}-bit reach of the "
                         f"TDP walk (R7)")
    if cfg["kind"] == "ept":
        return _ept_walk(read, cfg, gpa, req, semantics, glevel, log)
    return _npt_walk(read, cfg, gpa, req, semantics, glevel, log)


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
def new_result():
    return {
        "fault": "none",
        "stage": "none",
        "gpa": None,
        "hpa": None,
        "error_code": 0,
        "exit_qual": 0,
        "fault_gpa": None,
        "cr2": None,
        "fault_level": 0,
        "entry_addr": 0,
        "entry_value": 0,
        "guest_level": 0,
        "leaf_level": 0,
        "page_size": 0,
        "acc": 0,
        "pkey": 0,
        "tdp_leaf_level": 0,
        "tdp_page_size": 0,
        "tdp_acc": 0,
        "effective_page_size": 0,
        "refs": 0,
        "trace": [],
        "tdp_trace": [],
    }


def ept_qualification(cfg, req, raw, final, guest_acc, semantics):
    """Exit qualification of an EPT violation (semantics 7.5, R3, R4)."""
    q = 0
    if req["table"]:
        q |= Q_READ                                   # every paging-structure access
        if req["kind"] == WRITE:
            q |= Q_WRITE
    elif req["kind"] == WRITE:
        q |= Q_WRITE
    elif req["kind"] == FETCH:
        q |= Q_FETCH
    else:
        q |= Q_READ
    if raw & EPT_R:
        q |= Q_PROT_R
    if raw & EPT_W:
        q |= Q_PROT_W
    if raw & EPT_XS:
        q |= Q_PROT_XS
    if cfg["mbec"] and raw & EPT_XU:
        q |= Q_PROT_XU
    q |= Q_GVA_VALID
    if final:
        q |= Q_GVA_TRANSLATED
        if cfg["advanced"] and semantics == "hardware":
            if guest_acc & ACC_USER:
                q |= Q_GVA_USER
            if guest_acc & ACC_WRITE:
                q |= Q_GVA_WRITABLE
            if not guest_acc & ACC_EXEC:
                q |= Q_GVA_NX
    return q


def npf_code(cfg, req, base, final, semantics):
    """EXITINFO1 of a #NPF: P/RSVD from the walk, W and U from the access, I/D (K7), stage."""
    code = base
    if req["kind"] == WRITE:
        code |= PFERR_W
    if req["user"]:
        code |= PFERR_U
    if req["kind"] == FETCH and final:
        if semantics == "hardware" or cfg["nxe"] or cfg["l1_smep"]:
            code |= PFERR_ID
    return code | (NPF_FINAL if final else NPF_TABLE)


def record_nested_fault(result, cfg, w, gpa, req, stage, guest_level, guest_acc, semantics):
    """Fill `result` with the fault of TDP outcome `w` (not 'ok')."""
    final = stage == "final"
    result.update(stage=stage, guest_level=guest_level, fault_level=w["fault_level"],
                  entry_addr=w["entry_addr"], entry_value=w["entry_value"], hpa=None,
                  fault_gpa=gpa if semantics == "hardware" else gpa & PAGE_MASK,
                  error_code=0, exit_qual=0, cr2=None)
    status = w["status"]
    if status == "unbacked":
        result["fault"] = "unbacked"
    elif status == "misconfig":
        result["fault"] = "ept_misconfig"             # qualification 0 (R6)
    elif status == "violation":
        result["fault"] = "ept_violation"
        result["exit_qual"] = ept_qualification(cfg, req, w["raw"], final, guest_acc,
                                                semantics)
    else:
        result["fault"] = "npf"
        result["error_code"] = npf_code(cfg, req, w["code"], final, semantics)
    return result


def set_tdp_leaf(result, w):
    if w["leaf_level"]:
        result.update(tdp_leaf_level=w["leaf_level"], tdp_page_size=w["page_size"],
                      tdp_acc=w["acc"])


def finish(result):
    result["refs"] = len(result["trace"]) + len(result["tdp_trace"])
    if result["fault"] != "none":
        result["effective_page_size"] = 0
    return result


# ---------------------------------------------------------------------------------------
# One GPA
# ---------------------------------------------------------------------------------------
def tdp_translate(read, tdp, gpa, access, semantics="hardware"):
    """Translate one guest-physical address through EPT or NPT.

    access: kind (0 read, 1 write, 2 fetch), user (user-mode: MBEC XU / NPT U), table (a
    guest paging-structure access: kind and user then follow the table-access rules),
    guest_acc (optional, for qualification bits 9-11; default READ|WRITE|EXEC, plus USER
    when user). Result keys as translate_nested; guest fields are zero.
    """
    if semantics not in ("hardware", "kvm"):
        raise ValueError(f"semantics must be 'hardware' or 'kvm', not {semantics!r}")
    cfg = tdp_config(tdp)
    result = new_result()
    table = bool(access.get("table", False))
    if table:
        req = table_request(cfg, semantics)
    else:
        req = dict(kind=access["kind"], user=bool(access.get("user", False)), table=False)
    guest_acc = access.get("guest_acc",
                           ACC_READ | ACC_WRITE | ACC_EXEC | (ACC_USER if req["user"] else 0))
    stage = "table" if table else "final"
    result["gpa"] = gpa
    w = tdp_walk(read, cfg, gpa, req, semantics, 0, result["tdp_trace"])
    set_tdp_leaf(result, w)
    if w["status"] != "ok":
        record_nested_fault(result, cfg, w, gpa, req, stage, 0, guest_acc, semantics)
        return finish(result)
    result.update(hpa=w["hpa"], entry_addr=w["leaf_addr"], entry_value=w["leaf_value"])
    if semantics == "hardware" and read(w["hpa"], 1) is None:
        result.update(fault="unbacked", stage=stage, fault_gpa=gpa, entry_addr=w["hpa"],
                      entry_value=0)
        return finish(result)
    result["effective_page_size"] = w["page_size"]
    return finish(result)


# ---------------------------------------------------------------------------------------
# A guest linear address, two-dimensional
# ---------------------------------------------------------------------------------------
def guest_gpa_width(mode, regs, semantics):
    """How many GPA bits the guest's mode can produce (for the R7 up-front check)."""
    m = regs.get("maxphyaddr", 52)
    if mode == ref.NO_PAGING:
        return 32
    if mode == ref.PAGING_32:
        return 36 if semantics == "kvm" else max(min(m, 40), 32)
    return m


def final_user(cfg, access, acc):
    """Is the final GPA access user-mode for the TDP?  EPT+MBEC: the guest walk's U/S (R18:
    ACC_ALL with paging off). NPT: always, except under GMET where it is CPL3 (R9)."""
    if cfg["kind"] == "ept":
        return bool(acc & ACC_USER)
    if cfg["gmet"]:
        return ref.access_is_user(access)
    return True


def translate_nested(read, regs, tdp, access, semantics="hardware"):
    """Translate a guest linear address through the guest's tables and EPT/NPT.

    regs and access as :func:`reference.translate` (regs['pdptes'] is required for a PAE
    guest under EPT, and under NPT with semantics='kvm'; hardware NPT reads the PDPTE on
    every walk, R10). See the module docstring and the brief in DESIGN.md for the keys.
    """
    if semantics not in ("hardware", "kvm"):
        raise ValueError(f"semantics must be 'hardware' or 'kvm', not {semantics!r}")
    cfg = tdp_config(tdp)
    result = new_result()
    mode = ref.paging_mode(regs)
    if guest_gpa_width(mode, regs, semantics) > cfg["reach"]:
        raise ValueError(f"guest GPA width exceeds the {cfg['reach']}-bit reach of the "
                         f"TDP walk (R7)")
    addr = access["addr"] & U64
    trace, log = result["trace"], result["tdp_trace"]

    # 1. Canonical check (long mode), or truncation to 32 bits.
    if ref.is_long_mode(mode):
        if not ref.is_canonical(mode, addr):
            result.update(fault="ss" if access.get("stack", False) else "gp", stage="guest")
            return finish(result)
    else:
        addr &= U32

    def final_step(gpa, acc, guest_page_size, table_walks):
        """The final GPA through the TDP, the guest A/D-write check, the backing check."""
        result["gpa"] = gpa
        req = dict(kind=access["kind"], user=final_user(cfg, access, acc), table=False)
        w = tdp_walk(read, cfg, gpa, req, semantics, 0, log)
        set_tdp_leaf(result, w)
        if w["status"] != "ok":
            record_nested_fault(result, cfg, w, gpa, req, "final", 0, acc, semantics)
            return finish(result)
        # Guest A/D flags (hardware, EPT with A/D off; R2/R3/R12): each entry whose A (or,
        # on a write, the leaf's D) must be set needs EPT W on its table page, top first.
        if semantics == "hardware" and cfg["kind"] == "ept" and not cfg["ad"]:
            for i, (glevel, entry_gpa, value, tw) in enumerate(table_walks):
                needs = not value & GUEST_A
                if i == len(table_walks) - 1 and access["kind"] == WRITE:
                    needs = needs or not value & GUEST_D
                if needs and not tw["raw"] & EPT_W:
                    result.update(fault="ept_violation", stage="table", guest_level=glevel,
                                  fault_gpa=entry_gpa, fault_level=tw["leaf_level"],
                                  entry_addr=tw["leaf_addr"], entry_value=tw["leaf_value"],
                                  exit_qual=ept_qualification(
                                      cfg, dict(kind=WRITE, user=False, table=True),
                                      tw["raw"], False, acc, semantics))
                    return finish(result)
        result["hpa"] = w["hpa"]
        if semantics == "hardware" and read(w["hpa"], 1) is None:
            result.update(fault="unbacked", stage="final", fault_gpa=gpa,
                          fault_level=0, entry_addr=w["hpa"], entry_value=0)
            return finish(result)
        result["effective_page_size"] = min(guest_page_size or 4096, w["page_size"])
        return finish(result)

    if mode == ref.NO_PAGING:
        result["acc"] = ACC_ALL
        return final_step(addr, ACC_ALL, 0, [])

    size = ref.entry_size(mode)
    maxphyaddr = regs.get("maxphyaddr", 52)
    error_bits = ref.access_error_bits(access, mode, regs, semantics)
    treq = table_request(cfg, semantics)
    table_walks = []            # (guest level, entry GPA, value, TDP outcome) for A/D checks

    def page_fault(level, entry_addr, entry_value, code):
        result.update(fault="pf", stage="guest", error_code=code | error_bits, cr2=addr,
                      fault_level=level, entry_addr=entry_addr, entry_value=entry_value)
        return finish(result)

    def guest_read(level, entry_gpa):
        """One guest paging-structure read: TDP walk (stage table), then the host read.
        Returns the entry, or None after filling `result` with the fault."""
        w = tdp_walk(read, cfg, entry_gpa, treq, semantics, level, log)
        if w["status"] != "ok":
            record_nested_fault(result, cfg, w, entry_gpa, treq, "table", level, 0, semantics)
            finish(result)
            return None, w
        value = read(w["hpa"], size)
        if value is None:
            if semantics == "kvm":                      # K13: not present
                page_fault(level, entry_gpa, 0, 0)
            else:
                result.update(fault="unbacked", stage="table", guest_level=level,
                              fault_level=level, entry_addr=w["hpa"], entry_value=0,
                              fault_gpa=entry_gpa)
                finish(result)
            return None, w
        trace.append((level, entry_gpa, value))
        return value, w

    # 2. The root.
    if mode == ref.PAGING_32:
        table = regs["cr3"] & bits(31, 12)
        top_level = 2
    elif mode == ref.PAGING_PAE:
        i = (addr >> 30) & 3
        pdpte_gpa = ref.pdpte_base(regs["cr3"]) + 8 * i
        if cfg["kind"] == "npt" and semantics == "hardware":
            # R10: no PDPTE registers on AMD under NPT; a guest table access every walk.
            pdpte, _w = guest_read(3, pdpte_gpa)
            if pdpte is None:
                return result
            if not pdpte & ref.P:
                return page_fault(3, pdpte_gpa, pdpte, 0)
            if pdpte & (bits(63, maxphyaddr) | bits(8, 5) | bits(2, 1)):
                return page_fault(3, pdpte_gpa, pdpte, PFERR_P | PFERR_RSVD)
        else:
            pdptes = regs.get("pdptes")
            if pdptes is None:
                raise ValueError("a PAE guest under EPT (or kvm-mode NPT) needs regs['pdptes']")
            pdpte = pdptes[i]
            if not pdpte & ref.P:
                return page_fault(3, pdpte_gpa, pdpte, 0)
        table = ref.next_table(mode, pdpte)
        top_level = 2
    else:
        table = regs["cr3"] & bits(maxphyaddr - 1, 12)
        top_level = 5 if mode == ref.PAGING_5 else 4

    # 3. One loop over the guest levels.
    writable = user = executable = True
    level = top_level
    while True:
        entry_addr = table + ref.table_index(mode, addr, level) * size
        entry, w = guest_read(level, entry_addr)
        if entry is None:
            return result
        if not entry & ref.P:
            return page_fault(level, entry_addr, entry, 0)
        if entry & ref.reserved_mask(mode, level, (entry >> 7) & 1, regs, semantics):
            return page_fault(level, entry_addr, entry, PFERR_P | PFERR_RSVD)
        table_walks.append((level, entry_addr, entry, w))
        writable = writable and bool(entry & ref.RW)
        user = user and bool(entry & ref.US)
        if mode != ref.PAGING_32:
            executable = executable and not entry & ref.XD
        if ref.is_leaf(mode, level, entry, regs):
            break
        table = ref.next_table(mode, entry)
        level -= 1

    # 4. The guest leaf: rights and the permission decision.
    acc = ref.acc_rights(writable, user, executable)
    pkey = ref.pkey_of(mode, entry)
    psize = ref.page_size(mode, level)
    result.update(leaf_level=level, page_size=psize, acc=acc, pkey=pkey)
    rights = ref.rights_fault(acc, access, regs)
    pk = ref.pkru_fault(acc, pkey, access, mode, regs)
    if rights or pk:
        return page_fault(level, entry_addr, entry, PFERR_P | (ref.PFERR_PK if pk else 0))

    # 5. The final GPA.
    gpa = ref.leaf_frame(mode, level, entry, regs, semantics) + (addr & (psize - 1))
    result.update(entry_addr=entry_addr, entry_value=entry, fault_level=0)
    return final_step(gpa, acc, psize, table_walks)
