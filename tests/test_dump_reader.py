"""vecmmu.io.dump: ELF-core / gzip / raw dump reader, on synthetic cores and the real one."""
from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from vecmmu.io import CpuState, Dump, DumpError, DumpWarning, open_dump, open_raw
from vecmmu.io.dump import cache_path

# --- synthetic ELF core builder -------------------------------------------------------------

QS_MIN = 0x1B0          # QEMUCPUState up to cr[4] (older QEMU)
QS_KGS = 0x1B8          # with kernel_gs_base (QEMU >= 5.x)

LONG_CRS = (0x80050033, 0, 0x5794A9, 0x625E000, 0x750EF0)


def qemu_desc(size=QS_KGS, *, version=1, cr=LONG_CRS, rip=0x402641, rsp=0x7FFCA5D5AA10,
              rflags=0x212, cs=0x33, ss=0x2B, kgs=0xFFFF88800F800000, descsz=None,
              fill=0xAA):
    """A QEMUCPUState of ``size`` bytes (the size field says ``size``; the note is
    ``descsz`` bytes, default ``size``). Bytes past the known layout are ``fill``."""
    descsz = size if descsz is None else descsz
    b = bytearray([fill]) * max(descsz, 0x1C0)
    struct.pack_into("<II", b, 0, version, size)
    gprs = [0x1000 + i for i in range(16)]
    gprs[6] = rsp
    struct.pack_into("<16Q", b, 0x08, *gprs)
    struct.pack_into("<QQ", b, 0x88, rip, rflags)
    for k in range(10):
        sel = {0: cs, 5: ss}.get(k, 0x10 + k)
        struct.pack_into("<IIIIQ", b, 0x98 + 24 * k, sel, 0xFFFFFFFF, 0xA09B00 + k, 0,
                         0x100000 * k)
    struct.pack_into("<5Q", b, 0x188, *cr)
    if size >= QS_KGS:
        struct.pack_into("<Q", b, 0x1B0, kgs)
    return bytes(b[:descsz])


def prstatus64(pid, rip, rsp, cs=0x10, ss=0x18, rflags=0x2):
    b = bytearray(336)
    struct.pack_into("<I", b, 32, pid)
    regs = [0] * 27
    regs[16], regs[17], regs[18], regs[19], regs[20] = rip, cs, rflags, rsp, ss
    struct.pack_into("<27Q", b, 112, *regs)
    return bytes(b)


def prstatus32(pid, eip, esp, cs=0x60, ss=0x68, eflags=0x46):
    b = bytearray(144)
    struct.pack_into("<I", b, 24, pid)
    regs = [0] * 17
    regs[12], regs[13], regs[14], regs[15], regs[16] = eip, cs, eflags, esp, ss
    struct.pack_into("<17I", b, 72, *regs)
    return bytes(b)


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name = name + b"\0"
    pad = lambda x: x + b"\0" * (-len(x) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def build_core(path: Path, loads, notes=(), *, cls=64, machine=62, e_type=4, xnum=False,
               data=1) -> dict:
    """Write an ELF core: a PT_NOTE (if ``notes``) then one PT_LOAD per ``(paddr, bytes)``
    or ``(paddr, bytes, memsz)``. Returns the layout (offsets) for truncation tests."""
    is64 = cls == 64
    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    notes_blob = b"".join(notes)
    phdrs = []
    if notes_blob:
        phdrs.append(("note", 0, notes_blob, len(notes_blob)))
    for ld in loads:
        paddr, blob = ld[0], ld[1]
        memsz = ld[2] if len(ld) > 2 else len(blob)
        phdrs.append(("load", paddr, blob, memsz))
    phnum = len(phdrs)
    phoff = ehsize
    off = phoff + phnum * phentsize
    table, body, layout = b"", b"", {"phoff": phoff, "segments": []}
    for kind, paddr, blob, memsz in phdrs:
        p_type = 4 if kind == "note" else 1
        if is64:
            table += struct.pack("<IIQQQQQQ", p_type, 4, off, paddr, paddr, len(blob), memsz,
                                 0)
        else:
            table += struct.pack("<IIIIIIII", p_type, off, paddr, paddr, len(blob), memsz, 4, 0)
        layout["segments"].append((kind, off, len(blob)))
        body += blob
        off += len(blob)
    shoff, shnum = 0, 0
    shdr = b""
    if xnum:  # PN_XNUM: real e_phnum in section header 0's sh_info
        shoff, shnum = off, 1
        shdr = (struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0) if is64 else
                struct.pack("<IIIIIIIIII", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0))
    e_phnum = 0xFFFF if xnum else phnum
    ident = b"\x7fELF" + bytes([1 if cls == 32 else 2, data, 1]) + b"\0" * 9
    if is64:
        eh = ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, 0, phoff, shoff, 0,
                                 ehsize, phentsize, e_phnum, 64 if xnum else 0, shnum, 0)
    else:
        eh = ident + struct.pack("<HHIIIIIHHHHHH", e_type, machine, 1, 0, phoff, shoff, 0,
                                 ehsize, phentsize, e_phnum, 40 if xnum else 0, shnum, 0)
    path.write_bytes(eh + table + body + shdr)
    layout["size"] = path.stat().st_size
    return layout


