#!/bin/sh
# Run any command behind an emulated slow network: a private network namespace whose loopback is
# rate-limited by a token bucket, with Open MPI sent over TCP on that loopback (no shared memory), so
# every byte between ranks crosses the limited link. All ranks share the one link, like nodes behind
# one slow uplink. The host's real interfaces are never touched. Needs root (or CAP_NET_ADMIN).
#
#   scripts/emulate-link.sh 100mbit mpirun -n 8 .venv/bin/mpidecent run jobs/quickstart.toml
#   scripts/emulate-link.sh 1gbit --burst 1mb mpirun -n 8 .venv/bin/mpidecent run job.toml
#
# Afterwards it prints how many bytes crossed the link. Compare with the run's counted bytes, and model
# the run on the same link with: mpidecent report RUN.h5 --bandwidth 1e8 --shared-link
# Implementation: mpidecent/bench/netlink.py (also used by `mpidecent bench --sections network`).
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: scripts/emulate-link.sh RATE [--burst 512kb] COMMAND ..." >&2
    exit 2
fi
here=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
python=${MPIDECENT_PYTHON:-"$here/.venv/bin/python"}
rate=$1
shift
if [ "${1:-}" = "--burst" ] && [ "$#" -ge 3 ]; then
    burst=$2
    shift 2
    exec "$python" -m mpidecent.bench.netlink "$rate" --burst "$burst" -- "$@"
fi
exec "$python" -m mpidecent.bench.netlink "$rate" -- "$@"
