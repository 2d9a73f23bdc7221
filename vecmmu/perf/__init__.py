"""Translation-performance models: TLBs, paging-structure caches, PTE caches, nested TLB.

- :class:`Cache`, :class:`TlbConfig`: which caches, how big (:mod:`vecmmu.perf.config`)
- :func:`make_events`, :class:`EventKind`, :func:`events_from_asid`: context switches and
  invalidations interleaved with a trace (:mod:`vecmmu.perf.events`)
- :func:`simulate`, :func:`sweep`, :func:`uncached_refs`: replay a traced walk result
  (:mod:`vecmmu.perf.model`)
"""
from .config import Cache, TlbConfig
from .events import EVENT_DTYPE, EventKind, events_from_asid, make_events
from .model import TlbRun, simulate, sweep, uncached_refs

__all__ = ["Cache", "EVENT_DTYPE", "EventKind", "TlbConfig", "TlbRun", "events_from_asid",
           "make_events", "simulate", "sweep", "uncached_refs"]