def pattern(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


A_BASE, A_DATA = 0x100000, pattern(0x2000, 1)
B_BASE, B_DATA = 0x40000000, pattern(0x1000, 2)


@pytest.fixture
def core(tmp_path):
    p = tmp_path / "guest.elf"
    build_core(p, [(A_BASE, A_DATA), (B_BASE, B_DATA)],
               [note(b"CORE", 1, prstatus64(1, 0x402641, 0x7FFCA5D5AA10)),
                note(b"QEMU", 0, qemu_desc())])
    return p


# --- ELF64 core: memory --------------------------------------------------------------------

def test_memslots_and_bytes(core):
    d = open_dump(core)
    assert isinstance(d, Dump) and d.format == "elf-core"
    assert d.machine == "x86_64" and d.elf_class == 64
    assert d.path == core and d.file == core and not d.compressed
    slots = d.mem.slots
    assert [(s.base, s.size) for s in slots] == [(A_BASE, 0x2000), (B_BASE, 0x1000)]
    assert len(d.mem.backings) == 1                      # one memmap for the whole file
    assert isinstance(d._backing, np.memmap)
    assert d.mem.backings[0].size == core.stat().st_size
    # the slot offsets are the PT_LOAD file offsets
    raw = core.read_bytes()
    for s, blob in zip(slots, (A_DATA, B_DATA)):
        assert raw[s.offset:s.offset + s.size] == blob
        assert not s.writable
    assert d.mem.read(A_BASE, 0x2000) == A_DATA
    assert d.mem.read(A_BASE + 0x1FF8, 8) == A_DATA[-8:]
    assert d.mem.read(B_BASE + 0x10, 16) == B_DATA[0x10:0x20]
    assert d.mem.read_u64(B_BASE + 8) == int.from_bytes(B_DATA[8:16], "little")
    assert not d.mem.is_backed(A_BASE - 1) and not d.mem.is_backed(A_BASE + 0x2000)
    assert not d.mem.is_backed(0)
    with pytest.raises(PermissionError):
        d.mem.write_u64(A_BASE, 1)
    assert [(g.index, g.paddr, g.filesz, g.slot) for g in d.segments] == [
        (1, A_BASE, 0x2000, "load0"), (2, B_BASE, 0x1000, "load1")]
    assert d.unbacked == []
    assert d.notes == {"CORE": 1, "QEMU": 1}
    r = repr(d)
    assert "load0" in r and "load1" in r and f"{A_BASE:#x}" in r and f"{B_BASE:#x}" in r
    assert "cpu0" in r and "cr3=0x625e000" in r


def test_memsz_larger_than_filesz_warns(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA, 0x5000)], [note(b"QEMU", 0, qemu_desc())])
    with pytest.warns(DumpWarning, match="p_memsz > p_filesz"):
        d = open_dump(p)
    assert d.mem.slots[0].size == 0x2000
    assert d.unbacked == [(A_BASE + 0x2000, A_BASE + 0x5000)]
    assert not d.mem.is_backed(A_BASE + 0x2000)
    assert "unbacked" in repr(d)


