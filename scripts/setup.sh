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
#   4. torch, CPU build only
#   5. mpi4py built from source against the system MPI      } wheels cached in
#   6. h5py built from source against the parallel HDF5     } ${XDG_CACHE_HOME:-~/.cache}/mpidecent/wheels/<key>/
#   7. the project, editable, with the `test` extras
#   8. loud verification (h5py MPI support, Open MPI library, torch CPU build, no nvidia packages)
# A stamp in .venv makes a second run with nothing changed exit in well under a second.
#
# Environment knobs:
#   PYTHON=...            interpreter used to create .venv (default python3; must be >= 3.11)
#   MPICC=...             MPI C compiler wrapper (default: mpicc on PATH)
#   HDF5_DIR=...          parallel HDF5 prefix with include/ and lib/ (default: $HDF5_ROOT, then Debian's
#                         /usr/lib/<multiarch>/hdf5/openmpi)
#   MPIDECENT_NO_APT=1    never call apt; only check that mpicc/mpirun and parallel HDF5 are present
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
VERBOSE="${MPIDECENT_VERBOSE:-0}"
T0=$(date +%s.%N)
LOG=""

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
phase() { printf '[setup %6ss] %s\n' "$(elapsed "$T0")" "$*"; }
die() {
    printf '\nsetup.sh: ERROR: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
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
        echo "mpi4py=$MPI4PY_VERSION h5py=$H5PY_VERSION ${BUILD_DEPS[*]}"
    } 2>/dev/null | sha256sum | cut -c1-16
}
compute_stamp() {
    cat setup.cfg pyproject.toml scripts/setup.sh 2>/dev/null | sha256sum | cut -c1-64
    echo "key=$1 python=$PY"
}

# ---- 0. fast path ------------------------------------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || die "Python interpreter '$PY' not found (set PYTHON=/path/to/python3.11+)"
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

# ---- 4. torch (CPU build only) -----------------------------------------------------------------
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

# ---- 5./6. mpi4py and h5py from source, via the wheel cache ------------------------------------
# pip's own wheel cache is not used (--no-cache-dir): its key ignores MPICC/HDF5_MPI/HDF5_DIR, so it
# could hand a serial h5py to a parallel build or vice versa. Our key hashes python, MPI, HDF5 and
# all pins (see compute_key).
WHEELS="$CACHE_ROOT/wheels/$KEY"
mkdir -p "$WHEELS"
{
    echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])')"
    echo "mpi: $(command -v "$MPICC") $(mpi_version)"
    echo "hdf5: $HDF5_DIR $(hdf5_version "$HDF5_DIR")"
    echo "pins: mpi4py==$MPI4PY_VERSION h5py==$H5PY_VERSION ${BUILD_DEPS[*]}"
} >"$WHEELS/key.txt"

# build_cached NAME VERSION [ENV=VALUE ...]: make sure $WHEELS holds NAME-VERSION-*.whl, then
# install it into the venv unless that exact file is what is installed.
build_cached() {
    local name="$1" version="$2"; shift 2
    local whl
    whl="$(ls "$WHEELS/$name-$version"-*.whl 2>/dev/null | head -n 1 || true)"
    if [[ -z "$whl" ]]; then
        phase "$name: building $version from source (takes a few minutes; cache: $WHEELS)"
        local tmp; tmp="$(mktemp -d "$WHEELS/.build.XXXXXX")"
        # Compile the extension modules in parallel (setuptools build_ext --parallel, set through
        # distutils' DIST_EXTRA_CONFIG hook; a user-provided DIST_EXTRA_CONFIG wins).
        local jobs_cfg="$tmp/parallel.cfg"
        printf '[build_ext]\nparallel = %s\n' "$(nproc 2>/dev/null || echo 2)" >"$jobs_cfg"
        run env DIST_EXTRA_CONFIG="${DIST_EXTRA_CONFIG:-$jobs_cfg}" "$@" "$VPY" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir \
            --no-binary="$name" "$name==$version" -w "$tmp"
        whl="$(ls "$tmp/$name-$version"-*.whl | head -n 1)"
        mv "$whl" "$WHEELS/"            # atomic: same filesystem
        rm -rf "$tmp"
        whl="$WHEELS/$(basename "$whl")"
    fi
    if [[ "$(dist_version "$name")" == "$version" && "$(dist_source "$name")" == "file://$whl" ]]; then
        phase "$name: $version (source build) already installed"
    else
        phase "$name: installing $(basename "$whl") from cache"
        vpip install -q --no-deps --force-reinstall "$whl"
    fi
}
build_cached mpi4py "$MPI4PY_VERSION" "MPICC=$MPICC"
# h5py's build imports mpi4py (HDF5_MPI=ON), hence after mpi4py is installed.
build_cached h5py "$H5PY_VERSION" HDF5_MPI=ON "CC=$MPICC" "HDF5_DIR=$HDF5_DIR"

# ---- 7. the project ----------------------------------------------------------------------------
# numpy/mpi4py/h5py/torch from install_requires are already satisfied, so pip leaves them alone
# (no --upgrade); step 8 checks that it really did.
phase "project: pip install -e '.[test]'"
vpip install -q -e '.[test]'

# ---- 8. verify ---------------------------------------------------------------------------------
phase "verify: mpi4py/h5py/torch"
verify_out="$("$VPY" - "$MPI4PY_VERSION" "$H5PY_VERSION" "$TORCH_WANT" "$(hdf5_version "$HDF5_DIR")" 2>&1 <<'EOF'
import sys, importlib.metadata as md
want_mpi4py, want_h5py, want_torch, want_hdf5 = sys.argv[1:5]
errors = []
from mpi4py import MPI
lib = MPI.Get_library_version().replace("\0", "").strip().splitlines()[0]
print("MPI library:", lib)
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
if [[ "$(echo "$verify_out" | sed -n 's/^MPI library: //p')" != *"$(mpi_version | sed -n 's/.*\(Open MPI\|MPICH\|Intel\).*/\1/p')"* ]]; then
    die "mpi4py does not use the MPI library behind $MPICC:" "$verify_out"
fi
echo "$verify_out" | sed 's/^/    /'

echo "$STAMP_WANT" >"$STAMP"
rm -f "$LOG"
phase "done in $(elapsed "$T0")s"
