"""Which Open MPI one-sided (osc) component serves a window.

MPI has no call for this, and Open MPI prints no selection message, yet it matters: with ``pt2pt``
or ``ucx`` over some transports, passive-target operations only progress when the target enters MPI,
and "asynchronous" gossip silently becomes synchronous. The probe follows pointers from the window
handle (only into readable memory, as listed by /proc/self/maps) and asks the dynamic linker
(``dladdr``) which ``mca_osc_<name>`` library or ``ompi_osc_<name>_*`` function the window's module
points into. It does not depend on the layout of Open MPI's structures; it answers "unknown" when
nothing matches and "n/a" for other MPI libraries.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter

from mpi4py import MPI

_PATTERN = re.compile(r"osc_([a-z0-9]+?)(?:_|\.so|\b)")


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _readable_spans() -> list[tuple[int, int]]:
    spans = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            address, perms = line.split()[:2]
            if perms.startswith("r"):
                low, high = (int(x, 16) for x in address.split("-"))
                spans.append((low, high))
    return spans


def _words(address: int, count: int, spans: list[tuple[int, int]]) -> list[int]:
    """``count`` 8-byte words at ``address`` if they lie in readable memory, else []."""
    if address % 8:
        return []
    for low, high in spans:
        if low <= address and address + 8 * count <= high:
            return list((ctypes.c_uint64 * count).from_address(address))
    return []


def window_component(win: MPI.Win) -> str:
    """Local, not collective: the osc component behind ``win`` on this rank."""
    if "Open MPI" not in MPI.Get_library_version():
        return "n/a (not Open MPI)"
    try:
        libc = ctypes.CDLL(None)
        spans = _readable_spans()
    except OSError:
        return "unknown"
    votes: Counter[str] = Counter()
    for pointer in _words(MPI._handleof(win), 128, spans):  # the fields of ompi_win_t
        for target in _words(pointer, 32, spans):  # e.g. the function table of the osc module
            info = _DlInfo()
            if target and libc.dladdr(ctypes.c_void_p(target), ctypes.byref(info)):
                text = f"{(info.dli_sname or b'').decode()} {(info.dli_fname or b'').decode()}"
                match = _PATTERN.search(text)
                if match and match.group(1) != "base":
                    votes[match.group(1)] += 1
    return votes.most_common(1)[0][0] if votes else "unknown"


def probe_osc_component(comm: MPI.Intracomm) -> str:
    """Collective over ``comm``: the component(s) serving a ``Win.Allocate`` window on it, e.g.
    "rdma"."""
    win = MPI.Win.Allocate(8, 1, comm=comm)
    try:
        mine = window_component(win)
    finally:
        win.Free()
    names = sorted(set(comm.allgather(mine)))
    return "/".join(names)
