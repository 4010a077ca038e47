"""An emulated slow network on one machine: a private network namespace whose loopback is
rate-limited.

``command(argv, link)`` wraps any command (typically ``mpirun -n 8 mpidecent run job.toml``) so that
it runs in a new network namespace (``unshare --net``: the host's real interfaces are never touched,
and the namespace disappears with the command) whose loopback carries a token-bucket filter (``tc
qdisc add dev lo root tbf rate R burst B latency L``), with Open MPI forced onto TCP over that
loopback (``pml ob1``, ``btl tcp,self``: no shared memory), so every byte between ranks crosses the
limited link. All ranks share the one link, like nodes behind one slow uplink: an interval's bytes
of all ranks together take 8 · bytes / R seconds, not each rank's own bytes.

Needs root (or CAP_NET_ADMIN in a user namespace) and ``tc``/``ip`` from iproute2; ``probe()`` says
in one line why not where it cannot run. ``netem`` (delay, loss) is not used: these kernels lack it.

Command line (``scripts/emulate-link.sh`` calls this)::

    python -m mpidecent.bench.netlink 100mbit -- mpirun -n 8 mpidecent run jobs/quickstart.toml

prints, after the command, the bytes that crossed the link (the loopback's transmit counter).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# Open MPI over TCP on the namespace's loopback only. pml ob1 (not ucx, which would pick shared
# memory), btl tcp,self (no vader), and loopback included for both the byte transfer and the
# launcher's out-of-band channel (Open MPI excludes lo by default).
OMPI_OVER_LOOPBACK = {
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_btl": "tcp,self",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
}
_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}

# Runs inside the namespace: $1 rate, $2 burst, $3 latency, $4 file for the loopback's byte count,
# then argv.
_INSIDE = r"""set -e
ip link set lo up
tc qdisc add dev lo root tbf rate "$1" burst "$2" latency "$3"
# /proc/net/dev belongs to this namespace (/sys/class/net would show the host's): lo's transmitted
# bytes
tx() { awk '{ sub(/^ *lo:/, "lo: ") } $1 == "lo:" { print $10 }' /proc/net/dev; }
before=$(tx)
out="$4"
shift 4
set +e
"$@"
status=$?
after=$(tx)
[ -n "$out" ] && echo "$((after - before))" > "$out"
exit "$status"
"""


@dataclass(frozen=True)
class Link:
    """A token bucket on the namespace's loopback: ``rate`` as tc spells it (``100mbit``,
    ``1gbit``), ``burst`` in bytes as tc spells it (``512kb``: what may pass at once), ``latency``
    the longest a packet may wait in the bucket's queue (``50ms``; a queue bound, not a delay: netem
    is absent)."""

    rate: str = "100mbit"
    burst: str = "512kb"
    latency: str = "50ms"

    @property
    def bandwidth_bps(self) -> float:
        return parse_rate(self.rate)

    def describe(self) -> str:
        from mpidecent.comm.linkmodel import format_rate

        return f"{format_rate(self.bandwidth_bps)} shared link (tbf burst {self.burst})"


def parse_rate(rate: str) -> float:
    """``100mbit`` → 1e8 bits per second (tc's bit units; bytes units such as ``mbps`` are
    refused)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?bit)\s*", rate.lower())
    if not match:
        raise ValueError(
            f"link rate {rate!r}: give bits per second as tc spells them, e.g. 100mbit or 1gbit"
        )
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value <= 0:
        raise ValueError(f"link rate {rate!r} must be > 0")
    return value


def probe() -> str | None:
    """None if an emulated link can be made here, else one line saying why not (run as a plain
    process)."""
    for tool in ("unshare", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (util-linux / iproute2): cannot emulate a slow link here"
    try:
        proc = subprocess.run(
            ["unshare", "--net", "sh", "-c", _INSIDE, "sh", "1gbit", "512kb", "50ms", "", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return (
            f"cannot start a network namespace ({err}): an emulated link needs root or "
            "CAP_NET_ADMIN"
        )
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return (
            f"cannot make a rate-limited network namespace ({why}): an emulated link needs root "
            "or CAP_NET_ADMIN"
        )
    return None


def command(argv: Sequence[str], link: Link, bytes_file: str = "") -> list[str]:
    """``argv`` run in a fresh network namespace behind ``link``; the loopback's transmitted bytes
    during the command are written to ``bytes_file`` if given. Run it with ``environment()``."""
    parse_rate(link.rate)
    return [
        "unshare",
        "--net",
        "sh",
        "-c",
        _INSIDE,
        "sh",
        link.rate,
        link.burst,
        link.latency,
        bytes_file,
        *argv,
    ]


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's) with Open MPI sent over the namespace's loopback."""
    return {**(os.environ if base is None else base), **OMPI_OVER_LOOPBACK}


def main(argv: list[str]) -> int:
    usage = (
        "usage: emulate-link RATE [--burst 512kb] -- COMMAND ... "
        "(e.g. emulate-link 100mbit -- mpirun -n 8 mpidecent run job.toml)"
    )
    if "--" not in argv or argv.index("--") == 0 or argv.index("--") == len(argv) - 1:
        print(usage, file=sys.stderr)
        return 2
    split = argv.index("--")
    options, cmd = argv[:split], argv[split + 1 :]
    burst = "512kb"
    if len(options) == 3 and options[1] == "--burst":
        burst = options[2]
    elif len(options) != 1:
        print(usage, file=sys.stderr)
        return 2
    link = Link(options[0], burst)
    try:
        _ = link.bandwidth_bps  # parses the rate: a bad one raises here, before any namespace
    except ValueError as err:
        print(f"mpidecent: error: {err}", file=sys.stderr)
        return 2
    reason = probe()
    if reason:
        print(f"mpidecent: error: {reason}", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.NamedTemporaryFile("r", prefix="mpidecent-link-", suffix=".bytes") as counter:
        status = subprocess.run(command(cmd, link, counter.name), env=environment()).returncode
        crossed = counter.read().strip()
    print(
        f"emulated link: {link.describe()}; {int(crossed):,} bytes crossed it"
        if crossed.isdigit()
        else f"emulated link: {link.describe()}",
        file=sys.stderr,
    )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
