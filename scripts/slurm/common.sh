# Shared by the sbatch scripts of this folder (sourced, not run).
#
# run_requeueable CMD...: run CMD in the background and forward the signals
# SLURM sends before a time limit or a preemption (USR1 via
# `#SBATCH --signal=B:USR1@300`, TERM at the limit itself) to it. The
# training saves a checkpoint and exits 75 (EX_TEMPFAIL); the job then
# requeues itself (`#SBATCH --requeue`) and the same command line, with
# --reproduce (or --resume auto), continues every run where it stopped.
#
# Environment: DRY_RUN=1 prints the command instead of running it;
# TRAIN_CMD replaces "python run_experiment.py" (tests, other launchers).

PREEMPTED=75

run_requeueable() {
    if [ "${DRY_RUN:-0}" = "1" ]; then
        echo "$@"
        return 0
    fi
    # handlers first (a signal must never kill this shell), then the child
    CHILD=""
    trap '[ -n "$CHILD" ] && kill -s USR1 "$CHILD" 2>/dev/null' USR1
    trap '[ -n "$CHILD" ] && kill -s TERM "$CHILD" 2>/dev/null' TERM
    "$@" &
    CHILD=$!
    local rc
    while true; do
        wait "$CHILD"
        rc=$?
        # a trapped signal interrupts `wait` (status > 128) while the child runs on
        if kill -0 "$CHILD" 2>/dev/null; then
            continue
        fi
        break
    done
    trap - USR1 TERM
    if [ "$rc" -eq "$PREEMPTED" ]; then
        echo "preempted: checkpoint saved, requeueing job ${SLURM_JOB_ID:-?}" >&2
        if [ -n "${SLURM_JOB_ID:-}" ]; then
            scontrol requeue "$SLURM_JOB_ID"
        fi
        return 0
    fi
    return "$rc"
}

# the training command: python run_experiment.py, or $TRAIN_CMD
train_cmd() {
    if [ -n "${TRAIN_CMD:-}" ]; then
        # shellcheck disable=SC2086
        echo $TRAIN_CMD
    else
        echo "${PYTHON:-python} run_experiment.py"
    fi
}
