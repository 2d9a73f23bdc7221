"""Memory-dump reader: guest memory dumps as :class:`~vecmmu.memory.PhysMem` plus vCPU state.

Supported:

* **ELF core** written by QEMU's ``dump-guest-memory`` (ELF64 x86-64, or ELF32/ELF64
  i386 when the guest was not in long mode). Every ``PT_LOAD`` becomes one memslot at
  ``p_paddr`` over a single ``np.memmap`` of the file (nothing is read into RAM). The
  ``PT_NOTE`` segment is parsed for QEMU's per-CPU ``QEMUCPUState`` notes (name
  ``"QEMU"``), which carry CR0..CR4, and for ``NT_PRSTATUS`` notes (name ``"CORE"``).
* **gzip** of such a core (``.gz``): unpacked once into a cache directory and mapped from
  there.
* **raw** physical-memory images, only through :func:`open_raw` (a raw image has no magic
  to tell it from garbage, so :func:`open_dump` refuses it).

Other formats (kdump-compressed, makedumpfile flattened, LiME, Windows crash dumps, ...)
are recognised by their signature and refused with a message saying how to convert.

Layout of ``QEMUCPUState`` (all little-endian; the note's own ``size`` field says how
much of it is present, and is always read rather than assumed)::

    0x000  u32 version            (1)
    0x004  u32 size               (0x1b0 without kernel_gs_base, 0x1b8 with it)
    0x008  u64 rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8 .. r15   (16 x 8)
    0x088  u64 rip
    0x090  u64 rflags
    0x098  segment cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt        (10 x 24)
           each: u32 selector, u32 limit, u32 flags, u32 pad, u64 base
    0x188  u64 cr[5]              (cr0 .. cr4)
    0x1b0  u64 kernel_gs_base     (newer QEMU only)

EFER is not in the dump; :meth:`Dump.regs` infers it (and says so) unless given.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bits import CR0_PG, CR4_PAE, CR4_PCIDE, EFER_LMA, EFER_LME, EFER_NXE
from ..memory import PhysMem
from ._files import check_path

__all__ = [
    "CpuState", "Dump", "DumpError", "DumpWarning", "LoadSegment", "Note", "Segment",
    "cache_path", "default_cache_dir", "open_dump", "open_raw",
]

EFER_SCE = 1 << 0
EFER_INFERRED_LONG_MODE = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE   # 0xd01

# ELF constants
_ELFMAG = b"\x7fELF"
_ELFCLASS32, _ELFCLASS64 = 1, 2
_ELFDATA2LSB = 1
_ET_NAMES = {0: "ELF file of type ET_NONE", 1: "ELF relocatable object (.o)",
             2: "ELF executable", 3: "ELF shared object or PIE executable", 4: "ELF core"}
_ET_CORE = 4
EM_386, EM_X86_64 = 3, 62
_MACHINES = {EM_386: "i386", EM_X86_64: "x86_64"}
_PT_LOAD, _PT_NOTE = 1, 4
_PN_XNUM = 0xFFFF
_NT_PRSTATUS = 1

_GZIP_MAGIC = b"\x1f\x8b"

# QEMUCPUState offsets (see module docstring)
_QS_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_QS_OFF_GPRS = 0x08
_QS_OFF_RIP = 0x88
_QS_OFF_RFLAGS = 0x90
_QS_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_QS_OFF_SEGS = 0x98
_QS_SEG_SIZE = 24
_QS_OFF_CR = 0x188
_QS_MIN_SIZE = _QS_OFF_CR + 5 * 8            # 0x1b0: up to and including cr[4]
_QS_OFF_KGSBASE = 0x1B0

# NT_PRSTATUS layouts QEMU writes (offsets into the note's descriptor)
#   x86-64 (long mode): regs block at 112, u64 each, in Linux user_regs_struct order
_PRS64_SIZE = 336
_PRS64_REGS = 112
_PRS64_ORDER = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss",
                "fs_base", "gs_base", "ds", "es", "fs", "gs")
#   i386: regs block at 72, u32 each
_PRS32_SIZE = 144
_PRS32_REGS = 72
_PRS32_ORDER = ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rax", "ds", "es", "fs", "gs",
                "orig_rax", "rip", "cs", "rflags", "rsp", "ss")

# Signatures of formats we recognise but do not read: (offset, bytes, description)
_FOREIGN = [
    (0, b"KDUMP   ", "kdump-compressed",
     "written by makedumpfile -c/-l/-p or QEMU dump-guest-memory -z/-l/-s"),
    (0, b"DISKDUMP", "diskdump", ""),
    (0, b"makedumpfile", "makedumpfile flattened", "written by makedumpfile -F"),
    (0, b"EMiL", "LiME", ""),
    (0, b"PAGEDUMP", "Windows 32-bit crash dump", ""),
    (0, b"PAGEDU64", "Windows 64-bit crash dump", ""),
    (0, b"QEVM", "QEMU savevm/migration stream", ""),
    (0, b"BZh", "bzip2-compressed", "only gzip is unpacked"),
    (0, b"\xfd7zXZ\x00", "xz-compressed", "only gzip is unpacked"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed", "only gzip is unpacked"),
    (0, b"\x04\x22\x4d\x18", "lz4-compressed", "only gzip is unpacked"),
]

_CONVERT_HINT = ("convert it to an ELF core with QEMU's `dump-guest-memory` (without "
                 "-z/-l/-s) or to a raw physical-memory image and use open_raw()")


class DumpError(ValueError):
    """A dump file that cannot be read (unsupported format, truncated, inconsistent)."""


class DumpWarning(UserWarning):
    """Something in a dump that was read but is incomplete (e.g. p_memsz > p_filesz)."""


@dataclass(frozen=True)
class Segment:
    """One segment register (or LDTR/TR/GDTR/IDTR) from a QEMU note."""
    selector: int
    limit: int
    flags: int
    base: int


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD program header."""
    index: int            # program-header index
    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    slot: str | None      # memslot name, None when filesz == 0


