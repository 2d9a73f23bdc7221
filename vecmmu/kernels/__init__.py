"""Every ``@njit`` function of vecmmu lives in this package, and nothing else imports numba
(except :mod:`vecmmu.walk` for the thread count). Options are set once, in ``_jit``.

- ``physmem``: bounds-checked little-endian entry reads/writes over memslots
- ``cpu_walk``: the x86 walker (32-bit and 64-bit entries), the batch driver, A/D updates
- ``build``: table building for :class:`vecmmu.mmu.Mmu`
"""
