"""How many workers fit: the CPUs this process may really use, and the pool's default size.

``os.cpu_count()`` and the affinity mask ignore CPU quotas: a container limited to 2 CPUs on a
64-core node sees 64 in both. The quota lives in this process's cgroup or one of its ancestors.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    """CPUs the scheduler may run this process on (the affinity mask where there is one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def quota_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CPU quota on this process's cgroups, in CPUs; ``None`` if there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: one unified hierarchy
            quotas += _quotas(root, path, ("cpu.max",))
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                if mount.is_dir():
                    quotas += _quotas(mount, path, ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
                    break
    return min(quotas, default=None)


def _quotas(mount: Path, path: str, files: tuple[str, ...]) -> list[float]:
    """Quotas along ``path`` from the mount up; inside a container the path may not exist
    under the mount (its own cgroup is the mount's root), so the root itself is read too.
    """
    directory = mount / path.lstrip("/")
    within = [d for d in (directory, *directory.parents) if d == mount or mount in d.parents]
    return [quota for d in within if (quota := _quota(d, files)) is not None]


def _quota(directory: Path, files: tuple[str, ...]) -> float | None:
    """``cpu.max`` (v2: ``"<quota> <period>"``, ``"max <period>"`` for none), or
    ``cpu.cfs_quota_us`` (``-1`` for none) and ``cpu.cfs_period_us`` (v1).
    """
    try:
        text = " ".join((directory / name).read_text() for name in files)
        quota, period = (int(number) for number in text.split()[:2])
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole CPUs this process may use: the affinity mask, capped by the cgroup quota (a
    fraction rounds up: 1.5 CPUs of quota keep two workers busy half the time each).
    """
    cpus = affinity_cpus()
    quota = quota_cpus(root, proc_cgroup)
    return cpus if quota is None else min(cpus, max(1, math.ceil(quota)))


def default_workers(executor: str) -> int:
    """One worker process per usable CPU but the event loop's (at least one): niced workers
    alone do not protect the loop on a small machine (docs/benchmarks.md). One thread per CPU.
    """
    cpus = usable_cpus()
    return max(1, cpus - 1) if executor == "process" else cpus
