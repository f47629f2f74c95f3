"""The ``precomputed`` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xarray_precomputed as xp
from xarray_precomputed.demo import synthetic_volume
from xarray_precomputed.neuroglancer import decode_url

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "xarray_precomputed", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> dict[str, str]:
    """A raw image (several shards) and a compressed_segmentation volume, one scale each."""
    out = tmp_path_factory.mktemp("cli")
    ds = synthetic_volume((96, 80, 24), n_cells=8).chunk({"x": 48, "y": 40, "z": 12})
    image, seg = str(out / "image"), str(out / "seg")
    xp.to_precomputed(ds[["image"]], image, chunk_size=(16, 16, 8), shard_bytes=16 * 2**10)
    xp.to_precomputed(ds[["segmentation"]], seg, chunk_size=(32, 32, 8),
                      encoding="compressed_segmentation")  # fmt: skip
    return {"image": image, "seg": seg, "dir": str(out)}


def _read(url: str, scale: int | str = 0, **kw) -> np.ndarray:
    return xr.open_dataset(url, engine="precomputed", scale=scale, **kw).to_dataarray().values[0]


def test_info_table_and_json(volumes):
    table = cli("info", volumes["image"]).stdout
    assert "type image, uint8, 1 channel(s), 1 scale(s)" in table
    assert "96x80x24" in table and "16x16x8" in table and "raw" in table

    facts = json.loads(cli("info", volumes["image"], "--json").stdout)
    on_disk = json.loads(Path(volumes["image"], "info").read_text())
    scale = facts["scales"][0]
    assert scale["size"] == on_disk["scales"][0]["size"] == [96, 80, 24]
    assert scale["chunk_size"] == [16, 16, 8]
    shard_files = list(Path(volumes["image"], scale["key"]).glob("*.shard"))
    assert scale["sharding"]["shards"] == len(shard_files) > 1
    assert scale["stored_bytes"] == sum(f.stat().st_size for f in shard_files)
    box = scale["sharding"]["shard_box_voxels"]
    assert all(b % c == 0 for b, c in zip(box, scale["chunk_size"]))

    seg = json.loads(cli("info", volumes["seg"], "--json").stdout)
    assert seg["type"] == "segmentation" and seg["data_type"] == "uint64"
    assert seg["scales"][0]["compressed_segmentation_block_size"] == [8, 8, 8]


def test_errors_are_one_line_with_exit_codes(tmp_path):
    missing = cli("info", str(tmp_path / "nothing"), check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0, missing.stderr
    assert missing.stderr.startswith("precomputed info: error: InfoNotFoundError: no 'info' file")

    debug = cli("info", str(tmp_path / "nothing"), "--debug", check=False)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr

    usage = cli("copy", "a", "b", "--chunk-size", "1,2", check=False)
    assert usage.returncode == 2 and "--chunk-size" in usage.stderr

    none = cli(check=False)
    assert none.returncode == 2


def test_copy_reencodes_reshards_and_shows_progress(volumes, tmp_path):
    dst = str(tmp_path / "copy")
    done = cli("copy", volumes["image"], dst, "--encoding", "png", "--chunk-size", "32,32,8",
               "--sharding", "auto", "--shard-bytes", "32KiB")  # fmt: skip
    assert "copied 1 scale(s)" in done.stdout
    # tqdm's bar on stderr, counting the shards written
    shards = len(list(Path(dst).glob("*/*.shard")))
    assert f"{shards}/{shards}" in done.stderr and "shard/s" in done.stderr
    info = json.loads(Path(dst, "info").read_text())["scales"][0]
    assert info["encoding"] == "png" and info["chunk_sizes"] == [[32, 32, 8]]
    np.testing.assert_array_equal(_read(dst), _read(volumes["image"]))

    # into an existing volume: refused unless told; --quiet prints nothing
    again = cli("copy", volumes["image"], dst, check=False)
    assert again.returncode == 1 and "VolumeExistsError" in again.stderr
    assert "--mode w replaces" in again.stderr  # the flags, not the library's arguments
    quiet = cli("copy", volumes["image"], dst, "--mode", "w", "--sharding", "none", "-q")
    assert quiet.stdout == "" and quiet.stderr == "", (quiet.stdout, quiet.stderr)
    assert "sharding" not in json.loads(Path(dst, "info").read_text())["scales"][0]
    np.testing.assert_array_equal(_read(dst), _read(volumes["image"]))


def test_copy_resumes_an_interrupted_copy(volumes, tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    cli("copy", volumes["image"], src, "-q")
    cli("downsample", src, "-q")  # two scales
    cli("copy", src, dst, "--scale", "0", "-q")  # as if stopped after the first scale...
    shards = sorted(Path(dst, "8_8_40").glob("*.shard"))
    lost, kept = shards[0], shards[1]
    lost.unlink()  # ... and in the middle of it
    stamp = kept.stat().st_mtime_ns

    refused = cli("copy", src, dst, "-q", check=False)
    assert refused.returncode == 1 and "VolumeExistsError" in refused.stderr
    cli("copy", src, dst, "--resume", "-q")
    for scale in (0, 1):
        np.testing.assert_array_equal(_read(dst, scale), _read(src, scale))
    assert lost.exists() and kept.stat().st_mtime_ns == stamp  # only the missing one rewritten
    assert [s["key"] for s in json.loads(Path(dst, "info").read_text())["scales"]] == [
        "8_8_40", "16_16_40"]  # fmt: skip


def test_copy_region_is_read_by_tensorstore(volumes, tmp_path):
    ts = pytest.importorskip("tensorstore")
    dst = str(tmp_path / "crop")
    # on a LocalCluster of one worker process: dask.distributed's path, quietly
    done = cli("copy", volumes["seg"], dst, "--region", "10:70,:40,4:", "-q",
               "--scheduler", "local", "--workers", "1")  # fmt: skip
    assert done.stdout == "" and done.stderr == "", (done.stdout, done.stderr)
    info = json.loads(Path(dst, "info").read_text())["scales"][0]
    assert info["voxel_offset"] == [10, 0, 4] and info["size"] == [60, 40, 20]
    want = _read(volumes["seg"])[10:70, :40, 4:]
    np.testing.assert_array_equal(_read(dst), want)
    store = ts.open({"driver": "neuroglancer_precomputed",
                     "kvstore": {"driver": "file", "path": dst}}).result()  # fmt: skip
    np.testing.assert_array_equal(store[10:70, 0:40, 4:24].read().result(), want)


@pytest.fixture
def restore_environ():
    """Put os.environ back after the test: the nannies of a LocalCluster set glibc variables
    in this process before spawning, and later tests' subprocesses must not inherit them."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_local_cluster_workers_keep_freed_blocks(restore_environ):
    """The LocalCluster the CLI starts gives its workers glibc settings that keep freed
    blocks in the heap (distributed's MALLOC_TRIM_THRESHOLD_ alone maps each anew); a value
    the user's dask config sets wins."""
    import dask
    from distributed import get_client

    from xarray_precomputed.cli.options import WORKER_MALLOC_ENVIRON, dask_scheduler

    def environ() -> dict:
        return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", *WORKER_MALLOC_ENVIRON)}

    key = "distributed.nanny.pre-spawn-environ.MALLOC_TOP_PAD_"
    with dask.config.set({key: 12345}), dask_scheduler("local", 1):
        (seen,) = get_client().run(environ).values()
    assert seen == {"MALLOC_TRIM_THRESHOLD_": "65536",  # distributed's own, left as it is
                    "MALLOC_MMAP_THRESHOLD_": str(WORKER_MALLOC_ENVIRON["MALLOC_MMAP_THRESHOLD_"]),
                    "MALLOC_TOP_PAD_": "12345"}  # fmt: skip


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_local_cluster_keeps_warnings_off_stderr(capfd, quiet, restore_environ):
    """--quiet with --scheduler local: distributed's warnings (slow scratch directories, GC
    time, a busy event loop), from this process or a worker, do not reach stderr."""
    import logging

    from distributed import get_client

    from xarray_precomputed.cli.options import dask_scheduler

    def warn() -> None:
        logging.getLogger("distributed.worker").warning("xp-probe-warning")

    with dask_scheduler("local", 1, quiet=quiet):
        get_client().run(warn)
        warn()
    err = capfd.readouterr().err
    assert ("xp-probe-warning" in err) is not quiet


