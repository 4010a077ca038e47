#!/usr/bin/env bash
# Set up the development environment for mpidecent in ./.venv.
#
#   scripts/setup.sh                      # workstation / container (Debian: installs apt packages as root)
#   MPIDECENT_NO_APT=1 scripts/setup.sh   # cluster: MPI + parallel HDF5 come from `module load`
#
# What it does (each phase prints one line; pip output goes to a log shown only on failure):
#   1. system packages: Open MPI + parallel HDF5 (apt on Debian/Ubuntu, or only checked with MPIDECENT_NO_APT=1)
#   2. .venv with ${PYTHON:-python3} (>= 3.11)
#   3. pinned build tools (setuptools, Cython, numpy, ...)
#   4. mpi4py: PyPI's binary wheel (it carries an Open MPI and an MPICH build of mpi4py.MPI and dlopens
#      the system libmpi at import), kept only if a check shows that it loaded the libmpi of the MPI
#      behind $MPICC and that a 2-rank mpirun (allreduce + RMA window) works; otherwise built from
#      source against that MPI. MPIDECENT_MPI4PY=source (the default with MPIDECENT_NO_APT=1, i.e.
#      on clusters) always builds from source.
#   5. h5py built from source against the parallel HDF5 (HDF5_MPI=ON), in the background while
#   6. torch (CPU build only) and
#   7. the project's other dependencies are installed; then the project, editable, with `test` extras
#   8. loud verification (mpi4py's MPI library, h5py MPI support and a 2-rank driver="mpio" file,
#      torch CPU build, no nvidia packages)
# Source-built wheels and the mpi4py binary wheel are cached in
# ${XDG_CACHE_HOME:-~/.cache}/mpidecent/wheels/<key>/, so a new .venv on the same machine compiles
# nothing. A stamp in .venv makes a second run with nothing changed exit in well under a second.
#
# Environment knobs:
#   PYTHON=...            interpreter used to create .venv (default python3; must be >= 3.11)
#   MPICC=...             MPI C compiler wrapper (default: mpicc on PATH)
#   HDF5_DIR=...          parallel HDF5 prefix with include/ and lib/ (default: $HDF5_ROOT, then Debian's
#                         /usr/lib/<multiarch>/hdf5/openmpi)
#   MPIDECENT_MPI4PY=auto    mpi4py's binary wheel if it passes the check in step 4, else a source
#                            build (the default, except with MPIDECENT_NO_APT=1)
#   MPIDECENT_MPI4PY=binary  the binary wheel or stop with an error
#   MPIDECENT_MPI4PY=source  build mpi4py from source against $MPICC, no mpirun at set-up: the path
#                            for clusters, whose MPI is built for their interconnect and batch system
#                            (the default with MPIDECENT_NO_APT=1)
#   MPIDECENT_NO_APT=1    cluster: never call apt; only check that mpicc/mpirun and parallel HDF5 are
#                         present (module load); implies MPIDECENT_MPI4PY=source unless that is set
#   MPIDECENT_VERBOSE=1   stream pip/build output instead of logging it
#   MPIDECENT_FORCE=1     ignore the stamp and re-run every phase (cached wheels are still reused)
set -euo pipefail

# ---- pinned versions ---------------------------------------------------------------------------
# h5py 3.16.0 builds and passes h5py.get_config().mpi against Debian 12's HDF5 1.10.8 (openmpi
# flavour); it needs setuptools >= 77 (SPDX `license = "..."` in its pyproject.toml).
TORCH_VERSION=2.13.0
MPI4PY_VERSION=4.1.2
H5PY_VERSION=3.16.0
PIP_VERSION=26.3
# Build tools installed into the venv; mpi4py and h5py are built with --no-build-isolation against
# exactly these, so they are part of the wheel-cache key.
BUILD_DEPS=(setuptools==84.2.1 Cython==3.3.1 numpy==2.4.6 packaging==26.3 pkgconfig==1.6.0)
# C flags of the source builds, appended to Python's (-g -O3): no debug info and -O2 take a third off
# h5py's compile time (CPU 114 s instead of 176 s on the 2-core machine); the Cython wrappers only
# call into libhdf5/libmpi, which keep their own flags. A CFLAGS from the environment replaces them.
BUILD_CFLAGS="${CFLAGS--g0 -O2}"
APT_PACKAGES=(openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools pkg-config)

