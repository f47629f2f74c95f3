"""The ``info`` JSON: the validation checklist of docs/format.md §1.5, accepted variants, scale
selection and serialisation."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given, settings

from xarray_precomputed.chunk_grid import compressed_morton_bits
from xarray_precomputed.errors import InfoError, ScaleNotFoundError
from xarray_precomputed.metadata import DATA_TYPES, Scale, ShardingSpec, VolumeInfo
from xarray_precomputed.testing import strategies as pst

SHARDING = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 1,
    "hash": "identity",
    "minishard_bits": 2,
    "shard_bits": 3,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def base_info() -> dict:
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": "uint8",
        "num_channels": 1,
        "scales": [
            {
                "key": "8_8_40",
                "size": [64, 48, 20],
                "voxel_offset": [10, -5, 0],
                "resolution": [8, 8, 40],
                "chunk_sizes": [[32, 32, 8]],
                "encoding": "raw",
            },
            {
                "key": "16_16_40",
                "size": [32, 24, 20],
                "voxel_offset": [5, -3, 0],
                "resolution": [16, 16, 40],
                "chunk_sizes": [[16, 16, 8]],
                "encoding": "raw",
                "sharding": dict(SHARDING),
            },
        ],
    }


def _set(path, value):
    def mutate(info):
        obj = info
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value
        return info

    return mutate


def _del(path):
    def mutate(info):
        obj = info
        for p in path[:-1]:
            obj = obj[p]
        del obj[path[-1]]
        return info

    return mutate


def _multi(*mutations):
    def mutate(info):
        for m in mutations:
            info = m(info)
        return info

    return mutate


S0 = ("scales", 0)
S1 = ("scales", 1)
SH = ("scales", 1, "sharding")

# (id, mutation, text the message must contain: the offending member)
INVALID = [
    # 1. a JSON object; @type absent or the constant
    ("not-object", lambda i: [i], "JSON object"),
    ("atype-wrong", _set(("@type",), "neuroglancer_legacy_mesh"), "@type"),
    # 2. type, data_type, num_channels
    ("type-missing", _del(("type",)), "type"),
    ("type-not-string", _set(("type",), 3), "type"),
    ("data_type-missing", _del(("data_type",)), "data_type"),
    ("data_type-int64", _set(("data_type",), "int64"), "data_type"),
    ("data_type-float64", _set(("data_type",), "float64"), "data_type"),
    ("data_type-not-string", _set(("data_type",), 8), "data_type"),
    ("num_channels-missing", _del(("num_channels",)), "num_channels"),
    ("num_channels-0", _set(("num_channels",), 0), "num_channels"),
    ("num_channels-float", _set(("num_channels",), 1.5), "num_channels"),
    ("num_channels-bool", _set(("num_channels",), True), "num_channels"),
    ("num_channels-string", _set(("num_channels",), "1"), "num_channels"),
    # 3. scales and their members
    ("scales-missing", _del(("scales",)), "scales"),
    ("scales-empty", _set(("scales",), []), "scales"),
    ("scales-object", _set(("scales",), {"key": "x"}), "scales"),
    ("scale-not-object", _set(S0, "8_8_40"), "scales[0]"),
    ("key-missing", _del((*S0, "key")), "key"),
    ("key-not-string", _set((*S0, "key"), 8), "key"),
    ("key-duplicate", _set((*S1, "key"), "8_8_40"), "key"),
    ("size-missing", _del((*S0, "size")), "size"),
    ("size-2d", _set((*S0, "size"), [64, 48]), "size"),
    ("size-fraction", _set((*S0, "size"), [64, 48.5, 20]), "size"),
    ("size-zero", _set((*S0, "size"), [64, 0, 20]), "size"),
    ("size-negative", _set((*S0, "size"), [64, -1, 20]), "size"),
    ("size-string", _set((*S0, "size"), "64,48,20"), "size"),
    ("size-bool", _set((*S0, "size"), [64, True, 20]), "size"),
    ("voxel_offset-2d", _set((*S0, "voxel_offset"), [0, 0]), "voxel_offset"),
    ("voxel_offset-fraction", _set((*S0, "voxel_offset"), [0, 0.5, 0]), "voxel_offset"),
    ("resolution-missing", _del((*S0, "resolution")), "resolution"),
    ("resolution-zero", _set((*S0, "resolution"), [8, 0, 40]), "resolution"),
    ("resolution-negative", _set((*S0, "resolution"), [8, -8, 40]), "resolution"),
    ("resolution-inf", _set((*S0, "resolution"), [8, math.inf, 40]), "resolution"),
    ("resolution-nan", _set((*S0, "resolution"), [8, math.nan, 40]), "resolution"),
    ("resolution-string", _set((*S0, "resolution"), [8, "8", 40]), "resolution"),
    ("resolution-4d", _set((*S0, "resolution"), [8, 8, 40, 1]), "resolution"),
    ("chunk_sizes-missing", _del((*S0, "chunk_sizes")), "chunk_sizes"),
    ("chunk_sizes-empty", _set((*S0, "chunk_sizes"), []), "chunk_sizes"),
    ("chunk_sizes-flat", _set((*S0, "chunk_sizes"), [32, 32, 8]), "chunk_sizes"),
    ("chunk_sizes-zero", _set((*S0, "chunk_sizes"), [[32, 0, 8]]), "chunk_sizes"),
    ("chunk_sizes-2d", _set((*S0, "chunk_sizes"), [[32, 32]]), "chunk_sizes"),
    ("encoding-missing", _del((*S0, "encoding")), "encoding"),
    ("encoding-unknown", _set((*S0, "encoding"), "fpzip"), "encoding"),
    ("encoding-not-string", _set((*S0, "encoding"), 1), "encoding"),
    # 4. compressed_segmentation block size iff cseg, cseg => uint32/uint64
    (
        "cseg-no-block-size",
        _multi(_set(("data_type",), "uint32"), _set((*S0, "encoding"), "compressed_segmentation")),
        "compressed_segmentation_block_size",
    ),
    (
        "block-size-on-raw",
        _set((*S0, "compressed_segmentation_block_size"), [8, 8, 8]),
        "compressed_segmentation_block_size",
    ),
    (
        "cseg-block-size-zero",
        _multi(
            _set(("data_type",), "uint64"),
            _set((*S0, "encoding"), "compressed_segmentation"),
            _set((*S0, "compressed_segmentation_block_size"), [8, 0, 8]),
        ),
        "compressed_segmentation_block_size",
    ),
    (
        "cseg-uint8",
        _multi(
            _set((*S0, "encoding"), "compressed_segmentation"),
            _set((*S0, "compressed_segmentation_block_size"), [8, 8, 8]),
        ),
        "data_type",
    ),
    # 5. image encodings x data types x channels
    ("jpeg-uint16", _multi(_set(("data_type",), "uint16"), _set((*S0, "encoding"), "jpeg")),
     "data_type"),
    ("jpeg-2-channels", _multi(_set(("num_channels",), 2), _set((*S0, "encoding"), "jpeg")),
     "num_channels"),
    ("png-int8", _multi(_set(("data_type",), "int8"), _set((*S0, "encoding"), "png")),
     "data_type"),
    ("png-float32", _multi(_set(("data_type",), "float32"), _set((*S0, "encoding"), "png")),
     "data_type"),
    ("png-5-channels", _multi(_set(("num_channels",), 5), _set((*S0, "encoding"), "png")),
     "num_channels"),
    ("jxl-uint16", _multi(_set(("data_type",), "uint16"), _set((*S0, "encoding"), "jxl")),
     "data_type"),
    ("jxl-3-channels", _multi(_set(("num_channels",), 3), _set((*S0, "encoding"), "jxl")),
     "num_channels"),
    ("compresso-int32", _multi(_set(("data_type",), "int32"), _set((*S0, "encoding"), "compresso")),
     "data_type"),
    ("compresso-float32",
     _multi(_set(("data_type",), "float32"), _set((*S0, "encoding"), "compresso")), "data_type"),
    ("compresso-2-channels",
     _multi(_set(("num_channels",), 2), _set((*S0, "encoding"), "compresso")), "num_channels"),
    # 6. jpeg_quality / png_level only on their encodings, in range
    ("jpeg_quality-on-raw", _set((*S0, "jpeg_quality"), 75), "jpeg_quality"),
    ("jpeg_quality-101", _multi(_set((*S0, "encoding"), "jpeg"), _set((*S0, "jpeg_quality"), 101)),
     "jpeg_quality"),
    ("jpeg_quality-float", _multi(_set((*S0, "encoding"), "jpeg"),
                                  _set((*S0, "jpeg_quality"), 7.5)), "jpeg_quality"),
    ("png_level-on-raw", _set((*S0, "png_level"), 6), "png_level"),
    ("png_level-10", _multi(_set((*S0, "encoding"), "png"), _set((*S0, "png_level"), 10)),
     "png_level"),
    # 7. sharding
    ("sharding-two-chunk-sizes", _set((*S1, "chunk_sizes"), [[16, 16, 8], [8, 8, 8]]),
     "chunk size"),
    ("sharding-not-object", _set((*S1, "sharding"), "identity"), "sharding"),
    ("sharding-atype-missing", _del((*SH, "@type")), "@type"),
    ("sharding-atype-wrong", _set((*SH, "@type"), "neuroglancer_uint64_sharded_v2"), "@type"),
    ("sharding-hash-unknown", _set((*SH, "hash"), "murmurhash3_x64_128"), "hash"),
    ("sharding-hash-missing", _del((*SH, "hash")), "hash"),
    ("sharding-preshift-65", _set((*SH, "preshift_bits"), 65), "preshift_bits"),
    ("sharding-preshift-negative", _set((*SH, "preshift_bits"), -1), "preshift_bits"),
    ("sharding-preshift-missing", _del((*SH, "preshift_bits")), "preshift_bits"),
    ("sharding-minishard-33", _set((*SH, "minishard_bits"), 33), "minishard_bits"),
    ("sharding-minishard-float", _set((*SH, "minishard_bits"), 2.0), "minishard_bits"),
    ("sharding-shard-bool", _set((*SH, "shard_bits"), True), "shard_bits"),
    ("png_level-bool", _multi(_set((*S0, "encoding"), "png"), _set((*S0, "png_level"), True)),
     "png_level"),
    ("sharding-shard-too-many",
     _multi(_set((*SH, "minishard_bits"), 30), _set((*SH, "shard_bits"), 35)), "shard_bits"),
    ("sharding-data-encoding-zstd", _set((*SH, "data_encoding"), "zstd"), "data_encoding"),
    ("sharding-minishard-index-encoding-br", _set((*SH, "minishard_index_encoding"), "br"),
     "minishard_index_encoding"),
    (
        "sharding-morton-bits-over-64",
        _multi(_set((*S1, "size"), [2**22, 2**22, 2**22]), _set((*S1, "chunk_sizes"), [[1, 1, 1]])),
        "Morton",
    ),
    # 8. voxel_offset + size must not overflow int64
    ("offset-overflow", _set((*S0, "voxel_offset"), [2**63 - 10, 0, 0]), "voxel_offset"),
    ("offset-underflow", _set((*S0, "voxel_offset"), [0, -(2**63) - 1, 0]), "voxel_offset"),
]  # fmt: skip


def test_base_info_is_valid():
    info = VolumeInfo.from_json(base_info(), "mem://vol")
    assert [s.key for s in info.scales] == ["8_8_40", "16_16_40"]
    assert info.scales[1].sharding == ShardingSpec(1, "identity", 2, 3, "gzip", "gzip")


@pytest.mark.parametrize(
    "mutation, member", [(m, n) for _, m, n in INVALID], ids=[i for i, _, _ in INVALID]
)
def test_invalid_info_rejected(mutation, member):
    info = mutation(copy.deepcopy(base_info()))
    with pytest.raises(InfoError) as excinfo:
        VolumeInfo.from_json(info, "gs://bucket/some/volume")
    message = str(excinfo.value)
    assert member in message
    assert "gs://bucket/some/volume" in message
    # InfoError is also a ValueError, so generic handlers catch it.
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    "member, scale", [("size", 0), ("chunk_sizes", 0), ("sharding", 1), ("resolution", 1)]
)
def test_scale_errors_name_the_scale(member, scale):
    info = base_info()
    info["scales"][scale][member] = "bad"
    with pytest.raises(InfoError, match=rf"scales\[{scale}\].*{info['scales'][scale]['key']}"):
        VolumeInfo.from_json(info)


# -- accepted variants ---------------------------------------------------------------


def test_uppercase_data_type_and_encoding_accepted():
    info = base_info()
    info["data_type"] = "UINT8"
    info["scales"][0]["encoding"] = "RAW"
    info["scales"][1]["encoding"] = "Jpeg"
    info["scales"][1]["sharding"]["hash"] = "Identity"
    info["scales"][1]["sharding"]["data_encoding"] = "GZIP"
    parsed = VolumeInfo.from_json(info)
    assert parsed.data_type == "uint8"
    assert [s.encoding for s in parsed.scales] == ["raw", "jpeg"]
    assert parsed.scales[1].sharding.hash == "identity"
    out = parsed.to_json()
    assert out["data_type"] == "uint8" and out["scales"][1]["encoding"] == "jpeg"
    assert out["scales"][1]["sharding"]["data_encoding"] == "gzip"


def test_missing_optional_members_get_defaults():
    info = base_info()
    del info["@type"]
    del info["scales"][0]["voxel_offset"]
    del info["scales"][1]["sharding"]["minishard_index_encoding"]
    del info["scales"][1]["sharding"]["data_encoding"]
    parsed = VolumeInfo.from_json(info)
    assert parsed.scales[0].voxel_offset == (0, 0, 0)
    assert parsed.scales[1].sharding.minishard_index_encoding == "raw"
    assert parsed.scales[1].sharding.data_encoding == "raw"
    out = parsed.to_json()
    assert out["@type"] == "neuroglancer_multiscale_volume"  # always written
    assert out["scales"][0]["voxel_offset"] == [0, 0, 0]  # always written
    assert out["scales"][1]["sharding"]["data_encoding"] == "raw"


def test_integral_floats_accepted_as_ints():
    info = base_info()
    info["scales"][0]["size"] = [64.0, 48.0, 20.0]
    info["scales"][0]["voxel_offset"] = [10.0, -5.0, 0.0]
    info["scales"][0]["chunk_sizes"] = [[32.0, 32, 8]]
    info["scales"][0]["resolution"] = [8.0, 4.5, 40]
    s = VolumeInfo.from_json(info).scales[0]
    assert s.size == (64, 48, 20) and all(type(v) is int for v in s.size)
    assert s.voxel_offset == (10, -5, 0) and s.chunk_size == (32, 32, 8)
    assert s.resolution == (8, 4.5, 40)


def test_other_values_accepted():
    info = base_info()
    info["type"] = "Segmentation-ish"  # any string (rendering hint only)
    info["scales"][0]["voxel_offset"] = [-(2**40), 0, 2**40]
    info["scales"][1]["sharding"]["preshift_bits"] = 64  # TS accepts 64
    info["scales"][1]["sharding"]["minishard_bits"] = 32
    info["scales"][1]["sharding"]["shard_bits"] = 32
    # NG documents non-decreasing resolutions, but neither TS nor CV enforces it.
    info["scales"].reverse()
    parsed = VolumeInfo.from_json(info)
    # accepted as given, not clamped or reordered
    assert parsed.type == "Segmentation-ish"
    assert [s.key for s in parsed.scales] == [s["key"] for s in info["scales"]]
    sharded = parsed.scales[0]
    assert (sharded.sharding.preshift_bits, sharded.sharding.minishard_bits) == (64, 32)
    assert sharded.sharding.shard_bits == 32
    assert parsed.scales[1].voxel_offset == (-(2**40), 0, 2**40)


@pytest.mark.parametrize(
    "encoding, data_type, channels",
    [("raw", t, n) for t in DATA_TYPES for n in (1, 5)]
    + [("jpeg", "uint8", 1), ("jpeg", "uint8", 3)]
    + [("png", t, n) for t in ("uint8", "uint16") for n in (1, 2, 3, 4)]
    + [("jxl", "uint8", 1)]
    + [("compresso", t, 1) for t in ("uint8", "uint16", "uint32", "uint64")]
    + [("compressed_segmentation", t, n) for t in ("uint32", "uint64") for n in (1, 2)],
)
def test_encoding_matrix_accepted(encoding, data_type, channels):
    info = base_info()
    info["data_type"], info["num_channels"] = data_type, channels
    for s in info["scales"]:
        s["encoding"] = encoding
        if encoding == "compressed_segmentation":
            s["compressed_segmentation_block_size"] = [8, 8, 8]
    parsed = VolumeInfo.from_json(info)
    assert parsed.dtype.name == data_type and parsed.num_channels == channels


def test_quality_members_accepted_on_their_encodings():
    info = base_info()
    info["scales"][0].update(encoding="jpeg", jpeg_quality=0)
    info["scales"][1].update(encoding="png", png_level=9)
    parsed = VolumeInfo.from_json(info)
    assert parsed.scales[0].jpeg_quality == 0 and parsed.scales[1].png_level == 9
    out = parsed.to_json()
    assert out["scales"][0]["jpeg_quality"] == 0 and out["scales"][1]["png_level"] == 9


def test_sharding_null_means_unsharded():
    info = base_info()
    info["scales"][1]["sharding"] = None
    info["scales"][1]["chunk_sizes"] = [[16, 16, 8], [8, 8, 8]]  # allowed when unsharded
    s = VolumeInfo.from_json(info).scales[1]
    assert s.sharding is None and s.chunk_size == (16, 16, 8) and len(s.chunk_sizes) == 2


def test_morton_bits_exactly_64_accepted():
    info = base_info()
    info["scales"][1]["size"] = [2**21, 2**21, 2**22]
    info["scales"][1]["chunk_sizes"] = [[1, 1, 1]]
    s = VolumeInfo.from_json(info).scales[1]
    assert sum(compressed_morton_bits(s.grid_shape)) == 64


def test_extra_members_preserved():
    info = base_info()
    info["mesh"] = "mesh"
    info["skeletons"] = "skeletons_mip_0"
    info["segment_properties"] = "props"
    info["redirect"] = None
    info["custom"] = {"nested": [1, 2, {"a": "b"}]}
    info["scales"][0]["hidden"] = True
    info["scales"][0]["locked"] = False
    info["scales"][1]["fpzip_precision"] = 8
    parsed = VolumeInfo.from_json(info)
    assert parsed.extra["custom"] == {"nested": [1, 2, {"a": "b"}]}
    assert parsed.scales[0].extra == {"hidden": True, "locked": False}
    out = json.loads(json.dumps(parsed.to_json()))
    assert out == info
    # And the round trip is a fixed point.
    assert VolumeInfo.from_json(out) == parsed


@settings(max_examples=100, deadline=None)
@given(pst.volume_info_jsons())
def test_generated_infos_roundtrip(info):
    parsed = VolumeInfo.from_json(info)
    out = json.loads(json.dumps(parsed.to_json()))
    again = VolumeInfo.from_json(out)
    assert again == parsed
    assert out["num_channels"] == info["num_channels"]
    for s_in, s_out in zip(info["scales"], out["scales"]):
        for member, value in s_in.items():
            assert s_out[member] == value, member


# -- scale selection -----------------------------------------------------------------


def three_scales() -> VolumeInfo:
    info = base_info()
    third = copy.deepcopy(info["scales"][0])
    third.update(key="nested/32_32_40", resolution=[32, 32, 40], size=[16, 12, 20])
    info["scales"].append(third)
    return VolumeInfo.from_json(info, "s3://bucket/vol")


@pytest.mark.parametrize(
    "selector, index",
    [
        (0, 0),
        (1, 1),
        (2, 2),
        (-1, 2),
        (-3, 0),
        ("8_8_40", 0),
        ("16_16_40", 1),
        ("nested/32_32_40", 2),
        ("16_16_40/", 1),
        ((8, 8, 40), 0),
        ([16, 16, 40], 1),
        ((16.0, 16.0, 40.0), 1),
        ((32, 32, 40), 2),
    ],
)
def test_scale_selection(selector, index):
    assert three_scales().scale_index(selector) == index


@pytest.mark.parametrize("selector", [3, -4, "4_4_40", (8, 8, 8), (8, 8), "0", True])
def test_scale_not_found_lists_available(selector):
    with pytest.raises(ScaleNotFoundError) as excinfo:
        three_scales().scale_index(selector, "s3://bucket/vol")
    message = str(excinfo.value)
    for key in ("8_8_40", "16_16_40", "nested/32_32_40"):
        assert key in message
    assert "s3://bucket/vol" in message
    assert isinstance(excinfo.value, ValueError)


def test_scale_dataclass_helpers():
    s = Scale(
        key="k",
        size=(10, 7, 5),
        resolution=(1, 1, 1),
        chunk_sizes=((4, 4, 4), (2, 2, 2)),
        encoding="raw",
    )
    assert s.chunk_size == (4, 4, 4)
    assert s.grid_shape == (3, 2, 2)
