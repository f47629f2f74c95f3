"""``xp.to_precomputed``: the peak memory of one write task, measured with tracemalloc."""

from __future__ import annotations

import math
import os
import tracemalloc

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp

from .helpers import make_array, sharding_dict
from .writer_helpers import write_info_only

# -- memory of a write task ----------------------------------------------------------------

SHARD_SHAPE = (256, 256, 128)  # uint8: 8 MiB = 32 chunks of 64^3
SHARD_BYTES = math.prod(SHARD_SHAPE)


@pytest.mark.parametrize("encodings", [("raw", "raw"), ("gzip", "gzip")], ids="-".join)
def test_write_task_peak_memory_within_3x_shard(tmp_path, encodings):
    from xarray_precomputed.write_tasks import write_block

    spec = sharding_dict(
        5, 0, 3, mi_enc=encodings[0], data_enc=encodings[1]
    )  # boxes of 4x4x2 chunks = one 8 MiB block
    url = str(tmp_path / "v")
    size = (512, 512, 256)
    write_info_only(
        xp.to_precomputed(
            make_array(da.zeros((*size, 1), dtype="uint8", chunks=(*SHARD_SHAPE, 1))),
            url,
            chunk_size=(64, 64, 64),
            sharding=spec,
            compute=False,
        )
    )
    store, info = xp.open_info(url)
    rng = np.random.default_rng(14)
    block = np.asfortranarray(rng.integers(0, 256, (*SHARD_SHAPE, 1), dtype=np.uint8))
    patch = np.asfortranarray(rng.integers(0, 256, (100, 200, 128, 1), dtype=np.uint8))
    # a shard that already exists elsewhere: merging reads it back in
    ratios = {}
    for what, arr, origin, merge in [
        ("whole shard", block, (0, 0, 0), False),
        ("region merge", patch, (30, 17, 0), True),
    ]:
        tracemalloc.start()
        try:
            write_block(store, info, 0, arr, origin, merge=merge)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        ratios[what] = peak / SHARD_BYTES
    print(f"\npeak/shard {encodings}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    assert all(r <= 3 for r in ratios.values()), ratios
    expected = block.copy()
    expected[30:130, 17:217] = patch
    assert os.listdir(os.path.join(url, info.scales[0].key)) == ["0.shard"]
    ds = xr.open_dataset(url, engine="precomputed")
    np.testing.assert_array_equal(ds.image[:256, :256, :128].values, expected)
