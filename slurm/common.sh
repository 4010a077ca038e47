# shellcheck shell=bash
# Shared by slurm/train.sbatch, slurm/sweep.sbatch and slurm/sweep-array.sbatch; they source it as
#   "$SLURM_SUBMIT_DIR/slurm/common.sh"
# because sbatch runs a *copy* of the batch script from Slurm's spool directory, so the script's own
# path does not lead back to the repository. Submit from the repository root (or export MPIDECENT_HOME).
#
# What it provides:
#   mpidecent_setup      cd to the repository, source the site file, threads per rank, MPIDECENT_REQUEUE=1,
#                        the mpidecent program and the launcher
#   mpidecent_launch ARGS...
#                        LAUNCHER mpidecent run ARGS... in the background, with --resume added on a requeued
#                        start, the warning signal forwarded to every rank, and the batch shell waiting
#                        until the launcher is gone; returns the launcher's exit status.
#
# Site settings, without editing shipped files (see slurm/site.example.sh):
#   MPIDECENT_SITE       a file sourced by every job before anything else: module loads, MPIDECENT_LAUNCHER,
#                        other environment (default slurm/site.sh in the repository, when present; a
#                        MPIDECENT_SITE that does not exist is an error)
#   MPIDECENT_LAUNCHER   how the ranks are started (default mpirun):
#                          mpirun [options]   Open MPI / MPICH / Intel MPI launcher inside the allocation;
#                                             -n $SLURM_NTASKS is added (also for mpiexec)
#                          srun [options]     e.g. "srun --mpi=pmix": Slurm starts the ranks (the MPI must
#                                             be built with that PMI); srun takes the job's task count
#                          anything else      used as given, followed by "mpidecent run ..."
#   MPIDECENT            the mpidecent program (default .venv/bin/mpidecent in the repository)
# Partition, account, QOS and the other sbatch options cannot come from a sourced file (sbatch reads them
# before the job starts): give them on the sbatch command line or as SBATCH_PARTITION, SBATCH_ACCOUNT, ...
# in the submitting shell (docs/cluster-setup.md, section 5).

MPIDECENT_LOG="mpidecent-slurm"

mpidecent_log() {
    echo "$MPIDECENT_LOG: $(date '+%F %T') $*"
}

mpidecent_setup() {
    cd "${MPIDECENT_HOME:-${SLURM_SUBMIT_DIR:-.}}" || exit 2
    # The site file first: its module loads and variables decide the rest.
    local site="${MPIDECENT_SITE:-slurm/site.sh}"
    if [ -n "${MPIDECENT_SITE:-}" ] && [ ! -r "$MPIDECENT_SITE" ]; then
        echo "$MPIDECENT_LOG: MPIDECENT_SITE=$MPIDECENT_SITE: no such file (relative paths start at $PWD)" >&2
        exit 2
    fi
    if [ -r "$site" ]; then
        mpidecent_log "site file: $site"
        # shellcheck source=/dev/null
        . "$site" || { echo "$MPIDECENT_LOG: site file $site failed (status $?)" >&2; exit 2; }
        cd "${MPIDECENT_HOME:-${SLURM_SUBMIT_DIR:-.}}" || exit 2   # in case the site file changed directory
    fi
    # Threads per rank (design §6): never the torch default of one thread per core in every rank.
    export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
    # After the stop checkpoint, rank 0 runs `scontrol requeue $SLURM_JOB_ID` (the job is submitted
    # with --requeue; this also covers sites where `scontrol show job` is not allowed).
    export MPIDECENT_REQUEUE=1
    MPIDECENT="${MPIDECENT:-$PWD/.venv/bin/mpidecent}"
    if [ ! -x "$MPIDECENT" ]; then
        echo "$MPIDECENT_LOG: $MPIDECENT not found: submit from the repository root (or set MPIDECENT)" >&2
        exit 2
    fi
    _mpidecent_launcher
}

