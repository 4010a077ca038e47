# shellcheck shell=bash
# Shared by slurm/train.sbatch and slurm/sweep.sbatch; they source it as
#   "$SLURM_SUBMIT_DIR/slurm/common.sh"
# because sbatch runs a *copy* of the batch script from Slurm's spool directory, so the script's own
# path does not lead back to the repository. Submit from the repository root (or export MPIDECENT_HOME).
#
# What it provides:
#   mpidecent_setup      cd to the repository, threads per rank, MPIDECENT_REQUEUE=1, the mpidecent program
#   mpidecent_launch ARGS...
#                        mpirun -n $SLURM_NTASKS mpidecent run ARGS... in the background, with --resume
#                        added on a requeued start, the warning signal forwarded to every rank, and the
#                        batch shell waiting until mpirun is gone; returns mpirun's exit status.

MPIDECENT_LOG="mpidecent-slurm"

mpidecent_log() {
    echo "$MPIDECENT_LOG: $(date '+%F %T') $*"
}

mpidecent_setup() {
    cd "${MPIDECENT_HOME:-${SLURM_SUBMIT_DIR:-.}}" || exit 2
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
}

# Trap handler: SIGUSR1 is the warning before the time limit (--signal=B:USR1@120, or
# `scancel --signal=USR1 --batch JOBID`); SIGTERM is a cancel or a preemption. Either way ask every rank
# to checkpoint at the next step boundary: Open MPI's mpirun forwards SIGUSR1 to all ranks (a SIGTERM to
# mpirun would kill the ranks instead).
_mpidecent_forward() {
    mpidecent_log "SIG$1 received: forwarding SIGUSR1 to mpirun (pid $MPIRUN_PID); the ranks checkpoint at the next step"
    kill -USR1 "$MPIRUN_PID" 2>/dev/null || true
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
        "${SLURM_NTASKS} ranks x ${OMP_NUM_THREADS} thread(s): mpirun -n ${SLURM_NTASKS} $MPIDECENT run ${args[*]}"

    # mpirun inside the allocation reads the nodes and slots from Slurm. In the background, so that the
    # batch shell can run its traps while the job runs (bash runs a trap only between commands, and
    # `wait` is one it interrupts). Alternative where the MPI library is built with PMIx support:
    #     srun --mpi=pmix "$MPIDECENT" run "${args[@]}" &
    # (srun signals the ranks itself: scancel --signal=USR1 JOBID without --batch reaches them).
    mpirun -n "$SLURM_NTASKS" "$MPIDECENT" run "${args[@]}" &
    MPIRUN_PID=$!
    trap '_mpidecent_forward USR1' USR1
    trap '_mpidecent_forward TERM' TERM

    # A trapped signal interrupts `wait` (status > 128) while mpirun keeps running: wait again until it
    # is gone. Once it is, `wait` returns its saved exit status.
    while :; do
        wait "$MPIRUN_PID"
        kill -0 "$MPIRUN_PID" 2>/dev/null || break
    done
    status=0
    wait "$MPIRUN_PID" || status=$?
    trap - USR1 TERM
    case "$status" in
        0) mpidecent_log "mpirun finished (exit 0)" ;;
        4) mpidecent_log "stopped by a signal after a checkpoint (exit 4); a requeued job resumes by itself," \
               "otherwise resubmit with --resume" ;;
        *) mpidecent_log "mpirun exited with status $status" ;;
    esac
    return "$status"
}