def test_writable_uncompressed_writes_file(tmp_path, core):
    d = open_dump(core, writable=True)
    assert all(s.writable for s in d.mem.slots)
    d.mem.write_u64(B_BASE, 0x1122334455667788)
    d._backing.flush()
    d.close()
    assert open_dump(core).mem.read_u64(B_BASE) == 0x1122334455667788


def test_pn_xnum_program_header_count(tmp_path):
    p = tmp_path / "x.elf"
    build_core(p, [(A_BASE, A_DATA), (B_BASE, B_DATA)], [note(b"QEMU", 0, qemu_desc())],
               xnum=True)
    d = open_dump(p)
    assert len(d.mem.slots) == 2 and d.cpus[0].cr3 == LONG_CRS[3]


def test_elf32_i386_core(tmp_path):
    p = tmp_path / "i386.elf"
    crs = (0x80000011, 0, 0, 0x1FE000, 0x20)     # PG|PE, CR4.PAE
    build_core(p, [(A_BASE, A_DATA)],
               [note(b"CORE", 1, prstatus32(1, 0xC0101234, 0xC1FFFF00)),
                note(b"QEMU", 0, qemu_desc(QS_MIN, cr=crs, rip=0xC0101234, rsp=0xC1FFFF00,
                                           cs=0x60, ss=0x68))],
               cls=32, machine=3)
    d = open_dump(p)
    assert d.machine == "i386" and d.elf_class == 32
    assert d.mem.read(A_BASE, 16) == A_DATA[:16]
    c = d.cpus[0]
    assert (c.cr0, c.cr3, c.cr4, c.rip, c.cs, c.pid) == (crs[0], crs[3], crs[4], 0xC0101234,
                                                         0x60, 1)
    assert c.kernel_gs_base is None
    # an i386 dump is never long mode: PAE paging infers NXE only
    assert d.regs() == {"cr0": crs[0], "cr3": crs[3], "cr4": crs[4], "efer": 0x800,
                        "efer_inferred": True}


# --- QEMU notes ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [QS_MIN, QS_KGS, 0x1D0])
def test_qemu_note_size_is_read(tmp_path, size):
    p = tmp_path / "c.elf"
    crs = (0x80050033, 0x0, 0xDEAD000, 0x1234000 + size, 0x3606E0)
    build_core(p, [(A_BASE, A_DATA)], [note(b"QEMU", 0, qemu_desc(size, cr=crs))])
    d = open_dump(p)
    assert len(d.cpus) == 1
    c = d.cpus[0]
    assert isinstance(c, CpuState) and c.source == "qemu"
    assert (c.cr0, c.cr2, c.cr3, c.cr4) == (crs[0], crs[2], crs[3], crs[4])
    assert (c.rip, c.rsp, c.rflags, c.cs, c.ss) == (0x402641, 0x7FFCA5D5AA10, 0x212, 0x33, 0x2B)
    assert c.cpl == 3
    assert c.note_size == size and c.note_version == 1
    assert c.kernel_gs_base == (None if size < QS_KGS else 0xFFFF88800F800000)
    assert c.gprs["rax"] == 0x1000 and c.gprs["r15"] == 0x100F
    assert c.segments["tr"].selector == 0x17 and c.segments["idt"].base == 0x900000
    assert d.note_list[0].descsz == size


