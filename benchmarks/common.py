"""Shared helpers for the benchmarks in this directory (read now, write later).

Nothing here imports ``xarray_precomputed``: test volumes are built with
tensorstore, so a bug in the package cannot make its own benchmark data agree
with it. The pieces are:

- volume definitions (:class:`VolumeSpec`) and deterministic synthetic data
  (:func:`em_like`, :func:`blocky_labels`),
- building volumes once per parameter hash (:func:`ensure_volume`),
- measuring one run in a fresh subprocess (:func:`run_worker`, :class:`PeakMemory`),
- checksums, machine information, table formatting and a JSON results file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MiB = 1 << 20
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA_DIR = HERE / ".data"
RESULTS_DIR = HERE / "results"
MARKER = ".bench-build.json"
# Bump when the generators or the build procedure change: it is part of every volume's hash.
BUILD_VERSION = 2

PACKAGES = (
    "xarray-precomputed",
    "xarray",
    "dask",
    "distributed",
    "numpy",
    "tensorstore",
    "cloud-volume",
    "cloud-files",
    "fsspec",
    "isal",
    "compressed-segmentation",
    "psutil",
)


# -- volume definitions --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
    """One test volume: geometry, encoding, sharding and the data generator that fills it."""

    name: str
    description: str
    shape: tuple[int, int, int]  # (x, y, z) voxels
    dtype: str
    encoding: str  # raw | compressed_segmentation
    generator: str  # key of GENERATORS
    seed: int
    volume_type: str = "image"
    chunk: tuple[int, int, int] = (64, 64, 64)
    sharding: dict[str, Any] | None = None
    cseg_block: tuple[int, int, int] | None = None
    resolution: tuple[float, float, float] = (8.0, 8.0, 8.0)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def variable(self) -> str:
        return self.volume_type

    @property
    def array_shape(self) -> tuple[int, int, int, int]:
        return (*self.shape, 1)

    def params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("description")
        d["build_version"] = BUILD_VERSION
        return d

    def param_hash(self) -> str:
        blob = json.dumps(self.params(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def directory(self, data_dir: Path) -> Path:
        return Path(data_dir) / f"{self.name}-{self.param_hash()}"

    def scale_metadata(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "size": list(self.shape),
            "voxel_offset": [0, 0, 0],
            "resolution": list(self.resolution),
            "chunk_size": list(self.chunk),
            "encoding": self.encoding,
        }
        if self.cseg_block is not None:
            m["compressed_segmentation_block_size"] = list(self.cseg_block)
        if self.sharding is not None:
            m["sharding"] = dict(self.sharding)
        return m


def grid_shape(shape: Sequence[int], chunk: Sequence[int]) -> tuple[int, int, int]:
    return tuple(-(-int(s) // int(c)) for s, c in zip(shape, chunk))  # type: ignore[return-value]


def morton_bit_dims(grid: Sequence[int]) -> list[int]:
    """Axis supplying each bit of the compressed Morton code, LSB first (docs/format.md §4.1)."""
    bits = [int(n - 1).bit_length() for n in grid]
    return [d for i in range(max(bits, default=0)) for d in range(3) if i < bits[d]]


def box_after(grid: Sequence[int], nbits: int) -> tuple[int, int, int]:
    """Box (in chunks) spanned by the lowest ``nbits`` Morton bits (docs/format.md §5.1)."""
    k = [0, 0, 0]
    for d in morton_bit_dims(grid)[:nbits]:
        k[d] += 1
    return tuple(min(int(grid[d]), 1 << k[d]) for d in range(3))  # type: ignore[return-value]


def box_sharding(
    shape: Sequence[int],
    chunk: Sequence[int],
    chunks_per_shard: int,
    chunks_per_minishard: int,
    data_encoding: str,
    minishard_index_encoding: str = "gzip",
) -> dict[str, Any]:
    """Identity-hash sharding whose shards are axis-aligned boxes of ``chunks_per_shard`` chunks.

    With identity hashing and ``preshift + minishard + shard bits`` covering every Morton bit,
    the ``preshift + minishard`` low bits select a chunk within its shard (docs/format.md §5.1): here
    ``preshift = log2(chunks_per_minishard)``, ``minishard = log2(chunks_per_shard) - preshift``
    and ``shard_bits`` is whatever is left.

    >>> box_sharding((1024,) * 3, (64,) * 3, 128, 8, "raw")["shard_bits"]
    5
    """
    grid = grid_shape(shape, chunk)
    total = len(morton_bit_dims(grid))
    in_shard = min(int(chunks_per_shard).bit_length() - 1, total)
    preshift = min(int(chunks_per_minishard).bit_length() - 1, in_shard)
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "identity",
        "preshift_bits": preshift,
        "minishard_bits": in_shard - preshift,
        "shard_bits": total - in_shard,
        "minishard_index_encoding": minishard_index_encoding,
        "data_encoding": data_encoding,
    }


def shard_box(spec: VolumeSpec) -> tuple[int, int, int] | None:
    """Shard shape in chunks, or None when unsharded."""
    if spec.sharding is None:
        return None
    s = spec.sharding
    return box_after(grid_shape(spec.shape, spec.chunk), s["preshift_bits"] + s["minishard_bits"])


# -- synthetic data ------------------------------------------------------------------------------


def _interp_axis(a: np.ndarray, axis: int, n: int, cell: int) -> np.ndarray:
    """Linear interpolation along ``axis`` of samples ``cell`` apart onto ``n`` positions."""
    p = (np.arange(n) + 0.5) / cell
    i0 = np.floor(p).astype(np.intp)
    shape = [1] * a.ndim
    shape[axis] = n
    w = (p - i0).astype(np.float32).reshape(shape)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i0 + 1, axis=axis)
    hi -= lo
    hi *= w
    lo += hi
    return lo


def em_like(shape: Sequence[int], seed: int, slab: int = 64) -> np.ndarray:
    """EM-like uint8 image, Fortran ``(x, y, z, 1)``: smooth multi-scale texture, dark
    membrane-like sheets, per-voxel noise. gzip shrinks it only ~1.2-1.4x, like real EM;
    it has no constant regions (so no chunk equals the fill value and none is omitted).
    """
    X, Y, Z = (int(v) for v in shape)
    rng = np.random.default_rng(seed)
    base = 4  # everything but the noise is built on a grid of 4-voxel cells
    cs = [X // base + 2, Y // base + 2, Z // base + 2]

    def upsampled(cell: int) -> np.ndarray:
        k = cell // base
        g = rng.standard_normal([n // k + 2 for n in cs], dtype=np.float32)
        for ax in range(3):
            g = _interp_axis(g, ax, cs[ax], k)
        return g

    coarse = upsampled(64) + 0.5 * upsampled(16)
    coarse += 0.25 * rng.standard_normal(cs, dtype=np.float32)
    coarse -= 2.5 * np.exp(-((upsampled(24) / 0.15) ** 2))  # membranes
    out = np.empty((X, Y, Z, 1), np.uint8, order="F")
    zc = _interp_axis(coarse, 2, Z, base)
    for z0 in range(0, Z, slab):
        z1 = min(Z, z0 + slab)
        f = _interp_axis(_interp_axis(zc[:, :, z0:z1], 1, Y, base), 0, X, base)
        f += 0.2 * rng.standard_normal(f.shape, dtype=np.float32)
        f *= 28
        f += 128
        np.clip(f, 1, 255, out=f)
        out[:, :, z0:z1, 0] = f
    return out


def blocky_labels(shape: Sequence[int], seed: int, slab: int = 64) -> np.ndarray:
    """Segmentation-like uint64 labels, Fortran ``(x, y, z, 1)``: ~24x24x12-voxel cells with
    wavy boundaries, random 40-63-bit ids, ~5 % background (0)."""
    X, Y, Z = (int(v) for v in shape)
    cell, amp = (24, 24, 12), 6.0
    rng = np.random.default_rng(seed)
    ncell = [n // c + 3 for n, c in zip((X, Y, Z), cell)]
    table = rng.integers(1 << 40, 1 << 63, size=ncell, dtype=np.uint64)
    table[rng.random(ncell) < 0.05] = 0
    ph = rng.uniform(0, 2 * np.pi, size=(3, 2)).astype(np.float32)
    fr = rng.uniform(0.02, 0.06, size=(3, 2)).astype(np.float32)
    x = np.arange(X, dtype=np.float32)[:, None, None]
    y = np.arange(Y, dtype=np.float32)[None, :, None]
    out = np.empty((X, Y, Z, 1), np.uint64, order="F")
    for z0 in range(0, Z, slab):
        z = np.arange(z0, min(Z, z0 + slab), dtype=np.float32)[None, None, :]
        wx = amp * np.sin(fr[0, 0] * y + ph[0, 0]) * np.sin(fr[0, 1] * z + ph[0, 1])
        wy = amp * np.sin(fr[1, 0] * x + ph[1, 0]) * np.sin(fr[1, 1] * z + ph[1, 1])
        wz = amp * np.sin(fr[2, 0] * x + ph[2, 0]) * np.sin(fr[2, 1] * y + ph[2, 1])
        cx = ((x + cell[0] + wx) // cell[0]).astype(np.intp)
        cy = ((y + cell[1] + wy) // cell[1]).astype(np.intp)
        cz = ((z + cell[2] + wz) // cell[2]).astype(np.intp)
        out[:, :, z0 : z0 + z.shape[2], 0] = table[cx, cy, cz]
    return out


GENERATORS: dict[str, Callable[[Sequence[int], int], np.ndarray]] = {
    "em_like": em_like,
    "blocky_labels": blocky_labels,
}


# -- checksums -----------------------------------------------------------------------------------

try:
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover
    from zlib import crc32 as _crc32


def checksum(array: Any) -> str:
    """CRC-32 of the values in Fortran (x-fastest) order, plus dtype and shape.

    Independent of the array's memory order (a C-ordered array is transposed first).
    """
    a = np.asarray(array)
    flat = a.T if a.flags.f_contiguous else np.ascontiguousarray(a.T)
    crc = 0
    mv = memoryview(flat.reshape(-1).view(np.uint8))
    step = 256 * MiB
    for i in range(0, len(mv), step):
        crc = _crc32(mv[i : i + step], crc)
    return f"{a.dtype.str}:{'x'.join(map(str, a.shape))}:{crc & 0xFFFFFFFF:08x}"


# -- building volumes ----------------------------------------------------------------------------


def tensorstore_spec(path: Path | str) -> dict[str, Any]:
    return {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(Path(path).resolve()) + "/"},
    }


def volume_is_valid(spec: VolumeSpec, data_dir: Path) -> dict[str, Any] | None:
    """The build marker of an intact, current build, else None."""
    d = spec.directory(data_dir)
    try:
        marker = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("param_hash") != spec.param_hash() or not (d / "info").is_file():
        return None
    files = [p for p in d.rglob("*") if p.is_file() and p.name != MARKER]
    if len(files) != marker.get("files") or sum(p.stat().st_size for p in files) != marker.get(
        "bytes"
    ):
        return None
    return marker


def ensure_volume(
    spec: VolumeSpec,
    data_dir: Path,
    data_cache: dict[tuple[str, tuple, int, str], np.ndarray] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build ``spec`` under ``data_dir`` with tensorstore unless a valid build exists.

    Returns the build marker: parameters, reference checksum, file count and bytes on disk.
    ``data_cache`` lets volumes that share a generator, shape and seed reuse one array.
    """
    marker = volume_is_valid(spec, data_dir)
    if marker is not None:
        return marker
    import tensorstore as ts

    d = spec.directory(data_dir)
    key = (spec.generator, spec.shape, spec.seed, spec.dtype)
    t0 = time.perf_counter()
    data = data_cache.get(key) if data_cache is not None else None
    if data is None:
        log(f"  generating {spec.name} data ({spec.nbytes / MiB:.0f} MiB, {spec.generator})")
        data = GENERATORS[spec.generator](spec.shape, spec.seed)
        assert data.dtype == np.dtype(spec.dtype) and data.shape == spec.array_shape
        if data_cache is not None:
            data_cache.clear()  # keep at most one large array alive
            data_cache[key] = data
    t1 = time.perf_counter()
    if d.exists():
        shutil.rmtree(d)
    tmp = d.with_name(d.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    store = ts.open(
        {
            **tensorstore_spec(tmp),
            "multiscale_metadata": {
                "type": spec.volume_type,
                "data_type": spec.dtype,
                "num_channels": 1,
            },
            "scale_metadata": spec.scale_metadata(),
        },
        create=True,
        delete_existing=True,
    ).result()
    box = shard_box(spec)
    # Write whole shards (or z-slabs when unsharded) so tensorstore never rewrites a shard.
    step = [b * c for b, c in zip(box or (1 << 30,) * 3, spec.chunk)]
    if box is None:
        step = [spec.shape[0], spec.shape[1], spec.chunk[2] * 4]
    for z in range(0, spec.shape[2], step[2]):
        for y in range(0, spec.shape[1], step[1]):
            for x in range(0, spec.shape[0], step[0]):
                sl = (slice(x, x + step[0]), slice(y, y + step[1]), slice(z, z + step[2]))
                store[sl].write(data[sl]).result()
    del store
    t2 = time.perf_counter()
    files = [p for p in tmp.rglob("*") if p.is_file()]
    nbytes = sum(p.stat().st_size for p in files)
    marker = {
        "name": spec.name,
        "description": spec.description,
        "param_hash": spec.param_hash(),
        "params": spec.params(),
        "checksum": checksum(data),
        "files": len(files),
        "bytes": nbytes,
        "generate_s": round(t1 - t0, 2),
        "write_s": round(t2 - t1, 2),
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=1, default=list) + "\n")
    tmp.rename(d)
    log(
        f"  built {d.name}: {len(files)} files, {nbytes / MiB:.1f} MiB on disk "
        f"(generate {t1 - t0:.1f} s, tensorstore write {t2 - t1:.1f} s)"
    )
    return marker


