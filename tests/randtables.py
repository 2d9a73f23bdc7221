"""Random page tables for property tests: garbage that still walks somewhere.

Every frame of a small table area is filled with random entries that point at other
table frames (loops included), at large-page frames, outside memory, or nowhere, with
random rights, A/D bits, PS bits and, sometimes, reserved bits. Random linear addresses
then take random paths through them. Built with numpy from a seed, so a hypothesis
example is a seed plus a handful of choices.
"""
from __future__ import annotations

import numpy as np

from vecmmu import PhysMem

TABLE_FRAMES = 12                 # frames 1..12 hold tables (frame 0 too: it is RAM)
RAM = 4 << 20                     # slot 0: [0, 4 MiB)
HIGH_BASE = 8 << 20               # slot 1: [8 MiB, 8 MiB + 64 KiB); between them: unbacked
HIGH_SIZE = 64 << 10


def random_memory(seed: int, pte_size: int, maxphyaddr: int, *, p_present=0.85, p_large=0.15,
                  p_rsvd=0.05, p_outside=0.04, p_nx=0.3, p_pkey=0.5) -> tuple[PhysMem, list[int]]:
    """A PhysMem of random tables; returns (mem, table frame addresses)."""
    rng = np.random.default_rng(seed)
    mem = PhysMem()
    ram = np.zeros(RAM, dtype=np.uint8)
    high = np.zeros(HIGH_SIZE, dtype=np.uint8)
    mem.add_slot(0, ram, name="ram")
    mem.add_slot(HIGH_BASE, high, name="high")
    frames = [0x1000 * (1 + k) for k in range(TABLE_FRAMES)] + [HIGH_BASE + 0x1000 * k for k in range(4)]
    per = 4096 // pte_size
    hi_mask = (1 << 32) - 1 if pte_size == 4 else (1 << 52) - 1
    for fr in frames:
        n = per
        target = rng.choice(np.array(frames + [0, 2 << 20, HIGH_BASE], dtype=np.uint64), size=n)
        # some entries point outside every memslot (the gap, or far away)
        outside = rng.random(n) < p_outside
        far = rng.choice(np.array([5 << 20, 1 << 31, (1 << 39) + 0x1000], dtype=np.uint64), size=n)
        if pte_size == 4:
            far = far & np.uint64(0xFFFFF000)
        target = np.where(outside, far, target)
        flags = rng.integers(0, 1 << 12, size=n, dtype=np.uint64)
        flags &= ~np.uint64(1 | 0x80)
        flags |= (rng.random(n) < p_present).astype(np.uint64)
        flags |= (rng.random(n) < p_large).astype(np.uint64) << np.uint64(7)
        val = target | flags
        if pte_size == 8:
            val |= (rng.random(n) < p_nx).astype(np.uint64) << np.uint64(63)
            pk = rng.integers(0, 16, size=n, dtype=np.uint64) * (rng.random(n) < p_pkey)
            val |= pk.astype(np.uint64) << np.uint64(59)                                # pkeys
            # reserved bits: above MAXPHYADDR, in the large-page frame bits, bit 8, 62:52
            rbit = rng.choice(np.array([maxphyaddr, 51, 13, 20, 29, 8, 55, 62], dtype=np.uint64), size=n)
            rbit = np.minimum(rbit, np.uint64(62))
            val |= (rng.random(n) < p_rsvd).astype(np.uint64) << rbit
            # large-page frames sometimes carry low frame bits (reserved in 2M/1G leaves)
        else:
            # PSE-36 high bits (13..21) on some entries
            val |= (rng.random(n) < p_rsvd).astype(np.uint64) << rng.choice(
                np.array([13, 16, 17, 20, 21], dtype=np.uint64), size=n)
        val &= np.uint64(hi_mask) | (np.uint64(0xFFF << 52) if pte_size == 8 else np.uint64(0))
        raw = val.astype("<u8") if pte_size == 8 else val.astype("<u4")
        b = raw.view(np.uint8)
        if fr < HIGH_BASE:
            ram[fr:fr + 4096] = b
        else:
            high[fr - HIGH_BASE:fr - HIGH_BASE + 4096] = b
    return mem, frames


def random_addresses(rng: np.random.Generator, n: int, va_bits: int) -> np.ndarray:
    """Mostly canonical addresses for ``va_bits``, some non-canonical, some at page ends."""
    if va_bits == 32:
        a = rng.integers(0, 1 << 32, size=n, dtype=np.uint64)
        a[rng.random(n) < 0.1] |= np.uint64(1) << np.uint64(40)    # upper bits are dropped
        return a
    lo = rng.integers(0, 1 << va_bits, size=n, dtype=np.uint64)
    neg = (lo >> np.uint64(va_bits - 1)) & np.uint64(1)
    ext = np.where(neg == 1, ~np.uint64(0) << np.uint64(va_bits), np.uint64(0))
    a = lo | ext
    bad = rng.random(n) < 0.05
    a[bad] ^= np.uint64(1) << np.uint64(62)
    return a


