"""``precomputed info URL``: a volume's metadata at a glance (``--json`` for scripts)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..backend import open_info
from ..chunk_grid import shard_box_chunks, shard_box_voxels
from ..metadata import Scale, VolumeInfo
from ..storage import Store
from .options import json_object


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "info", parents=parents, help="show a volume's type, dtype and scales",
        description="Show a volume's type, data type, channels and, per scale, its key, size, "
        "resolution, voxel offset, chunk size, encoding, sharding and stored bytes.",
    )  # fmt: skip
    p.add_argument("url", help="volume URL or path (gs://, s3://, http(s)://, local)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--storage-options", type=json_object, default=None, metavar="JSON",
                   help='fsspec options, e.g. \'{"anon": true}\' (or @file.json)')  # fmt: skip
    p.add_argument("--stored-bytes", action="store_true",
                   help="also sum stored bytes of remote volumes (lists every object; "
                   "local volumes always show them)")  # fmt: skip
    p.set_defaults(run=run)


def describe(store: Store, info: VolumeInfo, stored_bytes: bool = False) -> dict[str, Any]:
    """The facts ``info`` prints, as a JSON-ready dict."""
    scales = []
    for scale in info.scales:
        entry: dict[str, Any] = {
            "key": scale.key,
            "size": list(scale.size),
            "resolution": list(scale.resolution),
            "voxel_offset": list(scale.voxel_offset),
            "chunk_size": list(scale.chunk_size),
            "encoding": scale.encoding,
            "chunks": math.prod(scale.grid_shape),
            "sharding": _sharding(scale),
            "stored_bytes": store.tree_size(scale.key) if store.is_local or stored_bytes else None,
        }
        if scale.compressed_segmentation_block_size is not None:
            entry["compressed_segmentation_block_size"] = list(
                scale.compressed_segmentation_block_size
            )
        scales.append(entry)
    return {
        "url": store.url,
        "type": info.type,
        "data_type": info.data_type,
        "num_channels": info.num_channels,
        "scales": scales,
    }


def _sharding(scale: Scale) -> dict[str, Any] | None:
    if scale.sharding is None:
        return None
    out = scale.sharding.to_json()
    box = shard_box_chunks(scale.grid_shape, scale.sharding)
    if box is None:  # murmurhash: chunks scattered over at most 2**shard_bits shards
        out["shard_box_chunks"] = None
        out["shards"] = min(2**scale.sharding.shard_bits, math.prod(scale.grid_shape))
        out["shards_note"] = "at most"
    else:
        out["shard_box_chunks"] = list(box)
        out["shard_box_voxels"] = list(shard_box_voxels(scale, box))
        out["shards"] = math.prod(-(-g // b) for g, b in zip(scale.grid_shape, box))
    return out


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _x(values: list) -> str:
    return "x".join(_num(v) for v in values)


def format_table(facts: dict[str, Any]) -> str:
    """The human-readable form of :func:`describe`'s facts."""
    lines = [
        facts["url"],
        f"  type {facts['type']}, {facts['data_type']}, {facts['num_channels']} channel(s), "
        f"{len(facts['scales'])} scale(s)",
    ]
    header = ("key", "size", "resolution nm", "offset", "chunk", "encoding", "sharding", "stored")
    rows = [header]
    for s in facts["scales"]:
        sh = s["sharding"]
        if sh is None:
            shard = f"none ({s['chunks']} chunks)"
        elif sh["shard_box_chunks"] is None:
            shard = f"{sh['hash']}, <= {sh['shards']} shards"
        else:
            shard = f"{_x(sh['shard_box_voxels'])} box, {sh['shards']} shards"
        encoding = s["encoding"]
        if "compressed_segmentation_block_size" in s:
            encoding += f" {_x(s['compressed_segmentation_block_size'])}"
        rows.append((s["key"], _x(s["size"]), _x(s["resolution"]), _x(s["voxel_offset"]),
                     _x(s["chunk_size"]), encoding, shard, _bytes(s["stored_bytes"])))  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    store, info = open_info(args.url, args.storage_options)
    facts = describe(store, info, args.stored_bytes)
    print(json.dumps(facts, indent=1) if args.json else format_table(facts))
    return 0