# Sets LAUNCH (the command line before the program) and LAUNCHER_NAME from MPIDECENT_LAUNCHER.
_mpidecent_launcher() {
    local words
    read -r -a words <<< "${MPIDECENT_LAUNCHER:-mpirun}"
    if [ ${#words[@]} -eq 0 ] || ! command -v "${words[0]}" >/dev/null 2>&1; then
        echo "$MPIDECENT_LOG: launcher '${words[0]:-}' not found (MPIDECENT_LAUNCHER=${MPIDECENT_LAUNCHER:-mpirun}):" \
             "load the MPI module in the site file (slurm/site.sh or MPIDECENT_SITE)" >&2
        exit 2
    fi
    LAUNCHER_NAME="$(basename "${words[0]}")"
    case "$LAUNCHER_NAME" in
        mpirun | mpiexec | mpiexec.hydra | orterun | prterun)
            # mpirun inside the allocation reads the nodes and slots from Slurm; the rank count is explicit.
            LAUNCH=("${words[@]}" -n "$SLURM_NTASKS") ;;
        srun)
            # srun starts the job's SLURM_NTASKS tasks. Since Slurm 22.05 it no longer inherits the job's
            # --cpus-per-task; SRUN_CPUS_PER_TASK passes it on.
            [ -n "${SLURM_CPUS_PER_TASK:-}" ] && export SRUN_CPUS_PER_TASK="${SRUN_CPUS_PER_TASK:-$SLURM_CPUS_PER_TASK}"
            LAUNCH=("${words[@]}") ;;
        *)
            LAUNCH=("${words[@]}") ;;
    esac
}

# Trap handler: SIGUSR1 is the warning before the time limit (--signal=B:USR1@120, or
# `scancel --signal=USR1 --batch JOBID`); SIGTERM is a cancel or a preemption. Either way ask every rank
# to checkpoint at the next step boundary through the launcher: Open MPI's mpirun and srun both forward
# SIGUSR1 to all ranks (a SIGTERM to mpirun would kill the ranks instead).
_mpidecent_forward() {
    mpidecent_log "SIG$1 received: forwarding SIGUSR1 to $LAUNCHER_NAME (pid $LAUNCHER_PID); the ranks checkpoint at the next step"
    kill -USR1 "$LAUNCHER_PID" 2>/dev/null || true
}

mpidecent_launch() {
    local restarts="${SLURM_RESTART_COUNT:-0}" args=() arg status
    if [ "$restarts" -gt 0 ]; then
        # A requeued start continues from the checkpoint; it must never start over, so --force goes.
        for arg in "$@"; do
            [ "$arg" = --force ] || args+=("$arg")
        done
        args+=(--resume)
    else
        args=("$@")
    fi
    mpidecent_log "job ${SLURM_JOB_ID:-?} start ${restarts} (SLURM_RESTART_COUNT) on ${SLURM_JOB_NODELIST:-?}:" \
        "${SLURM_NTASKS} ranks x ${OMP_NUM_THREADS} thread(s): ${LAUNCH[*]} $MPIDECENT run ${args[*]}"

    # In the background, so that the batch shell can run its traps while the job runs (bash runs a trap
    # only between commands, and `wait` is one it interrupts).
    "${LAUNCH[@]}" "$MPIDECENT" run "${args[@]}" &
    LAUNCHER_PID=$!
    trap '_mpidecent_forward USR1' USR1
    trap '_mpidecent_forward TERM' TERM

    # A trapped signal interrupts `wait` (status > 128) while the launcher keeps running: wait again
    # until it is gone. Once it is, `wait` returns its saved exit status.
    while :; do
        wait "$LAUNCHER_PID"
        kill -0 "$LAUNCHER_PID" 2>/dev/null || break
    done
    status=0
    wait "$LAUNCHER_PID" || status=$?
    trap - USR1 TERM
    case "$status" in
        0) mpidecent_log "$LAUNCHER_NAME finished (exit 0)" ;;
        4) mpidecent_log "stopped by a signal after a checkpoint (exit 4); a requeued job resumes by itself," \
               "otherwise resubmit with --resume" ;;
        *) mpidecent_log "$LAUNCHER_NAME exited with status $status" ;;
    esac
    return "$status"
}
