"""Synthetic traces with a seed: uniform, Zipf, strided, and per-region mixes.

Every generator returns one access batch (:data:`vecmmu.ACCESS_DTYPE`) and takes
``seed`` (an int or a numpy Generator), ``kinds`` (probabilities of read, write, fetch;
default all reads), ``user`` (privilege of every access) and ``size``. :func:`generate`
streams any of them in chunks for traces larger than memory, and :func:`region_mix`
combines regions that each have their own pattern, weight, kinds and privilege::

    from vecmmu.io import synth
    t = synth.zipf(1_000_000, start=0x7f0000000000, pages=1 << 16, alpha=1.1, seed=1)
    t = synth.region_mix(1_000_000, [
        dict(start=0x400000, size=1 << 20, weight=3, kinds=(0, 0, 1)),          # code
        dict(start=0x1000000, size=64 << 20, pattern="zipf", kinds=(.7, .3, 0)), # heap
        dict(start=0x7ffff0000000, size=1 << 20, pattern="strided", stride=-64), # stack
    ], seed=2)
"""
from __future__ import annotations

import numpy as np

from ..access import ACCESS_DTYPE

PATTERNS = ("uniform", "zipf", "strided")


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _kinds(rng, n, kinds):
    p = np.asarray(kinds, dtype=float)
    if p.shape != (3,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"kinds must be three non-negative weights (read, write, fetch), got {kinds}")
    p = p / p.sum()
    if p.max() == 1.0:
        return np.full(n, int(p.argmax()), dtype=np.uint8)
    return rng.choice(3, size=n, p=p).astype(np.uint8)


def _batch(addr, kind, user, size, asid=0):
    out = np.zeros(addr.shape[0], dtype=ACCESS_DTYPE)
    out["addr"], out["kind"], out["user"], out["size"], out["asid"] = addr, kind, user, size, asid
    return out


def _check(n, start, size):
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size <= 0 or start < 0 or start + size > 2**64:
        raise ValueError(f"region [{start:#x}, {start + size:#x}) is empty or outside 64 bits")


def uniform(n: int, start: int, size: int, *, kinds=(1, 0, 0), user: bool = True,
            access_size: int = 1, align: int = 1, seed=0, asid: int = 0) -> np.ndarray:
    """``n`` addresses uniform in ``[start, start + size)``, aligned down to ``align``."""
    _check(n, start, size)
    rng = _rng(seed)
    off = rng.integers(0, size, size=n, dtype=np.uint64)
    if align > 1:
        off -= off % np.uint64(align)
    return _batch(np.uint64(start) + off, _kinds(rng, n, kinds), int(user), access_size, asid)


def zipf(n: int, start: int, pages: int, *, alpha: float = 1.0, page_size: int = 4096,
         scatter: bool = True, kinds=(1, 0, 0), user: bool = True, access_size: int = 1,
         seed=0, asid: int = 0) -> np.ndarray:
    """Page popularity following Zipf's law over ``pages`` pages from ``start``: the page
    of rank k is chosen with probability proportional to ``1 / k**alpha`` (a bounded Zipf,
    so any ``alpha >= 0`` works); offsets within a page are uniform. With ``scatter`` the
    ranks are spread over the region by a random permutation (hot pages are not adjacent)."""
    _check(n, start, pages * page_size)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    rng = _rng(seed)
    w = 1.0 / np.arange(1, pages + 1, dtype=float) ** alpha
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    rank = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), pages - 1)
    page = rng.permutation(pages)[rank] if scatter else rank
    off = rng.integers(0, page_size, size=n, dtype=np.uint64)
    addr = np.uint64(start) + page.astype(np.uint64) * np.uint64(page_size) + off
    return _batch(addr, _kinds(rng, n, kinds), int(user), access_size, asid)


def strided(n: int, start: int, stride: int, *, size: int | None = None, first: int = 0,
            kinds=(1, 0, 0), user: bool = True, access_size: int = 1, seed=0,
            asid: int = 0) -> np.ndarray:
    """``start, start + stride, ...`` (negative strides walk down, like a stack), wrapping
    around inside ``[start, start + size)`` when ``size`` is given (``[start - size + 1,
    start]`` going down); ``first`` is the index of the first access (to continue a
    sequence). ``seed`` only drives the kinds."""
    if stride == 0:
        raise ValueError("stride must be non-zero")
    rng = _rng(seed)
    steps = (np.int64(first) + np.arange(n, dtype=np.int64)) * np.int64(stride)
    if size is not None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        steps = np.mod(steps, size) if stride > 0 else -np.mod(-steps, size)
    addr = (np.int64(0) + steps).astype(np.uint64) + np.uint64(start)
    return _batch(addr, _kinds(rng, n, kinds), int(user), access_size, asid)


def region_mix(n: int, regions, *, seed=0, shuffle: bool = True) -> np.ndarray:
    """A mix of regions, each a dict with ``start``, ``size`` and optionally ``weight``
    (default 1), ``pattern`` (uniform / zipf / strided), ``kinds``, ``user``,
    ``access_size``, ``asid`` and the pattern's own keywords (``alpha``, ``stride``,
    ``align``). Each region gets ``n * weight / sum(weights)`` accesses; with ``shuffle``
    they are interleaved at random, else concatenated region by region."""
    rng = _rng(seed)
    if not regions:
        raise ValueError("region_mix needs at least one region")
    w = np.array([float(r.get("weight", 1)) for r in regions])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("region weights must be non-negative and not all zero")
    counts = np.floor(w / w.sum() * n).astype(np.int64)
    counts[int(np.argmax(w))] += n - counts.sum()
    parts = []
    for r, m in zip(regions, counts):
        r = dict(r)
        unknown = set(r) - {"start", "size", "weight", "pattern", "kinds", "user", "access_size",
                            "asid", "alpha", "stride", "align", "page_size", "scatter", "name"}
        if unknown:
            raise ValueError(f"region {r.get('name', hex(r.get('start', 0)))}: unknown keys {sorted(unknown)}")
        pattern = r.pop("pattern", "uniform")
        r.pop("weight", None)
        r.pop("name", None)
        start, size = int(r.pop("start")), int(r.pop("size"))
        if pattern == "uniform":
            parts.append(uniform(int(m), start, size, seed=rng, **r))
        elif pattern == "zipf":
            ps = int(r.get("page_size", 4096))
            parts.append(zipf(int(m), start, max(size // ps, 1), seed=rng, **r))
        elif pattern == "strided":
            stride = r.pop("stride", 64)
            parts.append(strided(int(m), start if stride > 0 else start + size - 1, stride,
                                 size=size, seed=rng, **r))
        else:
            raise ValueError(f"unknown pattern {pattern!r}; use one of {', '.join(PATTERNS)}")
    out = np.concatenate(parts)
    return out[rng.permutation(out.shape[0])] if shuffle else out


def generate(pattern: str, n: int, *, chunk: int = 1 << 22, seed=0, **kw):
    """Stream ``n`` accesses of ``pattern`` (``uniform``, ``zipf``, ``strided``, or ``mix``
    with ``regions=``) in batches of at most ``chunk``; strided sequences continue across
    batches. The same seed and chunk give the same trace."""
    rng = _rng(seed)
    fn = {"uniform": uniform, "zipf": zipf, "strided": strided, "mix": region_mix}.get(pattern)
    if fn is None:
        raise ValueError(f"unknown pattern {pattern!r}; use uniform, zipf, strided or mix")
    done = 0
    while done < n:
        m = min(chunk, n - done)
        extra = {"first": done} if pattern == "strided" else {}
        yield fn(m, seed=rng, **kw, **extra)
        done += m