def test_two_vcpus_different_sizes_and_prstatus_pairing(tmp_path):
    p = tmp_path / "c.elf"
    cr_a = (0x80050033, 0, 0, 0x1000, 0x6E0)
    cr_b = (0x80050033, 0, 0, 0x2000, 0x6E0)
    build_core(p, [(A_BASE, A_DATA)],
               [note(b"CORE", 1, prstatus64(1, 0x10, 0x20)),
                note(b"CORE", 1, prstatus64(2, 0x30, 0x40)),
                note(b"QEMU", 0, qemu_desc(0x1D0, cr=cr_a, rip=0x1111)),
                note(b"QEMU", 0, qemu_desc(QS_MIN, cr=cr_b, rip=0x2222))])
    d = open_dump(p)
    assert [(c.index, c.cr3, c.rip, c.pid, c.note_size) for c in d.cpus] == [
        (0, 0x1000, 0x1111, 1, 0x1D0), (1, 0x2000, 0x2222, 2, QS_MIN)]
    assert d.regs(1)["cr3"] == 0x2000 and d.regs(-1)["cr3"] == 0x2000
    assert d.notes == {"CORE": 2, "QEMU": 2}
    with pytest.raises(IndexError, match="2 vCPU"):
        d.regs(2)


def test_qemu_note_too_small_for_cr(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA)], [note(b"QEMU", 0, qemu_desc(0x188))])
    with pytest.raises(DumpError, match=r"too small to contain cr\[5\]"):
        open_dump(p)


def test_qemu_note_size_field_beyond_note(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA)], [note(b"QEMU", 0, qemu_desc(0x1D0, descsz=QS_KGS))])
    with pytest.raises(DumpError, match="size field says 0x1d0.*only 0x1b8"):
        open_dump(p)


# --- regs() ----------------------------------------------------------------------------------

def test_regs_long_mode_inferred_and_explicit(core):
    d = open_dump(core)
    assert d.regs() == {"cr0": LONG_CRS[0], "cr3": LONG_CRS[3], "cr4": LONG_CRS[4],
                        "efer": 0xD01, "efer_inferred": True}
    r = d.regs(efer=0x501)
    assert r["efer"] == 0x501 and r["efer_inferred"] is False


def test_regs_efer_zero_without_paging(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA)], [note(b"QEMU", 0, qemu_desc(cr=(0x11, 0, 0, 0, 0x20)))])
    r = open_dump(p).regs()
    assert r["efer"] == 0 and r["efer_inferred"] is True
    p2 = tmp_path / "c2.elf"   # PG without PAE: 32-bit paging, no EFER bits
    build_core(p2, [(A_BASE, A_DATA)],
               [note(b"QEMU", 0, qemu_desc(cr=(0x80000011, 0, 0, 0x1000, 0x10)))])
    assert open_dump(p2).regs()["efer"] == 0


def test_regs_masks_pcid_only_with_pcide(tmp_path):
    cr3 = 0x625E000 | 0x5A5
    for cr4, want in ((0x750EF0 | (1 << 17), 0x625E000), (0x750EF0, cr3)):
        p = tmp_path / f"c{cr4:x}.elf"
        build_core(p, [(A_BASE, A_DATA)],
                   [note(b"QEMU", 0, qemu_desc(cr=(0x80050033, 0, 0, cr3, cr4)))])
        d = open_dump(p)
        assert d.regs()["cr3"] == want
        assert d.cpus[0].cr3 == cr3                    # raw value kept


def test_core_without_qemu_notes(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA)], [note(b"CORE", 1, prstatus64(1, 0xFFFFFFFF81000000,
                                                                   0xFFFFC90000003F00))])
    d = open_dump(p)                                   # memory is fine
    assert d.mem.read(A_BASE, 8) == A_DATA[:8]
    assert len(d.cpus) == 1 and d.cpus[0].source == "prstatus"
    assert d.cpus[0].rip == 0xFFFFFFFF81000000 and d.cpus[0].rsp == 0xFFFFC90000003F00
    assert d.cpus[0].cr3 is None and not d.has_cpu_registers
    with pytest.raises(DumpError, match="no QEMU CPU notes.*pass cr0/cr3/cr4/efer explicitly"):
        d.regs()
    assert "no control registers" in repr(d)


