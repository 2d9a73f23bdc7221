"""Opening input files: compression by magic bytes, progress on stderr, file errors.

Every reader goes through :func:`open_input`, so ``.gz``, ``.xz`` and ``.bz2`` work the
same everywhere, whatever the file is called, and a corrupt or truncated compressed file
gives one clear error instead of a library traceback.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

MAGIC = {
    "gzip": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "bzip2": b"BZh",
    "zstd": b"\x28\xb5\x2f\xfd",
    "lz4": b"\x04\x22\x4d\x18",
}


class TraceError(ValueError):
    """An input file that cannot be read; the message names the file, the line or record,
    the field and what was expected there."""


class TraceWarning(UserWarning):
    """Something in an input that was read but skipped or guessed (said in the message)."""


def check_path(path, what: str = "file") -> Path:
    """``path`` as a Path, or a clear error if it is missing or a directory (``what``
    names the kind of file in the message, e.g. "dump file")."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such {what}")
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a directory, not a {what}")
    return p


def compression_of(head: bytes) -> str | None:
    for name, magic in MAGIC.items():
        if head.startswith(magic):
            return name
    return None


class InputFile:
    """A binary file object over a possibly compressed file, with the size and position of
    the file on disk (for progress) and uniform errors for corrupt compressed data."""

    def __init__(self, path):
        self.path = check_path(path)
        self.size = self.path.stat().st_size
        self._raw = open(self.path, "rb")
        head = self._raw.read(8)
        self._raw.seek(0)
        self.compression = compression_of(head)
        if self.compression in ("zstd", "lz4"):
            self._raw.close()
            raise TraceError(f"{self.path}: {self.compression}-compressed; vecmmu reads plain, "
                             f"gzip, xz and bzip2 files: decompress it first "
                             f"({self.compression} -d)")
        if self.compression == "gzip":
            self._f = gzip.GzipFile(fileobj=self._raw, mode="rb")
        elif self.compression == "xz":
            self._f = lzma.LZMAFile(self._raw, "rb")
        elif self.compression == "bzip2":
            self._f = bz2.BZ2File(self._raw, "rb")
        else:
            self._f = self._raw

    def read(self, n: int) -> bytes:
        try:
            return self._f.read(n)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as e:
            raise TraceError(f"{self.path}: corrupt or truncated {self.compression or ''} "
                             f"data ({e})".replace("  ", " ")) from None

    def readinto(self, buf) -> int:
        try:
            return self._f.readinto(buf)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as e:
            raise TraceError(f"{self.path}: corrupt or truncated {self.compression or ''} "
                             f"data ({e})".replace("  ", " ")) from None

    @property
    def disk_pos(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for .gz/.xz)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self):
        if self._f is not self._raw:
            self._f.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextlib.contextmanager
def atomic_output(path):
    """Write to a temporary file beside ``path`` and rename it into place only when the
    block succeeds: a failure leaves the old file (or none) and no temporary behind.
    Yields the temporary path."""
    path = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def read_head(path, n: int = 4096) -> bytes:
    """The first ``n`` bytes of a file, decompressed when it is compressed."""
    with InputFile(path) as f:
        return f.read(n)


class Progress:
    """A one-line progress report on stderr, only when stderr is a terminal (or forced).

    ``Progress(total, "reading trace.txt", unit="B")``; ``update(done)``; ``close()``.
    """

    def __init__(self, total: int | None, what: str, *, enabled: bool | None = None,
                 unit: str = "", min_interval: float = 0.2):
        if enabled is None:
            enabled = sys.stderr is not None and sys.stderr.isatty()
        self.enabled = bool(enabled)
        self.total, self.what, self.unit = total, what, unit
        self.t0 = self.last = time.perf_counter()
        self.min_interval = min_interval
        self.shown = False

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.min_interval and (self.total is None or done < self.total):
            return
        self.last = now
        if self.total:
            pct = min(100.0, 100.0 * done / self.total)
            bar = "#" * int(pct / 5)
            msg = f"\r{self.what}: [{bar:<20}] {pct:5.1f}%"
        else:
            msg = f"\r{self.what}: {done:,}{self.unit}"
        sys.stderr.write(msg + (f" {extra}" if extra else "") + "   ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
