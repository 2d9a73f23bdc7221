"""Readers for guest memory dumps (see :mod:`vecmmu.io.dump`)."""
from .dump import CpuState, Dump, DumpError, DumpWarning, open_dump, open_raw

__all__ = ["CpuState", "Dump", "DumpError", "DumpWarning", "open_dump", "open_raw"]
