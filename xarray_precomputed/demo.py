"""The built-in example: ``precomputed demo`` (or ``python -m xarray_precomputed demo``).

Synthesises an EM-like image and its segmentation (no network needed), writes
both as sharded multiscale precomputed volumes, reopens them lazily and computes
per-label voxel counts and mean intensities with Dask.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .conventions import DIMS, SPATIAL_DIMS, resolution_key, voxel_centres

RESOLUTION = (8, 8, 40)


def synthetic_volume(
    shape: tuple[int, int, int] = (384, 384, 64), n_cells: int = 60, seed: int = 0
) -> xr.Dataset:
    """An EM-like image and its segmentation as a Dataset with the reader's layout.

    Cells are Voronoi regions around random seeds (anisotropic, like serial-section
    EM); the image is bright cytoplasm with dark membranes and noise.

    >>> ds = synthetic_volume((32, 32, 8), n_cells=5)
    >>> ds.image.dtype.name, ds.segmentation.dtype.name, ds.image.dims
    ('uint8', 'uint64', ('x', 'y', 'z', 'channel'))
    """
    rng = np.random.default_rng(seed)
    phys = np.array(RESOLUTION, dtype=np.float64)
    seeds = rng.uniform(0, 1, (n_cells, 3)) * np.array(shape) * phys
    labels = np.empty(shape, dtype=np.uint64, order="F")
    second = np.empty(shape, dtype=np.float32, order="F")
    ys, xs = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]))
    dxy = ((xs[..., None] * phys[0] - seeds[:, 0]) ** 2).astype(np.float32)
    dxy += ((ys[..., None] * phys[1] - seeds[:, 1]) ** 2).astype(np.float32)
    for z in range(shape[2]):
        d2 = dxy + ((z * phys[2] - seeds[:, 2]) ** 2).astype(np.float32)
        labels[:, :, z] = d2.argmin(-1) + 1 + 2**33  # large uint64 ids, as in real data
        nearest = np.partition(d2, 1, axis=-1)
        second[:, :, z] = np.sqrt(nearest[..., 1]) - np.sqrt(nearest[..., 0])
    membrane = np.exp(-((second / 24.0) ** 2))
    image = 170 - 120 * membrane + rng.normal(0, 12, shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    coords = {
        dim: (voxel_centres(0, n, r), {"units": "nm"})
        for dim, n, r in zip(SPATIAL_DIMS, shape, RESOLUTION)
    }
    coords["channel"] = [0]
    return xr.Dataset(
        {
            "image": (DIMS, np.asfortranarray(image[..., None])),
            "segmentation": (DIMS, np.asfortranarray(labels[..., None])),
        },
        coords={k: (k, *v) if isinstance(v, tuple) else v for k, v in coords.items()},
    )


def pyramid(ds: xr.Dataset, levels: int) -> xr.DataTree:
    """A DataTree of ``levels`` scales, each downsampled (2, 2, 1) from the previous."""
    from .pyramid import downsample

    scales = {}
    current = ds
    for _ in range(levels):
        key = resolution_key([float(current[d][1] - current[d][0]) for d in SPATIAL_DIMS])
        scales[key] = current
        current = downsample(current, (2, 2, 1))
    return xr.DataTree.from_dict(scales)


def run(out: Path, shape: tuple[int, int, int] = (384, 384, 64)) -> dict:
    """Write, reopen and analyse the synthetic volumes under ``out``; returns the figures."""
    from .writer import to_precomputed

    started = time.perf_counter()
    ds = synthetic_volume(shape)
    image_url, seg_url = str(out / "image"), str(out / "segmentation")
    shard = 4 * 2**20  # small shards so the demo shows several per scale
    to_precomputed(
        pyramid(ds[["image"]].chunk({"x": 128, "y": 128, "z": 32}), 3),
        image_url, mode="w", chunk_size=(64, 64, 16), encoding="jpeg", shard_bytes=shard,
    )  # fmt: skip
    to_precomputed(
        pyramid(ds[["segmentation"]].chunk({"x": 128, "y": 128, "z": 32}), 3),
        seg_url, mode="w", chunk_size=(64, 64, 16), encoding="compressed_segmentation",
        shard_bytes=shard,
    )  # fmt: skip
    written = time.perf_counter()

    image = xr.open_dataset(image_url, engine="precomputed", chunks={}).image
    seg = xr.open_dataset(seg_url, engine="precomputed", chunks={}).segmentation
    tree = xr.open_datatree(image_url, engine="precomputed", chunks={})
    ids, inverse = da.unique(seg.data.ravel(), return_inverse=True)
    with dask.config.set(scheduler="threads"):
        ids = ids.compute()
        inv = inverse.compute()
        counts = np.bincount(inv, minlength=len(ids))
        sums = np.bincount(inv, weights=image.data.ravel().compute(), minlength=len(ids))
        hist = da.bincount(image.data.ravel(), minlength=256).compute()
    top = np.argsort(counts)[::-1][:5]
    return {
        "image_url": image_url,
        "segmentation_url": seg_url,
        "scales": [(k, tuple(int(n) for n in tree[k].image.shape[:3])) for k in tree.children],
        "shards": len(list((out / "image" / "8_8_40").glob("*.shard"))),
        "labels": len(ids),
        "top": [(int(ids[i]), int(counts[i]), float(sums[i] / counts[i])) for i in top],
        "dark_fraction": float(hist[:100].sum() / hist.sum()),
        "write_s": written - started,
        "total_s": time.perf_counter() - started,
    }
