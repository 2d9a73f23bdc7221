"""Trace-parsing kernels: valgrind lackey text, ChampSim records, hex/decimal text columns.

The Python readers in :mod:`vecmmu.io` read a file in blocks, hand the bytes to these
kernels and turn their outputs into access batches. The kernels never raise: they stop at
the first bad line and return where it starts and what was wrong with it (``E_*``), so
the reader can name the file, line and field.
"""
import numpy as np

from ._jit import jit, jit_nrt_free, part_bounds
from .physmem import load_u32, load_u64, store_u64
from .walkers import _I1     # a numpy scalar: a literal int would be a signature of its own

# Status of parse_lackey
ST_DONE = 0          # every complete line of the block was consumed
ST_FULL = 1          # the output arrays are full; call again from ``pos``
ST_ERROR = 2         # bad line at ``pos`` (its first byte), reason in ``err``

# Why a line is bad (E_* codes; the reader turns them into words)
E_NONE = 0
E_RECORD = 1         # not I / L / S / M (and not a valgrind "==pid==" line)
E_ADDR = 2           # the address is not hexadecimal
E_ADDR_LONG = 3      # more than 16 hex digits
E_COMMA = 4          # no comma after the address
E_SIZE = 5           # the size is not a decimal number
E_SIZE_RANGE = 6     # size 0 or above 2**32 - 1
E_TRAILING = 7       # something after the size

# Access kinds written by the parsers (vecmmu.bits.AccessKind)
K_READ = 0
K_WRITE = 1
K_FETCH = 2

_NL = 10
_CR = 13
_SP = 32
_TAB = 9


@jit
def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


@jit
def _bad_or_short(buf, p, end, final):
    """After a parse error at ``p``: True when the line is merely cut by the block end
    (no newline after ``p`` and more input to come), so it is re-read with the next block."""
    if final:
        return False
    while p < end:
        if buf[p] == _NL:
            return False
        p += 1
    return True