@dataclass(frozen=True)
class Note:
    """One ELF note (descriptor not kept)."""
    name: str
    type: int
    offset: int           # file offset of the descriptor
    descsz: int


@dataclass(frozen=True)
class CpuState:
    """State of one vCPU as found in the dump.

    ``source`` is ``"qemu"`` (a QEMUCPUState note: all fields set) or ``"prstatus"``
    (only an NT_PRSTATUS note: no control registers, ``cr*`` are None). CR3 is the raw
    register value (PCID bits included); :meth:`Dump.regs` masks it.
    """
    index: int
    source: str
    cr0: int | None
    cr2: int | None
    cr3: int | None
    cr4: int | None
    rip: int
    rsp: int
    rflags: int
    cs: int               # selector
    ss: int               # selector
    gprs: dict = field(default_factory=dict, repr=False, compare=False)
    segments: dict = field(default_factory=dict, repr=False, compare=False)
    kernel_gs_base: int | None = None
    note_version: int | None = None
    note_size: int | None = None
    pid: int | None = None   # NT_PRSTATUS pr_pid (QEMU writes the CPU number there)

    @property
    def has_control_registers(self) -> bool:
        return self.cr3 is not None

    @property
    def cpl(self) -> int:
        return self.cs & 3


class Dump:
    """An opened memory dump.

    Attributes: ``mem`` (:class:`PhysMem`, one memslot per PT_LOAD), ``cpus`` (list of
    :class:`CpuState`), ``path`` (the file given), ``file`` (the uncompressed file that is
    mapped; differs from ``path`` for ``.gz``), ``format`` (``'elf-core'`` or ``'raw'``),
    ``machine`` (``'x86_64'``/``'i386'``/None), ``elf_class`` (32/64/None), ``segments``
    (PT_LOAD headers), ``notes`` (note name -> count), ``note_list``, ``unbacked``
    (``[start, end)`` physical ranges described by p_memsz but not present in the file).
    """

    def __init__(self, *, mem: PhysMem, path: Path, file: Path, format: str,
                 cpus=(), machine=None, elf_class=None, segments=(), note_list=(),
                 unbacked=(), backing=None):
        self.mem = mem
        self.path = path
        self.file = file
        self.format = format
        self.cpus: list[CpuState] = list(cpus)
        self.machine = machine
        self.elf_class = elf_class
        self.segments: list[LoadSegment] = list(segments)
        self.note_list: list[Note] = list(note_list)
        self.notes: dict[str, int] = {}
        for n in self.note_list:
            self.notes[n.name] = self.notes.get(n.name, 0) + 1
        self.unbacked: list[tuple[int, int]] = list(unbacked)
        self._backing = backing

    @property
    def compressed(self) -> bool:
        return self.file != self.path

    @property
    def has_cpu_registers(self) -> bool:
        return any(c.has_control_registers for c in self.cpus)

    def regs(self, vcpu: int = 0, efer: int | None = None) -> dict:
        """Paging registers of one vCPU: ``dict(cr0, cr3, cr4, efer, efer_inferred)``.

        CR3 has its PCID (bits 11:0) cleared when CR4.PCIDE is set; other bits are as
        dumped. EFER is not in a QEMU dump: with ``efer=None`` it is inferred as
        SCE|LME|LMA|NXE (0xd01) when CR0.PG and CR4.PAE are set in an x86-64 dump, NXE
        (0x800) for PAE paging in an i386 dump (QEMU writes EM_386 only when the guest is
        not in long mode; NXE is a guess), else 0; ``efer_inferred`` says whether it was.
        """
        if self.format == "raw":
            raise DumpError(f"{self.path}: a raw image has no CPU state; pass cr0/cr3/cr4/"
                            f"efer explicitly")
        if not self.has_cpu_registers:
            what = (f"only {len(self.cpus)} NT_PRSTATUS note(s), which carry no control "
                    f"registers" if self.cpus else "no CPU notes at all")
            raise DumpError(f"{self.path}: no QEMU CPU notes in this core ({what}); the "
                            f"control registers are unknown: pass cr0/cr3/cr4/efer explicitly")
        if not -len(self.cpus) <= vcpu < len(self.cpus):
            raise IndexError(f"{self.path}: vCPU {vcpu} out of range; the dump has "
                             f"{len(self.cpus)} vCPU(s)")
        c = self.cpus[vcpu]
        if not c.has_control_registers:
            raise DumpError(f"{self.path}: vCPU {vcpu} has no QEMU CPU note; pass its "
                            f"registers explicitly")
        cr3 = c.cr3
        if c.cr4 & CR4_PCIDE:
            cr3 &= ~0xFFF
        inferred = efer is None
        if inferred:
            if (c.cr0 & CR0_PG) and (c.cr4 & CR4_PAE):
                efer = EFER_NXE if self.machine == "i386" else EFER_INFERRED_LONG_MODE
            else:
                efer = 0
        return {"cr0": c.cr0, "cr3": cr3, "cr4": c.cr4, "efer": int(efer),
                "efer_inferred": inferred}

    def close(self) -> None:
        """Drop this object's references to the memory map (the mapping is released once
        no array view of it is alive)."""
        self.mem = None
        self._backing = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        lines = [f"Dump({str(self.path)!r}, format={self.format!r}"
                 + (f", machine={self.machine}, ELF{self.elf_class}" if self.machine else "")
                 + (f", unpacked to {str(self.file)!r}" if self.compressed else "") + ")"]
        if self.mem is None:
            lines.append("  (closed)")
            return "\n".join(lines)
        lines.append(f"  {len(self.mem.slots)} memslot(s), {self.mem.size:#x} bytes:")
        for s in self.mem.slots:
            lines.append(f"    {s.name}: [{s.base:#x}, {s.end:#x}) file offset {s.offset:#x}"
                         + ("" if s.writable else " ro"))
        for lo, hi in self.unbacked:
            lines.append(f"    unbacked (p_memsz > p_filesz): [{lo:#x}, {hi:#x})")
        if self.notes:
            lines.append("  notes: " + ", ".join(f"{k} x{v}" for k, v in self.notes.items()))
        lines.append(f"  {len(self.cpus)} vCPU(s)" + (":" if self.cpus else ""))
        for c in self.cpus:
            if c.has_control_registers:
                lines.append(f"    cpu{c.index}: cr0={c.cr0:#x} cr3={c.cr3:#x} cr4={c.cr4:#x} "
                             f"rip={c.rip:#x} rsp={c.rsp:#x} cs={c.cs:#x} (cpl {c.cpl})")
            else:
                lines.append(f"    cpu{c.index}: (NT_PRSTATUS only, no control registers) "
                             f"rip={c.rip:#x} rsp={c.rsp:#x} cs={c.cs:#x}")
        return "\n".join(lines)


