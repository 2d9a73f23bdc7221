"""enc_mask: an SME/SEV C-bit or TDX shared bit set in every entry is stripped before the
entry is used, so an encrypted guest translates like its plain twin; traces keep the raw
entries."""
import numpy as np
import pytest

from vecmmu import CpuRole, Fault, Mmu, PageWalk

C_BIT = 1 << 47


def _twins():
    mmu = Mmu(CpuRole.for_mode("4level", maxphyaddr=52), ram_size=64 << 20)
    mmu.map(0x400000, 0x4000, user=True)
    mmu.map(0x600000, 2 << 20, page_size=2 << 20, user=True, nx=True)
    plain = mmu.walker()
    va = np.array([0x400010, 0x401000, 0x403ff8, 0x600123, 0x7FF000], dtype=np.uint64)
    before = plain.translate(va, user=True)
    # encrypt: the C-bit in every present entry on the way (tables and leaves)
    where = {mmu.entry_address(v, lvl)
             for v in (0x400000, 0x401000, 0x402000, 0x403000, 0x600000)
             for lvl in ((4, 3, 2, 1) if v < 0x600000 else (4, 3, 2))}
    for ea in where:
        mmu.write_entry_at(ea, mmu.read_entry_at(ea) | C_BIT)
    return mmu, va, before


@pytest.mark.nojit
def test_encrypted_entries_translate_with_the_mask():
    mmu, va, before = _twins()
    enc = PageWalk(mmu.role, mmu.mem, mmu.cr3(), enc_mask=C_BIT)
    after = enc.translate(va, user=True, trace=True)
    for col in ("fault", "gpa", "error_code", "acc", "leaf_level", "refs"):
        assert np.array_equal(before.columns()[col], after.columns()[col]), col
    assert int(after.trace_value[0, 3]) & C_BIT                 # traces keep the raw entry
    assert int(after.entry_value[0]) & C_BIT
    raw = PageWalk(mmu.role, mmu.mem, mmu.cr3()).translate(va, user=True)
    assert not np.any(raw.fault == Fault.NONE)                 # without it the walk goes astray


def test_enc_mask_must_be_address_bits():
    mmu, _, _ = _twins()
    with pytest.raises(ValueError, match="bits 11:0"):
        PageWalk(mmu.role, mmu.mem, mmu.cr3(), enc_mask=0x800)


def test_cli_translate_enc_mask(tmp_path, capsys):
    """`vecmmu translate --dump ... --enc-mask` walks an encrypted guest's dump."""
    from test_dump_reader import build_core, note, qemu_desc
    from vecmmu.cli import main
    mmu, va, _ = _twins()
    ram = mmu.mem.backings[0][:16 << 20].tobytes()
    crs = (0x80050033, 0, 0, mmu.cr3(), 0x20)          # PG|PE|WP, CR4.PAE
    path = tmp_path / "enc.elf"
    build_core(path, [(0, ram)], [note(b"QEMU", 0, qemu_desc(cr=crs))])
    args = ["translate", "--dump", str(path), "--efer", "0xd01", "--user", "0x400010"]
    assert main(args + ["--enc-mask", hex(C_BIT)]) == 0
    out = capsys.readouterr().out
    assert "none" in out.split("\n")[1] and "0x" in out
    assert main(args) == 0
    assert "none" not in capsys.readouterr().out.split("\n")[1]
