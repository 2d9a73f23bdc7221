"""Every ``@njit`` function of vecmmu lives in this package, and nothing else imports numba
(except :mod:`vecmmu.walk` for the thread count). Options are set once, in ``_jit``, which
also has ``run_parts``: every batch driver is a kernel of one part of a batch, and the parts
run on one thread each.

- ``walkers``: the per-address walkers (KVM's ``paging_tmpl.h``): ``walk_x86`` for 32- and
  64-bit x86 entries (instantiated flat and nested from one source), ``walk_ept``, and
  ``tdp_translate``
- ``cpu_walk``: the 1-D batch driver (table prefetch, streaming result stores,
  ``order="grouped"``) and A/D write-back; ``memo``: its walk memo (each walked page's
  outcome); ``tdp_walk``: GPA batches and two-dimensional walks (with a memo of whole
  results, and a cache of the TDP translations of guest table pages,
  ``walkers.tdp_table_cached``)
- ``physmem``: bounds-checked entry reads and writes over memslots (host pointers)
- ``build``: table building for :class:`vecmmu.mmu.Mmu`
- ``decide``: what-if re-decisions from walk records; ``tlb``: translation-cache models
- ``scan``: page-table scans for mapping listings; ``trace_parse``: the lackey parser
"""
