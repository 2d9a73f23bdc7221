"""Scale-out: traces larger than memory, and traces larger than one machine.

- :mod:`vecmmu.scale.stream`: translate or summarise a trace file chunk by chunk with a
  memory ceiling that does not grow with the trace
- :mod:`vecmmu.scale.cluster`: the same on a Parquet dataset with Dask (optional extra
  ``vecmmu[dask]``; imported on use)
- :mod:`vecmmu.scale.spec`: small picklable descriptions of a walker and its memory
"""
from .spec import MemSpec, WalkSpec

__all__ = ["MemSpec", "WalkSpec"]