def test_core_without_any_notes(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA), (B_BASE, B_DATA)])
    d = open_dump(p)
    assert d.cpus == [] and d.notes == {}
    with pytest.raises(DumpError, match="no QEMU CPU notes"):
        d.regs()


# --- gzip and the cache ----------------------------------------------------------------------

def gz(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(src.read_bytes(), compresslevel=1))
    return dst


def test_gz_unpacks_once_to_cache(tmp_path, core):
    src = gz(core, tmp_path / "guest.elf.gz")
    cache = tmp_path / "cache"
    d = open_dump(src, cache_dir=cache)
    assert d.path == src and d.compressed and d.file.parent == cache
    assert d.file == cache_path(src, cache)
    assert d.file.read_bytes() == core.read_bytes()
    assert d.mem.read(B_BASE, 0x1000) == B_DATA and d.regs()["cr3"] == LONG_CRS[3]
    assert [f.name for f in cache.iterdir()] == [d.file.name]        # no temp file left
    assert "unpacked to" in repr(d)
    os.utime(d.file, ns=(1_000_000_000, 1_000_000_000))               # mark the cache file
    d2 = open_dump(src, cache_dir=cache)
    assert d2.file == d.file and d2.file.stat().st_mtime_ns == 1_000_000_000   # not re-unpacked
    assert d2.mem.read(A_BASE, 16) == A_DATA[:16]
    # a changed source (new mtime) is unpacked again under a new name
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    d3 = open_dump(src, cache_dir=cache)
    assert d3.file != d.file and d3.file.exists()


def test_gz_default_cache_dir_from_env(tmp_path, core, monkeypatch):
    monkeypatch.setenv("VECMMU_CACHE", str(tmp_path / "envcache"))
    d = open_dump(gz(core, tmp_path / "g.elf.gz"))
    assert d.file.parent == tmp_path / "envcache"


def test_gz_progress_only_on_tty(tmp_path, core, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    src = gz(core, tmp_path / "g.elf.gz")
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    open_dump(src, cache_dir=tmp_path / "c1")
    assert "unpacking g.elf.gz" in err.getvalue() and "100%" in err.getvalue()
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    open_dump(src, cache_dir=tmp_path / "c2")
    assert plain.getvalue() == ""


def test_gz_writable_is_copy_on_write(tmp_path, core):
    src = gz(core, tmp_path / "g.elf.gz")
    d = open_dump(src, cache_dir=tmp_path / "c", writable=True)
    d.mem.write_u64(A_BASE, 0)
    assert d.mem.read_u64(A_BASE) == 0
    assert d.file.read_bytes() == core.read_bytes()                  # cache unchanged


def test_corrupt_gz(tmp_path, core):
    blob = gzip.compress(core.read_bytes())
    p = tmp_path / "bad.elf.gz"
    p.write_bytes(blob[: len(blob) // 2])
    cache = tmp_path / "c"
    with pytest.raises(DumpError, match="bad.elf.gz.*corrupt or truncated gzip"):
        open_dump(p, cache_dir=cache)
    assert list(cache.iterdir()) == []                               # temp file removed


# --- errors ----------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.elf"):
        open_dump(tmp_path / "nope.elf")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.elf"
    p.write_bytes(b"")
    with pytest.raises(DumpError, match="empty"):
        open_dump(p)


def test_not_elf_not_gz_suggests_open_raw(tmp_path):
    p = tmp_path / "mem.raw"
    p.write_bytes(b"\x00" * 8192)
    with pytest.raises(DumpError, match=r"mem\.raw.*not an ELF.*open_raw"):
        open_dump(p)


def test_truncated_elf_header(tmp_path, core):
    p = tmp_path / "t.elf"
    p.write_bytes(core.read_bytes()[:40])
    with pytest.raises(DumpError, match="truncated ELF header.*40 bytes.*needs 64"):
        open_dump(p)
    p.write_bytes(core.read_bytes()[:10])
    with pytest.raises(DumpError, match="truncated ELF header"):
        open_dump(p)


def test_truncated_program_headers(tmp_path):
    p = tmp_path / "c.elf"
    lay = build_core(p, [(A_BASE, A_DATA), (B_BASE, B_DATA)], [note(b"QEMU", 0, qemu_desc())])
    p.write_bytes(p.read_bytes()[:lay["phoff"] + 56 + 20])
    with pytest.raises(DumpError, match=r"truncated program headers: 3 headers at \[0x40, 0xe8\)"):
        open_dump(p)


def test_segment_past_end_of_file(tmp_path):
    p = tmp_path / "c.elf"
    lay = build_core(p, [(A_BASE, A_DATA), (B_BASE, B_DATA)], [note(b"QEMU", 0, qemu_desc())])
    kind, off, size = lay["segments"][2]
    assert kind == "load"
    p.write_bytes(p.read_bytes()[:off + 100])
    with pytest.raises(DumpError, match=rf"PT_LOAD segment \(program header #2\).*"
                                        rf"\[{off:#x}, {off + size:#x}\).*truncated"):
        open_dump(p)


@pytest.mark.parametrize("e_type, words", [(2, "ELF executable, not a core dump"),
                                           (3, "shared object"), (1, "relocatable")])
def test_elf_not_a_core(tmp_path, e_type, words):
    p = tmp_path / "prog"
    build_core(p, [(A_BASE, A_DATA)], e_type=e_type)
    with pytest.raises(DumpError, match=words):
        open_dump(p)


def test_elf_core_wrong_machine_or_endianness(tmp_path):
    p = tmp_path / "arm.core"
    build_core(p, [(A_BASE, A_DATA)], machine=183)
    with pytest.raises(DumpError, match="machine 183, not x86"):
        open_dump(p)
    build_core(p, [(A_BASE, A_DATA)], data=2)
    with pytest.raises(DumpError, match="big-endian"):
        open_dump(p)


def test_core_without_memory(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [], [note(b"QEMU", 0, qemu_desc())])
    with pytest.raises(DumpError, match="no PT_LOAD"):
        open_dump(p)


def test_unaligned_paddr_names_segment(tmp_path):
    p = tmp_path / "c.elf"
    build_core(p, [(A_BASE, A_DATA), (B_BASE + 0x10, B_DATA)])
    with pytest.raises(DumpError, match=r"program header #1, paddr 0x40000010.*multiple of 4096"):
        open_dump(p)


def test_truncated_note(tmp_path):
    p = tmp_path / "c.elf"
    bad = struct.pack("<III", 5, 0x1000, 0) + b"QEMU\0\0\0\0" + b"\0" * 16
    build_core(p, [(A_BASE, A_DATA)], [bad])
    with pytest.raises(DumpError, match=r"PT_NOTE segment \(program header #0\).*runs past"):
        open_dump(p)


@pytest.mark.parametrize("magic, what", [
    (b"KDUMP   " + b"\x06\0\0\0", "kdump-compressed"),
    (b"makedumpfile\0\0\0\0" + b"\x01\0\0\0", "makedumpfile flattened"),
    (b"EMiL\x01\0\0\0", "LiME"),
])
def test_foreign_formats_refused(tmp_path, magic, what):
    p = tmp_path / "vmcore"
    p.write_bytes(magic + b"\0" * 4096)
    with pytest.raises(DumpError, match=rf"vmcore: this is a {what} file.*unsupported.*"
                                        rf"dump-guest-memory.*raw"):
        open_dump(p)
    with pytest.raises(DumpError, match=what):
        open_raw(p)
    g = gz(p, tmp_path / "vmcore.gz")
    with pytest.raises(DumpError, match=rf"vmcore.gz: this is a {what} file \(after gunzip\)"):
        open_dump(g, cache_dir=tmp_path / "c")


# --- raw -------------------------------------------------------------------------------------

def test_open_raw(tmp_path):
    p = tmp_path / "mem.raw"
    data = pattern(0x3000, 3)
    p.write_bytes(data)
    d = open_raw(p)
    assert d.format == "raw" and d.cpus == [] and d.machine is None
    assert [(s.base, s.size) for s in d.mem.slots] == [(0, 0x3000)]
    assert d.mem.read(0x1000, 32) == data[0x1000:0x1020]
    d = open_raw(p, base=0x100000)
    assert d.mem.read(0x100000, 8) == data[:8] and not d.mem.is_backed(0)
    with pytest.raises(DumpError, match="raw image has no CPU state"):
        d.regs()
    assert "raw" in repr(d)
    dz = open_raw(gz(p, tmp_path / "mem.raw.gz"), base=0x2000, cache_dir=tmp_path / "c")
    assert dz.mem.read(0x2000, 0x3000) == data


def test_open_raw_refuses_elf_and_empty(tmp_path, core):
    with pytest.raises(DumpError, match="ELF file, not a raw image; use open_dump"):
        open_raw(core)
    e = tmp_path / "e.raw"
    e.write_bytes(b"")
    with pytest.raises(DumpError, match="empty"):
        open_raw(e)
    with pytest.raises(FileNotFoundError):
        open_raw(tmp_path / "missing.raw")


# --- the real QEMU dump ----------------------------------------------------------------------

# ``real_dump`` is the session fixture of conftest.py (the dump and its checked truth)


@pytest.mark.dump
def test_real_qemu_dump(real_dump):
    d, truth = real_dump
    regs = {k: int(v, 16) for k, v in truth["registers"].items()
            if k in ("cr0", "cr2", "cr3", "cr4", "efer")}
    assert d.format == "elf-core" and d.machine == "x86_64" and d.elf_class == 64
    assert d.file.stat().st_size == truth["dump"]["size"]
    loads = [s for s in truth["dump"]["segments"] if s["type"] == "PT_LOAD"]
    assert [(s.base, s.size, s.offset) for s in d.mem.slots] == [
        (int(s["p_paddr"], 16), s["p_filesz"], int(s["p_offset"], 16)) for s in loads]
    assert len(d.cpus) == 1
    c = d.cpus[0]
    assert (c.cr0, c.cr2, c.cr3, c.cr4) == (regs["cr0"], regs["cr2"], regs["cr3"], regs["cr4"])
    q = truth["registers"]["qemu_note_cpu0"]
    assert c.note_size == int(q["size"], 16) and c.note_version == int(q["version"], 16)
    assert (c.rip, c.rsp, c.rflags) == (int(q["rip"], 16), int(q["rsp"], 16),
                                        int(q["rflags"], 16))
    assert c.cs == int(q["segments"]["cs"]["selector"], 16)
    assert c.ss == int(q["segments"]["ss"]["selector"], 16)
    assert c.kernel_gs_base == int(q["kernel_gs_base"], 16)
    assert c.segments["tr"].base == int(q["segments"]["tr"]["base"], 16)
    r = d.regs()
    assert (r["cr0"], r["cr3"], r["cr4"]) == (regs["cr0"], regs["cr3"], regs["cr4"])
    assert r["efer"] == regs["efer"] and r["efer_inferred"] is True
    # the memory behind the slots is the guest's: a few walks and page contents from the truth
    for page in truth["pages"][:50]:
        if page["walk"]["ok"]:
            for step in page["walk"]["steps"]:
                assert d.mem.read_u64(int(step["entry_pa"], 16)) == int(step["entry"], 16)
        if page.get("dump_first16"):
            assert d.mem.read(int(page["pa"], 16), 16).hex() == page["dump_first16"]
