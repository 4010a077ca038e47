# shellcheck shell=sh
# Open MPI settings for running mpidecent on a workstation or in a container.
#
#   . scripts/mpienv.sh && mpirun -n 8 .venv/bin/mpidecent run jobs/quickstart.toml
#
# Sourced by the Makefile (/bin/sh, so POSIX sh only) and scripts/run_tests.sh. It only exports
# OMPI_* variables; MPICH and other MPIs ignore them. Clusters should not source this file: the
# batch system provides slots, and running as root / oversubscribing is not wanted there.
#
# Each setting below was measured to be needed on the reference machine (Debian 12 container,
# Open MPI 4.1.4, 2 cores, root), with the message that appears without it. Checks run
# (scripts/setup.sh environment): 8-rank Sendrecv of 8 MiB, 4/8-rank MPI.Win.Allocate +
# Lock/Put/Unlock, 4/8-rank h5py.File(..., driver='mpio').
#
# Measured NOT needed there, hence not set (add them locally if your machine shows the symptom):
#   OMPI_MCA_btl_vader_single_copy_mechanism=none  - only if shared-memory transfers fail with
#       "Read -1, expected <n>, errno = 1" (CMA blocked: ptrace restricted, e.g. Docker's default
#       seccomp profile or kernel.yama.ptrace_scope >= 2).
#   OMPI_MCA_btl_base_warn_component_unused=0     - no "unused component" warnings appeared.

# Running as root (containers): without these, mpirun refuses to start:
#   "mpirun has detected an attempt to run as root. Running as root is *strongly* discouraged ..."
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1
    export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

# More ranks than cores (tests use 8 ranks; workstations/CI often have 2-4 cores): without it
#   "There are not enough slots available in the system to satisfy the 8 slots that were
#    requested by the application"
# Not set inside a batch allocation, where the scheduler's slot count is authoritative.
if [ -z "${SLURM_JOB_ID:-}${PBS_JOBID:-}${LSB_JOBID:-}" ]; then
    export OMPI_MCA_rmaps_base_oversubscribe=1
fi