@jit
def parse_lackey(buf, pos, end, final, out_addr, out_kind, out_size, n_out):
    """Parse valgrind lackey ``--trace-mem=yes`` lines of ``buf[pos:end]`` in one pass.

    Records (valgrind prints ``"I  %08lx,%lu"`` and ``" L %08lx,%lu"`` etc.): ``I``
    instruction fetch, ``L`` load, ``S`` store, ``M`` modify (a load then a store of the
    same bytes: two outputs). Lines starting with ``==`` or ``--`` (valgrind's own
    messages) and blank lines are skipped. Leading blanks, ``0x`` prefixes and a ``\\r``
    before the newline are accepted.

    Outputs go to ``out_*[n_out:]``. Without ``final`` a line cut by the end of the block
    is left for the next block. Returns ``(status, pos, n_out, lines, err)``: where
    parsing stopped (the start of the first unconsumed line), the new output count, how
    many newline-terminated lines were consumed, and the error code when ``status`` is
    ``ST_ERROR`` (``pos`` is then the start of the bad line).
    """
    cap = out_addr.shape[0]
    lines = 0
    hexlut = np.full(256, -1, np.int64)
    for c in range(256):
        hexlut[c] = _hexval(c)
    while pos < end:
        if n_out + 2 > cap:
            return ST_FULL, pos, n_out, lines, E_NONE
        p = pos
        while p < end and (buf[p] == _SP or buf[p] == _TAB or buf[p] == _CR):
            p += 1
        if p == end:
            if final:
                return ST_DONE, end, n_out, lines, E_NONE
            return ST_DONE, pos, n_out, lines, E_NONE
        c = buf[p]
        if c == _NL:                                        # blank line
            pos = p + 1
            lines += 1
            continue
        if (c == 61 or c == 45) and p + 1 < end and buf[p + 1] == c:   # "==" or "--"
            while p < end and buf[p] != _NL:
                p += 1
            if p == end:
                if final:
                    return ST_DONE, end, n_out, lines, E_NONE
                return ST_DONE, pos, n_out, lines, E_NONE
            pos = p + 1
            lines += 1
            continue
        if c == 73:          # I
            kind = K_FETCH
        elif c == 76:        # L
            kind = K_READ
        elif c == 83:        # S
            kind = K_WRITE
        elif c == 77:        # M
            kind = 3
        else:
            if _bad_or_short(buf, p, end, final):
                return ST_DONE, pos, n_out, lines, E_NONE
            return ST_ERROR, pos, n_out, lines, E_RECORD
        p += 1
        if p >= end or (buf[p] != _SP and buf[p] != _TAB):
            if _bad_or_short(buf, p, end, final):
                return ST_DONE, pos, n_out, lines, E_NONE
            return ST_ERROR, pos, n_out, lines, E_RECORD
        while p < end and (buf[p] == _SP or buf[p] == _TAB):
            p += 1
        if p + 1 < end and buf[p] == 48 and (buf[p + 1] == 120 or buf[p + 1] == 88):
            p += 2
        addr = np.uint64(0)
        nd = 0
        while p < end:
            v = hexlut[buf[p]]
            if v < 0:
                break
            addr = (addr << np.uint64(4)) | np.uint64(v)
            nd += 1
            p += 1
        err = E_NONE
        if nd == 0:
            err = E_ADDR
        elif nd > 16:
            err = E_ADDR_LONG
        elif p >= end or buf[p] != 44:                      # ','
            if p < end and buf[p] != _SP and buf[p] != _TAB and buf[p] != _NL and buf[p] != _CR:
                err = E_ADDR
            else:
                err = E_COMMA
        if err != E_NONE:
            if _bad_or_short(buf, p, end, final):
                return ST_DONE, pos, n_out, lines, E_NONE
            return ST_ERROR, pos, n_out, lines, err
        p += 1
        size = np.int64(0)
        nd = 0
        while p < end and 48 <= buf[p] <= 57:
            if size < 10_000_000_000:
                size = size * 10 + (buf[p] - 48)
            nd += 1
            p += 1
        if nd == 0:
            err = E_SIZE
        else:
            while p < end and (buf[p] == _SP or buf[p] == _TAB or buf[p] == _CR):
                p += 1
            if p == end:
                if not final:                               # more digits may follow
                    return ST_DONE, pos, n_out, lines, E_NONE
            elif buf[p] != _NL:
                if 48 <= buf[p] <= 57 or _hexval(buf[p]) >= 0 or buf[p] == 46:
                    err = E_SIZE
                else:
                    err = E_TRAILING
            if err == E_NONE and (size == 0 or size > 0xFFFFFFFF):
                err = E_SIZE_RANGE
        if err != E_NONE:
            if _bad_or_short(buf, p, end, final):
                return ST_DONE, pos, n_out, lines, E_NONE
            return ST_ERROR, pos, n_out, lines, err
        if kind == 3:
            out_addr[n_out] = addr
            out_kind[n_out] = K_READ
            out_size[n_out] = size
            n_out += 1
            out_addr[n_out] = addr
            out_kind[n_out] = K_WRITE
            out_size[n_out] = size
            n_out += 1
        else:
            out_addr[n_out] = addr
            out_kind[n_out] = kind
            out_size[n_out] = size
            n_out += 1
        pos = p + 1 if p < end else end
        lines += 1                                          # the last line may lack its newline
    return ST_DONE, pos, n_out, lines, E_NONE


@jit
def pack_accesses(out, itemsize, o_addr, o_kind, o_user, o_size, o_asid, addr, kind, size,
                  user, asid):
    """Write ``addr``/``kind``/``size`` (arrays) and ``user``/``asid`` (scalars) into the
    bytes of a zeroed ACCESS_DTYPE array (``out`` is its uint8 view; ``o_*`` the field
    offsets). Far faster than assigning fields of the packed structured array."""
    n = addr.shape[0]
    for i in range(n):
        b = i * itemsize
        a = addr[i]
        for k in range(8):
            out[b + o_addr + k] = np.uint8((a >> np.uint64(8 * k)) & np.uint64(0xFF))
        out[b + o_kind] = kind[i]
        out[b + o_user] = user
        s = size[i]
        for k in range(4):
            out[b + o_size + k] = np.uint8((s >> np.uint32(8 * k)) & np.uint32(0xFF))
        if asid != 0:
            for k in range(4):
                out[b + o_asid + k] = np.uint8((asid >> (8 * k)) & 0xFF)