# ---- helpers -----------------------------------------------------------------------------------
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.mpidecent-setup-stamp"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/mpidecent"
PY="${PYTHON:-python3}"
MPICC="${MPICC:-mpicc}"
NO_APT="${MPIDECENT_NO_APT:-0}"
# mpi4py: binary wheel if verified (auto), except on clusters (MPIDECENT_NO_APT=1): source build.
if [[ "$NO_APT" == 1 ]]; then MPI4PY_MODE="${MPIDECENT_MPI4PY:-source}"; else MPI4PY_MODE="${MPIDECENT_MPI4PY:-auto}"; fi
VERBOSE="${MPIDECENT_VERBOSE:-0}"
T0=$(date +%s.%N)
LOG=""

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
phase() { printf '[setup %6ss] %s\n' "$(elapsed "$T0")" "$*"; }
die() {
    printf '\nsetup.sh: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '%s\n' "$line" | sed 's/^/  /' >&2; done
    [[ -n "$LOG" && ! -s "$LOG" ]] && rm -f "$LOG"
    exit 1
}
# Run a command; output goes to $LOG (or the terminal with MPIDECENT_VERBOSE=1). On failure show the
# end of the log and stop.
run() {
    if [[ "$VERBOSE" == 1 ]]; then
        "$@" || die "command failed: $*"
    elif ! "$@" >>"$LOG" 2>&1; then
        echo "---- last 40 lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
        die "command failed: $*" "full log: $LOG"
    fi
}
vpip() { run "$VPY" -m pip "$@"; }
run_soft() {  # like run, but only returns the failure (output stays in $LOG)
    if [[ "$VERBOSE" == 1 ]]; then "$@"; else "$@" >>"$LOG" 2>&1; fi
}
dist_version() {  # version of an installed distribution in the venv, empty if absent
    "$VPY" - "$1" 2>/dev/null <<'EOF' || true
import sys, importlib.metadata as md
try:
    print(md.version(sys.argv[1]))
except md.PackageNotFoundError:
    pass
EOF
}
dist_source() {  # URL the distribution was installed from (PEP 610 direct_url.json), empty if none
    "$VPY" - "$1" 2>/dev/null <<'EOF' || true
import sys, json, importlib.metadata as md
try:
    t = md.distribution(sys.argv[1]).read_text("direct_url.json")
    print(json.loads(t)["url"] if t else "")
except Exception:
    pass
EOF
}