def warm_page_cache(directory: Path) -> int:
    """Read every file once so that timed reads come from the page cache; returns bytes read."""
    total = 0
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file():
            with open(p, "rb", buffering=0) as f:
                while chunk := f.read(16 * MiB):
                    total += len(chunk)
    return total


# -- measuring in a subprocess -------------------------------------------------------------------


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Extra peak resident memory of this process over a code region.

    On Linux the kernel's high-water mark is reset (``/proc/self/clear_refs`` = 5) at the
    start, so earlier allocations (imports, a previous run) cannot hide the region's peak.
    Elsewhere ``ru_maxrss`` is used and the result is only a lower bound when the process
    had already peaked higher before the region.
    """

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.method = "ru_maxrss"
        self.baseline = 0
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        import gc

        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM reset"
        except OSError:
            pass
        self.baseline = self._proc.memory_info().rss
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _vm_hwm_bytes() if self.method == "VmHWM reset" else None
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (
                1 if sys.platform == "darwin" else 1024
            )
        self.peak = max(hwm, self._proc.memory_info().rss)

    @property
    def extra(self) -> int:
        return self.peak - self.baseline


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its waited-for children."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


RESULT_PREFIX = "BENCH-RESULT "


def emit_result(result: dict[str, Any]) -> None:
    """Worker side: print the result line that :func:`run_worker` picks up."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def _busy_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def other_load(interval: float = 0.5) -> float:
    """CPU cores kept busy by other processes over ``interval`` seconds (this process idles)."""
    b0 = _busy_cpu_seconds()
    time.sleep(interval)
    return max(0.0, (_busy_cpu_seconds() - b0) / interval)


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` cores.

    Returns the last load seen. Benchmarks on a shared 2-core machine are meaningless while
    a test suite runs next to them; this keeps the worst of that out of the measurements.
    """
    deadline = time.monotonic() + max_wait
    load = other_load()
    while load > threshold and time.monotonic() < deadline:
        time.sleep(1.0)
        load = other_load()
    return load


def run_worker(
    script: Path | str, payload: dict[str, Any], timeout: float = 1800
) -> dict[str, Any]:
    """Run ``python script --worker '<payload json>'`` in a fresh process; return its result.

    Adds ``others_cores``: the CPU cores that *other* processes kept busy, on average, while
    the worker ran (machine-wide busy time minus the worker's own CPU time), so runs
    disturbed by a neighbour can be recognised. Failures come back as ``{"error": ...}``
    rather than raising, so one broken reader does not stop the whole benchmark.
    """
    cmd = [sys.executable, str(script), "--worker", json.dumps(payload)]
    busy0, own0, t0 = _busy_cpu_seconds(), _children_cpu_seconds(), time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    others = (_busy_cpu_seconds() - busy0) - (_children_cpu_seconds() - own0)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["others_cores"] = round(max(0.0, others) / wall, 3)
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"error": f"worker exited {proc.returncode}: " + " | ".join(tail)}


# -- reporting -----------------------------------------------------------------------------------


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def package_source_hash() -> str | None:
    """Short hash of the package's source files as they are on disk (the working tree can
    differ from the commit while people edit it)."""
    root = REPO / "xarray_precomputed"
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


HUGEPAGES_ENV = "BENCH_NUMPY_HUGEPAGES"


def add_hugepages_option(parser: Any) -> None:
    """``--numpy-hugepages on|off``: whether NumPy asks for transparent huge pages on large
    allocations in the benchmark's worker processes (docs/reading.md, "Memory order")."""
    parser.add_argument(
        "--numpy-hugepages", choices=("on", "off"), default="on",
        help="NumPy's madvise(MADV_HUGEPAGE) on allocations >= 4 MiB in the worker processes "
        "(default on, NumPy's own default); 'off' shows what it costs where the kernel "
        "compacts memory for huge pages",
    )  # fmt: skip


def use_hugepages_option(value: str) -> None:
    """In the driver: pass the choice to the workers it starts (through the environment)."""
    os.environ[HUGEPAGES_ENV] = value


def apply_hugepages_option() -> None:
    """In a worker process, first thing: apply the driver's ``--numpy-hugepages``."""
    if os.environ.get(HUGEPAGES_ENV) == "off":
        from numpy._core.multiarray import _set_madvise_hugepage

        _set_madvise_hugepage(False)


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, Python and package versions, project commit."""
    import psutil

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "xarray_precomputed")
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "project_commit": None if commit is None else commit + ("+dirty" if dirty else ""),
        "package_source_sha256": package_source_hash(),
        "packages": {p: _version(p) for p in PACKAGES},
        "numpy_hugepages": os.environ.get(HUGEPAGES_ENV, "on"),
    }


def format_machine(info: dict[str, Any]) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    return (
        f"machine: {info['cpu']}, {info['usable_cores']} usable cores "
        f"({info['physical_cores']} physical), {info['memory_gib']} GiB, {info['platform']}\n"
        f"python {info['python']}; project commit {info['project_commit']} "
        f"(package source sha256 {info['package_source_sha256']})\n"
        f"packages: {pk}; NumPy huge pages {info.get('numpy_hugepages', 'on')}"
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(
            r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(len(r))
        ).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=list) + "\n")
    tmp.replace(path)
