"""A small but realistic guest and trace, used by ``vecmmu demo`` and the quickstart.

The guest is a 4-level x86-64 address space laid out like Linux: kernel text (read-only,
executable, supervisor, 2 MiB pages), kernel data (writable, XD), a direct map of RAM
(1 GiB page), and one process with code, read-only data, heap, a pkey-1 region and a
stack, separated by unmapped holes. The trace mixes a user program's fetches, loads and
stores with kernel activity, including a few accesses that must fault.
"""
from __future__ import annotations

import numpy as np

from .access import make_accesses
from .mmu import Mmu

KERNEL_TEXT = 0xFFFFFFFF81000000
KERNEL_DATA = 0xFFFFFFFF82000000
DIRECT_MAP = 0xFFFF888000000000
USER_CODE = 0x400000
USER_RODATA = 0x600000
USER_HEAP = 0x1000000
USER_PKEY = 0x7F0000000000
USER_STACK = 0x7FFFFFF00000

REGIONS = [
    # name, start, size, page size, rights
    ("kernel text", KERNEL_TEXT, 16 << 20, 2 << 20, dict(writable=False)),
    ("kernel data", KERNEL_DATA, 8 << 20, 2 << 20, dict(nx=True)),
    ("direct map", DIRECT_MAP, 1 << 30, 1 << 30, dict(nx=True)),
    ("user code", USER_CODE, 256 << 10, 4096, dict(user=True, writable=False)),
    ("user rodata", USER_RODATA, 64 << 10, 4096, dict(user=True, writable=False, nx=True)),
    ("user heap", USER_HEAP, 4 << 20, 4096, dict(user=True, nx=True)),
    ("user pkey 1", USER_PKEY, 256 << 10, 4096, dict(user=True, nx=True, pkey=1)),
    ("user stack", USER_STACK, 1 << 20, 4096, dict(user=True, nx=True)),
]


def build_guest(**role_kw) -> Mmu:
    """The demo guest (SMEP, SMAP and PKE on by default, as on a modern kernel)."""
    for k, v in dict(smep=True, smap=True, pke=True).items():
        role_kw.setdefault(k, v)
    mmu = Mmu.for_mode("4level", ram_size=2 << 30, **role_kw)
    for _name, start, size, ps, rights in REGIONS:
        pa = 0 if start == DIRECT_MAP else None
        mmu.map(start, size, pa=pa, page_size=ps, global_=start >> 63 == 1, **rights)
    return mmu


def make_trace(n: int = 1_000_000, seed: int = 0) -> np.ndarray:
    """A seeded synthetic trace over the demo guest (an access batch)."""
    rng = np.random.default_rng(seed)
    parts = []

    def add(m, base, span, kind, user, ac=0):
        off = rng.integers(0, span, size=m, dtype=np.uint64)
        parts.append(make_accesses(np.uint64(base) + off, kind, user=user, ac=ac))

    w = np.array([0.25, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01])
    m = (w / w.sum() * n).astype(int)
    m[0] += n - m.sum()
    add(m[0], USER_CODE, 256 << 10, "fetch", 1)              # user code
    add(m[1], USER_HEAP, 4 << 20, "read", 1)                 # heap loads
    add(m[2], USER_HEAP, 4 << 20, "write", 1)                # heap stores
    add(m[3], USER_STACK, 1 << 20, "write", 1)               # stack
    add(m[4], KERNEL_TEXT, 16 << 20, "fetch", 0)             # kernel code
    add(m[5], KERNEL_DATA, 8 << 20, "write", 0)              # kernel data
    add(m[6], USER_HEAP, 4 << 20, "read", 0, ac=1)           # copy_from_user (STAC)
    add(m[7], USER_RODATA, 64 << 10, "write", 1)             # bug: store to rodata -> #PF
    add(m[8], USER_HEAP, 4 << 20, "read", 0)                 # bug: kernel touches user, no STAC
    add(m[9], USER_PKEY, 256 << 10, "read", 1)               # pkey-protected region
    add(m[10], 0x2000000, 64 << 20, "read", 1)               # wild pointer into a hole
    trace = np.concatenate(parts)
    return trace[rng.permutation(trace.shape[0])]
