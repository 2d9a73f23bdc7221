"""NestedGuest: a guest, its TDP (EPT or NPT) and host memory, ready for 2-D walks.

Host memory holds the TDP tables (a host RAM slot) and the guest's RAM (a second slot at
``guest_base``). The guest's own :class:`~vecmmu.mmu.Mmu` builds its tables in that RAM
seen from guest-physical address 0; the TDP maps guest-physical ``[0, guest_ram)`` to host
``[guest_base, guest_base + guest_ram)`` unless told otherwise.

>>> from vecmmu import CpuRole, EptRole
>>> g = NestedGuest(CpuRole.for_mode("4level", maxphyaddr=46), EptRole())
>>> _ = g.guest.map(0x400000, 0x1000, user=True)
>>> r = g.walker().translate([0x400000], user=True)
>>> int(r.refs[0])                    # 4 guest entries, each behind a 4-level EPT walk, + 4
24
"""
from __future__ import annotations

import numpy as np

from .memory import PhysMem
from .mmu import Mmu
from .role import CpuRole, EptRole, NptRole


class NestedGuest:
    """A guest Mmu over guest RAM, a TDP Mmu over host RAM, and the host PhysMem.

    ``tdp_page_size`` is the page size of the default GPA → HPA map (pass
    ``map_guest_ram=False`` to map it yourself with ``self.tdp.map``).
    """

    def __init__(self, guest_role: CpuRole, tdp_role, *, guest_ram: int = 1 << 30,
                 host_ram: int = 64 << 20, guest_base: int = 1 << 32, tdp_page_size: int = 2 << 20,
                 map_guest_ram: bool = True, **tdp_rights):
        if not isinstance(tdp_role, (EptRole, NptRole)):
            raise TypeError("tdp_role must be an EptRole or NptRole")
        self.host = PhysMem()
        self.tdp = Mmu(tdp_role, mem=self.host, ram_size=host_ram, ram_base=0)
        self.guest_ram = np.zeros(int(guest_ram), dtype=np.uint8)
        self.host.add_slot(guest_base, self.guest_ram, name="guest ram")
        self.guest_base = int(guest_base)
        self.guest = Mmu(guest_role, ram=self.guest_ram)
        if map_guest_ram:
            ps = min(int(tdp_page_size), int(guest_ram))
            self.tdp.map(0, guest_ram, pa=guest_base, page_size=ps, **tdp_rights)

    def tdp_walker(self, *, semantics: str = "hardware"):
        return self.tdp.walker(semantics=semantics)

    def walker(self, *, semantics: str = "hardware", pkru: int = 0, pdptes=None):
        """The 2-D walk: the guest's tables through the TDP, in host memory."""
        from .walk import PageWalk
        return PageWalk(self.guest.role, self.host,
                        [self.guest.cr3(a) for a in range(len(self.guest.roots))],
                        semantics=semantics, pkru=pkru, pdptes=pdptes,
                        tdp=self.tdp_walker(semantics=semantics))

    def gpa_to_hpa(self, gpa: int) -> int:
        """Where the default map puts a guest-physical address."""
        return self.guest_base + int(gpa)

    def __repr__(self) -> str:
        return f"NestedGuest(guest={self.guest!r}, tdp={self.tdp!r})"