@jit
def count_newlines(buf, start, end):
    """Newlines in ``buf[start:end]`` (line numbers for error messages)."""
    n = 0
    for i in range(start, end):
        if buf[i] == _NL:
            n += 1
    return n


@jit
def expand_champsim(ip, dst_mem, src_mem, fetch_size, data_size, out_addr, out_kind,
                    out_size, out_rec):
    """Accesses of ChampSim ``input_instr`` records, in order: the fetch of ``ip``, then a
    load per non-zero ``source_memory``, then a store per non-zero
    ``destination_memory`` (ChampSim's own order: loads before stores). Returns the
    number written; ``out_rec`` gets the record index of each access. The output arrays
    must hold ``7 * len(ip)`` entries."""
    n = ip.shape[0]
    k = 0
    for r in range(n):
        out_addr[k] = ip[r]
        out_kind[k] = K_FETCH
        out_size[k] = fetch_size
        out_rec[k] = r
        k += 1
        for j in range(src_mem.shape[1]):
            a = src_mem[r, j]
            if a != 0:
                out_addr[k] = a
                out_kind[k] = K_READ
                out_size[k] = data_size
                out_rec[k] = r
                k += 1
        for j in range(dst_mem.shape[1]):
            a = dst_mem[r, j]
            if a != 0:
                out_addr[k] = a
                out_kind[k] = K_WRITE
                out_size[k] = data_size
                out_rec[k] = r
                k += 1
    return k


@jit
def parse_int_cells(cells, out, base_hint):
    """Parse fixed-width byte strings (a numpy ``S`` array viewed as ``(n, width)`` u8)
    as unsigned integers: ``0x`` prefix or ``base_hint == 16`` means hexadecimal, else
    decimal; blanks around the number are allowed. Returns the index of the first bad
    cell, or -1."""
    n = cells.shape[0]
    w = cells.shape[1]
    for i in range(n):
        p = 0
        while p < w and (cells[i, p] == _SP or cells[i, p] == _TAB):
            p += 1
        e = w
        while e > p and (cells[i, e - 1] == 0 or cells[i, e - 1] == _SP or cells[i, e - 1] == _TAB
                         or cells[i, e - 1] == _CR):
            e -= 1
        hexa = base_hint == 16
        if p + 1 < e and cells[i, p] == 48 and (cells[i, p + 1] == 120 or cells[i, p + 1] == 88):
            hexa = True
            p += 2
        if p >= e:
            return i
        v = np.uint64(0)
        nd = 0
        bad = False
        while p < e:
            c = cells[i, p]
            if hexa:
                d = _hexval(c)
                if d < 0 or nd >= 16:
                    bad = True
                    break
                v = (v << np.uint64(4)) | np.uint64(d)
            else:
                if c < 48 or c > 57 or nd >= 20:
                    bad = True
                    break
                d = np.uint64(c - 48)
                if v > np.uint64(1844674407370955161) or (v == np.uint64(1844674407370955161)
                                                         and d > np.uint64(5)):
                    bad = True
                    break
                v = v * np.uint64(10) + d
            nd += 1
            p += 1
        if bad:
            return i
        out[i] = v
    return -1


@jit
def format_lackey(addr, kind, size, out):
    """Lackey text for accesses (``I  %08x,%d`` fetches, `` L``/`` S`` data), into ``out``
    (bytes; at least 48 per access). Returns the number of bytes written."""
    k = 0
    digits = np.empty(20, np.uint8)
    for i in range(addr.shape[0]):
        kd = kind[i]
        if kd == K_FETCH:
            out[k] = 73
            out[k + 1] = _SP
            out[k + 2] = _SP
        else:
            out[k] = _SP
            out[k + 1] = 76 if kd == K_READ else 83
            out[k + 2] = _SP
        k += 3
        a = addr[i]
        nd = 0
        while a != 0 or nd < 8:
            d = np.int64(a & np.uint64(15))
            digits[nd] = 48 + d if d < 10 else 87 + d
            a >>= np.uint64(4)
            nd += 1
        for j in range(nd - 1, -1, -1):
            out[k] = digits[j]
            k += 1
        out[k] = 44
        k += 1
        s = np.int64(size[i])
        nd = 0
        while s != 0 or nd == 0:
            digits[nd] = 48 + s % 10
            s //= 10
            nd += 1
        for j in range(nd - 1, -1, -1):
            out[k] = digits[j]
            k += 1
        out[k] = _NL
        k += 1
    return k


