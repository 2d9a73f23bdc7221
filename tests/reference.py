"""The slow, obvious reference walker: the oracle every vecmmu kernel is compared with.

Written from the rules in ``../shared/DESIGN.md`` ("The semantics"),
``reference/kvm-mmu-semantics.md`` (sections 2-7) and ``reference/kvm-vs-hardware.md``
(K5, K6, K8, K9, K13 and R12-R16), not from any walker's source. It deliberately shares
nothing with :mod:`vecmmu`: it imports nothing from it, computes its own bit masks, uses
plain Python ints, one loop over the levels, and one small function per concern.

Public API::

    load_pdptes(read, cr3, maxphyaddr=52) -> list[int]
    translate(read, regs, access, semantics="hardware", ad=False) -> dict

``read(addr, nbytes)`` returns the little-endian unsigned value of ``nbytes`` (4 or 8) bytes
at physical address ``addr``, or ``None`` where no memory backs the address ("unbacked").
See :func:`translate` for the inputs and the result's keys.
"""
from __future__ import annotations

__all__ = ["GPFault", "UnbackedError", "load_pdptes", "translate"]

# ---------------------------------------------------------------------------------------
# Architectural bit positions (kept local on purpose: the oracle shares no code).
# ---------------------------------------------------------------------------------------
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

P = 1 << 0          # present
RW = 1 << 1         # writable
US = 1 << 2         # user
A = 1 << 5          # accessed
D = 1 << 6          # dirty
PS = 1 << 7         # page size (PDE/PDPTE); PAT in a 4 KiB PTE
BIT8 = 1 << 8       # G in a leaf; MBZ in an AMD PML4E/PML5E
XD = 1 << 63        # execute-disable (64-bit formats)

PFERR_P = 1
PFERR_W = 2
PFERR_U = 4
PFERR_RSVD = 8
PFERR_ID = 16
PFERR_PK = 32

ACC_READ = 1
ACC_WRITE = 2
ACC_USER = 4
ACC_EXEC = 8
ACC_ALL = 15

READ, WRITE, FETCH = 0, 1, 2

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

# Paging modes.
NO_PAGING = "none"
PAGING_32 = "32-bit"
PAGING_PAE = "pae"
PAGING_4 = "4-level"
PAGING_5 = "5-level"


class GPFault(Exception):
    """#GP(0) raised by loading PAE PDPTE registers (a present PDPTE with reserved bits)."""


class UnbackedError(Exception):
    """A physical address that no memory backs was read (outside a walk's own status)."""

    def __init__(self, addr):
        super().__init__(f"physical address {addr:#x} is not backed by memory")
        self.addr = addr


