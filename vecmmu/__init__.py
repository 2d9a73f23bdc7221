"""vecmmu: batch simulation of x86 address translation, in the shape of KVM's MMU.

The three parts (KVM's names in brackets):

- :class:`PageFormat` (``kvm_page_format``): reserved bits, permission table, pkru mask
- :class:`PageWalk` (``kvm_pagewalk``): walks existing tables; ``cpu_walk`` for guest tables,
  ``tdp_walk`` for EPT/NPT, and the two stacked (:class:`NestedGuest` builds one)
- :class:`Mmu` (``kvm_mmu``): builds tables in a :class:`PhysMem`
"""
from .access import ACCESS_DTYPE, make_accesses
from .bits import AccessKind, Fault, PagingMode
from .format import FORMAT_DTYPE, PageFormat
from .memory import PhysMem
from .mmu import Mmu, MmuError
from .nested import NestedGuest
from .result import Translation
from .role import CpuRole, EptRole, NptRole, RegisterError
from .walk import PageWalk, PdpteError, cpu_walk, load_pdptes, tdp_walk

__version__ = "0.1.0"

__all__ = [
    "ACCESS_DTYPE", "AccessKind", "CpuRole", "EptRole", "FORMAT_DTYPE", "Fault", "Mmu",
    "MmuError", "NestedGuest", "NptRole", "PageFormat", "PageWalk", "PagingMode", "PdpteError",
    "PhysMem", "RegisterError", "Translation", "cpu_walk", "load_pdptes", "make_accesses",
    "tdp_walk",
]
