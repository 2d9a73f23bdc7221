"""Inputs: memory dumps, traces, process maps.

- dumps: :func:`open_dump`, :func:`open_raw` (:mod:`vecmmu.io.dump`)
- traces: :func:`open_trace` / :func:`read_trace` (lackey, ChampSim, CSV, Parquet; format
  detected), :func:`write_parquet`, :func:`write_csv`, :func:`write_lackey`, synthetic
  generators in :mod:`vecmmu.io.synth`
- address spaces: :func:`address_space_from_maps` (``/proc/PID/maps`` or ``smaps``, plus a
  pagemap snapshot), :func:`address_space_from_trace`
"""
from ._files import TraceError, TraceWarning
from .dump import CpuState, Dump, DumpError, DumpWarning, open_dump, open_raw
from .procmaps import (AddressSpace, address_space_from_maps, address_space_from_trace,
                       capture_pagemap, parse_maps, read_pagemap)
from .traces import DEFAULT_CHUNK, FORMATS, TraceReader, detect_format, open_trace, read_trace

__all__ = [
    "AddressSpace", "CpuState", "DEFAULT_CHUNK", "Dump", "DumpError", "DumpWarning", "FORMATS",
    "TraceError", "TraceReader", "TraceWarning", "address_space_from_maps",
    "address_space_from_trace", "capture_pagemap", "detect_format", "open_dump", "open_raw",
    "open_trace", "parse_maps", "read_pagemap", "read_trace", "write_csv", "write_lackey",
    "write_parquet",
]


def __getattr__(name):          # writers import pyarrow / numba kernels lazily
    if name in ("write_parquet", "write_csv"):
        from . import tables
        return getattr(tables, name)
    if name == "write_lackey":
        from .lackey import write_lackey
        return write_lackey
    raise AttributeError(name)
