"""PAE guests in 2-D walks: PDPTE registers loaded through the TDP at CR3 (Intel, R11: a
read; KVM translates the load as a write, K4), and AMD guests under NPT reading PDPTEs
through the NPT on every walk (R10), with their reserved bits checked there."""
import numpy as np
import pytest

from vecmmu import CpuRole, EptRole, Fault, NestedGuest, NptRole, PdpteError


def _pae_guest(tdp_role):
    g = NestedGuest(CpuRole.for_mode("pae", maxphyaddr=46), tdp_role, guest_ram=16 << 20,
                    tdp_page_size=4096)
    g.guest.map(0x40000000, 0x1000, user=True, accessed=True, dirty=True)
    return g


def test_pdptes_loaded_through_ept():
    g = _pae_guest(EptRole())
    w = g.walker()
    assert np.array_equal(w.pdptes[0], g.guest.pdptes())
    r = w.translate([0x40000123], user=True)
    # PDPTE registers: 2 guest levels, each behind a 4-level EPT walk (5), + the final GPA (4)
    assert r.fault[0] == Fault.NONE and int(r.refs[0]) == 14
    # the PDPT page read-only in EPT: a read is enough in hardware; KVM loads it as a write
    pdpt_gpa = g.guest.roots[0] & ~0xFFF
    g.tdp.protect(pdpt_gpa, 0x1000, writable=False)
    g.walker()                                           # hardware: fine
    with pytest.raises(PdpteError, match="EPT violation"):
        g.walker(semantics="kvm")
    g.tdp.protect(pdpt_gpa, 0x1000, read=False, writable=False, xs=True)
    with pytest.raises(PdpteError, match="EPT violation"):
        g.walker()


def test_amd_pae_guest_reads_pdptes_through_npt_every_walk():
    g = _pae_guest(NptRole())
    hw = g.walker()
    r = hw.translate([0x40000123], user=True)
    # R10: PDPTE read as a guest table access (5 refs behind a 4-level NPT), then 2 guest
    # levels (5 each), then the final GPA (4): 19
    assert r.fault[0] == Fault.NONE and int(r.refs[0]) == 19
    kvm = g.walker(semantics="kvm")                     # K12: PDPTE registers
    assert int(kvm.translate([0x40000123], user=True).refs[0]) == 14
    # a reserved bit in the in-memory PDPTE: hardware faults at walk time (#PF P|RSVD|U)
    ea = g.guest.roots[0] + 8 * 1
    g.guest.write_entry_at(ea, g.guest.read_entry_at(ea) | 2)
    r = g.walker().translate([0x40000123], user=True)
    assert r.fault[0] == Fault.PF and int(r.error_code[0]) == 0xD and int(r.fault_level[0]) == 3
    with pytest.raises(PdpteError, match=f"PDPTE 1 at {ea:#x}"):   # KVM: #GP at CR3 load,
        g.walker(semantics="kvm")                                  # naming the guest address