find_hdf5_dir() {
    if [[ -n "${HDF5_DIR:-}" ]]; then echo "$HDF5_DIR"; return; fi
    if [[ -n "${HDF5_ROOT:-}" ]]; then echo "$HDF5_ROOT"; return; fi
    local d
    for d in /usr/lib/*/hdf5/openmpi; do
        [[ -f "$d/include/H5pubconf.h" ]] && { echo "$d"; return; }
    done
    echo ""
}
hdf5_version() {  # "1.10.8" from <dir>/include/H5pubconf.h, empty if not found
    sed -n 's/^#define H5_VERSION "\(.*\)"/\1/p' "$1/include/H5pubconf.h" 2>/dev/null | head -n 1
}
hdf5_is_parallel() { grep -q '^#define H5_HAVE_PARALLEL 1' "$1/include/H5pubconf.h" 2>/dev/null; }
mpi_version() {  # one line identifying the MPI behind $MPICC (Open MPI: --showme:version; MPICH: -v)
    "$MPICC" --showme:version 2>/dev/null || "$MPICC" -v 2>/dev/null | head -n 1 || true
}
mpi_libdirs() {  # library directories of the MPI behind $MPICC (Open MPI: --showme:libdirs; else -L flags)
    "$MPICC" --showme:libdirs 2>/dev/null && return
    local w
    for w in $("$MPICC" -show 2>/dev/null || "$MPICC" -compile_info 2>/dev/null || true); do
        case "$w" in -L*) echo "${w#-L}" ;; -Wl,-rpath,*) echo "${w#-Wl,-rpath,}" ;; esac
    done
}
mpirun_cmd() { command -v mpirun 2>/dev/null || command -v mpiexec 2>/dev/null || true; }
system_deps_present() {
    command -v "$MPICC" >/dev/null 2>&1 || return 1
    command -v mpirun >/dev/null 2>&1 || command -v srun >/dev/null 2>&1 || return 1
    local h; h="$(find_hdf5_dir)"
    [[ -n "$h" ]] && hdf5_is_parallel "$h" || return 1
    # On Debian/Ubuntu also require the exact packages (headers, pkg-config, h5dump) unless told
    # to leave the system alone.
    if [[ "$NO_APT" != 1 ]] && command -v dpkg >/dev/null 2>&1; then
        dpkg -s "${APT_PACKAGES[@]}" >/dev/null 2>&1 || return 1
    fi
    return 0
}

# The key of the wheel cache: anything that changes the compiled mpi4py/h5py binaries.
compute_key() {
    local hdir; hdir="$(find_hdf5_dir)"
    {
        "$PY" -c 'import sys, sysconfig; print(sys.version); print(sys.implementation.cache_tag, sysconfig.get_platform(), sys.abiflags)'
        echo "mpicc=$(command -v "$MPICC" || echo missing) $(mpi_version)"
        echo "hdf5=$hdir $(hdf5_version "$hdir") parallel=$(hdf5_is_parallel "$hdir" && echo 1 || echo 0)"
        echo "mpi4py=$MPI4PY_VERSION h5py=$H5PY_VERSION ${BUILD_DEPS[*]} cflags=$BUILD_CFLAGS"
    } 2>/dev/null | sha256sum | cut -c1-16
}
compute_stamp() {
    cat setup.cfg pyproject.toml scripts/setup.sh 2>/dev/null | sha256sum | cut -c1-64
    echo "key=$1 python=$PY mpi4py=$MPI4PY_MODE"
}

# ---- 0. fast path ------------------------------------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || die "Python interpreter '$PY' not found (set PYTHON=/path/to/python3.11+)"
case "$MPI4PY_MODE" in auto | binary | source) ;; *) die "MPIDECENT_MPI4PY=$MPI4PY_MODE: expected auto, binary or source" ;; esac
KEY="$(compute_key)"
STAMP_WANT="$(compute_stamp "$KEY")"
stamp_ok() {
    [[ "${MPIDECENT_FORCE:-0}" != 1 && -f "$STAMP" && -x "$VPY" ]] &&
        [[ "$(cat "$STAMP")" == "$STAMP_WANT" ]] && "$VPY" -c '' 2>/dev/null
}
if stamp_ok; then
    phase "environment up to date ($VENV)"
    exit 0
fi

# Serialise concurrent runs (e.g. two `make test` at once); the winner's work satisfies the loser.
mkdir -p "$CACHE_ROOT"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/setup-$(printf '%s' "$REPO" | sha256sum | cut -c1-12).lock"
    flock 9
    if stamp_ok; then phase "environment up to date ($VENV)"; exit 0; fi
fi
LOG="$(mktemp "${TMPDIR:-/tmp}/mpidecent-setup.XXXXXX.log")"
phase "setting up $VENV (log: $LOG)"

# ---- 1. system packages ------------------------------------------------------------------------
# Python >= 3.11 first: nothing else makes sense without it.
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PY is Python $("$PY" -c 'import sys; print(sys.version.split()[0])'); mpidecent needs >= 3.11" \
        "set PYTHON=/path/to/python3.11 (or newer) and re-run"

if system_deps_present; then
    phase "system: MPI ($(mpi_version)) and parallel HDF5 $(hdf5_version "$(find_hdf5_dir)") present"
elif [[ "$NO_APT" == 1 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "MPI and/or parallel HDF5 not found (need '$MPICC', mpirun or srun, and a parallel HDF5 with include/H5pubconf.h)" \
        "mpicc: $(command -v "$MPICC" || echo 'not on PATH')" \
        "HDF5_DIR: $(find_hdf5_dir || true) ${HDF5_DIR:+(from HDF5_DIR)}" \
        "On a cluster:  module load <mpi module> <parallel hdf5 module>" \
        "               export MPICC=\$(which mpicc) HDF5_DIR=<hdf5 prefix from the module>" \
        "               MPIDECENT_NO_APT=1 scripts/setup.sh      (see docs/cluster-setup.md)" \
        "On Debian/Ubuntu (root): apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}"
elif [[ "$(id -u)" != 0 ]]; then
    die "Open MPI / parallel HDF5 packages missing and not running as root; install them with:" \
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends ${APT_PACKAGES[*]}" \
        "or, on a cluster, load modules instead and re-run with MPIDECENT_NO_APT=1:" \
        "module load <mpi module> <parallel hdf5 module>; MPIDECENT_NO_APT=1 scripts/setup.sh" \
        "(see docs/cluster-setup.md)"
else
    pkgs=("${APT_PACKAGES[@]}")
    # mpicc runs `gcc`; libopenmpi-dev only pulls gfortran-12/gcc-12, not the `gcc` symlink package.
    command -v gcc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
    phase "system: apt-get install ${pkgs[*]}"
    run env DEBIAN_FRONTEND=noninteractive apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
    system_deps_present || die "packages installed but mpicc/parallel HDF5 still not found"
    KEY="$(compute_key)"   # the MPI/HDF5 versions are known only now
    STAMP_WANT="$(compute_stamp "$KEY")"
fi
HDF5_DIR="$(find_hdf5_dir)"
export HDF5_DIR

# ---- 2. virtual environment --------------------------------------------------------------------
rm -f "$STAMP"   # from here on the venv is being changed; an interrupted run must not look done
want_pyver="$("$PY" -c 'import sys; print(sys.version)')"
if [[ -x "$VPY" ]] && [[ "$("$VPY" -c 'import sys; print(sys.version)' 2>/dev/null)" == "$want_pyver" ]]; then
    phase "venv: reusing $VENV"
else
    phase "venv: creating $VENV with $PY ($(echo "$want_pyver" | head -n 1 | cut -d' ' -f1))"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >>"$LOG" 2>&1; then
        # Debian's system python ships venv/ensurepip and the C headers in separate packages.
        if [[ "$NO_APT" != 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            pyver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            phase "venv: '$PY -m venv' failed; apt-get install python3-venv python$pyver-venv python3-dev"
            rm -rf "$VENV"
            run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                python3-venv "python$pyver-venv" python3-dev
            run "$PY" -m venv "$VENV"
        else
            rm -rf "$VENV"
            die "'$PY -m venv' failed (see $LOG)" \
                "Debian/Ubuntu: apt-get install -y python3-venv python3-dev; elsewhere use a Python with venv"
        fi
    fi
fi
# Building C extensions needs Python.h.
pyinc="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if [[ ! -f "$pyinc/Python.h" ]]; then
    if [[ "$NO_APT" != 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        phase "venv: Python.h missing; apt-get install python3-dev"
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-dev
    fi
    [[ -f "$pyinc/Python.h" ]] || die "Python headers ($pyinc/Python.h) missing; install python3-dev (or use a Python built with headers)"
fi

# ---- 3. build tools ----------------------------------------------------------------------------
if [[ "$(dist_version pip)" != "$PIP_VERSION" ]]; then
    vpip install -q "pip==$PIP_VERSION"
fi
missing_build=()
for req in "${BUILD_DEPS[@]}"; do
    [[ "$(dist_version "${req%%==*}")" == "${req#*==}" ]] || missing_build+=("$req")
done
if ((${#missing_build[@]})); then
    phase "build tools: installing ${missing_build[*]}"
    vpip install -q "${BUILD_DEPS[@]}"
else
    phase "build tools: ok"
fi

# ---- wheel cache -------------------------------------------------------------------------------
# pip's own wheel cache is not used for the source builds (--no-cache-dir): its key ignores MPICC/
# HDF5_MPI/HDF5_DIR, so it could hand a serial h5py to a parallel build or vice versa. Our key hashes
# python, MPI, HDF5 and all pins (see compute_key). Layout of $WHEELS:
#   mpi4py-*-linux_*.whl            mpi4py built from source against $MPICC
#   pypi/mpi4py-*-manylinux*.whl    PyPI's binary mpi4py wheel (downloaded once)
#   h5py-<mpi4py kind>/h5py-*.whl   h5py built against the parallel HDF5 and that mpi4py (source|binary)
WHEELS="$CACHE_ROOT/wheels/$KEY"
mkdir -p "$WHEELS"
{
    echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])')"
    echo "mpi: $(command -v "$MPICC") $(mpi_version)"
    echo "hdf5: $HDF5_DIR $(hdf5_version "$HDF5_DIR")"
    echo "pins: mpi4py==$MPI4PY_VERSION h5py==$H5PY_VERSION ${BUILD_DEPS[*]}"
    echo "cflags: $BUILD_CFLAGS"
} >"$WHEELS/key.txt"

cached_wheel() {  # cached_wheel DIR NAME VERSION: path of DIR/NAME-VERSION-*.whl, empty if none
    ls "$1/$2-$3"-*.whl 2>/dev/null | head -n 1 || true
}
# build_wheel DIR NAME VERSION TMPDIR [ENV=VALUE ...]: build NAME==VERSION from its sdist in TMPDIR
# (inside DIR) and move the wheel into DIR.
build_wheel() {
    local dir="$1" name="$2" version="$3" tmp="$4"; shift 4
    # Compile the extension modules in parallel (setuptools build_ext --parallel, set through
    # distutils' DIST_EXTRA_CONFIG hook; a user-provided DIST_EXTRA_CONFIG wins).
    local jobs_cfg="$tmp/parallel.cfg"
    printf '[build_ext]\nparallel = %s\n' "$(nproc 2>/dev/null || echo 2)" >"$jobs_cfg"
    run env DIST_EXTRA_CONFIG="${DIST_EXTRA_CONFIG:-$jobs_cfg}" CFLAGS="$BUILD_CFLAGS" "$@" "$VPY" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir \
        --no-binary="$name" "$name==$version" -w "$tmp"
    local whl; whl="$(ls "$tmp/$name-$version"-*.whl | head -n 1)"
    mv "$whl" "$dir/"            # atomic: same filesystem
    rm -rf "$tmp"
}
# install_wheel NAME VERSION WHEEL WHAT: install WHEEL unless that exact file is what is installed.
install_wheel() {
    if [[ "$(dist_version "$1")" == "$2" && "$(dist_source "$1")" == "file://$3" ]]; then
        phase "$1: $2 ($4) already installed"
    else
        phase "$1: installing $(basename "$3") ($4)"
        vpip install -q --no-deps --force-reinstall "$3"
    fi
}

# A background build (h5py) runs in its own process group; stop it if this script stops early.
BG_PID=""
BG_TMP=""
cleanup() {
    if [[ -n "$BG_PID" ]]; then
        kill -TERM -- "-$BG_PID" 2>/dev/null || true
        wait "$BG_PID" 2>/dev/null || true
        rm -rf "$BG_TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 4. mpi4py -----------------------------------------------------------------------------------
# check_mpi4py WITH_MPIRUN: prints one line per finding; fails unless the installed mpi4py.MPI uses
# the libmpi of the MPI behind $MPICC (same vendor and version, same file on disk) and, with
# WITH_MPIRUN=1, a 2-rank mpirun runs an allreduce and an MPI-3 RMA window (Win.Allocate +
# Lock/Put/Unlock, what the asynchronous gossip uses).
check_mpi4py() {
    local out rc=0
    # shellcheck disable=SC2046
    out="$("$VPY" - "$(mpi_version)" $(mpi_libdirs) 2>&1 <<'EOF'
import glob, os, re, sys
want, libdirs = sys.argv[1], sys.argv[2:]
from mpi4py import MPI
lib = MPI.Get_library_version().replace("\0", "").strip()
print("MPI library:", lib.splitlines()[0])
print("mpi4py.MPI:", os.path.basename(MPI.__file__))
pat = re.compile(r"^lib(mpi|mpich)[^/]*\.so")
mapped = set()
with open("/proc/self/maps") as f:
    for line in f:
        path = line.split()[-1]
        if pat.match(os.path.basename(path)):
            mapped.add(os.path.realpath(path))
print("libmpi loaded:", " ".join(sorted(mapped)) or "none")
expected = {os.path.realpath(p) for d in libdirs for p in glob.glob(os.path.join(d, "lib*.so*"))
            if pat.match(os.path.basename(p))}
errors = []
m = re.search(r"(Open MPI|MPICH|Intel)\D*(\d+\.\d+(?:\.\d+)?)", want)
if not m:
    errors.append(f"cannot tell vendor/version of {want!r}")
elif m.group(1) not in lib or m.group(2) not in lib:
    errors.append(f"mpi4py uses {lib.splitlines()[0]!r}, not the {m.group(1)} {m.group(2)} behind mpicc")
if not mapped & expected:
    errors.append(f"the loaded libmpi is not one in mpicc's library dirs ({' '.join(libdirs) or 'unknown'})")
for e in errors:
    print("ERROR:", e)
sys.exit(1 if errors else 0)
EOF
)" || rc=1
    if [[ "$rc" == 0 && "$1" == 1 ]]; then
        local mpirun; mpirun="$(mpirun_cmd)"
        if [[ -z "$mpirun" ]]; then
            out+=$'\n'"ERROR: no mpirun/mpiexec on PATH to test 2 ranks"; rc=1
        else
            # mpienv.sh: run-as-root and oversubscription switches for Open MPI on workstations.
            out+=$'\n'"$( (. "$REPO/scripts/mpienv.sh" && timeout 180 "$mpirun" -n 2 "$VPY" -c '
from mpi4py import MPI
import array
c = MPI.COMM_WORLD
s = c.allreduce(c.rank + 1)
w = MPI.Win.Allocate(8, 8, comm=c)
w.Lock(1 - c.rank); w.Put(array.array("d", [float(c.rank + 1)]), 1 - c.rank); w.Unlock(1 - c.rank)
c.Barrier()
w.Lock(c.rank); got = memoryview(w.tomemory()).cast("d")[0]; w.Unlock(c.rank)
c.Barrier(); w.Free()
assert c.size == 2 and s == 3 and got == 2 - c.rank, (c.size, s, got)
if c.rank == 0:
    print("mpirun -n 2: allreduce and RMA window ok")
') 2>&1)" || { rc=1; out+=$'\n'"ERROR: 2-rank mpirun test failed"; }
        fi
    fi
    printf '%s\n' "$out"
    return "$rc"
}

MPI4PY_KIND=""
if [[ "$MPI4PY_MODE" != source ]]; then
    pypi_dir="$WHEELS/pypi"
    whl="$(cached_wheel "$pypi_dir" mpi4py "$MPI4PY_VERSION")"
    if [[ -z "$whl" ]]; then
        mkdir -p "$pypi_dir"
        phase "mpi4py: downloading the $MPI4PY_VERSION binary wheel"
        if run_soft "$VPY" -m pip download -q --no-deps --only-binary=mpi4py "mpi4py==$MPI4PY_VERSION" -d "$pypi_dir"; then
            whl="$(cached_wheel "$pypi_dir" mpi4py "$MPI4PY_VERSION")"
        fi
    fi
    if [[ -z "$whl" ]]; then
        why="no binary wheel of mpi4py $MPI4PY_VERSION for this platform/python"
    else
        install_wheel mpi4py "$MPI4PY_VERSION" "$whl" "PyPI binary wheel"
        phase "mpi4py: checking that the binary wheel loads the system MPI ($(mpi_version)) and runs 2 ranks"
        if check_out="$(check_mpi4py 1)"; then
            echo "$check_out" | sed 's/^/    /'
            MPI4PY_KIND=binary
        else
            why="$check_out"
        fi
    fi
    if [[ -z "$MPI4PY_KIND" ]]; then
        [[ "$MPI4PY_MODE" == binary ]] && die "MPIDECENT_MPI4PY=binary, but the binary mpi4py wheel is not usable here:" \
            "$why" "unset MPIDECENT_MPI4PY to fall back to a source build, or set MPIDECENT_MPI4PY=source"
        phase "mpi4py: binary wheel rejected, falling back to a source build:"
        echo "$why" | sed 's/^/    /'
    fi
fi
if [[ -z "$MPI4PY_KIND" ]]; then
    whl="$(cached_wheel "$WHEELS" mpi4py "$MPI4PY_VERSION")"
    if [[ -z "$whl" ]]; then
        phase "mpi4py: building $MPI4PY_VERSION from source against $MPICC (takes a few minutes; cache: $WHEELS)"
        build_wheel "$WHEELS" mpi4py "$MPI4PY_VERSION" "$(mktemp -d "$WHEELS/.build.XXXXXX")" "MPICC=$MPICC"
        whl="$(cached_wheel "$WHEELS" mpi4py "$MPI4PY_VERSION")"
    fi
    install_wheel mpi4py "$MPI4PY_VERSION" "$whl" "source build"
    MPI4PY_KIND=source
fi

# ---- 5. h5py (in the background) ----------------------------------------------------------------
# h5py's build imports mpi4py (HDF5_MPI=ON) and compiles against its Cython declarations, hence after
# mpi4py and in a cache directory per mpi4py kind. It only reads the venv, so torch and the other
# dependencies are installed meanwhile.
H5DIR="$WHEELS/h5py-$MPI4PY_KIND"
mkdir -p "$H5DIR"
H5LOG=""
if [[ -z "$(cached_wheel "$H5DIR" h5py "$H5PY_VERSION")" ]]; then
    H5LOG="${LOG%.log}.h5py.log"
    BG_TMP="$(mktemp -d "$H5DIR/.build.XXXXXX")"
    phase "h5py: building $H5PY_VERSION from source in the background (takes a few minutes; log: $H5LOG; cache: $H5DIR)"
    set -m   # own process group, so that cleanup() can stop pip and its compilers
    (
        LOG="$H5LOG" VERBOSE=0
        build_wheel "$H5DIR" h5py "$H5PY_VERSION" "$BG_TMP" HDF5_MPI=ON "CC=$MPICC" "HDF5_DIR=$HDF5_DIR"
    ) >>"$H5LOG" 2>&1 &
    BG_PID=$!
    set +m
fi

# ---- 6. torch (CPU build only) -----------------------------------------------------------------
# Plain `torch` from PyPI is the CUDA build and drags in several GB of nvidia-* packages, so the
# version is always pinned with the +cpu local label: it can only resolve to a CPU wheel.
#  - a local wheel in a find-links dir (PIP_FIND_LINKS, e.g. /opt/wheels): pip picks it up from
#    there (no download);
#  - otherwise: PyTorch's own CPU index, which is the only place +cpu wheels are published.
TORCH_WANT="$TORCH_VERSION+cpu"
if [[ "$(dist_version torch)" == "$TORCH_WANT" ]]; then
    phase "torch: $TORCH_WANT already installed"
else
    local_wheel=""
    for d in ${PIP_FIND_LINKS:-} $("$VPY" -m pip config get global.find-links 2>/dev/null || true); do
        for w in "$d"/torch-"$TORCH_WANT"-*.whl; do
            [[ -f "$w" ]] && local_wheel="$w" && break 2
        done
    done
    if [[ -n "$local_wheel" ]]; then
        phase "torch: installing $TORCH_WANT from local wheel $local_wheel"
        vpip install -q "torch==$TORCH_WANT"
    else
        phase "torch: installing $TORCH_WANT from https://download.pytorch.org/whl/cpu"
        vpip install -q "torch==$TORCH_WANT" --index-url https://download.pytorch.org/whl/cpu
    fi
fi

# ---- 7. the project's other dependencies, then the project ---------------------------------------
# While h5py builds: setup.cfg's install_requires and `test` extras except mpi4py/h5py/torch, with
# numpy held at the pin the h5py build is compiling against.
mapfile -t other_deps < <("$VPY" - <<'EOF'
import configparser, re
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["test"].splitlines()
for line in lines:
    req = line.split("#", 1)[0].strip()
    name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() if req else ""
    if name and name not in ("mpi4py", "h5py", "torch", "numpy"):
        print(req)
EOF
)
phase "dependencies: installing ${#other_deps[@]} packages from setup.cfg (numpy held at ${BUILD_DEPS[2]#*==})"
vpip install -q "${BUILD_DEPS[2]}" "torch==$TORCH_WANT" "mpi4py==$MPI4PY_VERSION" "${other_deps[@]}"

if [[ -n "$BG_PID" ]]; then
    phase "h5py: waiting for the background build"
    if ! wait "$BG_PID"; then
        BG_PID=""
        echo "---- last 40 lines of $H5LOG ----" >&2
        tail -n 40 "$H5LOG" >&2
        die "h5py build failed" "full log: $H5LOG"
    fi
    BG_PID=""
    [[ "$VERBOSE" == 1 ]] && cat "$H5LOG"
    rm -f "$H5LOG"
fi
install_wheel h5py "$H5PY_VERSION" "$(cached_wheel "$H5DIR" h5py "$H5PY_VERSION")" "source build against mpi4py $MPI4PY_KIND"

# numpy/mpi4py/h5py/torch and the rest of install_requires are already satisfied, so pip leaves them
# alone (no --upgrade); step 8 checks that it really did.
phase "project: pip install -e '.[test]'"
vpip install -q -e '.[test]'

# ---- 8. verify ---------------------------------------------------------------------------------
phase "verify: mpi4py/h5py/torch"
verify_out="$("$VPY" - "$MPI4PY_VERSION" "$H5PY_VERSION" "$TORCH_WANT" "$(hdf5_version "$HDF5_DIR")" 2>&1 <<'EOF'
import sys, importlib.metadata as md
want_mpi4py, want_h5py, want_torch, want_hdf5 = sys.argv[1:5]
errors = []
import h5py
cfg = h5py.get_config()
print(f"h5py {h5py.__version__}: HDF5 {h5py.version.hdf5_version}, mpi={cfg.mpi}")
if not cfg.mpi:
    errors.append("h5py was built WITHOUT MPI support (h5py.get_config().mpi is False)")
if want_hdf5 and h5py.version.hdf5_version != want_hdf5:
    errors.append(f"h5py uses HDF5 {h5py.version.hdf5_version}, expected the system's {want_hdf5}")
import torch, numpy
print(f"torch {torch.__version__}, numpy {numpy.__version__}")
for name, want in (("mpi4py", want_mpi4py), ("h5py", want_h5py), ("torch", want_torch)):
    if md.version(name) != want:
        errors.append(f"{name} is {md.version(name)}, expected {want} (did pip replace it?)")
nvidia = sorted(d.metadata["Name"] for d in md.distributions()
                if d.metadata["Name"].lower().startswith(("nvidia", "triton")))
if nvidia:
    errors.append("CUDA packages installed (a CUDA torch was pulled?): " + ", ".join(nvidia))
if torch.cuda.is_available() or torch.version.cuda:
    errors.append(f"torch is a CUDA build (torch.version.cuda={torch.version.cuda})")
for e in errors:
    print("ERROR:", e)
sys.exit(1 if errors else 0)
EOF
)" || die "verification failed:" "$verify_out" "log: $LOG"
# mpi4py: the MPI library behind $MPICC (re-checked: pip may have replaced mpi4py in step 7).
mpi_out="$(check_mpi4py 0)" || die "mpi4py does not use the MPI library behind $MPICC:" "$mpi_out" "$verify_out"
verify_out="$(echo "$mpi_out" | sed -n 's/^MPI library: /MPI library: /p') (mpi4py $MPI4PY_KIND)"$'\n'"$verify_out"
# Parallel HDF5 through h5py on 2 ranks (skipped with MPIDECENT_MPI4PY=source: no mpirun at set-up
# on clusters; tests/mpi covers it there).
if [[ "$MPI4PY_MODE" != source ]]; then
    h5tmp="$(mktemp -d "${TMPDIR:-/tmp}/mpidecent-setup-h5.XXXXXX")"
    verify_out+=$'\n'"$( (. "$REPO/scripts/mpienv.sh" && cd "$h5tmp" && timeout 180 "$(mpirun_cmd)" -n 2 "$VPY" -c '
from mpi4py import MPI
import h5py
c = MPI.COMM_WORLD
with h5py.File("t.h5", "w", driver="mpio", comm=c) as f:
    d = f.create_dataset("x", (c.size,), dtype="i8")
    d[c.rank] = c.rank + 1
with h5py.File("t.h5", "r", driver="mpio", comm=c) as f:
    assert list(f["x"][()]) == list(range(1, c.size + 1))
if c.rank == 0:
    print("mpirun -n 2: h5py driver=\"mpio\" write/read ok")
') 2>&1)" || { rm -rf "$h5tmp"; die "2-rank h5py driver=\"mpio\" test failed:" "$verify_out"; }
    rm -rf "$h5tmp"
fi
echo "$verify_out" | sed 's/^/    /'

echo "$STAMP_WANT" >"$STAMP"
rm -f "$LOG"
phase "done in $(elapsed "$T0")s"
