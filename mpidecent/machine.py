"""What this machine offers one rank: the memory available now, and how many ranks share it (and
``size_text``, how mpidecent writes a number of bytes in its messages).

Pure and per rank (no MPI, no collective): every rank calls ``memory_share`` on its own before the
first collective (``footprint.check_memory``). The available memory is ``MemAvailable`` of
``/proc/meminfo``, or the room left under a cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)
when that is smaller, as under Slurm or in a container. The ranks sharing the machine come from the
launcher's environment (Open MPI, MPICH/Hydra, Slurm), capped at the world size; without one, every
rank is taken to be on this machine (the world size), the conservative guess for ``mpirun -n N`` on
a workstation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63


@dataclass(frozen=True)
class MemoryShare:
    """This machine's available memory (bytes) and the ranks sharing it; ``per_rank`` in bytes."""

    available: int
    ranks: int

    @property
    def per_rank(self) -> int:
        return self.available // max(self.ranks, 1)


def memory_share(world_size: int, env: Mapping[str, str] | None = None) -> MemoryShare | None:
    """This rank's share of the machine's memory (every rank, pure); None where the available memory
    cannot be read (not Linux)."""
    available = available_memory()
    if available is None:
        return None
    return MemoryShare(
        available, ranks_on_this_machine(world_size, os.environ if env is None else env)
    )


def available_memory() -> int | None:
    """Bytes a new allocation can take now: MemAvailable, or the room under a cgroup limit if
    smaller."""
    found = _meminfo_available()
    room = _cgroup_room()
    if found is None:
        return room
    return found if room is None else min(found, room)


def ranks_on_this_machine(world_size: int, env: Mapping[str, str]) -> int:
    """The ranks of this launch on this machine, from the launcher's environment (the same number on
    every rank of a machine); the world size when no launcher says. Never more than
    ``world_size``."""
    for key in (
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "PMI_LOCAL_SIZE",
        "PALS_LOCAL_SIZE",
    ):
        value = _positive(env.get(key))
        if value:
            return min(value, world_size)
    slurm = _slurm_tasks_here(env)
    if slurm:
        return min(slurm, world_size)
    return max(world_size, 1)


def _positive(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _slurm_tasks_here(env: Mapping[str, str]) -> int | None:
    """Tasks of this Slurm step on this node: ``SLURM_STEP_TASKS_PER_NODE`` (srun; else
    ``SLURM_TASKS_PER_NODE``), e.g. "4(x2),3", at index ``SLURM_NODEID``."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    node = str(env.get("SLURM_NODEID") or "0").strip()
    if not spec or not node.isdigit():
        return None
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    index = int(node)
    return counts[index] if index < len(counts) and counts[index] > 0 else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return _NO_LIMIT
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_room() -> int | None:
    """The smallest room (limit − usage) over this process's memory cgroup and its ancestors, v2 or
    v1; None when no limit applies or none can be read."""
    rooms = []
    for folder, limit_name, usage_name in _cgroup_folders():
        limit, usage = (
            _read_int(os.path.join(folder, limit_name)),
            _read_int(os.path.join(folder, usage_name)),
        )
        if limit is not None and limit < _NO_LIMIT and usage is not None:
            rooms.append(max(limit - usage, 0))
    return min(rooms) if rooms else None


def _cgroup_folders() -> Iterator[tuple[str, str, str]]:
    """(folder, limit file, usage file) of this process's memory cgroup and each ancestor, where
    mounted (the cgroup's own path, and the mount root a container sees as its own cgroup)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        mounts: tuple[str, ...]
        if controllers == "":  # cgroup v2
            mounts, names = (
                ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"),
                ("memory.max", "memory.current"),
            )
        elif "memory" in controllers.split(","):
            mounts, names = (
                ("/sys/fs/cgroup/memory",),
                ("memory.limit_in_bytes", "memory.usage_in_bytes"),
            )
        else:
            continue
        for mount in mounts:
            relative = path.strip("/")
            while True:
                folder = os.path.join(mount, relative) if relative else mount
                if os.path.isdir(folder):
                    yield folder, *names
                if not relative:
                    break
                relative = os.path.dirname(relative)


def size_text(nbytes: float) -> str:
    """Bytes in binary units: ``512 B``, ``0.2 MiB``, ``5.6 GiB``, ``186 GiB`` (a decimal below
    10)."""
    units = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    if nbytes < 1024:
        return f"{int(nbytes)} B"
    value, unit = nbytes / 1024, units[0]
    for unit in units:
        if value < 1024 or unit == units[-1]:
            break
        value /= 1024
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
