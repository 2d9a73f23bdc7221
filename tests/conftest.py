"""Shared fixtures: paths, the reference adapter, and the real dump (skipped when absent)."""
import json
import os
from pathlib import Path

import pytest

def _shared() -> Path:
    """The project's shared directory (the real dump): $VECMMU_SHARED, else ``../shared``
    beside the checkout, else /work/shared (where it lives on the project machine, so a
    clean checkout elsewhere, as CI makes, still runs the real-dump tests)."""
    if "VECMMU_SHARED" in os.environ:
        return Path(os.environ["VECMMU_SHARED"])
    beside = Path(__file__).resolve().parents[2] / "shared"
    return beside if beside.exists() else Path("/work/shared")


SHARED = _shared()
DUMPS = SHARED / "dumps"
DUMP_FILE = DUMPS / "guest4_spin.elf.gz"
TRUTH_FILE = DUMPS / "truth_guest4_spin.json"


def ref_reader(mem):
    """Adapt a PhysMem to the reference walker's ``read(addr, n) -> int | None``."""
    def read(addr, n):
        if addr < 0 or not mem.is_backed(addr, n):
            return None
        return int.from_bytes(mem.read(addr, n), "little")
    return read


@pytest.fixture(scope="session")
def real_dump():
    if not DUMP_FILE.exists() or not TRUTH_FILE.exists():
        pytest.skip(f"real dump not present at {DUMPS}")
    from vecmmu.io import open_dump
    dump = open_dump(DUMP_FILE)
    truth = json.loads(TRUTH_FILE.read_text())
    yield dump, truth
    dump.close()
