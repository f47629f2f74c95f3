"""Local range reads: the thread's reused buffer gives the same bytes as fresh reads."""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xarray_precomputed.storage import Store

SIZES = {"a": 0, "b": 1, "c": 5000, "d/e": 70000}


def _store(tmp_path) -> Store:
    rng = np.random.default_rng(0)
    for key, n in SIZES.items():
        p = tmp_path / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    return Store(str(tmp_path))


requests = st.lists(
    st.tuples(
        st.sampled_from([*SIZES, "missing", "d/missing"]),
        st.integers(0, 80000),
        st.integers(0, 80000),
    ).map(lambda r: (r[0], min(r[1], r[2]), max(r[1], r[2]))),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(reqs=requests)
def test_reused_buffer_reads_equal_fresh_reads(tmp_path_factory, reqs):
    store = _store(tmp_path_factory.mktemp("ranges"))
    fresh = store.get_ranges(reqs)
    reused = store.get_ranges(reqs, reuse_buffer=True)
    assert [None if b is None else bytes(b) for b in reused] == fresh
    # a range past the end reads short, a missing object reads as None
    for (key, s, e), got in zip(reqs, fresh):
        if key not in SIZES:
            assert got is None
        else:
            assert len(got) == max(0, min(e, SIZES[key]) - s)


def test_exabyte_range_of_a_corrupt_index_is_not_allocated(tmp_path):
    store = _store(tmp_path)
    (got,) = store.get_ranges([("c", 10, 1 << 62)], reuse_buffer=True)
    assert len(got) == SIZES["c"] - 10


def test_each_thread_reads_into_its_own_buffer(tmp_path):
    store = _store(tmp_path)
    expected = (tmp_path / "d/e").read_bytes()
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def work(offset: int) -> None:
        barrier.wait()
        for i in range(200):
            s = (offset * 997 + i * 131) % 60000
            (view,) = store.get_ranges([("d/e", s, s + 4096)], reuse_buffer=True)
            if bytes(view) != expected[s : s + 4096]:
                errors.append(f"thread {offset} read {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
