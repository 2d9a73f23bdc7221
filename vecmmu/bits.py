"""Architectural constants: entry bits, ACC rights, error-code bits, enums.

Names follow KVM (``PT_*``, ``ACC_*``, ``PFERR_*``) so that a reader of
``arch/x86/kvm/mmu`` finds the same words here. Every bit position used anywhere in
vecmmu is defined in this file; format descriptors (:mod:`vecmmu.format`) turn them
into data for the kernels.
"""
from __future__ import annotations

import enum

# --- x86 paging-structure entry bits (32-bit, PAE, 4-level, 5-level) -----------------
PT_PRESENT = 1 << 0
PT_WRITABLE = 1 << 1
PT_USER = 1 << 2
PT_PWT = 1 << 3
PT_PCD = 1 << 4
PT_ACCESSED = 1 << 5
PT_DIRTY = 1 << 6
PT_PAGE_SIZE = 1 << 7          # PS in a PDE/PDPTE; PAT in a 4 KiB PTE
PT_PAT_4K = 1 << 7
PT_GLOBAL = 1 << 8
PT_PAT_LARGE = 1 << 12         # PAT bit of a 2 MiB / 4 MiB / 1 GiB leaf
PT_NX = 1 << 63
PT_PKEY_SHIFT = 59             # bits 62:59 of a 64-bit leaf
PT_PKEY_MASK = 0xF << PT_PKEY_SHIFT

# --- ACC rights (KVM's 4-bit layout after the MBEC series) ---------------------------
ACC_READ = 1
ACC_WRITE = 2
ACC_USER = 4
ACC_USER_EXEC = 4              # EPT XU shares the USER slot
ACC_EXEC = 8                   # x86: NX clear; EPT: XS
ACC_ALL = 15

# --- Page-fault error code -----------------------------------------------------------
PFERR_PRESENT = 1 << 0
PFERR_WRITE = 1 << 1
PFERR_USER = 1 << 2
PFERR_RSVD = 1 << 3
PFERR_FETCH = 1 << 4
PFERR_PK = 1 << 5
PFERR_SS = 1 << 6
PFERR_GUEST_FINAL = 1 << 32
PFERR_GUEST_PAGE = 1 << 33
PFERR_IMPLICIT_ACCESS = 1 << 48

# --- Control-register and EFER bits ----------------------------------------------------
CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_LA57 = 1 << 12
CR4_PCIDE = 1 << 17
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# --- Levels ----------------------------------------------------------------------------
PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
MAX_LEVELS = 5


class AccessKind(enum.IntEnum):
    """What the access does (the W and I/D bits of the error code)."""
    READ = 0
    WRITE = 1
    FETCH = 2


class Fault(enum.IntEnum):
    """Fault class of one translation (one column of a result)."""
    NONE = 0
    PF = 1                 # #PF
    GP = 2                 # #GP(0): non-canonical address
    SS = 3                 # #SS(0): non-canonical stack reference
    EPT_VIOLATION = 4
    EPT_MISCONFIG = 5
    NPF = 6
    UNBACKED = 7           # a table or final address outside every memslot


class PagingMode(enum.IntEnum):
    """Guest paging mode; the value is KVM's root level (0 = paging off)."""
    NONE = 0
    BIT32 = 2
    PAE = 3
    LEVEL4 = 4
    LEVEL5 = 5


FAULT_NAMES = {f.value: {"NONE": "none", "PF": "#PF", "GP": "#GP", "SS": "#SS",
                         "EPT_VIOLATION": "EPT violation", "EPT_MISCONFIG": "EPT misconfig",
                         "NPF": "#NPF", "UNBACKED": "unbacked"}[f.name] for f in Fault}
KIND_NAMES = {k.value: k.name.lower() for k in AccessKind}
MODE_NAMES = {PagingMode.NONE: "no paging", PagingMode.BIT32: "32-bit", PagingMode.PAE: "PAE",
              PagingMode.LEVEL4: "4-level", PagingMode.LEVEL5: "5-level"}


def bits(hi: int, lo: int) -> int:
    """Mask of bits hi..lo inclusive (KVM's rsvd_bits(lo, hi))."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo
