"""A differential harness: vecmmu's cpu_walk against QEMU's x86 MMU, through ``unicorn``.

Unicorn 2.1 (QEMU 5.0's TCG) walks the guest's page tables itself when paging is on and
the TLB mode is ``UC_TLB_CPU`` (the default since 2.1.0; unicorn-engine/unicorn#1953: the
old forced identity map is gone; #2010: ``UC_TLB_VIRTUAL`` is the opt-out). So:

* **Physical memory is what Unicorn maps.** ``mem_map_ptr(0, size, ..., ptr)`` maps one
  anonymous ``mmap`` at *physical* address 0; the very same bytes are the numpy array of
  the vecmmu :class:`~vecmmu.Mmu`'s RAM slot, so tables built with vecmmu are the tables
  QEMU walks (no copying), and A/D flags QEMU writes land in vecmmu's memory.
* **Paging is turned on by register writes.** A fresh ``UC_MODE_64`` engine starts in a
  fake long mode (EFER=0x500, CR0=PE|ET, paging off); ``reg_write`` of CR3, EFER (MSR
  0xC0000080), CR4 and CR0 goes through QEMU's ``cpu_x86_update_cr*`` / ``cpu_load_efer``
  and takes effect at once (read back and checked). 32-bit and PAE paging use
  ``UC_MODE_32`` the same way.
* **CPU model** ``UC_CPU_X86_ICELAKE_SERVER`` (``ctl_set_cpu_model``): SMEP, SMAP, PKU
  and LA57 survive QEMU's TCG feature filter. MAXPHYADDR and the feature bits are read
  with CPUID inside the emulator (:func:`probe_cpu`), not assumed (QEMU's TCG default is
  40 physical address bits).
* **CPL3** is reached with an ``iretq`` (``iretd`` in 32-bit modes) through a GDT the
  harness builds in guest memory (mapped supervisor-only in the same tables).
* **Exceptions** come only through ``UC_HOOK_INTR`` (Unicorn never delivers them through
  an IDT: with an interrupt hook installed it calls the hook instead of
  ``do_interrupt``, so an IDT route that pushes the error code on a guest stack does not
  exist here). The hook records the vector and CR2 (``reg_read``) and stops.
* **The #PF error code** is QEMU's ``CPUX86State.error_code``, which is not a register
  Unicorn exposes. ``uc.context_save()`` copies ``CPUX86State`` up to
  ``end_reset_fields`` (5608 bytes in Unicorn 2.1.4); ``bytes(ctx)`` is that raw copy and
  ``error_code`` is an ``int32`` in it. Its offset is *calibrated at run time*
  (:func:`error_code_offset`): four faults with known, different error codes (0, W, I/D,
  P|W) are provoked and the one offset whose int32 equals all four is used (5424 in
  2.1.4). A changed layout therefore gives a clean failure, not silent garbage.
* **Stale exception state.** Because Unicorn skips ``do_interrupt``, QEMU's
  ``env->old_exception`` stays 14 after a #PF and the *next* #PF would be promoted to #DF
  (vector 8). Every access therefore starts from a context saved before any fault
  (``context_restore``), which also resets all registers; CR3 is then rewritten, which
  flushes QEMU's TLB.

Where each access lands (the physical address) is checked with a pattern: every 16-byte
slot at physical address ``p`` of a pattern region holds ``B8 <p as imm32> F4 * 11``
(``hlt`` ends QEMU's translation block inside the slot, so translating the fetched
instruction never touches the next page; the access stops by instruction count before it). A
4-byte read at ``p + 1`` returns ``p`` (so tests read at slot + 1); a jump to ``p``
executes ``mov eax, p``; a 4-byte write stores a unique value, found (and undone) at the
address vecmmu predicted, or by a diff against a snapshot when QEMU wrote elsewhere. The
encodings are the same in 32- and 64-bit code. Pattern addresses are below 4 GiB.

Entry points: :class:`UnicornHarness` (one engine + one vecmmu ``Mmu`` over shared
memory), :meth:`UnicornHarness.run` (QEMU's outcome per access) and
:meth:`UnicornHarness.compare` (vecmmu's and QEMU's side by side).
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import struct
from dataclasses import dataclass

import numpy as np

import unicorn as U
from unicorn import x86_const as X

from vecmmu import CpuRole, Mmu, PageWalk, make_accesses
from vecmmu import bits as B
from vecmmu.bits import Fault, PagingMode

CPU_MODEL = X.UC_CPU_X86_ICELAKE_SERVER
MSR_EFER = 0xC0000080
EFLAGS_AC = 1 << 18
PF, GP = 14, 13

# QEMU outcome classes (column ``fault`` of :meth:`UnicornHarness.run`), vecmmu's Fault values
Q_NONE, Q_PF, Q_GP, Q_OTHER = int(Fault.NONE), int(Fault.PF), int(Fault.GP), 99

# Infrastructure (stubs, stack, GDT): four supervisor/user pages at a VA whose upper-level
# entries no test target shares (tests keep off these slots).
INFRA_VA = {PagingMode.BIT32: 0xFFC00000, PagingMode.PAE: 0xC0000000,
            PagingMode.LEVEL4: 0x7FFF_FF00_0000, PagingMode.LEVEL5: 0x7FFF_FF00_0000}
SLOT = 16


def _uc_mode(mode: PagingMode) -> int:
    return U.UC_MODE_64 if mode in (PagingMode.LEVEL4, PagingMode.LEVEL5) else U.UC_MODE_32


@dataclass(frozen=True)
class CpuInfo:
    """What the emulated CPU model supports (CPUID inside the emulator)."""
    maxphyaddr: int
    smep: bool
    smap: bool
    pku: bool
    la57: bool
    gbpages: bool
    nx: bool


@functools.lru_cache(maxsize=None)
def probe_cpu(model: int = CPU_MODEL) -> CpuInfo:
    """Run CPUID leaves 7 / 0x80000001 / 0x80000008 in the emulator (paging off)."""
    uc = U.Uc(U.UC_ARCH_X86, U.UC_MODE_64)
    uc.ctl_set_cpu_model(model)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\xa2")                     # cpuid
    out = {}
    for leaf in (7, 0x80000001, 0x80000008):
        uc.reg_write(X.UC_X86_REG_RAX, leaf)
        uc.reg_write(X.UC_X86_REG_RCX, 0)
        uc.emu_start(0, 2)
        out[leaf] = [uc.reg_read(r) for r in (X.UC_X86_REG_RAX, X.UC_X86_REG_RBX,
                                              X.UC_X86_REG_RCX, X.UC_X86_REG_RDX)]
    a7, b7, c7, _ = out[7]
    _, _, _, d81 = out[0x80000001]
    return CpuInfo(maxphyaddr=out[0x80000008][0] & 0xFF, smep=bool(b7 >> 7 & 1),
                   smap=bool(b7 >> 20 & 1), pku=bool(c7 >> 3 & 1), la57=bool(c7 >> 16 & 1),
                   gbpages=bool(d81 >> 26 & 1), nx=bool(d81 >> 20 & 1))


def _gdt(long_mode: bool) -> bytes:
    code = 0x00AF9A000000FFFF if long_mode else 0x00CF9A000000FFFF
    ucode = 0x00AFFA000000FFFF if long_mode else 0x00CFFA000000FFFF
    return struct.pack("<5Q", 0, code, 0x00CF92000000FFFF, ucode, 0x00CFF2000000FFFF)


USER_CS, USER_SS = 0x18 | 3, 0x20 | 3
# The access instruction: the same bytes in 32- and 64-bit code.
ACCESS_INSN = {0: b"\x8b\x03",      # read:  mov eax, [rbx]
               1: b"\x89\x33",      # write: mov [rbx], esi
               2: b"\xff\xe3"}      # fetch: jmp rbx   (then the target runs mov eax, imm32)
WRPKRU = b"\x0f\x01\xef"            # eax = PKRU, ecx = edx = 0
IRETQ, IRETD = b"\x48\xcf", b"\xcf"
# 32-bit CPL3 entry: a 32-bit kernel SS (Unicorn's initial SS is 16-bit, so iretd would
# pop through SP), then user DS/ES (iret to CPL3 would null DPL0 data segments).
LOAD_SEGS_32 = [b"\x66\xb8\x10\x00", b"\x8e\xd0",       # mov ax, 0x10; mov ss, ax
                b"\x66\xb8\x23\x00", b"\x8e\xd8", b"\x8e\xc0"]   # mov ax, 0x23; mov ds/es, ax


class UnicornHarness:
    """One Unicorn engine and one vecmmu :class:`Mmu` over the same physical memory.

    Build guest tables with :attr:`mmu` (and :meth:`map_data` for pages whose contents
    are the address pattern), then call :meth:`compare` with a role (CR0.WP, CR4.SMEP/SMAP/
    PKE, EFER.NXE, ...) and an access batch. The role's paging mode must be the
    harness's; MAXPHYADDR and 1 GiB-page support come from the emulated CPU.
    """

    def __init__(self, mode="4level", *, ram_size: int = 48 << 20, model: int = CPU_MODEL):
        self.cpu = probe_cpu(model)
        self.role0 = CpuRole.for_mode(mode, maxphyaddr=self.cpu.maxphyaddr,
                                      gbpages=self.cpu.gbpages)
        self.mode = self.role0.mode
        if self.mode is PagingMode.LEVEL5 and not self.cpu.la57:
            raise RuntimeError("the CPU model has no LA57")
        self._mm = mmap.mmap(-1, ram_size)
        self.ram = np.frombuffer(self._mm, dtype=np.uint8)
        self.mmu = Mmu(self.role0, ram=self.ram)
        self.long = self.mode in (PagingMode.LEVEL4, PagingMode.LEVEL5)
        self.uc = U.Uc(U.UC_ARCH_X86, _uc_mode(self.mode))
        self.uc.ctl_set_cpu_model(model)
        self._ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._mm))
        self.uc.mem_map_ptr(0, ram_size, U.UC_PROT_ALL, self._ptr)
        self._hit = []
        self.uc.hook_add(U.UC_HOOK_INTR, self._on_intr)
        # UC_MODE_32 takes the 32-bit register names only
        self._gprs = ((X.UC_X86_REG_RBX, X.UC_X86_REG_RSI, X.UC_X86_REG_RAX, X.UC_X86_REG_RCX,
                       X.UC_X86_REG_RDX, X.UC_X86_REG_RSP) if self.long else
                      (X.UC_X86_REG_EBX, X.UC_X86_REG_ESI, X.UC_X86_REG_EAX, X.UC_X86_REG_ECX,
                       X.UC_X86_REG_EDX, X.UC_X86_REG_ESP))
        self._build_infra()
        self._pristine = self.uc.context_save()      # before any mode switch or fault
        self._role = None
        self._snap = None
        self.ec_offset = error_code_offset()

    # -- guest memory ----------------------------------------------------------------------
    def _build_infra(self):
        va = INFRA_VA[self.mode]
        self.code_va, self.ucode_va, self.stack_va, self.gdt_va = (va + i * 0x1000 for i in range(4))
        nx = False                  # no XD anywhere: it is a reserved bit when EFER.NXE=0
        self.code_pa = int(self.mmu.map(self.code_va, 0x1000, user=False)[0])
        self.ucode_pa = int(self.mmu.map(self.ucode_va, 0x1000, user=True)[0])
        self.stack_pa = int(self.mmu.map(self.stack_va, 0x1000, user=False, nx=nx)[0])
        self.gdt_pa = int(self.mmu.map(self.gdt_va, 0x1000, user=False, nx=nx)[0])
        gdt = _gdt(self.long)
        self.ram[self.gdt_pa:self.gdt_pa + len(gdt)] = np.frombuffer(gdt, np.uint8)
        # stubs: one per (cpl, kind, pke), written once (TBs never go stale)
        self._stubs = {}
        off, uoff = 0, 0
        for kind in (0, 1, 2):
            uva = self.ucode_va + uoff
            self._poke(self.ucode_pa + uoff, ACCESS_INSN[kind])
            uoff += 0x40
            for user in (False, True):
                for pke in ((False, True) if self.long else (False,)):
                    insns = [WRPKRU] if pke else []
                    if user:
                        insns += [IRETQ] if self.long else LOAD_SEGS_32 + [IRETD]
                    else:
                        insns += [ACCESS_INSN[kind]]
                    code = b"".join(insns)
                    self._poke(self.code_pa + off, code)
                    # count = stub instructions (+1 access at CPL3) (+1 fetched target)
                    n = len(insns) + (1 if user else 0) + (1 if kind == 2 else 0)
                    self._stubs[(kind, user, pke)] = (self.code_va + off, n, uva)
                    off += 0x40

    def _poke(self, pa: int, data: bytes):
        self.ram[pa:pa + len(data)] = np.frombuffer(data, np.uint8)

    def fill_pattern(self, pa: int, size: int):
        """Write the address pattern over physical ``[pa, pa + size)`` (16-byte slots)."""
        assert pa % SLOT == 0 and size % SLOT == 0 and pa + size <= 1 << 32
        n = size // SLOT
        slots = np.empty((n, SLOT), dtype=np.uint8)
        slots[:, 0] = 0xB8
        slots[:, 1:5] = (np.arange(n, dtype=np.uint64) * SLOT + pa).astype("<u4").view(np.uint8).reshape(n, 4)
        slots[:, 5:] = 0xF4                # hlt: ends QEMU's TB inside the slot
        self.ram[pa:pa + size] = slots.reshape(-1)

    def map_data(self, va: int, size: int, **kw) -> np.ndarray:
        """``mmu.map`` plus the address pattern over the frames (when they lie in RAM)."""
        pas = self.mmu.map(va, size, **kw)
        ps = kw.get("page_size", 4096)
        for pa in np.unique(pas):
            pa = int(pa)
            if pa + ps <= self.ram.shape[0]:
                self.fill_pattern(pa, ps)
        return pas

    def pattern_region(self, size: int = 1 << 20, align: int = 1 << 21) -> int:
        """Allocate and fill a pattern region (for large pages that map RAM at 0)."""
        pa = self.mmu.alloc(size, align=align)
        self.fill_pattern(pa, size)
        return pa

    # -- the engine ------------------------------------------------------------------------
    def _on_intr(self, uc, intno, _):
        ec = struct.unpack_from("<i", bytes(uc.context_save()), self.ec_offset)[0] & 0xFFFFFFFF
        self._hit.append((intno, uc.reg_read(X.UC_X86_REG_CR2), ec))
        uc.emu_stop()

    def set_role(self, role: CpuRole):
        """Load CR0/CR4/EFER/CR3/GDTR for ``role`` and save the clean context every access
        starts from."""
        if role.mode is not self.mode:
            raise ValueError(f"role {role} is not in the harness's mode {self.mode!r}")
        if role.maxphyaddr != self.cpu.maxphyaddr or role.gbpages != self.cpu.gbpages:
            raise ValueError("the role's maxphyaddr/gbpages must be the emulated CPU's "
                             f"({self.cpu.maxphyaddr}, {self.cpu.gbpages})")
        regs = role.registers()
        cr4 = regs["cr4"]
        uc = self.uc
        # Always from the engine's first state: turning paging off from long mode would
        # clear QEMU's HF_CS64 (compatibility mode), and old_exception must be -1.
        uc.context_restore(self._pristine)
        uc.reg_write(X.UC_X86_REG_CR0, B.CR0_PE)
        uc.reg_write(X.UC_X86_REG_CR4, 0)
        uc.msr_write(MSR_EFER, regs["efer"] & ~B.EFER_LMA)
        uc.reg_write(X.UC_X86_REG_CR3, self.mmu.cr3())
        uc.reg_write(X.UC_X86_REG_CR4, cr4)
        uc.reg_write(X.UC_X86_REG_CR0, regs["cr0"])
        uc.reg_write(X.UC_X86_REG_GDTR, (0, self.gdt_va, 5 * 8 - 1, 0))
        got = (uc.reg_read(X.UC_X86_REG_CR0), uc.reg_read(X.UC_X86_REG_CR4),
               uc.msr_read(MSR_EFER) & ~B.EFER_LMA)
        want = (regs["cr0"], cr4, regs["efer"] & ~B.EFER_LMA)
        if got != want:
            raise RuntimeError(f"Unicorn did not take the registers: want {want}, got {got}")
        if self.long and not uc.msr_read(MSR_EFER) & B.EFER_LMA:
            raise RuntimeError("EFER.LMA did not become 1")
        self._hit.clear()
        self._ctx0 = uc.context_save()
        self._role = role

    def snapshot(self):
        """Remember memory before a batch (to find and undo stray writes)."""
        self._snap = self.ram[:self.mmu.allocated + 0x1000].copy()

    def run(self, accesses, pkru: int = 0) -> dict:
        """QEMU's outcome for each access of a batch (columns: fault (Q_*), vector,
        error_code, cr2, pa (-1 when none: a fault, or a landing the pattern cannot
        name)). Writes are undone after each access."""
        if self._role is None:
            raise RuntimeError("set_role() first")
        acc = make_accesses(accesses) if not isinstance(accesses, np.ndarray) else accesses
        n = acc.shape[0]
        pkrus = np.broadcast_to(np.asarray(pkru, dtype=np.uint64), (n,))
        out = {k: np.zeros(n, dtype=np.uint64 if k == "cr2" else np.int64)
               for k in ("fault", "vector", "error_code", "cr2", "pa")}
        if self._snap is None:
            self.snapshot()
        uc, R = self.uc, X
        pke = self._role.pke
        for i in range(n):
            addr, kind, user, ac = int(acc["addr"][i]), int(acc["kind"][i]), bool(acc["user"][i]), bool(acc["ac"][i])
            if not self.long:
                addr &= 0xFFFFFFFF
            start, count, uva = self._stubs[(kind, user, pke)]
            uc.context_restore(self._ctx0)
            uc.reg_write(R.UC_X86_REG_CR3, self.mmu.cr3())        # flushes QEMU's TLB
            value = 0x5EED0000 | (i & 0xFFFF)
            rbx, rsi, rax, rcx, rdx, rsp = self._gprs
            uc.reg_write(rbx, addr)
            uc.reg_write(rsi, value)
            uc.reg_write(rax, int(pkrus[i]) & 0xFFFFFFFF)
            uc.reg_write(rcx, 0)
            uc.reg_write(rdx, 0)
            flags = 0x2 | (EFLAGS_AC if ac else 0)
            sp = self.stack_va + 0x800
            if user:
                w = 8 if self.long else 4
                frame = [uva, USER_CS, flags, self.stack_va + 0xF00, USER_SS]
                self._poke(self.stack_pa + 0x800, struct.pack("<5Q" if w == 8 else "<5I", *frame))
                flags = 0x2
            uc.reg_write(rsp, sp)
            uc.reg_write(R.UC_X86_REG_EFLAGS, flags)
            self._hit.clear()
            err = None
            try:
                uc.emu_start(start, 0, count=count)
            except U.UcError as e:                 # e.g. a fault not caught by the hook
                err = e
            if self._hit:
                vec, cr2, ec = self._hit[0]
                out["vector"][i] = vec
                out["fault"][i] = Q_PF if vec == PF else Q_GP if vec == GP else Q_OTHER
                out["cr2"][i] = cr2 if vec == PF else 0
                out["error_code"][i] = ec if vec == PF else 0
                out["pa"][i] = -1
                continue
            if err is not None:
                out["fault"][i], out["vector"][i], out["pa"][i] = Q_OTHER, -int(err.errno), -1
                continue
            if kind == 0:
                v = uc.reg_read(rax) & 0xFFFFFFFF
                out["pa"][i] = self._pattern_pa(v, 1)
            elif kind == 2:
                v = uc.reg_read(rax) & 0xFFFFFFFF
                out["pa"][i] = self._pattern_pa(v, 0)
            else:
                out["pa"][i] = self._undo_write(value)
        return out

    def _pattern_pa(self, v: int, delta: int) -> int:
        """The slot address a value names, checked against the pattern in memory."""
        if v % SLOT == 0 and v + SLOT <= self.ram.shape[0] and self.ram[v] == 0xB8 \
                and int.from_bytes(self.ram[v + 1:v + 5].tobytes(), "little") == v:
            return v + delta
        return -1

    def _undo_write(self, value: int) -> int:
        """Find where ``value`` was written (at vecmmu's predicted address when
        :meth:`compare` gave one, else by a diff with the snapshot), restore the bytes,
        return the physical address (-1 when nothing was written)."""
        hint = self._expect_pa
        if hint is not None and 0 <= hint <= self.ram.shape[0] - 4 and \
                int.from_bytes(self.ram[hint:hint + 4].tobytes(), "little") == value:
            self.ram[hint:hint + 4] = self._snap[hint:hint + 4]
            return hint
        n = self._snap.shape[0]
        diff = np.flatnonzero(self.ram[:n] != self._snap)
        pa = -1
        if diff.size:
            # A/D flags QEMU set in tables also differ: look for the written bytes
            for d in diff:
                d = int(d)
                for s in range(max(0, d - 3), d + 1):
                    if int.from_bytes(self.ram[s:s + 4].tobytes(), "little") == value:
                        pa = s
                        break
                if pa >= 0:
                    break
            if pa >= 0:
                self.ram[pa:pa + 4] = self._snap[pa:pa + 4]
        return pa

    _expect_pa = None

    # -- side by side ----------------------------------------------------------------------
    def walker(self, role: CpuRole, pkru: int = 0) -> PageWalk:
        return PageWalk(role, self.mmu.mem, self.mmu.cr3(), pkru=pkru)

    def compare(self, role: CpuRole, accesses, pkru=0):
        """vecmmu's translation and QEMU's outcome of the same batch.

        Returns ``(r, q)``: the vecmmu :class:`~vecmmu.Translation` (computed first, on the
        starting memory) and :meth:`run`'s columns. With vecmmu's predicted physical
        address as a hint, writes are found and undone without a full diff."""
        acc = accesses if isinstance(accesses, np.ndarray) else make_accesses(accesses)
        pk = np.broadcast_to(np.asarray(pkru, dtype=np.uint64), (acc.shape[0],))
        r = self.walker(role).translate(acc, pkru=np.ascontiguousarray(pk))
        self.set_role(role)
        self.snapshot()
        q = {k: np.zeros(acc.shape[0], dtype=np.uint64 if k == "cr2" else np.int64)
             for k in ("fault", "vector", "error_code", "cr2", "pa")}
        for i in range(acc.shape[0]):
            self._expect_pa = int(r.gpa[i]) if r.fault[i] == Fault.NONE else None
            one = self.run(acc[i:i + 1], pkru=int(pk[i]))
            for k in q:
                q[k][i] = one[k][0]
        self._expect_pa = None
        return r, q


def vecmmu_view(r) -> dict:
    """vecmmu's result in :meth:`UnicornHarness.run`'s columns."""
    f = r.fault.astype(np.int64)
    pf = f == int(Fault.PF)
    return {"fault": f, "error_code": np.where(pf, r.error_code.astype(np.int64), 0),
            "cr2": np.where(pf, r.addr, np.uint64(0)).astype(np.uint64),
            "pa": np.where(f == 0, r.gpa.astype(np.int64), -1)}


# --- the error-code offset, found by provoking known faults ---------------------------------
@functools.lru_cache(maxsize=None)
def error_code_offset(model: int = CPU_MODEL) -> int:
    """Offset of ``CPUX86State.error_code`` in ``bytes(uc.context_save())``.

    Four #PFs with error codes 0 (read, not present), 2 (write, not present), 0x10
    (fetch, not present, NXE) and 3 (write, present read-only, CR0.WP) are provoked at
    CPL0 in 4-level paging; the int32 offsets that hold exactly those values in the four
    saved contexts are candidates, and exactly one must remain."""
    info = probe_cpu(model)
    ram_size = 4 << 20
    mm = mmap.mmap(-1, ram_size)
    ram = np.frombuffer(mm, dtype=np.uint8)
    mmu = Mmu(CpuRole.for_mode("4level", maxphyaddr=info.maxphyaddr), ram=ram)
    code_va, data_va = 0x10000000, 0x20000000
    code_pa = int(mmu.map(code_va, 0x1000)[0])
    mmu.map(data_va, 0x1000, writable=False)
    uc = U.Uc(U.UC_ARCH_X86, U.UC_MODE_64)
    uc.ctl_set_cpu_model(model)
    uc.mem_map_ptr(0, ram_size, U.UC_PROT_ALL, ctypes.addressof(ctypes.c_char.from_buffer(mm)))
    regs = mmu.role.registers()
    uc.reg_write(X.UC_X86_REG_CR3, mmu.cr3())
    uc.msr_write(MSR_EFER, regs["efer"])
    uc.reg_write(X.UC_X86_REG_CR4, regs["cr4"])
    uc.reg_write(X.UC_X86_REG_CR0, regs["cr0"])
    ram[code_pa:code_pa + 8] = np.frombuffer(b"\x8b\x03\x90\x90\x89\x03\x90\x90", np.uint8)
    ctxs = []

    def hook(uc, intno, _):
        ctxs.append((intno, bytes(uc.context_save())))
        uc.emu_stop()
    uc.hook_add(U.UC_HOOK_INTR, hook)
    ctx0 = uc.context_save()
    cases = [(code_va, data_va + 0x1000, 0), (code_va + 4, data_va + 0x1000, 2),
             (data_va + 0x1000, 0, 0x10), (code_va + 4, data_va, 3)]
    for start, rbx, _ in cases:
        uc.context_restore(ctx0)
        uc.reg_write(X.UC_X86_REG_CR3, mmu.cr3())
        uc.reg_write(X.UC_X86_REG_RBX, rbx)
        uc.emu_start(start, 0, count=1)
    if [c[0] for c in ctxs] != [PF] * 4:
        raise RuntimeError(f"calibration faults were not 4 #PFs: {[c[0] for c in ctxs]}")
    size = min(len(c[1]) for c in ctxs)
    hits = [off for off in range(0, size - 3, 4)
            if [struct.unpack_from("<i", c[1], off)[0] for c in ctxs] == [e for *_, e in cases]]
    if len(hits) != 1:
        raise RuntimeError(f"cannot find CPUX86State.error_code in the saved context: {hits}")
    del uc
    return hits[0]
