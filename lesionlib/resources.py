"""Memory and time: what a job used (peak RSS, CPU and wall seconds) and what a training run may use.

Two uses:

* :class:`ResourceMeter` measures a block of work in the current process *and every descendant it
  waited for* (``getrusage`` of ``RUSAGE_SELF`` and ``RUSAGE_CHILDREN``): wall seconds, CPU seconds
  and the peak resident set size. :func:`lesionlib.notebook_runner.run_notebook` wraps each notebook in
  one and writes :data:`RESOURCES_JSON` beside the executed notebook; ``lesionlib grid timings`` shows
  it per job beside Snakemake's sampled ``benchmark:`` figures.
* :func:`resolve_cache` turns the training setting ``cache: auto`` into ``memory``, ``disk`` or ``none``
  from the estimated size of the cached volumes (:func:`estimate_cache_bytes`, from the NIfTI headers:
  no image is loaded) against the memory available (:func:`available_memory`: ``MemAvailable`` of
  ``/proc/meminfo``, lowered to what a cgroup memory limit leaves) and the free disk of the cache folder.

What the peak RSS figure is. ``ru_maxrss`` is a high-water mark kept by the kernel for each process;
``RUSAGE_CHILDREN`` holds the largest one among terminated descendants that were waited for (a child's
own waited-for children included). So :attr:`Usage.peak_rss_mib` is the peak of the *largest single
process* of the job (the notebook's kernel, a DataLoader worker, an nnU-Net subprocess, or the runner
itself), exact, not sampled. (Linux carries a parent's high-water mark into a child it forks until the
child calls ``exec``: a child's own figure can read as high as the parent's peak, which the maximum with
``RUSAGE_SELF`` already covers.) It is not the sum over processes that ran at the same time: pages shared
by forked workers would be counted once per process in such a sum (Snakemake's ``max_rss`` is such a
sum, sampled every 0.5 s for 15 s, then every 30 s). ``ru_maxrss`` is in KiB on Linux, bytes on macOS.

This module imports nothing heavy (nibabel only inside :func:`estimate_cache_bytes`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

__all__ = [
    "RESOURCES_JSON",
    "CACHE_MEMORY_SAFETY",
    "CACHE_DISK_SAFETY",
    "CACHE_BYTES_PER_VOXEL",
    "Usage",
    "ResourceMeter",
    "CacheDecision",
    "host_info",
    "peak_rss_mib",
    "write_resources",
    "read_resources",
    "available_memory",
    "resampled_shape",
    "estimate_cache_bytes",
    "cache_copies",
    "decide_cache",
    "resolve_cache",
    "format_bytes",
]

log = logging.getLogger(__name__)

MIB = 2**20
GIB = 2**30
#: The file :func:`lesionlib.notebook_runner.run_notebook` writes beside a stage's executed notebook.
RESOURCES_JSON = "resources.json"
#: Share of the available memory the memory cache may take (the rest: the model, batches, augmentation,
#: the transient arrays of loading and resampling, other processes).
CACHE_MEMORY_SAFETY = 0.5
#: Share of the cache folder's free disk the disk cache may take.
CACHE_DISK_SAFETY = 0.8
#: Bytes per voxel of one cached case: the image and its mask, both float32 after ``preprocessing``.
CACHE_BYTES_PER_VOXEL = 8


# ---------------------------------------------------------------------------------------------
# what a job used
# ---------------------------------------------------------------------------------------------

def _maxrss_mib(usage: resource.struct_rusage) -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return usage.ru_maxrss * scale / MIB


def peak_rss_mib(who: Literal["self", "children"] = "self") -> float:
    """``ru_maxrss`` in MiB of this process (``'self'``) or of its largest waited-for descendant (``'children'``)."""
    return _maxrss_mib(resource.getrusage(resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    """``hostname``, ``cpu_model`` and ``n_cpus`` (the CPUs this process may run on)."""
    try:
        n_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n_cpus = os.cpu_count() or 1
    return {"hostname": socket.gethostname(), "cpu_model": _cpu_model(), "n_cpus": int(n_cpus)}


@dataclass
class Usage:
    """What :class:`ResourceMeter` measured; :meth:`record` is the JSON of :data:`RESOURCES_JSON`.

    ``cpu_s`` = user + system seconds of this process and of the descendants it waited for, during
    the block. ``peak_rss_mib`` = max(``peak_rss_self_mib``, ``peak_rss_children_mib``) (see the module
    docstring). ``children_peak_before_mib``: the children's high-water mark when the block started;
    when it is not below ``peak_rss_children_mib`` an earlier child may have set the figure.
    """

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    peak_rss_self_mib: float
    peak_rss_children_mib: float
    children_peak_before_mib: float
    host: dict[str, Any] = field(default_factory=host_info)

    def record(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 3), "peak_rss_mib": round(self.peak_rss_mib, 1),
                "cpu_s": round(self.cpu_s, 3), **self.host,
                "peak_rss_self_mib": round(self.peak_rss_self_mib, 1),
                "peak_rss_children_mib": round(self.peak_rss_children_mib, 1),
                "children_peak_before_mib": round(self.children_peak_before_mib, 1),
                "measured": "getrusage(RUSAGE_SELF, RUSAGE_CHILDREN): the largest single process's peak RSS; "
                            "CPU of this process and of the descendants it waited for"}


class ResourceMeter:
    """Context manager: wall, CPU and peak RSS of a block of work (this process + waited-for descendants).

    ::

        with ResourceMeter() as meter:
            subprocess.run([...], check=True)
        meter.usage.peak_rss_mib
    """

    usage: Usage | None = None

    def start(self) -> "ResourceMeter":
        """Start measuring (also called on entering the block); returns ``self``."""
        self._wall = time.perf_counter()
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __enter__(self) -> "ResourceMeter":
        return self.start()

    def stop(self) -> Usage:
        """Measure now (also called on leaving the block); returns and keeps :attr:`usage`."""
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(getattr(after, f) - getattr(before, f) for after, before in ((own, self._self),
                                                                             (children, self._children))
                  for f in ("ru_utime", "ru_stime"))
        self.usage = Usage(wall_s=time.perf_counter() - self._wall, cpu_s=cpu,
                           peak_rss_mib=max(_maxrss_mib(own), _maxrss_mib(children)),
                           peak_rss_self_mib=_maxrss_mib(own), peak_rss_children_mib=_maxrss_mib(children),
                           children_peak_before_mib=_maxrss_mib(self._children))
        return self.usage

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def write_resources(path: os.PathLike | str, record: dict[str, Any]) -> Path:
    """Write ``record`` as JSON to ``path`` atomically."""
    from lesionlib.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return Path(path)


def read_resources(path: os.PathLike | str) -> dict[str, Any] | None:
    """A :data:`RESOURCES_JSON` record, or ``None`` when the file is absent or not such a record."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), (int, float))
                                               for k in ("wall_s", "peak_rss_mib", "cpu_s")):
        return None
    return record


