"""Where a number came from: code version, date, machine and library versions.

A run's provenance has two halves. The driver's (`driver`): the command line, the code version
(git) and when the run started, the same for every record of the run. The node's (`node`):
the machine that trained the model or ran the trial, its GPU and library versions, collected
inside the job, which on a Ray cluster may be another machine than the driver's.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("bench-ood", "torch", "torchvision", "numpy", "scikit-learn", "ray", "pandas")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def driver(command: list[str] | None = None) -> dict:
    """The driver's half: code version, start, command line (and the driver's host, apart from the node's)."""
    return {"git": git_revision(), "started": now(), "command": command, "driver_host": platform.node()}


def node() -> dict:
    """This process's half: host, Python, platform, CPUs, GPU, CUDA and library versions, and the Ray node
    (id and address) when it runs in a Ray job."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["cuda"] = torch.version.cuda
    found = {
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu(torch),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }
    ray_node = _ray_node()
    if ray_node:
        found["ray_node"] = ray_node
    return found


def _cpu(torch) -> dict:
    """The CPU's model, the instruction set torch's kernels use and torch's thread count: training on a CPU
    is not bitwise reproducible from one machine to another, so a model's key cannot say which weights it
    holds, and the record must say where they were trained."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return {"model": model or None, "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def _ray_node() -> dict | None:
    """The Ray node this process runs on, if it is a Ray worker (or a driver connected to Ray)."""
    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is None or not ray.is_initialized():
        return None
    try:
        return {"id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}
    except Exception:  # noqa: BLE001 - provenance never fails a job
        return None
