"""compressed_segmentation decoding: our numba kernel against the ``compressed-segmentation``
package, on one and two threads, and what the first decode in a process costs.

    python benchmarks/bench_cseg.py            # ~1 min; run under flock /tmp/bench.lock

Data: 32 chunks of 64^3 uint64 segmentation-like labels (``common.blocky_labels``), 8^3
blocks. Each figure is the best of ``--repeat`` passes over all chunks, in MB/s of decoded
labels. "2 threads" decodes the same chunks on two threads at once (aggregate MB/s): the
package holds the GIL, so it cannot gain; the kernel can, when two cores are free.
First-decode costs run in fresh subprocesses: with numba's on-disk cache emptied
("compile") and with it filled ("cached").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

FIRST = """
import sys, time
import numpy as np
from xarray_precomputed.codecs import get_codec
codec = get_codec("compressed_segmentation", np.dtype("uint64"), 1)
data = codec.encode(np.arange(512, dtype=np.uint64).reshape(8, 8, 8, 1))
t1 = time.perf_counter()
import numba
t2 = time.perf_counter()
if sys.argv[1] == "compile":  # no cache directory: compile
    import numba.core.caching as caching
    (getattr(caching, "CacheImpl", None) or caching._CacheImpl)._locator_classes = []
codec.decode(data, (8, 8, 8), "x")
t3 = time.perf_counter()
print(f"{t2 - t1:.3f} {t3 - t2:.3f}")
"""


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def on_two_threads(fn):
    def run():
        pool = [threading.Thread(target=fn) for _ in range(2)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import compressed_segmentation as cs
    from common import blocky_labels

    from xarray_precomputed.codecs import get_codec

    volume = blocky_labels((256, 256, 128), 2)
    chunks = [
        np.asfortranarray(volume[x : x + 64, y : y + 64, z : z + 64])
        for x in range(0, 256, 64)
        for y in range(0, 256, 64)
        for z in range(0, 128, 64)
    ]
    codec = get_codec("compressed_segmentation", np.dtype("uint64"), 1)
    encoded = [codec.encode(c) for c in chunks]
    nbytes = sum(c.nbytes for c in chunks)
    shape = (64, 64, 64)
    codec.decode(encoded[0], shape, "warm-up")

    def package():
        for e in encoded:
            cs.decompress(e, shape, np.uint64, order="F")

    def ours_new_array():
        for e in encoded:
            codec.decode(e, shape, "chunk")

    outputs = {}

    def ours_into(order):
        def run():
            out = outputs.setdefault(
                (order, threading.get_ident()), np.empty((*shape, 1), np.uint64, order=order)
            )
            for e in encoded:
                codec.decode_into(e, shape, "chunk", out)

        return run

    for e, c in zip(encoded, chunks):
        assert (codec.decode(e, shape, "chunk") == c).all()
    cases = [
        ("package decompress (new F array)", package),
        ("ours decode (new F array)", ours_new_array),
        ("ours decode_into F array", ours_into("F")),
        ("ours decode_into C array", ours_into("C")),
    ]
    print(f"{len(chunks)} chunks of 64^3 uint64, {nbytes / 2**20:.0f} MiB, best of {args.repeat}")
    print(f"{'':36} {'1 thread':>10} {'2 threads':>10}")
    for name, fn in cases:
        one = nbytes / best(fn, args.repeat) / 1e6
        two = 2 * nbytes / best(on_two_threads(fn), args.repeat) / 1e6
        print(f"{name:36} {one:7.0f} MB/s {two:7.0f} MB/s")

    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    for mode in ("compile", "cached", "cached"):
        out = subprocess.run(
            [sys.executable, "-c", FIRST, mode], capture_output=True, text=True, env=env, check=True
        ).stdout.split()
        print(f"first decode, {mode:8}: import numba {out[0]} s, first call {out[1]} s")


if __name__ == "__main__":
    main()