# -- cache for unpacked .gz files -------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$VECMMU_CACHE`` if set, else ``~/.cache/vecmmu``."""
    env = os.environ.get("VECMMU_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vecmmu"


def cache_path(path, cache_dir=None) -> Path:
    """Where the unpacked copy of the gzip file ``path`` lives (keyed by the source's
    absolute path, size and mtime, so a changed source gets a new name)."""
    src = Path(path).resolve()
    st = src.stat()
    key = hashlib.sha256(f"{src}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = src.name[:-3] if src.name.endswith(".gz") else src.name
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{stem}.{key}"


def _unpack_gzip(src: Path, cache_dir) -> Path:
    dst = cache_path(src, cache_dir)
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    total = src.stat().st_size
    show = sys.stderr is not None and sys.stderr.isatty()
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            last = -1
            while True:
                try:
                    chunk = gz.read(1 << 22)
                except (OSError, EOFError, zlib.error) as e:
                    raise DumpError(f"{src}: corrupt or truncated gzip file ({e})") from None
                if not chunk:
                    break
                out.write(chunk)
                if show:
                    pct = int(100 * raw.tell() / total) if total else 100
                    if pct != last:
                        last = pct
                        sys.stderr.write(f"\rvecmmu: unpacking {src.name} to {dst.parent}: "
                                         f"{pct:3d}%")
                        sys.stderr.flush()
        if show:
            sys.stderr.write("\n")
        os.chmod(tmp, 0o644)          # mkstemp made it 0600
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dst


# -- format detection -------------------------------------------------------------------------

def _check_file(path) -> Path:
    return check_path(path, "dump file")


def _head(p: Path, n: int = 64) -> bytes:
    with open(p, "rb") as f:
        return f.read(n)


def _foreign_format(head: bytes) -> tuple[str, str] | None:
    for off, sig, desc, detail in _FOREIGN:
        if head[off:off + len(sig)] == sig:
            return desc, detail
    return None


def _materialize(p: Path, cache_dir) -> tuple[Path, bytes]:
    """The uncompressed file to map (unpacking a .gz into the cache) and its first bytes."""
    head = _head(p)
    if head[:2] == _GZIP_MAGIC:
        f = _unpack_gzip(p, cache_dir)
        return f, _head(f)
    return p, head


def _refuse_foreign(p: Path, head: bytes, file: Path) -> None:
    inner = " (after gunzip)" if file != p else ""
    found = _foreign_format(head)
    if found is not None:
        desc, detail = found
        detail = f" ({detail})" if detail else ""
        raise DumpError(f"{p}: this is a {desc} file{inner}{detail}; this format is "
                        f"unsupported by vecmmu: {_CONVERT_HINT}")


# -- public entry points ----------------------------------------------------------------------

def open_dump(path, *, cache_dir=None, writable: bool = False) -> Dump:
    """Open a guest memory dump (an ELF core from QEMU ``dump-guest-memory``, optionally
    gzip'd). ``.gz`` files are unpacked once into ``cache_dir`` (default
    :func:`default_cache_dir`). With ``writable=True`` the memslots are writable: an
    uncompressed file is mapped read-write (writes go to the file), an unpacked cache
    copy is mapped copy-on-write (writes stay in this process, the cache is not changed).
    Raw images are refused: use :func:`open_raw`.
    """
    p = _check_file(path)
    if p.stat().st_size == 0:
        raise DumpError(f"{p}: file is empty")
    file, head = _materialize(p, cache_dir)
    if head[:4] == _ELFMAG:
        return _open_elf(p, file, writable)
    _refuse_foreign(p, head, file)
    inner = " after gunzip" if file != p else ""
    raise DumpError(f"{p}: not an ELF core dump (no ELF magic{inner}) and not gzip; if it is "
                    f"a raw physical-memory image, open it with open_raw(path, base=0)")


def open_raw(path, base: int = 0, *, cache_dir=None, writable: bool = False) -> Dump:
    """Open a raw physical-memory image (optionally gzip'd) as one memslot at ``base``.
    Files with a recognised format (ELF, kdump, ...) are refused."""
    p = _check_file(path)
    if p.stat().st_size == 0:
        raise DumpError(f"{p}: raw memory image is empty")
    file, head = _materialize(p, cache_dir)
    if head[:4] == _ELFMAG:
        raise DumpError(f"{p}: this is an ELF file, not a raw image; use open_dump()")
    _refuse_foreign(p, head, file)
    size = file.stat().st_size
    if size == 0:
        raise DumpError(f"{p}: raw memory image is empty")
    mm = np.memmap(file, dtype=np.uint8, mode=_mode(writable, file != p))
    mem = PhysMem()
    mem.add_slot(base, mm, name="raw", writable=writable)
    return Dump(mem=mem, path=p, file=file, format="raw", backing=mm)


def _mode(writable: bool, cached: bool) -> str:
    if not writable:
        return "r"
    return "c" if cached else "r+"


# -- ELF --------------------------------------------------------------------------------------

def _open_elf(p: Path, file: Path, writable: bool) -> Dump:
    fsize = file.stat().st_size
    with open(file, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16:
            raise DumpError(f"{p}: truncated ELF header: file is {fsize} bytes, e_ident alone "
                            f"needs 16")
        cls, data = ident[4], ident[5]
        if cls not in (_ELFCLASS32, _ELFCLASS64):
            raise DumpError(f"{p}: bad ELF class {cls} in e_ident (expected 1 or 2)")
        if data != _ELFDATA2LSB:
            raise DumpError(f"{p}: big-endian or unknown ELF data encoding ({data}); only "
                            f"little-endian x86 cores are supported")
        is64 = cls == _ELFCLASS64
        ehsize = 64 if is64 else 52
        f.seek(0)
        eh = f.read(ehsize)
        if len(eh) < ehsize:
            raise DumpError(f"{p}: truncated ELF header: file is {fsize} bytes, an "
                            f"ELF{64 if is64 else 32} header needs {ehsize}")
        if is64:
            (e_type, e_machine, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize,
             e_phentsize, e_phnum, e_shentsize, _shnum, _shstrndx) = struct.unpack_from(
                "<HHIQQQIHHHHHH", eh, 16)
        else:
            (e_type, e_machine, _ver, _entry, e_phoff, e_shoff, _flags, _ehsize,
             e_phentsize, e_phnum, e_shentsize, _shnum, _shstrndx) = struct.unpack_from(
                "<HHIIIIIHHHHHH", eh, 16)
        if e_type != _ET_CORE:
            what = _ET_NAMES.get(e_type, f"ELF file of unknown type {e_type}")
            raise DumpError(f"{p}: {what}, not a core dump")
        if e_machine not in _MACHINES:
            raise DumpError(f"{p}: ELF core for machine {e_machine}, not x86 (EM_386=3 or "
                            f"EM_X86_64=62); unsupported")
        machine = _MACHINES[e_machine]
        phent_expected = 56 if is64 else 32
        if e_phentsize != phent_expected and e_phnum:
            raise DumpError(f"{p}: e_phentsize is {e_phentsize}, expected {phent_expected}")
        if e_phnum == _PN_XNUM:
            e_phnum = _real_phnum(p, f, fsize, is64, e_shoff, e_shentsize)
        if e_phnum == 0:
            raise DumpError(f"{p}: ELF core has no program headers")
        ph_end = e_phoff + e_phnum * phent_expected
        if ph_end > fsize:
            raise DumpError(f"{p}: truncated program headers: {e_phnum} headers at "
                            f"[{e_phoff:#x}, {ph_end:#x}) but the file is {fsize:#x} bytes")
        f.seek(e_phoff)
        phtab = f.read(ph_end - e_phoff)

        loads, note_segs = [], []
        for i in range(e_phnum):
            if is64:
                p_type, _pf, off, vaddr, paddr, filesz, memsz, _al = struct.unpack_from(
                    "<IIQQQQQQ", phtab, i * 56)
            else:
                p_type, off, vaddr, paddr, filesz, memsz, _pf, _al = struct.unpack_from(
                    "<IIIIIIII", phtab, i * 32)
            if p_type not in (_PT_LOAD, _PT_NOTE):
                continue
            kind = "PT_LOAD" if p_type == _PT_LOAD else "PT_NOTE"
            if off + filesz > fsize:
                raise DumpError(f"{p}: {kind} segment (program header #{i}) occupies file "
                                f"bytes [{off:#x}, {off + filesz:#x}), past the end of the "
                                f"file ({fsize:#x} bytes): the dump is truncated")
            if p_type == _PT_LOAD:
                loads.append((i, off, vaddr, paddr, filesz, memsz))
            else:
                note_segs.append((i, off, filesz))

        notes, qemu_descs, prstatus_descs = [], [], []
        for i, off, size in note_segs:
            f.seek(off)
            _parse_notes(p, i, off, f.read(size), notes, qemu_descs, prstatus_descs)

    if not loads:
        raise DumpError(f"{p}: ELF core has no PT_LOAD segments (no memory)")
    mm = np.memmap(file, dtype=np.uint8, mode=_mode(writable, file != p))
    mem = PhysMem()
    segments, unbacked = [], []
    for k, (i, off, vaddr, paddr, filesz, memsz) in enumerate(loads):
        name = f"load{k}" if filesz else None
        if filesz:
            try:
                mem.add_slot(paddr, mm, offset=off, size=filesz, name=name, writable=writable)
            except ValueError as e:
                raise DumpError(f"{p}: PT_LOAD segment (program header #{i}, paddr "
                                f"{paddr:#x}, file offset {off:#x}, size {filesz:#x}): "
                                f"{e}") from None
        if memsz > filesz:
            unbacked.append((paddr + filesz, paddr + memsz))
        segments.append(LoadSegment(i, paddr, vaddr, off, filesz, memsz, name))
    if unbacked:
        warnings.warn(f"{p}: {len(unbacked)} PT_LOAD segment(s) have p_memsz > p_filesz; only "
                      f"the file-backed part is mapped, unbacked: "
                      + ", ".join(f"[{a:#x}, {b:#x})" for a, b in unbacked),
                      DumpWarning, stacklevel=3)

    cpus = _make_cpus(p, qemu_descs, prstatus_descs, is64 and machine == "x86_64")
    return Dump(mem=mem, path=p, file=file, format="elf-core", cpus=cpus, machine=machine,
                elf_class=64 if is64 else 32, segments=segments, note_list=notes,
                unbacked=unbacked, backing=mm)


def _real_phnum(p, f, fsize, is64, e_shoff, e_shentsize) -> int:
    """e_phnum == PN_XNUM: the real count is sh_info of section header 0."""
    need = 64 if is64 else 40
    if e_shoff == 0 or e_shoff + need > fsize:
        raise DumpError(f"{p}: e_phnum is PN_XNUM (0xffff) but section header 0 at "
                        f"{e_shoff:#x} is missing or past the end of the file")
    f.seek(e_shoff + (44 if is64 else 28))
    return struct.unpack("<I", f.read(4))[0]


def _parse_notes(p, phidx, seg_off, buf, notes, qemu_descs, prstatus_descs) -> None:
    pos, n = 0, len(buf)
    while pos + 12 <= n:
        namesz, descsz, ntype = struct.unpack_from("<III", buf, pos)
        name_off = pos + 12
        desc_off = name_off + _align4(namesz)
        end = desc_off + _align4(descsz)
        if desc_off + descsz > n:
            raise DumpError(f"{p}: PT_NOTE segment (program header #{phidx}): note at file "
                            f"offset {seg_off + pos:#x} (namesz {namesz}, descsz {descsz}) "
                            f"runs past the segment end {seg_off + n:#x}")
        name = bytes(buf[name_off:name_off + namesz]).rstrip(b"\0").decode("latin-1")
        desc = bytes(buf[desc_off:desc_off + descsz])
        notes.append(Note(name, ntype, seg_off + desc_off, descsz))
        if name == "QEMU" and ntype == 0:
            qemu_descs.append((seg_off + desc_off, desc))
        elif name == "CORE" and ntype == _NT_PRSTATUS:
            prstatus_descs.append((seg_off + desc_off, desc))
        pos = end


def _align4(x: int) -> int:
    return (x + 3) & ~3


def _parse_qemu_cpustate(p, index, off, desc):
    if len(desc) < 8:
        raise DumpError(f"{p}: QEMU CPU note #{index} at file offset {off:#x} is only "
                        f"{len(desc)} bytes, too small for its version/size header")
    version, size = struct.unpack_from("<II", desc, 0)
    if size > len(desc):
        raise DumpError(f"{p}: QEMU CPU note #{index} at file offset {off:#x}: its size field "
                        f"says {size:#x} bytes but the note holds only {len(desc):#x}")
    if size < _QS_MIN_SIZE:
        raise DumpError(f"{p}: QEMU CPU note #{index} at file offset {off:#x} (version "
                        f"{version}): size field {size:#x} is too small to contain cr[5] "
                        f"(needs at least {_QS_MIN_SIZE:#x} bytes); unknown QEMUCPUState "
                        f"layout")
    gprs = dict(zip(_QS_GPRS, struct.unpack_from("<16Q", desc, _QS_OFF_GPRS)))
    rip, rflags = struct.unpack_from("<QQ", desc, _QS_OFF_RIP)
    segs = {}
    for k, nm in enumerate(_QS_SEGS):
        sel, lim, flg, _pad, base = struct.unpack_from("<IIIIQ", desc,
                                                        _QS_OFF_SEGS + k * _QS_SEG_SIZE)
        segs[nm] = Segment(sel, lim, flg, base)
    cr = struct.unpack_from("<5Q", desc, _QS_OFF_CR)
    kgs = (struct.unpack_from("<Q", desc, _QS_OFF_KGSBASE)[0]
           if size >= _QS_OFF_KGSBASE + 8 else None)
    return dict(cr0=cr[0], cr2=cr[2], cr3=cr[3], cr4=cr[4], rip=rip, rsp=gprs["rsp"],
                rflags=rflags, cs=segs["cs"].selector, ss=segs["ss"].selector, gprs=gprs,
                segments=segs, kernel_gs_base=kgs, note_version=version, note_size=size)


def _parse_prstatus(desc, long_mode: bool):
    """(pid, regs) from an NT_PRSTATUS descriptor in one of QEMU's two layouts, or None."""
    if long_mode and len(desc) >= _PRS64_SIZE:
        pid = struct.unpack_from("<I", desc, 32)[0]
        regs = dict(zip(_PRS64_ORDER, struct.unpack_from(f"<{len(_PRS64_ORDER)}Q", desc,
                                                         _PRS64_REGS)))
        return pid, regs
    if len(desc) >= _PRS32_SIZE:
        pid = struct.unpack_from("<I", desc, 24)[0]
        regs = dict(zip(_PRS32_ORDER, struct.unpack_from(f"<{len(_PRS32_ORDER)}I", desc,
                                                         _PRS32_REGS)))
        for seg in ("ds", "es", "fs", "gs", "cs", "ss"):
            regs[seg] &= 0xFFFF
        return pid, regs
    return None


def _make_cpus(p, qemu_descs, prstatus_descs, long_mode) -> list[CpuState]:
    prs = [_parse_prstatus(d, long_mode) for _, d in prstatus_descs]
    cpus = []
    if qemu_descs:
        # QEMU writes all CORE notes, then all QEMU notes, in CPU order.
        pair = len(prs) == len(qemu_descs)
        for k, (off, desc) in enumerate(qemu_descs):
            st = _parse_qemu_cpustate(p, k, off, desc)
            pid = prs[k][0] if pair and prs[k] is not None else None
            cpus.append(CpuState(index=k, source="qemu", pid=pid, **st))
        return cpus
    for k, pr in enumerate(prs):
        if pr is None:
            continue
        pid, r = pr
        gprs = {nm: r[nm] for nm in _QS_GPRS if nm in r}
        cpus.append(CpuState(index=len(cpus), source="prstatus", cr0=None, cr2=None, cr3=None,
                             cr4=None, rip=r["rip"], rsp=r["rsp"], rflags=r["rflags"],
                             cs=r["cs"], ss=r["ss"], gprs=gprs, pid=pid))
    return cpus