# --- random TDP tables over the guest memory above ------------------------------------------

HOST_GUEST_RAM = 0x1000_0000          # host address of the guest's RAM slot
HOST_GUEST_HIGH = 0x1080_0000         # host address of the guest's "high" slot
TDP_AREA = 0x10_0000                  # host slot [0, 1 MiB): TDP tables


def _host_of(gpa: int) -> int:
    if gpa < RAM:
        return HOST_GUEST_RAM + gpa
    if HIGH_BASE <= gpa < HIGH_BASE + (2 << 20):
        return HOST_GUEST_HIGH + gpa - HIGH_BASE
    return 0x2000_0000 + gpa          # unbacked on the host


def random_tdp(seed: int, kind: str, levels: int, maxphyaddr: int, *, mbec: bool = False,
               p_bad: float = 0.03, p_large: float = 0.3):
    """Host memory holding the guest memory of :func:`random_memory` (call it first and
    pass its PhysMem) behind random EPT or NPT tables. Returns a function
    ``build(guest_mem) -> (host_mem, root)``."""
    rng = np.random.default_rng(seed)

    def perm_bits(leaf: bool) -> int:
        if kind == "ept":
            r = int(rng.random() < 0.9)
            w = int(rng.random() < 0.75) & (r | int(rng.random() < 0.05))
            x = int(rng.random() < 0.7)
            v = r | (w << 1) | (x << 2)
            if mbec or rng.random() < 0.2:
                v |= int(rng.random() < 0.6) << 10
            if leaf:
                mt = int(rng.choice([6, 6, 6, 0, 4, 2 if rng.random() < p_bad else 6]))
                v |= mt << 3 | (int(rng.random() < 0.2) << 6)
            v |= int(rng.random() < 0.5) << 8                 # A
            if leaf:
                v |= int(rng.random() < 0.5) << 9             # D
            if rng.random() < 0.04:
                v &= ~7 & ~(1 << 10)                          # not present
            return v
        v = 1 | (int(rng.random() < 0.8) << 1) | (int(rng.random() < 0.85) << 2)
        v |= int(rng.random() < 0.5) << 5
        if rng.random() < 0.15:
            v |= 1 << 63
        if rng.random() < 0.04:
            v &= ~1
        return v

    def corrupt(v: int, level: int) -> int:
        if rng.random() < p_bad:
            bit = int(rng.choice([maxphyaddr, 51, 13, 20, 5, 7, 3, 8]))
            v |= 1 << min(bit, 51)
        if rng.random() < p_bad / 2:
            v = (v & 0xFFF) | (5 << 20) | (v & (1 << 63))    # points at unbacked host memory
        return v

    def build(guest_mem):
        host = PhysMem()
        tables = np.zeros(TDP_AREA, dtype=np.uint8)
        host.add_slot(0, tables, name="tdp")
        for s in guest_mem.slots:
            hbase = HOST_GUEST_RAM if s.base == 0 else HOST_GUEST_HIGH
            host.add_slot(hbase, guest_mem.backings[s.backing], name="guest " + s.name)
        nxt = [0x1000]

        def new_table():
            a = nxt[0]
            nxt[0] += 0x1000
            return a

        def put(addr, v):
            tables[addr:addr + 8] = np.frombuffer(int(v & (2**64 - 1)).to_bytes(8, "little"), np.uint8)

        ps_bit = 1 << 7
        root = new_table()
        # GPA windows that matter: [0, 4 MiB) (guest RAM) and [8 MiB, 10 MiB) (high)
        t3 = new_table()
        put(root, corrupt(t3 | perm_bits(False), levels))
        top = root
        if levels == 5:
            t4 = t3
            t3 = new_table()
            put(t4, corrupt(t3 | perm_bits(False), 4))
        t2 = new_table()
        put(t3, corrupt(t2 | perm_bits(False), 3))
        for i2 in range(5):                                   # 2 MiB regions 0..4 (0-10 MiB)
            gpa = i2 << 21
            if rng.random() < p_large:
                v = (_host_of(gpa) & ~((2 << 20) - 1)) | perm_bits(True) | ps_bit
                put(t2 + 8 * i2, corrupt(v, 2))
                continue
            t1 = new_table()
            put(t2 + 8 * i2, corrupt(t1 | perm_bits(False), 2))
            for i1 in range(512):
                if gpa + (i1 << 12) >= RAM and not (HIGH_BASE <= gpa + (i1 << 12) < HIGH_BASE + (64 << 10)):
                    if rng.random() < 0.9:
                        continue
                v = _host_of(gpa + (i1 << 12)) | perm_bits(True)
                put(t1 + 8 * i1, corrupt(v, 1))
        return host, top
    return build
