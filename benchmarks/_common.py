"""What every benchmark script shares: paths, machine facts, timing and JSON output.

Kept in one place so the scripts record the machine and time their windows the same way,
and their figures can be compared with each other. Tables, precision names and ``name:steps``
runs come from the package itself (``ddpm_lightning.utils.tables``, ``.utils.precision``,
``ddpm_lightning.sampling.parse_sampler_steps``), so the benchmarks print what its commands do.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The benchmarks read only local images and build their models from configs: never wait on
# the Hub (the benchmark machines may have no internet).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
#: The 832 butterfly JPEGs live next to the repository, never inside it.
DEFAULT_DATA_DIR = (REPO_ROOT / ".." / "shared" / "data" / "butterflies").resolve()

PACKAGES = ("torch", "lightning", "diffusers", "datasets", "torchvision", "accelerate", "numpy")


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--output, --threads and --seed, with the same meaning in every script."""
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / f"{name}.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch.set_num_threads for every measured side (default: the core count, %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default: 0)")


def set_threads(threads: int) -> None:
    """The same intra-op thread count for both sides of a comparison; quiet ``datasets`` bars."""
    import datasets
    import torch

    torch.set_num_threads(threads)
    datasets.disable_progress_bars()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_state() -> dict[str, Any]:
    """The commit measured, and the package files that differ from it (a benchmark measures
    the working tree, which may hold uncommitted changes)."""

    def git(*arguments: str) -> str:
        try:
            return subprocess.run(
                ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    # Porcelain lines are "XY path": the path starts at the fourth character.
    changed = git("status", "--porcelain", "--", "ddpm_lightning")
    return {
        "git_commit": git("rev-parse", "HEAD").strip() or None,
        "uncommitted_package_files": [line[3:] for line in changed.splitlines() if line],
    }


def machine_info(device: str) -> dict[str, Any]:
    """The facts needed to compare a figure with one taken elsewhere."""
    import torch

    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m_at_start": load_average(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "versions": {package: _version(package) for package in PACKAGES},
        "source": source_state(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def load_average() -> float:
    """The 1-minute load average: other processes on a small machine skew every timing."""
    return os.getloadavg()[0]


def describe_machine(machine: dict[str, Any]) -> str:
    """One line for the head of a printed table."""
    gpu = f" ({machine['gpu']})" if "gpu" in machine else ""
    return (
        f"{machine['cpu_model']}, {machine['cpu_cores']} cores, torch threads "
        f"{machine['torch_threads']}, device {machine['device']}{gpu}, "
        f"load average {machine['load_average_1m_at_start']:.1f} at start"
    )


def resolve_device(device: str) -> str:
    """'auto' means the GPU when there is one."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nWrote {path}")


def resident_memory_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory during a run: CUDA allocator peak on a GPU, sampled RSS on a CPU.

    The CPU figure is the whole process's resident memory (Python, libraries, data and
    anything an earlier run left cached), so it compares runs of one invocation only roughly.
    """

    def __init__(self, device: str, interval_s: float = 0.01) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import torch

        # Free what an earlier run left behind (Trainer, module and callbacks form cycles).
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return
        self.peak_bytes = resident_memory_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, resident_memory_bytes())

    def stop(self) -> float:
        """Stop and return the peak in MiB."""
        import torch

        if self.device.startswith("cuda"):
            self.peak_bytes = torch.cuda.max_memory_allocated()
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, resident_memory_bytes())
        return self.peak_bytes / 2**20


class StepWindow:
    """Wall time from the start of the first timed step to the end of the last one.

    Both training loops call :meth:`step_start` and :meth:`step_end` with a 0-based step
    index; the first ``warmup_steps`` are not timed. Everything between those two points,
    including fetching the batches of the timed steps after the first, counts.

    The process's CPU time over the same window is kept too: on a machine shared with other
    jobs, wall time swings with their load while CPU time mostly does not (it leaves out
    DataLoader worker processes, and counts idle-spinning threads).
    """

    def __init__(self, warmup_steps: int, timed_steps: int, device: str) -> None:
        if timed_steps < 1:
            raise ValueError("timed_steps must be at least 1")
        self.warmup_steps = warmup_steps
        self.timed_steps = timed_steps
        self.device = device
        self.started_at: float | None = None
        self.started_cpu: float | None = None
        self.seconds: float | None = None
        self.cpu_seconds: float | None = None

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.timed_steps

    def step_start(self, step: int) -> None:
        if step == self.warmup_steps:
            synchronize(self.device)
            self.started_at = time.perf_counter()
            self.started_cpu = time.process_time()

    def step_end(self, step: int) -> None:
        if step == self.total_steps - 1:
            synchronize(self.device)
            assert self.started_at is not None, "the first timed step never started"
            self.seconds = time.perf_counter() - self.started_at
            self.cpu_seconds = time.process_time() - self.started_cpu

    def images_per_second(self, batch_size: int) -> float:
        if self.seconds is None:
            raise RuntimeError(f"the run ended before step {self.total_steps} finished")
        return self.timed_steps * batch_size / self.seconds

    def images_per_cpu_second(self, batch_size: int) -> float:
        if self.cpu_seconds is None:
            raise RuntimeError(f"the run ended before step {self.total_steps} finished")
        return self.timed_steps * batch_size / self.cpu_seconds