def bits(hi, lo):
    """Mask of bits hi..lo inclusive (0 when hi < lo)."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo


# ---------------------------------------------------------------------------------------
# Mode and geometry
# ---------------------------------------------------------------------------------------
def paging_mode(regs):
    """Paging mode from CR0/CR4/EFER (registers are assumed valid)."""
    if not regs["cr0"] & CR0_PG:
        return NO_PAGING
    if regs["efer"] & (EFER_LMA | EFER_LME):     # LMA, or LME with PG (checked above)
        return PAGING_5 if regs["cr4"] & CR4_LA57 else PAGING_4
    if regs["cr4"] & CR4_PAE:
        return PAGING_PAE
    return PAGING_32


def is_long_mode(mode):
    return mode in (PAGING_4, PAGING_5)


def entry_size(mode):
    """Bytes per paging-structure entry."""
    return 4 if mode == PAGING_32 else 8


def index_bits(mode):
    """Linear-address bits consumed per level."""
    return 10 if mode == PAGING_32 else 9


def table_index(mode, addr, level):
    """Index into the table read at `level` (level 1 = the page table)."""
    nbits = index_bits(mode)
    return (addr >> (12 + (level - 1) * nbits)) & ((1 << nbits) - 1)


def page_size(mode, level):
    """Bytes mapped by a leaf at `level`."""
    return 1 << (12 + (level - 1) * index_bits(mode))


def is_canonical(mode, addr):
    """4-level: bits 63:47 all equal; 5-level: bits 63:56 all equal."""
    top_bit = 56 if mode == PAGING_5 else 47
    upper = addr >> top_bit
    return upper == 0 or upper == (1 << (64 - top_bit)) - 1


# ---------------------------------------------------------------------------------------
# PAE PDPTE registers
# ---------------------------------------------------------------------------------------
def pdpte_base(cr3):
    """Address of the PAE PDPT: CR3 bits 31:5 (32-byte aligned)."""
    return cr3 & 0xFFFFFFE0


def load_pdptes(read, cr3, maxphyaddr=52):
    """The four PDPTE registers as MOV CR3 loads them in PAE mode.

    Raises GPFault when a present PDPTE has any of bits 63:MAXPHYADDR, 8:5, 2:1 set,
    and UnbackedError when a PDPTE's address is not backed.
    """
    rsvd = bits(63, maxphyaddr) | bits(8, 5) | bits(2, 1)
    pdptes = []
    for i in range(4):
        addr = pdpte_base(cr3) + 8 * i
        value = read(addr, 8)
        if value is None:
            raise UnbackedError(addr)
        if value & P and value & rsvd:
            raise GPFault(f"PDPTE{i} at {addr:#x} = {value:#x} has reserved bits "
                          f"{value & rsvd:#x} set (MAXPHYADDR={maxphyaddr})")
        pdptes.append(value)
    return pdptes


# ---------------------------------------------------------------------------------------
# Reserved bits, leaves, frames
# ---------------------------------------------------------------------------------------
def pse36_width(maxphyaddr):
    """Hardware PSE-36: number of PA bits above 31 a 4 MiB PDE supplies (M' - 32)."""
    m = min(maxphyaddr, 40)
    return max(m - 32, 0)


def reserved_mask(mode, level, bit7, regs, semantics):
    """Reserved (must-be-zero) bits of an entry at `level` whose bit 7 is `bit7`.

    Semantics section 6.1 table, plus R13 (AMD bits 8:7 in PML5E/PML4E) and R14/K6
    (32-bit PSE-36 width). Not used for PAE PDPTEs (the walk checks only their P bit).
    """
    maxphyaddr = regs.get("maxphyaddr", 52)
    if mode == PAGING_32:
        if level == 2 and bit7 and regs["cr4"] & CR4_PSE:
            if semantics == "kvm":
                return bits(21, 17)                         # KVM: PSE-36 is 4 bits wide
            return bits(21, 13 + pse36_width(maxphyaddr))   # SDM: bits 21:(M'-19)
        return 0                                            # 32-bit has no other reserved bits

    top = 62 if mode == PAGING_PAE else 51                  # PAE: 62:M; 4/5-level: 51:M
    mask = bits(top, maxphyaddr)
    if not regs["efer"] & EFER_NXE:
        mask |= XD
    if level >= 4:                                          # PML5E / PML4E
        mask |= PS
        if regs.get("vendor", "intel") == "amd":
            mask |= BIT8
    elif level == 3 and bit7:                               # 1 GiB page
        mask |= bits(29, 13)
        if not regs.get("gbpages", True):
            mask |= PS
    elif level == 2 and bit7:                               # 2 MiB page
        mask |= bits(20, 13)
    return mask


def is_leaf(mode, level, entry, regs):
    """Does the walk stop at this (present, non-reserved) entry?"""
    if level == 1:
        return True
    if mode == PAGING_32:                  # bit 7 of a PDE is ignored with CR4.PSE=0
        return bool(entry & PS) and bool(regs["cr4"] & CR4_PSE)
    return bool(entry & PS)                # illegal large pages were caught as reserved


def next_table(mode, entry):
    """Physical address of the table an entry points to."""
    if mode == PAGING_32:
        return entry & bits(31, 12)
    return entry & bits(51, 12)


def leaf_frame(mode, level, entry, regs, semantics):
    """Physical base address of the page a leaf maps."""
    if mode == PAGING_32:
        if level == 1:
            return entry & bits(31, 12)
        if semantics == "kvm":
            high = (entry >> 13) & 0xF                       # PDE 16:13 -> PA 35:32
        else:
            width = pse36_width(regs.get("maxphyaddr", 52))
            high = (entry >> 13) & ((1 << width) - 1)        # PDE (M'-20):13 -> PA (M'-1):32
        return (entry & bits(31, 22)) | (high << 32)
    return entry & bits(51, 12 + 9 * (level - 1))


def pkey_of(mode, entry):
    """Protection key of a 64-bit leaf (bits 62:59); 32-bit entries have none."""
    if mode == PAGING_32:
        return 0
    return (entry >> 59) & 0xF


# ---------------------------------------------------------------------------------------
# Rights and the permission decision
# ---------------------------------------------------------------------------------------
def acc_rights(writable, user, executable):
    """ACC bits from the rights accumulated over all levels (READ always)."""
    acc = ACC_READ
    if writable:
        acc |= ACC_WRITE
    if user:
        acc |= ACC_USER
    if executable:
        acc |= ACC_EXEC
    return acc


def access_is_user(access):
    """PFEC U: a CPL3 access that is not an implicit (always supervisor) access."""
    return bool(access.get("user", False)) and not bool(access.get("implicit", False))


def fetch_reports_id(mode, regs, semantics):
    """Is I/D reported in the error code of a faulting fetch? (K5)"""
    smep = bool(regs["cr4"] & CR4_SMEP)
    nxe = bool(regs["efer"] & EFER_NXE)
    if semantics == "kvm":
        return nxe or smep
    return smep or (nxe and mode in (PAGING_PAE, PAGING_4, PAGING_5))


def access_error_bits(access, mode, regs, semantics):
    """The W, U and I/D bits every #PF of this access carries."""
    code = 0
    if access["kind"] == WRITE:
        code |= PFERR_W
    if access_is_user(access):
        code |= PFERR_U
    if access["kind"] == FETCH and fetch_reports_id(mode, regs, semantics):
        code |= PFERR_ID
    return code


def rights_fault(acc, access, regs):
    """Page-rights part of the decision (semantics 5.2 x86 column, 5.3)."""
    w = access["kind"] == WRITE
    f = access["kind"] == FETCH
    u = access_is_user(access)
    smap_overridden = bool(access.get("ac", False)) and not bool(access.get("implicit", False))
    page_w = bool(acc & ACC_WRITE)
    page_u = bool(acc & ACC_USER)
    page_x = bool(acc & ACC_EXEC)
    cr4 = regs["cr4"]
    wp = bool(regs["cr0"] & CR0_WP)
    nx = bool(regs["efer"] & EFER_NXE)

    if w and not page_w and (u or wp):
        return True
    if u and not page_u:
        return True
    if f and nx and not page_x:
        return True
    if cr4 & CR4_SMEP and f and not u and page_u:
        return True
    if cr4 & CR4_SMAP and not f and not u and page_u and not smap_overridden:
        return True
    return False


def pkru_fault(acc, pkey, access, mode, regs):
    """Protection-key part (semantics 5.4): user pages, data accesses, long mode + CR4.PKE."""
    if not (regs["cr4"] & CR4_PKE and is_long_mode(mode)):
        return False
    if not acc & ACC_USER or access["kind"] == FETCH:
        return False
    pk = (regs.get("pkru", 0) >> (2 * pkey)) & 3
    access_disable = bool(pk & 1)
    write_disable = bool(pk & 2)
    if access_disable:
        return True
    if access["kind"] == WRITE and write_disable:
        return access_is_user(access) or bool(regs["cr0"] & CR0_WP)
    return False


# ---------------------------------------------------------------------------------------
# A/D flags
# ---------------------------------------------------------------------------------------
def ad_updates(entries, width, dirty_last):
    """(addr, width, new) writes setting A on `entries` (trace tuples, top first), and D
    on the last one when `dirty_last`. Only changes are written; an entry seen twice
    (a recursive table) is compared with its value after the earlier writes."""
    current = {}
    writes = []
    for i, (_level, addr, value) in enumerate(entries):
        old = current.get(addr, value)
        new = old | A
        if dirty_last and i == len(entries) - 1:
            new |= D
        if new != old:
            writes.append((addr, width, new))
            current[addr] = new
    return writes


# ---------------------------------------------------------------------------------------
# The walk
# ---------------------------------------------------------------------------------------
def new_result(ad):
    result = {
        "fault": "none",
        "gpa": None,
        "error_code": 0,
        "cr2": None,
        "fault_level": 0,
        "entry_addr": 0,
        "entry_value": 0,
        "leaf_level": 0,
        "page_size": 0,
        "acc": 0,
        "pkey": 0,
        "refs": 0,
        "trace": [],
    }
    if ad:
        result["ad_writes"] = []
    return result


def check_final_address(read, result, semantics):
    """Hardware reads the final address (unbacked -> its own status); KVM never does."""
    if semantics == "hardware" and read(result["gpa"], 1) is None:
        result["fault"] = "unbacked"
        result["entry_addr"] = result["gpa"]
        result["entry_value"] = 0
    return result


def translate(read, regs, access, semantics="hardware", ad=False):
    """Translate one linear address; see the module docstring and DESIGN.md.

    regs: cr0, cr3, cr4, efer (required); maxphyaddr (52), gbpages (True),
      vendor ('intel'|'amd'), pkru (0), pdptes (None: loaded from memory at CR3 with
      load_pdptes, whose GPFault / UnbackedError propagate: they belong to MOV CR3,
      not to this access).
    access: addr, kind (0 read, 1 write, 2 fetch), user, ac, implicit, stack.
    """
    if semantics not in ("hardware", "kvm"):
        raise ValueError(f"semantics must be 'hardware' or 'kvm', not {semantics!r}")
    result = new_result(ad)
    mode = paging_mode(regs)
    addr = access["addr"] & U64

    # 1. Canonical check (long mode), or truncation to 32 bits.
    if is_long_mode(mode):
        if not is_canonical(mode, addr):
            result["fault"] = "ss" if access.get("stack", False) else "gp"
            return result
    else:
        addr &= U32

    if mode == NO_PAGING:
        result["gpa"] = addr
        result["acc"] = ACC_ALL
        return check_final_address(read, result, semantics)

    size = entry_size(mode)
    maxphyaddr = regs.get("maxphyaddr", 52)
    error_bits = access_error_bits(access, mode, regs, semantics)
    trace = result["trace"]
    passed = []          # non-leaf entries the walk went below (for hardware A flags)

    def page_fault(level, entry_addr, entry_value, code):
        result.update(fault="pf", error_code=code | error_bits, cr2=addr, fault_level=level,
                      entry_addr=entry_addr, entry_value=entry_value, refs=len(trace))
        if ad and semantics == "hardware":
            result["ad_writes"] = ad_updates(passed, size, dirty_last=False)
        return result

    # 2. The root: CR3, or the PAE PDPTE register for addr bits 31:30.
    if mode == PAGING_32:
        table = regs["cr3"] & bits(31, 12)
        top_level = 2
    elif mode == PAGING_PAE:
        pdptes = regs.get("pdptes")
        if pdptes is None:
            pdptes = load_pdptes(read, regs["cr3"], maxphyaddr)
        i = (addr >> 30) & 3
        if not pdptes[i] & P:
            return page_fault(3, pdpte_base(regs["cr3"]) + 8 * i, pdptes[i], 0)
        table = next_table(mode, pdptes[i])
        top_level = 2
    else:
        table = regs["cr3"] & bits(maxphyaddr - 1, 12)
        top_level = 5 if mode == PAGING_5 else 4

    # 3. One loop over the levels.
    writable = user = executable = True
    level = top_level
    while True:
        entry_addr = table + table_index(mode, addr, level) * size
        entry = read(entry_addr, size)
        if entry is None:
            if semantics == "kvm":                      # K13: KVM reads it as not present
                return page_fault(level, entry_addr, 0, 0)
            result.update(fault="unbacked", fault_level=level, entry_addr=entry_addr,
                          entry_value=0, refs=len(trace))
            if ad:
                result["ad_writes"] = ad_updates(passed, size, dirty_last=False)
            return result
        trace.append((level, entry_addr, entry))
        if not entry & P:
            return page_fault(level, entry_addr, entry, 0)
        if entry & reserved_mask(mode, level, (entry >> 7) & 1, regs, semantics):
            return page_fault(level, entry_addr, entry, PFERR_P | PFERR_RSVD)
        writable = writable and bool(entry & RW)
        user = user and bool(entry & US)
        if mode != PAGING_32:
            executable = executable and not entry & XD
        if is_leaf(mode, level, entry, regs):
            break
        passed.append(trace[-1])
        table = next_table(mode, entry)
        level -= 1

    # 4. The leaf: rights and the permission decision.
    acc = acc_rights(writable, user, executable)
    pkey = pkey_of(mode, entry)
    result.update(leaf_level=level, page_size=page_size(mode, level), acc=acc, pkey=pkey,
                  refs=len(trace))
    rights = rights_fault(acc, access, regs)
    pk = pkru_fault(acc, pkey, access, mode, regs)
    if rights or pk:
        return page_fault(level, entry_addr, entry, PFERR_P | (PFERR_PK if pk else 0))

    # 5. Success: the physical address, A/D flags, then the final address.
    offset = addr & (page_size(mode, level) - 1)
    result.update(gpa=leaf_frame(mode, level, entry, regs, semantics) + offset,
                  entry_addr=entry_addr, entry_value=entry, fault_level=0)
    if ad:
        result["ad_writes"] = ad_updates(passed + [trace[-1]], size,
                                         dirty_last=access["kind"] == WRITE)
    return check_final_address(read, result, semantics)
