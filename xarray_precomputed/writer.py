"""``to_precomputed``: write xarray/Dask data as a precomputed volume.

The plan is made and checked in the calling process, the ``info`` is written
once, and then one task per shard (or per group of whole chunks when unsharded)
encodes its chunks and stores each object with a single put. No two tasks write
the same object; a shard only partly covered by the data is read, merged and
rewritten by the one task that owns it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .backend import PrecomputedArray
from .chunk_grid import chunk_group, chunk_key, chunk_shape, shard_box_voxels
from .codecs import get_codec
from .errors import InfoError, VolumeExistsError, WriteError
from .metadata import (
    DATA_TYPES,
    ENCODINGS,
    Scale,
    ShardingSpec,
    VolumeInfo,
    check_encoding_compatible,
    compressed_morton_bits,
)
from .reader import ScaleReader
from .sharding import (
    assemble_shard,
    decode_chunk_data,
    encode_chunk_data,
    morton_bit_dims,
    morton_encode,
    shard_and_minishard,
    shard_box_chunks,
    shard_key,
    stored_chunks,
)
from .storage import Store

Mode = Literal["w-", "w", "a", "r+"]
DIMS = ("x", "y", "z", "channel")
DEFAULT_SHARD_BYTES = 256 * 2**20
_WRITE_ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "compresso", "jxl")


# -- public API ------------------------------------------------------------------


def to_precomputed(
    obj: xr.Dataset | xr.DataArray | xr.DataTree,
    url: str,
    *,
    mode: Mode = "w-",
    chunk_size: Sequence[int] | None = None,
    encoding: str | None = None,
    sharding: str | Mapping[str, Any] | None = "auto",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    compressed_segmentation_block_size: Sequence[int] | None = None,
    jpeg_quality: int | None = None,
    png_level: int | None = None,
    resolution: Sequence[float] | None = None,
    voxel_offset: Sequence[int] | None = None,
    type: str | None = None,
    scale_key: str | None = None,
    region: str | Mapping[str, slice] | None = None,
    variable: Hashable | None = None,
    write_empty_chunks: bool = False,
    storage_options: dict[str, Any] | None = None,
    compute: bool = True,
) -> Any:
    """Write ``obj`` as a Neuroglancer precomputed volume at ``url``.

    ``obj`` is a DataArray or Dataset with dims ``x, y, z`` and optionally
    ``channel`` (any order), NumPy or Dask backed, or a DataTree whose children
    become the scales. Geometry comes from the ``x/y/z`` coordinates (nm at voxel
    centres, as the reader makes them) unless ``resolution``/``voxel_offset`` are
    given. Options not given are taken from the attrs the reader sets (so an
    opened volume round-trips), then from defaults: 64^3 chunks, ``raw``,
    ``sharding="auto"`` (identity-hash shards that are boxes of about
    ``shard_bytes`` uncompressed bytes).

    Modes: ``"w-"`` create, failing if a volume exists; ``"w"`` replace;
    ``"a"`` add a scale to an existing volume; ``"r+"`` write into an existing
    scale, at ``region`` (``"auto"``: from the coordinates; or a mapping of dim
    to ``slice`` of array indices of that scale).

    Returns the number of objects written (``compute=True``) or a
    ``dask.delayed`` object that writes when computed.

    >>> import numpy as np, xarray as xr, tempfile
    >>> a = xr.DataArray(np.ones((64, 64, 8), "uint8"), dims=("x", "y", "z"), name="image",
    ...                  coords={"x": np.arange(64) * 4.0 + 2, "y": np.arange(64) * 4.0 + 2,
    ...                          "z": np.arange(8) * 40.0 + 20})
    >>> url = tempfile.mkdtemp() + "/vol"
    >>> to_precomputed(a, url, chunk_size=(32, 32, 8))
    1
    >>> float(xr.open_dataset(url, engine="precomputed").image.mean())
    1.0
    """
    options = dict(
        chunk_size=chunk_size,
        encoding=encoding,
        sharding=sharding,
        shard_bytes=shard_bytes,
        compressed_segmentation_block_size=compressed_segmentation_block_size,
        jpeg_quality=jpeg_quality,
        png_level=png_level,
        resolution=resolution,
        voxel_offset=voxel_offset,
        type=type,
        variable=variable,
    )
    if mode not in ("w-", "w", "a", "r+"):
        raise WriteError(f"mode must be 'w-', 'w', 'a' or 'r+', not {mode!r}")
    store = Store(url, storage_options)
    if isinstance(obj, xr.DataTree):
        arrays = [(name, _data_array(node.to_dataset(), variable)) for name, node in
                  obj.children.items() if node.has_data]  # fmt: skip
        if not arrays:
            raise WriteError("the DataTree has no child with data to write as a scale")
        if region is not None or mode == "r+":
            raise WriteError(
                "a DataTree is written whole: use mode 'w-', 'w' or 'a' without region"
            )
        plans, info = _plan_tree(store, arrays, mode, options, scale_key)
    else:
        array = _data_array(obj, variable)
        plan, info = _plan_one(store, array, mode, options, scale_key, region)
        plans = [plan]
    if mode == "w" and any(_reads_from(p.array.data, store.url) for p in plans):
        raise WriteError(
            f"the data is read lazily from {store.url}, which mode='w' would delete before "
            "reading it; write to another URL, or use mode='r+' to update it in place"
        )
    graph = [_write_graph(store, info, p, write_empty_chunks) for p in plans]
    _write_info(store, info, mode, [p.scale_index for p in plans])
    total = dask.delayed(_sum)(graph)
    if compute:
        return total.compute()
    return total


def _sum(parts: Sequence[Any]) -> int:
    return int(sum(int(np.asarray(p).sum()) for p in parts))


# -- input normalisation ---------------------------------------------------------


def _data_array(obj: xr.Dataset | xr.DataArray, variable: Hashable | None) -> xr.DataArray:
    if isinstance(obj, xr.DataArray):
        array = obj
    elif isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if variable is not None:
            if variable not in obj.data_vars:
                raise WriteError(f"no data variable {variable!r}; the Dataset has {names}")
            name = variable
        elif len(names) == 1:
            name = names[0]
        else:
            preferred = [n for n in ("image", "segmentation", "data") if n in names]
            if len(preferred) != 1:
                raise WriteError(f"the Dataset has several data variables {names}; pass variable=")
            name = preferred[0]
        # assign_attrs copies: the caller's Dataset must not be modified
        array = obj[name].assign_attrs({**obj.attrs, **obj[name].attrs})
    else:
        raise WriteError(f"cannot write a {type(obj).__name__}; give a DataArray or Dataset")
    missing = [d for d in ("x", "y", "z") if d not in array.dims]
    extra = [d for d in array.dims if d not in DIMS]
    if missing or extra:
        raise WriteError(
            f"the array has dims {tuple(array.dims)}; it needs x, y, z and optionally channel"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {extra}: rename or select them away)" if extra else "")
        )
    if "channel" not in array.dims:
        array = array.expand_dims("channel", axis=-1)
    return array.transpose(*DIMS)


def _geometry(
    array: xr.DataArray, resolution, voxel_offset
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    attrs = array.attrs
    res: list[float] = []
    off: list[int] = []
    for d, dim in enumerate(DIMS[:3]):
        # not coords.get(): it invents a 0..n-1 coordinate for a dim that has none
        coord = array.coords[dim] if dim in array.coords else None
        values = None if coord is None else np.asarray(coord.values, dtype=np.float64)
        if resolution is not None:
            r = float(resolution[d])
        elif values is not None and len(values) >= 2:
            steps = np.diff(values)
            r = float(steps[0])
            if r <= 0 or not np.allclose(steps, r, rtol=1e-9, atol=0):
                raise WriteError(
                    f"coordinate {dim!r} is not uniformly increasing (steps {np.unique(steps)[:4]}); "
                    "precomputed volumes need a regular grid"
                )
            known = attrs.get("resolution")
            if known is not None and math.isclose(float(known[d]), r, rel_tol=1e-6):
                # coordinate differences carry rounding error: keep the exact attr value
                r = float(known[d])
        elif "resolution" in attrs:
            r = float(attrs["resolution"][d])
        else:
            raise WriteError(
                f"cannot tell the resolution along {dim!r}: "
                + ("it has a single voxel" if values is not None else "it has no coordinate")
                + "; pass resolution=(x, y, z) in nm"
            )
        if not math.isfinite(r) or r <= 0:
            raise WriteError(f"resolution along {dim!r} must be positive, got {r}")
        res.append(int(r) if float(r).is_integer() else r)
        if voxel_offset is not None:
            off.append(int(voxel_offset[d]))
        elif values is not None and len(values):
            o = values[0] / r - 0.5
            if not math.isclose(o, round(o), abs_tol=1e-6):
                raise WriteError(
                    f"coordinate {dim!r} starts at {values[0]} nm, not at a voxel centre "
                    f"((offset + 0.5) * {r}); pass voxel_offset= explicitly"
                )
            off.append(int(round(o)))
        elif "voxel_offset" in attrs:
            off.append(int(attrs["voxel_offset"][d]))
        else:
            off.append(0)
    return tuple(res), tuple(off)


def _resolution_key(resolution: Sequence[float]) -> str:
    return "_".join(str(int(r)) if float(r).is_integer() else str(r) for r in resolution)


# -- planning ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    array: xr.DataArray  # (x, y, z, channel)
    scale_index: int
    region_start: tuple[int, int, int]  # array coords of the scale
    merge: bool  # existing data may need to be kept


def _read_existing(store: Store) -> VolumeInfo | None:
    raw = store.get("info")
    if raw is None:
        return None
    try:
        return VolumeInfo.from_json(json.loads(raw), store.url)
    except (ValueError, InfoError) as e:
        raise WriteError(f"the existing info at {store.url_of('info')} is invalid: {e}") from e


def _check_dtype(array: xr.DataArray) -> str:
    dt = np.dtype(array.dtype)
    if dt.name not in DATA_TYPES:
        hint = {"float64": "float32", "int64": "int32 or uint64", "bool": "uint8"}.get(dt.name)
        raise WriteError(
            f"data type {dt.name} cannot be stored; precomputed allows {list(DATA_TYPES)}"
            + (f" (cast with .astype('{hint.split()[0]}'))" if hint else "")
        )
    return dt.name


def _make_scale(array: xr.DataArray, options: Mapping[str, Any], key: str | None) -> Scale:
    attrs = array.attrs
    resolution, offset = _geometry(array, options["resolution"], options["voxel_offset"])
    size = tuple(int(n) for n in array.shape[:3])
    same_shape = list(attrs.get("size", [])) == list(size)

    def pick(name: str, attr: str | None = None, default: Any = None) -> Any:
        if options.get(name) is not None:
            return options[name]
        return attrs.get(attr or name, default)

    encoding = str(pick("encoding", default="raw")).lower()
    if encoding not in _WRITE_ENCODINGS:
        raise WriteError(f"unknown encoding {encoding!r}; choose from {list(ENCODINGS)}")
    chunk = pick("chunk_size", default=(64, 64, 64))
    if (
        not isinstance(chunk, Sequence)
        or len(chunk) != 3
        or any(int(c) != c or c < 1 for c in chunk)
    ):
        raise WriteError(f"chunk_size must be 3 positive integers, got {chunk!r}")
    chunk = tuple(int(c) for c in chunk)
    block = None
    if encoding == "compressed_segmentation":
        block = pick("compressed_segmentation_block_size", default=(8, 8, 8))
        if len(block) != 3 or any(int(b) != b or b < 1 for b in block):
            raise WriteError(f"compressed_segmentation_block_size must be 3 positive ints: {block}")
        block = tuple(int(b) for b in block)
    jpeg_quality = pick("jpeg_quality") if encoding == "jpeg" else None
    png_level = pick("png_level") if encoding == "png" else None
    if jpeg_quality is not None and not 0 <= int(jpeg_quality) <= 100:
        raise WriteError(f"jpeg_quality must be in 0..100, got {jpeg_quality}")
    if png_level is not None and not 0 <= int(png_level) <= 9:
        raise WriteError(f"png_level must be in 0..9, got {png_level}")
    if key is None and list(attrs.get("resolution", [])) == list(resolution):
        key = attrs.get("scale_key")  # the key of the scale it was read from
    scale = Scale(
        key=key or _resolution_key(resolution),
        size=size,  # type: ignore[arg-type]
        resolution=resolution,  # type: ignore[arg-type]
        chunk_sizes=(chunk,),  # type: ignore[arg-type]
        encoding=encoding,
        voxel_offset=offset,  # type: ignore[arg-type]
        compressed_segmentation_block_size=block,  # type: ignore[arg-type]
        jpeg_quality=None if jpeg_quality is None else int(jpeg_quality),
        png_level=None if png_level is None else int(png_level),
    )
    sharding = options["sharding"]
    if sharding == "auto" and options.get("chunk_size") is None and same_shape:
        # A volume read back from storage keeps its own layout unless told otherwise.
        # The reader sets "url" and no "sharding" attr for an unsharded scale.
        if "encoding" in attrs:
            sharding = attrs.get("sharding", None if "url" in attrs else "auto")
    spec = _choose_sharding(scale, sharding, array.dtype.itemsize * array.shape[3], options)
    return replace(scale, sharding=spec)


def _choose_sharding(
    scale: Scale, sharding: Any, voxel_bytes: int, options: Mapping[str, Any]
) -> ShardingSpec | None:
    if sharding is None or sharding is False:
        return None
    if isinstance(sharding, ShardingSpec):
        spec = sharding
    elif isinstance(sharding, Mapping):
        try:
            spec = ShardingSpec.from_json(dict(sharding), "sharding")
        except InfoError as e:
            raise WriteError(str(e)) from e
    elif sharding == "auto":
        spec = auto_sharding(scale, voxel_bytes, options["shard_bytes"])
        if spec is None:
            return None
    else:
        raise WriteError(f"sharding must be 'auto', None or a sharding spec dict, not {sharding!r}")
    if shard_box_chunks(scale.grid_shape, spec) is None:
        raise WriteError(
            f"sharding {spec.to_json()} does not make each shard an axis-aligned box of chunks "
            f"for a grid of {scale.grid_shape} chunks (murmurhash, or preshift+minishard+shard "
            "bits fewer than the grid's Morton bits). Such shards scatter chunks over the whole "
            "volume, so a writer would need all of them in memory at once. Use "
            "sharding='auto' (identity hash, box-shaped shards) or sharding=None."
        )
    return spec


def auto_sharding(
    scale: Scale, voxel_bytes: int, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> ShardingSpec | None:
    """Identity-hash sharding whose shards are boxes of about ``shard_bytes``.

    Returns ``None`` (unsharded) when a shard would hold a single chunk.

    >>> s = Scale(key="k", size=(1024, 1024, 1024), resolution=(8, 8, 8),
    ...           chunk_sizes=((64, 64, 64),), encoding="raw")
    >>> spec = auto_sharding(s, 1, 32 * 2**20)
    >>> spec.preshift_bits + spec.minishard_bits, shard_box_chunks(s.grid_shape, spec)
    (7, (8, 4, 4))
    """
    chunk_bytes = math.prod(scale.chunk_size) * voxel_bytes
    total = len(morton_bit_dims(scale.grid_shape))
    bits = max(0, min(total, round(math.log2(max(shard_bytes / chunk_bytes, 1)))))
    if bits == 0:
        return None
    preshift = min(bits, 9)
    minishard = min(bits - preshift, 32)
    preshift = bits - minishard
    return ShardingSpec(
        preshift_bits=preshift,
        hash="identity",
        minishard_bits=minishard,
        shard_bits=total - bits,
        minishard_index_encoding="gzip",
        data_encoding="raw" if scale.encoding in ("jpeg", "png", "jxl") else "gzip",
    )


def _new_info(
    array: xr.DataArray, options: Mapping[str, Any], scales: Sequence[Scale]
) -> VolumeInfo:
    vtype = options["type"] or (
        array.name if array.name in ("image", "segmentation") else array.attrs.get("type")
    )
    if vtype is None:
        vtype = "segmentation" if array.dtype.name in ("uint32", "uint64") else "image"
    reserved = {
        "url", "scale_key", "scale_index", "type", "data_type", "num_channels", "resolution",
        "voxel_offset", "size", "chunk_size", "chunk_sizes", "encoding", "sharding",
        "compressed_segmentation_block_size", "jpeg_quality", "png_level", "scales", "hidden",
    }  # fmt: skip
    extra = {
        k: v for k, v in array.attrs.items() if k in ("mesh", "skeletons", "segment_properties")
    }
    extra.update(
        {
            k: v
            for k, v in array.attrs.items()
            if k not in reserved and _is_json(v) and k not in extra and k.startswith("neuroglancer")
        }  # fmt: skip
    )
    return VolumeInfo(
        type=str(vtype),
        data_type=_check_dtype(array),
        num_channels=int(array.shape[3]),
        scales=tuple(scales),
        extra=extra,
    )


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _validate_scale(info: VolumeInfo, scale: Scale, where: str) -> None:
    check_encoding_compatible(scale.encoding, info.data_type, info.num_channels, where, WriteError)
    if scale.encoding == "jpeg":
        x, y, z = scale.chunk_size
        if max(x, min(y * z, x * y)) > 65535 and max(x * y, z) > 65535:
            raise WriteError(f"{where}: chunk_size {scale.chunk_size} is too large for jpeg images")
    if scale.encoding == "compresso" and max(scale.chunk_size) > 65535:
        raise WriteError(f"{where}: compresso chunks must be at most 65535 voxels per axis")
    if scale.sharding is not None:
        bits = sum(compressed_morton_bits(scale.grid_shape))
        if bits > 64:
            raise WriteError(f"{where}: the chunk grid needs {bits} Morton bits (> 64)")
    try:
        VolumeInfo.from_json(info.to_json(), where)
    except InfoError as e:
        raise WriteError(str(e)) from e


def _plan_one(
    store: Store,
    array: xr.DataArray,
    mode: Mode,
    options: Mapping[str, Any],
    key: str | None,
    region: Any,
) -> tuple[_Plan, VolumeInfo]:
    _check_dtype(array)
    existing = _read_existing(store) if mode != "w" else None
    if mode == "w-" and (existing is not None or store.exists("info")):
        raise VolumeExistsError(
            f"a volume already exists at {store.url}; use mode='w' to replace it, 'a' to add a "
            "scale or 'r+' to write into a scale"
        )
    if mode in ("a", "r+") and existing is None:
        raise WriteError(f"mode={mode!r} needs an existing volume, but {store.url} has no info")
    if mode == "r+":
        return _plan_region(store, array, existing, options, key, region)
    if region is not None:
        raise WriteError("region= is only used with mode='r+'")
    scale = _make_scale(array, options, key)
    if mode == "a":
        _check_compatible(existing, array, store)
        if any(s.key == scale.key for s in existing.scales):
            raise WriteError(
                f"scale {scale.key!r} already exists in {store.url}; use mode='r+' to write into "
                "it or pass scale_key= for a new key"
            )
        info = existing.with_scales([*existing.scales, scale])
    else:
        info = _new_info(array, options, [scale])
    index = len(info.scales) - 1
    _validate_scale(info, scale, f"scale {scale.key!r} of {store.url}")
    return _Plan(array, index, (0, 0, 0), merge=False), info


def _check_compatible(existing: VolumeInfo, array: xr.DataArray, store: Store) -> None:
    if existing.data_type != np.dtype(array.dtype).name:
        raise WriteError(
            f"{store.url} holds {existing.data_type}, the data is {np.dtype(array.dtype).name}"
        )
    if existing.num_channels != array.shape[3]:
        raise WriteError(
            f"{store.url} has {existing.num_channels} channel(s), the data has {array.shape[3]}"
        )


def _plan_region(
    store: Store,
    array: xr.DataArray,
    existing: VolumeInfo,
    options: Mapping[str, Any],
    key: str | None,
    region: Any,
) -> tuple[_Plan, VolumeInfo]:
    _check_compatible(existing, array, store)
    if key is None:
        key = array.attrs.get("scale_key")
    if key is not None:
        index = existing.scale_index(key, store.url)
    else:
        resolution, _ = _geometry(array, options["resolution"], options["voxel_offset"])
        index = existing.scale_index(resolution, store.url)
    scale = existing.scales[index]
    if scale.sharding is not None and shard_box_chunks(scale.grid_shape, scale.sharding) is None:
        raise WriteError(
            f"scale {scale.key!r} of {store.url} uses sharding whose shards are not boxes "
            "(murmurhash or too few bits): writing part of it would need every shard rewritten"
        )
    if region is None or region == "auto":
        _, offset = _geometry(array, scale.resolution, options["voxel_offset"])
        start = tuple(o - so for o, so in zip(offset, scale.voxel_offset))
    elif isinstance(region, Mapping):
        start_l = []
        for d, dim in enumerate(DIMS[:3]):
            sl = region.get(dim, slice(None))
            if not isinstance(sl, slice) or sl.step not in (None, 1):
                raise WriteError(f"region[{dim!r}] must be a slice with step 1, got {sl!r}")
            lo, hi, _ = sl.indices(scale.size[d])
            if hi - lo != array.shape[d]:
                raise WriteError(
                    f"region[{dim!r}] = {sl} spans {hi - lo} voxels, the data has {array.shape[d]}"
                )
            start_l.append(lo)
        start = tuple(start_l)
    else:
        raise WriteError(f"region must be 'auto' or a mapping of dim to slice, not {region!r}")
    for d, dim in enumerate(DIMS[:3]):
        if start[d] < 0 or start[d] + array.shape[d] > scale.size[d]:
            lo = scale.voxel_offset[d] + start[d]
            raise WriteError(
                f"the region along {dim!r} (voxels [{lo}, {lo + array.shape[d]})) lies outside "
                f"scale {scale.key!r} of {store.url}, which spans "
                f"[{scale.voxel_offset[d]}, {scale.voxel_offset[d] + scale.size[d]})"
            )
    return _Plan(array, index, start, merge=True), existing  # type: ignore[arg-type]


def _plan_tree(
    store: Store,
    arrays: Sequence[tuple[str, xr.DataArray]],
    mode: Mode,
    options: Mapping[str, Any],
    key: str | None,
) -> tuple[list[_Plan], VolumeInfo]:
    first_plan, info = _plan_one(store, arrays[0][1], mode, options, _child_key(arrays[0]), None)
    plans = [first_plan]
    for child in arrays[1:]:
        array = child[1]
        _check_compatible(info, array, store)
        scale = _make_scale(array, options, _child_key(child))
        if any(s.key == scale.key for s in info.scales):
            raise WriteError(f"two scales would have the key {scale.key!r}")
        info = info.with_scales([*info.scales, scale])
        _validate_scale(info, scale, f"scale {scale.key!r} of {store.url}")
        plans.append(_Plan(array, len(info.scales) - 1, (0, 0, 0), merge=False))
    return plans, info


def _child_key(child: tuple[str, xr.DataArray]) -> str | None:
    name, array = child
    return array.attrs.get("scale_key") if array.attrs.get("scale_key") == name else name


def _reads_from(data: Any, url: str | None) -> bool:
    """Whether a Dask array's graph reads from the precomputed volume at ``url``
    (from any precomputed volume when ``url`` is None).

    xarray puts the lazily indexed source array in a small materialised layer named
    ``original-...``; Blockwise layers are not looked into (that would build them).
    """
    from dask.highlevelgraph import MaterializedLayer

    graph = getattr(data, "__dask_graph__", lambda: None)()
    for layer in getattr(graph, "layers", {}).values():
        if not isinstance(layer, MaterializedLayer) or len(layer) > 64:
            continue
        for value in layer.values():
            for _ in range(8):  # unwrap xarray's indexing adapters
                if isinstance(value, PrecomputedArray):
                    if url is None or value.reader.store.url == url:
                        return True
                    break
                value = getattr(value, "array", None)
    return False


def _write_info(store: Store, info: VolumeInfo, mode: Mode, written: Sequence[int]) -> None:
    if mode == "w":
        old = _read_existing_quietly(store)
        if old is not None:
            for s in old.scales:
                _remove_tree(store, s.key)
    store.put("info", json.dumps(info.to_json(), indent=1).encode())


def _read_existing_quietly(store: Store) -> VolumeInfo | None:
    try:
        return _read_existing(store)
    except WriteError:
        return None


def _remove_tree(store: Store, key: str) -> None:
    import shutil

    path = store.path(key)
    if store.is_local:
        shutil.rmtree(path, ignore_errors=True)
    elif store.fs.exists(path):
        store.fs.rm(path, recursive=True)


# -- the write graph ------------------------------------------------------------


def _write_graph(store: Store, info: VolumeInfo, plan: _Plan, write_empty: bool) -> list:
    scale = info.scales[plan.scale_index]
    data = plan.array.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=data.shape, inline_array=True)
    if scale.sharding is not None:
        unit = shard_box_voxels(scale, shard_box_chunks(scale.grid_shape, scale.sharding))
    else:
        unit = chunk_group(scale, info.dtype.itemsize * info.num_channels)
    chunks = tuple(_aligned_chunks(plan.region_start[d], data.shape[d], unit[d]) for d in range(3))
    if len(data.chunks[3]) > 1:
        data = data.rechunk({3: -1})
    blocks = data.to_delayed()
    starts = [np.cumsum((0,) + data.chunks[d]) for d in range(3)]
    writer = _BlockWriter(store, info, plan.scale_index, plan.region_start, plan.merge, write_empty)
    token = dask.base.tokenize(store.url, scale.key, data.name)
    tasks = []
    for index in np.ndindex(*(len(c) for c in chunks)):
        lo = [sum(chunks[d][: index[d]]) for d in range(3)]
        shape = [chunks[d][index[d]] for d in range(3)]
        pieces = []
        ranges = [
            range(
                int(np.searchsorted(starts[d], lo[d], side="right")) - 1,
                int(np.searchsorted(starts[d], lo[d] + shape[d], side="left")),
            )
            for d in range(3)
        ]
        for bi in ranges[0]:
            for bj in ranges[1]:
                for bk in ranges[2]:
                    origin = (starts[0][bi] - lo[0], starts[1][bj] - lo[1], starts[2][bk] - lo[2])
                    pieces.append((blocks[bi, bj, bk, 0], origin))
        tasks.append(
            dask.delayed(writer.write_pieces, pure=True)(
                tuple(lo),
                (*shape, data.shape[3]),
                pieces,
                dask_key_name=f"to-precomputed-{token}-{len(tasks)}",
            )  # fmt: skip
        )
    return tasks


def _aligned_chunks(start: int, length: int, unit: int) -> tuple[int, ...]:
    """Split ``[start, start + length)`` at multiples of ``unit`` (scale coordinates)."""
    out = []
    pos = start
    end = start + length
    while pos < end:
        nxt = min((pos // unit + 1) * unit, end)
        out.append(nxt - pos)
        pos = nxt
    return tuple(out) or (0,)


class _BlockWriter:
    """What each write task runs: small and picklable (a Store and the metadata)."""

    def __init__(self, store, info, scale_index, region_start, merge, write_empty):
        self.store = store
        self.info = info
        self.scale_index = scale_index
        self.region_start = region_start
        self.merge = merge
        self.write_empty = write_empty

    def write_pieces(self, lo, shape, pieces) -> int:
        """Write the box at ``lo`` (region coordinates) from the input blocks overlapping it."""
        origin = tuple(self.region_start[d] + int(lo[d]) for d in range(3))
        return write_block(
            self.store, self.info, self.scale_index, _Pieces(shape, pieces), origin,
            merge=self.merge, write_empty=self.write_empty,
        )  # fmt: skip


class _Pieces:
    """The part of the input a write task owns, as the input blocks that overlap it.

    Chunks are copied out of the blocks one at a time into x-fastest buffers, so a
    task never assembles its whole box (no shard-sized copy, and no dask rechunk,
    whose concatenation would produce C order and cost a transpose per chunk).
    """

    def __init__(self, shape: Sequence[int], pieces: Sequence[tuple[np.ndarray, Sequence[int]]]):
        self.shape = tuple(int(n) for n in shape)
        self.pieces = [(np.asarray(a), tuple(int(o) for o in off)) for a, off in pieces]
        first = self.pieces[0][0] if self.pieces else np.empty((0, 0, 0, 0))
        self.dtype = first.dtype

    def get(self, sel: Sequence[slice]) -> np.ndarray:
        """An x-fastest copy of ``block[sel]`` (x, y, z slices of this task's box)."""
        shape = tuple(s.stop - s.start for s in sel) + (self.shape[3],)
        if len(self.pieces) == 1 and self.pieces[0][1] == (0, 0, 0):
            return fortran_order(self.pieces[0][0][tuple(sel)])
        out = np.empty(shape, self.dtype, order="F")
        for array, off in self.pieces:
            lo = [max(sel[d].start, off[d]) for d in range(3)]
            hi = [min(sel[d].stop, off[d] + array.shape[d]) for d in range(3)]
            if any(h <= low for low, h in zip(lo, hi)):
                continue
            src = tuple(slice(lo[d] - off[d], hi[d] - off[d]) for d in range(3))
            dst = tuple(slice(lo[d] - sel[d].start, hi[d] - sel[d].start) for d in range(3))
            out[dst] = fortran_order(array[src])
        return out


def fortran_order(array: np.ndarray, tile: int = 16) -> np.ndarray:
    """An x-fastest copy of ``array`` (x, y, z, channel), made tile by tile.

    Chunks are stored x-fastest; NumPy's own C-to-Fortran copy walks one side with a
    large stride and runs ~5x slower than copying 16-voxel tiles of x and z, which
    stay in cache.

    >>> a = np.arange(24, dtype="uint8").reshape(2, 3, 4, 1)
    >>> f = fortran_order(a)
    >>> bool(f.flags.f_contiguous and (f == a).all())
    True
    """
    if array.flags.f_contiguous:
        return array
    if array.strides[0] <= min(array.strides[1:3]):
        # already x-fastest (a slice of an x-fastest block): a plain copy is 4x faster
        return np.asfortranarray(array)
    out = np.empty(array.shape, array.dtype, order="F")
    nx, _, nz, nc = array.shape
    for c in range(nc):
        for x0 in range(0, nx, tile):
            for z0 in range(0, nz, tile):
                out[x0 : x0 + tile, :, z0 : z0 + tile, c] = array[
                    x0 : x0 + tile, :, z0 : z0 + tile, c
                ]
    return out


def write_block(
    store: Store,
    info: VolumeInfo,
    scale_index: int,
    block: np.ndarray | _Pieces,
    origin: Sequence[int],
    *,
    merge: bool = True,
    write_empty: bool = False,
) -> int:
    """Write ``block`` (x, y, z, channel) at array position ``origin`` of a scale.

    The block must lie within one shard (sharded) or consist of chunks that no
    other block touches. Returns the number of objects stored or deleted.
    """
    scale = info.scales[scale_index]
    expected_dtype = info.dtype
    if not isinstance(block, _Pieces):
        block = _Pieces(block.shape, [(np.asarray(block), (0, 0, 0))])
    if block.dtype != expected_dtype or block.shape[3] != info.num_channels:
        raise WriteError(
            f"block of {block.dtype} x {block.shape[3]} channel(s) does not match "
            f"{info.data_type} x {info.num_channels} of {store.url}"
        )
    if scale.sharding is not None:
        return _write_shard(store, info, scale_index, block, origin, merge, write_empty)
    return _write_unsharded(store, info, scale_index, block, origin, merge, write_empty)


def _codec(info: VolumeInfo, scale: Scale):
    params: dict[str, Any] = {}
    if scale.encoding == "compressed_segmentation":
        params["block_size"] = scale.compressed_segmentation_block_size
    elif scale.encoding == "jpeg":
        params["quality"] = 85 if scale.jpeg_quality is None else scale.jpeg_quality
    elif scale.encoding == "png" and scale.png_level is not None:
        params["level"] = scale.png_level
    return get_codec(scale.encoding, info.dtype, info.num_channels, **params)


def _cells_of_block(scale: Scale, origin, shape) -> list[tuple[int, int, int]]:
    c = scale.chunk_size
    ranges = [range(origin[d] // c[d], -(-(origin[d] + shape[d]) // c[d])) for d in range(3)]
    return [(x, y, z) for z in ranges[2] for y in ranges[1] for x in ranges[0]]


def _overlap(scale: Scale, cell, origin, shape):
    """Slices of the chunk and of the block where they overlap, and whether the
    block covers the whole (clipped) chunk."""
    c = scale.chunk_size
    cshape = chunk_shape(scale, cell)
    in_chunk, in_block, whole = [], [], True
    for d in range(3):
        lo = max(cell[d] * c[d], origin[d])
        hi = min(cell[d] * c[d] + cshape[d], origin[d] + shape[d])
        in_chunk.append(slice(lo - cell[d] * c[d], hi - cell[d] * c[d]))
        in_block.append(slice(lo - origin[d], hi - origin[d]))
        whole &= hi - lo == cshape[d]
    return tuple(in_chunk), tuple(in_block), whole, cshape


def _write_unsharded(store, info, scale_index, block, origin, merge, write_empty) -> int:
    scale = info.scales[scale_index]
    codec = _codec(info, scale)
    reader = ScaleReader(store, info, scale_index) if merge else None
    count = 0
    for cell in _cells_of_block(scale, origin, block.shape):
        in_chunk, in_block, whole, cshape = _overlap(scale, cell, origin, block.shape)
        key = f"{scale.key}/{chunk_key(scale, cell)}"
        if whole:
            chunk = block.get(in_block)  # chunk by chunk: memory stays small
        else:
            chunk = _existing_chunk(reader, scale, cell, cshape, info)
            chunk[in_chunk] = block.get(in_block)
        if not write_empty and not chunk.any():
            if merge:
                store.delete(key)
                count += 1
            continue
        store.put(key, codec.encode(chunk))
        count += 1
    return count


def _existing_chunk(reader: ScaleReader | None, scale, cell, cshape, info) -> np.ndarray:
    if reader is None:
        return np.zeros((*cshape, info.num_channels), dtype=info.dtype, order="F")
    c = scale.chunk_size
    sel = tuple(slice(cell[d] * c[d], cell[d] * c[d] + cshape[d]) for d in range(3))
    return np.asfortranarray(reader.read((*sel, slice(None))))


def _write_shard(store, info, scale_index, block, origin, merge, write_empty) -> int:
    scale = info.scales[scale_index]
    spec = scale.sharding
    codec = _codec(info, scale)
    grid = scale.grid_shape
    box = shard_box_chunks(grid, spec)
    first = tuple(origin[d] // scale.chunk_size[d] for d in range(3))
    box_origin = tuple(first[d] // box[d] * box[d] for d in range(3))
    cells = [
        (x, y, z)
        for z in range(box_origin[2], min(box_origin[2] + box[2], grid[2]))
        for y in range(box_origin[1], min(box_origin[1] + box[1], grid[1]))
        for x in range(box_origin[0], min(box_origin[0] + box[0], grid[0]))
    ]
    ids = morton_encode(np.array(cells), grid)
    shards, _ = shard_and_minishard(ids, spec)
    shard = int(shards[0])
    key = f"{scale.key}/{shard_key(shard, spec)}"
    where = f"{store.url_of(key)} (scale {scale.key!r})"
    existing: dict[int, memoryview] = {}
    covered = [_overlap(scale, cell, origin, block.shape) for cell in cells]
    if merge and not all(cov[2] and _inside(cell, origin, block.shape, scale) for cell, cov in
                         zip(cells, covered)):  # fmt: skip
        existing = _existing_shard_blobs(store, key, spec, where)
    entries = []
    for cell, cid, (in_chunk, in_block, whole, cshape) in zip(cells, ids, covered):
        cid = int(cid)
        inside = any(s.stop > s.start for s in in_block) and all(s.stop > s.start for s in in_block)
        if not inside:
            if cid in existing:
                entries.append((cid, lambda b=existing[cid]: b))
            continue
        entries.append(
            (
                cid,
                _chunk_producer(
                    block,
                    cell,
                    cid,
                    in_chunk,
                    in_block,
                    whole,
                    cshape,
                    existing,
                    codec,
                    spec,
                    info,
                    write_empty,
                    where,
                ),
            )  # fmt: skip
        )
    data = assemble_shard(entries, spec)
    existing.clear()
    if data is None:
        if merge:
            store.delete(key)
            return 1
        return 0
    store.put(key, data)
    return 1


def _inside(cell, origin, shape, scale) -> bool:
    c = scale.chunk_size
    return all(
        origin[d] <= cell[d] * c[d] < origin[d] + shape[d] or shape[d] == 0 for d in range(3)
    )


def _chunk_producer(block, cell, cid, in_chunk, in_block, whole, cshape, existing, codec, spec,
                    info, write_empty, where):  # fmt: skip
    def produce():
        if whole:
            chunk = block.get(in_block)  # chunk by chunk: memory stays small
        else:
            chunk = np.zeros((*cshape, info.num_channels), dtype=info.dtype, order="F")
            if cid in existing:
                raw = _undo_data_encoding(existing[cid], spec, codec, cshape, where)
                chunk[...] = codec.decode(raw, cshape, f"{where} chunk {cid}")
            chunk[in_chunk] = block.get(in_block)
        if not write_empty and not chunk.any():
            return None
        return encode_chunk_data(codec.encode(chunk), spec)

    return produce


def _undo_data_encoding(blob, spec, codec, cshape, where) -> bytes:
    return decode_chunk_data(bytes(blob), spec, codec.expand_bound(cshape), where)


def _existing_shard_blobs(store: Store, key: str, spec: ShardingSpec, where: str) -> dict:
    """The stored (still data-encoded) bytes of every chunk in an existing shard."""
    data = store.get(key)
    return {} if data is None else dict(stored_chunks(data, spec, where))


__all__ = ["auto_sharding", "to_precomputed", "write_block"]
