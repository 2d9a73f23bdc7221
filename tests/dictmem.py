"""A tiny dict-backed physical memory for golden cases: callable like the reference
walkers' ``read(addr, n)``; ``tests/kernel_adapter.py`` builds a PhysMem from its
``data`` and ``backed`` ranges."""

FOUR_GIB = ((0, 1 << 32),)


class DictMemory:
    """read(addr, n) over a dict of bytes; None outside the backed ranges."""

    def __init__(self, data, backed):
        self.data, self.backed = data, backed

    def __call__(self, a, n):
        if not any(lo <= a and a + n <= hi for lo, hi in self.backed):
            return None
        return sum(self.data.get(a + i, 0) << (8 * i) for i in range(n))


def memory(entries, width=8, backed=FOUR_GIB):
    """read(addr, n) over {addr: value} entries of ``width`` bytes (a value may be a
    ``(value, width)`` pair); None outside ``backed``."""
    data = {}
    for addr, value in entries.items():
        w = width
        if isinstance(value, tuple):
            value, w = value
        for i in range(w):
            data[addr + i] = (value >> (8 * i)) & 0xFF
    return DictMemory(data, backed)