def test_copy_to_s3_on_a_distributed_cluster(volumes, s3_server):
    distributed = pytest.importorskip("distributed")
    dst = s3_server.new_url("cli-copy")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:  # fmt: skip
        done = cli("copy", volumes["image"], dst, "--scheduler", cluster.scheduler_address,
                   "--dst-storage-options", json.dumps(s3_server.storage_options))  # fmt: skip
    assert "Completed" in done.stdout  # dask.distributed's progress bar
    got = _read(dst, storage_options=s3_server.storage_options)
    np.testing.assert_array_equal(got, _read(volumes["image"]))


def test_downsample_adds_scales(volumes, tmp_path):
    image = str(tmp_path / "image")
    cli("copy", volumes["image"], image, "-q")
    done = cli("downsample", image, "--levels", "2", "--factors", "2,2,1",
               "--scheduler", "processes", "--workers", "2")  # fmt: skip
    assert "added scale 16_16_40: 48x40x24" in done.stdout
    assert "added scale 32_32_40: 24x20x24" in done.stdout
    source = xr.open_dataset(image, engine="precomputed", chunks={})
    once = xp.downsample(source, (2, 2, 1))
    np.testing.assert_array_equal(_read(image, "16_16_40"), once.image.values)
    twice = xp.downsample(once, (2, 2, 1))
    np.testing.assert_array_equal(_read(image, "32_32_40"), twice.image.values)

    seg = str(tmp_path / "seg")
    cli("copy", volumes["seg"], seg, "-q")
    cli("downsample", seg, "--factors", "2,2,2", "-q")
    source = xr.open_dataset(seg, engine="precomputed", chunks={})
    mode = xp.downsample(source, (2, 2, 2), "mode")
    np.testing.assert_array_equal(_read(seg, 1), mode.segmentation.values)
    again = cli("downsample", seg, "--from", "0", "--factors", "2,2,2", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_link_prints_a_neuroglancer_state(volumes, s3_server):
    url = s3_server.upload_dir(volumes["seg"], "cli-link")
    done = cli("link", url, "--host", "https://ng.example.org", "--layout", "xy",
               "--storage-options", json.dumps(s3_server.storage_options))  # fmt: skip
    state = decode_url(done.stdout.strip())
    assert state["layers"] == [{"type": "segmentation", "source": f"precomputed://{url}",
                                "name": url.rsplit("/", 1)[-1]}]  # fmt: skip
    assert state["layout"] == "xy" and state["dimensions"]["x"] == [8e-9, "m"]

    options = json.dumps(s3_server.storage_options)
    facts = json.loads(cli("info", url, "--json", "--storage-options", options).stdout)
    assert facts["scales"][0]["stored_bytes"] is None  # remote: only when asked
    facts = json.loads(cli("info", url, "--json", "--stored-bytes", "--storage-options",
                           options).stdout)  # fmt: skip
    local = sum(f.stat().st_size for f in Path(volumes["seg"]).rglob("*") if f.is_file()
                and f.name != "info")  # fmt: skip
    assert facts["scales"][0]["stored_bytes"] == local

    local = cli("link", volumes["image"], check=False)
    assert local.returncode == 1 and "LinkError" in local.stderr
    assert f"precomputed serve {volumes['dir']}" in local.stderr


def test_serve_for_neuroglancer_and_our_reader(volumes):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xarray_precomputed", "serve", volumes["dir"], "--port", "0",
         "--host", "https://ng.example.org"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving "), first + proc.stderr.read()
        base = first.split(" at ")[1].split("/ ")[0]
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[:2] == [f"volume: {base}/image", f"volume: {base}/seg"]

        # our own HTTP reader, through the server
        np.testing.assert_array_equal(_read(f"{base}/seg"), _read(volumes["seg"]))
        # byte ranges and CORS, as Neuroglancer needs them
        shard = next(Path(volumes["image"]).glob("*/*.shard"))
        rel = shard.relative_to(volumes["dir"]).as_posix()
        req = urllib.request.Request(f"{base}/{rel}", headers={"Range": "bytes=4-11"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 206 and r.read() == shard.read_bytes()[4:12]
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "Content-Range" in r.headers["Access-Control-Expose-Headers"]
        pre = urllib.request.Request(f"{base}/image/info", method="OPTIONS",
                                     headers={"Access-Control-Request-Headers": "range"})  # fmt: skip
        with urllib.request.urlopen(pre) as r:
            assert r.status == 204 and "Range" in r.headers["Access-Control-Allow-Headers"]

        # the printed link shows both served volumes, centred on the image
        assert lines[2].startswith("Neuroglancer: https://ng.example.org/#!")
        state = decode_url(lines[2].split(" ", 1)[1])
        assert [(la["type"], la["source"]) for la in state["layers"]] == [
            ("image", f"precomputed://{base}/image"),
            ("segmentation", f"precomputed://{base}/seg"),
        ]
        assert state["dimensions"]["z"] == [40e-9, "m"]
        assert state["position"] == [48.0, 40.0, 12.0]
        # `link` on the served URLs gives the same state
        linked = cli("link", f"{base}/image", f"{base}/seg", "--host", "https://ng.example.org")
        assert decode_url(linked.stdout.strip()) == state
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        finally:
            proc.kill()
    assert code == 0


def test_demo(tmp_path):
    done = cli("demo", "--out", str(tmp_path), "--size", "96,96,16")
    assert "labels; the largest" in done.stdout and "precomputed serve" in done.stdout
    info = json.loads(cli("info", str(tmp_path / "segmentation"), "--json").stdout)
    assert [s["size"] for s in info["scales"]] == [[96, 96, 16], [48, 48, 16], [24, 24, 16]]


def test_package_and_cli_import_light(volumes):
    """``import xarray_precomputed`` (what xarray does to open a volume) and ``precomputed
    info`` on a local volume pull in neither dask, aiohttp, distributed nor fsspec (~0.5 s
    per process); the writer's names still resolve on first use."""
    code = (
        "import sys, io, contextlib\n"
        "import xarray_precomputed as xp\n"
        "from xarray_precomputed.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['info', {volumes['image']!r}])\n"
        "heavy = [m for m in ('dask', 'aiohttp', 'distributed', 'fsspec') if m in sys.modules]\n"
        "listed = {'to_precomputed', 'downsample', 'neuroglancer_url'} <= set(dir(xp))\n"
        "print(heavy, listed, xp.to_precomputed.__module__, 'dask.array' in sys.modules)\n"
        "try:\n"
        "    xp.not_a_name\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == "[] True xarray_precomputed.writer True", done.stdout
    assert "has no attribute 'not_a_name'" in lines[1]


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'precomputed = "xarray_precomputed.cli:main"' in text
    from xarray_precomputed.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0


def test_copy_in_waves_gives_the_same_volume(volumes, tmp_path):
    one, waves = str(tmp_path / "one"), str(tmp_path / "waves")
    cli("copy", volumes["image"], one, "--shard-bytes", "64KiB", "-q")
    cli("copy", volumes["image"], waves, "--shard-bytes", "64KiB", "--max-tasks", "1", "-q")
    assert len(list(Path(waves).rglob("*.shard"))) > 1
    assert {p.name: p.read_bytes() for p in Path(waves).rglob("*.shard")} == {
        p.name: p.read_bytes() for p in Path(one).rglob("*.shard")
    }
