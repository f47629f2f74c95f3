"""Neuroglancer links from the Python API: the URL decodes back to the state we meant."""

from __future__ import annotations

import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.demo import synthetic_volume
from xarray_precomputed.neuroglancer import (
    DEFAULT_HOST,
    HOST_VARIABLE,
    browser_source,
    decode_url,
    viewer_state,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, http_server):
    """An image and a segmentation written locally and served over HTTP."""
    out = tmp_path_factory.mktemp("ng")
    ds = synthetic_volume((64, 48, 16), n_cells=4)
    xp.to_precomputed(ds[["image"]], str(out / "image"), voxel_offset=(100, 200, 10))
    xp.to_precomputed(ds[["segmentation"]], str(out / "seg"), voxel_offset=(100, 200, 10),
                      encoding="compressed_segmentation")  # fmt: skip
    return {name: http_server.upload_dir(out / name, f"ng-{name}") for name in ("image", "seg")}


def test_url_state_for_volume_urls(served):
    url = xp.neuroglancer_url(served["image"], served["seg"], host="https://ng.example.org")
    assert url.startswith("https://ng.example.org/#!")
    state = decode_url(url)
    assert [la["type"] for la in state["layers"]] == ["image", "segmentation"]
    assert [la["source"] for la in state["layers"]] == [
        browser_source(served["image"]),
        browser_source(served["seg"]),
    ]
    assert state["dimensions"] == {"x": [8e-9, "m"], "y": [8e-9, "m"], "z": [40e-9, "m"]}
    # centre of the volume in voxels, offset included
    assert state["position"] == [132.0, 224.0, 18.0]
    assert state == viewer_state(served["image"], served["seg"])


def test_accessor_centres_on_the_selection(served):
    ds = xr.open_dataset(served["seg"], engine="precomputed", chunks={})
    part = ds.segmentation.isel(x=slice(10, 20), y=slice(0, 8), z=4)
    state = decode_url(part.precomputed.neuroglancer_url(served["image"]))
    assert state["position"] == [115.0, 204.0, 14.5]
    assert [la["type"] for la in state["layers"]] == ["segmentation", "image"]
    assert state["dimensions"]["z"] == [40e-9, "m"]
    # loaded into memory: no longer tied to a volume, but the Dataset's attrs still are
    with pytest.raises(xp.LinkError, match="not read from a precomputed volume"):
        part.load().precomputed.neuroglancer_url()
    whole = decode_url(ds.load().precomputed.neuroglancer_url())
    assert whole["position"] == [132.0, 224.0, 18.0]


def test_host_default_and_override(served, monkeypatch):
    monkeypatch.delenv(HOST_VARIABLE, raising=False)
    assert xp.neuroglancer_url(served["image"]).startswith(DEFAULT_HOST + "#!")
    monkeypatch.setenv(HOST_VARIABLE, "http://localhost:9000")
    assert xp.neuroglancer_url(served["image"]).startswith("http://localhost:9000/#!")
    assert xp.neuroglancer_url(served["image"], host="https://a.b/ng").startswith(
        "https://a.b/ng/#!"
    )


def test_bad_input(tmp_path):
    with pytest.raises(xp.LinkError, match="local path"):
        xp.neuroglancer_url(str(tmp_path))
    with pytest.raises(xp.LinkError, match="not read from a precomputed volume"):
        synthetic_volume((8, 8, 4), n_cells=2).precomputed.neuroglancer_url()
    with pytest.raises(xp.LinkError, match="at least one volume"):
        xp.neuroglancer_url()
    with pytest.raises(xp.LinkError, match="no '#!'"):
        decode_url("https://example.org/")