# ---------------------------------------------------------------------------------------------
# what a training run may use
# ---------------------------------------------------------------------------------------------

def format_bytes(n: float) -> str:
    """``'48.2 GiB'``, ``'350 MiB'``."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # 'max' (cgroup v2 without a limit) -> None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_dirs(cgroup_root: Path, proc_cgroup: Path) -> list[tuple[Path, int]]:
    """Folders holding this process's memory cgroup and its ancestors, each with its version (1 or 2).

    Inside a container the process's own path is usually not mounted, so the root is tried too.
    """
    own: list[tuple[str, int]] = []
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                own.append((path, 2))
            elif "memory" in controllers.split(","):
                own.append((path, 1))
    except (OSError, ValueError):
        pass
    dirs: list[tuple[Path, int]] = []
    for rel, version in own + [("/", 2), ("/", 1)]:
        base = cgroup_root if version == 2 else cgroup_root / "memory"
        parts = [p for p in rel.strip("/").split("/") if p]
        for depth in range(len(parts), -1, -1):
            folder = base.joinpath(*parts[:depth])
            if folder.is_dir() and (folder, version) not in dirs:
                dirs.append((folder, version))
    return dirs


def _cgroup_headroom(cgroup_root: Path, proc_cgroup: Path) -> tuple[int, str] | None:
    """Bytes left under the tightest cgroup memory limit (usage minus reclaimable page cache), if any limit."""
    best: tuple[int, str] | None = None
    for folder, version in _cgroup_dirs(cgroup_root, proc_cgroup):
        if version == 2:
            limit, usage = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
            inactive = _stat_value(folder / "memory.stat", "inactive_file")
            name = folder / "memory.max"
        else:
            limit, usage = _read_int(folder / "memory.limit_in_bytes"), _read_int(folder / "memory.usage_in_bytes")
            inactive = _stat_value(folder / "memory.stat", "total_inactive_file")
            name = folder / "memory.limit_in_bytes"
        if limit is None or limit >= 2**60:  # v1 reports 'no limit' as a huge number
            continue
        left = max(0, limit - max(0, (usage or 0) - inactive))
        if best is None or left < best[0]:
            best = (left, f"cgroup limit {format_bytes(limit)} ({name})")
    return best


def available_memory(meminfo: os.PathLike | str = "/proc/meminfo", cgroup_root: os.PathLike | str = "/sys/fs/cgroup",
                     proc_cgroup: os.PathLike | str = "/proc/self/cgroup") -> tuple[int | None, str]:
    """``(bytes available to a new allocation, where the figure comes from)``; ``(None, ...)`` when unknown.

    ``MemAvailable`` of ``/proc/meminfo`` (the kernel's estimate, the figure ``psutil.virtual_memory().available``
    reports on Linux), lowered to the headroom under a cgroup memory limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``; the process's own cgroup and its ancestors; usage net of inactive page cache)
    when one is set: a SLURM job or a container gets that much, whatever the host has. Elsewhere
    ``os.sysconf`` free pages, when the platform has them.
    """
    available: int | None = None
    source = "unknown"
    try:
        for line in Path(meminfo).read_text().splitlines():  # 'MemAvailable:   24147568 kB'
            if line.startswith("MemAvailable:"):
                available, source = int(line.split()[1]) * 1024, f"MemAvailable ({meminfo})"
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            source = "sysconf free pages"
        except (ValueError, OSError, AttributeError):
            pass
    headroom = _cgroup_headroom(Path(cgroup_root), Path(proc_cgroup))
    if headroom is not None and (available is None or headroom[0] < available):
        available, source = headroom
    return available, source


def resampled_shape(shape: Sequence[int], zooms: Sequence[float], spacing_mm: Sequence[float] | None,
                    patch_size: Sequence[int] | None = None) -> tuple[int, int, int]:
    """Voxel grid of a volume of ``shape`` x ``zooms`` (mm) resampled to ``spacing_mm`` (MONAI ``Spacing``:
    ``round((n - 1) * zoom / spacing) + 1`` per axis), then padded to at least ``patch_size``."""
    out = []
    for i, (n, z) in enumerate(zip(shape[:3], zooms[:3])):
        m = int(n) if spacing_mm is None else int(round((int(n) - 1) * float(z) / float(spacing_mm[i]))) + 1
        out.append(max(m, int(patch_size[i])) if patch_size is not None else m)
    return tuple(out)  # type: ignore[return-value]


def _ras_shape_and_zooms(path: os.PathLike | str) -> tuple[list[int], list[float]]:
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))  # header only: no voxel is read
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    shape, ras_zooms = [0, 0, 0], [0.0, 0.0, 0.0]
    for in_axis, (out_axis, _flip) in enumerate(nib.io_orientation(img.affine)):
        shape[int(out_axis)], ras_zooms[int(out_axis)] = int(img.shape[in_axis]), float(zooms[in_axis])
    return shape, ras_zooms


def estimate_cache_bytes(image_paths: Iterable[os.PathLike | str], spacing_mm: Sequence[float] | None,
                         patch_size: Sequence[int] | None = None,
                         bytes_per_voxel: int = CACHE_BYTES_PER_VOXEL) -> int:
    """Bytes of the preprocessed volumes of these images, from their headers alone.

    Each image's grid reoriented to RAS, resampled to ``spacing_mm`` and padded to ``patch_size``
    (:func:`resampled_shape`), times ``bytes_per_voxel`` (image + mask in float32: 8). ``preprocessing``
    then crops each volume to the bounding box of its nonzero voxels. The crop is a view of the whole
    resampled array: the disk cache's files (``torch.save`` writes a view's whole storage) hold what this
    estimates, and the memory cache, where MONAI's ``CacheDataset`` keeps contiguous copies, holds less
    (0.72 of it on the synthetic 1 mm adults, ``benchmarks/bench_scale.py``). So: exact for the disk cache
    and an upper bound for the memory cache when no padding is needed, an upper bound for both otherwise.
    """
    total = 0
    for path in image_paths:
        shape, zooms = _ras_shape_and_zooms(path)
        total += math.prod(resampled_shape(shape, zooms, spacing_mm, patch_size)) * int(bytes_per_voxel)
    return total


def cache_copies(num_workers: int, start_method: str | None = None) -> int:
    """How many copies of the memory cache a training run holds.

    DataLoader workers started by ``fork`` (the default on Linux up to Python 3.13) share the parent's
    cached tensors copy-on-write: the patch sampler only reads them (measured: 4 cached 1 mm volumes,
    202 MiB; each of 2 workers had 27-34 MiB of private memory), so one copy. With ``spawn`` or
    ``forkserver`` (macOS, Windows, Python 3.14 on Linux) each worker unpickles its own dataset: counted as
    ``1 + num_workers`` copies (torch may move tensors to shared memory instead; counting copies is the
    safe side).
    """
    if num_workers <= 0:
        return 1
    if start_method is None:
        import multiprocessing

        start_method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_context().get_start_method()
    return 1 if start_method == "fork" else 1 + int(num_workers)


@dataclass(frozen=True)
class CacheDecision:
    """Which cache a training run uses and why (:func:`decide_cache`); ``to_dict()`` goes to ``params.yaml``."""

    cache: Literal["memory", "disk", "none"]
    requested: str
    n_images: int
    need_bytes: int | None
    copies: int
    available_bytes: int | None
    memory_source: str
    memory_safety: float
    disk_free_bytes: int | None
    disk_safety: float
    reason: str

    def message(self) -> str:
        """``'cache: disk — 655 images need 48.2 GiB, 20.1 GiB available (...)'``."""
        return f"cache: {self.cache} — {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("need_bytes", "available_bytes", "disk_free_bytes"):
            value = out.pop(key)
            out[key.replace("_bytes", "_gib")] = None if value is None else round(value / GIB, 3)
        return out


def decide_cache(need_bytes: int, available_bytes: int | None, *, n_images: int, copies: int = 1,
                 disk_free_bytes: int | None = None, memory_safety: float = CACHE_MEMORY_SAFETY,
                 disk_safety: float = CACHE_DISK_SAFETY, memory_source: str = "",
                 requested: str = "auto") -> CacheDecision:
    """``cache: auto`` resolved (a pure function of the numbers).

    ``memory`` when ``need_bytes x copies <= memory_safety x available_bytes``; else ``disk`` when
    ``need_bytes <= disk_safety x disk_free_bytes`` (or the free disk is unknown); else ``none`` (every
    volume read and preprocessed again each time it is drawn: slow, but it fits). Unknown available
    memory keeps ``memory`` (the behaviour before ``auto``).
    """
    n = f"{n_images} image{'s need' if n_images != 1 else ' needs'}"
    need = format_bytes(need_bytes * copies) + (f" ({copies} copies: DataLoader workers not forked)" if copies > 1 else "")
    common = dict(requested=requested, n_images=int(n_images), need_bytes=int(need_bytes), copies=int(copies),
                  available_bytes=available_bytes, memory_source=memory_source, memory_safety=memory_safety,
                  disk_free_bytes=disk_free_bytes, disk_safety=disk_safety)
    if available_bytes is None:
        return CacheDecision("memory", **common, reason=f"{n} {need}; available memory unknown")
    have = f"{format_bytes(available_bytes)} available"
    if need_bytes * copies <= memory_safety * available_bytes:
        return CacheDecision("memory", **common, reason=f"{n} {need}, {have} (at most {memory_safety:.0%} used)")
    if disk_free_bytes is None or need_bytes <= disk_safety * disk_free_bytes:
        disk = "" if disk_free_bytes is None else f"; {format_bytes(disk_free_bytes)} free on disk"
        return CacheDecision("disk", **common, reason=f"{n} {need}, {have}{disk}")
    return CacheDecision("none", **common, reason=f"{n} {need}, {have}; only {format_bytes(disk_free_bytes)} "
                                                    "free on disk: volumes are preprocessed each time they are drawn")


def _free_disk(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


def resolve_cache(requested: str, image_paths: Sequence[os.PathLike | str], *, spacing_mm: Sequence[float] | None,
                  patch_size: Sequence[int] | None, num_workers: int, cache_dir: os.PathLike | str) -> CacheDecision:
    """The cache a training run uses: ``requested`` itself unless it is ``'auto'`` (:func:`decide_cache` on
    the estimated size of ``image_paths``' volumes, the available memory and the free disk under ``cache_dir``).
    The numbers are computed in both cases, so that the run records them."""
    paths = list(image_paths)
    need = estimate_cache_bytes(paths, spacing_mm, patch_size)
    available, source = available_memory()
    decision = decide_cache(need, available, n_images=len(paths), copies=cache_copies(num_workers),
                            disk_free_bytes=_free_disk(Path(cache_dir)), memory_source=source, requested=requested)
    if requested != "auto":
        decision = CacheDecision(**{**asdict(decision), "cache": requested,
                                    "reason": f"set explicitly; {decision.reason}"})
    return decision
