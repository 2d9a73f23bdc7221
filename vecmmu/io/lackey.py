"""valgrind lackey traces (``valgrind --tool=lackey --trace-mem=yes``).

Each line is one record (valgrind prints ``"I  %08lx,%lu"``, ``" L %08lx,%lu"``,
``" S ..."``, ``" M ..."``): ``I`` an instruction fetch of ``size`` bytes, ``L`` a load,
``S`` a store, ``M`` a modify, which is a load then a store of the same bytes (two
accesses). Addresses are hexadecimal, sizes decimal. valgrind's own messages
(``==pid== ...``) and blank lines are skipped. Every access is a user-mode access
(valgrind runs user code only); an access that crosses a page is translated twice by
:meth:`vecmmu.PageWalk.translate`.

The parser is the jitted :func:`vecmmu.kernels.trace_parse.parse_lackey`, fed blocks of
the (possibly compressed) file; a bad line stops it with the file, the line number and
what is wrong (``errors="skip"`` skips such lines with one warning instead).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..kernels import trace_parse as K
from ._files import InputFile, Progress, TraceError, TraceWarning
from .traces import TraceReader, make_batch

REASONS = {
    K.E_RECORD: "not a lackey record (expected 'I', 'L', 'S' or 'M', a blank, then addr,size)",
    K.E_ADDR: "the address is not hexadecimal",
    K.E_ADDR_LONG: "the address has more than 16 hex digits",
    K.E_COMMA: "no ',size' after the address (truncated line?)",
    K.E_SIZE: "the size is not a decimal number",
    K.E_SIZE_RANGE: "the size must be 1 .. 2**32-1 bytes",
    K.E_TRAILING: "unexpected text after the size",
}


class LackeyReader(TraceReader):
    """Reader of lackey ``--trace-mem=yes`` output (plain, .gz, .xz, .bz2).

    Parameters: ``chunk`` (accesses per batch), ``block`` (bytes read per step),
    ``errors`` (``"raise"``, the default, or ``"skip"``), ``asid`` (address space of every
    access), ``progress`` (a progress line on stderr; default: when it is a terminal).
    """

    format = "lackey"

    def __init__(self, path, *, chunk: int = 1 << 22, block: int = 1 << 24, errors: str = "raise",
                 asid: int = 0, progress: bool | None = None):
        super().__init__(path, chunk=chunk, progress=progress)
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        self.block = max(int(block), 1)
        self.errors = errors
        self.asid = int(asid)
        self.skipped = 0

    def _fail(self, buf, pos, end, line_no, err):
        eol = pos
        while eol < end and buf[eol] != 10:
            eol += 1
        text = bytes(buf[pos:min(eol, pos + 120)]).decode("latin-1").rstrip("\r")
        return f"{self.path}:{line_no}: {REASONS.get(err, 'bad line')}: {text!r}", eol

    def __iter__(self):
        self.records = self.accesses = self.skipped = 0
        first_bad = None
        cap = self.chunk
        o_addr = np.empty(cap, np.uint64)
        o_kind = np.empty(cap, np.uint8)
        o_size = np.empty(cap, np.uint32)
        n_out = 0
        line_no = 1
        carry = b""
        with InputFile(self.path) as f:
            prog = Progress(f.size, f"reading {self.path.name}", enabled=self.progress)
            final = False
            while not final:
                data = f.read(self.block)
                final = not data
                raw = carry + data if carry else data
                buf = np.frombuffer(raw, dtype=np.uint8)
                end = buf.shape[0]
                pos = 0
                while True:
                    st, pos, n_new, lines, err = K.parse_lackey(buf, pos, end, final, o_addr,
                                                                o_kind, o_size, n_out)
                    pos, n_new, lines = int(pos), int(n_new), int(lines)
                    self.records += lines
                    line_no += lines
                    n_out = n_new
                    if st == K.ST_FULL:
                        yield self._emit(o_addr, o_kind, o_size, n_out)
                        o_addr = np.empty(cap, np.uint64)
                        o_kind = np.empty(cap, np.uint8)
                        o_size = np.empty(cap, np.uint32)
                        n_out = 0
                        continue
                    if st == K.ST_ERROR:
                        msg, eol = self._fail(buf, pos, end, line_no, int(err))
                        if self.errors == "raise":
                            raise TraceError(msg)
                        self.skipped += 1
                        first_bad = first_bad or msg
                        pos = eol + 1
                        if eol < end:
                            line_no += 1
                            self.records += 1
                        continue
                    break
                carry = bytes(raw[pos:]) if pos < end else b""
                prog.update(f.disk_pos)
            prog.close()
        if n_out:
            yield self._emit(o_addr, o_kind, o_size, n_out)
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {self.skipped} bad line(s); first: {first_bad}",
                          TraceWarning, stacklevel=2)
        if self.accesses == 0:
            raise TraceError(f"{self.path}: no lackey records (I/L/S/M lines) in {line_no - 1} "
                             f"line(s); was valgrind run with --tool=lackey --trace-mem=yes?")

    def _emit(self, o_addr, o_kind, o_size, n):
        sz = o_size[:n]
        if n and (int(sz.min()) < 1 or int(sz.max()) > 4096):
            i = int(np.flatnonzero((sz < 1) | (sz > 4096))[0])
            raise TraceError(f"{self.path}: access {self.accesses + i} (address "
                             f"{int(o_addr[i]):#x}): size {int(sz[i])} is out of range "
                             f"(expected 1..4096 bytes)")
        self.accesses += n
        return make_batch(o_addr[:n], o_kind[:n], o_size[:n], user=1, asid=self.asid)


def write_lackey(path, trace) -> int:
    """Write accesses (a batch or an iterable of batches) as lackey text (``.gz`` / ``.xz``
    in the name compresses). Privilege and address space are not kept (lackey has neither).
    Returns the number of lines."""
    import gzip
    import lzma
    batches = [trace] if isinstance(trace, np.ndarray) else trace
    p = str(path)
    opener = gzip.open if p.endswith(".gz") else lzma.open if p.endswith(".xz") else open
    n = 0
    from ._files import atomic_output
    with atomic_output(p) as tmp, opener(tmp, "wb") as f:
        for b in batches:
            buf = np.empty(48 * b.shape[0] + 1, np.uint8)
            k = int(K.format_lackey(np.ascontiguousarray(b["addr"]), np.ascontiguousarray(b["kind"]),
                                    np.ascontiguousarray(b["size"]), buf))
            f.write(buf[:k].tobytes())
            n += b.shape[0]
    return n
