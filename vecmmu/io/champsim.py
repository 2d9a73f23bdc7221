"""ChampSim binary traces: 64-byte ``input_instr`` records (plain, or .xz / .gz).

The record, as ChampSim's ``inc/trace_instruction.h`` declares it (little-endian, no
padding)::

    offset size field
    0      8    ip                          instruction pointer
    8      1    is_branch                   0 or 1
    9      1    branch_taken                0 or 1
    10     2    destination_registers[2]
    12     4    source_registers[4]
    16     16   destination_memory[2]       u64 each; 0 = unused
    32     32   source_memory[4]            u64 each; 0 = unused

Each record becomes, in order: a fetch of ``ip`` (``fetch_size`` bytes, default 1: the
trace does not record instruction lengths), a read per non-zero ``source_memory``, then a
write per non-zero ``destination_memory`` (ChampSim handles loads before stores), each of
``data_size`` bytes (default 1: the trace does not record access sizes either). All are
user-mode accesses (the traces are recorded with Pin on user programs).

A file whose length is not a multiple of 64 bytes, or a record whose branch bytes are not
0/1, is refused with the record number and byte offset: it is truncated, or not this
record layout (CloudSuite traces, for one, use a longer record).
"""
from __future__ import annotations

import numpy as np

from ..kernels import trace_parse as K
from ._files import InputFile, Progress, TraceError
from .traces import TraceReader, make_batch

RECORD_SIZE = 64
INPUT_INSTR_DTYPE = np.dtype([
    ("ip", "<u8"), ("is_branch", "u1"), ("branch_taken", "u1"),
    ("destination_registers", "u1", (2,)), ("source_registers", "u1", (4,)),
    ("destination_memory", "<u8", (2,)), ("source_memory", "<u8", (4,)),
])
assert INPUT_INSTR_DTYPE.itemsize == RECORD_SIZE


class ChampSimReader(TraceReader):
    """Reader of ChampSim ``input_instr`` traces.

    ``chunk`` bounds the accesses per batch (a record gives 1 to 7 accesses);
    ``fetch_size`` / ``data_size`` are the sizes given to fetches and data accesses;
    ``asid`` the address space of every access. ``records`` counts instructions read.
    """

    format = "champsim"

    def __init__(self, path, *, chunk: int = 1 << 22, fetch_size: int = 1, data_size: int = 1,
                 asid: int = 0, progress: bool | None = None):
        super().__init__(path, chunk=chunk, progress=progress)
        for name, v in (("fetch_size", fetch_size), ("data_size", data_size)):
            if not 1 <= int(v) <= 4096:
                raise ValueError(f"{name} must be 1..4096 bytes, got {v}")
        self.fetch_size, self.data_size, self.asid = int(fetch_size), int(data_size), int(asid)
        with InputFile(self.path) as f:
            if f.compression is None:
                if f.size == 0:
                    raise TraceError(f"{self.path}: file is empty")
                if f.size % RECORD_SIZE:
                    raise TraceError(
                        f"{self.path}: {f.size} bytes is not a whole number of 64-byte ChampSim "
                        f"input_instr records ({f.size // RECORD_SIZE} records and "
                        f"{f.size % RECORD_SIZE} bytes left over): the file is truncated, or "
                        f"not an input_instr trace")

    def iter_records(self):
        """Batches of raw records (:data:`INPUT_INSTR_DTYPE`) with the index of the first."""
        per = max(self.chunk // 7, 1)
        nbytes = per * RECORD_SIZE
        first = 0
        with InputFile(self.path) as f:
            prog = Progress(f.size, f"reading {self.path.name}", enabled=self.progress)
            while True:
                buf = np.empty(nbytes, np.uint8)    # fresh per batch: records are yielded as views
                got = 0
                view = memoryview(buf)
                while got < nbytes:                 # compressed streams return short reads
                    k = f.readinto(view[got:])
                    if not k:
                        break
                    got += k
                if got == 0:
                    break
                if got % RECORD_SIZE:
                    total = first * RECORD_SIZE + got
                    raise TraceError(
                        f"{self.path}: the (decompressed) trace is {total} bytes, not a whole "
                        f"number of 64-byte ChampSim input_instr records: record {first + got // RECORD_SIZE} "
                        f"at byte offset {first * RECORD_SIZE + got - got % RECORD_SIZE:#x} has only "
                        f"{got % RECORD_SIZE} bytes (truncated file, or not an input_instr trace)")
                recs = buf[:got].view(INPUT_INSTR_DTYPE)
                self._check(recs, first)
                yield first, recs
                first += recs.shape[0]
                prog.update(f.disk_pos)
                if got < nbytes:
                    break
            prog.close()
        if first == 0:
            raise TraceError(f"{self.path}: no ChampSim records (empty after decompression)")

    def _check(self, recs, first):
        for field in ("is_branch", "branch_taken"):
            bad = np.flatnonzero(recs[field] > 1)
            if bad.size:
                j = int(bad[0])
                raise TraceError(
                    f"{self.path}: record {first + j} (byte offset {(first + j) * RECORD_SIZE:#x}): "
                    f"{field} = {int(recs[field][j])}, but an input_instr record has 0 or 1 there: "
                    f"not a 64-byte ChampSim input_instr trace (a CloudSuite trace, or another "
                    f"format?)")

    def __iter__(self):
        self.records = self.accesses = 0
        for _first, recs in self.iter_records():
            n = recs.shape[0]
            cap = 7 * n
            o_addr = np.empty(cap, np.uint64)
            o_kind = np.empty(cap, np.uint8)
            o_size = np.empty(cap, np.uint32)
            o_rec = np.empty(cap, np.int64)
            k = int(K.expand_champsim(np.ascontiguousarray(recs["ip"]),
                                      np.ascontiguousarray(recs["destination_memory"]),
                                      np.ascontiguousarray(recs["source_memory"]),
                                      self.fetch_size, self.data_size, o_addr, o_kind, o_size, o_rec))
            self.records += n
            for lo in range(0, k, self.chunk):
                hi = min(k, lo + self.chunk)
                self.accesses += hi - lo
                yield make_batch(o_addr[lo:hi], o_kind[lo:hi], o_size[lo:hi], user=1, asid=self.asid)


def write_champsim(path, ip, source_memory=None, destination_memory=None, *, is_branch=None,
                   branch_taken=None) -> int:
    """Write ``input_instr`` records (plain; for tests and conversions). ``source_memory``
    is ``(n, 4)`` (or fewer columns), ``destination_memory`` ``(n, 2)``; 0 means unused.
    Returns the number of records."""
    ip = np.asarray(ip, dtype=np.uint64).reshape(-1)
    rec = np.zeros(ip.shape[0], dtype=INPUT_INSTR_DTYPE)
    rec["ip"] = ip
    for name, arr, width in (("source_memory", source_memory, 4),
                             ("destination_memory", destination_memory, 2)):
        if arr is not None:
            a = np.asarray(arr, dtype=np.uint64).reshape(ip.shape[0], -1)
            if a.shape[1] > width:
                raise ValueError(f"{name} has {a.shape[1]} columns; a record holds {width}")
            rec[name][:, :a.shape[1]] = a
    if is_branch is not None:
        rec["is_branch"] = is_branch
    if branch_taken is not None:
        rec["branch_taken"] = branch_taken
    with open(path, "wb") as f:
        f.write(rec.tobytes())
    return rec.shape[0]