@jit_nrt_free
def _scan_range(ptr, lo, hi, itemsize, o_kind, o_flags, o_size, o_asid, out):
    mk = np.int64(0)
    mf = np.int64(0)
    smin = np.int64(1) << 40
    smax = np.int64(0)
    amax = np.int64(0)
    for i in range(lo, hi):
        p = ptr + i * itemsize
        mk = max(mk, load_u32(p + o_kind) & 0xFF)
        mf |= load_u32(p + o_flags)
        s = load_u32(p + o_size)
        a = load_u32(p + o_asid)
        smin = min(smin, s)
        smax = max(smax, s)
        amax = max(amax, a)
    out[0] = mk
    out[1] = mf
    out[2] = smin
    out[3] = smax
    out[4] = amax


@jit
def scan_accesses(t, parts, raw, itemsize, o_kind, o_flags, o_size, o_asid, res):
    """Part ``t`` of ``parts`` of one branch-free pass over an access batch's bytes
    (``raw``: its flat uint8 view; ``o_*``: field offsets; ``o_flags``: the first of four
    consecutive flag bytes): ``res[t]`` = (max kind, OR of the flag words, min size, max
    size, max asid). A flag above 1 shows as an OR above 1 in one of the word's bytes."""
    lo, hi = part_bounds(raw.shape[0] // itemsize, parts, t, _I1)
    _scan_range(raw.ctypes.data, lo, hi, itemsize, o_kind, o_flags, o_size, o_asid, res[t])


@jit_nrt_free
def _count_crossing(ptr, lo, hi, itemsize, o_addr, o_size):
    m = 0
    for i in range(lo, hi):
        p = ptr + i * itemsize
        m += ((load_u32(p + o_addr) & 0xFFF) + load_u32(p + o_size)) > 4096
    return m


@jit
def count_crossing(t, parts, raw, itemsize, o_addr, o_size, counts):
    """How many accesses of part ``t`` of ``parts`` of a batch (``raw``: its flat uint8
    view) cross a 4 KiB boundary, into ``counts[t + 1]``."""
    lo, hi = part_bounds(raw.shape[0] // itemsize, parts, t, _I1)
    counts[t + 1] = _count_crossing(raw.ctypes.data, lo, hi, itemsize, o_addr, o_size)


@jit_nrt_free
def _split_range(ptr, optr, lo, hi, k, itemsize, o_addr, o_size, index, part):
    words = itemsize // 8
    tail = itemsize - 8                       # the last 8 bytes (overlapping the words)
    for i in range(lo, hi):
        p = ptr + i * itemsize
        cross = ((load_u32(p + o_addr) & 0xFFF) + load_u32(p + o_size)) > 4096
        for c in range(2 if cross else 1):
            q = optr + k * itemsize
            for x in range(words):
                store_u64(q + 8 * x, load_u64(p + 8 * x))
            store_u64(q + tail, load_u64(p + tail))
            index[k] = i
            part[k] = c
            if c == 1:
                store_u64(q + o_addr, (load_u64(p + o_addr) | 0xFFF) + 1)
            k += 1


@jit
def split_crossing(t, parts, raw, itemsize, o_addr, o_size, start, out, index, part):
    """Part ``t`` of ``parts`` of the batch with each page-crossing access as two records,
    the second starting at the next page, written to ``out`` (flat bytes,
    ``(n + crossing) * itemsize``) from record ``start[t]`` on, with each record's access
    ``index`` and ``part`` (0, or 1 for a second record); ``start``: the cumulative sum of
    :func:`count_crossing`'s counts. Records are copied 8 bytes at a time (``itemsize`` >=
    8). The caller allocates the outputs: numpy asks for huge pages for them, Numba's
    allocator does not (4 KiB page faults were most of the time)."""
    lo, hi = part_bounds(raw.shape[0] // itemsize, parts, t, _I1)
    _split_range(raw.ctypes.data, out.ctypes.data, lo, hi, lo + start[t],
                 itemsize, o_addr, o_size, index, part)
