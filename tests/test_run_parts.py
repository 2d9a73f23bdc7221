"""``kernels._jit.run_parts``: the thread runner of the one-part batch drivers."""
import os
import select
import signal
import threading
import time

import numpy as np
import pytest

from vecmmu.kernels._jit import run_parts


def test_every_part_runs_once_and_results_do_not_depend_on_the_parts():
    seen = []

    def kernel(t, parts, out):
        seen.append(t)
        out[t::parts] = t + 1

    for parts in (1, 2, 3, 7):
        seen.clear()
        out = np.zeros(20, np.int64)
        run_parts(kernel, parts, parts, out)
        assert sorted(seen) == list(range(parts))
        assert np.array_equal(out, np.arange(20) % parts + 1)


def test_part_zero_runs_on_the_callers_thread_and_others_on_the_pool():
    where = {}

    def kernel(t):
        where[t] = threading.current_thread().name

    run_parts(kernel, 3)
    assert where[0] == threading.current_thread().name
    assert all(where[t].startswith("vecmmu-part") for t in (1, 2))


def test_an_error_in_any_part_is_raised_after_every_part_has_finished():
    done = []

    def kernel(t):
        if t == 1:
            raise ValueError("part 1 failed")
        done.append(t)

    with pytest.raises(ValueError, match="part 1 failed"):
        run_parts(kernel, 3)
    assert sorted(done) == [0, 2]

    def slow(t):                     # part 0 (this thread) fails while the others still run
        if t == 0:
            raise ValueError("part 0 failed")
        time.sleep(0.3)
        done.append(t)

    done.clear()
    with pytest.raises(ValueError, match="part 0 failed"):
        run_parts(slow, 3)
    assert sorted(done) == [1, 2]


def test_parts_started_from_a_pool_thread_run_in_turn():
    """A kernel that itself calls run_parts (the pool's threads would wait on each other)."""
    inner = []

    def kernel(t):
        run_parts(lambda u: inner.append((t, u, threading.current_thread().name)), 2)

    th = threading.Thread(target=run_parts, args=(kernel, 2), daemon=True)
    th.start()
    th.join(30)
    assert not th.is_alive(), "run_parts from a pool thread waits forever"
    by_outer = {t: name for t, u, name in inner if u == 1}
    assert by_outer[1] == next(name for t, u, name in inner if t == 1 and u == 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_pool():
    run_parts(lambda t: None, 2)                 # the parent's pool exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the child: its copy of the pool has no threads
        try:
            out = []
            run_parts(lambda t: out.append(t), 2)
            os.write(w, bytes(sorted(out)))
        finally:
            os._exit(0)
    os.close(w)
    ready = select.select([r], [], [], 30)[0]
    if not ready:
        os.kill(pid, signal.SIGKILL)
    got = os.read(r, 8) if ready else b"(the child waited forever)"
    os.waitpid(pid, 0)
    assert got == bytes([0, 1])


def test_parts_for_caps_parts_by_threads_and_by_work():
    import numba

    from vecmmu.kernels._jit import parts_for
    k = numba.get_num_threads()
    assert parts_for(0, 4096) == 1 and parts_for(1, 4096) == 1
    assert parts_for(4096, 4096) == 1 and parts_for(4097, 4096) == min(k, 2)
    assert parts_for(10**9, 4096) == k
    numba.set_num_threads(1)
    try:
        assert parts_for(10**9, 1) == 1
    finally:
        numba.set_num_threads(k)
